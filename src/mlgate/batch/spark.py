"""The Spark engine: the local engine's reading, checks, model and outputs, run as Spark tasks on a cluster.

Each task scores one input file (or a run of a Parquet file's row groups) in the executor's Python worker
and writes its part of the scores and of the quarantine into the staged output folders; the driver plans the
tasks, adds up their counts and drift counts, and publishes. Inputs and outputs are read and written with
pyarrow, so ``s3://`` works without Hadoop's S3 connector; on a cluster of several machines both must be on
``s3://`` (or a filesystem every machine mounts), and mlgate must be installed on the workers.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from mlgate.batch.job import (
    QUARANTINE_SCHEMA,
    BatchModel,
    Counts,
    OutputPaths,
    RunResult,
    Scorer,
    ScoreSummary,
    TableWriter,
    UnreadableFile,
    finish,
    load_batch_model,
    prepare,
    score_tables,
    unreadable_table,
)
from mlgate.batch.options import ScoreOptions
from mlgate.batch.read import Unreadable, list_inputs, read_file
from mlgate.drift import DriftAccumulator, DriftCounts
from mlgate.io import S3_ENDPOINT_ENV, Staged, filesystem, table_format
from mlgate.stack import LOOPBACK

log = logging.getLogger(__name__)

# Passed on to the executors when set here: where the object store is and how to sign in to it.
FORWARDED_ENV = (
    *S3_ENDPOINT_ENV,
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


class _Typed(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)


class Task(_Typed):
    """One Spark task: a file, or some consecutive row groups of a Parquet file."""

    index: int
    file: str
    row_groups: list[int] | None = None


class TaskJob(_Typed):
    """What every task of a job needs: the options, the model (shipped to the executors by name), where the
    parts go, and the time stamped on the scores."""

    options: ScoreOptions
    model: BatchModel
    model_file: str
    scores_dir: str
    quarantine_dir: str
    scored_at: datetime


class TaskResult(BaseModel):
    """What one task did: its counts, reasons, drift counts, unreadable file, and the parts it wrote."""

    index: int
    counts: Counts
    kinds: dict[str, int]
    drift: DriftCounts
    unreadable: list[UnreadableFile]
    written: int
    parts: list[str]


def plan_tasks(fs: pafs.FileSystem, files: list[str], chunk_rows: int) -> list[Task]:
    """One task per CSV file; Parquet files split into runs of row groups of at least ``chunk_rows`` rows."""
    tasks: list[Task] = []
    for file in files:
        groups: list[list[int]] = []
        if table_format(file) == "parquet":
            try:
                with fs.open_input_file(file) as handle:
                    meta = pq.ParquetFile(handle).metadata
                rows = 0
                for i in range(meta.num_row_groups):
                    if not groups or rows >= chunk_rows:
                        groups.append([])
                        rows = 0
                    groups[-1].append(i)
                    rows += meta.row_group(i).num_rows
            except (OSError, ValueError):  # unreadable: one task, which reports it
                groups = []
        for run in groups if len(groups) > 1 else [None]:
            tasks.append(Task(index=len(tasks), file=file, row_groups=run))
    return tasks


@functools.cache
def _scorer(path: str, runtime: str) -> Scorer:
    """The model, loaded once per executor Python worker."""
    return Scorer(path, runtime)  # type: ignore[arg-type]


def run_task(task: Task, job: TaskJob, attempt: int = 0) -> TaskResult:
    """Score one task's rows into part files of the staged scores and quarantine (runs on an executor)."""
    from pyspark import SparkFiles

    options, model = job.options, job.model
    scorer = _scorer(SparkFiles.get(job.model_file), job.model.runtime)
    fs, _ = filesystem(options.input)
    fmt = table_format(options.output)
    name = f"part-{task.index:05d}-{attempt}.{fmt}"
    parts = [f"{job.scores_dir}/{name}", f"{job.quarantine_dir}/{name}"]
    counts, kinds = Counts(), Counter[str]()
    drift = DriftAccumulator(model.reference)
    unreadable: list[UnreadableFile] = []
    use_predict: bool | None = None
    writers = {
        "output": TableWriter(
            _open(parts[0]), fmt, model.output_schema(options.keys), model.repeated_columns()
        ),
        "quarantine": TableWriter(_open(parts[1]), fmt, QUARANTINE_SCHEMA),
    }
    try:
        for item in read_file(fs, task.file, model.needed(options.keys), options.chunk_rows, task.row_groups):
            if isinstance(item, Unreadable):
                writers["quarantine"].write(unreadable_table(item))
                unreadable.append(UnreadableFile(**item.model_dump()))
                continue
            prepared = prepare(item, model, options.keys)
            writers["quarantine"].write(prepared.quarantine)
            counts.add(prepared.counts)
            kinds.update(prepared.kinds)
            if not len(prepared.features):
                continue
            prediction = scorer.score(prepared.features, use_predict is None, bool(use_predict))
            use_predict = not prediction.agree if use_predict is None else use_predict
            scores, refused = score_tables(model, prepared.ids, prediction, job.scored_at)
            writers["output"].write(scores)
            writers["quarantine"].write(refused)
            counts.rows_scored += scores.num_rows
            counts.rows_quarantined += refused.num_rows
            if refused.num_rows:
                kinds["the model refused the row"] += refused.num_rows
            drift.add(prediction.drift)
    finally:
        for w in writers.values():
            w.close()
    return TaskResult(
        index=task.index,
        counts=counts,
        kinds=dict(kinds),
        drift=drift.counts(),
        unreadable=unreadable,
        written=writers["output"].rows,
        parts=parts,
    )


