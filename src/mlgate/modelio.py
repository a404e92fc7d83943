"""Reading a local MLflow scikit-learn model folder without importing MLflow: its MLmodel metadata, its input
signature, where it came from, and the pipeline itself. Used by the serving app and by the batch workers.

A model loads only from a skops file whose types are all in mlgate's allow-list (:mod:`mlgate.trust`: checked
against the file itself, never the list its MLmodel file declares); any other serialization is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

# MLflow column types the serving and batch conversions handle; anything else is refused at load time.
FLOAT_TYPES = ("double", "float")
INTEGER_TYPES = ("long", "integer")
SIGNATURE_TYPES = (*FLOAT_TYPES, *INTEGER_TYPES, "boolean", "string")
BUNDLE_FILE = "mlgate_bundle.json"
# What runs a model's predictions (mlgate.runtime): auto picks ONNX Runtime when training proved its parity.
RUNTIMES = ("auto", "onnx", "sklearn")
RuntimeChoice = Literal["auto", "onnx", "sklearn"]
REGISTERED_META_FILE = "registered_model_meta"


class ModelLoadError(RuntimeError):
    """The folder is not a usable MLflow scikit-learn model; the message says what is missing."""


@dataclass(frozen=True)
class Column:
    """One input column of the model's signature."""

    name: str
    type: str
    required: bool

    @property
    def numeric(self) -> bool:
        """Whether the column holds numbers (booleans included: the pipeline sees them as 0/1)."""
        return self.type != "string"

    @property
    def python_type(self) -> type:
        if self.type in FLOAT_TYPES:
            return float
        if self.type in INTEGER_TYPES:
            return int
        return bool if self.type == "boolean" else str


def read_mlmodel(folder: str | Path) -> dict[str, Any]:
    """The parsed ``MLmodel`` file of a scikit-learn model folder.

    Raises:
        ModelLoadError: no MLmodel file, or no sklearn flavor in it.
    """
    path = Path(folder) / "MLmodel"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: not an MLflow model folder (no MLmodel file)")
    mlmodel = yaml.safe_load(path.read_text()) or {}
    flavors = mlmodel.get("flavors") or {}
    if "sklearn" not in flavors:
        raise ModelLoadError(f"{folder}: mlgate needs a scikit-learn model (flavors: {list(flavors)})")
    return mlmodel


def signature_columns(mlmodel: dict[str, Any]) -> list[Column]:
    """The input columns of the model's signature.

    Raises:
        ModelLoadError: the model has no column-based signature, or a column type we cannot convert.
    """
    raw = (mlmodel.get("signature") or {}).get("inputs")
    if not raw:
        raise ModelLoadError("the model has no input signature: log it with `signature=` to check inputs")
    columns = []
    for spec in json.loads(raw):
        name, kind = spec.get("name"), spec.get("type")
        if name is None or kind not in SIGNATURE_TYPES:
            raise ModelLoadError(f"unsupported signature input {spec}: mlgate needs named scalar columns")
        columns.append(Column(name=name, type=kind, required=bool(spec.get("required", True))))
    return columns


def folder_identity(folder: str | Path) -> dict[str, Any]:
    """Name, version, alias, source and run id as the folder records them: ``mlgate_bundle.json`` (written by
    ``mlgate model-bundle``) first, then MLflow's ``registered_model_meta``; None where neither says."""
    folder = Path(folder)
    bundle = json.loads((folder / BUNDLE_FILE).read_text()) if (folder / BUNDLE_FILE).is_file() else {}
    meta_file = folder / REGISTERED_META_FILE
    registered = (yaml.safe_load(meta_file.read_text()) or {}) if meta_file.is_file() else {}
    version = bundle.get("version") or registered.get("model_version")
    return {
        "name": bundle.get("name") or registered.get("model_name"),
        "version": None if version is None else str(version),
        "alias": bundle.get("alias"),
        "source": bundle.get("source"),
        "run_id": bundle.get("run_id"),
    }


def load_pipeline(
    folder: str | Path, mlmodel: dict[str, Any] | None = None, trusted_types: tuple[str, ...] = ()
) -> Any:
    """The scikit-learn pipeline of a local model folder, from its skops file, without importing MLflow.

    Args:
        trusted_types: types the model's owners added to the allow-list (the config's
            ``estimator.trusted_types``); ``MLGATE_TRUSTED_TYPES`` adds more.

    Raises:
        ModelLoadError: the folder is not a scikit-learn model, or the loaded object cannot predict.
        UntrustedModelError: the model is not a skops file, or would build a type outside the allow-list.
    """
    import skops.io

    from mlgate.trust import check_model_folder, extra_types

    folder = Path(folder)
    mlmodel = read_mlmodel(folder) if mlmodel is None else mlmodel
    path, types = check_model_folder(folder, mlmodel, extra_types(trusted_types))
    pipeline = skops.io.load(path, trusted=types)
    if not hasattr(pipeline, "predict"):
        raise ModelLoadError(f"{folder}: the loaded object has no predict()")
    return pipeline
