"""Compiling a fitted pipeline to ONNX at training time, and proving it gives the pipeline's answers.

The preprocessing mlgate builds (:func:`mlgate.features.build_pipeline`) is written as ONNX operators here, so
that it computes exactly what scikit-learn computes: numbers are imputed and scaled in float64 and only then
cast to float32, as scikit-learn's trees cast them (skl2onnx scales in float32, and on real data that moves
values across split thresholds: differences of 0.14 in probability on the penguins). The estimator is
converted by skl2onnx. The result runs on the held-out rows, on the same rows with each feature missing, and
with each category unseen; it is kept only when every label is the pipeline's and every probability (or, for
a regressor, every value relative to its size) is within the configured tolerance.

A pipeline or estimator the converter does not support gives a reason in one line, never a failed training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlgate.runtime import NONE_TEXT, ONNX_FILE, OnnxRuntime

log = logging.getLogger(__name__)

OPSET, ML_OPSET = 17, 3
PARITY_ROWS = 2000  # held-out rows the missing and unseen variants are made from
UNSEEN = "<unseen category>"
FEATURES = "features"  # the float32 matrix the estimator's graph takes


class Unsupported(ValueError):
    """The pipeline cannot be compiled; the message says what."""


@dataclass
class Compiled:
    """A compiled model and its parity report (``model`` is None when it is not to be used)."""

    model: bytes | None
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.model is not None


# --- the preprocessing, as ONNX operators -----------------------------------------------------------------


def _steps(pipeline: Any) -> tuple[ColumnTransformer, Any]:
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        raise Unsupported("the model is not mlgate's preprocess + estimator Pipeline")
    pre, estimator = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(pre, ColumnTransformer) or pre.remainder != "drop":
        raise Unsupported("the preprocessing is not mlgate's ColumnTransformer")
    return pre, estimator


def _numeric(part: Any) -> tuple[SimpleImputer, StandardScaler]:
    steps = dict(part.steps) if isinstance(part, Pipeline) else {}
    imputer, scaler = steps.get("impute"), steps.get("scale")
    if not (isinstance(imputer, SimpleImputer) and isinstance(scaler, StandardScaler)) or len(steps) != 2:
        raise Unsupported("numeric preprocessing other than impute + scale")
    if not (isinstance(imputer.missing_values, float) and np.isnan(imputer.missing_values)):
        raise Unsupported("a numeric imputer for values other than NaN")
    if imputer.add_indicator or np.isnan(imputer.statistics_).any():
        raise Unsupported("a numeric imputer with indicators or an all-missing column")
    return imputer, scaler


def _categorical(part: Any) -> tuple[SimpleImputer, OneHotEncoder]:
    steps = dict(part.steps) if isinstance(part, Pipeline) else {}
    imputer, onehot = steps.get("impute"), steps.get("onehot")
    if not (isinstance(imputer, SimpleImputer) and isinstance(onehot, OneHotEncoder)) or len(steps) != 2:
        raise Unsupported("categorical preprocessing other than impute + one-hot")
    if imputer.add_indicator or onehot.drop is not None or onehot.handle_unknown != "ignore":
        raise Unsupported("a one-hot encoder that drops categories or does not ignore unseen ones")
    if onehot.min_frequency is not None or onehot.max_categories is not None:
        raise Unsupported("a one-hot encoder with infrequent categories")
    if not all(c is None or isinstance(c, str) for cats in onehot.categories_ for c in cats):
        raise Unsupported("categories that are not text")
    return imputer, onehot


def _text(value: Any) -> str:
    """A category as the runtime feeds it: None (a category of its own to scikit-learn) is ``NONE_TEXT``."""
    return NONE_TEXT if value is None else str(value)


def _preprocess_nodes(pre: ColumnTransformer) -> tuple[list[Any], list[Any], list[Any], list[dict[str, str]]]:
    """The nodes, constants and inputs computing ``pre.transform`` into ``FEATURES``; the inputs' specs."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, constants, inputs, specs, parts = [], [], [], [], []

    def const(name: str, value: np.ndarray) -> str:
        constants.append(numpy_helper.from_array(value, name))
        return name

    for kind, part, columns in pre.transformers_:
        if part == "drop" or len(columns) == 0:
            continue
        for i, column in enumerate(columns):
            if not isinstance(column, str):
                raise Unsupported("columns selected by position, not by name")
            c = f"c{len(specs)}"
            if kind == "numeric":
                imputer, scaler = _numeric(part)
                inputs.append(helper.make_tensor_value_info(column, TensorProto.DOUBLE, [None, 1]))
                specs.append({"name": column, "kind": "number"})
                fill = const(f"{c}_median", np.array([imputer.statistics_[i]], dtype=np.float64))
                nodes += [
                    helper.make_node("IsNaN", [column], [f"{c}_nan"]),
                    helper.make_node("Where", [f"{c}_nan", fill, column], [f"{c}_imputed"]),
                ]
                value = f"{c}_imputed"
                if scaler.with_mean:
                    mean = const(f"{c}_mean", np.array([scaler.mean_[i]], dtype=np.float64))
                    nodes.append(helper.make_node("Sub", [value, mean], [f"{c}_centred"]))
                    value = f"{c}_centred"
                if scaler.with_std:
                    scale = const(f"{c}_scale", np.array([scaler.scale_[i]], dtype=np.float64))
                    nodes.append(helper.make_node("Div", [value, scale], [f"{c}_scaled"]))
                    value = f"{c}_scaled"
                nodes.append(helper.make_node("Cast", [value], [f"{c}_out"], to=TensorProto.FLOAT))
            elif kind == "categorical":
                imputer, onehot = _categorical(part)
                inputs.append(helper.make_tensor_value_info(column, TensorProto.STRING, [None, 1]))
                # the runtime imputes text (OnnxRuntime.feed): string operators need opsets some
                # converters do not declare
                specs.append({"name": column, "kind": "text", "fill": _text(imputer.statistics_[i])})
                nodes += [
                    helper.make_node(
                        "OneHotEncoder",
                        [column],
                        [f"{c}_hot"],
                        domain="ai.onnx.ml",
                        cats_strings=[_text(v) for v in onehot.categories_[i]],
                        zeros=1,
                    ),
                    helper.make_node("Flatten", [f"{c}_hot"], [f"{c}_flat"], axis=1),
                    helper.make_node("Cast", [f"{c}_flat"], [f"{c}_out"], to=TensorProto.FLOAT),
                ]
            else:
                raise Unsupported(f"a preprocessing part {kind!r} mlgate does not build")
            parts.append(f"{c}_out")
    nodes.append(helper.make_node("Concat", parts, [FEATURES], axis=1))
    return nodes, constants, inputs, specs


