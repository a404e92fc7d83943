"""The promotion gate as a pure function: thresholds and champion comparison in, a verdict per rule out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mlgate.config import Threshold


@dataclass(frozen=True)
class Check:
    """One rule applied to one metric: what was required, what was measured, and whether it passed."""

    metric: str
    rule: str
    actual: float | None
    required: float | None
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    """The verdict of every check; the candidate passes only if all pass."""

    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Decision":
        return cls([Check(**c) for c in raw["checks"]])


def _absolute(t: Threshold, actual: float) -> list[Check]:
    checks = []
    higher = t.direction == "higher"
    if t.min_value is not None:
        ok = actual >= t.min_value
        checks.append(
            Check(t.metric, "min_value", actual, t.min_value, ok, f"{actual:.4f} >= {t.min_value:.4f}")
        )
    if t.max_value is not None:
        ok = actual <= t.max_value
        checks.append(
            Check(t.metric, "max_value", actual, t.max_value, ok, f"{actual:.4f} <= {t.max_value:.4f}")
        )
    if not checks:  # a threshold with no absolute bound still records the metric
        checks.append(
            Check(t.metric, "measured", actual, None, True, f"{'higher' if higher else 'lower'} is better")
        )
    return checks


def _against_champion(t: Threshold, actual: float, champion: float) -> Check:
    sign = 1.0 if t.direction == "higher" else -1.0
    improvement = sign * (actual - champion)
    if t.min_improvement is not None:
        required = champion + sign * t.min_improvement
        ok = improvement >= t.min_improvement - 1e-12
        return Check(t.metric, "min_improvement", actual, required, ok, f"improvement {improvement:+.4f}")
    tolerance = t.max_regression if t.max_regression is not None else 0.0
    required = champion - sign * tolerance
    ok = improvement >= -tolerance - 1e-12
    return Check(
        t.metric, "max_regression", actual, required, ok, f"vs champion {champion:.4f}: {improvement:+.4f}"
    )


def decide(
    thresholds: list[Threshold], candidate: dict[str, float], champion: dict[str, float] | None
) -> Decision:
    """Apply every threshold to the candidate's metrics, and compare with the champion's when there is one.

    A metric the candidate lacks fails its rule (it is never silently skipped); with no champion, only the
    absolute bounds apply.
    """
    checks: list[Check] = []
    for t in thresholds:
        actual = candidate.get(t.metric)
        if actual is None:
            known = ", ".join(sorted(candidate)) or "none"
            checks.append(
                Check(t.metric, "present", None, None, False, f"metric not computed; have: {known}")
            )
            continue
        checks.extend(_absolute(t, actual))
        if champion is not None and champion.get(t.metric) is not None:
            checks.append(_against_champion(t, actual, champion[t.metric]))
    return Decision(checks)
