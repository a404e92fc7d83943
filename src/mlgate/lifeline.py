"""Helper processes that end with the process that started them: batch's worker processes, serving's
registry helper (``--follow``) and shadow process. Each is spawned; on a clean exit its parent stops it, but a
parent killed outright (SIGKILL, the OOM killer) leaves it running, holding a model and its memory, unless it
watches."""

from __future__ import annotations

import os
import threading
import time

PARENT_CHECK_SECONDS = 0.5  # how soon a helper notices that its parent is gone


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def exit_with_parent() -> None:
    """Call first thing in a helper process: it then exits within :data:`PARENT_CHECK_SECONDS` of its
    parent's end, however the parent ended (a daemon thread; nothing else in the helper changes)."""
    threading.Thread(
        target=_exit_when_orphaned, args=(os.getppid(),), name="mlgate-lifeline", daemon=True
    ).start()
