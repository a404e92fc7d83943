"""Looking models up in the registry by alias, and loading them under an explicit trust decision."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlgate.config import PipelineConfig
from mlgate.registry_rest import NOT_FOUND_CODES

# MLflow refuses to deserialize any model (skops included) unless this is set: loading runs code from the
# artifact. mlgate sets it only around loads of models it checked first (check_model_uri).
ALLOW_LOADING_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


def check_model_uri(uri: str, trusted_types: Iterable[str] = ()) -> None:
    """Refuse a model (by URI) before MLflow loads it: its skops file must need only types in the allow-list
    (mlgate.trust), read from the file itself; a model that is not a skops file is refused.

    Raises:
        UntrustedModelError: naming the types, or the serialization.
    """
    import tempfile

    import mlflow

    from mlgate.modelio import read_mlmodel
    from mlgate.trust import check_model_folder, extra_types

    with tempfile.TemporaryDirectory(prefix="mlgate-check-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        check_model_folder(local, read_mlmodel(local), extra_types(trusted_types))


@contextmanager
def allow_model_loading() -> Iterator[None]:
    """Let MLflow deserialize models for the duration of the block, then restore the setting."""
    before = os.environ.get(ALLOW_LOADING_ENV)
    os.environ[ALLOW_LOADING_ENV] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ALLOW_LOADING_ENV, None)
        else:
            os.environ[ALLOW_LOADING_ENV] = before


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND_CODES:
            return None
        raise


def champion_version(cfg: PipelineConfig, client: MlflowClient | None = None) -> ModelVersion | None:
    """The current champion of the configured model, if any."""
    return version_by_alias(client or MlflowClient(), cfg.model_name, cfg.promotion.aliases.champion)
