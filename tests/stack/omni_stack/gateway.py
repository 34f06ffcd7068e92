"""API Gateway stand-ins: the HTTP API (payload format 2.0, `$default` stage) and the WebSocket
API (`$connect` with its query string, `$default`, `$disconnect`; pushes arrive through
moto's `PostToConnection`). Routes come from the expanded template only."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import emulator
from .loopback import LoopbackServer
from .runtime import Function

# HTTP APIs pass these as text; anything else arrives base64-encoded.
_TEXT_TYPES = re.compile(
    r"^(text/|application/(json|x-www-form-urlencoded|xml|javascript)|application/[\w.+-]+\+(json|xml))",
    re.I,
)


@dataclass
class Route:
    method: str
    path: str
    function: Function
    pattern: re.Pattern[str]
    names: list[str]

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


def compile_route(method: str, path: str, function: Function) -> Route:
    names: list[str] = []
    regex = ""
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{"):
            name = part[1:-1]
            greedy = name.endswith("+")
            name = name.rstrip("+")
            names.append(name)
            regex += "(.+)" if greedy else "([^/]+)"
        else:
            regex += re.escape(part)
    return Route(method.upper(), path, function, re.compile(f"^{regex}$"), names)


def _time_fields() -> dict[str, Any]:
    now = time.time()
    return {
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }


class HttpApi:
    """The HTTP API on a loopback port: each request becomes a 2.0 event for its route's
    function; Lambda errors become API Gateway's 500, an oversized response its 502."""

    def __init__(self, api_id: str, routes: list[Route]) -> None:
        self.api_id = api_id
        self.routes = routes
        self.log: list[dict[str, Any]] = []
        self._http = LoopbackServer(self.handle)
        self.url = self._http.url

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            if route.method not in (method, "ANY"):
                continue
            m = route.pattern.match(path)
            if m:
                return route, dict(zip(route.names, m.groups()))
        return None

    def handle(self, method: str, target: str, headers: Any, body: bytes, source_ip: str) -> tuple[int, list[tuple[str, str]], bytes]:
        url = urlsplit(target)
        found = self.match(method, url.path)
        if found is None:
            return 404, [("Content-Type", "application/json")], b'{"message":"Not Found"}'
        route, params = found
        lowered: dict[str, str] = {}
        cookies: list[str] = []
        for k, v in headers.items():
            if k.lower() == "cookie":
                cookies.extend(c.strip() for c in v.split(";"))
                continue
            key = k.lower()
            lowered[key] = f"{lowered[key]},{v}" if key in lowered else v
        query: dict[str, str] = {}
        for k, v in parse_qsl(url.query, keep_blank_values=True):
            query[k] = f"{query[k]},{v}" if k in query else v
        text = _TEXT_TYPES.match(lowered.get("content-type", "")) is not None
        host = lowered.get("host", f"{self.api_id}.execute-api.us-east-1.amazonaws.com")
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.route_key,
            "rawPath": url.path,
            "rawQueryString": url.query,
            "headers": lowered,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": self.api_id,
                "domainName": host,
                "domainPrefix": host.split(".")[0],
                "http": {
                    "method": method,
                    "path": url.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": source_ip,
                    "userAgent": lowered.get("user-agent", ""),
                },
                "requestId": base64.b32encode(uuid.uuid4().bytes[:10]).decode().rstrip("="),
                "routeKey": route.route_key,
                "stage": "$default",
                **_time_fields(),
            },
            "isBase64Encoded": bool(body) and not text,
        }
        if cookies:
            event["cookies"] = cookies
        if query:
            event["queryStringParameters"] = query
        if params:
            event["pathParameters"] = params
        if body:
            event["body"] = body.decode() if text else base64.b64encode(body).decode()
        result = route.function.invoke(event)
        self.log.append({"route": route.route_key, "error": result.error})
        if not result.ok:
            if result.error and result.error.get("errorType") == "Function.ResponseSizeTooLarge":
                return 502, [("Content-Type", "application/json")], b'{"message":"Internal Server Error"}'
            return 500, [("Content-Type", "application/json")], b'{"message":"Internal Server Error"}'
        resp = result.payload
        if not isinstance(resp, dict) or "statusCode" not in resp:
            # Payload 2.0: a bare value is a 200 JSON body.
            return 200, [("Content-Type", "application/json")], json.dumps(resp).encode()
        out_headers = [(k, str(v)) for k, v in (resp.get("headers") or {}).items()]
        for k, values in (resp.get("multiValueHeaders") or {}).items():
            out_headers.extend((k, str(v)) for v in values)
        out_headers.extend(("Set-Cookie", c) for c in resp.get("cookies") or [])
        payload = resp.get("body") or ""
        data = base64.b64decode(payload) if resp.get("isBase64Encoded") else payload.encode()
        return int(resp["statusCode"]), out_headers, data

    def stop(self) -> None:
        self._http.stop()


