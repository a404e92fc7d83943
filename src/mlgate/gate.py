"""The promotion gate as a pure function: thresholds, champion comparison and evidence in, a verdict out.

Verdicts: *promote* when every check passes; *hold* when a rule that asks for confidence finds the evidence
inconclusive (the interval of candidate − champion straddles the rule's bound) and nothing fails outright;
*reject* when any check fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mlgate.config import ShadowRule, SliceRule, Threshold

PROMOTE, HOLD, REJECT = "promote", "hold", "reject"


@dataclass(frozen=True)
class Check:
    """One rule applied to one metric: what was required, what was measured, and whether it passed."""

    metric: str
    rule: str
    actual: float | None
    required: float | None
    passed: bool
    detail: str
    held: bool = False  # not passed, but only for want of evidence
    interval: dict[str, Any] | None = None


@dataclass(frozen=True)
class Decision:
    """The verdict of every check; the candidate passes only if all pass."""

    checks: list[Check] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if any(not c.passed and not c.held for c in self.checks):
            return REJECT
        return HOLD if any(c.held for c in self.checks) else PROMOTE

    @property
    def passed(self) -> bool:
        return self.verdict == PROMOTE

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "verdict": self.verdict, "checks": [asdict(c) for c in self.checks]}

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


def _with_confidence(t: Threshold, actual: float, evidence: dict[str, Any] | None) -> Check:
    """The rule judged on the interval of candidate − champion: its whole improvement interval must clear the
    bound (promote), lie below it (reject), or it straddles the bound (hold)."""
    rule = "min_improvement" if t.min_improvement is not None else "max_regression"
    if evidence is None:
        return Check(t.metric, rule, actual, None, False, "no interval computed: re-run evaluate")
    sign = 1.0 if t.direction == "higher" else -1.0
    low, high = sorted((sign * evidence["low"], sign * evidence["high"]))
    if t.min_improvement is not None:
        bound, cleared = t.min_improvement, low > t.min_improvement
    else:
        bound = -(t.max_regression or 0.0)
        cleared = low >= bound - 1e-12
    held = not cleared and high >= bound
    required = evidence["champion"] + sign * bound
    ci = (
        f"{evidence['confidence']:.0%} CI of candidate - champion "
        f"[{evidence['low']:+.4f}, {evidence['high']:+.4f}]"
    )
    test = evidence.get("mcnemar")
    mcnemar = f"; McNemar p={test['p_value']:.3g}" if test else ""
    outcome = "clears" if cleared else ("straddles" if held else "misses")
    detail = f"{ci}{mcnemar}: the improvement {outcome} {bound:+.4f}"
    return Check(t.metric, rule, actual, required, cleared, detail, held=held, interval=evidence)


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


def _slices(
    rules: list[SliceRule], candidate: list[dict[str, Any]], champion: list[dict[str, Any]] | None
) -> list[Check]:
    """One check per slice judged: the candidate's metric on it may be at most the rule's bound worse."""
    checks = []
    theirs = {(s["feature"], s["metric"], s["value"]): s["score"] for s in champion or []}
    for rule in rules:
        sign = 1.0 if rule.direction == "higher" else -1.0
        for s in candidate:
            key = (s["feature"], s["metric"], s["value"])
            if (s["feature"], s["metric"]) != (rule.feature, rule.metric) or key not in theirs:
                continue
            change = sign * (s["score"] - theirs[key])
            checks.append(
                Check(
                    f"{rule.metric}[{rule.feature}={s['value']}]",
                    "slice_max_regression",
                    s["score"],
                    theirs[key] - sign * rule.max_regression,
                    change >= -rule.max_regression - 1e-12,
                    f"{s['rows']} rows; vs champion {theirs[key]:.4f}: {change:+.4f}",
                )
            )
    return checks


def decide(
    thresholds: list[Threshold],
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    evidence: dict[str, dict[str, Any]] | None = None,
    slice_rules: list[SliceRule] | None = None,
    slices: dict[str, list[dict[str, Any]] | None] | None = None,
) -> Decision:
    """Apply every threshold to the candidate's metrics, and compare with the champion's when there is one.

    A metric the candidate lacks fails its rule (it is never silently skipped); with no champion, only the
    absolute bounds apply. A rule with ``confidence`` is judged on ``evidence[metric]`` (the interval of
    candidate − champion, see :mod:`mlgate.evidence`); ``slice_rules`` on ``slices`` (``candidate`` and
    ``champion``: per-slice scores).
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
            if t.confidence is not None:
                checks.append(_with_confidence(t, actual, (evidence or {}).get(t.metric)))
            else:
                checks.append(_against_champion(t, actual, champion[t.metric]))
    if champion is not None and slice_rules and slices:
        checks.extend(_slices(slice_rules, slices.get("candidate") or [], slices.get("champion")))
    return Decision(checks)


def shadow_check(
    rule: ShadowRule, report: dict[str, Any] | None, version: str, champion: str | None
) -> Check:
    """The candidate ``version`` on live traffic beside the served ``champion``, from a
    ``mlgate shadow-report`` summary (None: no report).

    Held (not rejected) when the evidence is missing: no report, a report of other versions, or fewer rows
    than ``rule.min_rows``; rejected when the agreement rate is below ``rule.min_agreement``.
    """
    name, need = "shadow_agreement", rule.min_agreement

    def held(detail: str, actual: float | None = None) -> Check:
        return Check(name, "shadow", actual, need, False, detail, held=True)

    if champion is None:
        return Check(name, "shadow", None, need, True, "no champion yet: nothing served to shadow")
    if report is None:
        return held(
            f"no shadow report ({rule.report} in the outputs): serve the champion with --shadow "
            f"models:/<name>@<challenger> and save `mlgate shadow-report` there"
        )
    shadowed = str((report.get("shadow") or {}).get("version"))
    if shadowed != str(version):
        return held(f"the shadow report is of version {shadowed}, the candidate is version {version}")
    served = (report.get("served") or {}).get("version")
    if str(served) != str(champion):
        return held(f"the shadow report compares with version {served}, the champion is version {champion}")
    rows, rate = int(report.get("rows_scored") or 0), report.get("agreement_rate")
    if rows < rule.min_rows or rate is None:
        return held(f"{rows} rows scored in shadow, {rule.min_rows} needed", rate)
    ok = float(rate) >= need
    return Check(
        name, "shadow", float(rate), need, ok, f"agreement {float(rate):.4f} on {rows} rows >= {need}"
    )
