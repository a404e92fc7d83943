"""Step 2, train: fit the preprocessing + estimator Pipeline; log it as an MLflow model with its lineage."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import skops.io
from mlflow.models import infer_signature
from sklearn.pipeline import Pipeline

from mlgate import data as d
from mlgate.compiler import Compiled, compile_pipeline
from mlgate.config import PipelineConfig
from mlgate.features import build_pipeline, reference_stats
from mlgate.io import read_step_result, read_table, write_json, write_table
from mlgate.runtime import ONNX, ONNX_FILE, PARITY_FILE, SKLEARN
from mlgate.tracking import TAG_PREFIX, git_commit, step_run
from mlgate.trust import check_types
from mlgate.validate import validated_dataset

log = logging.getLogger(__name__)

MODEL_NAME_IN_RUN = "model"
REFERENCE_ARTIFACT = "reference/reference_stats.json"
# What a logged model needs to load and predict, pinned to the installed versions (see model_requirements).
MODEL_DISTRIBUTIONS = ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops")
KNOWN_DISTRIBUTIONS = {"sklearn": ["scikit-learn"]}  # an estimator's top-level module -> its distribution


@lru_cache(maxsize=None)
def model_requirements(class_path: str) -> tuple[str, ...]:
    """The logged model's pip requirements: ``MODEL_DISTRIBUTIONS`` and the distribution of the estimator's
    own package (e.g. xgboost), at their installed versions. Passed to ``log_model`` instead of MLflow's
    inference, which re-imports everything in a subprocess (train took 6.8 s with it, 2.0 s without) and also
    listed whatever the process had imported (pytest, rich)."""
    names = set(MODEL_DISTRIBUTIONS)
    top = class_path.split(".")[0]
    # scikit-learn's own estimators need no scan of every installed package (0.4-1.2 s)
    names.update(KNOWN_DISTRIBUTIONS.get(top) or importlib.metadata.packages_distributions().get(top, []))
    return tuple(sorted(f"{n}=={importlib.metadata.version(n)}" for n in names))


def trusted_types(model: Pipeline, extra: tuple[str, ...] = ()) -> list[str]:
    """The types skops must be told to trust to load ``model``, each in the allow-list every load checks
    (mlgate.trust): a model that could not be loaded back is refused at training.

    Raises:
        UntrustedModelError: the model holds a type outside the allow-list and the config's additions.
    """
    found = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return check_types(found, extra, f"a {type(model).__name__} of this estimator")


def _flat_params(cfg: PipelineConfig) -> dict[str, Any]:
    params: dict[str, Any] = {f"estimator.{k}": v for k, v in cfg.estimator.params.items()}
    params.update(
        {
            "estimator.class": cfg.estimator.class_path,
            "split.test_fraction": cfg.split.test_fraction,
            "split.seed": cfg.split.seed,
            "features": ",".join(cfg.data.feature_names),
            "target": cfg.data.target,
        }
    )
    return params


def _train_metric(cfg: PipelineConfig, y: np.ndarray, fitted: np.ndarray) -> dict[str, float]:
    """How well the model fits its own training rows: accuracy, or RMSE for regression."""
    if cfg.is_regression:
        return {"train_rmse": float(np.sqrt(np.mean((y.astype(float) - fitted) ** 2)))}
    return {"train_accuracy": float((fitted == y).mean())}


def _compile(cfg: PipelineConfig, model: Pipeline, X_test: pd.DataFrame) -> Compiled | None:
    """The ONNX model and its parity report, or None when ``onnx.enabled`` is false."""
    if not cfg.onnx.enabled:
        return None
    compiled = compile_pipeline(model, X_test, cfg.onnx.tolerance)
    if compiled.passed:
        worst = compiled.report.get(
            "max_abs_diff_probability", compiled.report.get("max_rel_diff_prediction")
        )
        log.info("train: compiled to ONNX, parity %.2g on %d rows", worst, compiled.report["rows"])
    else:
        log.warning("train: serving and scoring with scikit-learn: %s", compiled.report["reason"])
    return compiled


def _log_compiled(model_id: str, compiled: Compiled) -> None:
    """The ONNX model (when it passed) and the parity report, into the logged model's own artifacts."""
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / PARITY_FILE).parent.mkdir(parents=True)
        (folder / PARITY_FILE).write_text(json.dumps(compiled.report, indent=2, sort_keys=True) + "\n")
        if compiled.model is not None:
            (folder / ONNX_FILE).write_bytes(compiled.model)
        MlflowClient().log_model_artifacts(model_id, str(folder))