class WebSocketApi:
    """The WebSocket API: a `websockets` server whose handshake runs the `$connect` route
    (refused unless it answers 2xx), whose frames run `$default` (or the route the selection
    expression picks) and whose close runs `$disconnect`. Functions reach clients only through
    moto's management API."""

    def __init__(self, api_id: str, stage: str, routes: dict[str, Function], selection: str, route_responses: set[str]) -> None:
        import websockets.asyncio.server as ws_server

        self.api_id = api_id
        self.stage = stage
        self.routes = routes
        self.selection = selection
        self.route_responses = route_responses
        self.domain = f"{api_id}.execute-api.us-east-1.amazonaws.com"
        self.loop = asyncio.new_event_loop()
        self.invocations: list[dict[str, Any]] = []
        started = threading.Event()
        holder: dict[str, Any] = {}

        async def process_request(connection: Any, request: Any) -> Any:
            # Like API Gateway's: 12 characters of base64, never a slash.
            connection_id = base64.urlsafe_b64encode(uuid.uuid4().bytes[:9]).decode()
            connection.omni_id = connection_id
            url = urlsplit(request.path)
            query = dict(parse_qsl(url.query, keep_blank_values=True))
            headers = {k: v for k, v in request.headers.raw_items()}
            event = self._event("$connect", "CONNECT", connection_id, headers=headers, query=query)
            result = await asyncio.get_running_loop().run_in_executor(None, self.routes["$connect"].invoke, event)
            status = (result.payload or {}).get("statusCode", 200) if result.ok and isinstance(result.payload, dict) else (200 if result.ok else 500)
            if not 200 <= int(status) < 300:
                return connection.respond(int(status), "Forbidden" if int(status) == 403 else "refused")
            loop = asyncio.get_running_loop()

            def push(data: bytes | None) -> None:
                if data is None:
                    asyncio.run_coroutine_threadsafe(connection.close(1000, "deleted"), loop)
                else:
                    asyncio.run_coroutine_threadsafe(connection.send(data.decode()), loop)

            emulator.register_connection(connection_id, push)
            return None

        async def handler(connection: Any) -> None:
            connection_id = connection.omni_id
            try:
                async for message in connection:
                    route_key = self._select(message)
                    event = self._event(route_key, "MESSAGE", connection_id, body=message)
                    function = self.routes.get(route_key) or self.routes.get("$default")
                    if function is None:
                        continue
                    result = await asyncio.get_running_loop().run_in_executor(None, function.invoke, event)
                    if route_key in self.route_responses and result.ok and isinstance(result.payload, dict) and result.payload.get("body"):
                        await connection.send(result.payload["body"])
            except Exception:  # noqa: BLE001 - a dropped client is a disconnect
                pass
            finally:
                emulator.unregister_connection(connection_id)
                if "$disconnect" in self.routes:
                    event = self._event("$disconnect", "DISCONNECT", connection_id)
                    await asyncio.get_running_loop().run_in_executor(None, self.routes["$disconnect"].invoke, event)

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            async def start() -> None:
                holder["server"] = await ws_server.serve(handler, "127.0.0.1", 0, process_request=process_request)
                started.set()
                await holder["server"].wait_closed()

            self.loop.run_until_complete(start())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        started.wait(10)
        self._server = holder["server"]
        port = list(self._server.sockets)[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"

    def _select(self, message: str) -> str:
        match = re.fullmatch(r"\$request\.body\.(\w+)", self.selection or "")
        if match:
            try:
                value = json.loads(message).get(match.group(1))
            except (ValueError, AttributeError):
                value = None
            if isinstance(value, str) and value in self.routes:
                return value
        return "$default"

    def _event(self, route_key: str, event_type: str, connection_id: str, headers: dict[str, str] | None = None, query: dict[str, str] | None = None, body: str | None = None) -> dict[str, Any]:
        now = _time_fields()
        event: dict[str, Any] = {
            "requestContext": {
                "routeKey": route_key,
                "eventType": event_type,
                "extendedRequestId": str(uuid.uuid4()),
                "requestTime": now["time"],
                "messageDirection": "IN",
                "stage": self.stage,
                "connectedAt": now["timeEpoch"],
                "requestTimeEpoch": now["timeEpoch"],
                "identity": {"sourceIp": "127.0.0.1"},
                "requestId": str(uuid.uuid4()),
                "domainName": self.domain,
                "connectionId": connection_id,
                "apiId": self.api_id,
            },
            "isBase64Encoded": False,
        }
        if headers is not None:
            event["headers"] = headers
            event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
        if query:
            event["queryStringParameters"] = query
            event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
        if body is not None:
            event["body"] = body
        self.invocations.append({"route": route_key, "connection": connection_id})
        return event

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._server.close)
        self._thread.join(10)

