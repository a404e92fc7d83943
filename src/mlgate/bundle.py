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

from mlgate.modelio import BUNDLE_FILE

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
    if not (dest / "MLmodel").is_file():
        raise ValueError(f"{uri} is not an MLflow model (no MLmodel file in it)")
    (dest / BUNDLE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log.info("model-bundle: %s -> %s (version %s)", uri, dest, record["version"])
    return record


def resolve_model(model: str, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """A local model folder for ``model``: itself if it is one, else the URI downloaded into ``workdir``.

    The download runs in a child process so that MLflow is never imported into the serving or scoring
    processes (it is not even installed in the serving image).

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
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        record = pool.submit(model_bundle, model, str(workdir / "model")).result()
    return workdir / "model", record
