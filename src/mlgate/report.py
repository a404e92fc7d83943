"""The evaluation report: candidate vs champion as Markdown, with a Mermaid chart GitHub renders inline."""

from __future__ import annotations

from typing import Any

from mlgate.card import CARD_ARTIFACT
from mlgate.config import PipelineConfig
from mlgate.errors import EXIT_REJECTED
from mlgate.gate import HOLD, PROMOTE, REJECT

REPORT_MARKER = "<!-- mlgate-evaluation-report -->"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _mermaid(metrics: list[str], candidate: dict[str, float], champion: dict[str, float] | None) -> str:
    """A grouped bar chart (Mermaid xychart) of the gated metrics: candidate bars, champion line."""
    names = ", ".join(f'"{m}"' for m in metrics)
    cand = ", ".join(f"{candidate.get(m, 0.0):.4f}" for m in metrics)
    lines = [
        "```mermaid",
        "xychart-beta",
        '    title "Candidate (bars) vs champion (line)"',
        f"    x-axis [{names}]",
        '    y-axis "value"',
        f"    bar [{cand}]",
    ]
    if champion:
        lines.append(f"    line [{', '.join(f'{champion.get(m, 0.0):.4f}' for m in metrics)}]")
    lines.append("```")
    return "\n".join(lines)


VERDICT_TEXT = {
    PROMOTE: "✅ passes the promotion gate",
    HOLD: "⏸️ would be held by the promotion gate (evidence inconclusive)",
    REJECT: "❌ would be rejected by the promotion gate",
}


def _evidence_section(evidence: dict[str, Any]) -> list[str]:
    """The paired intervals of candidate − champion, one row per rule that asked for confidence."""
    if not evidence:
        return []
    out = [
        "",
        "### Evidence: candidate − champion on the same rows (paired bootstrap)",
        "",
        "| metric | candidate | champion | difference | interval | McNemar |",
        "|---|---:|---:|---:|---|---|",
    ]
    for metric, e in evidence.items():
        test = e.get("mcnemar")
        mcnemar = (
            f"p={test['p_value']:.3g} ({test['candidate_only_right']} vs {test['champion_only_right']} rows)"
            if test
            else "—"
        )
        out.append(
            f"| {metric} | {_fmt(e['candidate'])} | {_fmt(e['champion'])} | {e['difference']:+.4f} | "
            f"{e['confidence']:.0%}: [{e['low']:+.4f}, {e['high']:+.4f}] ({e['resamples']} resamples, "
            f"seed {e['seed']}, {e['rows']} rows) | {mcnemar} |"
        )
    return out


def _slices_section(slices: dict[str, Any]) -> list[str]:
    """Each judged slice's metric for the candidate and (when there is one) the champion."""
    candidate = slices.get("candidate") or []
    if not candidate:
        return []
    theirs = {(s["feature"], s["metric"], s["value"]): s["score"] for s in slices.get("champion") or []}
    out = [
        "",
        "### Slices",
        "",
        "| slice | metric | rows | candidate | champion |",
        "|---|---|---:|---:|---:|",
    ]
    for s in candidate:
        champion = theirs.get((s["feature"], s["metric"], s["value"]))
        out.append(
            f"| {s['feature']}={s['value']} | {s['metric']} | {s['rows']} | {_fmt(s['score'])} | "
            f"{_fmt(champion)} |"
        )
    return out


def render_report(cfg: PipelineConfig, evaluation: dict[str, Any]) -> str:
    """Markdown for a job summary or a pull-request comment: metrics, deltas, and each gate check."""
    candidate = evaluation["candidate"]["metrics"]
    champion_info = evaluation.get("champion")
    champion = (champion_info or {}).get("metrics")
    gate = evaluation["gate"]
    verdict = VERDICT_TEXT[gate.get("verdict") or (PROMOTE if gate["passed"] else REJECT)]
    champ_label = f"champion (v{champion_info['version']})" if champion_info else "champion (none yet)"
    out = [
        REPORT_MARKER,
        f"## mlgate evaluation: `{cfg.model_name}`",
        "",
        f"Candidate run `{evaluation['candidate']['run_id']}` {verdict}. "
        f"Held-out split: {evaluation['test_rows']} rows.",
        "",
        f"| metric | candidate | {champ_label} | delta |",
        "|---|---:|---:|---:|",
    ]
    gated = [t.metric for t in cfg.promotion.thresholds]
    shown = gated + sorted(
        m for m in candidate if m not in gated and not m.endswith(("_count", "example_count"))
    )
    for m in shown:
        c, p = candidate.get(m), (champion or {}).get(m)
        delta = "—" if c is None or p is None else f"{c - p:+.4f}"
        out.append(f"| {'**' + m + '**' if m in gated else m} | {_fmt(c)} | {_fmt(p)} | {delta} |")
    out += ["", "### Gate", "", "| metric | rule | actual | required | result |", "|---|---|---:|---:|:---:|"]
    for check in gate["checks"]:
        out.append(
            f"| {check['metric']} | {check['rule']} ({check['detail']}) | {_fmt(check['actual'])} | "
            f"{_fmt(check['required'])} | {'pass' if check['passed'] else '**FAIL**'} |"
        )
    run_id = evaluation["candidate"]["run_id"]
    out += [
        "",
        f"Model card: [`{CARD_ARTIFACT}`]({CARD_ARTIFACT}), an artifact of run `{run_id}` "
        f"(`runs:/{run_id}/{CARD_ARTIFACT}`) and the registered version's description, written by register.",
    ]
    out += _evidence_section(evaluation.get("evidence") or {})
    out += _slices_section(evaluation.get("slices") or {})
    if evaluation.get("champion_error"):
        out += ["", f"> ⚠️ {evaluation['champion_error']}"]
    out += ["", _mermaid(gated, candidate, champion), ""]
    return "\n".join(out)


def gate_status(promotion: dict[str, Any]) -> tuple[int, str]:
    """What ``promote`` decided (from ``promotion.json``) as an exit code and Markdown for a job summary.

    Returns 0 when the candidate passed (and is the champion, or a dry run would make it one), 3 when it was
    rejected: the same codes as ``mlgate promote``, which ``mlflow run`` does not pass through.
    """
    name, version = promotion["name"], promotion["version"]
    if promotion["passed"] and (promotion["promoted"] or promotion["already_champion"]):
        return 0, f"### Promotion gate: passed\n\n`{name}` version {version} is the champion.\n"
    if promotion["passed"]:
        return 0, (
            f"### Promotion gate: passed\n\n`{name}` version {version} becomes the champion once its images "
            f"are published (champion is {promotion['previous_champion']} until then).\n"
        )
    held = promotion.get("verdict") == HOLD
    lines = [
        f"### Promotion gate: {'HOLD' if held else 'FAILED'}",
        "",
        f"`{name}` version {version} was {'held (evidence inconclusive)' if held else 'rejected'}; champion "
        f"stays at {promotion['previous_champion']}. Nothing was built or pushed.",
        "",
        "| metric | rule | actual | required | detail |",
        "|---|---|---:|---:|---|",
    ]
    for c in (c for c in promotion["gate"]["checks"] if not c["passed"]):
        actual, required = _fmt(c["actual"]), _fmt(c["required"])
        lines.append(f"| {c['metric']} | {c['rule']} | {actual} | {required} | {c['detail']} |")
    return EXIT_REJECTED, "\n".join(lines) + "\n"
