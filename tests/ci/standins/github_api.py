"""A GitHub REST API stand-in on loopback for the github-script stand-in: the routes the workflows' scripts
use (.github/scripts/sticky-comment.js and last-state.js), every request recorded.

State it answers from: issue comments it keeps itself; workflow runs the harness adds after each act run
(`add_run`); artifacts read from the artifact stand-in's folder (<run id>/<name>.json).

Time can be faked: `advance(days=...)` moves the stand-in's clock forward. A run is dated by the clock when it
is added, and its artifacts by the clock of their run, so an artifact expires (`expired: true`) once its
retention days have passed on that clock, as GitHub lists it.
"""

from __future__ import annotations

import json
import calendar
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
    offset: float = 0.0  # seconds the faked clock is ahead of the real one
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> str:
        return _iso(time.time() + self.offset)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _epoch(value: str) -> float:
    return calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))


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
                c = {"id": st.next_id, "body": body["body"], "user": BOT, "created_at": st.now()}
                comments.append(c)
                return 201, c
        if m := re.fullmatch(r"/issues/comments/(\d+)", route):
            cid = int(m[1])
            for comments in st.comments.values():
                for i, c in enumerate(comments):
                    if c["id"] == cid:
                        if call.method == "PATCH":
                            c.update(body=body["body"], updated_at=st.now())
                            return 200, c
                        if call.method == "DELETE":
                            del comments[i]
                            return 204, None
            return 404, {"message": "Not Found"}
        if (m := re.fullmatch(r"/actions/workflows/([^/]+)/runs", route)) and call.method == "GET":
            runs = [
                {k: v for k, v in r.items() if not k.startswith("_")}
                for r in st.runs
                if r["path"].endswith("/" + m[1])
                and ("branch" not in query or r["head_branch"] == query["branch"])
                and ("event" not in query or r["event"] == query["event"])
                and ("status" not in query or query["status"] in (r["status"], r["conclusion"]))
            ]
            runs.sort(key=lambda r: (r["run_started_at"], r["id"]), reverse=True)
            per_page, page = int(query.get("per_page", 30)), int(query.get("page", 1))
            listed = runs[(page - 1) * per_page : page * per_page]
            return 200, {"total_count": len(runs), "workflow_runs": listed}
        if (m := re.fullmatch(r"/actions/runs/(\d+)/artifacts", route)) and call.method == "GET":
            found = []
            offset = next((r["_offset"] for r in st.runs if r["id"] == int(m[1])), st.offset)
            for meta in sorted((st.artifacts / m[1]).glob("*.json")):
                a = json.loads(meta.read_text())
                if "name" in query and a["name"] != query["name"]:
                    continue
                created = _epoch(a["created_at"]) + offset  # on the clock of its run
                retention = int(a.get("retention_days") or 90) * 86400
                found.append(
                    {
                        "id": int(a["id"]),
                        "name": a["name"],
                        "size_in_bytes": a["size_in_bytes"],
                        "expired": time.time() + st.offset > created + retention,
                        "created_at": _iso(created),
                        "expires_at": _iso(created + retention),
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
        self,
        run_id: int,
        workflow: str,
        name: str,
        branch: str,
        event: str,
        conclusion: str,
        head_repository: str | None = None,
    ) -> None:
        """A finished workflow run, as GET /repos/{repo}/actions/workflows/{file}/runs lists it; its head
        repository is this one unless given (a fork's pull request)."""
        with self.state.lock:
            now = self.state.now()
            self.state.runs.append(
                {
                    "id": run_id,
                    "name": name,
                    "path": f".github/workflows/{workflow}",
                    "head_branch": branch,
                    "head_repository": {"full_name": head_repository or self.state.repository},
                    "event": event,
                    "status": "completed",
                    "conclusion": conclusion,
                    "created_at": now,
                    "updated_at": now,
                    "run_started_at": now,
                    "_offset": self.state.offset,
                }
            )
        time.sleep(1.01)  # the dates have a resolution of one second: keep runs ordered

    def advance(self, days: float) -> None:
        """Move the stand-in's clock ``days`` forward (runs added from now on are dated by it)."""
        with self.state.lock:
            self.state.offset += days * 86400

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
