"""Python peer for the side-by-side webhook benchmark (BENCHMARKS.md).

An inbound Twilio SMS webhook as a Python shop would receive it: the official `twilio`
package's `RequestValidator` checks `X-Twilio-Signature`, then RoomKit's Twilio parser
(`parse_twilio_webhook`) and `RoomKit.process_inbound` route the message into its room
(RoomKit's default in-memory store); the 200 goes out only after that returns.

A bare ASGI app under uvicorn (uvloop, httptools), one process, one worker: the leanest
production setup, so the comparison measures the validator and RoomKit, not a web framework.

Usage: python server.py   (env BENCH_TWILIO_AUTH_TOKEN; listens on 127.0.0.1, a free port)
Prints `peer listening on http://127.0.0.1:PORT` once it accepts connections.
`GET /stats` answers what was acknowledged and what RoomKit's store holds
(conversations, messages).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from urllib.parse import parse_qsl

import uvicorn
from roomkit import RoomKit, SMSChannel
from roomkit.models.enums import EventType
from roomkit.models.store_filter import EventFilter
from roomkit.providers.twilio import TwilioConfig, TwilioSMSProvider, parse_twilio_webhook
from twilio.request_validator import RequestValidator

AUTH_TOKEN = os.environ["BENCH_TWILIO_AUTH_TOKEN"]
CHANNEL = "sms-twilio"
TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

validator = RequestValidator(AUTH_TOKEN)
kit = RoomKit()
kit.register_channel(
    SMSChannel(
        CHANNEL,
        provider=TwilioSMSProvider(
            TwilioConfig(
                account_sid="AC0123456789abcdef0123456789abcdef",
                auth_token=AUTH_TOKEN,
                from_number="+15555550100",
            )
        ),
    )
)
acknowledged = 0


async def stats() -> dict[str, int]:
    """What RoomKit's store holds, read back through its public API: a room per contact
    (a conversation) and the message events in them."""
    rooms = messages = 0
    only_messages = EventFilter(event_types=[EventType.MESSAGE])
    while page := await kit.store.list_rooms(offset=rooms, limit=500):
        rooms += len(page)
        for room in page:
            messages += await kit.store.get_event_count(room.id, only_messages)
    return {"acknowledged": acknowledged, "conversations": rooms, "messages": messages}


async def read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def respond(send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type)],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    global acknowledged
    if scope["type"] != "http":
        return
    if scope["method"] == "GET" and scope["path"] == "/stats":
        await respond(send, 200, json.dumps(await stats()).encode(), b"application/json")
        return
    if scope["method"] != "POST" or scope["path"] != "/webhooks/twilio":
        await respond(send, 404, b"", b"text/plain")
        return
    headers = dict(scope["headers"])
    raw = await read_body(receive)
    params = dict(parse_qsl(raw.decode(), keep_blank_values=True))
    # The URL Twilio called: the one the bench signed.
    url = f"http://{headers[b'host'].decode()}{scope['path']}"
    signature = headers.get(b"x-twilio-signature", b"").decode()
    if not validator.validate(url, params, signature):
        await respond(send, 403, b"bad signature", b"text/plain")
        return
    result = await kit.process_inbound(parse_twilio_webhook(params, CHANNEL))
    if result.blocked:
        await respond(send, 500, (result.reason or "blocked").encode(), b"text/plain")
        return
    acknowledged += 1
    await respond(send, 200, TWIML, b"text/xml")


class Server(uvicorn.Server):
    """uvicorn's server, saying where it listens once it accepts connections."""

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        port = sockets[0].getsockname()[1]
        print(f"peer listening on http://127.0.0.1:{port}", flush=True)


async def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=1024,
    )
    await Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
