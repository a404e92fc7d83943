"""Step 1, validate: read the data, quarantine bad rows with their reasons, log the accepted set."""

from __future__ import annotations

import logging
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.pandas_dataset import PandasDataset

from mlgate import data as d
from mlgate.config import PipelineConfig
from mlgate.io import read_table, write_json, write_table
from mlgate.tracking import step_run

log = logging.getLogger(__name__)

ACCEPTED_FILE = "validated.parquet"
QUARANTINE_FILE = "quarantine.csv"


def validated_dataset(table: pd.DataFrame, cfg: PipelineConfig, source: str) -> PandasDataset:
    """The MLflow dataset of a validated (typed, accepted) table: its digest is the data's lineage, which
    train records on the model and ``mlgate lineage`` compares."""
    return mlflow.data.from_pandas(table, source=source, targets=cfg.data.target, name="validated")


def validate(cfg: PipelineConfig, source: str | None = None) -> dict[str, Any]:
    """Check the configured data source against the declared schema.

    Args:
        cfg: the pipeline config.
        source: a table to read instead of ``cfg.data.source``.

    Returns:
        The step result written to ``<outputs>/validate.json``: counts, paths, dataset digest and run id.

    Raises:
        DataSourceError, SchemaMismatchError, TaskMismatchError, TooManyInvalidRowsError: with a message
        naming the problem.
    """
    source = source or cfg.data.source
    raw = read_table(source)
    result = d.check_rows(raw, cfg.data, cfg.task)
    accepted, quarantined = result.accepted, result.quarantined
    assert result.rows_in == len(accepted) + len(quarantined)  # nosec B101 - invariant of check_rows
    out = cfg.outputs
    quarantine_path = write_table(quarantined, out / QUARANTINE_FILE)
    log.info(
        "validate: %d rows in, %d accepted, %d quarantined (%.1f%%) -> %s",
        result.rows_in,
        len(accepted),
        len(quarantined),
        100 * result.invalid_fraction,
        quarantine_path,
    )
    d.enforce_limit(result, cfg.data.max_invalid_fraction)
    accepted_path = write_table(accepted, out / ACCEPTED_FILE)
    dataset = validated_dataset(accepted, cfg, str(source))
    with step_run(cfg, "validate") as run:
        mlflow.log_input(dataset, context="validated")
        mlflow.log_metrics(
            {
                "rows_in": result.rows_in,
                "rows_accepted": len(accepted),
                "rows_quarantined": len(quarantined),
                "invalid_fraction": result.invalid_fraction,
            }
        )
        mlflow.log_artifact(str(quarantine_path), artifact_path="validation")
    summary = {
        "run_id": run.info.run_id,
        "source": str(source),
        "rows_in": result.rows_in,
        "rows_accepted": len(accepted),
        "rows_quarantined": len(quarantined),
        "accepted_path": str(accepted_path),
        "quarantine_path": str(quarantine_path),
        "dataset_digest": dataset.digest,
    }
    write_json(summary, out / "validate.json")
    return summary
