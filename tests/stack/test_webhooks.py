"""Signed event webhooks on the stack: a tenant's CRM receives an inbound message's event
through the events queue and the event-dispatcher function (each under its own role), and
verifies it with the Standard Webhooks reference library; a failing answer is retried."""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest
from standardwebhooks import Webhook

from conftest import Api, make_stack
from omni_stack.carriers import CarrierFake, Request
from omni_stack.stack import Stack, wait_for
from test_flows import inbound, no_access_denied, north  # noqa: F401


@pytest.fixture(scope="module")
def stack(carrier: CarrierFake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # The CRM fake listens on loopback over plain HTTP: allowed for tests only.
    env = {"OMNI_TWILIO_API_URL": carrier.url, "OMNI_ALLOW_HTTP_WEBHOOKS": "true"}
    s = make_stack("webhooks", tmp_path_factory.mktemp("webhooks"), env)
    yield s
    s.down()


@pytest.fixture(scope="module")
def crm() -> Iterator[CarrierFake]:
    """The tenant's CRM: its first answer is a 500, every later one a 204."""
    fake = CarrierFake()
    answered = {"n": 0}
    lock = threading.Lock()

    def answer(_req: Request) -> tuple[int, Any]:
        with lock:
            answered["n"] += 1
            return (500, {"error": "busy"}) if answered["n"] == 1 else (204, b"")

    fake.on("POST", r"^/omni$", answer)
    yield fake
    fake.stop()


def verified(req: Request, secret: str) -> dict[str, Any]:
    """The delivery's payload, as the Standard Webhooks library verifies it (or raises)."""
    payload: dict[str, Any] = Webhook(secret).verify(req.body, req.headers)
    return payload


def test_an_inbound_message_reaches_the_crm_signed_through_the_event_dispatcher(stack: Stack, api: Api, north: str, crm: CarrierFake) -> None:  # noqa: F811
    resp = api.call("POST", "/v1/webhooks", north, json={"url": f"{crm.url}/omni", "events": ["message.received"], "description": "CRM"})
    assert resp.status_code == 201, resp.text
    endpoint = resp.json()
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    listed = api.call("GET", "/v1/webhooks", north).json()
    assert secret not in str(listed)

    inbound(api, "SM" + "e" * 32, "Smoke on Elm Street")
    # The first attempt is answered 500; the dispatcher queues it again about 5 s later.
    requests = wait_for("two attempts at the CRM", lambda: (r := crm.received(r"^/omni$")) and len(r) >= 2 and r, timeout=60)
    first, second = requests[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    payload = verified(second, secret)
    assert payload["type"] == "message.received"
    assert payload["data"]["tenant_id"] == "north"
    assert payload["data"]["message"]["body"] == "Smoke on Elm Street"
    with pytest.raises(Exception):
        verified(second, "whsec_" + "A" * 44)

    log = wait_for(
        "the delivery recorded as succeeded",
        lambda: (d := api.call("GET", f"/v1/webhooks/{endpoint['id']}/deliveries", north).json()["items"]) and d[0]["status"] == "succeeded" and d,
    )
    assert [a["status_code"] for a in log[0]["attempts"]] == [500, 204]
    assert log[0]["id"] == second.headers["webhook-id"]
    no_access_denied(stack)
