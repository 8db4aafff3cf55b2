"""`OpaRestStandIn`: a TEST FIXTURE that serves OPA's REST data API from the in-process OPA engine.

No OPA server binary can be installed here, so the HTTP path (`tasks.policy.HttpOpa` through
opa-python-client) is exercised against this stand-in: stdlib `http.server` on 127.0.0.1 in a thread,
answering `POST /v1/data/<path>` the way OPA does (`{"result": ...}`, `{}` when the document is undefined,
HTTP 500 with `{"code", "message"}` on an evaluation error), with the real engine underneath.
It is not part of the product and must never be used outside tests.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tasks.policy_set import build_engine, read_policy_set

__all__ = ["OpaRestStandIn"]


class OpaRestStandIn:
    """A test fixture serving OPA's `POST /v1/data/...` from the same in-process engine, on 127.0.0.1.

    `delay_seconds` holds every answer back, to exercise client timeouts.
    """

    def __init__(self, policy_dir: Path, *, delay_seconds: float = 0.0) -> None:
        self._engine: Any = build_engine(read_policy_set(policy_dir))
        self.delay_seconds = delay_seconds
        self.requests: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from opa_bindings import OpaError, OpaUndefinedError

                stand_in.requests.append(self.path)
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if stand_in.delay_seconds:
                    time.sleep(stand_in.delay_seconds)
                if not self.path.startswith("/v1/data/"):
                    self._send(404, {"code": "not_found", "message": self.path})
                    return
                document = self.path.removeprefix("/v1/data/").strip("/").replace("/", ".")
                try:
                    value = stand_in._engine.eval_document(document, body.get("input"))
                except OpaUndefinedError:
                    self._send(200, {})  # OPA's answer for an undefined document
                except OpaError as error:
                    self._send(500, {"code": "internal_error", "message": error.message})
                else:
                    self._send(200, {"result": value})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="opa-rest-stand-in", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._engine.close()
