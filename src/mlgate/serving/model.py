"""The served model: the runtime of an MLflow model folder (:mod:`mlgate.runtime`: ONNX Runtime on the
compiled model when training proved its parity, else the scikit-learn pipeline, loaded without MLflow for
skops models), its input schema taken from the signature, and fast, strict conversion of request columns into
the arrays the runtime takes. Nothing here imports pandas or scikit-learn: the ONNX image has neither."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.config import CLASSIFICATION, REGRESSION
from mlgate.modelio import Column, ModelLoadError, folder_identity, read_mlmodel, signature_columns
from mlgate.runtime import Runtime, load_runtime, onnx_metadata
from mlgate.serving.errors import show
from mlgate.serving.settings import ServingSettings

__all__ = ["Column", "InputError", "ModelLoadError", "ServedModel", "convert_column", "load_served_model"]

# The dtype each numeric signature type converts to.
NUMERIC_TYPES = {"double": np.float64, "float": np.float32}
INTEGER_TYPES = {"long": np.int64, "integer": np.int32}
# Numbers beyond float32 are refused: scikit-learn's trees compute in float32 and fail on them.
NUMBER_LIMIT = float(np.finfo(np.float32).max)
INTEGER_LIMITS = {name: (int(np.iinfo(t).min), int(np.iinfo(t).max)) for name, t in INTEGER_TYPES.items()}
# Where a model came from, as /metadata may show it: registry and object-store URIs, never a server path.
PUBLIC_SOURCE_SCHEMES = ("models:/", "runs:/", "s3://", "gs://")
REPORTED_PACKAGES = (
    "mlgate",
    "scikit-learn",
    "onnxruntime",
    "numpy",
    "pandas",
    "scipy",
    "skops",
    "fastapi",
    "uvicorn",
    "mlflow",
)


class InputError(ValueError):
    """The request's data does not match the model's signature; the message names the column."""


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)  # bool is a subclass of int: excluded on purpose


def convert_column(col: Column, values: list[Any]) -> np.ndarray:
    """Convert one column's JSON values to the signature's dtype; ``None`` (null) is a missing value.

    Raises:
        InputError: a value has the wrong type (the message names the column, the row and the value).
    """
    if col.type in NUMERIC_TYPES:
        for i, v in enumerate(values):
            if v is not None and not _is_number(v):
                raise InputError(f"column {col.name!r} expects a number ({col.type}); row {i} has {show(v)}")
            if v is not None and abs(v) > NUMBER_LIMIT:
                raise InputError(f"column {col.name!r}: row {i} has {show(v)}, beyond +-{NUMBER_LIMIT:.4g}")
        return np.array([math.nan if v is None else v for v in values], dtype=NUMERIC_TYPES[col.type])
    if col.type in INTEGER_TYPES:
        low, high = INTEGER_LIMITS[col.type]
        for i, v in enumerate(values):
            if not (type(v) is int or (type(v) is float and v.is_integer())):
                raise InputError(
                    f"column {col.name!r} expects an integer ({col.type}); row {i} has {show(v)}"
                )
            if not low <= v <= high:
                raise InputError(f"column {col.name!r}: row {i} has {show(v)}, outside {col.type}")
        return np.array(values, dtype=INTEGER_TYPES[col.type])
    if col.type == "boolean":
        for i, v in enumerate(values):
            if type(v) is not bool:
                raise InputError(f"column {col.name!r} expects true or false; row {i} has {show(v)}")
        return np.array(values, dtype=bool)
    for i, v in enumerate(values):
        if v is not None and type(v) is not str:
            raise InputError(f"column {col.name!r} expects a string; row {i} has {show(v)}")
    return np.array(values, dtype=object)


def records_columns(records: list[dict[str, Any]]) -> tuple[dict[str, list[Any]], int]:
    """Named columns and the row count of rows given as records."""
    names = {k for r in records for k in r}
    return {n: [r.get(n) for r in records] for n in names}, len(records)


@dataclass
class ServedModel:
    """A loaded model runtime with what the service reports about it."""

    pipeline: Runtime
    columns: list[Column]
    info: dict[str, Any] = field(default_factory=dict)
    input_example: list[dict[str, Any]] = field(default_factory=list)

    @property
    def classes(self) -> list[Any]:
        return [c.item() if hasattr(c, "item") else c for c in getattr(self.pipeline, "classes_", [])]

    @property
    def is_regressor(self) -> bool:
        """A model of numbers (no classes): it answers values, without probabilities."""
        return not hasattr(self.pipeline, "classes_")

    @property
    def version(self) -> str:
        return str(self.info.get("version") or "unknown")

    def frame(self, columns: dict[str, list[Any]], n_rows: int) -> dict[str, np.ndarray]:
        """Validate named columns against the signature and convert them (column name to array, the
        runtime's input); extra columns are ignored.

        Raises:
            InputError: a required column is missing, a column has the wrong length or a value the wrong type.
        """
        if n_rows == 0:
            raise InputError("the request has no rows: send at least one")
        data: dict[str, np.ndarray] = {}
        for col in self.columns:
            values = columns.get(col.name)
            if values is None:
                if col.required:
                    raise InputError(f"column {col.name!r} is required by the model signature but missing")
                values = [None] * n_rows
            elif len(values) != n_rows:
                raise InputError(f"column {col.name!r} has {len(values)} values, expected {n_rows}")
            data[col.name] = convert_column(col, values)
        return data

    def records_frame(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """:meth:`frame` of rows given as records (objects of column name to value)."""
        return self.frame(*records_columns(records))

    def warm_up(self) -> None:
        """Score the logged input example once, so the first request pays for no lazy set-up.

        Raises:
            InputError, ValueError: the model cannot score its own example.
        """
        if self.input_example:
            self.predict_proba(self.records_frame(self.input_example))

    def predict(self, X: dict[str, np.ndarray]) -> list[Any]:
        """The model's predictions, as plain JSON-able values."""
        return self.pipeline.predict(X).tolist()

    def predict_proba(self, X: dict[str, np.ndarray]) -> tuple[list[Any], np.ndarray]:
        """The most probable class and the class probabilities of each row (one pass through the pipeline);
        for a regressor, its predicted values and no probabilities (an array of zero columns)."""
        if self.is_regressor:
            return self.pipeline.predict(X).tolist(), np.empty((len(X), 0))
        proba = self.pipeline.predict_proba(X)
        labels = np.asarray(self.pipeline.classes_).take(proba.argmax(axis=1)).tolist()
        return labels, proba


def public_source(source: str | None) -> str | None:
    """The model's source URI if it is a registry or object-store URI; None for a local path."""
    return source if source and source.startswith(PUBLIC_SOURCE_SCHEMES) else None


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in REPORTED_PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            try:
                versions[name] = importlib_metadata.version(f"{name}-skinny")
            except importlib_metadata.PackageNotFoundError:
                continue
    return versions


def _input_example(folder: Path, mlmodel: dict[str, Any]) -> list[dict[str, Any]]:
    saved = (mlmodel.get("saved_input_example_info") or {}).get("artifact_path")
    if not saved or not (folder / saved).is_file():
        return []
    example = json.loads((folder / saved).read_text())
    if isinstance(example, dict) and "columns" in example:
        return [dict(zip(example["columns"], row)) for row in example.get("data", [])]
    return example if isinstance(example, list) else []


def load_served_model(
    folder: str | Path, overrides: dict[str, str | None] | None = None, runtime: str | None = None
) -> ServedModel:
    """Load an MLflow scikit-learn model folder for serving.

    Args:
        folder: the model folder (holding ``MLmodel``).
        overrides: ``name``/``version``/``alias`` to report when the folder does not record them.
        runtime: ``auto``, ``onnx`` or ``sklearn`` (default: the ``MLGATE_SERVE_RUNTIME`` setting).

    Raises:
        ModelLoadError: no MLmodel, no sklearn flavor, no usable signature, or the runtime cannot load it.
    """
    folder = Path(folder)
    mlmodel = read_mlmodel(folder)
    flavor = mlmodel["flavors"]["sklearn"]
    columns = signature_columns(mlmodel)
    pipeline = load_runtime(folder, mlmodel, runtime or ServingSettings().runtime)  # type: ignore[arg-type]
    compiled = onnx_metadata(mlmodel)
    recorded = folder_identity(folder)
    mlgate_meta = (mlmodel.get("metadata") or {}).get("mlgate") or {}
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    info = {
        "name": overrides.get("name") or recorded["name"],
        "version": overrides.get("version") or recorded["version"],
        "alias": overrides.get("alias") or recorded["alias"],
        "source": public_source(recorded["source"]),
        "run_id": mlmodel.get("run_id"),
        "model_id": mlmodel.get("model_id"),
        "git_commit": mlgate_meta.get("git_commit"),
        "image_revision": os.environ.get("MLGATE_GIT_SHA"),
        "created": mlmodel.get("utc_time_created"),
        "signature": {
            "inputs": json.loads(mlmodel["signature"]["inputs"]),
            "outputs": json.loads(mlmodel["signature"].get("outputs") or "null"),
        },
        "task": mlgate_meta.get("task") or (CLASSIFICATION if hasattr(pipeline, "classes_") else REGRESSION),
        "classes": [str(c) for c in getattr(pipeline, "classes_", [])],
        "sklearn_version": flavor.get("sklearn_version"),
        "runtime": pipeline.name,
        "onnx": {k: compiled[k] for k in ("passed", "reason", "precision", "rows") if k in compiled} or None,
        "packages": _package_versions(),
    }
    if info["version"] is not None:
        info["version"] = str(info["version"])
    return ServedModel(
        pipeline=pipeline, columns=columns, info=info, input_example=_input_example(folder, mlmodel)
    )
