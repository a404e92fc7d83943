"""What a scoring job is asked to do, validated before any work starts (no heavy imports: the CLI reads the
defaults from here)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mlgate.modelio import RuntimeChoice

ENGINES = ("local", "spark")
POOLS = ("threads", "processes")  # how the local engine's workers run (mlgate.batch.local.Predictor)
DEFAULT_CHUNK_ROWS = 100_000
DEFAULT_SPARK_MASTER = "local[*]"


class ScoreOptions(BaseModel):
    """One batch scoring job.

    Attributes:
        model_uri: ``models:/name@alias``, any MLflow model URI, or a local MLflow model folder.
        input: a CSV or Parquet file, a folder of them, or a glob; a local path or an ``s3://`` URI.
        output: the scores, ``.parquet`` or ``.csv``, local or ``s3://``; the quarantine, the summary and the
            drift report are written beside it.
        keys: input columns copied to the output (as text) to join the scores back.
        psi_threshold: PSI above which a feature counts as drifted (``drift.psi_threshold`` in the config).
        engine: ``local`` (this machine, a pool of processes) or ``spark`` (a Spark cluster).
        chunk_rows: rows per chunk; memory grows with this and ``workers``, not with the input.
        workers: prediction threads or processes of the local engine (default: one per core; 0 predicts in
            the reading thread).
        pool: ``threads`` (one model shared) or ``processes`` (one model each) for the local engine.
        spark_master: the Spark master URL of the spark engine.
        runtime: ``auto`` (ONNX Runtime when training proved the compiled model's parity, else scikit-learn),
            ``onnx`` or ``sklearn``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_uri: str
    input: str
    output: str
    keys: tuple[str, ...] = ()
    psi_threshold: float = Field(gt=0.0)
    engine: Literal[ENGINES] = "local"  # type: ignore[valid-type]
    chunk_rows: int = Field(default=DEFAULT_CHUNK_ROWS, ge=1)
    workers: int | None = Field(default=None, ge=0)
    pool: Literal[POOLS] = "threads"  # type: ignore[valid-type]
    spark_master: str = DEFAULT_SPARK_MASTER
    runtime: RuntimeChoice = "auto"
