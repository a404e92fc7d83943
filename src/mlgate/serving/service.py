"""The state every route shares: the settings, the metrics, readiness, and the model being served.

Scoring (reading the body, converting it, predicting) runs on the event loop for a small body and, for a
larger one, in the service's one scoring thread, one request at a time: the model is CPU-bound and holds the
GIL, so more threads would only contend, while the event loop stays free to answer the probes and to read
the next bodies. A request's turn is its turn on that thread.

A request reads ``service.model`` once, at its start, and uses that object to the end: replacing the
attribute (one reference assignment on the event loop) is the atomic swap, so a request in flight finishes on
the model it started with and no request ever sees a model that is not fully loaded and warmed up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi.responses import Response

from mlgate.serving.errors import error
from mlgate.serving.follow import AliasFollower
from mlgate.serving.metrics import ServiceMetrics
from mlgate.serving.model import ServedModel
from mlgate.serving.protocol import SMALL_BODY
from mlgate.serving.reader import Limits
from mlgate.serving.settings import ServingSettings
from mlgate.serving.shadow import Shadow

VERSION_HEADER = "x-model-version"
# The most the one request being scored holds, in multiples of the body limit: its body, the decoded text, the
# rows read and their columns, the model's arrays (measured on the largest bodies the limits let through,
# and on bodies over them; tests/serving/test_limits.py checks it against the real server).
SCORING_MEMORY_FACTOR = 8
T = TypeVar("T")


class Service:
    """One app's shared state."""

    def __init__(self, settings: ServingSettings, model: ServedModel) -> None:
        self.settings = settings
        self.model = model
        self.metrics = ServiceMetrics(model.info)
        self.ready = False
        self.shadow: Shadow | None = None
        self.limits = Limits(rows=settings.max_rows, columns=settings.max_columns)
        self._turn = asyncio.Semaphore(1)
        self._scorer = ThreadPoolExecutor(1, thread_name_prefix="mlgate-score")

    async def score(
        self, scope: MutableMapping[str, Any], body_size: int, work: Callable[[], T]
    ) -> T | Response:
        """``work()`` (read, convert, predict) at this request's turn: on the event loop for a body of up to
        :data:`~mlgate.serving.protocol.SMALL_BODY` bytes, else in the scoring thread once the requests
        before it are done. A request that waited past the timeout before its turn gets the 503 instead."""
        if body_size <= SMALL_BODY:
            late = self.timed_out(scope)
            return work() if late is None else late
        async with self._turn:
            if (late := self.timed_out(scope)) is not None:
                return late
            return await asyncio.get_running_loop().run_in_executor(self._scorer, work)

    def close(self) -> None:
        """Stop the scoring thread (at shutdown)."""
        self._scorer.shutdown(wait=False)

    def start_shadow(self) -> Shadow | None:
        """Start the shadow process when a shadow model is set (``--shadow``)."""
        if self.settings.shadow:
            self.metrics.enable_shadow()
            follow = self.settings.follow_seconds if self.settings.follow else None
            self.shadow = Shadow(self.settings.shadow, self.settings.shadow_queue, self.metrics, follow)
        return self.shadow

    def offer_shadow(
        self, columns: dict[str, list[Any]], n_rows: int, labels: list[Any], proba: Any = None
    ) -> None:
        """Give the shadow model a copy of a scored request, if there is one (never waits)."""
        if self.shadow is not None:
            self.shadow.offer(columns, n_rows, labels, proba)

    def install(self, model: ServedModel) -> None:
        """Serve ``model`` from now on (it is loaded, warmed up and checked already)."""
        self.model = model
        self.metrics.set_model(model.info)

    def follower(self) -> AliasFollower:
        """The follower of the served model's alias (``--follow``).

        Raises:
            ValueError: the model was not given as ``models:/NAME@ALIAS``.
        """
        name, alias = self.model.info.get("name"), self.model.info.get("alias")
        if not (name and alias):
            raise ValueError("--follow needs the model as models:/NAME@ALIAS")
        return AliasFollower(
            name,
            alias,
            self.settings.follow_seconds,
            lambda: self.model,
            self.install,
            self.metrics.observe_check,
        )

    def timed_out(self, scope: MutableMapping[str, Any], predicted: bool = False) -> Response | None:
        """503 when a request (its ASGI scope) waited past the timeout before its turn, 504 when its
        prediction ran past it."""
        waited = time.perf_counter() - scope["state"]["start"]
        if waited <= self.settings.timeout_seconds:
            return None
        if predicted:
            return error(504, "the prediction took longer than the timeout", scope["path"])
        return error(503, f"waited {waited:.3f}s for a turn, over the timeout", scope["path"])

    @staticmethod
    def served_by(scope: MutableMapping[str, Any], model: ServedModel) -> None:
        """Record which version answers this request (the middleware sends it as X-Model-Version)."""
        scope["state"]["model_version"] = model.version
