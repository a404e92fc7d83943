"""What runs a model's predictions: ONNX Runtime on the compiled ``onnx/model.onnx`` when training proved it
gives the scikit-learn pipeline's answers, else the scikit-learn pipeline itself. Serving and both batch
engines load a model through :func:`load_runtime`; both runtimes take a DataFrame or a mapping of column name
to array, and answer ``predict`` / ``predict_proba`` / ``classes_`` as scikit-learn does.

Importing this module imports neither pandas nor scikit-learn: the ONNX serving image has neither.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.modelio import RUNTIMES, ModelLoadError, RuntimeChoice, load_pipeline, read_mlmodel

AUTO, ONNX, SKLEARN = RUNTIMES
ONNX_FILE = "onnx/model.onnx"
PARITY_FILE = "onnx/parity.json"
# How the graph is fed (mlgate.compiler builds it so): numbers as float64 (N, 1), text as strings (N, 1). A
# missing text value (NaN) is imputed here with the fitted imputer's value, as scikit-learn imputes it; None,
# which scikit-learn's imputer does not count as missing, becomes NONE_TEXT: a category of its own when the
# training data held None (mlgate's typed data does), else an unseen one (all one-hot zeros), as it is there.
NONE_TEXT = "\x00none"
PROBABILITIES, LABEL, VARIABLE = "probabilities", "label", "variable"
THREADS_ENV = "MLGATE_ONNX_THREADS"  # ONNX Runtime threads per run (default 1: parallelism is the callers')


def onnx_metadata(mlmodel: dict[str, Any]) -> dict[str, Any]:
    """What training recorded about the compiled model (``metadata.mlgate.onnx``): empty when none."""
    return ((mlmodel.get("metadata") or {}).get("mlgate") or {}).get("onnx") or {}


class SklearnRuntime:
    """The scikit-learn pipeline, fed a DataFrame built from the columns it is given."""

    name = SKLEARN

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        if hasattr(pipeline, "classes_"):
            self.classes_ = np.asarray(pipeline.classes_)

    @staticmethod
    def _frame(X: Any) -> Any:
        import pandas as pd

        return X if isinstance(X, pd.DataFrame) else pd.DataFrame(dict(X), copy=False)

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.pipeline.predict(self._frame(X)))

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(self._frame(X)))


def text_input(values: Any, fill: str, strict: bool = False) -> np.ndarray:
    """A text column as the graph takes it, shaped (N, 1): NaN (what scikit-learn imputes) made ``fill``, None
    (which it does not) ``NONE_TEXT``, the rest as it is (vectorised: a batch chunk has 100,000 rows).
    ``strict``: also make any value that is not text its text (numbers in a text column), one by one."""
    array = np.asarray(values, dtype=object).ravel()
    out = array.copy()
    out[array == None] = NONE_TEXT  # noqa: E711 - elementwise, not an identity test
    out[array != array] = fill  # NaN is the one value not equal to itself
    if strict:
        out = np.array([v if type(v) is str else str(v) for v in out], dtype=object)
    return out.reshape(-1, 1)


class OnnxRuntime:
    """A compiled model in ONNX Runtime, fed one (N, 1) input per column of the model's signature."""

    name = ONNX

    def __init__(self, model: bytes, inputs: list[dict[str, str]], classes: list[Any] | None) -> None:
        import onnxruntime as ort

        ort.set_default_logger_severity(3)  # errors reach the caller as exceptions, not as log lines
        options = ort.SessionOptions()
        threads = int(os.environ.get(THREADS_ENV, "1"))
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.inputs = [
            (spec["name"], spec.get("fill") if spec["kind"] == "text" else None) for spec in inputs
        ]
        self.outputs = [o.name for o in self.session.get_outputs()]
        if classes is not None:
            self.classes_ = np.asarray(classes)

    def feed(self, X: Mapping[str, Any], strict: bool = False) -> dict[str, np.ndarray]:
        """The graph's inputs from a DataFrame or a mapping of column to values."""
        return {
            name: (
                np.asarray(X[name], dtype=np.float64).reshape(-1, 1)
                if fill is None
                else text_input(X[name], fill, strict)
            )
            for name, fill in self.inputs
        }

    def _run(self, X: Mapping[str, Any]) -> dict[str, np.ndarray]:
        try:
            outputs = self.session.run(None, self.feed(X))
        except RuntimeError:
            # a text column holding something else (a number): feed its text, as a DataFrame would
            outputs = self.session.run(None, self.feed(X, strict=True))
        return dict(zip(self.outputs, outputs))

    def predict(self, X: Mapping[str, Any]) -> np.ndarray:
        out = self._run(X)
        if VARIABLE in out:
            return out[VARIABLE].astype(np.float64).ravel()
        return out[LABEL].ravel()  # the estimator's own predict (an SVC's is not its most probable class)

    def predict_both(self, X: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """``predict`` and ``predict_proba`` of a classifier from one run of the graph."""
        out = self._run(X)
        return out[LABEL].ravel(), out[PROBABILITIES].astype(np.float64)

    def predict_proba(self, X: Mapping[str, Any]) -> np.ndarray:
        if not hasattr(self, "classes_"):
            raise AttributeError("a regressor has no predict_proba")
        return self._run(X)[PROBABILITIES].astype(np.float64)


Runtime = SklearnRuntime | OnnxRuntime


def pick_runtime(folder: str | Path, mlmodel: dict[str, Any], choice: RuntimeChoice = AUTO) -> str:
    """The runtime ``choice`` comes to for this model: ``auto`` is ONNX Runtime when training proved the
    compiled model's parity, its file is there and onnxruntime is installed, else scikit-learn.

    Raises:
        ModelLoadError: an unknown choice, or ``onnx`` for a model without a parity-proven ONNX file.
    """
    if choice not in RUNTIMES:
        raise ModelLoadError(f"unknown runtime {choice!r}: choose one of {', '.join(RUNTIMES)}")
    if choice == SKLEARN:
        return SKLEARN
    meta = onnx_metadata(mlmodel)
    usable = bool(meta.get("passed")) and (Path(folder) / meta.get("path", ONNX_FILE)).is_file()
    if choice == ONNX and not usable:
        why = meta.get("reason") or "training recorded no compiled model"
        raise ModelLoadError(f"{folder}: no parity-proven ONNX model ({why})")
    return ONNX if usable and importlib.util.find_spec("onnxruntime") is not None else SKLEARN


def load_runtime(
    folder: str | Path, mlmodel: dict[str, Any] | None = None, choice: RuntimeChoice = AUTO
) -> Runtime:
    """The runtime of a model folder, as :func:`pick_runtime` chooses it.

    Raises:
        ModelLoadError: the chosen runtime cannot load this model.
    """
    mlmodel = read_mlmodel(folder) if mlmodel is None else mlmodel
    if pick_runtime(folder, mlmodel, choice) == SKLEARN:
        return SklearnRuntime(load_pipeline(folder, mlmodel))
    meta = onnx_metadata(mlmodel)
    try:
        return OnnxRuntime(
            (Path(folder) / meta.get("path", ONNX_FILE)).read_bytes(), meta["inputs"], meta.get("classes")
        )
    except ImportError:  # only when onnx is forced: auto picks it only where onnxruntime is installed
        raise ModelLoadError(
            "onnxruntime is not installed: install it, or choose the sklearn runtime"
        ) from None
