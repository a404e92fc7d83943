"""Following a registry alias (``mlgate serve --model models:/NAME@ALIAS --follow``): every
``follow_seconds`` the alias is looked up; when it points at another version, that version is downloaded,
loaded and warmed up with its logged input example in the background, checked against the running model's
signature, and swapped in (see :mod:`mlgate.serving.service`) or refused. A registry that cannot be reached
leaves the current model serving; every outcome is logged and counted in ``mlgate_model_reloads_total``.

The registry is only ever called from one spawned helper process, so MLflow is never imported into the
serving process and a slow registry never holds its event loop.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from mlgate.lifeline import exit_with_parent
from mlgate.serving.metrics import RELOAD_OUTCOMES
from mlgate.serving.model import Column, ServedModel, load_served_model

log = logging.getLogger("mlgate.serving.follow")

UNCHANGED = "unchanged"
SWAPPED, INCOMPATIBLE, LOAD_ERROR, REGISTRY_ERROR = RELOAD_OUTCOMES
REGISTRY_TIMEOUT_SECONDS = 120.0


def alias_version(name: str, alias: str) -> str | None:
    """The version ``alias`` of model ``name`` points at now, or None (helper process: imports MLflow)."""
    from mlflow import MlflowClient

    from mlgate.models import version_by_alias

    found = version_by_alias(MlflowClient(), name, alias)
    return None if found is None else str(found.version)


def download_version(name: str, version: str, dest: str) -> dict[str, Any]:
    """Download ``models:/name/version`` into ``dest`` (helper process: imports MLflow)."""
    from mlgate.bundle import model_bundle

    return model_bundle(f"models:/{name}/{version}", dest)


def compatibility_problems(running: list[Column], candidate: list[Column]) -> list[str]:
    """Why ``candidate`` cannot take every request ``running`` takes (empty when it can).

    Clients send the running signature's columns, its optional ones possibly left out: the candidate may
    require only columns the running model requires too, and every column both have must keep its type.
    """
    before = {c.name: c for c in running}
    problems = []
    for col in candidate:
        old = before.get(col.name)
        if old is None and col.required:
            problems.append(f"requires a new column {col.name!r}")
        elif old is not None and old.type != col.type:
            problems.append(f"column {col.name!r} changes type {old.type} -> {col.type}")
        elif old is not None and col.required and not old.required:
            problems.append(f"column {col.name!r} becomes required")
    return problems


class AliasFollower:
    """Keeps ``current()`` on the version an alias points at; ``install`` puts a checked model in place."""

    def __init__(
        self,
        name: str,
        alias: str,
        interval: float,
        current: Callable[[], ServedModel],
        install: Callable[[ServedModel], None],
        observe: Callable[[str, bool], None],
    ) -> None:
        self.name, self.alias, self.interval = name, alias, interval
        self.current, self.install, self.observe = current, install, observe
        self.workdir = Path(tempfile.mkdtemp(prefix="mlgate-follow-"))
        self.pool: ProcessPoolExecutor | None = None
        self.refused: dict[str, str] = {}  # version -> why: not downloaded again while the alias stays there
        self.status: dict[str, Any] = {
            "following": f"models:/{name}@{alias}",
            "every_seconds": interval,
            "registry": "unknown",
            "last_check": None,
            "refused": self.refused,
        }
        self._folders: dict[str, Path] = {}

    async def _helper(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                max_workers=1, mp_context=get_context("spawn"), initializer=exit_with_parent
            )
        future = asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        try:
            return await asyncio.wait_for(future, REGISTRY_TIMEOUT_SECONDS)
        except (TimeoutError, BrokenProcessPool):  # a hung or dead helper: the next call starts a new one
            self._stop_helper()
            raise

    def _stop_helper(self) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        workers = getattr(pool, "_processes", None) or {}
        for process in list(workers.values()):
            process.kill()  # before Python 3.14 an executor cannot stop a worker that is busy
        pool.shutdown(wait=False, cancel_futures=True)

    async def check(self) -> str:
        """Look the alias up once; load, check and swap a new version. Returns the outcome."""
        self.status["last_check"] = time.time()
        try:
            version = await self._helper(alias_version, self.name, self.alias)
        except Exception as exc:  # noqa: BLE001 - an unreachable registry must never stop the service
            log.warning("registry unreachable, still serving version %s: %s", self.current().version, exc)
            return self._outcome(REGISTRY_ERROR, registry_up=False)
        if version is None:
            log.warning("model %s has no alias %s now; still serving", self.name, self.alias)
            return self._outcome(REGISTRY_ERROR, registry_up=True)
        if version == self.current().version or version in self.refused:
            return self._outcome(UNCHANGED, registry_up=True, count=False)
        log.info("alias %s of %s moved to version %s: loading it", self.alias, self.name, version)
        folder = self.workdir / f"v{version}-{time.monotonic_ns()}"
        try:
            await self._helper(download_version, self.name, version, str(folder))
            overrides = {"name": self.name, "version": version, "alias": self.alias}
            candidate = await asyncio.to_thread(self._load, folder, overrides)
        except Exception as exc:  # noqa: BLE001 - a broken version is refused, the running one stays
            log.error(
                "version %s could not be loaded, still serving %s: %s", version, self.current().version, exc
            )
            shutil.rmtree(folder, ignore_errors=True)
            return self._outcome(LOAD_ERROR, registry_up=True)
        problems = compatibility_problems(self.current().columns, candidate.columns)
        if candidate.is_regressor != self.current().is_regressor:  # /predict's response shape is fixed
            kinds = ("a classifier", "a regressor")
            was, now = kinds[self.current().is_regressor], kinds[candidate.is_regressor]
            problems.append(f"it is {now}, the running version {was}")
        if problems:
            self.refused[version] = "; ".join(problems)
            log.error(
                "version %s is incompatible with the running version %s (%s): refused",
                version,
                self.current().version,
                self.refused[version],
            )
            shutil.rmtree(folder, ignore_errors=True)
            return self._outcome(INCOMPATIBLE, registry_up=True)
        previous = self.current().version
        self.install(candidate)
        if (old := self._folders.pop(previous, None)) is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._folders[version] = folder
        log.info("now serving version %s (was %s)", version, previous)
        return self._outcome(SWAPPED, registry_up=True)

    def _load(self, folder: Path, overrides: dict[str, str | None]) -> ServedModel:
        model = load_served_model(folder, overrides)
        if not model.input_example:
            raise ValueError("the version has no logged input example to warm it up with")
        model.warm_up()
        return model

    def _outcome(self, outcome: str, registry_up: bool, count: bool = True) -> str:
        self.status["registry"] = "reachable" if registry_up else "unreachable"
        self.observe(outcome if count else "", registry_up)
        return outcome

    async def run(self) -> None:
        """Check now (which starts the helper process), then every ``interval`` seconds until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        """Stop the helper process and delete the downloaded versions."""
        self._stop_helper()
        shutil.rmtree(self.workdir, ignore_errors=True)
