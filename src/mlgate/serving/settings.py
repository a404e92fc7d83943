"""Service settings from the environment (prefix ``MLGATE_SERVE_``; also ``PORT`` and ``WEB_CONCURRENCY``)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlgate.modelio import RuntimeChoice


class ServingSettings(BaseSettings):
    """Everything the service can be tuned with; safe defaults for a container."""

    model_config = SettingsConfigDict(env_prefix="MLGATE_SERVE_", extra="ignore", frozen=True)

    model: str | None = Field(
        default=None,
        description="A local MLflow model folder, or a model URI (models:/name@alias, runs:/...).",
    )
    runtime: RuntimeChoice = Field(
        default="auto",
        description="auto: ONNX Runtime when the model has a parity-proven ONNX file, else scikit-learn.",
    )
    host: str = "127.0.0.1"
    port: int = Field(
        default=8080, ge=0, le=65535, validation_alias=AliasChoices("PORT", "MLGATE_SERVE_PORT")
    )
    workers: int = Field(
        default=1, ge=1, validation_alias=AliasChoices("MLGATE_SERVE_WORKERS", "WEB_CONCURRENCY")
    )
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1, description="Bigger bodies get 413.")
    max_rows: int = Field(default=10_000, ge=1, description="More rows in one request get 413.")
    max_columns: int = Field(
        default=1_000, ge=1, description="More columns (fields of a row, V2 input tensors) get 413."
    )
    limit_concurrency: int = Field(
        default=32, ge=2, description="Connections and requests at once per worker; more get 503."
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="Requests slower than this get 503/504.")
    graceful_shutdown_seconds: float = Field(default=30.0, ge=0, description="Wait for in-flight requests.")
    log_level: str = "info"
    follow: bool = Field(default=False, description="Follow the alias of a models:/NAME@ALIAS model.")
    follow_seconds: float = Field(default=30.0, gt=0, description="How often --follow looks the alias up.")
    shadow: str | None = Field(
        default=None,
        description="A challenger (folder or URI) that scores a copy of each request off the path.",
    )
    shadow_queue: int = Field(
        default=64, ge=1, description="Request copies waiting for the shadow; more are dropped."
    )
    docs: bool = Field(default=True, description="Serve /docs and /openapi.json (the image turns them off).")
    model_name: str | None = Field(default=None, description="Reported name when the folder does not say it.")
    model_version: str | None = None
    model_alias: str | None = None
