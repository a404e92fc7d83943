"""Step 3, evaluate: score candidate and current champion on the same held-out split; write the report."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.inspection import permutation_importance

from mlgate.config import PipelineConfig
from mlgate.evidence import Scored, paired_bootstrap, slice_metrics
from mlgate.gate import decide
from mlgate.io import read_step_result, read_table, write_json, write_text
from mlgate.models import allow_model_loading, champion_version
from mlgate.report import render_report
from mlgate.tracking import TAG_PREFIX, step_run

log = logging.getLogger(__name__)


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}


def _evaluate_model(
    model_uri: str, test: pd.DataFrame, cfg: PipelineConfig, prefix: str = ""
) -> dict[str, float]:
    result = mlflow.models.evaluate(
        model=model_uri,
        data=test,
        targets=cfg.data.target,
        model_type="regressor" if cfg.is_regression else "classifier",
        evaluators=["default"],
        evaluator_config={
            "default": {
                "metric_prefix": prefix,
                "log_model_explainability": False,
                "log_metrics_with_dataset_info": False,
            }
        },
    )
    return {k.removeprefix(prefix): v for k, v in _scalar_metrics(result.metrics).items()}


def _scored(model: Any, test: pd.DataFrame, cfg: PipelineConfig) -> Scored:
    """A model's per-row output on the held-out rows, for paired comparisons."""
    X = test[cfg.data.feature_names]
    if cfg.is_regression:
        return Scored(np.asarray(model.predict(X), dtype=float))
    classes = tuple(str(c) for c in model.classes_)
    proba = model.predict_proba(X) if hasattr(model, "predict_proba") else None
    return Scored(np.asarray(model.predict(X)).astype(str), proba, classes)


def _evidence(
    cfg: PipelineConfig, y: np.ndarray, candidate: Scored, champion: Scored | None
) -> dict[str, dict[str, Any]]:
    """The paired-bootstrap interval of candidate − champion of each threshold asking for confidence."""
    if champion is None:
        return {}
    found = {}
    for t in cfg.promotion.thresholds:
        if t.confidence is not None:
            interval = paired_bootstrap(
                t.metric,
                y,
                candidate,
                champion,
                t.confidence,
                cfg.promotion.bootstrap_resamples,
                cfg.split.seed,
            )
            found[t.metric] = interval.to_dict()
    return found


def _slices(cfg: PipelineConfig, test: pd.DataFrame, y: np.ndarray, scored: Scored) -> list[dict[str, Any]]:
    """Each slice rule's metric on every slice of its feature large enough to be judged."""
    rows = []
    for rule in cfg.promotion.slices:
        values = test[rule.feature].to_numpy()
        for value, entry in slice_metrics(rule.metric, y, values, scored, rule.min_rows).items():
            rows.append(
                {
                    "feature": rule.feature,
                    "metric": rule.metric,
                    "value": value,
                    "rows": entry["rows"],
                    "score": entry["value"],
                }
            )
    return rows


def _log_regression_plots(y: np.ndarray, predicted: np.ndarray) -> None:
    """Residuals against predictions, and predictions against actual values, of the held-out split."""
    residuals = y - predicted
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.scatter(predicted, residuals, s=10, alpha=0.6)
    left.axhline(0.0, color="grey", linewidth=1)
    left.set(xlabel="predicted", ylabel="residual (actual - predicted)", title="Residuals")
    right.scatter(y, predicted, s=10, alpha=0.6)
    low, high = float(min(y.min(), predicted.min())), float(max(y.max(), predicted.max()))
    right.plot([low, high], [low, high], color="grey", linewidth=1)
    right.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual")
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        fig.savefig(Path(tmp) / "residuals.png")
        mlflow.log_artifacts(tmp, artifact_path="evaluation")
    plt.close(fig)