def _estimator_model(estimator: Any, n_features: int, double: bool) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    tensor = (DoubleTensorType if double else FloatTensorType)([None, n_features])
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "classes_") else None
    try:
        return convert_sklearn(
            estimator,
            initial_types=[(FEATURES, tensor)],
            options=options,
            target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
        )
    except Exception as exc:  # skl2onnx raises many kinds (RuntimeError, NotImplementedError, KeyError...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unsupported(f"skl2onnx cannot convert {type(estimator).__name__}: {first[:200]}") from None


def build_onnx(pipeline: Any, double: bool = False) -> tuple[bytes, list[dict[str, str]]]:
    """The whole pipeline as one ONNX model (taking one (N, 1) input per column) and the inputs' specs.

    Raises:
        Unsupported: the pipeline is not one mlgate builds, or skl2onnx cannot convert its estimator.
    """
    from onnx import TensorProto, checker, helper

    pre, estimator = _steps(pipeline)
    nodes, constants, inputs, specs = _preprocess_nodes(pre)
    n_features = len(pre.get_feature_names_out())
    model = _estimator_model(estimator, n_features, double)
    graph = model.graph
    if double:  # the estimator takes float64: the numbers stay as scaled, the one-hot columns become float64
        for node in nodes:
            if node.op_type == "Cast":
                node.attribute[0].i = TensorProto.DOUBLE
    estimator_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + estimator_nodes)
    graph.initializer.extend(constants)
    del graph.input[:]
    graph.input.extend(inputs)
    domains = {o.domain: o for o in model.opset_import}
    if "ai.onnx.ml" not in domains:  # the one-hot encoder's domain, absent from some estimators' graphs
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 1))
    helper.set_model_props(model, {"producer": "mlgate"})
    checker.check_model(model)
    return model.SerializeToString(), specs


