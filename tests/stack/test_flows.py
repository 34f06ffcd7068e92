"""End to end across the functions of the stack, each under its own role."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import ACCOUNT_SID, AUTH_TOKEN, Api
from omni_stack.carriers import CarrierFake, twilio_signature
from omni_stack.stack import Stack, wait_for

NUMBER = "+15555550100"
CONTACT = "+15555550123"


@pytest.fixture(scope="module")
def north(stack: Stack, api: Api, carrier: CarrierFake) -> str:
    """Tenant `north` on Twilio with NUMBER; its API key."""
    carrier.on(
        "POST",
        r"/2010-04-01/Accounts/\w+/Messages\.json$",
        lambda req: (201, {"sid": f"SM{len(carrier.requests):032d}", "status": "queued", "account_sid": ACCOUNT_SID}),
    )
    api.admin("PUT", "/v1/admin/tenants/north", {"name": "North County PSAP", "default_region": "US"})
    api.admin("PUT", "/v1/admin/tenants/north/providers/twilio", {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN})
    api.admin("PUT", f"/v1/admin/tenants/north/numbers/{NUMBER}", {"provider": "twilio", "channels": ["sms", "mms"]})
    return api.admin("POST", "/v1/admin/tenants/north/api-keys")["key"]


def twilio_post(api: Api, path: str, params: dict[str, str]) -> Any:
    signature = twilio_signature(AUTH_TOKEN, api.base + path, params)
    return api.call("POST", path, data=params, headers={"X-Twilio-Signature": signature})


def inbound(api: Api, sid: str, body: str, contact: str = CONTACT) -> None:
    resp = twilio_post(api, "/webhooks/twilio", {"MessageSid": sid, "AccountSid": ACCOUNT_SID, "From": contact, "To": NUMBER, "Body": body, "NumMedia": "0"})
    assert resp.status_code == 200, resp.text
    assert "<Response" in resp.text


class Socket:
    """A WebSocket on the stack's WebSocket API, collecting what it is sent."""

    def __init__(self, url: str, origin: str | None = None) -> None:
        self.ws = connect(url, origin=origin, open_timeout=30)  # type: ignore[arg-type]
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for message in self.ws:
                self.events.append(json.loads(message))
        except Exception:  # noqa: BLE001 - closed
            pass

    def wait(self, what: str, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        return wait_for(what, lambda: next((e for e in self.events if predicate(e)), None), timeout)

    def close(self) -> None:
        self.ws.close()


class Dashboard(Socket):
    """A dispatcher's WebSocket."""

    def __init__(self, stack: Stack, key: str) -> None:
        assert stack.ws is not None
        super().__init__(f"{stack.ws.url}/?token={key}")


def no_access_denied(stack: Stack) -> None:
    """No function met an AccessDenied, and every request was within its policies' resources."""
    denied = stack.access_denied()
    assert not denied, f"AccessDenied in the stack: {json.dumps(denied, indent=1)[:4000]}"


def test_signed_twilio_sms_reaches_the_dashboard_and_the_conversation_list(stack: Stack, api: Api, north: str) -> None:
    dashboard = Dashboard(stack, north)
    try:
        inbound(api, "SM" + "a" * 32, "Smoke on 5th street")
        event = dashboard.wait("message.received", lambda e: e.get("type") == "message.received")
        assert event["message"]["body"] == "Smoke on 5th street"
        assert event["tenant_id"] == "north"
        convs = wait_for(
            "the conversation in the list",
            lambda: [c for c in api.call("GET", "/v1/conversations", north).json()["items"] if c["contact"] == CONTACT],
        )
        assert convs[0]["unread_count"] == 1
        assert convs[0]["last_message"]["body"] == "Smoke on 5th street"
    finally:
        dashboard.close()
    no_access_denied(stack)


def message(api: Api, key: str, message_id: str) -> dict[str, Any]:
    resp = api.call("GET", f"/v1/messages/{message_id}", key)
    assert resp.status_code == 200, resp.text
    return resp.json()


def sends_to(carrier: CarrierFake, contact: str) -> list[dict[str, str]]:
    return [r.form() for r in carrier.received(r"/Messages\.json$") if r.form().get("To") == contact]


def test_send_goes_through_the_delivery_worker_and_its_status_callback_lands(stack: Stack, api: Api, north: str, carrier: CarrierFake) -> None:
    contact = "+15555550124"
    dashboard = Dashboard(stack, north)
    try:
        resp = api.call("POST", "/v1/messages", north, json={"channel": "sms", "to": contact, "body": "Units are on the way"})
        assert resp.status_code == 202, resp.text
        message_id = resp.json()["id"]
        sent = wait_for("the sent message", lambda: (m := message(api, north, message_id))["status"] == "sent" and m)
        forms = sends_to(carrier, contact)
        assert len(forms) == 1, forms
        # Twilio's Create Message form (specs/twilio): To, From, Body and a StatusCallback.
        assert forms[0]["From"] == NUMBER and forms[0]["Body"] == "Units are on the way"
        assert forms[0]["StatusCallback"] == f"{api.base}/webhooks/twilio/status"
        status = twilio_post(api, "/webhooks/twilio/status", {"MessageSid": sent["provider_message_id"], "MessageStatus": "delivered", "AccountSid": ACCOUNT_SID, "From": NUMBER, "To": contact})
        assert status.status_code == 200, status.text
        wait_for("delivered", lambda: message(api, north, message_id)["status"] == "delivered")
        dashboard.wait("message.status delivered", lambda e: e.get("type") == "message.status" and e["message"]["status"] == "delivered")
    finally:
        dashboard.close()
    no_access_denied(stack)


def test_help_keyword_is_answered_through_the_carrier(stack: Stack, api: Api, north: str, carrier: CarrierFake) -> None:
    contact = "+15555550125"
    inbound(api, "SM" + "b" * 32, "HELP", contact)
    forms = wait_for("the HELP reply at the carrier", lambda: sends_to(carrier, contact))
    assert forms[0]["From"] == NUMBER
    assert forms[0]["Body"], forms
    no_access_denied(stack)


FALLBACK = "+15555550199"


def test_a_twilio_outage_fails_over_to_voipms(stack: Stack, api: Api, north: str, carrier: CarrierFake) -> None:
    contact = "+15555550126"
    carrier.on(
        "POST",
        r"/2010-04-01/Accounts/\w+/Messages\.json$",
        lambda req: (503, {"code": 20500, "message": "Service unavailable", "status": 503})
        if req.form().get("To") == contact
        else (201, {"sid": f"SM{len(carrier.requests):032d}", "status": "queued", "account_sid": ACCOUNT_SID}),
    )
    carrier.on("POST", r"/voipms/api/v1/rest\.php$", lambda req: (200, {"status": "success", "sms": 70000 + len(carrier.requests)}))
    api.admin("PUT", "/v1/admin/tenants/north/providers/voipms", {"api_username": "ops@example.org", "api_password": "voipms-api-password-0001", "webhook_secret": "voipms-webhook-secret-0001"})
    api.admin("PUT", f"/v1/admin/tenants/north/numbers/{FALLBACK}", {"provider": "voipms", "channels": ["sms"]})
    api.admin("PUT", "/v1/admin/tenants/north/routing", {"sms": ["twilio", "voipms"]})
    try:
        resp = api.call("POST", "/v1/messages", north, json={"channel": "sms", "to": contact, "body": "Failover please"})
        assert resp.status_code == 202, resp.text
        sent = wait_for("the failed-over send", lambda: (m := message(api, north, resp.json()["id"]))["status"] == "sent" and m, timeout=60)
        assert sent["provider"] == "voipms", sent
        assert sent["from"] == FALLBACK
        assert sent["events"][-1]["note"].startswith(f"failover to voipms from {FALLBACK}: twilio: "), sent
        voipms = [r.form() for r in carrier.received(r"/voipms/api/v1/rest\.php$") if r.form().get("dst") == contact[2:]]
        assert len(voipms) == 1, voipms
        assert len(sends_to(carrier, contact)) >= 1, "Twilio was tried first"
    finally:
        api.admin("PUT", "/v1/admin/tenants/north/routing", {})
    no_access_denied(stack)


def test_the_sweeper_requeues_a_job_the_queue_lost(stack: Stack, api: Api, north: str, carrier: CarrierFake) -> None:
    contact = "+15555550127"
    mapping = stack.mapping_of("DeliveryWorkerFunction")
    stack.paused.add(mapping)
    try:
        resp = api.call("POST", "/v1/messages", north, json={"channel": "sms", "to": contact, "body": "Lost and found"})
        assert resp.status_code == 202, resp.text
        # The job is lost between the outbox and the worker.
        stack.client("sqs").purge_queue(QueueUrl=stack.resolver.ref("DeliveryQueue"))
    finally:
        stack.paused.discard(mapping)
    time.sleep(4)  # past OMNI_SWEEP_AFTER_SECS
    assert message(api, north, resp.json()["id"])["status"] == "queued"
    (schedule,) = stack.schedules_of("OutboxSweeperFunction")
    outcome = stack.fire_schedule(schedule)
    assert outcome.done.wait(60)
    assert outcome.succeeded, outcome.attempts[-1].error
    assert outcome.attempts[-1].payload["requeued"] >= 1, outcome.attempts[-1].payload
    wait_for("the swept send", lambda: message(api, north, resp.json()["id"])["status"] == "sent")
    assert len(sends_to(carrier, contact)) == 1
    no_access_denied(stack)


EMAIL = "alerts@north.example"


def test_an_ses_event_from_eventbridge_moves_the_email(stack: Stack, api: Api, north: str, carrier: CarrierFake) -> None:
    contact = "jane@example.org"
    carrier.on("POST", r"/ses/v2/email/outbound-emails$", lambda req: (200, {"MessageId": f"0100019a-stack-{len(carrier.requests):06d}"}))
    api.admin("PUT", "/v1/admin/tenants/north/providers/ses", {"access_key_id": "AKIASTACKTESTING", "secret_access_key": "stack-test-ses-secret-access-key", "region": "us-east-1"})
    api.admin("PUT", f"/v1/admin/tenants/north/numbers/{EMAIL}", {"provider": "ses", "channels": ["email"]})
    resp = api.call("POST", "/v1/messages", north, json={"channel": "email", "from": EMAIL, "to": contact, "body": "Units are on their way"})
    assert resp.status_code == 202, resp.text
    message_id = resp.json()["id"]
    sent = wait_for("the SES send", lambda: (m := message(api, north, message_id))["status"] == "sent" and m)
    event = json.loads((stack.template_path.parent / "events" / "ses-events.json").read_text())
    event["detail"]["mail"].update({"messageId": sent["provider_message_id"], "source": EMAIL, "destination": [contact]})
    event["detail"]["mail"]["tags"]["omni_message_id"] = [message_id]
    (outcome,) = stack.put_event(event)
    assert outcome.done.wait(60)
    assert outcome.succeeded, outcome.attempts[-1].error
    wait_for("delivered", lambda: message(api, north, message_id)["status"] == "delivered")
    no_access_denied(stack)


VMU_NUMBER = "+15555550101"
VMU_SECRET = "voicemeup-callback-secret-0001"


def test_voicemeup_split_mms_halves_in_concurrent_invocations_merge_once(stack: Stack, api: Api, north: str) -> None:
    api.admin("PUT", "/v1/admin/tenants/north/providers/voicemeup", {"username": "north-dispatch", "auth_token": "voicemeup-auth-token-0001", "webhook_secret": VMU_SECRET})
    api.admin("PUT", f"/v1/admin/tenants/north/numbers/{VMU_NUMBER}", {"provider": "voicemeup", "channels": ["sms", "mms"]})
    contact = "15555550128"

    def half(sms_hash: str, text: str, attachment: tuple[str, str]) -> dict[str, str]:
        return {"sms_hash": sms_hash, "source_number": contact, "destination_number": VMU_NUMBER[1:], "datetime_transmission": "2026-12-01 12:00:00", "direction": "inbound", "message": text, "attachment": attachment[0], "attachment_mime_type": attachment[1]}

    halves = [
        half("v1", "see attached", ("https://clients.voicemeup.com/files/0001.mms.html", "text/html")),
        half("v2", "", ("https://clients.voicemeup.com/files/0001.jpg", "image/jpeg")),
    ]
    before = {f.logical_id: f.invocations for f in stack.functions.values()}
    answers: list[Any] = [None, None]
    barrier = threading.Barrier(2)

    def post(i: int) -> None:
        barrier.wait()
        answers[i] = api.call("POST", f"/webhooks/voicemeup?secret={VMU_SECRET}", json=halves[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [(a.status_code, a.text) for a in answers] == [(200, "ok"), (200, "ok")]
    assert stack.functions["WebhookVoicemeupFunction"].invocations - before["WebhookVoicemeupFunction"] == 2

    def merged() -> list[dict[str, Any]]:
        convs = [c for c in api.call("GET", "/v1/conversations", north).json()["items"] if c["contact"] == f"+{contact}"]
        if not convs:
            return []
        return api.call("GET", f"/v1/conversations/{convs[0]['id']}/messages", north).json()["items"]

    messages = wait_for("the merged MMS", merged)
    time.sleep(4)  # past OMNI_VOICEMEUP_MMS_WAIT_SECS: a half delivered alone would show now
    messages = merged()
    assert len(messages) == 1, messages
    assert messages[0]["provider_message_id"] == "v1+v2"
    assert messages[0]["body"] == "see attached"
    assert [m["url"] for m in messages[0]["media"]] == ["https://clients.voicemeup.com/files/0001.jpg"]
    no_access_denied(stack)


WA_PHONE_ID = "200000000000002"
WA_NUMBER = "+15555550102"
WA_APP_SECRET = "stack-test-whatsapp-app-secret-01"
WA_TOKEN = "stack-test-whatsapp-access-token-01"


def test_whatsapp_media_over_lambdas_response_limit_come_through_a_signed_link(stack: Stack, api: Api, north: str, carrier: CarrierFake) -> None:
    import hashlib
    import hmac
    import os

    photo = os.urandom(8 * 1024 * 1024)
    media_id = "300000000000003"
    carrier.on("GET", rf"/v21.0/{media_id}$", lambda req: (200, {"messaging_product": "whatsapp", "id": media_id, "mime_type": "image/jpeg", "url": f"{carrier.url}/lookaside/{media_id}"}))
    carrier.on("GET", rf"/lookaside/{media_id}$", lambda req: (200, photo) if req.headers.get("authorization") == f"Bearer {WA_TOKEN}" else (401, {}))
    api.admin("PUT", "/v1/admin/tenants/north/providers/whatsapp", {"phone_number_id": WA_PHONE_ID, "access_token": WA_TOKEN, "app_secret": WA_APP_SECRET, "verify_token": "stack-test-verify-token-0001"})
    api.admin("PUT", f"/v1/admin/tenants/north/numbers/{WA_NUMBER}", {"provider": "whatsapp", "channels": ["whatsapp"]})
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "100", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": WA_NUMBER[1:], "phone_number_id": WA_PHONE_ID},
        "contacts": [{"profile": {"name": "Jane Example"}, "wa_id": "15555550129"}],
        "messages": [{"from": "15555550129", "id": "wamid.BIGPHOTO", "timestamp": str(int(time.time())), "type": "image",
                      "image": {"id": media_id, "mime_type": "image/jpeg", "sha256": "x", "caption": "the scene"}}]}}]}]})
    signature = "sha256=" + hmac.new(WA_APP_SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    resp = api.call("POST", "/webhooks/whatsapp", data=body, headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature})
    assert resp.status_code == 200, resp.text

    def photo_message() -> Any:
        convs = [c for c in api.call("GET", "/v1/conversations", north).json()["items"] if c["contact"] == "+15555550129"]
        return convs and api.call("GET", f"/v1/conversations/{convs[0]['id']}/messages", north).json()["items"]

    (received,) = wait_for("the WhatsApp photo", photo_message)
    resp = api.call("GET", f"/v1/messages/{received['id']}/media/0", north, allow_redirects=False)
    # Through the response it would be 8 MB base64'd: over Lambda's 6 MB, a 502.
    assert resp.status_code == 307, (resp.status_code, resp.text[:200])
    link = resp.headers["Location"]
    assert "X-Amz-Signature=" in link and "X-Amz-Expires=300" in link, link
    fetched = api.session.get(link, timeout=60)
    assert fetched.status_code == 200, fetched.text[:300]
    assert fetched.content == photo
    assert fetched.headers["Content-Type"] == "image/jpeg"
    no_access_denied(stack)


