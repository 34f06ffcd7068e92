"""What an inbound and an outbound message cost on AWS, counted from a run of the stack
(`scripts/stack-test -k cost -s` prints the table BENCHMARKS.md quotes)."""

from __future__ import annotations

import math
from typing import Any, Callable

from conftest import Api
from omni_stack import emulator
from omni_stack.carriers import CarrierFake
from omni_stack.cost import Tally, cost_per_million
from omni_stack.stack import Stack, wait_for
from test_flows import ACCOUNT_SID, NUMBER, Dashboard, inbound, north, twilio_post  # noqa: F401

MESSAGES = 10
CONTACT = "+15555550150"

# The DynamoDB requests per message this code makes at most, as measured (BENCHMARKS.md):
# a regression guard. Concurrent updater invocations writing one conversation retry on its
# version, which adds a fraction of a request per message.
MAX_INBOUND_REQUESTS = 9
MAX_OUTBOUND_REQUESTS = 20


def measure(stack: Stack, run: Callable[[], None]) -> dict[str, Any]:
    keys = {c["aws_access_key_id"]: f for f, c in stack.role_credentials.items()}
    assert stack.http is not None
    start = len(emulator.authorised)
    http_start = len(stack.http.log)
    before = {f: (len(fn.durations), sum(len(line) + 1 for line in fn.lines)) for f, fn in stack.functions.items()}
    run()
    tally = Tally()
    for request in emulator.authorised[start:]:
        function = keys.get(str(request["key"]))
        if function is not None:
            tally.add(function, request)
    invocations, gb_seconds, log_bytes = 0, 0.0, 0
    for f, fn in stack.functions.items():
        n, logged = before[f]
        durations = fn.durations[n:]
        invocations += len(durations)
        gb_seconds += sum(math.ceil(d * 1000) / 1000 for d in durations) * 0.125
        log_bytes += sum(len(line) + 1 for line in fn.lines) - logged
    return {
        "tally": tally,
        "invocations": invocations / MESSAGES,
        "gb_seconds": gb_seconds / MESSAGES,
        "log_bytes": log_bytes / MESSAGES,
        "http_requests": (len(stack.http.log) - http_start) / MESSAGES,
        "ddb_reads": tally.ddb_reads / MESSAGES,
        "ddb_writes": tally.ddb_writes / MESSAGES,
        "read_units": tally.read_units / MESSAGES,
        "write_units": tally.write_units / MESSAGES,
        # Each message sent to a queue is also received and deleted by Lambda's poller (in
        # batches of one at low traffic: the upper bound).
        "sqs_requests": 3 * tally.sqs_sends / MESSAGES,
        "post_to_connection": tally.post_to_connection / MESSAGES,
        "secrets_calls": tally.secrets_calls / MESSAGES,
    }


def report(name: str, m: dict[str, Any]) -> None:
    print(f"\n### {name}: per message (mean of {MESSAGES})")
    for key in ("invocations", "gb_seconds", "http_requests", "ddb_reads", "ddb_writes", "read_units", "write_units", "sqs_requests", "post_to_connection", "secrets_calls", "log_bytes"):
        print(f"| {key} | {m[key]:.3f} |")
    print("\nCalls by function and operation:")
    for call, n in sorted(m["tally"].by_call.items()):
        print(f"| {call} | {n / MESSAGES:.2f} |")
    print("\nDynamoDB items by function, operation and key:")
    for call, n in sorted(m["tally"].by_key.items()):
        print(f"| {call} | {n / MESSAGES:.2f} |")
    costs = cost_per_million(m)
    print(f"\n{name}: USD per million messages")
    for line, usd in costs.items():
        print(f"| {line} | {usd:.2f} |")
    print(f"| total | {sum(costs.values()):.2f} |")


def test_what_a_message_costs(stack: Stack, api: Api, north: str, carrier: CarrierFake) -> None:  # noqa: F811
    dashboard = Dashboard(stack, north)
    try:
        # The conversation exists: the common case is a message in an ongoing one.
        inbound(api, "SM" + "e" * 32, "first", CONTACT)
        dashboard.wait("the first message", lambda e: e.get("type") == "message.received")

        def inbound_messages() -> None:
            for i in range(MESSAGES):
                inbound(api, f"SM{i:032d}", f"update {i}", CONTACT)
            wait_for("every inbound message applied", lambda: sum(1 for e in dashboard.events if e.get("type") == "message.received") >= MESSAGES + 1, timeout=60)

        received = measure(stack, inbound_messages)

        def status_of(message_id: str, status: str) -> Any:
            # From the dashboard's pushes: polling the API would count as the message's cost.
            return next((e["message"] for e in dashboard.events if e.get("type") == "message.status" and e["message"]["id"] == message_id and e["message"]["status"] == status), None)

        def outbound_messages() -> None:
            ids = []
            for i in range(MESSAGES):
                resp = api.call("POST", "/v1/messages", north, json={"channel": "sms", "to": CONTACT, "body": f"reply {i}"})
                assert resp.status_code == 202, resp.text
                ids.append(resp.json()["id"])
            for message_id in ids:
                sent = wait_for("sent", lambda: status_of(message_id, "sent"))
                twilio_post(api, "/webhooks/twilio/status", {"MessageSid": sent["provider_message_id"], "MessageStatus": "delivered", "AccountSid": ACCOUNT_SID, "From": NUMBER, "To": CONTACT})
            for message_id in ids:
                wait_for("delivered", lambda: status_of(message_id, "delivered"))

        sent = measure(stack, outbound_messages)
    finally:
        dashboard.close()
    report("Inbound (signed webhook, applied, pushed to one dashboard)", received)
    report("Outbound (POST /v1/messages, sent, delivered callback applied, pushed)", sent)
    assert received["ddb_reads"] + received["ddb_writes"] <= MAX_INBOUND_REQUESTS, received["tally"].by_call
    assert sent["ddb_reads"] + sent["ddb_writes"] <= MAX_OUTBOUND_REQUESTS, sent["tally"].by_call
