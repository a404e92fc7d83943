"""The chain validate -> train -> evaluate -> register -> promote: one parent run, a child run per step."""

from __future__ import annotations

import gc
import logging
from typing import Any

import mlflow

from mlgate.config import PipelineConfig
from mlgate.evaluate import evaluate
from mlgate.registry import promote, register
from mlgate.timing import timed
from mlgate.tracking import TAG_PREFIX, git_commit, use_experiment
from mlgate.train import train
from mlgate.validate import validate

# What the imports above made (MLflow, scikit-learn, skops, matplotlib, pandera: some 300,000 objects) lives
# as long as the process. Moved once out of the cyclic collector's sight, neither the collections during a run
# nor the collection at interpreter exit walk it again: about 2 s of a 15 s rerun of `mlgate run`, most of it
# at exit. Reference counting still frees everything; only a reference cycle among the objects that exist at
# this import (in a test session: the session's too) would never be collected.
gc.freeze()

log = logging.getLogger(__name__)


def run_pipeline(cfg: PipelineConfig, dry_run: bool = False) -> dict[str, Any]:
    """Run every step in order; stop at the first failure.

    Returns:
        A summary: rows, model version, candidate metrics, the gate's verdict, the champion after the run and
        each step's duration in seconds (``step_seconds``).
    """
    use_experiment(cfg)
    with mlflow.start_run(run_name="pipeline") as parent:
        mlflow.set_tags({f"{TAG_PREFIX}step": "pipeline", f"{TAG_PREFIX}git_commit": git_commit()})
        durations: dict[str, float] = {}
        with timed("validate", durations):
            validated = validate(cfg)
        with timed("train", durations):
            trained = train(cfg)
        with timed("evaluate", durations):
            evaluation = evaluate(cfg)
        with timed("register", durations):
            registered = register(cfg)
        with timed("promote", durations):
            result = promote(cfg, dry_run=dry_run)
    champion = registered["version"] if result.promoted or result.already_champion else result.previous
    summary = {
        "pipeline_run_id": parent.info.run_id,
        "rows_in": validated["rows_in"],
        "rows_quarantined": validated["rows_quarantined"],
        "model_name": cfg.model_name,
        "candidate_version": registered["version"],
        "candidate_run_id": trained["run_id"],
        "metrics": {
            t.metric: evaluation["candidate"]["metrics"].get(t.metric) for t in cfg.promotion.thresholds
        },
        "gate_passed": result.passed,
        "verdict": result.verdict,
        "promoted": result.promoted,
        "already_champion": result.already_champion,
        "champion_version": champion,
        "tracking_uri": mlflow.get_tracking_uri(),
        "step_seconds": durations,
    }
    log.info(
        "pipeline: %s v%s %s; champion is v%s (%s)",
        cfg.model_name,
        registered["version"],
        "promoted" if result.promoted else "not promoted",
        champion,
        ", ".join(f"{step} {seconds:.1f}s" for step, seconds in durations.items()),
    )
    return summary
