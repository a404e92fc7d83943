"""Batch scoring: every row of a CSV/Parquet input scored by a model, or quarantined with its reason, on this
machine (``local``) or a Spark cluster (``spark``); both engines write the same outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlgate.batch.options import ScoreOptions

if TYPE_CHECKING:
    from mlgate.batch.job import ScoreSummary

__all__ = ["ScoreOptions", "score"]


def score(options: ScoreOptions) -> ScoreSummary:
    """Score every row of ``options.input`` with the model; quarantine the rows that cannot be scored.

    Returns:
        The run summary (also written, last, as ``<output stem>.summary.json``).

    Raises:
        DataSourceError: the input names no CSV/Parquet file.
        ScoringError: the model cannot be used, or the counts do not add up (nothing is published).
    """
    if options.engine == "spark":
        from mlgate.batch.spark import score_spark

        return score_spark(options)
    from mlgate.batch.local import score_local

    return score_local(options)
