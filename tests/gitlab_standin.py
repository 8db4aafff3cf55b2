"""A test fixture standing in for GitLab's REST API (no GitLab server can run on these machines).

It serves the one call the product makes, `POST /api/v4/projects/:id/merge_requests`, on 127.0.0.1, checks the
`PRIVATE-TOKEN` header, and records what it was sent; the real python-gitlab client talks to it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

__all__ = ["GitLabStandIn", "gitlab_standin"]


@dataclass
class GitLabStandIn:
    url: str
    token: str
    merge_requests: list[dict[str, Any]] = field(default_factory=list)
    projects: list[str] = field(default_factory=list)


@contextmanager
def gitlab_standin(token: str) -> Iterator[GitLabStandIn]:
    state = GitLabStandIn(url="", token=token)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            parts = self.path.split("?")[0].split("/")
            if parts[1:4] != ["api", "v4", "projects"] or parts[-1] != "merge_requests":
                self._answer(404, {"message": "404 Not Found"})
                return
            if self.headers.get("PRIVATE-TOKEN") != state.token:
                self._answer(401, {"message": "401 Unauthorized"})
                return
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            project = unquote(parts[4])
            state.projects.append(project)
            state.merge_requests.append(body)
            iid = len(state.merge_requests)
            self._answer(201, {"iid": iid, "web_url": f"{state.url}/{project}/-/merge_requests/{iid}", **body})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
