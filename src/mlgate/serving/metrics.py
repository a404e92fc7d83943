"""Prometheus metrics of the service: requests and latency by route and status, predictions by class, and the
model version as a label. With several workers, values go through PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import os
from collections import Counter as Tally
from typing import Any

from mlgate.config import REGRESSION
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SHADOW_OUTCOMES = ("scored", "dropped", "error")
DIFFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
# The outcomes of an alias check that change or refuse something (mlgate.serving.follow).
RELOAD_OUTCOMES = ("swapped", "incompatible", "load_error", "registry_error")


class ServiceMetrics:
    """The metrics of one app, in their own registry (several apps can live in one process, as in tests)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_info: dict[str, Any]) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        labels = ("route", "method", "status", "model_version")
        self.requests = Counter(
            "mlgate_http_requests", "HTTP requests served.", labels, registry=self.registry
        )
        self.latency = Histogram(
            "mlgate_http_request_duration_seconds",
            "Time from request start to response end.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "mlgate_predictions",
            "Predicted rows by class.",
            ("class", "model_version"),
            registry=self.registry,
        )
        self.rows = Counter(
            "mlgate_scored_rows", "Rows scored.", ("route", "model_version"), registry=self.registry
        )
        self.info = Gauge(
            "mlgate_model_info",
            "The served model (value 1).",
            ("name", "version", "alias", "run_id"),
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.served_version = Gauge(
            "mlgate_model_version",
            "The served model version (as a number; 0 when it is not one).",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.reloads = Counter(
            "mlgate_model_reloads",
            "Alias checks that did something, by outcome: swapped, incompatible, load_error, registry_error.",
            ("outcome",),
            registry=self.registry,
        )
        for outcome in RELOAD_OUTCOMES:
            self.reloads.labels(outcome)
        self.registry_up = Gauge(
            "mlgate_registry_up",
            "1 when the last alias check reached the registry, 0 when it could not.",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.set_model(model_info)

    def enable_shadow(self) -> None:
        """The shadow scoring metrics (only when there is a shadow model)."""
        self.shadow_requests = Counter(
            "mlgate_shadow_requests",
            "Copies of live requests for the shadow model, by outcome: scored, dropped (queue full), error.",
            ("outcome",),
            registry=self.registry,
        )
        for outcome in SHADOW_OUTCOMES:
            self.shadow_requests.labels(outcome)
        self.shadow_rows = Counter(
            "mlgate_shadow_rows",
            "Rows the shadow model scored, by whether its label agrees with the served model's.",
            ("agreement",),
            registry=self.registry,
        )
        self.shadow_rows.labels("agree"), self.shadow_rows.labels("disagree")
        self.shadow_difference = Histogram(
            "mlgate_shadow_probability_difference",
            "Per row scored with probabilities (/predict, /v2): the largest absolute difference between a "
            "class probability of the shadow model and of the served one.",
            buckets=DIFFERENCE_BUCKETS,
            registry=self.registry,
        )
        self.shadow_latency = Histogram(
            "mlgate_shadow_predict_duration_seconds",
            "Time the shadow model took to score one request.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shadow_info = Gauge(
            "mlgate_shadow_model_info",
            "The shadow model (value 1).",
            ("name", "version", "alias"),
            registry=self.registry,
            multiprocess_mode="max",
        )

    def set_shadow_model(self, model_info: dict[str, Any]) -> None:
        """Report ``model_info`` as the shadow model."""
        self.shadow_info.clear()
        self.shadow_info.labels(*(str(model_info.get(k) or "") for k in ("name", "version", "alias"))).set(1)

    def observe_shadow_dropped(self) -> None:
        """Count a request copy the shadow queue had no room for."""
        self.shadow_requests.labels("dropped").inc()

    def observe_shadow(self, result: Any) -> None:
        """Count one shadow result (a :class:`mlgate.serving.shadow.ShadowResult`)."""
        if result.error:
            self.shadow_requests.labels("error").inc()
            return
        self.shadow_requests.labels("scored").inc()
        self.shadow_rows.labels("agree").inc(result.agreed)
        self.shadow_rows.labels("disagree").inc(result.rows - result.agreed)
        for difference in result.differences:
            self.shadow_difference.observe(difference)
        self.shadow_latency.observe(result.seconds)

    def observe_check(self, outcome: str, registry_up: bool) -> None:
        """Count one alias check's outcome (an empty outcome: nothing to do) and the registry's state."""
        if outcome:
            self.reloads.labels(outcome).inc()
        self.registry_up.set(1 if registry_up else 0)

    def set_model(self, model_info: dict[str, Any]) -> None:
        """Report ``model_info`` as the served model (the only one)."""
        self.count_classes = model_info.get("task") != REGRESSION
        self.info.clear()
        self.info.labels(*(str(model_info.get(k) or "") for k in ("name", "version", "alias", "run_id"))).set(
            1
        )
        version = str(model_info.get("version") or "")
        self.served_version.set(float(version) if version.isdigit() else 0)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label set (the lookup takes a lock and more time
        than the increment)."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(self, route: str, method: str, status: int, seconds: float, version: str) -> None:
        """Count one finished request and its latency, by the model version that answered it."""
        labels = (route, method, str(status), version)
        self._child(self.requests, *labels).inc()
        self._child(self.latency, *labels).observe(seconds)

    def observe_predictions(self, route: str, labels: list[Any], version: str) -> None:
        """Count the predicted classes of one request (a regressor's values only as rows)."""
        self._child(self.rows, route, version).inc(len(labels))
        if not self.count_classes:
            return
        if len(labels) == 1:
            self._child(self.predictions, str(labels[0]), version).inc()
            return
        for cls, n in Tally(map(str, labels)).items():
            self._child(self.predictions, cls, version).inc(n)

    def render(self) -> bytes:
        """The text exposition of every metric (all workers' when running multi-process)."""
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
