"""The serving image: built from a bundle of the session's champion, run, and called over HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess  # nosec B404 - the test drives the docker CLI with fixed arguments
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest

from tests.conftest import REPO, require
from tests.serving.conftest import free_port, records

pytestmark = [pytest.mark.slow, pytest.mark.container]
SIZE_LIMIT_BYTES = 500 * 1000 * 1000


def _engine_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    return (
        subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
    )  # nosec B603 B607


def _docker(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout
    )  # nosec B603 B607
    assert done.returncode == 0, f"docker {args[0]} failed: {done.stderr[-2000:]}"
    return done.stdout.strip()


def test_image_builds_runs_and_scores(
    trained_model: dict[str, Any], test_rows: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(_engine_ready(), "no Docker-compatible engine (run ../shared/container-engine/setup)")
    from mlgate.bundle import model_bundle

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_model["tracking_uri"])
    mlflow.set_tracking_uri(trained_model["tracking_uri"])
    try:
        bundle = model_bundle(f"models:/{trained_model['config'].model_name}@champion", tmp_path / "bundle")
    finally:
        mlflow.set_tracking_uri(None)
    tag = f"mlgate-serving-test:{uuid.uuid4().hex[:8]}"
    build = subprocess.run(  # nosec B603 - fixed argument list
        [str(REPO / "scripts" / "build-image.sh"), "serving", str(tmp_path / "bundle"), tag, "test-revision"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    name = f"mlgate-serving-test-{uuid.uuid4().hex[:8]}"
    try:
        inspected = json.loads(_docker("image", "inspect", tag))[0]
        labels = inspected["Config"]["Labels"]
        assert labels["org.opencontainers.image.revision"] == "test-revision"
        assert (labels["io.mlgate.model.name"], labels["io.mlgate.model.version"]) == (
            bundle["name"],
            bundle["version"],
        )
        assert inspected["Config"]["User"] not in ("", "root", "0")
        assert inspected["Size"] < SIZE_LIMIT_BYTES, f"image is {inspected['Size'] / 1e6:.0f} MB"
        port = free_port()
        _docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", tag)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"the container never got ready: {_docker('logs', name)[-2000:]}")
        response = httpx.post(f"{url}/invocations", json={"dataframe_records": records(test_rows.head(5))})
        assert response.status_code == 200 and len(response.json()["predictions"]) == 5
        meta = httpx.get(f"{url}/metadata").json()
        assert (meta["name"], meta["version"], meta["alias"]) == (
            bundle["name"],
            bundle["version"],
            "champion",
        )
        assert meta["image_revision"] == "test-revision"
        assert "/opt/model" not in json.dumps(meta)
        for path in ("/docs", "/openapi.json"):  # MLGATE_SERVE_DOCS=false in the image
            assert httpx.get(f"{url}{path}").status_code == 404
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)  # nosec B603 B607
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)  # nosec B603 B607
