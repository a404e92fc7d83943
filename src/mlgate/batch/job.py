"""What both batch engines share: the model and its metadata, scoring one chunk (check, predict, the score and
quarantine tables), the output files and their writers, and the end of a run (counts checked, drift report,
the summary written last)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from mlgate.batch.check import check_chunk
from mlgate.batch.options import ScoreOptions
from mlgate.batch.read import Chunk, Unreadable
from mlgate.bundle import resolve_model
from mlgate.config import CLASSIFICATION, REGRESSION
from mlgate.drift import PREDICTION, DriftAccumulator, DriftCounts, DriftReport, to_markdown
from mlgate.io import Staged, remove, remove_stale_temporaries, sibling, table_format
from mlgate.modelio import (
    Column,
    ModelLoadError,
    RuntimeChoice,
    folder_identity,
    read_mlmodel,
    signature_columns,
)
from mlgate.runtime import AUTO, SKLEARN, OnnxRuntime, load_runtime, pick_runtime
from mlgate.quarantine import RECORD, REASON, SOURCE_FILE, SOURCE_ROW

log = logging.getLogger(__name__)

# A chunk the model refuses is searched for the rows it refuses; past this many, the model is what is broken.
MAX_REFUSED_ROWS = 100
QUARANTINE_SCHEMA = pa.schema(
    [(SOURCE_FILE, pa.string()), (SOURCE_ROW, pa.int64()), (REASON, pa.string()), (RECORD, pa.string())]
)
MODEL_NAME_ENV, MODEL_VERSION_ENV = "MLGATE_MODEL_NAME", "MLGATE_MODEL_VERSION"


class ScoringError(RuntimeError):
    """The job cannot produce a complete, consistent result (not a bad row: those are quarantined)."""


class _Typed(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)


# --- the model -------------------------------------------------------------------------------------------


class BatchModel(_Typed):
    """A model resolved to a local MLflow model folder, with what scoring needs from its metadata."""

    uri: str
    path: Path
    name: str
    version: str
    inputs: tuple[Column, ...]
    classes: tuple[str, ...]
    task: str = CLASSIFICATION
    runtime: str = SKLEARN  # what scores: onnx or sklearn (mlgate.runtime.pick_runtime)
    reference: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def proba_columns(self) -> list[str]:
        return [f"proba_{c}" for c in self.classes]

    @property
    def prediction_type(self) -> pa.DataType:
        """A regressor's predictions are numbers; a classifier's labels are text."""
        return pa.float64() if self.task == REGRESSION else pa.string()

    def needed(self, keys: tuple[str, ...]) -> list[str]:
        """The input columns a job reads: its keys and the model's inputs."""
        return list(dict.fromkeys([*keys, *(c.name for c in self.inputs)]))

    def output_schema(self, keys: tuple[str, ...]) -> pa.Schema:
        """The columns of the scores: where each row came from, its keys, the prediction and the model."""
        fields = [(SOURCE_FILE, pa.string()), (SOURCE_ROW, pa.int64())]
        fields += [(k, pa.string()) for k in keys]
        fields += [("prediction", self.prediction_type)] + [(c, pa.float64()) for c in self.proba_columns]
        fields += [
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            ("scored_at", pa.timestamp("us", "UTC")),
        ]
        return pa.schema(fields)

    def repeated_columns(self) -> list[str]:
        """The output columns whose values repeat (one file, one model, one time, a classifier's classes):
        Parquet dictionary-encodes these and only these; trying it on unique keys and probabilities was a
        third of the time spent writing (1M rows: 0.29 s -> 0.18 s, and a smaller file)."""
        labels = ["prediction"] if self.classes else []
        return [SOURCE_FILE, *labels, "model_name", "model_version", "scored_at"]


def load_batch_model(uri: str, workdir: Path, runtime: RuntimeChoice = AUTO) -> BatchModel:
    """Resolve a model URI (registry URI, any MLflow URI, or a local model folder) to a local folder.

    Raises:
        ScoringError: the folder is not an MLflow scikit-learn model with an input signature, or the
            runtime asked for cannot run it.
    """
    path, _ = resolve_model(uri, workdir)
    try:
        mlmodel = read_mlmodel(path)
        inputs = tuple(signature_columns(mlmodel))
        chosen = pick_runtime(path, mlmodel, runtime)
    except ModelLoadError as exc:
        raise ScoringError(f"{uri}: {exc}") from None
    meta = (mlmodel.get("metadata") or {}).get("mlgate") or {}
    recorded = folder_identity(path)
    name = recorded["name"] or os.environ.get(MODEL_NAME_ENV) or mlmodel.get("model_id") or path.name
    version = recorded["version"] or os.environ.get(MODEL_VERSION_ENV) or "unknown"
    return BatchModel(
        uri=uri,
        path=path,
        name=str(name),
        version=str(version),
        inputs=inputs,
        classes=tuple(str(c) for c in meta.get("classes") or []),
        task=meta.get("task") or CLASSIFICATION,
        runtime=chosen,
        reference=meta.get("reference_stats") or {},
    )


