"""What a message costs on AWS, counted from what the stack's functions really did.

Every request moto authorised is recorded with the function (by its role's credentials) that
made it; each invocation with its duration. DynamoDB request units follow the on-demand rules:
a write is 1 unit per KB of the item written (2 in a transaction); a read 1 unit per 4 KB read
when strongly consistent, half that when eventually consistent (2 in a transaction); sizes are
taken from the request (writes) or the response (reads), as JSON, a slight overestimate.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# us-east-1 list prices (USD), on-demand, as published in 2026.
PRICES = {
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second_arm64": 0.0000133334,
    "ddb_write_unit": 0.625 / 1e6,
    "ddb_read_unit": 0.125 / 1e6,
    "sqs_request": 0.40 / 1e6,
    "http_api_request": 1.00 / 1e6,
    "websocket_message": 1.00 / 1e6,
    "secrets_api_call": 0.05 / 1e4,
    "logs_ingest_gb": 0.50,
}

DDB_READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
DDB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


@dataclass
class Tally:
    """Counts over a window of activity."""

    ddb_reads: int = 0
    ddb_writes: int = 0
    # Items written: each item of a transaction counts (the "writes").
    ddb_write_items: int = 0
    read_units: float = 0.0
    write_units: float = 0.0
    sqs_sends: int = 0
    secrets_calls: int = 0
    post_to_connection: int = 0
    by_call: Counter = field(default_factory=Counter)
    # (function, operation, key kind): which items are read and written, by the key's prefix.
    by_key: Counter = field(default_factory=Counter)

    def add(self, function: str, request: dict[str, Any]) -> None:
        service, op = str(request["action"]).split(":", 1)
        body = request.get("body") or b"{}"
        if service == "dynamodb" and (op in DDB_READS or op in DDB_WRITES):
            self.by_call[f"{function} {op}"] += 1
            data = json.loads(body)
            for kind in _key_kinds(op, data):
                self.by_key[f"{function} {op} {kind}"] += 1
            if op in DDB_READS:
                self.ddb_reads += 1
                kb4 = max(1, math.ceil(int(request.get("response_bytes", 0)) / 4096))
                factor = 2.0 if op == "TransactGetItems" else (1.0 if data.get("ConsistentRead") else 0.5)
                self.read_units += kb4 * factor
            else:
                self.ddb_writes += 1
                self.ddb_write_items += len(data.get("TransactItems", [])) if op == "TransactWriteItems" else 1
                if op == "TransactWriteItems":
                    self.write_units += sum(2 * max(1, math.ceil(len(json.dumps(i)) / 1024)) for i in data.get("TransactItems", []))
                else:
                    self.write_units += max(1, math.ceil(len(json.dumps(data.get("Item", data.get("Key", {})))) / 1024))
        elif service == "sqs" and op.startswith("SendMessage"):
            self.sqs_sends += 1
            self.by_call[f"{function} {op}"] += 1
        elif service == "secretsmanager":
            self.secrets_calls += 1
            self.by_call[f"{function} {op}"] += 1
        elif service == "execute-api":
            self.post_to_connection += 1
            self.by_call[f"{function} PostToConnection"] += 1


def cost_per_million(per_message: dict[str, float]) -> dict[str, float]:
    """USD for a million messages, by line, from per-message counts."""
    p = PRICES
    lines = {
        "Lambda requests": per_message["invocations"] * p["lambda_request"],
        "Lambda GB-seconds (128 MB, arm64)": per_message["gb_seconds"] * p["lambda_gb_second_arm64"],
        "DynamoDB writes": per_message["write_units"] * p["ddb_write_unit"],
        "DynamoDB reads": per_message["read_units"] * p["ddb_read_unit"],
        "SQS requests": per_message["sqs_requests"] * p["sqs_request"],
        "API Gateway HTTP": per_message["http_requests"] * p["http_api_request"],
        "API Gateway WebSocket messages": per_message["post_to_connection"] * p["websocket_message"],
        "Secrets Manager": per_message["secrets_calls"] * p["secrets_api_call"],
        "CloudWatch Logs ingestion": per_message["log_bytes"] / 1e9 * p["logs_ingest_gb"],
    }
    return {k: v * 1e6 for k, v in lines.items()}


def _key_kinds(op: str, data: dict[str, Any]) -> list[str]:
    """The kinds of item a DynamoDB request addresses: its key's prefix (`T#`, `M#`, ...)."""

    def kind(key: dict[str, Any]) -> str:
        pk = key.get("pk", {}).get("S", "?")
        sk = key.get("sk", {}).get("S", "")
        return pk.split("#")[0] + "#" + (("/" + sk.split("#")[0]) if sk and not sk.startswith(pk.split("#")[0]) else "")

    if op == "Query":
        values = data.get("ExpressionAttributeValues", {})
        pk = next((v.get("S", "") for k, v in values.items() if k in (":pk", ":p", ":pk1")), "")
        return [data.get("IndexName", "table") + ":" + (pk.split("#")[0] or "?")]
    if op == "TransactWriteItems":
        out = []
        for item in data.get("TransactItems", []):
            for verb, body in item.items():
                out.append(verb + " " + kind(body.get("Item") or body.get("Key") or {}))
        return out
    return [kind(data.get("Key") or data.get("Item") or {})]
