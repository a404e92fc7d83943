"""Commands that start fast: `mlgate score` and `mlgate serve` with ``models:/NAME@ALIAS`` on a tracking
server resolve and download the model through its REST API (mlgate.registry_rest), without importing MLflow,
and load the same bytes MLflow downloads, under the same trust check, with the same one-line refusals. Against
the session's tracking stack (`mlflow server --serve-artifacts` over HTTP, PostgreSQL, S3), as a user runs
them. No timing is asserted here: bench/startup/run.py measures it."""

from __future__ import annotations

import filecmp
import shutil
import subprocess  # nosec B404 - the real mlgate CLI, fixed arguments
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlgate.bundle import model_bundle, rest_bundle
from mlgate.modelio import load_pipeline
from mlgate.registry_rest import RestRegistry, rest_registry
from mlgate.stack import StackSettings
from tests.conftest import PENGUINS
from tests.model.test_trust import _skops_with_payload
from tests.serving.conftest import mlgate_serve, records
from tests.stack.conftest import cli_env

FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex"]


def register_logged_model(folder: Path, name: str, alias: str = "champion") -> str:
    """Register ``folder`` as `mlgate train` and `register` do (a logged model, then a version of it)."""
    client = MlflowClient()
    experiment = mlflow.set_experiment(f"{name}-fast-start")
    logged = client.create_logged_model(experiment.experiment_id)
    client.log_model_artifacts(logged.model_id, str(folder))
    client.create_registered_model(name)
    version = client.create_model_version(
        name, f"models:/{logged.model_id}", model_id=logged.model_id
    ).version
    client.set_registered_model_alias(name, alias, version)
    return str(version)


def register_run_artifacts(folder: Path, name: str, alias: str = "champion") -> str:
    """Register ``folder`` logged as a run's artifacts (a ``runs:/`` source, as older versions have)."""
    client = MlflowClient()
    mlflow.set_experiment(f"{name}-fast-start")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder), "model")
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def imported(stderr: str) -> set[str]:
    """The modules a ``python -X importtime`` process (and any child it spawned) imported."""
    return {
        line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")
    } - {"package"}


def mlflow_modules(stderr: str) -> list[str]:
    return sorted(m for m in imported(stderr) if m == "mlflow" or m.startswith("mlflow."))