class Prediction(_Typed):
    """A chunk's class probabilities and labels (a regressor's: no probability columns and its values), the
    rows the model refused (index -> why) and the drift counts of the rows it scored, its output included."""

    proba: np.ndarray
    labels: np.ndarray
    agree: bool
    refused: dict[int, str]
    drift: DriftCounts


class Scorer:
    """The runtime of a model folder (ONNX Runtime, or the pipeline loaded without MLflow for skops models)
    and its drift reference."""

    def __init__(self, path: str | Path, runtime: RuntimeChoice = AUTO) -> None:
        mlmodel = read_mlmodel(path)
        self.pipeline = load_runtime(path, mlmodel, runtime)
        meta = (mlmodel.get("metadata") or {}).get("mlgate") or {}
        self.reference = meta.get("reference_stats") or {}
        self.regression = (meta.get("task") or CLASSIFICATION) == REGRESSION

    def _run(
        self, features: pd.DataFrame, check: bool, use_predict: bool
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        if self.regression:
            values = np.asarray(self.pipeline.predict(features), dtype=np.float64)
            return np.empty((len(features), 0)), values, True
        if isinstance(self.pipeline, OnnxRuntime):  # its predict comes with the probabilities, from one run
            predicted, proba = self.pipeline.predict_both(features)
            predicted = predicted.astype(str)
            if check:
                labels = np.asarray(self.pipeline.classes_)[np.argmax(proba, axis=1)]
                return proba, predicted, bool(np.array_equal(predicted, labels.astype(str)))
            return proba, predicted, True
        proba = np.asarray(self.pipeline.predict_proba(features), dtype=np.float64)
        labels = np.asarray(self.pipeline.classes_)[np.argmax(proba, axis=1)]
        agree = True
        if check or use_predict:
            predicted = np.asarray(self.pipeline.predict(features))
            agree = bool(np.array_equal(predicted.astype(str), labels.astype(str)))
            labels = predicted
        return proba, labels.astype(str), agree

    def _refused(self, features: pd.DataFrame, rows: np.ndarray, found: dict[int, str]) -> None:
        """Find the rows the model refuses by halving: the halves it accepts are done in one call each."""
        try:
            (self.pipeline.predict if self.regression else self.pipeline.predict_proba)(features.iloc[rows])
            return
        except ValueError as exc:
            if len(rows) == 1:
                found[int(rows[0])] = f"the model refused the row: {str(exc).strip().splitlines()[0][:300]}"
                if len(found) > MAX_REFUSED_ROWS:
                    raise ScoringError(
                        f"the model refuses more than {MAX_REFUSED_ROWS} rows of a chunk: {exc}"
                    )
                return
        half = len(rows) // 2
        self._refused(features, rows[:half], found)
        self._refused(features, rows[half:], found)

    def score(self, features: pd.DataFrame, check: bool, use_predict: bool, drift: bool = True) -> Prediction:
        """Probabilities and labels of one chunk. The label is the most probable class (what ``predict``
        computes for forests, boosting and linear models), so the model runs once; ``check`` compares with
        ``predict``, and ``use_predict`` calls it for models whose ``predict`` disagrees. Rows the model
        raises on (a ValueError, as scikit-learn does for bad input) are set aside, the others scored.
        ``drift``: also count the scored rows for the drift report (False: the caller does, e.g. the local
        engine's reader, which waits on the workers and has the time; counting in the workers made a heavy
        model 10-15% slower at 1M rows, bench/README.md). The model's output (``PREDICTION``) is counted
        either way: with ``drift=False`` the counts hold only it, and no rows, to add to the caller's."""
        refused: dict[int, str] = {}
        try:
            proba, labels, agree = self._run(features, check, use_predict)
        except ValueError:
            self._refused(features, np.arange(len(features)), refused)
            keep = np.setdiff1d(np.arange(len(features)), np.fromiter(refused, dtype=np.int64))
            features = features.iloc[keep]
            proba, labels, agree = self._run(features, check, use_predict)
        acc = DriftAccumulator(self.reference)
        if drift:
            acc.update(features.assign(**{PREDICTION: labels}))
        else:  # the output only, which the caller cannot see; rows are the caller's to count
            acc.update(pd.DataFrame({PREDICTION: labels}))
            acc.rows = 0
        return Prediction(proba=proba, labels=labels, agree=agree, refused=refused, drift=acc.counts())


# --- one chunk ----------------------------------------------------------------------------------------------


class Counts(BaseModel):
    """Rows read, scored and quarantined; ``rows_in == rows_scored + rows_quarantined`` when a run ends."""

    rows_in: int = 0
    rows_scored: int = 0
    rows_quarantined: int = 0

    def add(self, other: Counts) -> None:
        self.rows_in += other.rows_in
        self.rows_scored += other.rows_scored
        self.rows_quarantined += other.rows_quarantined


class Prepared(_Typed):
    """A checked chunk: the typed inputs and identifiers of the rows to score, and the quarantined rows."""

    features: pd.DataFrame
    ids: pa.Table
    quarantine: pa.Table
    kinds: dict[str, int]
    counts: Counts


def quarantine_table(file: str, rows: list[int | None], reasons: list[str], records: list[str]) -> pa.Table:
    """Quarantined rows of one file, each with its reason and the row as read."""
    return pa.table(
        {
            SOURCE_FILE: pa.array([file] * len(reasons), pa.string()),
            SOURCE_ROW: pa.array(rows, pa.int64()),
            REASON: pa.array(reasons, pa.string()),
            RECORD: pa.array(records, pa.string()),
        },
        schema=QUARANTINE_SCHEMA,
    )


def _records(table: pa.Table) -> list[str]:
    """Rows as JSON objects; bytes as text, undecodable bytes escaped, so that nothing read is lost."""
    columns = {
        name: [v.decode(errors="backslashreplace") if isinstance(v, bytes) else v for v in col.to_pylist()]
        for name, col in zip(table.column_names, table.columns)
    }
    return [
        json.dumps(dict(zip(columns, row)), default=str, sort_keys=True) for row in zip(*columns.values())
    ]


def prepare(chunk: Chunk, model: BatchModel, keys: tuple[str, ...]) -> Prepared:
    """Check a chunk; its malformed lines and failing rows become quarantine rows, the others inputs."""
    table, n = chunk.table, chunk.table.num_rows
    kinds: Counter[str] = Counter()
    parts = []
    counts = Counts(rows_in=n + len(chunk.malformed))
    if chunk.malformed:
        bad = chunk.malformed
        parts.append(
            quarantine_table(chunk.file, [None] * len(bad), [m.reason for m in bad], [m.text for m in bad])
        )
        kinds["malformed line"] += len(bad)
    row_ids = np.arange(chunk.first_row, chunk.first_row + n, dtype=np.int64)
    checked = check_chunk(chunk, model.inputs, keys)
    features, key_cols = checked.features, checked.keys
    if checked.bad.any():
        bad_idx = np.flatnonzero(checked.bad)
        records = _records(table.take(pa.array(bad_idx)))
        parts.append(quarantine_table(chunk.file, row_ids[bad_idx].tolist(), checked.reasons, records))
        kinds.update(checked.kinds)
        keep = np.flatnonzero(~checked.bad)
        features = features.iloc[keep].reset_index(drop=True)
        key_cols = {k: v.take(pa.array(keep)) for k, v in key_cols.items()}
        row_ids = row_ids[keep]
    counts.rows_quarantined = counts.rows_in - len(row_ids)
    ids = pa.table(
        {
            SOURCE_FILE: pa.repeat(pa.scalar(chunk.file, pa.string()), len(row_ids)),
            SOURCE_ROW: pa.array(row_ids, pa.int64()),
            **{k: key_cols.get(k, pa.nulls(len(row_ids), pa.string())) for k in keys},  # missing: no row left
        }
    )
    quarantine = pa.concat_tables(parts) if parts else QUARANTINE_SCHEMA.empty_table()
    return Prepared(features=features, ids=ids, quarantine=quarantine, kinds=dict(kinds), counts=counts)


def unreadable_table(bad: Unreadable) -> pa.Table:
    """The quarantine entry of a file that could not be read."""
    reason = f"unreadable file: {bad.reason}"
    if bad.rows_read:
        reason = f"unreadable after row {bad.rows_read - 1}: {bad.reason}"
    return quarantine_table(bad.file, [None], [reason], [""])


def score_tables(
    model: BatchModel, ids: pa.Table, prediction: Prediction, scored_at: datetime
) -> tuple[pa.Table, pa.Table]:
    """The scores of a prepared chunk, and the quarantine rows of those the model refused."""
    if model.classes and prediction.proba.shape[1] != len(model.classes):
        raise ScoringError(
            f"the model returned {prediction.proba.shape[1]} probabilities for {len(model.classes)} classes"
        )
    refused = QUARANTINE_SCHEMA.empty_table()
    if prediction.refused:
        idx = np.fromiter(sorted(prediction.refused), dtype=np.int64)
        gone = ids.take(pa.array(idx))
        refused = quarantine_table(
            gone.column(SOURCE_FILE)[0].as_py(),
            gone.column(SOURCE_ROW).to_pylist(),
            [prediction.refused[int(i)] for i in idx],
            _records(gone),
        )
        ids = ids.take(pa.array(np.setdiff1d(np.arange(ids.num_rows), idx)))
    n = ids.num_rows
    cols: dict[str, Any] = {name: ids.column(name) for name in ids.column_names}
    cols["prediction"] = pa.array(prediction.labels, model.prediction_type)
    for i, name in enumerate(model.proba_columns):
        cols[name] = pa.array(prediction.proba[:, i])
    cols["model_name"] = pa.repeat(pa.scalar(model.name, pa.string()), n)
    cols["model_version"] = pa.repeat(pa.scalar(model.version, pa.string()), n)
    cols["scored_at"] = pa.repeat(pa.scalar(scored_at, pa.timestamp("us", "UTC")), n)
    return pa.table(cols), refused


# --- outputs ------------------------------------------------------------------------------------------------


class OutputPaths(BaseModel):
    """Where a job writes: the scores, the quarantine (same format), the summary and the drift report."""

    output: str
    quarantine: str
    summary: str
    drift_json: str
    drift_markdown: str

    @classmethod
    def beside(cls, output: str) -> OutputPaths:
        table_format(output)
        name = output.rstrip("/").rsplit("/", 1)[-1]
        stem, _, suffix = name.rpartition(".")
        return cls(
            output=output,
            quarantine=sibling(output, f"{stem}.quarantine.{suffix}"),
            summary=sibling(output, f"{stem}.summary.json"),
            drift_json=sibling(output, f"{stem}.drift.json"),
            drift_markdown=sibling(output, f"{stem}.drift.md"),
        )

    def all(self) -> list[str]:
        return [self.output, self.quarantine, self.summary, self.drift_json, self.drift_markdown]

    def remove_stale_temporaries(self) -> None:
        """Delete what a killed earlier run of the same job left beside its outputs."""
        for path in self.all():
            remove_stale_temporaries(path)


class TableWriter:
    """Streams tables of one schema to an output stream, as Parquet or CSV; closes the stream when closed.
    ``dictionary``: the columns Parquet dictionary-encodes (default: every column, Arrow's default)."""

    def __init__(self, sink: Any, fmt: str, schema: pa.Schema, dictionary: list[str] | None = None) -> None:
        self.schema, self.rows = schema, 0
        self._sink = sink
        if fmt == "csv":
            self._writer: Any = pacsv.CSVWriter(self._sink, schema)
        else:
            encode: list[str] | bool = True if dictionary is None else dictionary
            self._writer = pq.ParquetWriter(self._sink, schema, use_dictionary=encode)

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table.cast(self.schema))
            self.rows += table.num_rows

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._sink.close()


