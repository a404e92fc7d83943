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
