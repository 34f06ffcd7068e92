"""Fixtures: the stack (one per test module), a carrier fake, and an API client."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))

from omni_stack.carriers import CarrierFake  # noqa: E402
from omni_stack.stack import Stack  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("OMNI_STACK_BIN_DIR", ROOT / "target" / "debug"))
LOG_DIR = Path(os.environ.get("OMNI_STACK_LOG_DIR", ROOT / "target" / "stack-test"))

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "stack-test-twilio-auth-token-0001"


class Api:
    """Calls the stack's HTTP API as a client on the internet would."""

    def __init__(self, stack: Stack) -> None:
        assert stack.http is not None
        self.base = stack.http.url
        self.session = requests.Session()
        arn = stack.resolver.ref("AdminTokenSecret")
        self.admin_token = stack.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.request(method, self.base + path, headers=headers, timeout=60, **kwargs)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.call(method, path, self.admin_token, json=body)
        assert resp.status_code in (200, 201, 204), f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None


def make_stack(name: str, tmp: Path, extra_env: dict[str, str] | None = None, **kwargs: Any) -> Stack:
    return Stack(ROOT / "template.yaml", BIN_DIR, LOG_DIR / name, extra_env=extra_env, stack_name=f"omni-{name}", **kwargs).up()


@pytest.fixture(scope="module")
def carrier() -> Iterator[CarrierFake]:
    fake = CarrierFake()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, carrier: CarrierFake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        # Carrier APIs are the fake; the pacing of retries is shortened so a test sees several.
        "OMNI_TWILIO_API_URL": carrier.url,
        "OMNI_VOIPMS_API_URL": f"{carrier.url}/voipms/api/v1/rest.php",
        "OMNI_VOICEMEUP_API_URL": f"{carrier.url}/voicemeup/api/v1.1/json",
        "OMNI_SES_API_URL": f"{carrier.url}/ses",
        "OMNI_WHATSAPP_API_URL": f"{carrier.url}/v21.0",
        "OMNI_RETRY_BASE_MS": "300",
        "OMNI_RETRY_MAX_MS": "1000",
        "OMNI_RETRY_MAX_ATTEMPTS": "2",
        "OMNI_VOICEMEUP_MMS_WAIT_SECS": "3",
        "OMNI_SWEEP_AFTER_SECS": "3",
    }
    name = request.module.__name__.split(".")[-1].removeprefix("test_").replace("_", "-")
    s = make_stack(name, tmp_path_factory.mktemp(name), env)
    yield s
    s.down()


@pytest.fixture(scope="module")
def api(stack: Stack) -> Api:
    return Api(stack)