def train(cfg: PipelineConfig, data_path: str | None = None) -> dict[str, Any]:
    """Split the validated data, fit the pipeline and log model, params, reference stats and lineage tags.

    Args:
        cfg: the pipeline config.
        data_path: validated table to train on (default: what ``validate`` wrote).

    Returns:
        The step result written to ``<outputs>/train.json``: run id, model URI, split paths, data digest.
    """
    validated = read_step_result(cfg.outputs, "validate") if data_path is None else {}
    table = read_table(data_path or validated["accepted_path"])
    typed, reasons = d.coerce_types(table, cfg.data, cfg.task)
    if reasons:
        raise ValueError(
            f"{len(reasons)} rows of the training data fail type checks: run `mlgate validate` first"
        )
    train_df, test_df = d.split(typed, cfg.data, cfg.split, cfg.task)
    features, target = cfg.data.feature_names, cfg.data.target
    X_train, y_train = train_df[features], train_df[target]

    model = build_pipeline(cfg.data, cfg.estimator, cfg.task).fit(X_train, y_train)
    fitted = model.predict(X_train)
    train_metric = _train_metric(cfg, y_train.to_numpy(), fitted)
    signature = infer_signature(X_train, model.predict(X_train.head(20)))
    stats = reference_stats(train_df, cfg.data, predictions=pd.Series(fitted), task=cfg.task)
    compiled = _compile(cfg, model, test_df[features])
    runtime = ONNX if compiled is not None and compiled.passed else SKLEARN
    dataset = mlflow.data.from_pandas(
        train_df, source=validated.get("accepted_path", data_path), targets=target
    )
    # The lineage digest is the validated data's, as `mlgate lineage` compares it (validate's digest of the
    # whole accepted table), not the training split's: an unchanged retrain must read as unchanged. A given
    # table is digested as validate digests its accepted rows: typed, in the schema's columns.
    if data_path is None:
        data_digest = validated["dataset_digest"]
    else:
        data_digest = validated_dataset(typed, cfg, data_path).digest

    out = cfg.outputs
    train_path = write_table(train_df, out / "split" / "train.parquet")
    test_path = write_table(test_df, out / "split" / "test.parquet")
    commit = git_commit()
    with step_run(cfg, "train") as run:
        mlflow.log_input(dataset, context="training")
        mlflow.log_params(_flat_params(cfg))
        mlflow.log_metrics({**train_metric, "train_rows": len(train_df), "test_rows": len(test_df)})
        mlflow.set_tags(
            {
                f"{TAG_PREFIX}data_digest": data_digest,
                f"{TAG_PREFIX}train_split_digest": dataset.digest,
                f"{TAG_PREFIX}git_commit": commit,
                f"{TAG_PREFIX}runtime": runtime,
            }
        )
        mlflow.log_dict(stats, REFERENCE_ARTIFACT)
        info = mlflow.sklearn.log_model(
            model,
            name=MODEL_NAME_IN_RUN,
            signature=signature,
            input_example=X_train.head(5),
            serialization_format="skops",
            pip_requirements=list(model_requirements(cfg.estimator.class_path)),
            skops_trusted_types=trusted_types(model, cfg.estimator.trusted_types),
            metadata={
                "mlgate": {
                    "target": target,
                    "task": cfg.task,
                    "classes": [str(c) for c in getattr(model, "classes_", [])],
                    "features": [f.model_dump() for f in cfg.data.features],
                    "reference_stats": stats,
                    "git_commit": commit,
                    "data_digest": data_digest,
                    "config_hash": cfg.digest(),
                    **({"onnx": compiled.report} if compiled is not None else {}),
                }
            },
        )
        if compiled is not None:
            _log_compiled(info.model_id, compiled)
    log.info(
        "train: %s (%s) on %d rows (%d held out), %s, model %s",
        cfg.estimator.class_path,
        cfg.task,
        len(train_df),
        len(test_df),
        ", ".join(f"{k} {v:.4f}" for k, v in train_metric.items()),
        info.model_uri,
    )
    summary = {
        "run_id": run.info.run_id,
        "model_uri": info.model_uri,
        "model_id": info.model_id,
        "train_path": str(train_path),
        "test_path": str(test_path),
        "dataset_digest": data_digest,
        "train_split_digest": dataset.digest,
        "git_commit": commit,
        "config_hash": cfg.digest(),
        "task": cfg.task,
        "train_rows": len(train_df),
        "runtime": runtime,
        **train_metric,
    }
    write_json(summary, out / "train.json")
    return summary
