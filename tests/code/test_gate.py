import pytest

from mlgate.config import Threshold
from mlgate.gate import Decision, decide

ACC = Threshold(metric="accuracy_score", min_value=0.9, max_regression=0.01)
LOSS = Threshold(metric="log_loss", direction="lower", max_value=0.5, max_regression=0.05)


def test_no_champion_applies_absolute_bounds_only():
    d = decide([ACC, LOSS], {"accuracy_score": 0.95, "log_loss": 0.2}, None)
    assert d.passed and {c.rule for c in d.checks} == {"min_value", "max_value"}


def test_below_floor_fails_with_actual_and_required():
    d = decide([ACC], {"accuracy_score": 0.5}, None)
    assert not d.passed
    (fail,) = d.failures
    assert (fail.metric, fail.rule, fail.actual, fail.required) == ("accuracy_score", "min_value", 0.5, 0.9)


def test_equal_to_champion_passes_so_reruns_are_not_failures():
    metrics = {"accuracy_score": 0.95, "log_loss": 0.2}
    assert decide([ACC, LOSS], metrics, dict(metrics)).passed


@pytest.mark.parametrize(
    "candidate, passed",
    [(0.941, True), (0.94, True), (0.939, False)],
)
def test_regression_tolerance_for_higher_is_better(candidate, passed):
    assert decide([ACC], {"accuracy_score": candidate}, {"accuracy_score": 0.95}).passed is passed


@pytest.mark.parametrize("candidate, passed", [(0.24, True), (0.25, True), (0.26, False)])
def test_regression_tolerance_for_lower_is_better(candidate, passed):
    assert decide([LOSS], {"log_loss": candidate}, {"log_loss": 0.2}).passed is passed


def test_min_improvement_requires_beating_the_champion():
    rule = Threshold(metric="accuracy_score", min_improvement=0.02)
    assert not decide([rule], {"accuracy_score": 0.96}, {"accuracy_score": 0.95}).passed
    assert decide([rule], {"accuracy_score": 0.97}, {"accuracy_score": 0.95}).passed


def test_missing_metric_fails_instead_of_being_skipped():
    d = decide([ACC], {"f1_score": 0.99}, None)
    assert not d.passed and d.failures[0].rule == "present" and "f1_score" in d.failures[0].detail


def test_decision_round_trips_through_json_dict():
    d = decide(
        [ACC, LOSS], {"accuracy_score": 0.95, "log_loss": 0.9}, {"accuracy_score": 0.9, "log_loss": 0.1}
    )
    again = Decision.from_dict(d.to_dict())
    assert again == d and again.passed is False


def _interval(low: float, high: float, champion: float = 0.9) -> dict:
    return {"metric": "accuracy_score", "candidate": champion + (low + high) / 2, "champion": champion,
            "difference": (low + high) / 2, "low": low, "high": high, "confidence": 0.95, "resamples": 1000,
            "seed": 1, "rows": 100, "mcnemar": None}  # fmt: skip


SIGNIFICANT = Threshold(metric="accuracy_score", min_improvement=0.0, confidence=0.95)
NON_INFERIOR = Threshold(metric="accuracy_score", max_regression=0.01, confidence=0.95)
RMSE = Threshold(metric="root_mean_squared_error", max_regression=1.0, confidence=0.9)


@pytest.mark.parametrize(
    "rule, low, high, verdict",
    [
        (SIGNIFICANT, 0.01, 0.05, "promote"),  # significantly better
        (SIGNIFICANT, -0.02, 0.03, "hold"),  # the interval holds 0: inconclusive
        (SIGNIFICANT, 0.0, 0.0, "hold"),  # identical predictions are no evidence of improvement
        (SIGNIFICANT, -0.08, -0.01, "reject"),  # significantly worse
        (NON_INFERIOR, -0.005, 0.02, "promote"),  # not worse than the tolerance, with confidence
        (NON_INFERIOR, 0.0, 0.0, "promote"),  # an identical rerun is non-inferior
        (NON_INFERIOR, -0.03, 0.01, "hold"),  # could be worse than the tolerance
        (NON_INFERIOR, -0.06, -0.02, "reject"),  # worse than the tolerance, with confidence
    ],
)
def test_confidence_rules_promote_hold_or_reject_on_the_interval(rule, low, high, verdict):
    champion = {"accuracy_score": 0.9}
    candidate = {"accuracy_score": 0.9 + (low + high) / 2}
    d = decide([rule], candidate, champion, {"accuracy_score": _interval(low, high)})
    assert d.verdict == verdict and d.passed == (verdict == "promote")
    check = d.checks[-1]  # after the "measured" record of a rule without an absolute bound
    assert check.interval["low"] == low and "95% CI of candidate - champion" in check.detail
    assert Decision.from_dict(d.to_dict()).verdict == verdict


def test_lower_is_better_flips_the_interval():
    champion = {"root_mean_squared_error": 50.0}
    better = {**_interval(-6.0, -2.0, 50.0), "metric": "root_mean_squared_error", "confidence": 0.9}
    worse = {**better, "low": 2.0, "high": 6.0}
    assert (
        decide([RMSE], {"root_mean_squared_error": 46.0}, champion, {RMSE.metric: better}).verdict
        == "promote"
    )
    assert (
        decide([RMSE], {"root_mean_squared_error": 54.0}, champion, {RMSE.metric: worse}).verdict == "reject"
    )


def test_a_failed_absolute_bound_rejects_even_when_another_rule_holds():
    rules = [SIGNIFICANT, Threshold(metric="log_loss", max_value=0.5)]
    d = decide(rules, {"accuracy_score": 0.9, "log_loss": 0.9}, {"accuracy_score": 0.9, "log_loss": 0.2},
               {"accuracy_score": _interval(-0.02, 0.02)})  # fmt: skip
    assert d.verdict == "reject" and any(c.held for c in d.checks)


def test_a_confidence_rule_without_its_interval_fails():
    d = decide([SIGNIFICANT], {"accuracy_score": 0.95}, {"accuracy_score": 0.9}, {})
    assert d.verdict == "reject" and "re-run evaluate" in d.checks[-1].detail


def test_slice_rule_rejects_a_slice_that_got_worse_beyond_the_bound():
    from mlgate.config import SliceRule

    rule = SliceRule(feature="island", metric="accuracy_score", max_regression=0.05)
    champion = [{"feature": "island", "metric": "accuracy_score", "value": v, "rows": 30, "score": 0.95}
                for v in ("Biscoe", "Dream")]  # fmt: skip
    candidate = [{**champion[0], "score": 0.97}, {**champion[1], "score": 0.85}]
    d = decide([ACC], {"accuracy_score": 0.95}, {"accuracy_score": 0.95}, None, [rule],
               {"candidate": candidate, "champion": champion})  # fmt: skip
    assert d.verdict == "reject"
    (fail,) = d.failures
    assert fail.metric == "accuracy_score[island=Dream]" and fail.rule == "slice_max_regression"
