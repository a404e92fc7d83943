"""A GitHub REST API stand-in on loopback for the github-script stand-in: the routes the workflows' scripts
use (.github/scripts/sticky-comment.js and last-state.js), every request recorded.

State it answers from: issue comments it keeps itself; workflow runs the harness adds after each act run
(`add_run`); artifacts read from the artifact stand-in's folder (<run id>/<name>.json).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

BOT = {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"}


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str
    status: int = 0


@dataclass
class ApiState:
    repository: str
    artifacts: Path
    comments: dict[int, list[dict]] = field(default_factory=dict)  # issue number -> comments
    runs: list[dict] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    next_id: int = 1000
    lock: threading.Lock = field(default_factory=threading.Lock)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ApiState

    def log_message(self, fmt: str, *args: object) -> None:
        return

    def _reply(self, call: Call, code: int, data: Any = None) -> None:
        call.status = code
        body = b"" if data is None else json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        call = Call(self.command, parts.path, query, body, self.headers.get("Authorization", ""))
        st = self.state
        with st.lock:
            st.calls.append(call)
        if not call.authorization.startswith("token ") or call.authorization == "token ":
            return self._reply(call, 401, {"message": "Requires authentication"})
        m = re.match(r"^/repos/([^/]+/[^/]+)(/.*)$", parts.path)
        if not m or m[1] != st.repository:
            return self._reply(call, 404, {"message": f"Not Found (the stand-in serves {st.repository})"})
        route = m[2]
        with st.lock:
            result = self._route(call, route, query, body)
        if result is None:
            return self._reply(
                call, 404, {"message": f"the API stand-in has no route {self.command} {route}"}
            )
        self._reply(call, *result)

    def _route(self, call: Call, route: str, query: dict, body: Any) -> tuple[int, Any] | None:
        st = self.state
        if m := re.fullmatch(r"/issues/(\d+)/comments", route):
            comments = st.comments.setdefault(int(m[1]), [])
            if call.method == "GET":
                return 200, [dict(c) for c in comments]
            if call.method == "POST":
                st.next_id += 1
                c = {"id": st.next_id, "body": body["body"], "user": BOT, "created_at": _now()}
                comments.append(c)
                return 201, c
        if m := re.fullmatch(r"/issues/comments/(\d+)", route):
            cid = int(m[1])
            for comments in st.comments.values():
                for i, c in enumerate(comments):
                    if c["id"] == cid:
                        if call.method == "PATCH":
                            c.update(body=body["body"], updated_at=_now())
                            return 200, c
                        if call.method == "DELETE":
                            del comments[i]
                            return 204, None
            return 404, {"message": "Not Found"}
        if (m := re.fullmatch(r"/actions/workflows/([^/]+)/runs", route)) and call.method == "GET":
            runs = [
                r
                for r in st.runs
                if r["path"].endswith("/" + m[1])
                and ("branch" not in query or r["head_branch"] == query["branch"])
                and ("status" not in query or query["status"] in (r["status"], r["conclusion"]))
            ]
            runs.sort(key=lambda r: r["updated_at"], reverse=True)
            return 200, {"total_count": len(runs), "workflow_runs": runs}
        if (m := re.fullmatch(r"/actions/runs/(\d+)/artifacts", route)) and call.method == "GET":
            found = []
            for meta in sorted((st.artifacts / m[1]).glob("*.json")):
                a = json.loads(meta.read_text())
                if "name" in query and a["name"] != query["name"]:
                    continue
                found.append(
                    {
                        "id": int(a["id"]),
                        "name": a["name"],
                        "size_in_bytes": a["size_in_bytes"],
                        "expired": False,
                        "created_at": a["created_at"],
                        "workflow_run": {"id": int(m[1])},
                    }
                )
            return 200, {"total_count": len(found), "artifacts": found}
        return None

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle  # noqa: N815


class GitHubApi:
    """`with GitHubApi("owner/repo", artifacts_dir) as api:` serves on http://127.0.0.1:<port>."""

    def __init__(self, repository: str, artifacts: Path) -> None:
        self.state = ApiState(repository, artifacts)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "GitHubApi":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_run(
        self, run_id: int, workflow: str, name: str, branch: str, event: str, conclusion: str
    ) -> None:
        """A finished workflow run, as GET /repos/{repo}/actions/workflows/{file}/runs lists it."""
        with self.state.lock:
            self.state.runs.append(
                {
                    "id": run_id,
                    "name": name,
                    "path": f".github/workflows/{workflow}",
                    "head_branch": branch,
                    "event": event,
                    "status": "completed",
                    "conclusion": conclusion,
                    "updated_at": _now(),
                    "run_started_at": _now(),
                }
            )
        time.sleep(1.01)  # updated_at has a resolution of one second: keep runs ordered

    def calls(self, method: str | None = None, path_re: str = "") -> list[Call]:
        with self.state.lock:
            return [
                c
                for c in self.state.calls
                if (method is None or c.method == method) and re.search(path_re, c.path)
            ]

    def comments(self, number: int) -> list[dict]:
        with self.state.lock:
            return [dict(c) for c in self.state.comments.get(number, [])]
