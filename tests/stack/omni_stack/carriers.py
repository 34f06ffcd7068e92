"""Carriers faked at the HTTP level, and signing as they sign: what the functions call out to
and what calls the stack's webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from .loopback import LoopbackServer


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


Responder = Callable[[Request], tuple[int, Any]]


class CarrierFake:
    """An HTTP server answering by (method, path pattern), recording every request."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._routes: list[tuple[str, re.Pattern[str], Responder]] = []
        self._lock = threading.Lock()
        self._http = LoopbackServer(self._answer)
        self.url = self._http.url

    def _answer(self, method: str, target: str, headers: Any, body: bytes, _client: str) -> tuple[int, list[tuple[str, str]], bytes]:
        url = urlsplit(target)
        req = Request(method, url.path, dict(parse_qsl(url.query, keep_blank_values=True)), {k.lower(): v for k, v in headers.items()}, body)
        status, answer = self.answer(req)
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        return status, [("Content-Type", "application/json")], data

    def on(self, method: str, path: str, responder: Responder) -> None:
        """Answers `method` requests whose path matches the regular expression `path`
        (the newest rule wins)."""
        with self._lock:
            self._routes.insert(0, (method, re.compile(path), responder))

    def answer(self, req: Request) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(req)
            routes = list(self._routes)
        for method, pattern, responder in routes:
            if method == req.method and pattern.search(req.path):
                return responder(req)
        return 404, {"message": f"no fake for {req.method} {req.path}"}

    def received(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if re.search(path, r.path)]

    def stop(self) -> None:
        self._http.stop()


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature: HMAC-SHA1 of the URL followed by each POST parameter's name and
    value in name order, base64 (Twilio's RequestValidator)."""
    data = url + "".join(k + v for k, v in sorted(params.items()))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()
