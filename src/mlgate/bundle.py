"""Model resolution for serving and batch scoring alike: a model URI made a local MLflow model folder, an
alias pinned to the version it points at now, and a small ``mlgate_bundle.json`` saying where it came from."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from mlgate.modelio import BUNDLE_FILE, REGISTERED_META_FILE

log = logging.getLogger(__name__)

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)/?$")


def _clear(dest: Path) -> None:
    """Empty ``dest`` if it is a previous bundle (or empty); refuse to delete anything else."""
    if not dest.exists():
        return
    entries = list(dest.iterdir())
    if entries and not (dest / "MLmodel").is_file():
        raise ValueError(f"{dest} is not empty and not a model folder: refusing to overwrite it")
    shutil.rmtree(dest)


def model_bundle(uri: str, dest: str | Path) -> dict[str, Any]:
    """Download the model at ``uri`` into ``dest``, pinning an alias to the version it points at now.

    Args:
        uri: ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or any MLflow model URI.
        dest: the folder to fill (a previous bundle there is replaced).

    Returns:
        What ``mlgate_bundle.json`` records: source, name, version, alias, run id.

    Raises:
        ValueError: the alias does not exist, or ``dest`` holds something other than a model.
    """
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from mlgate.models import version_by_alias

    dest = Path(dest)
    record: dict[str, Any] = {"source": uri, "name": None, "version": None, "alias": None, "run_id": None}
    pinned = uri
    if match := _ALIAS_URI.match(uri):
        client = MlflowClient()
        found = version_by_alias(client, match["name"], match["alias"])
        if found is None:
            raise ValueError(f"{uri}: model {match['name']!r} has no alias {match['alias']!r}")
        record.update(
            name=match["name"], alias=match["alias"], version=str(found.version), run_id=found.run_id
        )
        pinned = f"models:/{match['name']}/{found.version}"
    elif match := _VERSION_URI.match(uri):
        record.update(name=match["name"], version=match["version"])
    _clear(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    download_artifacts(artifact_uri=pinned, dst_path=str(dest))
    return _finish(uri, dest, record)


def _finish(uri: str, dest: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Check that ``dest`` holds a model and write ``mlgate_bundle.json`` with ``record`` beside it."""
    if not (dest / "MLmodel").is_file():
        raise ValueError(f"{uri} is not an MLflow model (no MLmodel file in it)")
    (dest / BUNDLE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log.info("model-bundle: %s -> %s (version %s)", uri, dest, record["version"])
    return record


def rest_bundle(uri: str, dest: str | Path) -> dict[str, Any] | None:
    """What :func:`model_bundle` does, through the tracking server's REST API without importing MLflow
    (:mod:`mlgate.registry_rest`): the same files, ``registered_model_meta`` as MLflow writes it, the same
    record and the same errors. None, with ``dest`` untouched, when MLflow must do it: a tracking URI that is
    not ``http(s)://``, a URI other than ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``, files the server
    does not serve through its artifact proxy.

    Raises:
        ValueError: the alias does not exist, or ``dest`` holds something other than a model.
        RestApiError: the server refused a call (no such version, not allowed).
    """
    import yaml

    from mlgate.registry_rest import rest_registry

    alias_match, version_match = _ALIAS_URI.match(uri), _VERSION_URI.match(uri)
    registry = rest_registry() if alias_match or version_match else None
    if registry is None:
        return None
    record: dict[str, Any] = {"source": uri, "name": None, "version": None, "alias": None, "run_id": None}
    if alias_match:
        found = registry.version_by_alias(alias_match["name"], alias_match["alias"])
        if found is None:
            raise ValueError(f"{uri}: model {alias_match['name']!r} has no alias {alias_match['alias']!r}")
        record.update(
            name=alias_match["name"],
            alias=alias_match["alias"],
            version=str(found["version"]),
            run_id=found.get("run_id", ""),  # MLflow's ModelVersion: "" when none
        )
    else:
        record.update(name=version_match["name"], version=version_match["version"])
    location = registry.artifact_location(registry.download_uri(record["name"], record["version"]))
    if location is None:
        return None
    dest = Path(dest)
    _clear(dest)
    registry.download(*location, dest)
    if (dest / "MLmodel").is_file():  # as MLflow's ModelsArtifactRepository.download_artifacts writes it
        meta = {"model_name": record["name"], "model_version": record["version"]}
        (dest / REGISTERED_META_FILE).write_text(
            yaml.safe_dump(meta, default_flow_style=False, allow_unicode=True)
        )
    return _finish(uri, dest, record)


def resolve_model(model: str, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """A local model folder for ``model``: itself if it is one, else the URI downloaded into ``workdir``.

    A registry URI on an HTTP tracking server is resolved and downloaded through its REST API
    (:func:`rest_bundle`, a fraction of a second); any other URI in a child process with MLflow, so that
    MLflow is never imported into the serving or scoring processes (importing it takes seconds, and the
    serving image may not have it).

    Returns:
        The folder, and what :func:`model_bundle` recorded (empty for a local folder).

    Raises:
        ValueError: the URI cannot be resolved (no such alias, not a model) or MLflow is not installed.
    """
    local = Path(model.removeprefix("file://"))
    if local.is_dir():
        return local, {}
    if importlib.util.find_spec("mlflow") is None:
        raise ValueError(f"{model} is not a local folder, and a model URI needs mlflow(-skinny) installed")
    record = rest_bundle(model, workdir / "model")
    if record is not None:
        return workdir / "model", record
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        record = pool.submit(model_bundle, model, str(workdir / "model")).result()
    return workdir / "model", record
