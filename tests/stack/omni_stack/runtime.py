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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
        self.busy = False
        instance = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the process was killed while it waited for an event

            def do_GET(self) -> None:
                if not self.path.endswith("/runtime/invocation/next"):
                    return self._reply(404)
                inv = instance.invocations.get()
                if inv is None:
                    return self._reply(500, b'{"errorMessage":"shutting down"}')
                instance.current = inv
                self._reply(
                    200,
                    inv.payload,
                    {
                        "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                        "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
                        "Lambda-Runtime-Invoked-Function-Arn": function.arn,
                        "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
                    },
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = self.path.split("/")
                inv = instance.current
                if self.path.endswith("/init/error"):
                    instance.init_error = body.decode(errors="replace")
                    self._reply(202)
                    return
                if inv is None or parts[-2] != inv.request_id:
                    return self._reply(400, b'{"errorMessage":"unknown request id"}')
                if parts[-1] == "response":
                    if len(body) > MAX_RESPONSE_BYTES:
                        inv.error = {
                            "errorType": "Function.ResponseSizeTooLarge",
                            "errorMessage": f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
                        }
                        self._reply(413, b'{"errorMessage":"response too large"}')
                    else:
                        inv.response = json.loads(body) if body else None
                        self._reply(202)
                elif parts[-1] == "error":
                    try:
                        inv.error = json.loads(body)
                    except ValueError:
                        inv.error = {"errorType": "Unknown", "errorMessage": body.decode(errors="replace")}
                    self._reply(202)
                else:
                    return self._reply(404)
                instance.current = None
                inv.done.set()

        self.init_error: str | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        env = dict(function.env)
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{self.server.server_port}"
        env["AWS_LAMBDA_LOG_STREAM_NAME"] = f"stack-test/{uuid.uuid4().hex[:8]}"
        self.process = subprocess.Popen(
            [str(function.binary)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read_logs, daemon=True).start()

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
        self.server.shutdown()


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
