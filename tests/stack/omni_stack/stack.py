"""The SAM stack brought up on this machine: template.yaml expanded by the SAM translator, its
resources created in moto, one IAM role per function with exactly the translator's policies,
each function's real binary run under its role's credentials with the environment the
template gives it, and the event sources the expanded template declares driving them."""

from __future__ import annotations

import json
import re
import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import emulator as emu
from . import template as tpl
from .emulator import Emulator
from .policies import allowed, resources_of
from .gateway import HttpApi, WebSocketApi, compile_route
from .runtime import Function, Result

# Lambda's asynchronous invocation retries by default; AWS waits about a minute, then two,
# between attempts: the harness waits this long instead, so a test sees the whole sequence.
ASYNC_RETRY_DELAY_S = 0.5


def _managed_arns(role: dict[str, Any]) -> list[str]:
    return list(role.get("ManagedPolicyArns", []))


def moto_policy(document: dict[str, Any]) -> dict[str, Any]:
    """A policy as moto can enforce it. moto matches resources only for SQS; for every other
    service it compares the statement's Resource with `*`, so resource-scoped statements are
    widened to `*` there (tests/stack/test_policies.py checks their resources statically)."""
    out = json.loads(json.dumps(document))
    # AWS reads a policy without Version as 2008-10-17; moto insists on the element.
    out.setdefault("Version", "2012-10-17")
    for statement in out.get("Statement", []):
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if not all(a.startswith("sqs:") for a in actions):
            statement["Resource"] = "*"
    return out


@dataclass
class AsyncOutcome:
    """What became of an asynchronous invocation (EventBridge, schedules)."""

    function: str
    event: Any
    attempts: list[Result] = field(default_factory=list)
    destination: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def succeeded(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].ok


