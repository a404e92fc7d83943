"""`mlgate init`: a first pipeline config guessed from a sample of a table, written with comments saying what
was guessed, and checked by loading it before it is written."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mlgate.config import CLASSIFICATION, REGRESSION, TASK_AUTO, ConfigError, PipelineConfig, Task
from mlgate.data import MAX_FLOAT_CLASSES
from mlgate.io import read_table

SAMPLE_ROWS = 50_000
# Up to this many distinct values a text column lists its categories (more: any value is accepted).
MAX_LISTED_CATEGORIES = 50
# A whole-number column with at most this many distinct values is taken as categorical (codes, flags).
MAX_INTEGER_CODES = 10
# Numeric ranges are widened by this share of the observed range on each side.
RANGE_MARGIN = 0.1
# The cross-validation behind the suggested floors runs on at most this many rows.
CV_ROWS = 5_000
CV_FOLDS = 3
# Above this many rows the default estimator is gradient boosting on histograms (fast on large tables).
LARGE_TABLE_ROWS = 20_000
ID_NAME = re.compile(r"(^|_)(id|uuid|guid|key|index|row)$|^(id|uuid|guid|index|unnamed: ?\d+)$", re.I)


class InitError(ValueError):
    """The table cannot give a config: no such target, nothing left to learn from, or a bad request."""


@dataclass
class Guess:
    """What ``init`` inferred: the config as plain data, and one line per decision it made."""

    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    comments: dict[str, str] = field(default_factory=dict)


def _whole(values: pd.Series) -> bool:
    return bool(np.all(np.mod(values.to_numpy(dtype=float), 1) == 0))


def infer_task(target: pd.Series) -> Task:
    """Classification for text, booleans and a few whole numbers; regression for other numbers."""
    present = target.dropna()
    if not pd.api.types.is_numeric_dtype(present) or pd.api.types.is_bool_dtype(present):
        return CLASSIFICATION
    distinct = present.nunique()
    if _whole(present) and distinct <= max(MAX_FLOAT_CLASSES, 2) and distinct <= len(present) / 10:
        return CLASSIFICATION
    return REGRESSION


def _round_out(value: float, up: bool) -> float:
    """``value`` rounded outwards to three significant digits, so that the bound stays outside the data."""
    if value == 0 or not math.isfinite(value):
        return 0.0
    step = 10 ** (math.floor(math.log10(abs(value))) - 2)
    rounded = (math.ceil if up else math.floor)(value / step) * step
    return float(f"{rounded:.6g}")


def _id_like(name: str, col: pd.Series) -> str | None:
    """Why a column looks like an identifier (and must not be a feature), or None."""
    if ID_NAME.search(name):
        return "its name looks like an identifier"
    present = col.dropna()
    if len(present) > 20 and present.nunique() == len(present):
        if not pd.api.types.is_numeric_dtype(present) or _whole(present):
            return "every value is different (an identifier?)"
    return None


def _feature(name: str, col: pd.Series, notes: list[str]) -> dict[str, Any] | None:
    present = col.dropna()
    spec: dict[str, Any] = {"name": name}
    if present.empty:
        notes.append(f"left out {name!r}: no value in the sample")
        return None
    if present.nunique() == 1:
        notes.append(f"left out {name!r}: one value only ({present.iloc[0]!r})")
        return None
    numeric = pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present)
    if pd.api.types.is_datetime64_any_dtype(present):
        notes.append(f"left out {name!r}: dates are not a feature type mlgate has (derive numbers from it)")
        return None
    if numeric and _whole(present) and present.nunique() <= MAX_INTEGER_CODES:
        codes = sorted(int(v) for v in present.unique())
        spec.update(type="categorical", categories=codes)
        notes.append(f"{name!r}: categorical, whole numbers with {len(codes)} values {codes}")
    elif numeric:
        low, high = float(present.min()), float(present.max())
        margin = (high - low) * RANGE_MARGIN
        floor = _round_out(low - margin, up=False)
        spec.update(
            type="numeric", min=max(floor, 0.0) if low >= 0 else floor, max=_round_out(high + margin, True)
        )
    else:
        values = sorted(present.astype(str).unique())
        spec["type"] = "categorical"
        if len(values) <= MAX_LISTED_CATEGORIES:
            spec["categories"] = values
        else:
            notes.append(f"{name!r}: categorical with {len(values)} values, any value accepted")
    spec["nullable"] = bool(col.isna().any())
    return spec


def _estimator(task: Task, rows: int) -> dict[str, Any]:
    kind = "Classifier" if task == CLASSIFICATION else "Regressor"
    if rows > LARGE_TABLE_ROWS:
        return {"class": f"sklearn.ensemble.HistGradientBoosting{kind}", "params": {"random_state": 42}}
    return {
        "class": f"sklearn.ensemble.RandomForest{kind}",
        "params": {"n_estimators": 200, "min_samples_leaf": 2, "random_state": 42, "n_jobs": 1},
    }


def _cross_validated(cfg: PipelineConfig, table: pd.DataFrame) -> tuple[str, float, float]:
    """The default estimator's held-out score (accuracy or R²) over a few folds of a sample."""
    from sklearn.model_selection import cross_val_score

    from mlgate.data import coerce_types
    from mlgate.features import build_pipeline

    sample = table.sample(n=min(len(table), CV_ROWS), random_state=cfg.split.seed)
    typed, _ = coerce_types(sample, cfg.data, cfg.task)
    typed = typed.dropna(subset=[cfg.data.target])
    pipeline = build_pipeline(cfg.data, cfg.estimator, cfg.task)
    scoring = "r2" if cfg.is_regression else "accuracy"
    scores = cross_val_score(
        pipeline, typed[cfg.data.feature_names], typed[cfg.data.target], cv=CV_FOLDS, scoring=scoring
    )
    return scoring, float(scores.mean()), float(scores.std())


