"""The pipeline against a real tracking server: runs in PostgreSQL, models registered, artifacts in S3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import psycopg2
import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from mlgate.io import read_step_result
from mlgate.models import allow_model_loading
from mlgate.pipeline import run_pipeline
from mlgate.stack import StackSettings
from tests.stack.conftest import stack_config, tracking_at

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_run(stack: StackSettings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The default pipeline run once through the server; its summary, config and step results."""
    tmp = tmp_path_factory.mktemp("stack-run")
    cfg = stack_config(tmp)
    with tracking_at(stack, tmp):
        summary = run_pipeline(cfg)
    return {
        "summary": summary,
        "cfg": cfg,
        "tmp": tmp,
        "train": read_step_result(cfg.outputs, "train"),
        "evaluation": read_step_result(cfg.outputs, "evaluation"),
    }


def _query(stack: StackSettings, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(**stack.pg_connect_kwargs())
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def test_first_run_is_promoted_through_the_server(first_run: dict[str, Any], stack: StackSettings) -> None:
    summary = first_run["summary"]
    assert summary["tracking_uri"] == stack.tracking_uri
    assert summary["promoted"] and summary["champion_version"] == summary["candidate_version"] == "1"


def test_runs_and_metrics_are_rows_in_postgresql(first_run: dict[str, Any], stack: StackSettings) -> None:
    summary, evaluation = first_run["summary"], first_run["evaluation"]
    runs = dict(
        _query(
            stack,
            "SELECT r.run_uuid, r.status FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
            "WHERE e.name = %s",
            (first_run["cfg"].experiment,),
        )
    )
    for run_id in (summary["pipeline_run_id"], summary["candidate_run_id"], evaluation["evaluate_run_id"]):
        assert runs[run_id] == "FINISHED"
    metrics = dict(
        _query(
            stack,
            "SELECT key, value FROM latest_metrics WHERE run_uuid = %s",
            (evaluation["evaluate_run_id"],),
        )
    )
    for name, value in evaluation["candidate"]["metrics"].items():
        assert metrics[name] == pytest.approx(value)
    stored = _query(
        stack,
        "SELECT version FROM model_versions WHERE name = %s AND run_id = %s",
        (first_run["cfg"].model_name, summary["candidate_run_id"]),
    )
    assert stored == [(1,)]


def test_version_has_lineage_tags_and_champion_alias(first_run: dict[str, Any], stack: StackSettings) -> None:
    cfg, train = first_run["cfg"], first_run["train"]
    client = MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
    version = client.get_model_version(cfg.model_name, "1")
    assert version.tags["mlgate.run_id"] == train["run_id"]
    assert version.tags["mlgate.git_commit"] == train["git_commit"] != ""
    assert version.tags["mlgate.data_digest"] == train["dataset_digest"]
    assert version.tags["mlgate.config_hash"] == cfg.digest()
    assert version.tags["mlgate.evaluate_run_id"] == first_run["evaluation"]["evaluate_run_id"]
    assert client.get_model_version_by_alias(cfg.model_name, "champion").version == "1"


def test_artifacts_download_through_the_server_and_live_in_s3(
    first_run: dict[str, Any], stack: StackSettings, tmp_path: Path
) -> None:
    cfg = first_run["cfg"]
    with tracking_at(stack, tmp_path):
        local = Path(
            download_artifacts(artifact_uri=f"models:/{cfg.model_name}@champion", dst_path=str(tmp_path))
        )
        with allow_model_loading():
            model = mlflow.pyfunc.load_model(str(local))
    assert (local / "MLmodel").is_file()
    rows = pd.read_parquet(first_run["train"]["test_path"]).head(5)
    predictions = model.predict(rows.drop(columns=[cfg.data.target]))
    assert set(pd.Series(predictions).astype(str)) <= set(cfg.data.classes)

    keys: list[str] = []
    for page in (
        stack.s3_client().get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix="artifacts/")
    ):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    # registered_model_meta is written by the download itself, not stored.
    model_files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    model_files.discard("registered_model_meta")
    assert "MLmodel" in model_files
    for name in model_files:
        assert any(
            key.endswith("/" + name) for key in keys
        ), f"{name} is not an object in s3://{stack.bucket}"


def test_worse_model_leaves_champion_where_it_was(
    first_run: dict[str, Any], stack: StackSettings, tmp_path: Path
) -> None:
    cfg = stack_config(
        tmp_path,
        model_name=first_run["cfg"].model_name,
        experiment=first_run["cfg"].experiment,
        **{"estimator.class": "sklearn.dummy.DummyClassifier", "estimator.params": {"strategy": "prior"}},
    )
    with tracking_at(stack, tmp_path):
        summary = run_pipeline(cfg)
    assert summary["candidate_version"] == "2"
    assert not summary["gate_passed"] and not summary["promoted"]
    client = MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
    assert client.get_model_version_by_alias(cfg.model_name, "champion").version == "1"
    assert client.get_model_version(cfg.model_name, "2").tags["mlgate.gate"] == "rejected"


def test_the_tracking_server_runs_without_mlflows_job_processes(stack: StackSettings) -> None:
    """MLflow 3's server would start a job runner and three huey consumers beside itself (each importing
    MLflow) on a database backend with huey installed; the stack's server answers without them."""
    import psutil

    from mlgate.stack import _running

    server = _running(stack, "mlflow")
    assert server is not None
    family = [server, *server.children(recursive=True)]
    commands = [" ".join(p.cmdline()) for p in family if p.is_running()]
    assert not [c for c in commands if "huey" in c or "jobs._job_runner" in c], commands
    assert any("uvicorn" in c or "mlflow" in c for c in commands)
    assert isinstance(server, psutil.Process)
