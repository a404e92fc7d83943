"""The local engine: this machine, a pool of workers (threads by default) sharing the model; chunks stream
from the reader through the pool, which checks, scores and builds their output tables, and are written in
input order, with a bounded number in flight, so memory does not grow with the input."""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from mlgate.batch.job import (
    QUARANTINE_SCHEMA,
    BatchModel,
    Counts,
    OutputPaths,
    RunResult,
    Scored,
    Scorer,
    ScoreSummary,
    TableWriter,
    UnreadableFile,
    finish,
    load_batch_model,
    score_chunk,
    unreadable_table,
)
from mlgate.batch.options import POOLS, ScoreOptions
from mlgate.batch.read import Chunk, Unreadable, list_inputs, read_file
from mlgate.drift import DriftAccumulator
from mlgate.io import Staged, table_format

log = logging.getLogger(__name__)

THREADS = POOLS[0]
PROGRESS_SECONDS = 10.0  # a progress line this often in logs (twice a second on a terminal)
PARENT_CHECK_SECONDS = 0.5  # how soon a worker notices that the job was killed

# --- the worker processes ---------------------------------------------------------------------------------


class _Job(NamedTuple):
    """What a worker needs to score a chunk besides the chunk: the model, its runtime, the keys, the time."""

    model: BatchModel
    scorer: Scorer
    keys: tuple[str, ...]
    scored_at: datetime


_JOB: _Job | None = None


def _exit_with(parent: int) -> None:
    """End this worker once its parent is gone (killed: nobody is left to shut the pool down)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _init_worker(
    model: BatchModel, keys: tuple[str, ...], scored_at: datetime, watch_parent: bool = True
) -> None:
    """Load the model once per worker process (a skops model without importing MLflow)."""
    global _JOB
    if watch_parent:
        threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    _JOB = _Job(model, Scorer(model.path, model.runtime), keys, scored_at)  # type: ignore[arg-type]


def _ready(_: int) -> bool:
    """A no-op task: returns once the worker's model is loaded."""
    return _JOB is not None


def worker_modules(_: int) -> list[str]:
    """The top-level modules a worker process has imported (to check that it stays light)."""
    return sorted({name.partition(".")[0] for name in sys.modules})


def _score(chunk: Chunk, check: bool, use_predict: bool) -> Scored:
    assert _JOB is not None  # nosec B101 - set by the pool's initializer
    return _score_with(_JOB, chunk, check, use_predict)


def _score_with(job: _Job, chunk: Chunk, check: bool, use_predict: bool) -> Scored:
    return score_chunk(chunk, job.model, job.scorer, job.keys, job.scored_at, check, use_predict)