def _thresholds(task: Task, scoring: str, mean: float, std: float) -> list[dict[str, Any]]:
    floor = math.floor(100 * max(mean - 2 * std - 0.02, 0.0)) / 100
    if task == REGRESSION:
        return [
            {"metric": "r2_score", "min_value": floor, "max_regression": 0.02},
            {"metric": "root_mean_squared_error"},
            {"metric": "mean_absolute_error"},
        ]
    return [
        {"metric": "accuracy_score", "min_value": floor, "max_regression": 0.02},
        {"metric": "f1_score", "max_regression": 0.02},
    ]


def guess_config(source: str, target: str, task: str = TASK_AUTO, sample_rows: int = SAMPLE_ROWS) -> Guess:
    """Infer a pipeline config from (a sample of) the table at ``source``.

    Raises:
        InitError: the target is not a column, the task asked for does not fit the target, or no column is
            left to learn from.
        DataSourceError: the table cannot be read.
    """
    table = read_table(source)
    if target not in table.columns:
        raise InitError(
            f"--target {target!r} is not a column of {source}; its columns: {list(table.columns)}"
        )
    if len(table) > sample_rows:
        table = table.sample(n=sample_rows, random_state=0)
    notes: list[str] = [f"read {len(table)} rows and {len(table.columns)} columns of {source}"]
    y = table[target]
    if y.isna().any():
        notes.append(
            f"target {target!r} is null in {int(y.isna().sum())} rows: validate will quarantine them"
        )
    inferred = infer_task(y)
    chosen: Task = inferred if task == TASK_AUTO else task  # type: ignore[assignment]
    if task == TASK_AUTO:
        notes.append(f"task: {chosen} (target {target!r}: {y.nunique()} distinct values, {y.dtype})")
    elif chosen == REGRESSION and not pd.api.types.is_numeric_dtype(y.dropna()):
        raise InitError(f"--task regression: target {target!r} is not numeric ({y.dtype})")
    elif chosen == CLASSIFICATION and inferred == REGRESSION and y.nunique() > MAX_FLOAT_CLASSES:
        raise InitError(
            f"--task classification: target {target!r} is continuous ({y.nunique()} distinct numbers); "
            "use --task regression"
        )
    features = []
    for name in table.columns:
        if name == target:
            continue
        reason = _id_like(str(name), table[name])
        if reason:
            notes.append(f"left out {name!r}: {reason}")
            continue
        spec = _feature(str(name), table[name], notes)
        if spec is not None:
            features.append(spec)
    if not features:
        raise InitError(f"no column of {source} is left to be a feature (see the notes above)")
    stem = re.sub(r"[^a-z0-9]+", "-", Path(source.rstrip("/")).stem.lower()).strip("-") or "table"
    data: dict[str, Any] = {"source": source, "target": target}
    if chosen == CLASSIFICATION:
        classes = sorted(y.dropna().astype(str).unique())
        data["classes"] = classes
        notes.append(f"classes: {classes}")
    data.update(max_invalid_fraction=0.05, drop_duplicates=True, features=features)
    estimator = _estimator(chosen, len(table))
    notes.append(f"estimator: {estimator['class']}")
    config: dict[str, Any] = {
        "experiment": f"mlgate-{stem}",
        "model_name": f"{stem}-{'classifier' if chosen == CLASSIFICATION else 'regressor'}",
        "task": chosen,
        "data": data,
        "estimator": estimator,
        "split": {"test_fraction": 0.25, "seed": 42, "stratify": chosen == CLASSIFICATION},
        "promotion": {"thresholds": [{"metric": "accuracy_score"}]},
    }
    cfg = _validated(config)
    scoring, mean, std = _cross_validated(cfg, table)
    config["promotion"] = {"thresholds": _thresholds(chosen, scoring, mean, std)}
    notes.append(
        f"{scoring} {mean:.3f} ± {std:.3f} in {CV_FOLDS}-fold cross-validation on "
        f"{min(len(table), CV_ROWS)} rows: floor {config['promotion']['thresholds'][0]['min_value']}"
    )
    _validated(config)
    comments = {
        "task": "inferred from the target" if task == TASK_AUTO else "as asked (--task)",
        "classes": "the target's values in the sample; a row with another is quarantined",
        "features": "ranges: the sample's, widened by 10% each side; nullable: the sample had nulls",
        "estimator": "a sensible default; any scikit-learn estimator of the task by import path",
        "thresholds": f"min_value: {scoring} in cross-validation minus two standard deviations and 0.02",
    }
    return Guess(config=config, notes=notes, comments=comments)