def _open(uri: str) -> Any:
    fs, path = filesystem(uri)
    return fs.open_output_stream(path)


def _run_partition(job: TaskJob, tasks: Any) -> Any:
    from pyspark import TaskContext

    attempt = TaskContext.get().attemptNumber() if TaskContext.get() else 0
    for task in tasks:
        yield run_task(task, job, attempt)


def session(master: str) -> Any:
    """The Spark session (an active one is reused). In local modes Spark stays on loopback unless
    ``SPARK_LOCAL_IP`` says otherwise; the executors run this Python and get ``FORWARDED_ENV``."""
    from pyspark.sql import SparkSession

    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName("mlgate-score")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
    )
    for name in FORWARDED_ENV:
        if os.environ.get(name):
            builder = builder.config(f"spark.executorEnv.{name}", os.environ[name])
    return builder.getOrCreate()


def _remove_other_parts(staged: Staged, keep: set[str]) -> None:
    """Delete part files of failed task attempts from a staged folder."""
    for info in staged.fs.get_file_info(pafs.FileSelector(staged.path, recursive=True)):
        if info.type == pafs.FileType.File and info.path.rsplit("/", 1)[-1] not in keep:
            staged.fs.delete_file(info.path)


def score_spark(options: ScoreOptions) -> ScoreSummary:
    """Score every row of the input with Spark; the scores and the quarantine are folders of part files
    (one per task, in input order), the summary and drift report the local engine's. See
    :func:`mlgate.batch.score`."""
    started = time.monotonic()
    scored_at = datetime.now(timezone.utc).replace(microsecond=0)
    inputs = list_inputs(options.input)
    paths = OutputPaths.beside(options.output)
    with tempfile.TemporaryDirectory(prefix="mlgate-spark-") as workdir:
        model = load_batch_model(options.model_uri, Path(workdir), options.runtime)
        # Shipped as an archive (unpacked on each executor), under a name of its own: a Spark context
        # refuses a second file of the same name.
        base = Path(workdir) / f"mlgate-model-{os.urandom(6).hex()}"
        shipped = Path(shutil.make_archive(str(base), "zip", root_dir=model.path))
        spark = session(options.spark_master)
        sc = spark.sparkContext
        sc.addArchive(str(shipped))
        tasks = plan_tasks(inputs.fs, inputs.files, options.chunk_rows)
        startup = time.monotonic() - started
        log.info(
            "score: model %s version %s (%s), %d input file(s) in %d task(s) on %s, start-up %.2fs",
            model.name,
            model.version,
            model.uri,
            len(inputs.files),
            len(tasks),
            sc.master,
            startup,
        )
        paths.remove_stale_temporaries()
        staged = [Staged(paths.output, folder=True), Staged(paths.quarantine, folder=True)]
        try:
            job = TaskJob(
                options=options,
                model=model,
                model_file=shipped.name,
                scores_dir=staged[0].uri,
                quarantine_dir=staged[1].uri,
                scored_at=scored_at,
            )
            rdd = sc.parallelize(tasks, len(tasks))
            results: list[TaskResult] = rdd.mapPartitions(functools.partial(_run_partition, job)).collect()
            keep = {p.rsplit("/", 1)[-1] for r in results for p in r.parts}
            for s in staged:
                _remove_other_parts(s, keep)
        except BaseException:
            for s in staged:
                s.abort()
            raise
    counts, kinds = Counts(), Counter[str]()
    drift = DriftAccumulator(model.reference)
    for r in sorted(results, key=lambda r: r.index):
        counts.add(r.counts)
        kinds.update(r.kinds)
        drift.add(r.drift)
    result = RunResult(
        counts=counts,
        kinds=dict(kinds),
        drift=drift.counts(),
        unreadable=[u for r in results for u in r.unreadable],
        written=sum(r.written for r in results),
        staged=staged,
        engine_settings={"spark_master": sc.master, "tasks": len(tasks), "chunk_rows": options.chunk_rows},
    )
    return finish(options, model, inputs.files, inputs.ignored, result, scored_at, started, startup)