def _log_feature_importance(model: Any, test: pd.DataFrame, cfg: PipelineConfig) -> None:
    """Permutation importance of each input column on the held-out split, as a chart and a table."""
    features = cfg.data.feature_names
    result = permutation_importance(
        model, test[features], test[cfg.data.target], n_repeats=5, random_state=cfg.split.seed, n_jobs=1
    )
    table = pd.DataFrame(
        {
            "feature": features,
            "importance_mean": result.importances_mean,
            "importance_std": result.importances_std,
        }
    ).sort_values("importance_mean")
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(features) + 1))
    ax.barh(table["feature"], table["importance_mean"], xerr=table["importance_std"])
    ax.set_xlabel(f"permutation importance (drop in {'R²' if cfg.is_regression else 'accuracy'})")
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        fig.savefig(Path(tmp) / "feature_importance.png")
        table.to_csv(Path(tmp) / "feature_importance.csv", index=False)
        mlflow.log_artifacts(tmp, artifact_path="evaluation")
    plt.close(fig)


def evaluate(cfg: PipelineConfig) -> dict[str, Any]:
    """Evaluate the candidate from ``train`` and the current champion (if any) on the same test split.

    Returns:
        The content of ``<outputs>/evaluation.json``: candidate and champion metrics and the gate's verdict
        per threshold. ``<outputs>/report.md`` holds the same as a Markdown table.
    """
    trained = read_step_result(cfg.outputs, "train")
    test = read_table(trained["test_path"])
    target = cfg.data.target
    y = test[target].to_numpy(dtype=float) if cfg.is_regression else test[target].astype(str).to_numpy()
    champion = champion_version(cfg)
    champion_metrics: dict[str, float] | None = None
    champion_error: str | None = None
    with allow_model_loading(), step_run(cfg, "evaluate") as run:
        mlflow.set_tag(f"{TAG_PREFIX}candidate_run_id", trained["run_id"])
        candidate_metrics = _evaluate_model(trained["model_uri"], test, cfg)
        candidate_model = mlflow.sklearn.load_model(trained["model_uri"])
        _log_feature_importance(candidate_model, test, cfg)
        candidate_scored = _scored(candidate_model, test, cfg)
        if cfg.is_regression:
            _log_regression_plots(y, candidate_scored.predicted.astype(float))
        champion_scored: Scored | None = None
        if champion is not None:
            mlflow.set_tag(f"{TAG_PREFIX}champion_version", str(champion.version))
            champion_uri = f"models:/{cfg.model_name}/{champion.version}"
            try:
                champion_metrics = _evaluate_model(champion_uri, test, cfg, prefix="champion_")
                champion_scored = _scored(mlflow.sklearn.load_model(champion_uri), test, cfg)
            except (MlflowException, KeyError, ValueError) as exc:
                champion_error = f"the champion (version {champion.version}) cannot score this split: {exc}"
                champion_metrics = None
                log.warning("evaluate: %s", champion_error)
    evidence = _evidence(cfg, y, candidate_scored, champion_scored)
    slices = {
        "candidate": _slices(cfg, test, y, candidate_scored),
        "champion": None if champion_scored is None else _slices(cfg, test, y, champion_scored),
    }
    decision = decide(
        cfg.promotion.thresholds,
        candidate_metrics,
        champion_metrics,
        evidence,
        cfg.promotion.slices,
        slices,
    )
    evaluation = {
        "evaluate_run_id": run.info.run_id,
        "candidate": {
            "run_id": trained["run_id"],
            "model_uri": trained["model_uri"],
            "metrics": candidate_metrics,
        },
        "champion": (
            None
            if champion is None
            else {"version": str(champion.version), "run_id": champion.run_id, "metrics": champion_metrics}
        ),
        "champion_error": champion_error,
        "task": cfg.task,
        "test_rows": len(test),
        "evidence": evidence,
        "slices": slices,
        "gate": decision.to_dict(),
    }
    write_json(evaluation, cfg.outputs / "evaluation.json")
    write_text(render_report(cfg, evaluation), cfg.outputs / "report.md")
    shown = {t.metric: candidate_metrics.get(t.metric) for t in cfg.promotion.thresholds}
    log.info(
        "evaluate: candidate %s on %d rows; champion %s; gate would %s",
        shown,
        len(test),
        (
            "none"
            if champion is None
            else f"v{champion.version} {({m: (champion_metrics or {}).get(m) for m in shown})}"
        ),
        "pass" if decision.passed else "reject",
    )
    return evaluation