# --- parity -----------------------------------------------------------------------------------------------


def parity_rows(X: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """The held-out rows, then (from up to ``PARITY_ROWS`` of them) the same rows with each feature missing
    (NaN, and None for text) and with each category unseen."""
    base = X.head(PARITY_ROWS)
    variants = [X]
    for name in numeric:
        variants.append(base.assign(**{name: np.nan}))
    for name in categorical:
        for value in (np.nan, None, UNSEEN):
            variants.append(
                base.assign(**{name: pd.Series([value] * len(base), index=base.index, dtype=object)})
            )
    return pd.concat(variants, ignore_index=True)


def parity(pipeline: Any, runtime: OnnxRuntime, X: pd.DataFrame, tolerance: float) -> dict[str, Any]:
    """How far the compiled model's answers are from the pipeline's on ``X``."""
    report: dict[str, Any] = {"rows": len(X), "tolerance": tolerance}
    if hasattr(pipeline, "classes_"):
        expected = pipeline.predict_proba(X)
        predicted, got = runtime.predict_both(X)
        labels = np.asarray(pipeline.predict(X)).astype(str)
        mismatched = int((labels != predicted.astype(str)).sum())
        diff = float(np.abs(expected - got).max()) if len(X) else 0.0
        report.update(max_abs_diff_probability=diff, labels_differing=mismatched)
        report["passed"] = mismatched == 0 and diff <= tolerance
    else:
        expected, got = np.asarray(pipeline.predict(X), dtype=np.float64), runtime.predict(X)
        absolute = np.abs(expected - got)
        relative = absolute / np.maximum(1.0, np.abs(expected))
        report.update(
            max_abs_diff_prediction=float(absolute.max()) if len(X) else 0.0,
            max_rel_diff_prediction=float(relative.max()) if len(X) else 0.0,
        )
        report["passed"] = report["max_rel_diff_prediction"] <= tolerance
    return report


def compile_pipeline(pipeline: Any, X_holdout: pd.DataFrame, tolerance: float) -> Compiled:
    """Compile ``pipeline`` and prove its parity on ``X_holdout``; never raises for an unsupported model.

    Returns:
        The ONNX model (None when it cannot be compiled or differs) and the report training records.
    """
    try:
        pre, _ = _steps(pipeline)
        numeric = [c for kind, _, cols in pre.transformers_ if kind == "numeric" for c in cols]
        categorical = [c for kind, _, cols in pre.transformers_ if kind == "categorical" for c in cols]
        rows = parity_rows(X_holdout, numeric, categorical)
    except Unsupported as exc:
        return Compiled(None, {"passed": False, "reason": str(exc)})
    first: dict[str, Any] = {}
    classes = [c.item() if hasattr(c, "item") else c for c in getattr(pipeline, "classes_", [])]
    for double in (False, True):  # float32 first: what scikit-learn's trees compute in
        try:
            model, specs = build_onnx(pipeline, double=double)
            runtime = OnnxRuntime(model, specs, classes if hasattr(pipeline, "classes_") else None)
            report = parity(pipeline, runtime, rows, tolerance)
        except Unsupported as exc:
            report = {"passed": False, "reason": str(exc)}
        except Exception as exc:  # onnxruntime refusing the graph is a reason to stay scikit-learn, too
            report = {"passed": False, "reason": f"ONNX Runtime cannot run the model: {str(exc)[:200]}"}
        else:
            report.update(precision="float64" if double else "float32", path=ONNX_FILE, inputs=specs)
            if hasattr(pipeline, "classes_"):
                report["classes"] = classes
            if report["passed"]:
                return Compiled(model, report)
        first = first or report
    report = first
    if "reason" not in report:
        worst = report.get("max_abs_diff_probability", report.get("max_rel_diff_prediction"))
        report["reason"] = (
            f"the compiled model differs from the pipeline on the held-out rows: "
            f"{report.get('labels_differing', 0)} labels, largest difference {worst:.3g} "
            f"(tolerance {tolerance:g})"
        )
    return Compiled(None, report)
