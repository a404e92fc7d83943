"""Batch scoring: stream CSV/Parquet inputs through a model in chunks with constant memory, quarantine rows
that fail the model's signature, and write predictions, a drift report and a run summary atomically."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlgate.drift import DEFAULT_PSI_THRESHOLD, DriftAccumulator, to_markdown
from mlgate.io import DataSourceError, table_format, write_json, write_text
from mlgate.modelio import (
    Column,
    ModelLoadError,
    folder_identity,
    load_pipeline,
    read_mlmodel,
    signature_columns,
)

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 100_000
CSV_BLOCK_BYTES = 2 << 20  # the CSV reader keeps up to 32 blocks ahead: this bounds memory; a line must fit
CSV_NULLS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
SOURCE_FILE, SOURCE_ROW = "_source_file", "_source_row"
REASON, RECORD = "_quarantine_reason", "_record"
QUARANTINE_SCHEMA = pa.schema(
    [(SOURCE_FILE, pa.string()), (SOURCE_ROW, pa.int64()), (REASON, pa.string()), (RECORD, pa.string())]
)


class ScoringError(RuntimeError):
    """The job cannot produce a complete, consistent result (not a bad row: those are quarantined)."""


@dataclass(frozen=True)
class BatchModel:
    """A model resolved to a local MLflow model folder, with what scoring needs from its metadata."""

    uri: str
    path: Path
    name: str
    version: str
    inputs: tuple[Column, ...]
    classes: tuple[str, ...]
    reference: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def proba_columns(self) -> list[str]:
        return [f"proba_{c}" for c in self.classes]


# --- the model -------------------------------------------------------------------------------------------


def load_batch_model(uri: str, workdir: Path) -> BatchModel:
    """Resolve a model URI (registry URI, any MLflow URI, or a local model folder) to a local folder.

    Raises:
        ScoringError: the folder is not an MLflow scikit-learn model with an input signature.
    """
    local = Path(uri.removeprefix("file://"))
    if local.is_dir():
        path = local
    else:  # pins an alias to its version before downloading, so the version reported is the one scored
        from mlgate.serving.bundle import model_bundle

        path = workdir / "model"
        model_bundle(uri, path)
    try:
        mlmodel = read_mlmodel(path)
        inputs = tuple(signature_columns(mlmodel))
    except ModelLoadError as exc:
        raise ScoringError(f"{uri}: {exc}") from None
    meta = (mlmodel.get("metadata") or {}).get("mlgate") or {}
    name, version = _name_version(path, mlmodel)
    return BatchModel(
        uri=uri,
        path=path,
        name=name,
        version=version,
        inputs=inputs,
        classes=tuple(str(c) for c in meta.get("classes") or []),
        reference=meta.get("reference_stats") or {},
    )


def _name_version(path: Path, mlmodel: dict[str, Any]) -> tuple[str, str]:
    """Registered name and version as the folder records them, else the environment, else the model id."""
    recorded = folder_identity(path)
    name = recorded["name"] or os.environ.get("MLGATE_MODEL_NAME") or mlmodel.get("model_id") or path.name
    version = recorded["version"] or os.environ.get("MLGATE_MODEL_VERSION") or "unknown"
    return str(name), str(version)


# --- prediction (runs in worker processes) --------------------------------------------------------------

_WORKER_MODEL: Any = None


def _init_worker(model_path: str) -> None:
    """Load the model once per worker process (a skops model without importing MLflow)."""
    global _WORKER_MODEL
    _WORKER_MODEL = load_pipeline(model_path)


def _worker_modules(_: int) -> list[str]:
    """The top-level modules a worker process has imported (to check that it stays light)."""
    return sorted({name.partition(".")[0] for name in sys.modules})


def _ready(_: int) -> bool:
    """A no-op task: returns once the worker's model is loaded."""
    return _WORKER_MODEL is not None


