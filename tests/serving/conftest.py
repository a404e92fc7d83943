"""Fixtures for the serving tests: the session's champion loaded for serving, an app, held-out rows."""

from __future__ import annotations

import os
import socket
import subprocess  # nosec B404 - the tests start our own CLI
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil
import pytest
from fastapi.testclient import TestClient

from mlgate.serving.app import create_app
from mlgate.serving.model import ServedModel, load_served_model
from mlgate.serving.settings import ServingSettings


@pytest.fixture(scope="session")
def served_model(trained_model: dict[str, Any]) -> ServedModel:
    """The champion of the session's pipeline run, loaded the way the service loads it."""
    return load_served_model(trained_model["model_dir"])


@pytest.fixture(scope="session")
def test_rows(trained_model: dict[str, Any]) -> pd.DataFrame:
    """The held-out rows (features only, with their missing values)."""
    features = [f.name for f in trained_model["config"].data.features]
    return pd.read_parquet(trained_model["test_path"])[features]


@pytest.fixture
def client(served_model: ServedModel) -> Iterator[TestClient]:
    """A started app (lifespan run) with default settings."""
    with TestClient(create_app(ServingSettings(), served_model)) as c:
        yield c


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready records: NaN becomes null."""
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_dir(trained_model: dict[str, Any]) -> Path:
    return Path(trained_model["model_dir"])


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 90.0) -> float:
    """Poll ``url``/ready until 200; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=1.0).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout}s")


@contextmanager
def mlgate_serve(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """``mlgate serve ARGS`` on a free loopback port, ready; killed at the end if still running."""
    port = free_port()
    mlgate = Path(sys.executable).with_name("mlgate")
    with log_path.open("w") as log:
        proc = subprocess.Popen(  # nosec B603 - fixed argument list
            [str(mlgate), "serve", *args, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        yield {"proc": proc, "url": url, "port": port, "log": log_path, "ready_s": wait_ready(url, proc)}
    finally:
        if proc.poll() is None:
            kill_server(proc)


def spawned_helpers(proc: subprocess.Popen) -> list[psutil.Process]:
    """The processes a server spawned with multiprocessing (its shadow process, its registry helper)."""
    return [p for p in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(p.cmdline())]


def kill_server(proc: subprocess.Popen, timeout: float = 10.0) -> list[int]:
    """SIGKILL a server, as the OOM killer would, and wait for the helper processes it started (the shadow
    process, the registry helper, multiprocessing's resource tracker) to end on their own. Returns the pids of
    those that did not (killed then, so that no test leaves them running)."""
    try:
        helpers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        helpers = []
    proc.kill()
    proc.wait(10)
    _, alive = psutil.wait_procs(helpers, timeout=timeout)
    for helper in alive:
        helper.kill()
    return [helper.pid for helper in alive]
