"""The stack test fails, naming the AccessDenied, when a function lacks a permission its path
needs; and the policies, read statically, scope every resource to this stack and keep the
admin token from every function but the admin API."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import ACCOUNT_SID, AUTH_TOKEN, Api, make_stack
from omni_stack import template as tpl
from omni_stack.carriers import CarrierFake, twilio_signature
from omni_stack.stack import Stack, wait_for
from test_flows import CONTACT, NUMBER, Dashboard

Edit = Callable[[dict[str, Any]], None]


def statements(template: dict[str, Any], function: str) -> list[Any]:
    return template["Resources"][function]["Properties"]["Policies"]


def drop_statement(function: str, matches: Callable[[Any], bool]) -> Edit:
    """Removes the first policy statement of `function` that `matches` (a template edit)."""

    def edit(template: dict[str, Any]) -> None:
        for policy in statements(template, function):
            if "Statement" in policy:
                for st in policy["Statement"]:
                    if matches(st):
                        policy["Statement"].remove(st)
                        return
            elif matches(policy):
                statements(template, function).remove(policy)
                return
        raise AssertionError(f"{function} has no such statement")

    return edit


def grants(action: str) -> Callable[[Any], bool]:
    def match(st: Any) -> bool:
        actions = st.get("Action", []) if isinstance(st, dict) else []
        return action in ([actions] if isinstance(actions, str) else actions)

    return match


def rescope_table(function: str) -> Edit:
    """Points `function`'s DynamoDB statement at another table: only the resource is wrong."""

    def edit(template: dict[str, Any]) -> None:
        for policy in statements(template, function):
            for st in policy.get("Statement", []):
                actions = st.get("Action", [])
                if any(str(a).startswith("dynamodb:") for a in ([actions] if isinstance(actions, str) else actions)):
                    st["Resource"] = {"Fn::Sub": "${Table.Arn}-of-another-stack"}
                    return
        raise AssertionError(f"{function} has no DynamoDB statement")

    return edit


def send(api: Api, key: str, carrier: CarrierFake) -> None:
    api.call("POST", "/v1/messages", key, json={"channel": "sms", "to": "+15555550140", "body": "hello"})


def receive(api: Api, key: str, carrier: CarrierFake) -> None:
    params = {"MessageSid": "SM" + "c" * 32, "AccountSid": ACCOUNT_SID, "From": CONTACT, "To": NUMBER, "Body": "Is anyone there?", "NumMedia": "0"}
    signature = twilio_signature(AUTH_TOKEN, api.base + "/webhooks/twilio", params)
    # Whatever it answers: the AccessDenied is what the test looks for.
    api.call("POST", "/webhooks/twilio", data=params, headers={"X-Twilio-Signature": signature})