def _predict(features: pd.DataFrame, check: bool, use_predict: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """Class probabilities and predicted labels of one chunk.

    The label is the most probable class (what ``predict`` computes for forests, boosting and linear models),
    so the model runs once; ``check`` compares with ``predict`` and ``use_predict`` calls it for models whose
    ``predict`` disagrees.
    """
    model = _WORKER_MODEL
    proba = np.asarray(model.predict_proba(features), dtype=np.float64)
    labels = np.asarray(model.classes_)[np.argmax(proba, axis=1)]
    agree = True
    if check or use_predict:
        predicted = np.asarray(model.predict(features))
        agree = bool(np.array_equal(predicted.astype(str), labels.astype(str)))
        labels = predicted
    return proba, labels.astype(str), agree


class _Predictor:
    """A pool of worker processes, each holding the model, with a bounded number of chunks in flight."""

    def __init__(self, model: BatchModel, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            import multiprocessing

            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(str(model.path),),
            )
            # Start every worker and load the model now, so start-up is measured apart from scoring.
            list(self._pool.map(_ready, range(workers)))
        else:
            _init_worker(str(model.path))
        self.use_predict: bool | None = None  # decided on the first chunk

    def submit(self, features: pd.DataFrame) -> Future | tuple[np.ndarray, np.ndarray, bool]:
        check = self.use_predict is None
        if self._pool is None:
            result = _predict(features, check, bool(self.use_predict))
        else:
            future = self._pool.submit(_predict, features, check, bool(self.use_predict))
            if not check:
                return future
            result = future.result()
        if check:
            self.use_predict = not result[2]
            if self.use_predict:
                log.info("score: the model's predict disagrees with its most probable class; calling both")
        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


# --- reading ----------------------------------------------------------------------------------------------


def _filesystem(source: str) -> tuple[pafs.FileSystem, str]:
    if "://" in source and not source.startswith("file://"):
        return pafs.FileSystem.from_uri(source)
    return pafs.LocalFileSystem(), os.path.abspath(source.removeprefix("file://"))


def _is_table(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return not name.startswith((".", "_")) and Path(name).suffix.lower() in (".csv", ".parquet", ".pq")


def list_inputs(source: str) -> tuple[pafs.FileSystem, list[str]]:
    """The files an input names: one file, every CSV/Parquet file under a folder, or the matches of a glob.

    Raises:
        DataSourceError: nothing matches, a file is empty, or a file is not CSV/Parquet.
    """
    fs, path = _filesystem(source)
    if any(ch in path for ch in "*?["):
        parts = path.split("/")
        first = next(i for i, p in enumerate(parts) if any(ch in p for ch in "*?["))
        base = "/".join(parts[:first]) or "/"
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
        except (FileNotFoundError, OSError):
            infos = []
        files = sorted(
            i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path)
        )
        files = [f for f in files if not f.rsplit("/", 1)[-1].startswith((".", "_"))]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise DataSourceError(f"{source}: no such file or folder")
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            files = sorted(i.path for i in infos if i.type == pafs.FileType.File and _is_table(i.path))
        else:
            files = [path]
    if not files:
        raise DataSourceError(f"{source}: no CSV or Parquet files found")
    for f in files:
        table_format(f)
        if fs.get_file_info(f).size == 0:
            raise DataSourceError(f"{f}: the file is empty")
    return fs, files


def csv_header(fs: pafs.FileSystem, file: str) -> list[str]:
    """The column names of a CSV file (its first line)."""
    fmt = ds.CsvFileFormat(parse_options=pacsv.ParseOptions(invalid_row_handler=lambda _row: "skip"))
    return ds.dataset(file, filesystem=fs, format=fmt).schema.names


@dataclass
class _Chunk:
    """A slice of one input file: its rows (needed columns only) and the malformed lines found so far."""

    file: str
    first_row: int
    table: pa.Table
    malformed: list[tuple[int | None, str]]


def _rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Group record batches into tables of about ``rows`` rows."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count >= rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def _file_batches(
    fs: pafs.FileSystem, file: str, columns: list[str], malformed: list[tuple[int | None, str]]
) -> Iterator[pa.RecordBatch]:
    """The ``columns`` present in one file, batch by batch, read as a stream (the readers keep a bounded
    number of blocks ahead, unlike a dataset scan, which reads a whole file ahead of a slow consumer)."""
    if table_format(file) != "csv":
        with fs.open_input_file(file) as handle:
            parquet = pq.ParquetFile(handle)
            present = [c for c in columns if c in parquet.schema_arrow.names]
            yield from parquet.iter_batches(batch_size=DEFAULT_CHUNK_ROWS, columns=present)
        return

    def on_invalid(row: Any) -> str:
        found = f"found {row.actual_columns}: {row.text[:500]!r}"
        malformed.append((row.number, f"expected {row.expected_columns} fields, {found}"))
        return "skip"

    header = csv_header(fs, file)
    present = [c for c in columns if c in header]
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in header},
        include_columns=present or header[:1],  # an empty list would mean every column
        null_values=CSV_NULLS,
        strings_can_be_null=True,
    )
    with fs.open_input_stream(file) as stream:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=convert,
        )
        for batch in reader:
            yield batch if present else batch.select([])