PASSWORD = "correct horse battery staple"


def signed_in(api: Api, by: str | None, email: str, name: str, role: str) -> tuple[str, dict[str, Any]]:
    """Invites a user (through the platform's route when `by` is None), accepts the invite and
    signs in; the session token and the user."""
    body = {"email": email, "name": name, "role": role}
    if by is None:
        invited = api.admin("POST", "/v1/admin/tenants/north/users", body)
    else:
        resp = api.call("POST", "/v1/users", by, json=body)
        assert resp.status_code == 201, resp.text
        invited = resp.json()
    assert invited["invite_url"].endswith(f"/#invite={invited['invite_token']}")
    resp = api.call("POST", "/v1/auth/invite", json={"token": invited["invite_token"], "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    resp = api.call("POST", "/v1/auth/login", json={"tenant": "north", "email": email, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    return resp.json()["token"], resp.json()["user"]


def test_a_team_signs_in_assigns_writes_notes_sees_presence_and_is_audited(stack: Stack, api: Api, north: str) -> None:
    contact = "+15555550130"
    admin, _ = signed_in(api, None, "sam@north.example", "Sam", "admin")
    alex, alex_user = signed_in(api, admin, "alex@north.example", "Alex", "dispatcher")
    kim, _ = signed_in(api, admin, "kim@north.example", "Kim", "dispatcher")
    wrong = api.call("POST", "/v1/auth/login", json={"tenant": "north", "email": "alex@north.example", "password": "not the password"})
    assert (wrong.status_code, wrong.json()["code"]) == (401, "invalid_credentials")
    assert api.call("GET", "/v1/me", alex).json()["user"]["name"] == "Alex"
    refused = api.call("POST", "/v1/users", alex, json={"email": "x@north.example", "name": "X", "role": "admin"})
    assert refused.status_code == 403 and "users.manage" in refused.json()["error"], refused.text
    # A tenant admin's session opens the tenant's admin routes (the admin function).
    sender = api.call("POST", "/v1/admin/tenants/north/api-keys", admin, json={"name": "CAD", "role": "sender"})
    assert sender.status_code == 201 and sender.json()["role"] == "sender", sender.text
    assert api.call("GET", "/v1/admin/tenants/south/api-keys", admin).status_code == 403

    alex_board, kim_board = Dashboard(stack, alex), Dashboard(stack, kim)
    try:
        inbound(api, "SM" + "t" * 32, "Fire alarm going off", contact)
        conversation = wait_for(
            "the conversation",
            lambda: next((c for c in api.call("GET", "/v1/conversations", alex).json()["items"] if c["contact"] == contact), None),
        )
        cid = conversation["id"]
        assigned = api.call("POST", f"/v1/conversations/{cid}/assign", alex, json={"user_id": alex_user["id"]})
        assert assigned.status_code == 200 and assigned.json()["assignee"]["name"] == "Alex", assigned.text
        kim_board.wait("conversation.assigned", lambda e: e.get("type") == "conversation.assigned" and e["conversation_id"] == cid)
        mine = api.call("GET", "/v1/conversations?assignee=me&status=open", alex).json()["items"]
        assert [c["id"] for c in mine] == [cid]

        alex_board.ws.send(json.dumps({"type": "conversation.viewing", "conversation_id": cid}))
        seen = kim_board.wait("Alex viewing", lambda e: e.get("type") == "conversation.viewing")
        assert seen["user"]["name"] == "Alex" and seen["conversation_id"] == cid

        note = api.call("POST", f"/v1/conversations/{cid}/notes", kim, json={"body": "second call from this number"})
        assert note.status_code == 201, note.text
        alex_board.wait("note.created", lambda e: e.get("type") == "note.created")
        timeline = api.call("GET", f"/v1/conversations/{cid}/messages", alex).json()["items"]
        assert [i["kind"] for i in timeline] == ["note", "message"], timeline

        resolved = api.call("POST", f"/v1/conversations/{cid}/resolve", alex)
        assert resolved.json()["status"] == "resolved", resolved.text
        kim_board.wait("conversation.status", lambda e: e.get("type") == "conversation.status")
        inbound(api, "SM" + "u" * 32, "still ringing", contact)
        wait_for("reopened by the contact", lambda: api.call("GET", f"/v1/conversations?status=open&q={contact[2:]}", kim).json()["items"])
    finally:
        alex_board.close()
        kim_board.close()

    assert api.call("GET", "/v1/audit", alex).status_code == 403
    audit = api.call("GET", "/v1/audit?limit=200", admin).json()["items"]
    actions = {e["action"] for e in audit}
    for action in ("auth.login", "auth.login_failed", "user.invite_accepted", "conversation.assign", "note.create", "conversation.resolve", "api_key.create"):
        assert action in actions, (action, actions)
    assert "second call from this number" not in json.dumps(audit)
    assert api.call("POST", "/v1/auth/logout", alex).status_code == 204
    assert api.call("GET", "/v1/me", alex).status_code == 401
    # A password change (the session's generation moves on in DynamoDB) ends Kim's sessions.
    changed = api.call("POST", "/v1/me/password", kim, json={"current_password": PASSWORD, "new_password": "another long passphrase"})
    assert changed.status_code == 204, changed.text
    assert api.call("GET", "/v1/me", kim).status_code == 401
    again = api.call("POST", "/v1/auth/login", json={"tenant": "north", "email": "kim@north.example", "password": "another long passphrase"})
    assert again.status_code == 200, again.text
    no_access_denied(stack)


def test_a_template_approved_by_a_second_supervisor_is_sent_rendered(stack: Stack, api: Api, north: str, carrier: CarrierFake) -> None:
    contact = "+15555550131"
    admin, _ = signed_in(api, None, "tia@north.example", "Tia", "admin")
    ana, _ = signed_in(api, admin, "ana.t@north.example", "Ana", "supervisor")
    ben, _ = signed_in(api, admin, "ben.t@north.example", "Ben", "supervisor")
    definition = {
        "channels": ["sms"],
        "variables": {"unit": {"type": "text", "max_length": 10}},
        "languages": {"en": {"body": "Unit {{unit}} is on its way"}, "es": {"body": "La unidad {{unit}} va en camino"}},
        "default_language": "en",
    }
    resp = api.call("PUT", "/v1/templates/unit-dispatched", ana, json=definition)
    assert resp.status_code == 201, resp.text
    assert api.call("POST", "/v1/templates/unit-dispatched/submit", ana).status_code == 200
    own = api.call("POST", "/v1/templates/unit-dispatched/approve", ana)
    assert (own.status_code, own.json()["code"]) == (403, "forbidden"), own.text
    approved = api.call("POST", "/v1/templates/unit-dispatched/approve", ben)
    assert approved.status_code == 200 and approved.json()["approved_version"] == 1, approved.text

    send = {"channel": "sms", "to": contact, "template": {"name": "unit-dispatched", "language": "es-MX", "variables": {"unit": "M12"}}}
    resp = api.call("POST", "/v1/messages", north, json=send)
    assert resp.status_code == 202, resp.text
    assert resp.json()["template"] == {"name": "unit-dispatched", "version": 1, "language": "es"}
    message_id = resp.json()["id"]
    wait_for("the template message sent", lambda: message(api, north, message_id)["status"] == "sent")
    assert [f["Body"] for f in sends_to(carrier, contact)] == ["La unidad M12 va en camino"]
    unknown = api.call("POST", "/v1/messages", north, json={**send, "template": {**send["template"], "name": "nothing"}})
    assert (unknown.status_code, unknown.json()["code"]) == (404, "template_not_found"), unknown.text
    steps = [e["action"] for e in api.call("GET", "/v1/audit?limit=200", admin).json()["items"] if e["action"].startswith("template.")]
    assert steps == ["template.approve", "template.submit", "template.put"], steps
    no_access_denied(stack)


def test_a_livechat_visitor_writes_with_an_upload_and_a_dispatcher_replies(stack: Stack, api: Api, north: str) -> None:
    """The livechat function under its own role: widget, origin check, S3 upload behind a
    presigned link, the visitor's message in the dispatchers' list under their name with its
    picture, a reply that stays `sent` while no visitor socket is open and shows in the
    visitor's history. Then the visitor's socket on the WebSocket API (ws-connect checks the
    token and the page at $connect; a forged or expired token is refused): the waiting reply
    becomes `delivered`, the next one arrives on the socket as `message.created` and is
    `delivered`, a dispatcher's typing reaches it, and another visitor hears none of it."""
    import requests

    origin = "https://north.example.org"
    widget = api.admin("PUT", "/v1/admin/tenants/north/livechat", {"allowed_origins": [origin], "greeting": "Hello"})
    assert widget["widget_key"].startswith("lcw_") and widget["identity_secret"]
    start = {"widget_key": widget["widget_key"], "visitor": {"name": "Ana"}}
    refused = api.call("POST", "/livechat/v1/sessions", json=start, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403, refused.text
    assert "access-control-allow-origin" not in refused.headers
    resp = api.call("POST", "/livechat/v1/sessions", json=start, headers={"Origin": origin})
    assert resp.status_code == 201, resp.text
    assert resp.headers["access-control-allow-origin"] == origin
    session = resp.json()
    token, visitor = session["token"], session["visitor_id"]

    png = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    up = api.call("POST", "/livechat/v1/media", token, files={"file": ("bridge.png", png, "image/png")}, headers={"Origin": origin})
    assert up.status_code == 201, up.text
    assert up.json()["content_type"] == "image/png"
    assert requests.get(up.json()["url"], timeout=30).content == png

    sent = api.call("POST", "/livechat/v1/messages", token, json={"body": "the bridge", "media": [up.json()["id"]], "client_message_id": "c-1"}, headers={"Origin": origin})
    assert sent.status_code == 202, sent.text
    again = api.call("POST", "/livechat/v1/messages", token, json={"body": "the bridge", "media": [up.json()["id"]], "client_message_id": "c-1"}, headers={"Origin": origin})
    assert again.json()["id"] == sent.json()["id"]
    convs = wait_for("the visitor's conversation", lambda: [c for c in api.call("GET", "/v1/conversations", north).json()["items"] if c["contact"] == visitor])
    assert convs[0]["id"] == session["conversation_id"] and convs[0]["channel"] == "livechat"
    assert convs[0]["contact_name"] == "Ana", convs[0]
    media = api.call("GET", f"/v1/messages/{sent.json()['id']}/media/0", north)
    assert media.status_code == 200 and media.content == png

    reply = api.call("POST", "/v1/messages", north, json={"channel": "livechat", "to": visitor, "body": "Units are on the way"})
    assert reply.status_code == 202, reply.text
    wait_for("the reply sent", lambda: message(api, north, reply.json()["id"])["status"] == "sent")
    history = api.call("GET", "/livechat/v1/messages", token, headers={"Origin": origin}).json()
    assert [m["body"] for m in history["items"]] == ["the bridge", "Units are on the way"]
    assert message(api, north, reply.json()["id"])["status"] == "sent", "no socket: not delivered"

    # The session says where the socket is: the WebSocket API's stage, as a visitor.
    assert stack.ws is not None
    assert session["socket_url"] == f"wss://{stack.ws.api_id}.execute-api.us-east-1.amazonaws.com/prod?channel=livechat", session
    socket_url = f"{stack.ws.url}/?channel=livechat&token="
    # Refused at $connect: an altered token, an expired one signed with the widget's own key,
    # a page of another origin.
    payload, signature = token.split(".")
    expired_claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    expired_claims["exp"] = int(time.time()) - 60
    settings_item = stack.client("dynamodb").get_item(TableName=stack.resolver.ref("Table"), Key={"pk": {"S": "T#north"}, "sk": {"S": "LIVECHAT"}})["Item"]
    signing_key = json.loads(settings_item["doc"]["S"])["signing_key"].encode()
    expired_payload = base64.urlsafe_b64encode(json.dumps(expired_claims).encode()).decode().rstrip("=")
    expired_tag = base64.urlsafe_b64encode(hmac.new(signing_key, expired_payload.encode(), hashlib.sha256).digest()).decode().rstrip("=")
    for bad, page, status in [
        (f"{payload}.{signature[:-2]}AA", origin, 401),
        (f"{expired_payload}.{expired_tag}", origin, 401),
        (token, "https://evil.example", 403),
    ]:
        with pytest.raises(InvalidStatus) as refused_socket:
            connect(socket_url + bad, origin=page, open_timeout=30).close()
        assert refused_socket.value.response.status_code == status, (bad, page)

    # Another visitor's socket, to show frames go to their own conversation only.
    other = api.call("POST", "/livechat/v1/sessions", json={"widget_key": widget["widget_key"]}, headers={"Origin": origin}).json()
    bystander = Socket(socket_url + other["token"], origin)
    chat = Socket(socket_url + token, origin)
    dashboard = Dashboard(stack, north)
    try:
        # The reply that waited is delivered now the visitor is back.
        wait_for("the waiting reply delivered", lambda: message(api, north, reply.json()["id"])["status"] == "delivered")
        second = api.call("POST", "/v1/messages", north, json={"channel": "livechat", "to": visitor, "body": "ETA five minutes"})
        assert second.status_code == 202, second.text
        created = chat.wait("the reply on the visitor's socket", lambda f: f.get("type") == "message.created")
        assert created["message"]["body"] == "ETA five minutes" and created["conversation_id"] == session["conversation_id"]
        assert created["message"]["direction"] == "outbound"
        wait_for("the pushed reply delivered", lambda: message(api, north, second.json()["id"])["status"] == "delivered")
        dashboard.wait("delivered on the dashboard", lambda e: e.get("type") == "message.status" and e["message"]["id"] == second.json()["id"] and e["message"]["status"] == "delivered")
        dashboard.ws.send(json.dumps({"type": "conversation.typing", "conversation_id": session["conversation_id"]}))
        chat.wait("the dispatcher typing", lambda f: f.get("type") == "typing")
        # A ping is answered, as dashboards' are.
        chat.ws.send('{"type":"ping"}')
        chat.wait("pong", lambda f: f.get("type") == "pong")
        assert bystander.events == [], bystander.events
    finally:
        dashboard.close()
        chat.close()
        bystander.close()
    no_access_denied(stack)


def test_a_batch_is_sent_searched_in_the_delivery_log_exported_and_a_failure_retried(stack: Stack, api: Api, north: str, carrier: CarrierFake) -> None:
    """The send function takes a batch and a retry, the conversations function searches the
    tenant's messages through its own index (gsi4), streams the CSV and lists the webhook
    log the webhook functions wrote, each under its role."""
    refused_once = "+15555550177"
    refused: list[str] = []

    def twilio(req: Any) -> tuple[int, Any]:
        if req.form().get("To") == refused_once and not refused:
            refused.append(req.form()["Body"])
            return 400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}
        return 201, {"sid": f"SM{len(carrier.requests):032d}", "status": "queued", "account_sid": ACCOUNT_SID}

    carrier.on("POST", r"/2010-04-01/Accounts/\w+/Messages\.json$", twilio)
    batch = {"messages": [
        {"channel": "sms", "to": refused_once, "body": "Evacuate north of 5th"},
        {"channel": "sms", "to": "nobody", "body": "refused"},
        {"channel": "sms", "to": "+15555550178", "body": "Evacuate south of 5th"},
    ]}
    resp = api.call("POST", "/v1/messages/batch", north, json=batch, headers={"Idempotency-Key": "evac-1"})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert results[1]["error"]["code"] == "invalid_phone_number"
    failed_id, sent_id = results[0]["id"], results[2]["id"]
    again = api.call("POST", "/v1/messages/batch", north, json=batch, headers={"Idempotency-Key": "evac-1"}).json()["results"]
    assert (again[0]["id"], again[2]["id"]) == (failed_id, sent_id)
    wait_for("the refused send", lambda: message(api, north, failed_id)["status"] == "failed")
    wait_for("the other send", lambda: message(api, north, sent_id)["status"] == "sent")

    found = api.call("GET", "/v1/messages?status=failed&q=evacuate", north)
    assert found.status_code == 200, found.text
    assert [m["id"] for m in found.json()["items"]] == [failed_id]
    csv = api.call("GET", "/v1/messages?q=evacuate", north, headers={"Accept": "text/csv"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv"), csv.text
    rows = csv.text.strip().splitlines()
    assert rows[0].startswith("id,created_at") and {r.split(",")[0] for r in rows[1:]} == {failed_id, sent_id}

    # The webhook functions log what they took in; the conversations function lists it.
    log = api.call("GET", "/v1/webhook-events?carrier=twilio&result=accepted", north)
    assert log.status_code == 200, log.text
    assert any("MessageSid=" in (e["body"] or "") for e in log.json()["items"]), log.text

    retried = api.call("POST", f"/v1/messages/{failed_id}/retry", north)
    assert retried.status_code == 202, retried.text
    wait_for("the retried send", lambda: message(api, north, failed_id)["status"] == "sent")
    assert len(sends_to(carrier, refused_once)) == 2
    no_access_denied(stack)


def test_auto_replies_greet_once_and_answer_keywords_through_the_updater(stack: Stack, api: Api, north: str, carrier: CarrierFake) -> None:
    """The admin function saves the tenant's auto-replies; the conversation-updater, under its
    own role, reads them, looks for an earlier message (gsi1), takes the conversation's turn
    and sends through the delivery worker."""
    week = {d: [["00:00", "24:00"]] for d in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
    api.admin("PUT", "/v1/admin/tenants/north/auto-replies", {
        "business_hours": {"timezone": "America/Toronto", "hours": week},
        "outside_hours_reply": "We are closed.",
        "greeting": "Welcome to North County dispatch.",
        "keyword_rules": [{"match": "contains", "keyword": "address", "reply": "12 Main St"}],
    })
    # The updater's instance read the tenant's (empty) auto-replies for earlier scenarios and
    # trusts them for 30 s: the change reaches it within that, as the README says.
    time.sleep(31)
    greeted, asked = "+15555550181", "+15555550182"
    inbound(api, "SM" + "g" * 32, "hello", greeted)
    forms = wait_for("the greeting at the carrier", lambda: sends_to(carrier, greeted))
    assert forms[0]["Body"] == "Welcome to North County dispatch." and forms[0]["From"] == NUMBER
    inbound(api, "SM" + "h" * 32, "still there?", greeted)
    inbound(api, "SM" + "k" * 32, "what is your address", asked)
    forms = wait_for("the keyword reply at the carrier", lambda: sends_to(carrier, asked))
    assert forms[0]["Body"] == "12 Main St"
    time.sleep(2)
    assert len(sends_to(carrier, greeted)) == 1, "one auto-reply per cooldown"
    audit = api.call("GET", "/v1/audit?action=message.auto_reply", north).json()["items"]
    assert len(audit) == 2 and all(a["actor"]["type"] == "auto_reply" for a in audit), audit
    api.admin("PUT", "/v1/admin/tenants/north/auto-replies", {})
    no_access_denied(stack)


def test_scheduled_bulk_and_paced_sends_take_their_own_paths(stack: Stack, api: Api, north: str, carrier: CarrierFake) -> None:
    """A scheduled message waits in the table until the sweeper queues it (through an SQS
    delay) and a canceled one never goes; a bulk message takes the bulk queue and its own
    worker, so a high one goes while bulk is held; a paced number's sends are spaced across
    invocations by the booking in the table."""
    scheduled, canceled_to, bulk_to, high_to, paced_to = (f"+1555555014{i}" for i in range(5))
    arrivals: dict[str, list[float]] = {}

    def twilio(req: Any) -> tuple[int, Any]:
        arrivals.setdefault(req.form().get("To", ""), []).append(time.monotonic())
        return 201, {"sid": f"SM{len(carrier.requests):032d}", "status": "queued", "account_sid": ACCOUNT_SID}

    carrier.on("POST", r"/2010-04-01/Accounts/\w+/Messages\.json$", twilio)
    soon = (datetime.now(timezone.utc) + timedelta(seconds=4)).isoformat()
    later = (datetime.now(timezone.utc) + timedelta(seconds=8)).isoformat()
    first = api.call("POST", "/v1/messages", north, json={"channel": "sms", "to": scheduled, "body": "Shift change", "send_at": soon})
    assert first.status_code == 202 and first.json()["status"] == "scheduled", first.text
    doomed = api.call("POST", "/v1/messages", north, json={"channel": "sms", "to": canceled_to, "body": "Never", "send_at": later})
    assert doomed.status_code == 202, doomed.text
    cancel = api.call("DELETE", f"/v1/messages/{doomed.json()['id']}", north)
    assert cancel.status_code == 200 and cancel.json()["status"] == "canceled", cancel.text
    assert api.call("DELETE", f"/v1/messages/{doomed.json()['id']}", north).status_code == 409

    (schedule,) = stack.schedules_of("OutboxSweeperFunction")
    outcome = stack.fire_schedule(schedule)
    assert outcome.done.wait(60)
    assert outcome.succeeded, outcome.attempts[-1].error
    assert outcome.attempts[-1].payload["scheduled"] == 1, outcome.attempts[-1].payload
    sent = wait_for("the scheduled send", lambda: (m := message(api, north, first.json()["id"]))["status"] == "sent" and m, timeout=30)
    assert [e["status"] for e in sent["events"]] == ["scheduled", "queued", "sent"]
    assert datetime.fromisoformat(sent["events"][-1]["at"].replace("Z", "+00:00")) >= datetime.fromisoformat(soon)
    time.sleep(5)
    assert canceled_to not in arrivals and message(api, north, doomed.json()["id"])["status"] == "canceled"

    bulk_mapping = stack.mapping_of("BulkDeliveryWorkerFunction")
    stack.paused.add(bulk_mapping)
    try:
        bulk = api.call("POST", "/v1/messages", north, json={"channel": "sms", "to": bulk_to, "body": "Newsletter", "priority": "bulk"})
        high = api.call("POST", "/v1/messages", north, json={"channel": "sms", "to": high_to, "body": "Now", "priority": "high"})
        assert bulk.status_code == 202 and high.status_code == 202, (bulk.text, high.text)
        wait_for("the high send", lambda: message(api, north, high.json()["id"])["status"] == "sent")
        assert message(api, north, bulk.json()["id"])["status"] == "queued", "bulk waits for its own worker"
    finally:
        stack.paused.discard(bulk_mapping)
    wait_for("the bulk send", lambda: message(api, north, bulk.json()["id"])["status"] == "sent", timeout=30)

    api.admin("PUT", f"/v1/admin/tenants/north/numbers/{NUMBER}", {"provider": "twilio", "channels": ["sms", "mms"], "max_per_second": 1})
    try:
        ids = []
        for i in range(3):
            resp = api.call("POST", "/v1/messages", north, json={"channel": "sms", "to": paced_to, "body": f"Paced {i}"})
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["id"])
        for message_id in ids:
            wait_for("a paced send", lambda: message(api, north, message_id)["status"] == "sent", timeout=30)
        times = sorted(arrivals[paced_to])
        assert len(times) == 3
        assert all(b - a >= 0.9 for a, b in zip(times, times[1:])), times
    finally:
        api.admin("PUT", f"/v1/admin/tenants/north/numbers/{NUMBER}", {"provider": "twilio", "channels": ["sms", "mms"]})
    no_access_denied(stack)


def test_whatsapp_falls_back_to_sms_when_refused_or_not_delivered_in_time(stack: Stack, api: Api, north: str, carrier: CarrierFake) -> None:
    """The delivery worker moves a refused WhatsApp message to SMS at once, and its fallback
    check (a delayed job on the delivery queue) moves one not delivered in time; each stays
    one message, under the functions' own roles."""
    refused_to, silent_to = "+15555550150", "+15555550151"

    def twilio(req: Any) -> tuple[int, Any]:
        if req.form().get("To") == f"whatsapp:{refused_to}":
            return 400, {"code": 63016, "message": "Outside the allowed window", "status": 400}
        return 201, {"sid": f"SM{len(carrier.requests):032d}", "status": "queued", "account_sid": ACCOUNT_SID}

    carrier.on("POST", r"/2010-04-01/Accounts/\w+/Messages\.json$", twilio)
    api.admin("PUT", f"/v1/admin/tenants/north/numbers/{NUMBER}", {"provider": "twilio", "channels": ["sms", "mms", "whatsapp"]})
    try:
        ids = {}
        for to, wait in ((refused_to, 300), (silent_to, 2)):
            resp = api.call("POST", "/v1/messages", north, json={"channel": "whatsapp", "to": to, "body": "Are you safe?", "fallback": [{"channel": "sms", "after_secs": wait}]})
            assert resp.status_code == 202, resp.text
            ids[to] = resp.json()["id"]
        for to in (refused_to, silent_to):
            moved = wait_for(f"the fallback to SMS for {to}", lambda: (m := message(api, north, ids[to]))["channel"] == "sms" and m["status"] == "sent" and m, timeout=40)
            assert [e["status"] for e in moved["events"]] == ["queued", "sent", "queued", "sent"] if to == silent_to else ["queued", "queued", "sent"], moved
            assert moved["events"][-2]["note"].startswith("fallback from whatsapp to sms"), moved
            assert len(sends_to(carrier, to)) == 1 and len(sends_to(carrier, f"whatsapp:{to}")) == 1
    finally:
        api.admin("PUT", f"/v1/admin/tenants/north/numbers/{NUMBER}", {"provider": "twilio", "channels": ["sms", "mms"]})
    no_access_denied(stack)
