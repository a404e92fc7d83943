"""The real server process (`mlgate serve`) on a free loopback port: readiness, scoring, JSON logs, and a
graceful shutdown that lets an in-flight request finish."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.serving.conftest import mlgate_serve, records

pytestmark = pytest.mark.slow
# uvicorn re-raises SIGTERM once it has shut down cleanly, so the exit status is -15 (or 0 on older versions).
CLEAN_EXIT = (0, -signal.SIGTERM)


@pytest.fixture
def server(trained_model: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    args = ["--model", str(trained_model["model_dir"])]
    with mlgate_serve(
        args, tmp_path / "server.log", {"MLGATE_SERVE_GRACEFUL_SHUTDOWN_SECONDS": "20"}
    ) as running:
        yield running


def test_server_scores_and_logs_json(server: dict[str, Any], test_rows: pd.DataFrame) -> None:
    url = server["url"]
    meta = httpx.get(f"{url}/metadata").json()
    response = httpx.post(
        f"{url}/invocations",
        json={"dataframe_records": records(test_rows.head(5))},
        headers={"x-request-id": "e2e-1"},
    )
    assert response.status_code == 200 and len(response.json()["predictions"]) == 5
    assert set(response.json()["predictions"]) <= set(meta["classes"])
    assert httpx.post(f"{url}/invocations", json={"dataframe_records": [{"island": 1}]}).status_code == 400
    assert "mlgate_http_requests_total" in httpx.get(f"{url}/metrics").text
    server["proc"].send_signal(signal.SIGTERM)
    assert server["proc"].wait(30) in CLEAN_EXIT
    lines = [json.loads(line) for line in server["log"].read_text().splitlines() if line.startswith("{")]
    access = [e for e in lines if e["logger"] == "mlgate.serving.access"]
    assert any(
        e["request_id"] == "e2e-1" and e["status"] == 200 and e["path"] == "/invocations" for e in access
    )


def test_sigterm_lets_the_in_flight_request_finish(server: dict[str, Any], test_rows: pd.DataFrame) -> None:
    body = json.dumps({"dataframe_records": records(test_rows.head(3))}).encode()
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=30) as sock:
        sock.sendall(head + body[:10])  # the request is in flight: headers read, body incomplete
        time.sleep(0.5)
        server["proc"].send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server["proc"].poll() is None, "the server quit with a request in flight"
        sock.sendall(body[10:])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert b'"predictions"' in reply
    assert server["proc"].wait(30) in CLEAN_EXIT
