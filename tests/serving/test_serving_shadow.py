"""Shadow scoring (`mlgate serve --shadow ...`): a challenger in its own process scores copies of live
requests off the response path; agreement, probability differences and latency reach /metrics; a full queue
drops copies (counted), never live requests; `mlgate shadow-report` summarises it."""

from __future__ import annotations

import json
import os
import signal
import subprocess  # nosec B404 - runs our own CLI
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.models import Model

from mlgate.config import EstimatorConfig
from mlgate.features import build_pipeline
from mlgate.serving.app import create_app
from mlgate.serving.model import ServedModel, load_served_model
from mlgate.serving.settings import ServingSettings
from mlgate.serving.shadow import shadow_report
from mlgate.train import trusted_types
from tests.serving.conftest import kill_server, mlgate_serve, records, spawned_helpers


@pytest.fixture(scope="module")
def challenger(trained_model: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another estimator behind the same preprocessing, saved as an MLflow model folder."""
    cfg = trained_model["config"]
    train = pd.read_parquet(Path(trained_model["test_path"]).with_name("train.parquet"))
    X, y = train[cfg.data.feature_names], train[cfg.data.target]
    spec = EstimatorConfig(
        **{"class": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}}
    )
    pipeline = build_pipeline(cfg.data, spec).fit(X, y)
    folder = tmp_path_factory.mktemp("challenger") / "model"
    mlflow.sklearn.save_model(
        pipeline,
        str(folder),
        signature=Model.load(str(trained_model["model_dir"])).signature,
        input_example=X.head(5),
        serialization_format="skops",
        skops_trusted_types=trusted_types(pipeline),
    )
    return folder


def _wait_for(condition: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _report(c: TestClient) -> dict[str, Any]:
    return shadow_report(c.get("/metrics").text)


def test_shadow_scores_copies_and_reports_agreement_and_differences(
    served_model: ServedModel, challenger: Path, test_rows: pd.DataFrame
) -> None:
    shadow = load_served_model(challenger)
    rows = test_rows.head(40)
    with TestClient(create_app(ServingSettings(shadow=str(challenger)), served_model)) as c:
        _wait_for(lambda: c.app.state.service.shadow.model is not None)
        for i in range(0, 40, 10):
            chunk = records(rows.iloc[i : i + 10])
            assert c.post("/invocations", json={"dataframe_records": chunk}).status_code == 200
            assert c.post("/predict", json={"records": chunk}).status_code == 200
        _wait_for(lambda: _report(c)["requests"]["scored"] == 8)
        report = _report(c)
    live = served_model.pipeline.predict(rows)
    theirs = shadow.pipeline.predict(rows)
    assert report["rows_scored"] == 80 and report["requests"] == {"scored": 8, "dropped": 0, "error": 0}
    assert report["agreement_rate"] == round(float(np.mean(live == theirs)), 4)
    difference = np.abs(served_model.pipeline.predict_proba(rows) - shadow.pipeline.predict_proba(rows)).max(
        axis=1
    )
    assert report["probability_difference"]["rows"] == 40  # /predict has probabilities, /invocations not
    assert report["probability_difference"]["mean"] == pytest.approx(difference.mean(), abs=1e-4)
    assert report["shadow_latency_ms"]["p50"] > 0
    assert report["served"]["version"] == served_model.version


def test_a_full_queue_drops_copies_never_live_requests(
    served_model: ServedModel, challenger: Path, test_rows: pd.DataFrame
) -> None:
    settings = ServingSettings(shadow=str(challenger), shadow_queue=2)
    body = {"dataframe_records": records(test_rows.head(3))}
    with TestClient(create_app(settings, served_model)) as c:
        shadow = c.app.state.service.shadow
        _wait_for(lambda: shadow.model is not None)
        os.kill(shadow.process.pid, signal.SIGSTOP)  # the challenger stops consuming: the queue fills up
        try:
            answers = [c.post("/invocations", json=body) for _ in range(10)]
            time.sleep(0.5)
        finally:
            os.kill(shadow.process.pid, signal.SIGCONT)
        assert [a.status_code for a in answers] == [200] * 10
        _wait_for(lambda: sum(_report(c)["requests"].values()) == 10)
        report = _report(c)
    assert report["requests"]["dropped"] >= 7 and report["requests"]["scored"] >= 2
    assert report["drop_rate"] == round(report["requests"]["dropped"] / 10, 4)


def test_a_shadow_that_cannot_load_leaves_the_service_serving(
    served_model: ServedModel, test_rows: pd.DataFrame, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    missing.mkdir()
    with TestClient(create_app(ServingSettings(shadow=str(missing)), served_model)) as c:
        _wait_for(lambda: _report(c)["requests"]["error"] == 1)
        response = c.post("/invocations", json={"dataframe_records": records(test_rows.head(2))})
        assert response.status_code == 200
        assert _report(c)["requests"]["scored"] == 0


def test_shadow_report_needs_a_shadow(client: TestClient) -> None:
    with pytest.raises(ValueError, match="no shadow model"):
        shadow_report(client.get("/metrics").text)


@pytest.mark.slow
def test_shadow_report_command_against_the_server_process(
    trained_model: dict[str, Any], challenger: Path, test_rows: pd.DataFrame, tmp_path: Path
) -> None:
    args = ["--model", str(trained_model["model_dir"]), "--shadow", str(challenger)]
    with mlgate_serve(args, tmp_path / "server.log") as server:
        url = server["url"]
        _wait_for(lambda: "mlgate_shadow_model_info{" in httpx.get(f"{url}/metrics").text)
        for _ in range(5):
            response = httpx.post(f"{url}/predict", json={"records": records(test_rows.head(4))})
            assert response.status_code == 200
        _wait_for(
            lambda: 'mlgate_shadow_requests_total{outcome="scored"} 5.0' in httpx.get(f"{url}/metrics").text
        )
        out = tmp_path / "shadow.json"
        mlgate = str(Path(sys.executable).with_name("mlgate"))
        done = subprocess.run(  # nosec B603 - fixed argument list
            [mlgate, "shadow-report", "--url", url, "--output", str(out)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert spawned_helpers(server["proc"]), "no shadow process"
        # a service killed outright (SIGKILL, the OOM killer) leaves no shadow process holding the challenger
        assert kill_server(server["proc"]) == []
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report == json.loads(done.stdout)
    assert report["requests"]["scored"] == 5 and report["rows_scored"] == 20
    assert 0 <= report["agreement_rate"] <= 1 and report["probability_difference"]["rows"] == 20
    refused = subprocess.run(  # nosec B603
        [str(Path(sys.executable).with_name("mlgate")), "shadow-report", "--url", "file:///etc/passwd"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
