"""IAM policy evaluation for what moto does not check: the resource of each request.

moto authorises the action of every request but compares resources only for SQS. The harness
records each authorised request, works out the ARN AWS would authorise it against (a table or
its index, a secret, a queue, a WebSocket connection; each operation inside a DynamoDB
transaction as its own action, as AWS does), and evaluates the function's policies as the SAM
translator produced them, resources and all."""

from __future__ import annotations

import fnmatch
import json
from typing import Any, Iterable
from urllib.parse import unquote

from .template import ACCOUNT_ID, REGION


def _listify(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _glob(pattern: str, value: str, case: bool) -> bool:
    pattern = pattern.replace("[", "[[]")
    return fnmatch.fnmatchcase(value, pattern) if case else fnmatch.fnmatchcase(value.lower(), pattern.lower())


def allowed(documents: Iterable[dict[str, Any]], action: str, resource: str) -> bool:
    """Whether `documents` allow `action` on `resource` (an explicit Deny wins)."""
    allow = False
    for document in documents:
        statements = document.get("Statement", [])
        for st in [statements] if isinstance(statements, dict) else statements:
            if not any(_glob(a, action, case=False) for a in _listify(st.get("Action"))):
                continue
            if not any(_glob(r, resource, case=True) for r in _listify(st.get("Resource"))):
                continue
            if st.get("Effect") == "Deny":
                return False
            allow = True
    return allow


_TRANSACT_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


def resources_of(request: dict[str, Any], ws_api: str | None, ws_stage: str) -> list[tuple[str, str]]:
    """(action, resource ARN) pairs AWS would authorise for one recorded request."""
    action: str = request["action"]  # type: ignore[assignment]
    service, operation = action.split(":", 1)
    table = lambda name: f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"  # noqa: E731
    if service == "dynamodb":
        body = json.loads(request["body"] or b"{}")
        if operation in ("TransactWriteItems", "TransactGetItems"):
            pairs = []
            for item in body.get("TransactItems", []):
                for kind, op in item.items():
                    pairs.append((action, table(op["TableName"])))
                    pairs.append((f"dynamodb:{_TRANSACT_ACTIONS[kind]}", table(op["TableName"])))
            return pairs
        if operation in ("BatchGetItem", "BatchWriteItem"):
            return [(action, table(name)) for name in body.get("RequestItems", {})]
        if "TableName" in body:
            arn = table(body["TableName"])
            if body.get("IndexName"):
                arn += f"/index/{body['IndexName']}"
            return [(action, arn)]
        return [(action, "*")]
    if service == "secretsmanager":
        body = json.loads(request["body"] or b"{}")
        secret = body.get("SecretId") or body.get("Name")
        if secret is None:
            return [(action, "*")]
        if not secret.startswith("arn:"):
            # AWS names a secret's ARN with six random characters after its name.
            secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{secret}-AbCdEf"
        return [(action, secret)]
    if service == "sqs":
        body = json.loads(request["body"] or b"{}") if request["body"] else {}
        url = body.get("QueueUrl") or (request["data"] or {}).get("QueueUrl", [""])
        url = url[0] if isinstance(url, list) else url
        return [(action, f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{url.rstrip('/').split('/')[-1]}")] if url else [(action, "*")]
    if service == "s3":
        # Path-style requests (the emulator's): /<bucket>/<key>.
        path = unquote(str(request["path"]).split("?")[0]).lstrip("/")
        return [(action, f"arn:aws:s3:::{path}")]
    if service == "execute-api":
        connection = unquote(str(request["path"]).split("/@connections/")[-1])
        return [(action, f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{ws_api}/{ws_stage}/{request['method']}/@connections/{connection}")]
    return [(action, "*")]
