"""The state every route shares: the settings, the metrics, readiness, and the model being served.

A request reads ``service.model`` once, at its start, and uses that object to the end: replacing the
attribute (one reference assignment on the event loop) is the atomic swap, so a request in flight finishes on
the model it started with and no request ever sees a model that is not fully loaded and warmed up.
"""

from __future__ import annotations

import time
from typing import Any

from collections.abc import MutableMapping

from fastapi.responses import Response

from mlgate.serving.errors import error
from mlgate.serving.follow import AliasFollower
from mlgate.serving.metrics import ServiceMetrics
from mlgate.serving.model import ServedModel
from mlgate.serving.settings import ServingSettings
from mlgate.serving.shadow import Shadow

VERSION_HEADER = "x-model-version"


class Service:
    """One app's shared state."""

    def __init__(self, settings: ServingSettings, model: ServedModel) -> None:
        self.settings = settings
        self.model = model
        self.metrics = ServiceMetrics(model.info)
        self.ready = False
        self.shadow: Shadow | None = None

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