def _validated(config: dict[str, Any]) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(config)
    except Exception as exc:  # a bug here, not the user's: say what was produced
        raise ConfigError(f"mlgate init produced an invalid config: {exc}") from exc


def render(guess: Guess) -> str:
    """The config as commented YAML: a header with every guess, and a comment on the guessed sections."""
    header = [
        "# Written by `mlgate init`: review every guess below, then `make pipeline CONFIG=<this file>`.",
        *(f"#   {note}" for note in guess.notes),
        "# Add `intended_use: <what the model is for, and not for>`: each version's model card shows it.",
        "# Every key: README.md, section The config.",
    ]
    body = yaml.safe_dump(guess.config, sort_keys=False, default_flow_style=None, width=110)
    lines, pending = [], dict(guess.comments)
    for line in body.splitlines():
        key = line.strip().split(":", 1)[0]
        comment = pending.pop(key, None)
        lines.append(f"{line}  # {comment}" if comment else line)
    return "\n".join([*header, *lines]) + "\n"


def init_config(
    source: str, target: str, task: str = TASK_AUTO, out: str | Path | None = None, force: bool = False
) -> tuple[str, Guess]:
    """Guess a config from ``source`` and write it to ``out`` (if given), checked by loading it back.

    Returns:
        The YAML text and the guess behind it.

    Raises:
        InitError: see :func:`guess_config`; or ``out`` exists and ``force`` is not set.
    """
    if out is not None and Path(out).exists() and not force:
        raise InitError(f"{out} exists: choose another --out or pass --force")
    guess = guess_config(source, target, task)
    text = render(guess)
    loaded = yaml.safe_load(text)
    if loaded != guess.config:
        raise ConfigError("mlgate init: the written YAML does not read back as the config it was made from")
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text, guess
