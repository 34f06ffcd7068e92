"""Webhooks that leave the stack. Signed event webhooks: a tenant's CRM receives an inbound
message's event through the events queue and the event-dispatcher function (each under its
own role), and verifies it with the Standard Webhooks reference library; a failing answer is
retried. WhatsApp routing by business account: a routed account's webhook goes through the
webhook-whatsapp function, the forward queue and the whatsapp-forwarder function to the
environment that owns it, exactly as Meta sent it."""

from __future__ import annotations

import hashlib
import hmac
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
    # The CRM fake and the staging environment listen on loopback over plain HTTP: allowed
    # for tests only.
    env = {"OMNI_TWILIO_API_URL": carrier.url, "OMNI_ALLOW_HTTP_WEBHOOKS": "true", "OMNI_ALLOW_HTTP_FORWARD": "true"}
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


STAGING_WABA = "102290129340398"
APP_SECRET = "stack-test-meta-app-secret-0001"


def test_a_routed_business_accounts_webhook_is_forwarded_exactly_to_its_environment(stack: Stack, api: Api) -> None:
    staging = CarrierFake()
    try:
        staging.on("POST", r"^/webhooks/whatsapp$", lambda _req: (200, b""))
        route = api.admin("PUT", f"/v1/admin/whatsapp/waba-routes/{STAGING_WABA}", {"url": f"{staging.url}/webhooks/whatsapp", "app_secret": APP_SECRET, "note": "staging"})
        assert route["waba_id"] == STAGING_WABA and "app_secret" not in route
        # Meta's bytes, spacing and all: the signature covers them exactly.
        body = (
            '{"object": "whatsapp_business_account",  "entry": [{"id": "%s", "changes": [{"field": "messages", '
            '"value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": "109000000000001"}, '
            '"messages": [{"from": "15555550123", "id": "wamid.stack0001", "timestamp": "1700000000", "type": "text", "text": {"body": "Smoke on 5th"}}]}}]}]}'
            % STAGING_WABA
        ).encode()
        signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json"}
        forged = api.call("POST", "/webhooks/whatsapp", data=body, headers={**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64})
        assert forged.status_code == 401, forged.text
        resp = api.call("POST", "/webhooks/whatsapp", data=body, headers={**headers, "X-Hub-Signature-256": signature})
        assert resp.status_code == 200, resp.text

        forwarded = wait_for("the webhook at staging", lambda: staging.received(r"^/webhooks/whatsapp$"), timeout=60)
        assert len(forwarded) == 1, "the forged one was not forwarded"
        assert forwarded[0].body == body
        assert forwarded[0].headers["x-hub-signature-256"] == signature
        assert forwarded[0].headers["x-omni-forwarded"] == "1"
        counted = wait_for(
            "the route's count",
            lambda: (r := next(r for r in api.admin("GET", "/v1/admin/whatsapp/waba-routes")["items"] if r["waba_id"] == STAGING_WABA))["forwarded"] == 1 and r,
        )
        assert counted["pending"] == 0 and counted["failed"] == 0

        # The change is in the platform's audit log (the admin function reads it), no secret.
        audit = api.admin("GET", "/v1/admin/audit?action=waba_route.put")
        assert [(e["action"], e["target"]) for e in audit["items"]] == [("waba_route.put", STAGING_WABA)]
        assert APP_SECRET not in str(audit)
    finally:
        staging.stop()
    no_access_denied(stack)
