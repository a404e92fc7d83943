"""MLflow plumbing shared by the steps: experiment and run set-up, lineage tags, the git commit."""

from __future__ import annotations

import os
import subprocess  # nosec B404 - git is called with a fixed argument list
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from mlflow.entities import Run

from mlgate.config import PipelineConfig
from mlgate.mlflow_noise import quiet_known_mlflow_noise

TAG_PREFIX = "mlgate."


def git_commit() -> str:
    """The commit being built: ``GITHUB_SHA`` in Actions, else ``git rev-parse HEAD``, else ``unknown``."""
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    try:
        out = subprocess.run(  # nosec B603 B607 - fixed command, no shell
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def tracking_uri() -> str:
    """Where runs and models go (``MLFLOW_TRACKING_URI``, else MLflow's default ``sqlite:///mlflow.db``)."""
    return mlflow.get_tracking_uri()


def use_experiment(cfg: PipelineConfig) -> None:
    """Log into the config's experiment, unless a run is active or ``mlflow run`` chose one already."""
    if mlflow.active_run() is None and not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(cfg.experiment)


@contextmanager
def step_run(cfg: PipelineConfig, step: str) -> Iterator[Run]:
    """Open the MLflow run a step logs into, tagged with the step, the commit and the config hash.

    Under ``mlflow run`` the run MLflow created (``MLFLOW_RUN_ID``) is used; inside the ``run`` chain each
    step is a child of the pipeline run.
    """
    quiet_known_mlflow_noise()
    use_experiment(cfg)
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=step, nested=nested) as run:
        mlflow.set_tags(
            {
                f"{TAG_PREFIX}step": step,
                f"{TAG_PREFIX}git_commit": git_commit(),
                f"{TAG_PREFIX}config_hash": cfg.digest(),
                f"{TAG_PREFIX}model_name": cfg.model_name,
            }
        )
        yield run
