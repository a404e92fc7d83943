"""Model bundles: a registered model version downloaded into a local folder (for the image, or for serving a
model URI), with a small ``mlgate_bundle.json`` saying where it came from."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUNDLE_FILE = "mlgate_bundle.json"
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
