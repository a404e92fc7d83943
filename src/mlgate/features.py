"""Preprocessing that ships inside the model, and the reference statistics drift checks compare against."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlgate.config import DataConfig, EstimatorConfig

REFERENCE_BINS = 10


def build_estimator(spec: EstimatorConfig) -> ClassifierMixin:
    """Instantiate the configured classifier from its import path and parameters.

    Raises:
        ValueError: the class cannot be imported, rejects a parameter, or is not a classifier.
    """
    module_name, _, class_name = spec.class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"estimator.class: cannot import {spec.class_path!r}") from None
    try:
        estimator = cls(**spec.params)
    except TypeError as exc:
        raise ValueError(f"estimator.params for {spec.class_path}: {exc}") from None
    if not is_classifier(estimator):
        raise ValueError(f"estimator.class: {spec.class_path} is not a scikit-learn classifier")
    return estimator


def build_pipeline(data: DataConfig, spec: EstimatorConfig) -> Pipeline:
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
    return Pipeline([("preprocess", pre), ("estimator", build_estimator(spec))])


def reference_stats(df: pd.DataFrame, data: DataConfig) -> dict[str, Any]:
    """Per-feature statistics of the training data: decile bin edges and shares for numeric features,
    category shares for categorical ones, and null fractions for both."""
    stats: dict[str, Any] = {"rows": len(df), "features": {}}
    for feature in data.features:
        col = df[feature.name]
        entry: dict[str, Any] = {"type": feature.type, "null_fraction": float(col.isna().mean())}
        present = col.dropna()
        if feature.type == "numeric":
            values = present.astype(float).to_numpy()
            edges = (
                np.unique(np.quantile(values, np.linspace(0, 1, REFERENCE_BINS + 1))) if len(values) else []
            )
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
        stats["features"][feature.name] = entry
    return stats
