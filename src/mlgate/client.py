"""How every mlgate process talks to a tracking server: retry and timeout defaults that fail fast.

MLflow's own defaults retry a dead server for minutes (7 retries, backoff factor 2, 120 s per request). mlgate
sets these defaults (a variable already in the environment wins) before any command runs, and passes them to
the processes it starts (`mlflow run`), so a step whose server is gone ends within a minute with its one-line
error: at most 3 attempts of at most 15 s each, 3 s of backoff between them.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


def apply_client_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set each default that ``environ`` (default: this process's environment) does not set already.

    Returns:
        The settings in effect afterwards.
    """
    env = os.environ if environ is None else environ
    for key, value in CLIENT_DEFAULTS.items():
        env.setdefault(key, value)
    return {key: env[key] for key in CLIENT_DEFAULTS}
