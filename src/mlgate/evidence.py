"""Statistical evidence for the gate: a seeded paired bootstrap of candidate − champion on the same held-out
rows (and McNemar's exact test for accuracy), and each metric per slice of a categorical feature."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest

# A probability this small stands for zero in log loss (as scikit-learn clips).
PROBABILITY_FLOOR = 1e-15


@dataclass(frozen=True)
class Scored:
    """One model's per-row output on the held-out rows: labels or values, and class probabilities."""

    predicted: np.ndarray
    proba: np.ndarray | None = None
    classes: tuple[str, ...] = ()


Metric = Callable[[np.ndarray, Scored], float]


def _per_class(y: np.ndarray, s: Scored) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The labels, and per label the true positives, false positives and false negatives (one bincount)."""
    labels = sorted(set(s.classes) | set(np.unique(y).astype(str)) | set(np.unique(s.predicted).astype(str)))
    k = len(labels)
    truth = np.searchsorted(labels, y.astype(str))
    guess = np.searchsorted(labels, s.predicted.astype(str))
    confusion = np.bincount(truth * k + guess, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(float)
    return labels, tp, confusion.sum(axis=0) - tp, confusion.sum(axis=1) - tp


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)


def _averaged(score: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> Metric:
    """A label metric averaged as MLflow does: the last label positive of two, else weighted by support.
    Computed from one confusion matrix, so that a thousand resamples take milliseconds, not seconds."""

    def metric(y: np.ndarray, s: Scored) -> float:
        labels, tp, fp, fn = _per_class(y, s)
        per_class = score(tp, fp, fn)
        if len(labels) == 2:
            return float(per_class[-1])
        support = tp + fn
        return float((per_class * support).sum() / support.sum()) if support.sum() else 0.0

    return metric


def _log_loss(y: np.ndarray, s: Scored) -> float:
    if s.proba is None:
        raise ValueError("log_loss needs class probabilities")
    column = {c: i for i, c in enumerate(s.classes)}
    idx = np.array([column.get(v, -1) for v in y])
    p = np.where(idx >= 0, s.proba[np.arange(len(y)), np.clip(idx, 0, None)], 0.0)
    return float(-np.log(np.clip(p, PROBABILITY_FLOOR, 1.0)).mean())


def _errors(y: np.ndarray, s: Scored) -> np.ndarray:
    return y.astype(float) - s.predicted.astype(float)


def _r2(y: np.ndarray, s: Scored) -> float:
    y = y.astype(float)
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float((_errors(y, s) ** 2).sum()) / total if total else 0.0


def _mape(y: np.ndarray, s: Scored) -> float:
    y = y.astype(float)
    return float((np.abs(_errors(y, s)) / np.maximum(np.abs(y), np.finfo(float).eps)).mean())


# The metrics the gate can put an interval on, by the names evaluation.json gives them.
PAIRED_METRICS: dict[str, Metric] = {
    "accuracy_score": lambda y, s: float((s.predicted == y).mean()),
    "f1_score": _averaged(lambda tp, fp, fn: _ratio(2 * tp, 2 * tp + fp + fn)),
    "precision_score": _averaged(lambda tp, fp, fn: _ratio(tp, tp + fp)),
    "recall_score": _averaged(lambda tp, fp, fn: _ratio(tp, tp + fn)),
    "log_loss": _log_loss,
    "mean_absolute_error": lambda y, s: float(np.abs(_errors(y, s)).mean()),
    "mean_squared_error": lambda y, s: float((_errors(y, s) ** 2).mean()),
    "root_mean_squared_error": lambda y, s: float(np.sqrt((_errors(y, s) ** 2).mean())),
    "r2_score": _r2,
    "mean_absolute_percentage_error": _mape,
    "max_error": lambda y, s: float(np.abs(_errors(y, s)).max()),
}


@dataclass(frozen=True)
class Interval:
    """candidate − champion on the held-out rows: the observed difference and its bootstrap interval."""

    metric: str
    candidate: float
    champion: float
    difference: float
    low: float
    high: float
    confidence: float
    resamples: int
    seed: int
    rows: int
    mcnemar: dict[str, float] | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _take(s: Scored, idx: np.ndarray) -> Scored:
    return Scored(s.predicted[idx], None if s.proba is None else s.proba[idx], s.classes)


def mcnemar(y: np.ndarray, candidate: Scored, champion: Scored) -> dict[str, float]:
    """McNemar's exact test on the rows the two models disagree about: ``b`` rows only the candidate gets
    right, ``c`` only the champion; the two-sided p-value of b vs c under no difference."""
    right_c, right_p = candidate.predicted == y, champion.predicted == y
    b, c = int((right_c & ~right_p).sum()), int((~right_c & right_p).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"candidate_only_right": b, "champion_only_right": c, "p_value": p}


def paired_bootstrap(
    metric: str,
    y: np.ndarray,
    candidate: Scored,
    champion: Scored,
    confidence: float,
    resamples: int,
    seed: int,
) -> Interval:
    """The interval of candidate − champion for ``metric``: both models scored on the same resampled rows.

    Raises:
        KeyError: the metric has no paired implementation (see ``PAIRED_METRICS``).
    """
    fn = PAIRED_METRICS[metric]
    rng = np.random.default_rng(seed)
    n = len(y)
    differences = np.empty(resamples)
    for i in range(resamples):
        idx = rng.integers(0, n, n)
        differences[i] = fn(y[idx], _take(candidate, idx)) - fn(y[idx], _take(champion, idx))
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1.0 - tail])
    cand, champ = fn(y, candidate), fn(y, champion)
    return Interval(
        metric=metric,
        candidate=cand,
        champion=champ,
        difference=cand - champ,
        low=float(low),
        high=float(high),
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        rows=n,
        mcnemar=mcnemar(y, candidate, champion) if metric == "accuracy_score" else None,
    )


def slice_metrics(
    metric: str, y: np.ndarray, values: np.ndarray, scored: Scored, min_rows: int
) -> dict[str, dict[str, float]]:
    """``metric`` on each slice (rows sharing a value of a feature) with at least ``min_rows`` rows."""
    fn = PAIRED_METRICS[metric]
    out = {}
    text = np.asarray([str(v) for v in values], dtype=object)
    for value in sorted(set(text)):
        idx = np.flatnonzero(text == value)
        if len(idx) >= min_rows:
            out[value] = {"rows": int(len(idx)), "value": fn(y[idx], _take(scored, idx))}
    return out
