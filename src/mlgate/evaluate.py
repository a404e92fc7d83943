"""Step 3, evaluate: score candidate and current champion on the same held-out split; write the report."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import scipy
import sklearn
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models.evaluation.artifacts import CsvEvaluationArtifact, ImageEvaluationArtifact
from mlflow.utils.time import get_current_time_millis
from sklearn.inspection import permutation_importance

from mlgate.config import PipelineConfig
from mlgate.evidence import Scored, paired_bootstrap, slice_metrics
from mlgate.gate import decide
from mlgate.io import read_step_result, read_table, staged, write_json, write_text
from mlgate.models import allow_model_loading, champion_version, check_model_uri
from mlgate.report import render_report
from mlgate.tracking import TAG_PREFIX, step_run

log = logging.getLogger(__name__)

CHAMPION_PREFIX = "champion_"
# A model's evaluation on one held-out split, kept in the outputs so that the next run, where this model is
# the champion, logs it again instead of recomputing it (see _evaluate_champion).
CACHE_FOLDER = "evaluation_cache"
CACHE_FORMAT = 1
_MANIFEST, _SCORED = "manifest.json", "scored.npz"
# Options of MLflow's default evaluator besides the metric prefix.
_EVALUATOR_OPTIONS = {"log_model_explainability": False, "log_metrics_with_dataset_info": False}
_LOGGED_MODEL_URI = re.compile(r"models:/m-[0-9a-f]+")


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}


@dataclass(frozen=True)
class _Evaluated:
    """One model's evaluation on the held-out split: MLflow's metrics (without the prefix) and its rows."""

    metrics: dict[str, float]
    scored: Scored


def _mlflow_evaluate(model: Any, test: pd.DataFrame, cfg: PipelineConfig, prefix: str) -> Any:
    """``mlflow.models.evaluate`` with the default evaluator; logs its metrics and plots to the active run."""
    return mlflow.models.evaluate(
        model=model,
        data=test,
        targets=cfg.data.target,
        model_type="regressor" if cfg.is_regression else "classifier",
        evaluators=["default"],
        evaluator_config={"default": {"metric_prefix": prefix, **_EVALUATOR_OPTIONS}},
    )


def _unprefixed(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in metrics.items()}


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_key(cfg: PipelineConfig, model_uri: str, test_path: str) -> dict[str, Any] | None:
    """What a kept evaluation must match to be reused: the model (a logged model's ID: MLflow never changes a
    logged model's files), the bytes of the held-out split, the target and task, the evaluator's options and
    the versions of everything that computes or draws the result. None when the model is not named by a
    logged model ID or the split is not a local file: such an evaluation is never kept."""
    if not _LOGGED_MODEL_URI.fullmatch(model_uri) or not Path(test_path).is_file():
        return None
    return {
        "format": CACHE_FORMAT,
        "model": model_uri,
        "split_sha256": _file_digest(Path(test_path)),
        "target": cfg.data.target,
        "task": cfg.task,
        "evaluator": _EVALUATOR_OPTIONS,
        "versions": {m.__name__: m.__version__ for m in (mlflow, sklearn, np, pd, scipy, matplotlib)},
    }


def _cache_folder(cfg: PipelineConfig, key: dict[str, Any]) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cfg.outputs / CACHE_FOLDER / name


def _keep(cfg: PipelineConfig, key: dict[str, Any], result: Any, prefix: str, scored: Scored) -> Path | None:
    """Keep a model's evaluation for a later run: MLflow's metrics, the files it logged and the model's rows.

    MLflow names a plot ``<prefix><name>.png`` and a table ``<name>.csv``; an evaluation that logged anything
    else, or under another name, is not kept (a later run evaluates again)."""
    files = []
    for name, artifact in result.artifacts.items():
        if isinstance(artifact, ImageEvaluationArtifact):
            file, prefixed = f"{name}.png", True
        elif isinstance(artifact, CsvEvaluationArtifact):
            file, prefixed = f"{name}.csv", False
        else:
            return None
        if artifact.uri.rstrip("/").rpartition("/")[2] != (prefix + file if prefixed else file):
            return None
        files.append((file, prefixed, artifact.uri))
    folder = _cache_folder(cfg, key)
    try:
        _write_kept(folder, key, result, prefix, scored, files)
    except (OSError, TypeError, ValueError, MlflowException) as exc:  # the step does not need it
        log.warning("evaluate: could not keep this evaluation for the next run in %s: %s", folder, exc)
        return None
    return folder


def _write_kept(
    folder: Path,
    key: dict[str, Any],
    result: Any,
    prefix: str,
    scored: Scored,
    files: list[tuple[str, bool, str]],
) -> None:
    with staged(folder, folder=True) as out:
        tmp = Path(out.path)
        (tmp / "artifacts").mkdir()
        listed = []
        for file, prefixed, uri in files:
            got = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp / "download")))
            shutil.copyfile(got, tmp / "artifacts" / file)
            listed.append(
                {"file": file, "prefixed": prefixed, "sha256": _file_digest(tmp / "artifacts" / file)}
            )
        shutil.rmtree(tmp / "download", ignore_errors=True)
        arrays = {"predicted": scored.predicted, "classes": np.asarray(scored.classes, dtype=str)}
        if scored.proba is not None:
            arrays["proba"] = np.asarray(scored.proba, dtype=float)
        np.savez(tmp / _SCORED, **arrays)
        manifest = {
            "key": key,
            "metrics": _unprefixed(result.metrics, prefix),
            "artifacts": listed,
            "scored_sha256": _file_digest(tmp / _SCORED),
        }
        text = json.dumps(manifest, indent=2, sort_keys=True, default=lambda v: v.item())  # numpy scalars
        (tmp / _MANIFEST).write_text(text + "\n")


def _kept(cfg: PipelineConfig, key: dict[str, Any]) -> tuple[dict[str, Any], Scored, Path] | None:
    """The kept evaluation for ``key``: its manifest, the model's rows and its folder; None unless every file
    is there with the digest it was kept with."""
    folder = _cache_folder(cfg, key)
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
        if manifest.get("key") != key or _file_digest(folder / _SCORED) != manifest["scored_sha256"]:
            return None
        for entry in manifest["artifacts"]:
            if _file_digest(folder / "artifacts" / entry["file"]) != entry["sha256"]:
                return None
        with np.load(folder / _SCORED, allow_pickle=False) as arrays:
            proba = arrays["proba"] if "proba" in arrays.files else None
            scored = Scored(arrays["predicted"], proba, tuple(str(c) for c in arrays["classes"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.debug("evaluate: no usable kept evaluation in %s: %s", folder, exc)
        return None
    return manifest, scored, folder


def _log_kept(
    cfg: PipelineConfig, test: pd.DataFrame, run_id: str, manifest: dict[str, Any], folder: Path
) -> None:
    """Log a kept evaluation into the evaluate run as ``mlflow.models.evaluate`` logs the champion's: the
    split as a dataset input in the context of the prefix, the prefixed metrics (one timestamp, step 0),
    the plots under prefixed names and the tables under their own."""
    dataset = mlflow.data.from_pandas(test, targets=cfg.data.target)
    mlflow.log_input(dataset, context=CHAMPION_PREFIX)
    timestamp = get_current_time_millis()
    metrics = [
        Metric(
            key=f"{CHAMPION_PREFIX}{k}",
            value=v,
            timestamp=timestamp,
            step=0,
            dataset_name=dataset.name,
            dataset_digest=dataset.digest,
            run_id=run_id,
        )
        for k, v in manifest["metrics"].items()
    ]
    mlflow.MlflowClient().log_batch(run_id, metrics=metrics)
    with tempfile.TemporaryDirectory() as tmp:
        for entry in manifest["artifacts"]:
            name = CHAMPION_PREFIX + entry["file"] if entry["prefixed"] else entry["file"]
            shutil.copyfile(folder / "artifacts" / entry["file"], Path(tmp) / name)
        if manifest["artifacts"]:
            mlflow.log_artifacts(tmp)


def _prune(cfg: PipelineConfig, keep: set[Path | None]) -> None:
    """Remove the kept evaluations of models that are neither this run's candidate nor its champion."""
    root = cfg.outputs / CACHE_FOLDER
    if root.is_dir():
        for entry in root.iterdir():
            if entry not in keep:
                shutil.rmtree(entry, ignore_errors=True)


def _evaluate_champion(
    cfg: PipelineConfig, champion: Any, test: pd.DataFrame, test_path: str, run_id: str
) -> tuple[_Evaluated, Path | None]:
    """The champion on the held-out split, evaluated once per model and split.

    When an earlier run kept this model's evaluation on these very rows (it was that run's candidate or
    champion), the kept result is logged again and nothing is loaded or predicted; else MLflow evaluates it
    and the result is kept. Reuse is only possible where ``mlflow.models.evaluate`` links the champion's
    metrics to no logged model (no model ID on the version, no active model), which is what it replays.

    Raises:
        MlflowException, KeyError, ValueError: the champion cannot score this split.
    """
    key = _cache_key(cfg, str(champion.source), test_path)
    if (
        key is not None
        and getattr(champion, "model_id", None) is None
        and mlflow.get_active_model_id() is None
    ):
        found = _kept(cfg, key)
        if found is not None:
            manifest, scored, folder = found
            _log_kept(cfg, test, run_id, manifest, folder)
            log.info(
                "evaluate: champion v%s: its evaluation on this split is reused from %s",
                champion.version,
                folder,
            )
            return _Evaluated(_scalar_metrics(manifest["metrics"]), scored), folder
    uri = f"models:/{cfg.model_name}/{champion.version}"
    check_model_uri(uri, cfg.estimator.trusted_types)
    result = _mlflow_evaluate(uri, test, cfg, CHAMPION_PREFIX)
    scored = _scored(mlflow.sklearn.load_model(uri), test, cfg)
    folder = None if key is None else _keep(cfg, key, result, CHAMPION_PREFIX, scored)
    return _Evaluated(_scalar_metrics(_unprefixed(result.metrics, CHAMPION_PREFIX)), scored), folder


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
    kept: set[Path | None] = set()
    with allow_model_loading(), step_run(cfg, "evaluate") as run:
        mlflow.set_tag(f"{TAG_PREFIX}candidate_run_id", trained["run_id"])
        # Loaded once: MLflow evaluates this object (the same model ID as the URI) and we predict with it.
        check_model_uri(trained["model_uri"], cfg.estimator.trusted_types)
        candidate = mlflow.pyfunc.load_model(trained["model_uri"])
        result = _mlflow_evaluate(candidate, test, cfg, "")
        candidate_metrics = _scalar_metrics(result.metrics)
        candidate_model = candidate.get_raw_model()
        _log_feature_importance(candidate_model, test, cfg)
        candidate_scored = _scored(candidate_model, test, cfg)
        key = _cache_key(cfg, trained["model_uri"], trained["test_path"])
        if key is not None:
            kept.add(_keep(cfg, key, result, "", candidate_scored))
        if cfg.is_regression:
            _log_regression_plots(y, candidate_scored.predicted.astype(float))
        champion_scored: Scored | None = None
        if champion is not None:
            mlflow.set_tag(f"{TAG_PREFIX}champion_version", str(champion.version))
            try:
                evaluated, folder = _evaluate_champion(
                    cfg, champion, test, trained["test_path"], run.info.run_id
                )
                champion_metrics, champion_scored = evaluated.metrics, evaluated.scored
                kept.add(folder)
            except (MlflowException, KeyError, ValueError) as exc:
                champion_error = f"the champion (version {champion.version}) cannot score this split: {exc}"
                champion_metrics = None
                log.warning("evaluate: %s", champion_error)
    _prune(cfg, kept)
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
