"""Running the service: resolve the model to a local folder, then uvicorn with JSON logs, TCP_NODELAY on every
connection, N workers, at most ``limit_concurrency`` connections and requests at once per worker (uvicorn
answers 503 beyond) and a graceful shutdown (in-flight requests finish on SIGTERM)."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from mlgate.bundle import resolve_model
from mlgate.serving.metrics import MULTIPROC_ENV
from mlgate.serving.settings import ServingSettings

try:  # the C parser when installed (it is in the image); the pure-Python one otherwise
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _BaseProtocol
except ImportError:  # pragma: no cover - depends on the environment
    _BaseProtocol = H11Protocol  # type: ignore[assignment,misc]

log = logging.getLogger("mlgate.serving")

_SKIPPED = {"message", "asctime", "taskName", "color_message"}
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | _SKIPPED


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging config: everything as JSON on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"default": handler},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "mlgate": {"handlers": ["default"], "level": level.upper(), "propagate": False},
        },
    }


class NoDelayProtocol(_BaseProtocol):  # type: ignore[misc,valid-type]
    """Sets TCP_NODELAY on each connection: uvicorn's multi-worker socket is made without IPPROTO_TCP, so
    asyncio skips it, and Nagle plus delayed ACKs then add about 40 ms to every small response."""

    def connection_made(self, transport: Any) -> None:  # noqa: D102
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - a socket that refuses it still works
                pass
        super().connection_made(transport)


def serve(settings: ServingSettings) -> None:
    """Load the model and serve it until SIGTERM/SIGINT (blocking).

    Raises:
        ValueError: no model was given, or --follow without an alias to follow.
    """
    import uvicorn

    if not settings.model:
        raise ValueError("no model to serve: pass --model or set MLGATE_SERVE_MODEL")
    if settings.follow and not (settings.model.startswith("models:/") and "@" in settings.model):
        raise ValueError(f"--follow needs the model as models:/NAME@ALIAS, not {settings.model}")
    logging.config.dictConfig(log_config(settings.log_level))
    workdir = Path(tempfile.mkdtemp(prefix="mlgate-serve-"))
    try:
        folder, record = resolve_model(settings.model, workdir)
        os.environ["MLGATE_SERVE_MODEL"] = str(folder.resolve())
        for key in ("name", "version", "alias"):
            value = getattr(settings, f"model_{key}") or record.get(key)
            if value:
                os.environ[f"MLGATE_SERVE_MODEL_{key.upper()}"] = str(value)
        exported = (
            "runtime",
            "max_body_bytes",
            "max_rows",
            "max_columns",
            "timeout_seconds",
            "follow",
            "follow_seconds",
            "docs",
            "shadow_queue",
        )
        for key in (*exported, *(("shadow",) if settings.shadow else ())):
            os.environ[f"MLGATE_SERVE_{key.upper()}"] = str(getattr(settings, key))
        if settings.workers > 1 and not os.environ.get(MULTIPROC_ENV):
            (workdir / "metrics").mkdir()
            os.environ[MULTIPROC_ENV] = str(workdir / "metrics")
        log.info(
            "serving %s on %s:%d with %d worker(s)",
            settings.model,
            settings.host,
            settings.port,
            settings.workers,
        )
        uvicorn.run(
            "mlgate.serving.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            http=NoDelayProtocol,
            access_log=False,
            log_config=log_config(settings.log_level),
            timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
            limit_concurrency=settings.limit_concurrency,
            server_header=False,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
