"""One-line failure messages for the command line (no MLflow import: the serving image runs without it)."""

from __future__ import annotations

import os

# Exit codes of every mlgate command.
EXIT_ERROR = 1  # something broke; the last line says what
EXIT_REJECTED = 3  # the promotion gate said no: a decision, not an error
EXIT_DRIFT = 4  # scoring succeeded but inputs drifted past the threshold (with --fail-on-drift)
EXIT_EMPTY = 5  # scoring ran but scored no row: all quarantined, or none read (unless --allow-empty)

_UNREACHABLE_TYPES = ("ConnectionError", "MaxRetryError", "NewConnectionError", "ConnectTimeout")
_UNREACHABLE_TEXT = ("Max retries exceeded", "Connection refused", "Failed to establish")


def describe_error(exc: BaseException) -> str:
    """One line saying why a step failed; names the tracking server when it could not be reached."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    chain = [e for e in (exc, exc.__cause__, exc.__context__) if e is not None]
    unreachable = any(type(e).__name__ in _UNREACHABLE_TYPES for e in chain) or any(
        s in str(exc) for s in _UNREACHABLE_TEXT
    )
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if unreachable and uri.startswith("http"):
        return f"cannot reach the MLflow tracking server at {uri}: {text[:300]}"
    return text
