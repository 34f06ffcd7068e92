"""Each function as Lambda runs it: its real binary as a process polling a Lambda Runtime API
endpoint (`/2018-06-01/runtime/invocation/next`, `/response`, `/error`), one invocation at a
time per process, more processes when invocations overlap, the function's timeout enforced
by killing the process, and the 6 MB response limit."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .loopback import Headers, LoopbackServer

# Lambda's synchronous invocation response limit.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024


@dataclass
class Invocation:
    request_id: str
    payload: bytes
    deadline_ms: int
    done: threading.Event = field(default_factory=threading.Event)
    response: Any = None
    error: dict[str, Any] | None = None


@dataclass
class Result:
    """What an invocation returned: `payload` (parsed JSON) or `error` (Lambda's error shape:
    errorType, errorMessage)."""

    payload: Any
    error: dict[str, Any] | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None


class _Instance:
    """One execution environment: a runtime API server and the function's process."""

    def __init__(self, function: "Function") -> None:
        self.function = function
        self.invocations: "queue.Queue[Invocation | None]" = queue.Queue()
        self.current: Invocation | None = None
        self.init_error: str | None = None
        self.api = LoopbackServer(self._answer)
        env = dict(function.env)
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{self.api.port}"
        env["AWS_LAMBDA_LOG_STREAM_NAME"] = f"stack-test/{uuid.uuid4().hex[:8]}"
        self.process = subprocess.Popen(
            [str(function.binary)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read_logs, daemon=True).start()

    def _answer(self, method: str, target: str, headers: Any, body: bytes, _client: str) -> tuple[int, Headers, bytes]:
        """The Runtime API: `next` waits for an invocation; `response` and `error` end it."""
        json_type = [("Content-Type", "application/json")]
        if method == "GET":
            if not target.endswith("/runtime/invocation/next"):
                return 404, json_type, b"{}"
            inv = self.invocations.get()
            if inv is None:
                return 500, json_type, b'{"errorMessage":"shutting down"}'
            self.current = inv
            return 200, json_type + [
                ("Lambda-Runtime-Aws-Request-Id", inv.request_id),
                ("Lambda-Runtime-Deadline-Ms", str(inv.deadline_ms)),
                ("Lambda-Runtime-Invoked-Function-Arn", self.function.arn),
                ("Lambda-Runtime-Trace-Id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"),
            ], inv.payload
        if target.endswith("/init/error"):
            self.init_error = body.decode(errors="replace")
            return 202, json_type, b"{}"
        parts = target.split("/")
        inv = self.current
        if inv is None or parts[-2] != inv.request_id:
            return 400, json_type, b'{"errorMessage":"unknown request id"}'
        if parts[-1] == "response":
            if len(body) > MAX_RESPONSE_BYTES:
                inv.error = {
                    "errorType": "Function.ResponseSizeTooLarge",
                    "errorMessage": f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
                }
                reply = (413, json_type, b'{"errorMessage":"response too large"}')
            else:
                inv.response = json.loads(body) if body else None
                reply = (202, json_type, b"{}")
        elif parts[-1] == "error":
            try:
                inv.error = json.loads(body)
            except ValueError:
                inv.error = {"errorType": "Unknown", "errorMessage": body.decode(errors="replace")}
            reply = (202, json_type, b"{}")
        else:
            return 404, json_type, b"{}"
        self.current = None
        inv.done.set()
        return reply

    def _read_logs(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.function.log(line)

    def invoke(self, inv: Invocation, timeout: float) -> bool:
        """Runs `inv`; False if the process had to be killed (timeout or crash)."""
        self.invocations.put(inv)
        end = time.monotonic() + timeout
        while not inv.done.wait(0.05):
            if self.process.poll() is not None:
                inv.error = {
                    "errorType": "Runtime.ExitError",
                    "errorMessage": f"process exited with {self.process.returncode}"
                    + (f": {self.init_error}" if self.init_error else ""),
                }
                return False
            if time.monotonic() > end:
                inv.error = {
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"Task timed out after {timeout:.2f} seconds",
                }
                self.stop()
                return False
        return True

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.invocations.put(None)
        self.api.stop()


class Function:
    """A function of the stack: its binary, the environment the template gives it (with its
    role's credentials), its timeout, and the pool of its execution environments."""

    def __init__(
        self,
        logical_id: str,
        role_logical: str,
        binary: Path,
        env: dict[str, str],
        timeout: float,
        arn: str,
        reserved_concurrency: int | None,
        log_dir: Path,
    ) -> None:
        self.logical_id = logical_id
        # The logical id of its execution role (whose policies the resource check reads).
        self.role_logical = role_logical
        self.binary = binary
        self.env = env
        self.timeout = timeout
        self.arn = arn
        self.reserved_concurrency = reserved_concurrency
        self._idle: list[_Instance] = []
        self._all: list[_Instance] = []
        self._lock = threading.Lock()
        self.lines: list[str] = []
        self.invocations = 0
        # Each invocation's duration in seconds, as Lambda bills it (from the event handed
        # over to the response).
        self.durations: list[float] = []
        self._log_file = open(log_dir / f"{logical_id}.log", "a", encoding="utf-8")

    def log(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)
            self._log_file.write(line + "\n")
            self._log_file.flush()

    def _acquire(self) -> _Instance | None:
        with self._lock:
            while self._idle:
                inst = self._idle.pop()
                if inst.process.poll() is None:
                    return inst
            if self.reserved_concurrency is not None and len(self._all) >= self.reserved_concurrency:
                return None
            inst = _Instance(self)
            self._all.append(inst)
            return inst

    def invoke(self, event: Any) -> Result:
        """A synchronous invocation (API Gateway, SQS pollers, direct)."""
        start = time.monotonic()
        inst = self._acquire()
        if inst is None:
            return Result(None, {"errorType": "TooManyRequestsException", "errorMessage": "Rate Exceeded."}, 0.0)
        with self._lock:
            self.invocations += 1
        inv = Invocation(
            request_id=str(uuid.uuid4()),
            payload=json.dumps(event).encode(),
            deadline_ms=int((time.time() + self.timeout) * 1000),
        )
        handed = time.monotonic()
        healthy = inst.invoke(inv, self.timeout)
        with self._lock:
            self.durations.append(time.monotonic() - handed)
            if healthy:
                self._idle.append(inst)
            else:
                self._all.remove(inst)
        return Result(inv.response, inv.error, time.monotonic() - start)

    def log_text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def stop(self) -> None:
        with self._lock:
            instances, self._all, self._idle = self._all, [], []
        for inst in instances:
            inst.stop()
        self._log_file.close()