def read_chunks(
    fs: pafs.FileSystem, files: list[str], columns: list[str], chunk_rows: int
) -> Iterator[_Chunk]:
    """Stream the ``columns`` present in each file in chunks; CSV values stay text (converted per row later),
    lines with the wrong number of fields are collected instead of failing the read."""
    for file in files:
        malformed: list[tuple[int | None, str]] = []
        start = 0
        try:
            for table in _rechunk(_file_batches(fs, file, columns, malformed), chunk_rows):
                yield _Chunk(file, start, table, [])
                start += table.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataSourceError(f"{file}: cannot read as {table_format(file)}: {exc}") from None
        if malformed:
            yield _Chunk(
                file,
                start,
                pa.table({c: pa.array([], pa.string()) for c in columns}),
                sorted(malformed, key=lambda m: (m[0] is None, m[0] or 0)),
            )


# --- checking rows against the signature -----------------------------------------------------------------


def _to_float(arr: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """A column as float64 (NaN for null), the rows that are not numbers, or why the whole column fails."""
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), None, None
    if pa.types.is_dictionary(t):
        arr = pc.cast(arr, t.value_type)
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        try:
            return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), None, None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raw = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)
            values = pd.to_numeric(raw, errors="coerce").astype(float)
            bad = (values.isna() & raw.notna()).to_numpy()
            return values.to_numpy(), bad, None
    return np.full(len(arr), np.nan), None, f"has type {t}, expected a number"


def _to_text(arr: pa.ChunkedArray) -> tuple[pd.Series | None, str | None]:
    t = arr.type
    if pa.types.is_dictionary(t):
        arr, t = pc.cast(arr, t.value_type), t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        values = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)
        return values.where(values.notna(), np.nan), None
    return None, f"has type {t}, expected a string"


def check_chunk(table: pa.Table, inputs: tuple[Column, ...]) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Convert a chunk to the model's input types, vectorised.

    Returns:
        The typed features of every row, a mask of the rows failing the signature, one reason per failing row.
    """
    n = table.num_rows
    bad = np.zeros(n, dtype=bool)
    problems: list[tuple[np.ndarray, str | None, str]] = []  # (row mask, fixed reason or None, column)
    columns: dict[str, Any] = {}
    for col in inputs:
        if col.name not in table.column_names:
            problems.append((np.ones(n, dtype=bool), f"{col.name}: missing column", col.name))
            columns[col.name] = np.full(n, np.nan)
            continue
        arr = table.column(col.name)
        if col.numeric:
            values, unparsable, whole = _to_float(arr)
            if unparsable is not None and unparsable.any():
                problems.append((unparsable, None, col.name))
        else:
            values, whole = _to_text(arr)
            if values is None:
                values = np.full(n, np.nan)
        if whole:
            problems.append((np.ones(n, dtype=bool), f"{col.name}: {whole}", col.name))
        elif col.required:
            nulls = arr.is_null().to_numpy(zero_copy_only=False)
            if nulls.any():
                problems.append((nulls, f"{col.name}: null but required", col.name))
        columns[col.name] = values
    for mask, _, _ in problems:
        bad |= mask
    reasons: list[str] = []
    if bad.any():
        bad_idx = np.flatnonzero(bad)
        per_row: dict[int, list[str]] = {int(i): [] for i in bad_idx}
        for mask, fixed, name in problems:
            for i in np.flatnonzero(mask):
                if fixed is None:
                    value = table.column(name)[int(i)].as_py()
                    per_row[int(i)].append(f"{name}: {value!r} is not a number")
                else:
                    per_row[int(i)].append(fixed)
        reasons = ["; ".join(per_row[int(i)]) for i in bad_idx]
    return pd.DataFrame(columns), bad, reasons


# --- writing ----------------------------------------------------------------------------------------------


class _AtomicTableWriter:
    """Streams record batches to a temporary file next to ``path``; ``commit`` renames it into place."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema, self.format = path, schema, table_format(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        if self.format == "csv":
            self._writer: Any = pacsv.CSVWriter(str(self.tmp), schema)
        else:
            self._writer = pq.ParquetWriter(str(self.tmp), schema)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table.cast(self.schema))
            self.rows += table.num_rows

    def commit(self) -> Path:
        self._writer.close()
        self.tmp.chmod(0o644)  # mkstemp creates 0600; scores are meant to be read by other users/jobs
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def output_paths(output: str | Path) -> dict[str, Path]:
    """Where a job writes: the scores, the quarantine (same format), the summary and the drift report."""
    out = Path(output)
    table_format(out)
    stem, suffix = out.with_suffix(""), out.suffix
    return {
        "output": out,
        "quarantine": Path(f"{stem}.quarantine{suffix}"),
        "summary": Path(f"{stem}.summary.json"),
        "drift_json": Path(f"{stem}.drift.json"),
        "drift_markdown": Path(f"{stem}.drift.md"),
    }


