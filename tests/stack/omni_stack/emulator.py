"""moto in this process, with IAM enforced once the stack exists.

In-process, so the harness can (a) switch IAM enforcement on after creating the stack with
full rights, (b) hand `PostToConnection` data to the WebSocket clients it serves, and
(c) authorise the management API's calls under the action AWS checks for them
(`execute-api:ManageConnections`; moto would name each operation).
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable
from urllib.parse import parse_qsl, urlparse

# Before moto is imported: AWS managed policies (AWSLambdaBasicExecutionRole, the SQS poller's
# AWSLambdaSQSQueueExecutionRole, ...) exist only when loaded.
os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from moto import settings  # noqa: E402
from moto.apigatewaymanagementapi import models as mgmt_models  # noqa: E402
from moto.apigatewaymanagementapi import responses as mgmt_responses  # noqa: E402
from moto.core.authorization import ActionAuthenticatorMixin  # noqa: E402
from moto.core.exceptions import AccessDeniedError, JsonRESTError  # noqa: E402
from moto.server import DomainDispatcherApplication, create_backend_app  # noqa: E402
from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: E402

REGION = "us-east-1"


class GoneException(JsonRESTError):
    """What API Gateway answers for a connection that is no longer open."""

    code = 410

    def __init__(self, connection_id: str):
        super().__init__("GoneException", f"connection {connection_id} is gone")


# connection id -> callable(bytes) that delivers to the client; set by the WebSocket gateway.
_connections: dict[str, Callable[[bytes], None]] = {}
_connections_lock = threading.Lock()
# Every request moto authorised while enforcing: what the resource check reads.
authorised: list[dict[str, object]] = []


def register_connection(connection_id: str, send: Callable[[bytes], None]) -> None:
    with _connections_lock:
        _connections[connection_id] = send


def unregister_connection(connection_id: str) -> None:
    with _connections_lock:
        _connections.pop(connection_id, None)


def _post_to_connection(self, data: bytes, connection_id: str) -> None:  # noqa: ANN001
    with _connections_lock:
        send = _connections.get(connection_id)
    if send is None:
        raise GoneException(connection_id)
    send(data)


def _delete_connection(self, connection_id: str) -> None:  # noqa: ANN001
    with _connections_lock:
        send = _connections.pop(connection_id, None)
    if send is not None:
        send(None)


def _get_connection(self, connection_id: str):  # noqa: ANN001
    with _connections_lock:
        if connection_id not in _connections:
            raise GoneException(connection_id)
    return mgmt_models.Connection()


def _patch_moto() -> None:
    backend = mgmt_models.ApiGatewayManagementApiBackend
    backend.post_to_connection = _post_to_connection
    backend.delete_connection = _delete_connection
    backend.get_connection = _get_connection
    responses = mgmt_responses.ApiGatewayManagementApiResponse
    authorise = responses._authenticate_and_authorize_normal_action

    def as_manage_connections(self, resource: str = "*") -> None:  # noqa: ANN001
        # AWS authorises PostToConnection, GetConnection and DeleteConnection as one action.
        self._get_action = lambda: "ManageConnections"
        try:
            authorise(self, resource)
        finally:
            del self._get_action

    responses._authenticate_and_authorize_normal_action = as_manage_connections

    from moto.iam import access_control

    check = access_control.IAMRequestBase.check_action_permitted

    def recording(self, resource: str) -> None:  # noqa: ANN001
        check(self, resource)
        credential = self._headers["Authorization"].split("Credential=")[1].split("/")[0]
        authorised.append(
            {
                "key": credential,
                "action": self._action,
                "method": self._method,
                "path": self._path,
                "body": self._body,
                "data": self._data,
            }
        )

    access_control.IAMRequestBase.check_action_permitted = recording

    # moto's IAM layer reads the Authorization header, which a presigned URL does not have.
    # A presigned GET is authorised here as its signer: within its expiry, with the signer's
    # policies allowing s3:GetObject on the object. (The signature itself is the AWS SDK's
    # presigner's, not re-derived.)
    from moto.core.authorization import ActionAuthenticatorMixin

    s3_auth = ActionAuthenticatorMixin._authenticate_and_authorize_s3_action

    def presigned(self, bucket_name=None, key_name=None) -> None:  # noqa: ANN001
        query = dict(parse_qsl(urlparse(self.uri).query))
        if "Authorization" in self.headers or "X-Amz-Signature" not in query or settings.INITIAL_NO_AUTH_ACTION_COUNT != 0:
            return s3_auth(self, bucket_name, key_name)
        signed = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        if datetime.now(timezone.utc) > signed + timedelta(seconds=int(query["X-Amz-Expires"])):
            raise AccessDeniedError(user_arn="presigned", action="s3:GetObject")
        key_id = query["X-Amz-Credential"].split("/")[0]
        access_key = access_control.create_access_key(
            account_id=self.current_account,
            partition="aws",
            access_key_id=key_id,
            headers={"X-Amz-Security-Token": query.get("X-Amz-Security-Token", "")},
        )
        resource = f"arn:aws:s3:::{bucket_name}/{key_name}"
        results = [access_control.IAMPolicy(p).is_action_permitted("s3:GetObject", resource) for p in access_key.collect_policies()]
        if access_control.PermissionResult.DENIED in results or access_control.PermissionResult.PERMITTED not in results:
            raise AccessDeniedError(user_arn=key_id, action="s3:GetObject")
        authorised.append({"key": key_id, "action": "s3:GetObject", "method": "GET", "path": f"/{bucket_name}/{key_name}", "body": b"", "data": {}})

    ActionAuthenticatorMixin._authenticate_and_authorize_s3_action = presigned


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        pass


class Emulator:
    """moto's server on a free loopback port, one request at a time (DynamoDB applies each
    request atomically; moto's threaded server does not)."""

    _shared: "Emulator | None" = None

    @classmethod
    def shared(cls) -> "Emulator":
        """The process's emulator (moto's state is per process): stacks share it, each under
        its own name."""
        if cls._shared is None:
            cls._shared = Emulator()
        return cls._shared

    def __init__(self) -> None:
        _patch_moto()
        self.enforcing = False
        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def serialised(environ, start_response):  # noqa: ANN001
            with lock:
                seen = len(authorised)
                body = list(app(environ, start_response))
                # The size of what came back (read units are counted by it).
                for record in authorised[seen:]:
                    record["response_bytes"] = sum(len(chunk) for chunk in body)
                return body

        self._server = make_server("127.0.0.1", 0, serialised, threaded=True, request_handler=_Quiet)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.admin_credentials = {
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }

    def client(self, service: str, credentials: dict[str, str] | None = None):
        creds = credentials or self.admin_credentials
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
            **creds,
        )

    def enforce_iam(self) -> None:
        """From now on every request is authenticated and authorised against IAM: the
        harness itself acts as an administrator user made for it."""
        if self.enforcing:
            return
        self.enforcing = True
        iam = self.client("iam")
        iam.create_user(UserName="stack-harness")
        iam.put_user_policy(
            UserName="stack-harness",
            PolicyName="everything",
            PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}',
        )
        key = iam.create_access_key(UserName="stack-harness")["AccessKey"]
        self.admin_credentials = {
            "aws_access_key_id": key["AccessKeyId"],
            "aws_secret_access_key": key["SecretAccessKey"],
        }
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        ActionAuthenticatorMixin.request_count = 0

    def role_credentials(self, role_arn: str, session: str) -> dict[str, str]:
        """The credentials Lambda would hand a function running under `role_arn`. Lambda assumes
        the role as the service its trust policy names; moto's trust check knows only AWS
        principals, so the harness assumes it with the check off."""
        settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        try:
            creds = self.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=session)[
                "Credentials"
            ]
        finally:
            if self.enforcing:
                settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        return {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        }
