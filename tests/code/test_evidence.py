"""The paired evidence behind the gate: the same metrics as MLflow computes, a seeded bootstrap of
candidate − champion on the same rows, McNemar's exact test and per-slice metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    f1_score,
    log_loss,
    mean_absolute_percentage_error,
    precision_score,
    r2_score,
    recall_score,
)

from mlgate.evidence import PAIRED_METRICS, Scored, mcnemar, paired_bootstrap, slice_metrics

RNG = np.random.default_rng(0)
Y = RNG.choice(np.array(["a", "b", "c"]), 300)


def _noisy(y: np.ndarray, error_rate: float, seed: int) -> Scored:
    rng = np.random.default_rng(seed)
    flip = rng.random(len(y)) < error_rate
    predicted = np.where(flip, rng.choice(np.array(["a", "b", "c"]), len(y)), y)
    proba = np.full((len(y), 3), 0.1)
    proba[np.arange(len(y)), np.searchsorted(["a", "b", "c"], predicted)] = 0.8
    return Scored(predicted, proba, ("a", "b", "c"))


def test_metrics_agree_with_scikit_learn():
    s = _noisy(Y, 0.3, 1)
    for name, fn in (
        ("f1_score", f1_score),
        ("precision_score", precision_score),
        ("recall_score", recall_score),
    ):
        assert PAIRED_METRICS[name](Y, s) == pytest.approx(fn(Y, s.predicted, average="weighted"))
        binary = Y != "a"
        two = Scored(np.where(s.predicted != "a", "yes", "no"), None, ("no", "yes"))
        y2 = np.where(binary, "yes", "no")
        assert PAIRED_METRICS[name](y2, two) == pytest.approx(fn(y2, two.predicted, pos_label="yes"))
    assert PAIRED_METRICS["log_loss"](Y, s) == pytest.approx(log_loss(Y, s.proba, labels=["a", "b", "c"]))
    y = RNG.normal(100, 20, 200)
    r = Scored(y + RNG.normal(0, 5, 200))
    assert PAIRED_METRICS["r2_score"](y, r) == pytest.approx(r2_score(y, r.predicted))
    assert PAIRED_METRICS["mean_absolute_percentage_error"](y, r) == pytest.approx(
        mean_absolute_percentage_error(y, r.predicted)
    )


def test_the_bootstrap_is_seeded_and_paired():
    better, worse = _noisy(Y, 0.1, 1), _noisy(Y, 0.5, 2)
    a = paired_bootstrap("accuracy_score", Y, better, worse, 0.95, 500, seed=7)
    b = paired_bootstrap("accuracy_score", Y, better, worse, 0.95, 500, seed=7)
    assert a == b and 0 < a.low < a.difference < a.high
    assert (
        a.mcnemar["candidate_only_right"] > a.mcnemar["champion_only_right"] and a.mcnemar["p_value"] < 1e-6
    )
    same = paired_bootstrap("accuracy_score", Y, better, better, 0.95, 500, seed=7)
    assert (same.low, same.high, same.difference) == (0.0, 0.0, 0.0) and same.mcnemar["p_value"] == 1.0
    predicted = better.predicted.copy()
    right, wrong = np.flatnonzero(predicted == Y), np.flatnonzero(predicted != Y)
    predicted[right[:4]] = np.where(Y[right[:4]] == "a", "b", "a")  # four rows made wrong ...
    predicted[wrong[:3]] = Y[wrong[:3]]  # ... three made right: near-identical
    near = paired_bootstrap("accuracy_score", Y, Scored(predicted), better, 0.95, 500, seed=7)
    assert near.low < 0 < near.high and near.mcnemar["p_value"] > 0.5


def test_mcnemar_counts_only_the_rows_the_models_disagree_on():
    y = np.array(["a"] * 10)
    cand = Scored(np.array(["a"] * 8 + ["b"] * 2))
    champ = Scored(np.array(["a"] * 5 + ["b"] * 5))
    result = mcnemar(y, cand, champ)
    assert (result["candidate_only_right"], result["champion_only_right"]) == (3, 0)
    assert result["p_value"] == pytest.approx(0.25)


def test_slices_skip_the_small_ones():
    values = np.array(["x"] * 250 + ["y"] * 45 + ["z"] * 5)
    found = slice_metrics("accuracy_score", Y, values, _noisy(Y, 0.2, 4), min_rows=10)
    assert set(found) == {"x", "y"} and found["y"]["rows"] == 45
