"""Following an alias (`mlgate serve --model models:/NAME@ALIAS --follow`): new versions are loaded in the
background, checked and swapped in atomically under load; incompatible ones are refused while the old one
keeps serving; an unreachable registry is reported and never stops the service. Against a real registry: the
SQLite store in-process, a real `mlflow server` for the server process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess  # nosec B404 - starts MLflow's own server
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import Model
from mlflow.types.schema import ColSpec, Schema

from mlgate.config import EstimatorConfig
from mlgate.features import build_pipeline
from mlgate.modelio import load_pipeline
from mlgate.serving.follow import compatibility_problems
from mlgate.serving.model import Column, load_served_model
from mlgate.serving.service import Service
from mlgate.serving.settings import ServingSettings
from mlgate.train import trusted_types
from tests.serving.conftest import free_port, kill_server, mlgate_serve, records, spawned_helpers


def register(name: str, pipeline: Any, signature: Any, example: pd.DataFrame | None) -> str:
    """Log ``pipeline`` as a new version of ``name`` in the current tracking store; its version number."""
    mlflow.set_experiment(f"{name}-versions")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            input_example=example,
            serialization_format="skops",
            skops_trusted_types=trusted_types(pipeline),
            registered_model_name=name,
        )
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def versions(trained_model: dict[str, Any]) -> dict[str, Any]:
    """What the tests register: the champion's pipeline and signature, a second estimator, an incompatible
    signature (a new required column)."""
    cfg = trained_model["config"]
    signature = Model.load(str(trained_model["model_dir"])).signature
    train = pd.read_parquet(Path(trained_model["test_path"]).with_name("train.parquet"))
    X, y = train[cfg.data.feature_names], train[cfg.data.target]
    logistic = EstimatorConfig(
        **{"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}}
    )
    wider = Schema([*signature.inputs.inputs, ColSpec("long", "year", required=True)])
    return {
        "champion": load_pipeline(trained_model["model_dir"]),
        "other": build_pipeline(cfg.data, logistic).fit(X, y),
        "signature": signature,
        "incompatible": type(signature)(inputs=wider, outputs=signature.outputs),
        "example": X.head(5),
        "incompatible_example": X.head(5).assign(year=2008),
    }


def test_compatibility_rules() -> None:
    running = [Column("a", "string", True), Column("b", "double", False)]
    assert compatibility_problems(running, running) == []
    assert compatibility_problems(running, [Column("a", "string", True)]) == []
    assert compatibility_problems(running, [*running, Column("c", "double", False)]) == []
    assert compatibility_problems(running, [*running, Column("c", "long", True)]) == [
        "requires a new column 'c'"
    ]
    assert compatibility_problems(running, [Column("a", "long", True), running[1]]) == [
        "column 'a' changes type string -> long"
    ]
    assert compatibility_problems(running, [running[0], Column("b", "double", True)]) == [
        "column 'b' becomes required"
    ]


def test_follower_swaps_refuses_and_keeps_serving(store: Path, versions: dict[str, Any]) -> None:
    name = f"follow-{uuid.uuid4().hex[:6]}"
    client = MlflowClient()
    v1 = register(name, versions["champion"], versions["signature"], versions["example"])
    client.set_registered_model_alias(name, "champion", v1)
    folder = mlflow.artifacts.download_artifacts(f"models:/{name}/{v1}", dst_path=str(store / "v1"))
    service = Service(
        ServingSettings(follow=True, follow_seconds=1),
        load_served_model(folder, {"name": name, "version": v1, "alias": "champion"}),
    )
    follower = service.follower()
    try:

        def check() -> str:
            return asyncio.run(follower.check())

        assert check() == "unchanged" and service.model.version == v1
        v2 = register(name, versions["other"], versions["signature"], versions["example"])
        client.set_registered_model_alias(name, "champion", v2)
        assert check() == "swapped" and service.model.version == v2
        assert service.model.info["alias"] == "champion"
        v3 = register(name, versions["champion"], versions["incompatible"], versions["incompatible_example"])
        client.set_registered_model_alias(name, "champion", v3)
        assert check() == "incompatible" and service.model.version == v2
        assert "requires a new column 'year'" in follower.status["refused"][v3]
        assert check() == "unchanged", "a refused version is not downloaded again"
        v4 = register(name, versions["champion"], versions["signature"], None)  # no example to warm up with
        client.set_registered_model_alias(name, "champion", v4)
        assert check() == "load_error" and service.model.version == v2
        client.delete_registered_model_alias(name, "champion")
        assert check() == "registry_error" and service.model.version == v2
        metrics = service.metrics.render().decode()
        for outcome, n in (("swapped", 1), ("incompatible", 1), ("load_error", 1), ("registry_error", 1)):
            assert f'mlgate_model_reloads_total{{outcome="{outcome}"}} {float(n)}' in metrics
        assert f"mlgate_model_version {float(v2)}" in metrics
        assert f'mlgate_model_info{{alias="champion",name="{name}",run_id=' in metrics
        assert metrics.count("mlgate_model_info{") == 1
    finally:
        follower.close()


def test_a_regressor_is_refused_by_a_service_started_on_a_classifier(
    store: Path, trained_model: dict[str, Any], versions: dict[str, Any]
) -> None:
    cfg = trained_model["config"]
    X = versions["example"]
    ridge = EstimatorConfig(**{"class": "sklearn.linear_model.Ridge", "params": {}})
    regressor = build_pipeline(cfg.data, ridge, "regression").fit(X, X["body_mass_g"].fillna(4000.0))
    name = f"follow-{uuid.uuid4().hex[:6]}"
    client = MlflowClient()
    v1 = register(name, versions["champion"], versions["signature"], X)
    client.set_registered_model_alias(name, "champion", v1)
    folder = mlflow.artifacts.download_artifacts(f"models:/{name}/{v1}", dst_path=str(store / "v1"))
    service = Service(
        ServingSettings(follow=True, follow_seconds=1),
        load_served_model(folder, {"name": name, "version": v1, "alias": "champion"}),
    )
    follower = service.follower()
    try:
        v2 = register(name, regressor, versions["signature"], X)
        client.set_registered_model_alias(name, "champion", v2)
        assert asyncio.run(follower.check()) == "incompatible" and service.model.version == v1
        assert "it is a regressor, the running version a classifier" in follower.status["refused"][v2]
    finally:
        follower.close()


@pytest.fixture
def tracking_server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real `mlflow server` (SQLite, artifacts served over HTTP) that a test can stop and start again."""
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'registry.db'}",
        "--artifacts-destination", str(tmp_path / "artifacts"),
    ]  # fmt: skip
    server: dict[str, Any] = {"uri": f"http://127.0.0.1:{port}", "proc": None}

    def start() -> None:
        log = (tmp_path / "mlflow-server.log").open("a")
        path = f"{mlflow_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        server["proc"] = subprocess.Popen(  # nosec B603 - fixed argument list
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PATH": path},
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{server['uri']}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise AssertionError("mlflow server did not start")

    def stop() -> None:
        os.killpg(server["proc"].pid, signal.SIGTERM)
        try:
            server["proc"].wait(20)
        except subprocess.TimeoutExpired:  # its gunicorn/uvicorn parent can linger after the worker exits
            os.killpg(server["proc"].pid, signal.SIGKILL)
            server["proc"].wait(20)

    server.update(start=start, stop=stop)
    start()
    try:
        yield server
    finally:
        if server["proc"].poll() is None:
            stop()


