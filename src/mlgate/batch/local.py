"""The local engine: this machine, a pool of worker processes each holding the model; chunks stream from the
reader through the pool and are written in input order, with a bounded number in flight, so memory does not
grow with the input."""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from mlgate.batch.job import (
    QUARANTINE_SCHEMA,
    BatchModel,
    Counts,
    OutputPaths,
    Prediction,
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
from mlgate.batch.options import POOLS, ScoreOptions
from mlgate.batch.read import Unreadable, list_inputs, read_file
from mlgate.drift import DriftAccumulator
from mlgate.io import Staged, table_format
from mlgate.lifeline import exit_with_parent

log = logging.getLogger(__name__)

THREADS = POOLS[0]
PROGRESS_SECONDS = 10.0  # a progress line this often in logs (twice a second on a terminal)

# --- the worker processes ---------------------------------------------------------------------------------

_SCORER: Scorer | None = None


def _init_worker(model_path: str, runtime: str, watch_parent: bool = True) -> None:
    """Load the model once per worker process (a skops model without importing MLflow)."""
    global _SCORER
    if watch_parent:
        exit_with_parent()
    _SCORER = Scorer(model_path, runtime)  # type: ignore[arg-type]


def _ready(_: int) -> bool:
    """A no-op task: returns once the worker's model is loaded."""
    return _SCORER is not None


def worker_modules(_: int) -> list[str]:
    """The top-level modules a worker process has imported (to check that it stays light)."""
    return sorted({name.partition(".")[0] for name in sys.modules})


def _score(features: pd.DataFrame, check: bool, use_predict: bool) -> Prediction:
    assert _SCORER is not None  # nosec B101 - set by the pool's initializer
    return _score_with(_SCORER, features, check, use_predict)


def _score_with(scorer: Scorer, features: pd.DataFrame, check: bool, use_predict: bool) -> Prediction:
    return scorer.score(features, check, use_predict, drift=False)  # the reader counts drift (_stream)


class Predictor:
    """Where chunks are predicted: threads sharing one model (the default: ONNX Runtime and scikit-learn's
    trees and numpy release the GIL while they compute, and nothing is copied to another process and back:
    at 1M rows 5.9 CPU-s with ONNX and 8.4-9.6 with scikit-learn, against 15.4-15.6 with processes); worker
    processes each holding the model (``pool="processes"``, for an estimator whose predict holds the GIL);
    or, with 0 workers, this thread."""

    def __init__(self, model: BatchModel, workers: int, pool: str = THREADS) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | ThreadPoolExecutor | None = None
        self._call: Callable[[pd.DataFrame, bool, bool], Prediction] = _score
        self.kind = "processes" if workers > 0 else "in-process"
        if workers > 0 and pool == THREADS:
            scorer = Scorer(model.path, model.runtime)  # type: ignore[arg-type]
            self._call = functools.partial(_score_with, scorer)
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlgate-score")
            self.kind = "threads"
        elif workers > 0:
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(str(model.path), model.runtime),
            )
            # Start every worker and load the model now, so start-up is measured apart from scoring.
            list(self._pool.map(_ready, range(workers)))
        else:
            _init_worker(str(model.path), model.runtime, watch_parent=False)
        self.use_predict: bool | None = None  # decided on the first chunk

    def submit(self, features: pd.DataFrame) -> Future | Prediction:
        """Score a chunk in the pool (a future), or here; the first chunk decides whether to call predict."""
        check = self.use_predict is None
        if self._pool is None:
            result = self._call(features, check, bool(self.use_predict))
        else:
            future = self._pool.submit(self._call, features, check, bool(self.use_predict))
            if not check:
                return future
            result = future.result()
        if check:
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
    options: ScoreOptions,
    model: BatchModel,
    predictor: Predictor,
    fs: object,
    files: list[str],
    writers: dict[str, TableWriter],
    scored_at: datetime,
) -> tuple[Counts, Counter[str], DriftAccumulator, list[UnreadableFile]]:
    """The streaming loop: read, check, predict in the pool (bounded in flight), write in input order."""
    needed = model.needed(options.keys)
    counts, kinds = Counts(), Counter[str]()
    drift = DriftAccumulator(model.reference)
    unreadable: list[UnreadableFile] = []
    pending: deque[tuple[Future | Prediction, object, pd.DataFrame]] = deque()
    max_in_flight = max(2 * predictor.workers, 1)
    progress = _Progress()

    def write_scores(result: Future | Prediction, ids: object, features: pd.DataFrame) -> None:
        prediction = result.result() if isinstance(result, Future) else result
        scores, refused = score_tables(model, ids, prediction, scored_at)
        writers["output"].write(scores)
        writers["quarantine"].write(refused)
        counts.rows_scored += scores.num_rows
        counts.rows_quarantined += refused.num_rows
        if refused.num_rows:
            kinds["the model refused the row"] += refused.num_rows
        # drift of the rows scored, counted here while the workers run the model (they are the bottleneck
        # with a costly model; the reader waits on them)
        if prediction.refused:
            features = features.drop(features.index[list(prediction.refused)])
        drift.update(features)
        drift.add(prediction.drift)  # the model's output, counted by the worker (no rows: counted above)

    for file in files:
        for item in read_file(fs, file, needed, options.chunk_rows):
            if isinstance(item, Unreadable):
                log.warning("score: %s: %s", item.file, item.reason)
                writers["quarantine"].write(unreadable_table(item))
                unreadable.append(UnreadableFile(**item.model_dump()))
                continue
            prepared = prepare(item, model, options.keys)
            writers["quarantine"].write(prepared.quarantine)
            counts.add(prepared.counts)
            kinds.update(prepared.kinds)
            if not len(prepared.features):
                continue
            pending.append((predictor.submit(prepared.features), prepared.ids, prepared.features))
            while len(pending) >= max_in_flight:
                write_scores(*pending.popleft())
                progress.update(counts)
    while pending:
        write_scores(*pending.popleft())
    progress.update(counts, force=True)
    return counts, kinds, drift, unreadable


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
        predictor = Predictor(model, workers, options.pool)
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
            writers["output"] = TableWriter(
                staged[0].open(), fmt, model.output_schema(options.keys), model.repeated_columns()
            )
            writers["quarantine"] = TableWriter(staged[1].open(), fmt, QUARANTINE_SCHEMA)
            counts, kinds, drift, unreadable = _stream(
                options, model, predictor, inputs.fs, inputs.files, writers, scored_at
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