class Stack:
    """The stack: create with [`Stack.up`], stop with [`Stack.down`]."""

    def __init__(
        self,
        template_path: Path,
        bin_dir: Path,
        log_dir: Path,
        parameters: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
        stack_name: str = "omni-stack",
        template_edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.template_path = template_path
        self.bin_dir = bin_dir
        self.log_dir = log_dir
        self.parameters = dict(parameters or {})
        self.extra_env = dict(extra_env or {})
        self.stack_name = stack_name
        self.source = tpl.load(template_path)
        if template_edit is not None:
            template_edit(self.source)
        self.emulator: Emulator | None = None
        self.functions: dict[str, Function] = {}
        self.role_credentials: dict[str, dict[str, str]] = {}
        self.http: HttpApi | None = None
        self.ws: WebSocketApi | None = None
        self.poller_errors: list[str] = []
        self.async_outcomes: list[AsyncOutcome] = []
        # Event source mappings whose pollers are held (a test's "the job was lost" window).
        self.paused: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- bring-up ----------------------------------------------------------------------------

    def up(self) -> "Stack":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.emulator = Emulator.shared()
        # The HTTP API's URL is known before the template is expanded: carriers call it, and
        # PublicUrl (status callbacks, signature checks) names it.
        self.http = HttpApi(f"http{uuid.uuid4().hex[:8]}", [])
        self.parameters.setdefault("PublicUrl", self.http.url)
        self.expanded = tpl.expand(self.source, self.parameters)
        self.resources: dict[str, Any] = self.expanded["Resources"]
        self.resolver = tpl.Resolver(self.expanded, self.parameters, self.stack_name)
        self._create_resources()
        self.emulator.enforce_iam()
        self._create_functions()
        self._wire_http_api()
        self._wire_websocket_api()
        self._start_sqs_pollers()
        return self

    def _present(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if self.resolver.included(v)}

    def _of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self._present().items() if v["Type"] == kind}

    def _physical(self, logical: str, ref: Any, **attributes: Any) -> None:
        self.resolver.physical[logical] = {"Ref": ref, **attributes}

    def _create_resources(self) -> None:
        assert self.emulator is not None
        em = self.emulator
        arn = lambda service, rest: f"arn:aws:{service}:{tpl.REGION}:{tpl.ACCOUNT_ID}:{rest}"  # noqa: E731
        resolve = self.resolver.resolve

        # Names and ARNs first: resources refer to each other in any order.
        for logical, res in self._present().items():
            kind = res["Type"]
            name = f"{self.stack_name}-{logical}"
            if kind == "AWS::DynamoDB::Table":
                self._physical(logical, name, Arn=arn("dynamodb", f"table/{name}"), StreamArn=arn("dynamodb", f"table/{name}/stream/1"))
            elif kind == "AWS::SQS::Queue":
                props = res.get("Properties", {})
                qname = name + (".fifo" if props.get("FifoQueue") else "")
                self._physical(logical, f"{em.endpoint}/{tpl.ACCOUNT_ID}/{qname}", Arn=arn("sqs", qname), QueueName=qname, QueueUrl=f"{em.endpoint}/{tpl.ACCOUNT_ID}/{qname}")
            elif kind == "AWS::IAM::Role":
                self._physical(logical, name, Arn=f"arn:aws:iam::{tpl.ACCOUNT_ID}:role/{name}", RoleId=name)
            elif kind == "AWS::Lambda::Function":
                self._physical(logical, name, Arn=arn("lambda", f"function:{name}"))
            elif kind == "AWS::SNS::Topic":
                self._physical(logical, arn("sns", name), TopicArn=arn("sns", name), TopicName=name)
            elif kind == "AWS::S3::Bucket":
                bucket = name.lower()
                self._physical(logical, bucket, Arn=f"arn:aws:s3:::{bucket}", DomainName=f"{bucket}.s3.amazonaws.com", RegionalDomainName=f"{bucket}.s3.{tpl.REGION}.amazonaws.com")
            elif kind == "AWS::ApiGatewayV2::Api":
                assert self.http is not None
                api_id = self.http.api_id if "Body" in res["Properties"] else f"ws{uuid.uuid4().hex[:8]}"
                self._physical(logical, api_id, ApiEndpoint=f"https://{api_id}.execute-api.{tpl.REGION}.amazonaws.com", ApiId=api_id)
            elif kind == "AWS::SecretsManager::Secret":
                pass  # named below, once its name resolves
            else:
                self._physical(logical, f"{logical}-{uuid.uuid4().hex[:8]}", Arn=arn("cloudformation", f"resource/{logical}"))

        for logical, res in self._of_type("AWS::SecretsManager::Secret").items():
            props = res["Properties"]
            name = resolve(props.get("Name", f"{self.stack_name}-{logical}"))
            gen = props.get("GenerateSecretString")
            if "SecretString" in props:
                value = resolve(props["SecretString"])
            elif gen is not None:
                alphabet = string.ascii_letters + string.digits
                if not gen.get("ExcludePunctuation"):
                    alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
                value = "".join(secrets.choice(alphabet) for _ in range(int(gen.get("PasswordLength", 32))))
            else:
                value = None
            kwargs = {"Name": name}
            if value is not None:
                kwargs["SecretString"] = value
            created = em.client("secretsmanager").create_secret(**kwargs)
            self._physical(logical, created["ARN"], Id=created["ARN"])

        ddb = em.client("dynamodb")
        for logical, res in self._of_type("AWS::DynamoDB::Table").items():
            props = resolve(res["Properties"])
            kwargs = {
                "TableName": self.resolver.ref(logical),
                "AttributeDefinitions": props["AttributeDefinitions"],
                "KeySchema": props["KeySchema"],
                "BillingMode": props.get("BillingMode", "PROVISIONED"),
            }
            if kwargs["BillingMode"] != "PAY_PER_REQUEST":
                kwargs["ProvisionedThroughput"] = props["ProvisionedThroughput"]
            if props.get("GlobalSecondaryIndexes"):
                kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
            if props.get("StreamSpecification"):
                kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
            ddb.create_table(**kwargs)
            ttl = props.get("TimeToLiveSpecification")
            if ttl and ttl.get("Enabled"):
                ddb.update_time_to_live(TableName=kwargs["TableName"], TimeToLiveSpecification=ttl)

        sqs = em.client("sqs")
        queues = self._of_type("AWS::SQS::Queue")
        for logical, res in queues.items():
            attributes = {"FifoQueue": "true"} if res.get("Properties", {}).get("FifoQueue") else {}
            sqs.create_queue(QueueName=self.resolver.get_att(logical, "QueueName"), Attributes=attributes)
        for logical, res in queues.items():
            props = resolve(res.get("Properties", {}))
            attributes = {}
            for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds", "MaximumMessageSize", "ContentBasedDeduplication"):
                if key in props:
                    attributes[key] = str(props[key]).lower() if isinstance(props[key], bool) else str(props[key])
            if "RedrivePolicy" in props:
                attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
            if attributes:
                sqs.set_queue_attributes(QueueUrl=self.resolver.ref(logical), Attributes=attributes)

        s3 = em.client("s3")
        for logical in self._of_type("AWS::S3::Bucket"):
            s3.create_bucket(Bucket=self.resolver.ref(logical))

        sns = em.client("sns")
        for logical in self._of_type("AWS::SNS::Topic"):
            sns.create_topic(Name=self.resolver.get_att(logical, "TopicName"))

        iam = em.client("iam")
        self.role_documents: dict[str, list[dict[str, Any]]] = {}
        for logical, res in self._of_type("AWS::IAM::Role").items():
            props = resolve(res["Properties"])
            name = self.resolver.ref(logical)
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(props["AssumeRolePolicyDocument"]))
            docs = []
            for policy in props.get("Policies", []):
                docs.append(policy["PolicyDocument"])
                iam.put_role_policy(RoleName=name, PolicyName=policy["PolicyName"], PolicyDocument=json.dumps(moto_policy(policy["PolicyDocument"])))
            for managed in _managed_arns(props):
                iam.attach_role_policy(RoleName=name, PolicyArn=managed)
                version = iam.get_policy(PolicyArn=managed)["Policy"]["DefaultVersionId"]
                document = iam.get_policy_version(PolicyArn=managed, VersionId=version)["PolicyVersion"]["Document"]
                docs.append(json.loads(document) if isinstance(document, str) else document)
            self.role_documents[logical] = docs

    def _create_functions(self) -> None:
        assert self.emulator is not None
        resolve = self.resolver.resolve
        for logical, res in self._of_type("AWS::Lambda::Function").items():
            props = res["Properties"]
            binary_name = res.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
            if not binary_name:
                raise ValueError(f"{logical} names no Binary in its Metadata")
            binary = self.bin_dir / binary_name
            if not binary.exists():
                raise FileNotFoundError(f"{binary}: build the functions first (scripts/stack-test does)")
            role_logical = tpl.function_arn_ref(props["Role"]) or ""
            role_arn = resolve(props["Role"])
            creds = self.emulator.role_credentials(role_arn, logical)
            self.role_credentials[logical] = creds
            env = {k: str(v) for k, v in resolve(props.get("Environment", {}).get("Variables", {})).items()}
            env = {k: self._local_url(v) for k, v in env.items()}
            name = self.resolver.ref(logical)
            env.update(
                {
                    "AWS_ACCESS_KEY_ID": creds["aws_access_key_id"],
                    "AWS_SECRET_ACCESS_KEY": creds["aws_secret_access_key"],
                    "AWS_SESSION_TOKEN": creds["aws_session_token"],
                    "AWS_REGION": tpl.REGION,
                    "AWS_DEFAULT_REGION": tpl.REGION,
                    "AWS_ENDPOINT_URL": self.emulator.endpoint,
                    "AWS_LAMBDA_FUNCTION_NAME": name,
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(resolve(props.get("MemorySize", 128))),
                    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                    "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
                    "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
                    "LAMBDA_TASK_ROOT": "/var/task",
                    "TZ": ":UTC",
                }
            )
            env.update(self.extra_env)
            reserved = props.get("ReservedConcurrentExecutions")
            self.functions[logical] = Function(
                logical_id=logical,
                role_logical=role_logical,
                binary=binary,
                env=env,
                timeout=float(resolve(props.get("Timeout", 3))),
                arn=self.resolver.get_att(logical, "Arn"),
                reserved_concurrency=int(resolve(reserved)) if reserved is not None else None,
                log_dir=self.log_dir,
            )

    def _local_url(self, value: str) -> str:
        """AWS endpoints of the stack's APIs, as the functions reach them here: the WebSocket
        API's management endpoint is moto's (which serves it without the stage in the path),
        the HTTP API's is the local gateway."""
        assert self.emulator is not None and self.http is not None
        for logical in self._of_type("AWS::ApiGatewayV2::Api"):
            endpoint = re.escape(self.resolver.get_att(logical, "ApiEndpoint"))
            if self.resolver.ref(logical) == self.http.api_id:
                value = re.sub(endpoint, self.http.url, value)
            else:
                value = re.sub(endpoint + r"(/[\w$-]+)?", self.emulator.endpoint, value)
        return value

    def _wire_http_api(self) -> None:
        assert self.http is not None
        routes = []
        for logical, res in self._of_type("AWS::ApiGatewayV2::Api").items():
            body = res["Properties"].get("Body")
            if not body:
                continue
            for path, methods in body.get("paths", {}).items():
                for method, op in methods.items():
                    integration = op.get("x-amazon-apigateway-integration", {})
                    function = tpl.function_arn_ref(integration.get("uri"))
                    if function is None or function not in self.functions:
                        continue
                    if integration.get("payloadFormatVersion") != "2.0":
                        raise ValueError(f"{method} {path}: payload format {integration.get('payloadFormatVersion')} is not what the functions parse")
                    verb = "ANY" if method == "x-amazon-apigateway-any-method" else method.upper()
                    routes.append(compile_route(verb, path, self.functions[function]))
        # API Gateway prefers the most specific route: literal segments before parameters.
        routes.sort(key=lambda r: (r.path.count("{"), -len(r.path)))
        self.http.routes = routes

    def _wire_websocket_api(self) -> None:
        apis = {k: v for k, v in self._of_type("AWS::ApiGatewayV2::Api").items() if v["Properties"].get("ProtocolType") == "WEBSOCKET"}
        if not apis:
            return
        (api_logical, api), = apis.items()
        integrations = {}
        for logical, res in self._of_type("AWS::ApiGatewayV2::Integration").items():
            function = tpl.function_arn_ref(res["Properties"].get("IntegrationUri"))
            integrations[logical] = self.functions[function] if function else None
        routes: dict[str, Function] = {}
        for logical, res in self._of_type("AWS::ApiGatewayV2::Route").items():
            target = res["Properties"].get("Target")
            target_text = target["Fn::Sub"] if isinstance(target, dict) and "Fn::Sub" in target else str(target)
            integration = target_text.split("${")[-1].rstrip("}") if "${" in target_text else target_text.split("/")[-1]
            function = integrations.get(integration)
            if function is not None:
                routes[res["Properties"]["RouteKey"]] = function
        responses = set()
        for res in self._of_type("AWS::ApiGatewayV2::RouteResponse").values():
            route_ref = res["Properties"].get("RouteId", {}).get("Ref")
            if route_ref:
                responses.add(self.resources[route_ref]["Properties"]["RouteKey"])
        stages = [s for s in self._of_type("AWS::ApiGatewayV2::Stage").values() if s["Properties"].get("ApiId", {}).get("Ref") == api_logical]
        stage = stages[0]["Properties"]["StageName"] if stages else "prod"
        self.ws = WebSocketApi(self.resolver.ref(api_logical), stage, routes, api["Properties"].get("RouteSelectionExpression", ""), responses)

    # ---- event sources -------------------------------------------------------------------------

    def _start_sqs_pollers(self) -> None:
        for logical, res in self._of_type("AWS::Lambda::EventSourceMapping").items():
            props = res["Properties"]
            source = self.resolver.resolve(props["EventSourceArn"])
            if ":sqs:" not in source:
                continue
            function = self.functions[tpl.function_arn_ref(props["FunctionName"])]
            queue_logical = next(k for k, v in self.resolver.physical.items() if v.get("Arn") == source)
            mapping = {
                "queue_url": self.resolver.ref(queue_logical),
                "queue_arn": source,
                "batch_size": int(props.get("BatchSize", 10)),
                "window": float(props.get("MaximumBatchingWindowInSeconds", 0)),
                "report_failures": "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                "enabled": props.get("Enabled", True),
            }
            if not mapping["enabled"]:
                continue
            # Lambda polls with several pollers; two show concurrency without flooding 2 cores.
            for n in range(2):
                t = threading.Thread(target=self._poll, args=(logical, function, mapping), name=f"{logical}-{n}", daemon=True)
                t.start()
                self._threads.append(t)

    def _poll(self, mapping_name: str, function: Function, mapping: dict[str, Any]) -> None:
        assert self.emulator is not None
        # The poller acts with the function's execution role, as Lambda's does.
        sqs = self.emulator.client("sqs", self.role_credentials[function.logical_id])
        while not self._stop.is_set():
            if mapping_name in self.paused:
                self._stop.wait(0.1)
                continue
            try:
                messages = self._receive(sqs, mapping)
            except Exception as error:  # noqa: BLE001 - reported to the test
                self.poller_errors.append(f"{mapping_name}: {error}")
                self._stop.wait(1)
                continue
            if not messages:
                self._stop.wait(0.2)
                continue
            event = {"Records": [self._sqs_record(m, mapping["queue_arn"]) for m in messages]}
            result = function.invoke(event)
            failed: set[str] = {m["MessageId"] for m in messages}
            if result.ok:
                if mapping["report_failures"]:
                    failures = (result.payload or {}).get("batchItemFailures") if isinstance(result.payload, dict) else None
                    ids = [f.get("itemIdentifier") for f in failures or []]
                    if any(i not in failed for i in ids):
                        ids = list(failed)  # an invalid report fails the whole batch
                    failed = set(ids)
                else:
                    failed = set()
            for m in messages:
                if m["MessageId"] not in failed:
                    try:
                        sqs.delete_message(QueueUrl=mapping["queue_url"], ReceiptHandle=m["ReceiptHandle"])
                    except Exception as error:  # noqa: BLE001
                        self.poller_errors.append(f"{mapping_name}: delete: {error}")

    def _receive(self, sqs: Any, mapping: dict[str, Any]) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + mapping["window"]
        while len(messages) < mapping["batch_size"] and not self._stop.is_set():
            got = sqs.receive_message(
                QueueUrl=mapping["queue_url"],
                MaxNumberOfMessages=min(10, mapping["batch_size"] - len(messages)),
                # Short polls: moto would hold its one-request-at-a-time lock through a long one.
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            messages.extend(got)
            if not got or time.monotonic() >= deadline:
                break
        return messages

    @staticmethod
    def _sqs_record(m: dict[str, Any], queue_arn: str) -> dict[str, Any]:
        attributes = {k: v for k, v in m.get("Attributes", {}).items()}
        message_attributes = {}
        for name, attr in m.get("MessageAttributes", {}).items():
            message_attributes[name] = {
                "stringValue": attr.get("StringValue"),
                "binaryValue": attr.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": attr["DataType"],
            }
        return {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": attributes,
            "messageAttributes": message_attributes,
            "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": tpl.REGION,
        }

    def invoke_async(self, logical: str, event: Any) -> AsyncOutcome:
        """Lambda's asynchronous invocation: up to 1 + MaximumRetryAttempts tries (2 retries by
        default), then the on-failure destination or the dead-letter queue, sent with the
        function's role; with neither the event is dropped, as on AWS."""
        function = self.functions[logical]
        outcome = AsyncOutcome(logical, event)
        self.async_outcomes.append(outcome)
        config = next(
            (r["Properties"] for r in self._of_type("AWS::Lambda::EventInvokeConfig").values() if tpl.function_arn_ref(r["Properties"].get("FunctionName")) == logical or r["Properties"].get("FunctionName", {}).get("Ref") == logical),
            {},
        )
        retries = int(config.get("MaximumRetryAttempts", 2))

        def run() -> None:
            for attempt in range(retries + 1):
                result = function.invoke(event)
                outcome.attempts.append(result)
                if result.ok:
                    break
                if attempt < retries:
                    time.sleep(ASYNC_RETRY_DELAY_S)
            if not outcome.succeeded:
                outcome.destination = self._on_failure(logical, config, event, outcome)
            outcome.done.set()

        threading.Thread(target=run, daemon=True).start()
        return outcome

    def _on_failure(self, logical: str, config: dict[str, Any], event: Any, outcome: AsyncOutcome) -> str | None:
        assert self.emulator is not None
        props = self.resources[logical]["Properties"]
        on_failure = self.resolver.resolve(config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination"))
        dlq = self.resolver.resolve(props.get("DeadLetterConfig", {}).get("TargetArn"))
        target = on_failure or dlq
        if not target:
            return None
        creds = self.role_credentials[logical]
        last = outcome.attempts[-1].error or {}
        if on_failure:
            body = json.dumps({
                "version": "1.0",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "requestContext": {"requestId": str(uuid.uuid4()), "functionArn": self.functions[logical].arn, "condition": "RetriesExhausted", "approximateInvokeCount": len(outcome.attempts)},
                "requestPayload": event,
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "responsePayload": last,
            })
        else:
            body = json.dumps(event)
        if ":sqs:" in target:
            queue = next(k for k, v in self.resolver.physical.items() if v.get("Arn") == target)
            self.emulator.client("sqs", creds).send_message(QueueUrl=self.resolver.ref(queue), MessageBody=body)
        elif ":sns:" in target:
            self.emulator.client("sns", creds).publish(TopicArn=target, Message=body)
        else:
            raise ValueError(f"{logical}: on-failure target {target} is not SQS or SNS")
        return target

    def put_event(self, event: dict[str, Any]) -> list[AsyncOutcome]:
        """EventBridge's default bus: every enabled rule whose pattern matches invokes its
        Lambda targets asynchronously."""
        outcomes = []
        for res in self._of_type("AWS::Events::Rule").values():
            props = res["Properties"]
            if props.get("State", "ENABLED") != "ENABLED" or "EventPattern" not in props:
                continue
            if not _matches(props["EventPattern"], event):
                continue
            for target in props.get("Targets", []):
                logical = tpl.function_arn_ref(target["Arn"])
                if logical in self.functions:
                    payload = json.loads(self.resolver.resolve(target["Input"])) if "Input" in target else event
                    outcomes.append(self.invoke_async(logical, payload))
        return outcomes

    def fire_schedule(self, logical: str) -> AsyncOutcome:
        """One tick of an EventBridge Scheduler schedule: its target, with its Input (`{}` when
        the schedule gives none)."""
        props = self.resources[logical]["Properties"]
        if props.get("State", "ENABLED") != "ENABLED":
            raise ValueError(f"{logical} is disabled")
        target = props["Target"]
        function = tpl.function_arn_ref(target["Arn"])
        payload = json.loads(self.resolver.resolve(target["Input"])) if "Input" in target else {}
        return self.invoke_async(function, payload)

    def mapping_of(self, function_logical: str) -> str:
        """The event source mapping (logical id) that feeds `function_logical`."""
        return next(k for k, v in self._of_type("AWS::Lambda::EventSourceMapping").items() if tpl.function_arn_ref(v["Properties"]["FunctionName"]) == function_logical)

    def schedules_of(self, function_logical: str) -> list[str]:
        return [k for k, v in self._of_type("AWS::Scheduler::Schedule").items() if tpl.function_arn_ref(v["Properties"]["Target"]["Arn"]) == function_logical]

    # ---- helpers for tests ---------------------------------------------------------------------

    def client(self, service: str) -> Any:
        assert self.emulator is not None
        return self.emulator.client(service)

    def resource_violations(self) -> dict[str, list[str]]:
        """Requests moto let through (it matches only the action) that the function's policies
        do not allow on the resource they address."""
        keys = {c["aws_access_key_id"]: f for f, c in self.role_credentials.items()}
        ws_api = self.ws.api_id if self.ws else None
        stage = self.ws.stage if self.ws else "prod"
        found: dict[str, list[str]] = {}
        for request in list(emu.authorised):
            function = keys.get(str(request["key"]))
            if function is None:
                continue
            documents = self.role_documents[self.functions[function].role_logical]
            for action, resource in resources_of(request, ws_api, stage):
                if not allowed(documents, action, resource):
                    entry = f"{action} on {resource}"
                    if entry not in found.setdefault(function, []):
                        found[function].append(entry)
        return found

    def access_denied(self) -> dict[str, list[str]]:
        """Each function's log lines that name an AccessDenied, the pollers' errors, and the
        requests whose resource the function's policies do not cover."""
        found: dict[str, list[str]] = {}
        for function, entries in self.resource_violations().items():
            found[function] = [f"AccessDenied (resource): {e}" for e in entries]
        for logical, function in self.functions.items():
            lines = [line for line in function.lines if "AccessDenied" in line or "not authorized" in line]
            if lines:
                found.setdefault(logical, []).extend(lines)
        pollers = [e for e in self.poller_errors if "AccessDenied" in e or "not authorized" in e]
        if pollers:
            found["event source mappings"] = pollers
        return found

    def down(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        for function in self.functions.values():
            function.stop()
        if self.ws is not None:
            self.ws.stop()
        if self.http is not None:
            self.http.stop()


def _matches(pattern: Any, event: Any) -> bool:
    """EventBridge pattern matching for exact values and nested fields."""
    if isinstance(pattern, dict):
        if not isinstance(event, dict):
            return False
        return all(key in event and _matches(value, event[key]) for key, value in pattern.items())
    if isinstance(pattern, list):
        values = event if isinstance(event, list) else [event]
        return any(v in pattern for v in values)
    return pattern == event


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.2) -> Any:
    """Polls `check` until it returns something truthy."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