def remove_stale_temporaries(paths: dict[str, Path]) -> None:
    """Delete temporary files a killed earlier run of the same job left next to its outputs."""
    for path in paths.values():
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)


class _Progress:
    """Rows and rows/s: rewritten in place on a terminal, a log line every ``every`` seconds otherwise."""

    def __init__(self, every: float = 10.0) -> None:
        self.tty = sys.stderr.isatty()
        self.every = 0.5 if self.tty else every
        self.start = self.last = time.monotonic()

    def update(self, rows: int, quarantined: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        rate = rows / max(now - self.start, 1e-9)
        text = f"scored {rows:,} rows, quarantined {quarantined:,} ({rate:,.0f} rows/s)"
        if self.tty:
            sys.stderr.write(f"\r{text}" + ("\n" if force else ""))
            sys.stderr.flush()
        else:
            log.info("score: %s", text)


# --- the job ----------------------------------------------------------------------------------------------


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _quarantine_table(file: str, rows: np.ndarray, reasons: list[str], records: list[str]) -> pa.Table:
    return pa.table(
        {
            SOURCE_FILE: pa.array([file] * len(reasons), pa.string()),
            SOURCE_ROW: pa.array(rows, pa.int64()),
            REASON: pa.array(reasons, pa.string()),
            RECORD: pa.array(records, pa.string()),
        },
        schema=QUARANTINE_SCHEMA,
    )


def _reason_kind(reason: str) -> str:
    """A row's reason without its value, for counting: ``x: 'abc' is not a number`` -> ``x: not a number``."""
    column, _, what = reason.partition(": ")
    return f"{column}: not a number" if what.endswith("is not a number") else reason


def _output_schema(model: BatchModel, keys: list[str]) -> pa.Schema:
    fields = [(SOURCE_FILE, pa.string()), (SOURCE_ROW, pa.int64())]
    fields += [(k, pa.string()) for k in keys]
    fields += [("prediction", pa.string())] + [(c, pa.float64()) for c in model.proba_columns]
    fields += [
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("scored_at", pa.timestamp("us", "UTC")),
    ]
    return pa.schema(fields)


def _text(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    return arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())


def score(
    model_uri: str,
    input_path: str,
    output_path: str,
    keys: list[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    workers: int | None = None,
    drift_threshold: float = DEFAULT_PSI_THRESHOLD,
    engine: str = "local",
    spark_master: str = "local[*]",
) -> dict[str, Any]:
    """Score every row of ``input_path`` with the model; quarantine the rows that fail its signature.

    Args:
        model_uri: ``models:/name@alias``, any MLflow model URI, or a local MLflow model folder.
        input_path: a CSV or Parquet file, a folder of them, or a glob; local or a pyarrow filesystem URI.
        output_path: the scores, ``.parquet`` or ``.csv``; quarantine, summary and drift report go next to it.
        keys: input columns copied to the output (as text) to join the scores back.
        chunk_rows: rows per chunk; memory grows with this and ``workers``, not with the input.
        workers: prediction processes (default: one per available core; 0 predicts in this process).
        drift_threshold: PSI above which a feature counts as drifted.
        engine: ``local`` (this machine, a process pool) or ``spark`` (``mlflow.pyfunc.spark_udf``).
        spark_master: the Spark master URL for the spark engine.

    Returns:
        The run summary (also written as ``<output stem>.summary.json``).

    Raises:
        DataSourceError: the input is missing, empty or not CSV/Parquet.
        ScoringError: the counts do not add up, or the model cannot be used.
    """
    if engine == "spark":
        from mlgate.spark import score_spark

        return score_spark(model_uri, input_path, output_path, keys, spark_master, drift_threshold)
    if engine != "local":
        raise ValueError(f"engine must be local or spark, got {engine!r}")
    started = time.monotonic()
    scored_at = datetime.now(timezone.utc).replace(microsecond=0)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if "://" in str(output_path) and not str(output_path).startswith("file://"):
        raise ValueError(f"{output_path}: the output must be a local path (write locally, then copy)")
    paths = output_paths(str(output_path).removeprefix("file://"))
    keys = list(keys or [])
    fs, files = list_inputs(input_path)
    workers = _default_workers() if workers is None else workers
    with tempfile.TemporaryDirectory(prefix="mlgate-score-") as workdir:
        model = load_batch_model(model_uri, Path(workdir))
        predictor = _Predictor(model, workers)
        startup = time.monotonic() - started
        log.info(
            "score: model %s version %s (%s), %d input file(s), %d worker(s), start-up %.2fs",
            model.name,
            model.version,
            model.uri,
            len(files),
            workers,
            startup,
        )
        remove_stale_temporaries(paths)
        writers = {
            "output": _AtomicTableWriter(paths["output"], _output_schema(model, keys)),
            "quarantine": _AtomicTableWriter(paths["quarantine"], QUARANTINE_SCHEMA),
        }
        try:
            counts, drift, reasons = _run(model, predictor, fs, files, keys, chunk_rows, scored_at, writers)
            predictor.close()
            report = drift.report(drift_threshold)
            check_counts(input_path, counts, written=writers["output"].rows)
            for w in writers.values():
                w.commit()
        except BaseException:
            predictor.close()
            for w in writers.values():
                w.abort()
            raise
    run = {"engine": "local", "workers": workers, "chunk_rows": chunk_rows}
    run.update(input=input_path, input_files=files, scored_at=scored_at, startup=startup, started=started)
    return finish_run(model, run, counts, dict(reasons.most_common(20)), report, drift_threshold, paths)


def check_counts(input_path: str, counts: dict[str, int], written: int) -> None:
    """Refuse to publish a run whose counts do not add up: in = scored + quarantined, and scored = written.

    Raises:
        DataSourceError: there were no rows at all.
        ScoringError: a row went missing somewhere.
    """
    if counts["rows_in"] == 0:
        raise DataSourceError(f"{input_path}: no rows to score")
    if counts["rows_in"] != counts["rows_scored"] + counts["rows_quarantined"]:
        raise ScoringError(f"rows do not add up: {counts}")
    if written != counts["rows_scored"]:
        raise ScoringError(f"{written} rows written but {counts['rows_scored']} scored")


def finish_run(
    model: BatchModel,
    run: dict[str, Any],
    counts: dict[str, int],
    reasons: dict[str, int],
    report: dict[str, Any],
    drift_threshold: float,
    paths: dict[str, Path],
) -> dict[str, Any]:
    """Write the drift report and the run summary (last, so its presence means the run completed); return it.

    ``run`` holds the engine's own facts; ``input``, ``input_files``, ``scored_at`` (datetime), ``started``
    and ``startup`` (monotonic seconds) are required.
    """
    started, startup = run.pop("started"), run.pop("startup")
    wall = time.monotonic() - started
    summary = {
        "model_uri": model.uri,
        "model_name": model.name,
        "model_version": model.version,
        **run,
        **counts,
        "counts_add_up": True,
        "quarantine_reasons": reasons,
        "drifted_features": report["drifted"],
        "psi_threshold": drift_threshold,
        "scored_at": run["scored_at"].isoformat(),
        "startup_seconds": round(startup, 3),
        "wall_seconds": round(wall, 3),
        "rows_per_second": round(counts["rows_in"] / max(wall - startup, 1e-9), 1),
        "outputs": {k: str(v) for k, v in paths.items()},
    }
    write_json(report, paths["drift_json"])
    title = f"Drift report: {model.name} v{model.version} on {run['input']}"
    write_text(to_markdown(report, title), paths["drift_markdown"])
    write_json(summary, paths["summary"])
    log.info(
        "score (%s): %d rows in, %d scored, %d quarantined -> %s (drifted: %s)",
        run["engine"],
        counts["rows_in"],
        counts["rows_scored"],
        counts["rows_quarantined"],
        paths["output"],
        ", ".join(report["drifted"]) or "none",
    )
    return summary


def _run(
    model: BatchModel,
    predictor: _Predictor,
    fs: pafs.FileSystem,
    files: list[str],
    keys: list[str],
    chunk_rows: int,
    scored_at: datetime,
    writers: dict[str, _AtomicTableWriter],
) -> tuple[dict[str, int], DriftAccumulator, Counter[str]]:
    """The streaming loop: read, check, predict in the pool (bounded in flight), write in input order."""
    needed = list(dict.fromkeys([*keys, *(c.name for c in model.inputs)]))
    drift = DriftAccumulator(model.reference)
    counts = {"rows_in": 0, "rows_scored": 0, "rows_quarantined": 0}
    reasons: Counter[str] = Counter()
    pending: deque[tuple[Any, pa.Table]] = deque()
    max_in_flight = max(2 * predictor.workers, 1)
    progress = _Progress()
    constant = {
        "model_name": pa.scalar(model.name, pa.string()),
        "model_version": pa.scalar(model.version, pa.string()),
        "scored_at": pa.scalar(scored_at, pa.timestamp("us", "UTC")),
    }

    def write_scores(result: Any, ids: pa.Table) -> None:
        proba, labels, _ = result.result() if isinstance(result, Future) else result
        if model.classes and proba.shape[1] != len(model.classes):
            raise ScoringError(
                f"the model returned {proba.shape[1]} probabilities for {len(model.classes)} classes"
            )
        n = ids.num_rows
        cols = {name: ids.column(name) for name in ids.column_names}
        cols["prediction"] = pa.array(labels, pa.string())
        for i, name in enumerate(model.proba_columns):
            cols[name] = pa.array(proba[:, i])
        for name, value in constant.items():
            cols[name] = pa.repeat(value, n)
        writers["output"].write(pa.table(cols))
        counts["rows_scored"] += n

    for chunk in read_chunks(fs, files, needed, chunk_rows):
        table, n = chunk.table, chunk.table.num_rows
        missing_keys = [k for k in keys if k not in table.column_names]
        if missing_keys and n:
            raise DataSourceError(f"{chunk.file}: key column(s) {missing_keys} not found")
        row_ids = np.arange(chunk.first_row, chunk.first_row + n, dtype=np.int64)
        if chunk.malformed:
            lines = [m[0] for m in chunk.malformed]
            texts = [
                f"line {ln}: malformed, {why}" if ln is not None and ln >= 0 else f"malformed line, {why}"
                for ln, why in chunk.malformed
            ]
            writers["quarantine"].write(
                _quarantine_table(chunk.file, np.full(len(lines), None), texts, [""] * len(lines))
            )
            counts["rows_in"] += len(lines)
            counts["rows_quarantined"] += len(lines)
            reasons["malformed line"] += len(lines)
        if n == 0:
            continue
        counts["rows_in"] += n
        features, bad, why = check_chunk(table, model.inputs)
        if bad.any():
            bad_idx = np.flatnonzero(bad)
            bad_rows = table.take(pa.array(bad_idx))
            records = [json.dumps(r, default=str, sort_keys=True) for r in bad_rows.to_pylist()]
            writers["quarantine"].write(_quarantine_table(chunk.file, row_ids[bad_idx], why, records))
            counts["rows_quarantined"] += len(bad_idx)
            reasons.update(_reason_kind(part) for r in why for part in r.split("; "))
            keep = np.flatnonzero(~bad)
            features = features.iloc[keep].reset_index(drop=True)
            table = table.take(pa.array(keep))
            row_ids = row_ids[keep]
        if not len(features):
            continue
        drift.update(features)
        ids = pa.table(
            {
                SOURCE_FILE: pa.repeat(pa.scalar(chunk.file, pa.string()), len(row_ids)),
                SOURCE_ROW: row_ids,
                **{k: _text(table.column(k)) for k in keys},
            }
        )
        pending.append((predictor.submit(features), ids))
        while len(pending) >= max_in_flight:
            write_scores(*pending.popleft())
            progress.update(counts["rows_scored"], counts["rows_quarantined"])
    while pending:
        write_scores(*pending.popleft())
    progress.update(counts["rows_scored"], counts["rows_quarantined"], force=True)
    return counts, drift, reasons