class Predictor:
    """Where chunks are checked, predicted and made into output tables: threads sharing one model (the
    default: ONNX Runtime, scikit-learn's trees, numpy and Arrow release the GIL while they compute, and
    nothing is copied to another process and back); worker processes each holding the model
    (``pool="processes"``, for an estimator whose predict holds the GIL); or, with 0 workers, this thread.
    The reader and the writer stay in the caller's thread."""

    def __init__(
        self,
        model: BatchModel,
        workers: int,
        pool: str = THREADS,
        keys: tuple[str, ...] = (),
        scored_at: datetime | None = None,
    ) -> None:
        self.workers = workers
        scored_at = scored_at or datetime.now(timezone.utc).replace(microsecond=0)
        self._pool: ProcessPoolExecutor | ThreadPoolExecutor | None = None
        self._call: Callable[[Chunk, bool, bool], Scored] = _score
        self.kind = "processes" if workers > 0 else "in-process"
        if workers > 0 and pool == THREADS:
            job = _Job(model, Scorer(model.path, model.runtime), keys, scored_at)  # type: ignore[arg-type]
            self._call = functools.partial(_score_with, job)
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlgate-score")
            self.kind = "threads"
        elif workers > 0:
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(model, keys, scored_at),
            )
            # Start every worker and load the model now, so start-up is measured apart from scoring.
            list(self._pool.map(_ready, range(workers)))
        else:
            _init_worker(model, keys, scored_at, watch_parent=False)
        self.use_predict: bool | None = None  # decided on the first chunk the model scores

    def submit(self, chunk: Chunk) -> Future | Scored:
        """Score a chunk in the pool (a future), or here; until a chunk reaches the model, each is scored
        at once, checking whether to call predict."""
        check = self.use_predict is None
        if self._pool is None:
            result = self._call(chunk, check, bool(self.use_predict))
        else:
            future = self._pool.submit(self._call, chunk, check, bool(self.use_predict))
            if not check:
                return future
            result = future.result()
        if check and result.agree is not None:
            self.use_predict = not result.agree
            if self.use_predict:
                log.info("score: the model's predict disagrees with its most probable class; calling both")
        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class _Progress:
    """Rows and rows/s since scoring began (start-up excluded): rewritten in place on a terminal, a log line
    every ``PROGRESS_SECONDS`` otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.every = 0.5 if self.tty else PROGRESS_SECONDS
        self.start = self.last = time.monotonic()

    def update(self, counts: Counts, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        rate = counts.rows_scored / max(now - self.start, 1e-9)
        done, set_aside = counts.rows_scored, counts.rows_quarantined
        text = f"scored {done:,} rows, quarantined {set_aside:,} ({rate:,.0f} rows/s while scoring)"
        if self.tty:
            sys.stderr.write(f"\r{text}" + ("\n" if force else ""))
            sys.stderr.flush()
        else:
            log.info("score: %s", text)


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _stream(
    predictor: Predictor,
    fs: object,
    files: list[str],
    needed: list[str],
    chunk_rows: int,
    writers: dict[str, TableWriter],
    drift: DriftAccumulator,
) -> tuple[Counts, Counter[str], list[UnreadableFile]]:
    """The streaming loop: read here, score in the pool (bounded in flight), write here in input order."""
    counts, kinds = Counts(), Counter[str]()
    unreadable: list[UnreadableFile] = []
    pending: deque[Future | Scored] = deque()
    max_in_flight = max(2 * predictor.workers, 1)
    progress = _Progress()

    def write(result: Future | Scored) -> None:
        scored = result.result() if isinstance(result, Future) else result
        writers["output"].write(scored.scores)
        writers["quarantine"].write(scored.quarantine)
        counts.add(scored.counts)
        kinds.update(scored.kinds)
        drift.add(scored.drift)

    for file in files:
        for item in read_file(fs, file, needed, chunk_rows):
            if isinstance(item, Unreadable):
                while pending:  # what came before it goes first: the quarantine stays in input order
                    write(pending.popleft())
                log.warning("score: %s: %s", item.file, item.reason)
                writers["quarantine"].write(unreadable_table(item))
                unreadable.append(UnreadableFile(**item.model_dump()))
                continue
            pending.append(predictor.submit(item))
            while len(pending) >= max_in_flight:
                write(pending.popleft())
                progress.update(counts)
    while pending:
        write(pending.popleft())
    progress.update(counts, force=True)
    return counts, kinds, unreadable


def score_local(options: ScoreOptions) -> ScoreSummary:
    """Score every row of the input on this machine; see :func:`mlgate.batch.score`."""
    started = time.monotonic()
    scored_at = datetime.now(timezone.utc).replace(microsecond=0)
    inputs = list_inputs(options.input)
    workers = default_workers() if options.workers is None else options.workers
    fmt = table_format(options.output)
    paths = OutputPaths.beside(options.output)
    with tempfile.TemporaryDirectory(prefix="mlgate-score-") as workdir:
        model = load_batch_model(options.model_uri, Path(workdir), options.runtime)
        predictor = Predictor(model, workers, options.pool, options.keys, scored_at)
        pool_kind = predictor.kind
        startup = time.monotonic() - started
        log.info(
            "score: model %s version %s (%s, %s), %d input file(s), %d worker(s) (%s), start-up %.2fs",
            model.name,
            model.version,
            model.uri,
            model.runtime,
            len(inputs.files),
            workers,
            pool_kind,
            startup,
        )
        paths.remove_stale_temporaries()
        staged = [Staged(paths.output), Staged(paths.quarantine)]
        writers: dict[str, TableWriter] = {}
        try:
            writers["output"] = TableWriter(staged[0].open(), fmt, model.output_schema(options.keys))
            writers["quarantine"] = TableWriter(staged[1].open(), fmt, QUARANTINE_SCHEMA)
            drift = DriftAccumulator(model.reference)
            counts, kinds, unreadable = _stream(
                predictor,
                inputs.fs,
                inputs.files,
                model.needed(options.keys),
                options.chunk_rows,
                writers,
                drift,
            )
            predictor.close()
            for w in writers.values():
                w.close()
        except BaseException:
            predictor.close()
            for w in writers.values():
                try:
                    w.close()
                except Exception:  # noqa: BLE001 - the first error is the one to report  # nosec B110
                    pass
            for s in staged:
                s.abort()
            raise
    result = RunResult(
        counts=counts,
        kinds=dict(kinds),
        drift=drift.counts(),
        unreadable=unreadable,
        written=writers["output"].rows,
        staged=staged,
        engine_settings={"workers": workers, "pool": pool_kind, "chunk_rows": options.chunk_rows},
    )
    return finish(options, model, inputs.files, inputs.ignored, result, scored_at, started, startup)