CASES = {
    "send-without-secrets": ("SendFunction", drop_statement("SendFunction", grants("secretsmanager:GetSecretValue")), send, "secretsmanager:GetSecretValue"),
    "updater-without-manage-connections": ("ConversationUpdaterFunction", drop_statement("ConversationUpdaterFunction", grants("execute-api:ManageConnections")), receive, "ManageConnections"),
    "twilio-webhook-without-the-inbound-queue": ("WebhookTwilioFunction", drop_statement("WebhookTwilioFunction", lambda p: isinstance(p, dict) and "SQSSendMessagePolicy" in p), receive, "SendMessage"),
    "send-scoped-to-another-table": ("SendFunction", rescope_table("SendFunction"), send, "dynamodb:"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_missing_permission_fails_the_stack_test_naming_it(case: str, carrier: CarrierFake, tmp_path: Path) -> None:
    function, edit, scenario, named = CASES[case]
    env = {"OMNI_TWILIO_API_URL": carrier.url}
    carrier.on("POST", r"/Messages\.json$", lambda req: (201, {"sid": "SM" + "d" * 32, "status": "queued"}))
    stack = make_stack(f"iam-{case}", tmp_path, env, template_edit=edit)
    try:
        api = Api(stack)
        api.admin("PUT", "/v1/admin/tenants/north", {"name": "North", "default_region": "US"})
        api.admin("PUT", "/v1/admin/tenants/north/providers/twilio", {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN})
        api.admin("PUT", f"/v1/admin/tenants/north/numbers/{NUMBER}", {"provider": "twilio", "channels": ["sms"]})
        key = api.admin("POST", "/v1/admin/tenants/north/api-keys")["key"]
        dashboard = Dashboard(stack, key)
        try:
            scenario(api, key, carrier)
            denied = wait_for(f"an AccessDenied in {function}", lambda: stack.access_denied().get(function), timeout=30)
        finally:
            dashboard.close()
        assert any("AccessDenied" in line and named in line for line in denied), denied
    finally:
        stack.down()


# ---- static: what the policies name --------------------------------------------------------


def internet_facing(stack: Stack) -> set[str]:
    """Functions behind an HTTP API route or a WebSocket route."""
    assert stack.http is not None and stack.ws is not None
    behind = {r.function.logical_id for r in stack.http.routes}
    behind |= {f.logical_id for f in stack.ws.routes.values()}
    return behind


def statements_of(stack: Stack, function: str) -> list[dict[str, Any]]:
    out = []
    for document in stack.role_documents[stack.functions[function].role_logical]:
        sts = document.get("Statement", [])
        out.extend([sts] if isinstance(sts, dict) else sts)
    return out


def listify(v: Any) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def can(stack: Stack, function: str, action: str, resource: str) -> bool:
    from omni_stack.policies import allowed

    return allowed(stack.role_documents[stack.functions[function].role_logical], action, resource)


def test_only_the_admin_api_can_read_the_admin_token(stack: Stack) -> None:
    token = stack.resolver.ref("AdminTokenSecret")
    facing = internet_facing(stack)
    assert "WebhookTwilioFunction" in facing and "AdminFunction" in facing
    readers = sorted(f for f in stack.functions if can(stack, f, "secretsmanager:GetSecretValue", token))
    assert readers == ["AdminFunction"], readers
    # No wildcard grants it either: the same name with another suffix is readable by nobody.
    name = stack.client("secretsmanager").describe_secret(SecretId=token)["Name"]
    guessed = f"arn:aws:secretsmanager:{tpl.REGION}:{tpl.ACCOUNT_ID}:secret:{name}-XyZ123"
    assert [f for f in stack.functions if can(stack, f, "secretsmanager:GetSecretValue", guessed)] == []


def test_every_resource_scoped_statement_names_this_stack_and_covers_what_the_code_addresses(stack: Stack) -> None:
    table = stack.resolver.get_att("Table", "Arn")
    queues = {stack.resolver.get_att(q, "Arn") for q in stack._of_type("AWS::SQS::Queue")}
    secrets_prefix = f"arn:aws:secretsmanager:{tpl.REGION}:{tpl.ACCOUNT_ID}:secret:omni/{stack.stack_name}/"
    token = stack.resolver.ref("AdminTokenSecret")
    assert stack.ws is not None
    # Pushes POST to connections; revoking an API key DELETEs its dashboards' connections.
    connections = {f"arn:aws:execute-api:{tpl.REGION}:{tpl.ACCOUNT_ID}:{stack.ws.api_id}/{stack.ws.stage}/{verb}/@connections/*" for verb in ("POST", "DELETE")}
    for function in stack.functions:
        env = stack.functions[function].env
        for st in statements_of(stack, function):
            actions = listify(st.get("Action", []))
            resources = listify(st.get("Resource", []))
            services = {a.split(":")[0] for a in actions}
            if services == {"dynamodb"}:
                assert all(r == table or r.startswith(table + "/index/") for r in resources), (function, st)
            elif services == {"sqs"} and resources != ["*"]:
                assert set(resources) <= queues, (function, st)
            elif services == {"secretsmanager"}:
                assert all(r.startswith(secrets_prefix) or r == token for r in resources), (function, st)
            elif services == {"execute-api"}:
                assert set(resources) <= connections, (function, st)
        # A function told where tenant credentials live may read every tenant's, and nothing
        # under the prefix is the admin token.
        if env.get("OMNI_SECRET_PREFIX") and any("secretsmanager:GetSecretValue" in listify(st.get("Action", [])) for st in statements_of(stack, function)):
            addressed = f"arn:aws:secretsmanager:{tpl.REGION}:{tpl.ACCOUNT_ID}:secret:{env['OMNI_SECRET_PREFIX']}north/twilio-AbCdEf"
            route = f"arn:aws:secretsmanager:{tpl.REGION}:{tpl.ACCOUNT_ID}:secret:{env['OMNI_SECRET_PREFIX']}_waba/102290129340398-AbCdEf"
            webhook = f"arn:aws:secretsmanager:{tpl.REGION}:{tpl.ACCOUNT_ID}:secret:{env['OMNI_SECRET_PREFIX']}_webhook/north/019aa5e0-0000-7000-8000-00000000e001-AbCdEf"
            if function == "WhatsappForwarderFunction":
                # Least privilege: the forwarder reads WhatsApp route secrets, no tenant's.
                assert can(stack, function, "secretsmanager:GetSecretValue", route), function
                assert not can(stack, function, "secretsmanager:GetSecretValue", addressed), function
                assert not can(stack, function, "secretsmanager:GetSecretValue", webhook), function
            elif function == "EventDispatcherFunction":
                # Least privilege: the dispatcher reads event webhook secrets, no tenant's
                # carrier credentials nor WhatsApp routes'.
                assert can(stack, function, "secretsmanager:GetSecretValue", webhook), function
                assert not can(stack, function, "secretsmanager:GetSecretValue", addressed), function
                assert not can(stack, function, "secretsmanager:GetSecretValue", route), function
            else:
                assert can(stack, function, "secretsmanager:GetSecretValue", addressed), function
            assert not fnmatch.fnmatchcase(token, env["OMNI_SECRET_PREFIX"] + "*")
        # The queues a function is told about and may send to are the stack's.
        for name, value in env.items():
            if name.endswith("_QUEUE_URL") or name.endswith("_DLQ_URL"):
                assert value.rsplit("/", 1)[-1] in {q.rsplit(":", 1)[-1] for q in queues}, (function, name, value)


def test_an_ses_event_the_function_keeps_failing_lands_in_the_on_failure_destination(carrier: CarrierFake, tmp_path: Path) -> None:
    """EventBridge invokes ses-events asynchronously: after two retries the event goes to the
    on-failure destination (an SQS queue, alarmed), not nowhere."""
    edit = drop_statement("SesEventsFunction", grants("dynamodb:GetItem"))
    stack = make_stack("iam-ses-events-failing", tmp_path, {}, template_edit=edit)
    try:
        event = json.loads((stack.template_path.parent / "events" / "ses-events.json").read_text())
        (outcome,) = stack.put_event(event)
        assert outcome.done.wait(60)
        assert len(outcome.attempts) == 3, [a.error for a in outcome.attempts]
        assert not outcome.succeeded
        destination = stack.resolver.get_att("SesEventsDeadLetterQueue", "Arn")
        assert outcome.destination == destination
        queue = stack.resolver.ref("SesEventsDeadLetterQueue")
        got = stack.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=1).get("Messages", [])
        assert got, "nothing in the on-failure destination"
        record = json.loads(got[0]["Body"])
        assert record["requestContext"]["condition"] == "RetriesExhausted"
        assert record["requestPayload"]["detail"]["mail"]["messageId"] == event["detail"]["mail"]["messageId"]
        assert "SesEventsFunction" in stack.access_denied()
    finally:
        stack.down()