def score(uri: str, out: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`mlgate score --model URI` as a user runs it, under ``-X importtime``."""
    return subprocess.run(  # nosec B603 - fixed argument list
        [sys.executable, "-X", "importtime", "-m", "mlgate", "score", "--model", uri,
         "--input", str(PENGUINS), "--output", str(out), *args],
        capture_output=True, text=True, env=env, cwd=out.parent, timeout=300,
    )  # fmt: skip


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("import time:")]


@pytest.mark.slow
def test_score_with_a_registry_uri_loads_the_same_model_without_importing_mlflow(
    at_stack: StackSettings, trained_model: dict[str, Any], tmp_path: Path
) -> None:
    name = f"fast-{uuid.uuid4().hex[:8]}"
    version = register_logged_model(Path(trained_model["model_dir"]), name)
    uri = f"models:/{name}@champion"

    # the same files, byte for byte, and the same record as MLflow's download (model_bundle)
    record = rest_bundle(uri, tmp_path / "rest")
    assert record == model_bundle(uri, tmp_path / "mlflow")
    assert (record["name"], record["version"], record["alias"]) == (name, version, "champion")
    files = sorted(str(p.relative_to(tmp_path / "mlflow")) for p in (tmp_path / "mlflow").rglob("*"))
    assert files == sorted(str(p.relative_to(tmp_path / "rest")) for p in (tmp_path / "rest").rglob("*"))
    assert {"model.skops", "registered_model_meta", "onnx/model.onnx", "mlgate_bundle.json"} <= set(files)
    kept = [f for f in files if (tmp_path / "mlflow" / f).is_file()]
    _, differ, missing = filecmp.cmpfiles(tmp_path / "mlflow", tmp_path / "rest", kept, shallow=False)
    assert differ == [] and missing == []

    out = tmp_path / "scores.parquet"
    done = score(uri, out, cli_env(at_stack), "--runtime", "sklearn")
    assert done.returncode == 0, "\n".join(errors(done.stderr)[-20:])
    assert "requests" in imported(done.stderr) and mlflow_modules(done.stderr) == []
    summary = pd.read_json(out.with_name("scores.summary.json"), typ="series")
    assert (summary["model_name"], summary["model_version"], summary["runtime"]) == (name, version, "sklearn")

    scores = pd.read_parquet(out)
    pipeline = load_pipeline(trained_model["model_dir"])
    rows = pd.read_csv(PENGUINS).iloc[scores["_source_row"]][FEATURES]
    for column in (
        "island",
        "sex",
    ):  # a missing category is None, as in the typed data the model was fitted on
        rows[column] = rows[column].astype(object).where(rows[column].notna(), None)
    proba = scores[[f"proba_{c}" for c in pipeline.classes_]].to_numpy()
    np.testing.assert_allclose(proba, pipeline.predict_proba(rows), rtol=0, atol=1e-12)
    assert (scores["prediction"].to_numpy() == pipeline.predict(rows)).all()


@pytest.mark.slow
def test_refusals_stay_one_line_and_refuse_before_loading(
    at_stack: StackSettings, trained_model: dict[str, Any], tmp_path: Path
) -> None:
    env = cli_env(at_stack)
    name = f"fast-{uuid.uuid4().hex[:8]}"
    register_run_artifacts(Path(trained_model["model_dir"]), name)

    no_alias = score(f"models:/{name}@nope", tmp_path / "a.parquet", env)
    assert no_alias.returncode == 1 and mlflow_modules(no_alias.stderr) == []
    assert (
        errors(no_alias.stderr)[-1]
        == f"mlgate score failed: models:/{name}@nope: model '{name}' has no alias 'nope'"
    )

    no_version = score(f"models:/{name}/99", tmp_path / "b.parquet", env)
    assert no_version.returncode == 1 and mlflow_modules(no_version.stderr) == []
    assert errors(no_version.stderr)[-1] == (
        f"mlgate score failed: RESOURCE_DOES_NOT_EXIST: Model Version (name={name}, version=99) not found"
    )

    marker = tmp_path / "ran"
    payload = _skops_with_payload(Path(shutil.copytree(trained_model["model_dir"], tmp_path / "bad")), marker)
    bad = f"bad-{uuid.uuid4().hex[:8]}"
    register_run_artifacts(payload, bad)
    refused = score(f"models:/{bad}@champion", tmp_path / "c.parquet", env)
    assert refused.returncode == 1 and mlflow_modules(refused.stderr) == []
    last = errors(refused.stderr)[-1]
    assert last.startswith("mlgate score failed: ") and "tests.model.payload.Payload" in last, last
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "c.parquet").exists()


@pytest.mark.slow
def test_serve_with_a_registry_uri_answers_with_the_registered_version(
    at_stack: StackSettings, trained_model: dict[str, Any], tmp_path: Path
) -> None:
    name = f"fast-{uuid.uuid4().hex[:8]}"
    version = register_logged_model(Path(trained_model["model_dir"]), name)
    rows = pd.read_parquet(trained_model["test_path"])[FEATURES].head(5)
    args = ["--model", f"models:/{name}@champion", "--runtime", "sklearn"]
    with mlgate_serve(args, tmp_path / "serve.log", cli_env(at_stack)) as server:
        response = httpx.post(f"{server['url']}/predict", json={"records": records(rows)}, timeout=30)
    assert response.status_code == 200 and response.headers["x-model-version"] == version
    labels = [p["label"] for p in response.json()["predictions"]]
    assert labels == [str(v) for v in load_pipeline(trained_model["model_dir"]).predict(rows)]


# --- the client's settings, without a server ---------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"},
        {"MLFLOW_TRACKING_URI": "file:///tmp/mlruns"},
        {"MLFLOW_TRACKING_URI": "databricks"},
        {"MLFLOW_TRACKING_URI": "http://h:5000", "MLFLOW_REGISTRY_URI": "sqlite:///r.db"},
        {"MLFLOW_TRACKING_URI": "http://h:5000", "MLFLOW_TRACKING_AUTH": "my-plugin"},
        {"MLFLOW_TRACKING_URI": "http://h:5000", "MLFLOW_WORKSPACE": "team"},
    ],
)
def test_mlflow_resolves_what_the_rest_client_does_not_implement(env: dict[str, str]) -> None:
    assert rest_registry(env) is None


def test_the_client_honours_mlflow_auth_tls_and_retry_settings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials of the machine's
    base = {"MLFLOW_TRACKING_URI": "https://h:5000"}
    token = rest_registry({**base, "MLFLOW_TRACKING_TOKEN": "t0k", "MLFLOW_TRACKING_INSECURE_TLS": "true"})
    assert isinstance(token, RestRegistry)
    assert token.session.headers["Authorization"] == "Bearer t0k" and token.session.verify is False
    basic = rest_registry(
        {**base, "MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p",
         "MLFLOW_TRACKING_TOKEN": "t", "MLFLOW_TRACKING_SERVER_CERT_PATH": "/ca.pem",
         "MLFLOW_TRACKING_CLIENT_CERT_PATH": "/me.pem"}
    )  # fmt: skip
    assert basic.session.auth == ("u", "p") and "Authorization" not in basic.session.headers
    assert basic.session.verify == "/ca.pem" and basic.session.cert == "/me.pem"
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow" / "credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = fu\nmlflow_tracking_password = fp\n"
    )
    assert rest_registry(base).session.auth == ("fu", "fp")

    retry = rest_registry(
        {**base, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0.5",
         "MLFLOW_HTTP_REQUEST_TIMEOUT": "7"}
    )  # fmt: skip
    policy = retry.session.get_adapter("https://h:5000").max_retries
    assert (policy.total, policy.connect, policy.read, policy.status, policy.backoff_factor) == (
        4,
        4,
        4,
        4,
        0.5,
    )
    assert 503 in policy.status_forcelist and retry.timeout == 7.0
    defaults = rest_registry(base)  # mlgate's defaults (mlgate.client) when unset
    assert defaults.session.get_adapter("https://h:5000").max_retries.total == 2 and defaults.timeout == 15.0


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "c:/x"])
def test_a_listed_path_outside_the_download_folder_is_refused(path: str) -> None:
    from mlgate.registry_rest import _safe_relative

    with pytest.raises(ValueError, match="unsafe artifact path"):
        _safe_relative(path)
