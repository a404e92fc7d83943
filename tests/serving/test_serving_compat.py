"""Compatibility: the same requests to `mlflow models serve` on the same model and to our /invocations give
the same predictions (and both refuse the same bad request with a 400)."""

from __future__ import annotations

import json
import os
import subprocess  # nosec B404 - the test starts MLflow's own CLI
import sys
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.serving.conftest import free_port, records

pytestmark = pytest.mark.slow


def _requests(rows: pd.DataFrame) -> list[tuple[str, str | bytes]]:
    recs = records(rows)
    split = {"columns": list(rows.columns), "data": [list(r.values()) for r in recs]}
    return [
        ("application/json", json.dumps({"dataframe_split": split})),
        ("application/json", json.dumps({"dataframe_records": recs})),
        ("application/json", json.dumps({"inputs": {c: [r[c] for r in recs] for c in rows.columns}})),
        ("text/csv", rows.to_csv(index=False)),
    ]


def test_same_predictions_as_mlflow_models_serve(
    trained_model: dict[str, Any], client: TestClient, test_rows: pd.DataFrame, tmp_path: Path
) -> None:
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    # MLflow's server execs `uvicorn` by name: the virtualenv's bin must be on PATH.
    path = f"{mlflow.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true", "PATH": path}
    with (tmp_path / "mlflow.log").open("w") as log:
        proc = subprocess.Popen(  # nosec B603 - fixed argument list
            [str(mlflow), "models", "serve", "-m", str(trained_model["model_dir"]), "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ping(url, proc)
        for content_type, body in _requests(test_rows.head(40)):
            theirs = httpx.post(f"{url}/invocations", content=body, headers={"content-type": content_type})
            ours = client.post("/invocations", content=body, headers={"content-type": content_type})
            assert theirs.status_code == ours.status_code == 200, (content_type, theirs.text, ours.text)
            assert ours.json() == theirs.json()
        missing = json.dumps({"dataframe_records": [{"bill_length_mm": 40.0}]})
        theirs = httpx.post(
            f"{url}/invocations", content=missing, headers={"content-type": "application/json"}
        )
        ours = client.post("/invocations", content=missing, headers={"content-type": "application/json"})
        assert theirs.status_code == ours.status_code == 400
        assert {"error_code", "message"} <= set(theirs.json()) and {"error_code", "message"} <= set(
            ours.json()
        )
        assert "island" in theirs.json()["message"] and "island" in ours.json()["message"]
    finally:
        proc.terminate()
        proc.wait(30)


def _wait_ping(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import time

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        assert proc.poll() is None, "mlflow models serve exited early"
        try:
            if httpx.get(f"{url}/ping", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("mlflow models serve did not start")
