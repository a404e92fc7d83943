"""Batch fixtures: scoring through the API and the CLI, the local stack's S3 store (moto, alone), and one
multi-process Spark cluster for the whole session."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mlgate.batch import ScoreOptions, score
from mlgate.batch.job import ScoreSummary
from mlgate.cli import cli
from mlgate.stack import StackSettings, free_port, start_service, stop_service
from tests.conftest import require

CLUSTER = "local-cluster[2,1,1024]"  # two worker processes (JVM + Python each), one core each


def run_score(trained_model: dict, source: Any, out: Any, **kwargs: Any) -> ScoreSummary:
    """Score with the session's champion through the API; in-process prediction unless told otherwise."""
    options = {
        "model_uri": str(trained_model["model_dir"]),
        "input": str(source),
        "output": str(out),
        "psi_threshold": trained_model["config"].drift.psi_threshold,
        "workers": 0,
        **kwargs,
    }
    return score(ScoreOptions(**options))


def cli_score(trained_model: dict, source: Any, out: Any, *args: str) -> Result:
    """``mlgate score`` with the session's champion, as a user types it."""
    argv = ["score", "--model", str(trained_model["model_dir"]), "--input", str(source), "--output", str(out)]
    return CliRunner().invoke(cli, [*argv, "--workers", "0", *args])


def s3_env(settings: StackSettings) -> dict[str, str]:
    """The variables that point pyarrow (and the Spark executors) at the test S3 store."""
    return {
        "AWS_ENDPOINT_URL": settings.s3_endpoint,
        "AWS_ACCESS_KEY_ID": settings.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key,
        "AWS_REGION": "us-east-1",
    }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[StackSettings]:
    """The local stack's S3 store (moto's server, as `mlgate stack up` starts it) alone, with a bucket."""
    require(importlib.util.find_spec("moto") is not None, "moto[server] is not installed")
    root = Path(tempfile.mkdtemp(prefix="mlgate-s3-"))
    for sub in ("pids", "logs"):
        (root / sub).mkdir()
    settings = StackSettings(
        root=str(root),
        pg_port=0,
        s3_port=free_port(),
        mlflow_port=0,
        db_name="-",
        db_user="-",
        db_password="-",
        bucket="mlgate-batch",
        s3_access_key="batch-test",
        s3_secret_key="batch-test-secret",
    )
    try:
        settings = start_service(settings, "s3", timeout=60)
        yield settings
    finally:
        stop_service(settings, "s3")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def s3(s3_server: StackSettings, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """An ``s3://`` prefix of this test's own in the S3 store, with the AWS variables set for this test."""
    for name, value in s3_env(s3_server).items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3_server.bucket}/{request.node.name.replace('[', '-').replace(']', '')}"


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def spark_cluster(s3_server: StackSettings) -> Iterator[str]:
    """A Spark session on a multi-process cluster (two worker JVMs, each with its own Python worker), started
    once for the session. The S3 variables are set while it starts, so the executors get them."""
    require(shutil.which("java") is not None, "Java is needed for the Spark engine")
    require(importlib.util.find_spec("pyspark") is not None, "pyspark is not installed")
    from mlgate.batch.spark import session

    unset = [k for k in ("SPARK_LOCAL_IP", "PYSPARK_PYTHON") if k not in os.environ]
    with _environ(s3_env(s3_server)):
        spark = session(CLUSTER)
    for k in unset:  # read when the cluster started; not left behind for other tests
        os.environ.pop(k, None)
    try:
        yield CLUSTER
    finally:
        spark.stop()