# --- the end of a run ---------------------------------------------------------------------------------------


class UnreadableFile(BaseModel):
    """An input file that could not be read, and why."""

    file: str
    reason: str
    rows_read: int


class ScoreSummary(BaseModel):
    """What a scoring run did: written as ``<output stem>.summary.json``, last, so that its presence means the
    outputs beside it are complete. ``rows_in = rows_scored + rows_quarantined``; files that could not be read
    at all are counted apart (``files_unreadable``), each with one quarantine entry."""

    model_uri: str
    model_name: str
    model_version: str
    runtime: str
    engine: str
    engine_settings: dict[str, Any]
    input: str
    input_files: list[str]
    files_ignored: list[str]
    files_unreadable: int
    unreadable_files: list[UnreadableFile]
    rows_in: int
    rows_scored: int
    rows_quarantined: int
    counts_add_up: bool
    quarantine_reasons: dict[str, int]
    drifted_features: list[str]
    psi_threshold: float
    scored_at: datetime
    startup_seconds: float = Field(description="Model download and load, worker start.")
    wall_seconds: float = Field(description="The whole job, start-up included.")
    rows_per_second_after_startup: float = Field(
        description="rows_in / (wall_seconds - startup_seconds): reading, scoring, stopping the workers, "
        "writing the outputs and the drift report (for a small input, mostly the fixed cost of finishing)."
    )
    rows_per_second_with_startup: float = Field(description="rows_in / wall_seconds: start-up included.")
    outputs: OutputPaths


