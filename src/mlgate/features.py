"""Preprocessing that ships inside the model, and the reference statistics drift checks compare against."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlgate.config import CLASSIFICATION, DataConfig, EstimatorConfig, Task, import_class
from mlgate.drift import PREDICTION

REFERENCE_BINS = 10


def build_estimator(spec: EstimatorConfig, task: Task = CLASSIFICATION) -> BaseEstimator:
    """Instantiate the configured classifier or regressor from its import path and parameters.

    Raises:
        ValueError: the class cannot be imported, rejects a parameter, or is not an estimator of ``task``.
    """
    cls = import_class(spec.class_path)
    try:
        estimator = cls(**spec.params)
    except TypeError as exc:
        raise ValueError(f"estimator.params for {spec.class_path}: {exc}") from None
    fits = is_classifier(estimator) if task == CLASSIFICATION else is_regressor(estimator)
    if not fits:
        kind = "classifier" if task == CLASSIFICATION else "regressor"
        raise ValueError(f"estimator.class: {spec.class_path} is not a scikit-learn {kind} (task: {task})")
    return estimator


def build_pipeline(data: DataConfig, spec: EstimatorConfig, task: Task = CLASSIFICATION) -> Pipeline:
    """One scikit-learn Pipeline: imputation, scaling and one-hot encoding, then the estimator."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    pre = ColumnTransformer(
        [
            ("numeric", numeric, data.features_of("numeric")),
            ("categorical", categorical, data.features_of("categorical")),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    return Pipeline([("preprocess", pre), ("estimator", build_estimator(spec, task))])


def reference_stats(
    df: pd.DataFrame, data: DataConfig, predictions: pd.Series | None = None, task: Task = CLASSIFICATION
) -> dict[str, Any]:
    """Per-feature statistics of the training data: decile bin edges and shares for numeric features,
    category shares for categorical ones, and null fractions for both. With ``predictions`` (the model's on
    the same rows), the same statistics of the output under the name ``PREDICTION``, so that scoring reports
    drift of the predictions too (numeric for regression, classes for classification)."""
    stats: dict[str, Any] = {"rows": len(df), "features": {}}
    for feature in data.features:
        stats["features"][feature.name] = _column_stats(df[feature.name], feature.type)
    if predictions is not None:
        kind = "categorical" if task == CLASSIFICATION else "numeric"
        stats["features"][PREDICTION] = _column_stats(pd.Series(predictions), kind)
    return stats


def _column_stats(col: pd.Series, kind: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": kind, "null_fraction": float(col.isna().mean())}
    present = col.dropna()
    if kind == "numeric":
        values = present.astype(float).to_numpy()
        edges = np.unique(np.quantile(values, np.linspace(0, 1, REFERENCE_BINS + 1))) if len(values) else []
        counts = np.histogram(values, bins=edges)[0] if len(edges) > 1 else np.array([len(values)])
        entry.update(
            mean=float(values.mean()) if len(values) else None,
            std=float(values.std()) if len(values) else None,
            min=float(values.min()) if len(values) else None,
            max=float(values.max()) if len(values) else None,
            bin_edges=[float(e) for e in edges],
            bin_shares=[float(c) / max(len(values), 1) for c in counts],
        )
    else:
        shares = present.astype(str).value_counts(normalize=True)
        entry["category_shares"] = {str(k): float(v) for k, v in shares.items()}
    return entry
