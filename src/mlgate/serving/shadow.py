"""Shadow scoring (``mlgate serve --shadow models:/NAME@challenger``): a challenger scores a copy of each
live request off the response path, and Prometheus gets how often it agrees with the served model, how far its
class probabilities are from the served ones, and how long it takes.

The challenger runs in its own process at the lowest CPU priority (SCHED_IDLE), so it only uses what live
traffic leaves. Live requests hand it their (already validated) columns through a bounded queue without
waiting: when the queue is full the copy is dropped and counted, never the live request. With ``--follow``,
the shadow process follows its own alias the same way (checked at the same interval).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import shutil
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.lifeline import exit_with_parent

log = logging.getLogger("mlgate.serving.shadow")

DRAIN_SECONDS = 0.25
STOP_SECONDS = 5.0


@dataclass(frozen=True)
class ShadowResult:
    """What the shadow process reports about one request (or, with ``model``, about itself)."""

    rows: int = 0
    agreed: int = 0
    differences: tuple[float, ...] = ()
    seconds: float = 0.0
    error: str | None = None
    model: dict[str, Any] | None = None


def lowest_priority() -> None:
    """Run this process only on CPU time nothing else wants: SCHED_IDLE on Linux, else the highest nice."""
    os.nice(19)
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed: nice 19 stays
        pass


def _load(uri: str, workdir: Path, overrides: dict[str, str | None]) -> Any:
    from mlgate.bundle import resolve_model
    from mlgate.serving.model import load_served_model

    folder, record = resolve_model(uri, workdir / f"m{time.monotonic_ns()}")
    model = load_served_model(
        folder, {**{k: record.get(k) for k in ("name", "version", "alias")}, **overrides}
    )
    model.warm_up()
    return model


def _alias_version(uri: str) -> str | None:
    name, _, alias = uri.removeprefix("models:/").partition("@")
    from mlflow import MlflowClient

    from mlgate.models import version_by_alias

    found = version_by_alias(MlflowClient(), name, alias)
    return None if found is None else str(found.version)


def _score(
    model: Any, item: tuple[dict[str, list[Any]], int, list[Any], list[list[float]] | None]
) -> ShadowResult:
    columns, n_rows, live_labels, live_proba = item
    start = time.perf_counter()
    try:
        labels, proba = model.predict_proba(model.frame(columns, n_rows))
    except (ValueError, TypeError, KeyError) as exc:
        return ShadowResult(error=type(exc).__name__)
    seconds = time.perf_counter() - start
    agreed = sum(1 for a, b in zip(labels, live_labels) if a == b)
    differences: tuple[float, ...] = ()
    if live_proba is not None and proba.shape == np.shape(live_proba) and proba.shape[1]:
        differences = tuple(np.abs(proba - np.asarray(live_proba)).max(axis=1).tolist())
    return ShadowResult(rows=n_rows, agreed=agreed, differences=differences, seconds=seconds)


def shadow_main(uri: str, inbox: Any, outbox: Any, follow_seconds: float | None) -> None:
    """The shadow process: load the challenger, then score what arrives until ``None`` does (or the service
    is gone)."""
    exit_with_parent()
    lowest_priority()
    workdir = Path(tempfile.mkdtemp(prefix="mlgate-shadow-"))
    try:
        model = _load(uri, workdir, {})
    except Exception as exc:  # noqa: BLE001 - reported to the service, which keeps serving without a shadow
        outbox.put(ShadowResult(error=f"the shadow model could not be loaded: {type(exc).__name__}"))
        shutil.rmtree(workdir, ignore_errors=True)
        return
    outbox.put(ShadowResult(model=model.info))
    follows = follow_seconds is not None and uri.startswith("models:/") and "@" in uri
    next_check = time.monotonic() + (follow_seconds or 0)
    try:
        while True:
            try:
                item = inbox.get(timeout=1.0)
            except queue.Empty:
                item = ()
            if item is None:
                return
            if item:
                outbox.put(_score(model, item))
            if follows and time.monotonic() >= next_check:
                next_check = time.monotonic() + (follow_seconds or 0)
                try:
                    version = _alias_version(uri)
                    if version is not None and version != model.version:
                        model = _load(
                            f"models:/{model.info['name']}/{version}", workdir, {"alias": model.info["alias"]}
                        )
                        outbox.put(ShadowResult(model=model.info))
                except Exception as exc:  # noqa: BLE001 - the current challenger stays
                    log.warning("shadow: could not follow %s: %s", uri, exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class Shadow:
    """The live side: hands copies of requests to the shadow process and turns its results into metrics."""

    def __init__(self, uri: str, queue_size: int, metrics: Any, follow_seconds: float | None) -> None:
        context = get_context("spawn")
        self.inbox = context.Queue(maxsize=queue_size)
        self.outbox = context.Queue()
        self.metrics = metrics
        self.model: dict[str, Any] | None = None
        self.process = context.Process(
            target=shadow_main,
            args=(uri, self.inbox, self.outbox, follow_seconds),
            name="mlgate-shadow",
            daemon=True,
        )
        self.process.start()

    def offer(self, columns: dict[str, list[Any]], n_rows: int, labels: list[Any], proba: Any | None) -> None:
        """Queue a copy of a scored request for the challenger; drop it (counted) if the queue is full."""
        if self.model is None:
            return
        try:
            self.inbox.put_nowait((columns, n_rows, labels, None if proba is None else proba.tolist()))
        except queue.Full:
            self.metrics.observe_shadow_dropped()

    def drain(self) -> None:
        """Record every result the shadow process has sent so far."""
        while True:
            try:
                result: ShadowResult = self.outbox.get_nowait()
            except queue.Empty:
                return
            if result.model is not None:
                self.model = result.model
                self.metrics.set_shadow_model(result.model)
                log.info(
                    "shadow model %s version %s ready", result.model.get("name"), result.model.get("version")
                )
            else:
                self.metrics.observe_shadow(result)
                if result.error and self.model is None:
                    log.error("%s: serving without a shadow", result.error)

    async def run(self) -> None:
        """Drain results every :data:`DRAIN_SECONDS` until cancelled; stop offering if the process dies."""
        while True:
            await asyncio.sleep(DRAIN_SECONDS)
            self.drain()
            if self.model is not None and not self.process.is_alive():
                log.error(
                    "the shadow process exited (code %s): serving without a shadow", self.process.exitcode
                )
                self.metrics.observe_shadow(ShadowResult(error="the shadow process exited"))
                self.model = None

    def close(self) -> None:
        """Stop the shadow process (it finishes the request it is on)."""
        try:
            self.inbox.put(None, timeout=STOP_SECONDS)
        except queue.Full:
            pass
        self.process.join(STOP_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(STOP_SECONDS)
        self.inbox.cancel_join_thread()


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile over cumulative ``(upper bound, count)`` buckets."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * ((rank - below) / (count - below) if count > below else 0)
        lower, below = upper, count
    return lower


def shadow_report(metrics_text: str) -> dict[str, Any]:
    """A summary of the shadow metrics of a running service (its /metrics text): the two models, how many
    request copies were scored, dropped or failed, the agreement rate, probability differences, latency.

    Raises:
        ValueError: the service has no shadow model.
    """
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    if "mlgate_shadow_requests_total" not in samples:
        raise ValueError("the service has no shadow model (start it with --shadow)")

    def by(name: str, label: str) -> dict[str, float]:
        return {s.labels[label]: s.value for s in samples.get(name, [])}

    def histogram(name: str) -> tuple[list[tuple[float, float]], float, float]:
        buckets = sorted((float(s.labels["le"]), s.value) for s in samples.get(f"{name}_bucket", []))
        total = sum(s.value for s in samples.get(f"{name}_count", []))
        return buckets, total, sum(s.value for s in samples.get(f"{name}_sum", []))

    def info(name: str) -> dict[str, str]:
        found = [s.labels for s in samples.get(name, []) if s.value]
        return found[0] if found else {}

    outcomes = by("mlgate_shadow_requests_total", "outcome")
    rows = by("mlgate_shadow_rows_total", "agreement")
    offered = sum(outcomes.values())
    scored_rows = rows.get("agree", 0) + rows.get("disagree", 0)
    diff_buckets, diff_count, diff_sum = histogram("mlgate_shadow_probability_difference")
    lat_buckets, lat_count, lat_sum = histogram("mlgate_shadow_predict_duration_seconds")

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
        "served": {k: info("mlgate_model_info").get(k) for k in ("name", "version", "alias")},
        "shadow": {k: info("mlgate_shadow_model_info").get(k) for k in ("name", "version", "alias")},
        "requests": {k: int(outcomes.get(k, 0)) for k in ("scored", "dropped", "error")},
        "drop_rate": round(outcomes.get("dropped", 0) / offered, 4) if offered else None,
        "rows_scored": int(scored_rows),
        "agreement_rate": round(rows.get("agree", 0) / scored_rows, 4) if scored_rows else None,
        "probability_difference": {
            "rows": int(diff_count),
            "mean": round(diff_sum / diff_count, 4) if diff_count else None,
            "p50": _quantile(diff_buckets, 0.5),
            "p90": _quantile(diff_buckets, 0.9),
        },
        "shadow_latency_ms": {
            "mean": ms(lat_sum / lat_count) if lat_count else None,
            "p50": ms(_quantile(lat_buckets, 0.5)),
            "p99": ms(_quantile(lat_buckets, 0.99)),
        },
    }
