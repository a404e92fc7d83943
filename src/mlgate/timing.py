"""How long each step took: one log line per step (``train: done in 7.81s``) and the figures for summaries."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def timed(step: str, durations: dict[str, float] | None = None) -> Iterator[None]:
    """Time the block; when it succeeds, log ``<step>: done in <s>s`` and put the seconds in ``durations``.

    A step that fails logs nothing here: its error is the last line, as the CLI promises.
    """
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    if durations is not None:
        durations[step] = round(seconds, 3)
    log.info("%s: done in %.2fs", step, seconds)