def _metric(url: str, pattern: str) -> float | None:
    found = re.search(pattern + r" ([0-9.e+-]+)$", httpx.get(f"{url}/metrics").text, re.M)
    return float(found.group(1)) if found else None


def _wait(condition: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
def test_served_versions_switch_under_load_with_no_error(
    tracking_server: dict[str, Any], versions: dict[str, Any], test_rows: pd.DataFrame, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server["uri"])
    mlflow.set_tracking_uri(tracking_server["uri"])
    name = f"follow-{uuid.uuid4().hex[:6]}"
    client = MlflowClient()
    try:
        v1 = register(name, versions["champion"], versions["signature"], versions["example"])
        v2 = register(name, versions["other"], versions["signature"], versions["example"])
        v3 = register(name, versions["champion"], versions["incompatible"], versions["incompatible_example"])
        client.set_registered_model_alias(name, "champion", v1)
    finally:
        mlflow.set_tracking_uri(None)
    env = {"MLFLOW_TRACKING_URI": tracking_server["uri"], "MLGATE_SERVE_FOLLOW_SECONDS": "0.5"}
    args = ["--model", f"models:/{name}@champion", "--follow"]
    body = {"records": records(test_rows.head(3))}
    answers: list[tuple[float, float, int, str | None, str | None]] = []
    stop = threading.Event()
    with mlgate_serve(args, tmp_path / "server.log", env) as server:
        url = server["url"]

        def hammer() -> None:
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    start = time.monotonic()
                    response = http.post(f"{url}/predict", json=body)
                    version = response.json().get("model_version") if response.status_code == 200 else None
                    answers.append(
                        (
                            start,
                            time.monotonic(),
                            response.status_code,
                            response.headers.get("x-model-version"),
                            version,
                        )
                    )

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(2)
            mlflow.set_tracking_uri(tracking_server["uri"])
            client.set_registered_model_alias(name, "champion", v2)
            _wait(lambda: any(a[3] == v2 for a in answers))
            client.set_registered_model_alias(name, "champion", v3)
            _wait(lambda: _metric(url, r'mlgate_model_reloads_total\{outcome="incompatible"\}') == 1.0)
            time.sleep(1)
            tracking_server["stop"]()
            _wait(lambda: _metric(url, "mlgate_registry_up") == 0.0)
            time.sleep(1)
            meta = httpx.get(f"{url}/metadata").json()
            assert httpx.get(f"{url}/health").status_code == 200
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
            mlflow.set_tracking_uri(None)
        assert (_metric(url, r'mlgate_model_reloads_total\{outcome="registry_error"\}') or 0) >= 1
        assert _metric(url, r'mlgate_model_reloads_total\{outcome="swapped"\}') == 1.0
        assert _metric(url, "mlgate_model_version") == float(v2)
        assert "Traceback" not in httpx.get(f"{url}/metadata").text
        # killed outright (SIGKILL, the OOM killer), the service leaves no registry helper running
        assert spawned_helpers(server["proc"]), "no registry helper"
        assert kill_server(server["proc"]) == []
    assert meta["version"] == v2 and meta["follow"]["registry"] == "unreachable"
    assert v3 in meta["follow"]["refused"] and "year" in meta["follow"]["refused"][v3]
    assert len(answers) > 50
    assert {a[2] for a in answers} == {200}, "every request answered during the swaps"
    assert all(a[3] == a[4] for a in answers), "the header names the version that computed the body"
    assert {a[3] for a in answers} == {v1, v2}
    first_v2_done = min(a[1] for a in answers if a[3] == v2)
    assert all(a[3] == v2 for a in answers if a[0] > first_v2_done), "once swapped, never back"