class RunResult(_Typed):
    """What an engine hands to :func:`finish`: counts, reasons, drift counts, unreadable files, and the staged
    scores and quarantine (not yet under their final names)."""

    counts: Counts
    kinds: dict[str, int]
    drift: DriftCounts
    unreadable: list[UnreadableFile]
    written: int
    staged: list[Staged]
    engine_settings: dict[str, Any]


def check_counts(counts: Counts, written: int) -> None:
    """Refuse to publish a run whose counts do not add up: in = scored + quarantined, and scored = written.

    Raises:
        ScoringError: a row went missing somewhere.
    """
    if counts.rows_in != counts.rows_scored + counts.rows_quarantined:
        raise ScoringError(f"rows do not add up: {counts}")
    if written != counts.rows_scored:
        raise ScoringError(f"{written} rows written but {counts.rows_scored} scored")


def _write_staged(text: str, dest: str) -> Staged:
    out = Staged(dest)
    try:
        with out.open() as fh:
            fh.write(text.encode())
    except BaseException:
        out.abort()
        raise
    return out


def finish(
    options: ScoreOptions,
    model: BatchModel,
    files: list[str],
    ignored: list[str],
    result: RunResult,
    scored_at: datetime,
    started: float,
    startup: float,
) -> ScoreSummary:
    """Check the counts, write the drift report, give every output its final name and the summary last.

    The previous summary goes first, so that no summary ever vouches for a mix of old and new outputs.

    Raises:
        ScoringError: the counts do not add up (nothing is published).
    """
    paths = OutputPaths.beside(options.output)
    staged = list(result.staged)
    try:
        check_counts(result.counts, result.written)
        acc = DriftAccumulator(model.reference)
        acc.add(result.drift)
        report: DriftReport = acc.report(options.psi_threshold)
        title = f"Drift report: {model.name} v{model.version} on {options.input}"
        staged.append(
            _write_staged(
                json.dumps(report.model_dump(mode="json", exclude_none=True), indent=2) + "\n",
                paths.drift_json,
            )
        )
        staged.append(_write_staged(to_markdown(report, title), paths.drift_markdown))
        wall = time.monotonic() - started
        summary = ScoreSummary(
            model_uri=model.uri,
            model_name=model.name,
            model_version=model.version,
            runtime=model.runtime,
            engine=options.engine,
            engine_settings=result.engine_settings,
            input=options.input,
            input_files=files,
            files_ignored=ignored,
            files_unreadable=len(result.unreadable),
            unreadable_files=result.unreadable,
            **result.counts.model_dump(),
            counts_add_up=True,
            quarantine_reasons=dict(Counter(result.kinds).most_common(20)),
            drifted_features=report.drifted,
            psi_threshold=options.psi_threshold,
            scored_at=scored_at,
            startup_seconds=round(startup, 3),
            wall_seconds=round(wall, 3),
            rows_per_second_after_startup=round(result.counts.rows_in / max(wall - startup, 1e-9), 1),
            rows_per_second_with_startup=round(result.counts.rows_in / max(wall, 1e-9), 1),
            outputs=paths,
        )
        summary_file = _write_staged(summary.model_dump_json(indent=2) + "\n", paths.summary)
    except BaseException:
        for s in staged:
            s.abort()
        raise
    remove(paths.summary)
    for s in staged:
        s.commit()
    summary_file.commit()
    log.info(
        "score (%s): %d rows in, %d scored, %d quarantined, %d unreadable file(s) -> %s (drifted: %s); "
        "%.2fs in all, start-up %.2fs: %s rows/s after start-up (until the outputs are written), "
        "%s rows/s including start-up",
        options.engine,
        summary.rows_in,
        summary.rows_scored,
        summary.rows_quarantined,
        summary.files_unreadable,
        paths.output,
        ", ".join(report.drifted) or "none",
        summary.wall_seconds,
        summary.startup_seconds,
        f"{summary.rows_per_second_after_startup:,.0f}",
        f"{summary.rows_per_second_with_startup:,.0f}",
    )
    return summary
