"""The model card of a registered version: what it was trained on, what it is for, how well it does (with the
gate's intervals and slices) and what the gate decided, as Markdown for an artifact and the version's
description."""

from __future__ import annotations

from typing import Any

from mlgate.config import PipelineConfig

CARD_ARTIFACT = "model_card.md"
# MLflow's SQL stores keep at most this many characters of a version's description.
DESCRIPTION_LIMIT = 5000


def _fmt(value: Any) -> str:
    return "—" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def _feature_row(feature: Any) -> str:
    if feature.type == "numeric":
        values = f"{_fmt(feature.min)} to {_fmt(feature.max)}" if feature.min is not None else "any number"
    else:
        values = ", ".join(feature.categories) if feature.categories else "any value"
    return f"| {feature.name} | {feature.type} | {values} | {'yes' if feature.nullable else 'no'} |"


def render_card(
    cfg: PipelineConfig,
    version: str,
    validated: dict[str, Any],
    trained: dict[str, Any],
    evaluation: dict[str, Any],
    gate: dict[str, Any],
    promoted: bool | None = None,
) -> str:
    """The card as Markdown.

    Args:
        cfg: the config the version was trained with.
        version: the registered version.
        validated, trained, evaluation: the step results of validate, train and evaluate.
        gate: the gate's decision (``Decision.to_dict()``): evaluate's, or promote's once it ran.
        promoted: None before promote ran; then whether the version became the champion.
    """
    candidate = evaluation["candidate"]["metrics"]
    champion = evaluation.get("champion") or {}
    champion_metrics = champion.get("metrics") or {}
    evidence = evaluation.get("evidence") or {}
    verdict = gate.get("verdict") or ("promote" if gate.get("passed") else "reject")
    if promoted is None:
        status = f"registered; evaluate's gate verdict: **{verdict}** (promote has not run yet)"
    elif promoted:
        status = f"gate verdict **{verdict}**: promoted to `{cfg.promotion.aliases.champion}`"
    else:
        status = f"gate verdict **{verdict}**: not promoted"
    out = [
        f"# Model card: `{cfg.model_name}` version {version}",
        "",
        f"**Task**: {cfg.task}. **Status**: {status}.",
        "",
        "## Intended use",
        "",
        cfg.intended_use or "_Not stated: set `intended_use` in the config._",
        "",
        "## Data",
        "",
        f"- source: `{validated.get('source', cfg.data.source)}`",
        f"- digest: `{trained['dataset_digest']}`",
        f"- rows: {validated.get('rows_in')} read, {validated.get('rows_accepted')} accepted, "
        f"{validated.get('rows_quarantined')} quarantined; {trained.get('train_rows')} trained on, "
        f"{evaluation['test_rows']} held out",
        f"- target: `{cfg.data.target}`"
        + (f", classes {', '.join(cfg.data.classes)}" if cfg.data.classes else ""),
        "",
        "## Features",
        "",
        "| feature | type | accepted values | nullable |",
        "|---|---|---|---|",
        *(_feature_row(f) for f in cfg.data.features),
        "",
        "## Model",
        "",
        f"`{cfg.estimator.class_path}` with {cfg.estimator.params or 'default parameters'}, inside one "
        "scikit-learn Pipeline with its preprocessing (imputation, scaling, one-hot encoding).",
        "",
        "## Metrics on the held-out split",
        "",
        f"| metric | this version | champion{' (v' + champion['version'] + ')' if champion else ''} | "
        "candidate − champion, interval |",
        "|---|---:|---:|---|",
    ]
    gated = [t.metric for t in cfg.promotion.thresholds]
    for metric in gated + sorted(m for m in candidate if m not in gated and not m.endswith("_count")):
        e = evidence.get(metric)
        interval = (
            f"{e['difference']:+.4f}, {e['confidence']:.0%}: [{e['low']:+.4f}, {e['high']:+.4f}]"
            if e
            else "—"
        )
        name = f"**{metric}**" if metric in gated else metric
        out.append(
            f"| {name} | {_fmt(candidate.get(metric))} | {_fmt(champion_metrics.get(metric))} | {interval} |"
        )
    slices = (evaluation.get("slices") or {}).get("candidate") or []
    if slices:
        out += ["", "## Slices", "", "| slice | metric | rows | value |", "|---|---|---:|---:|"]
        out += [
            f"| {s['feature']}={s['value']} | {s['metric']} | {s['rows']} | {_fmt(s['score'])} |"
            for s in slices
        ]
    out += ["", "## Gate", "", "| metric | rule | result | detail |", "|---|---|---|---|"]
    for c in gate.get("checks", []):
        result = "pass" if c["passed"] else ("hold" if c.get("held") else "FAIL")
        out.append(f"| {c['metric']} | {c['rule']} | {result} | {c['detail']} |")
    out += [
        "",
        "## Lineage",
        "",
        f"- training run `{trained['run_id']}`, evaluate run `{evaluation['evaluate_run_id']}`",
        f"- git commit `{trained['git_commit']}`, config hash `{trained['config_hash']}`",
        "",
    ]
    return "\n".join(out)


def description(card: str, run_id: str) -> str:
    """The card as a version description: whole if it fits, else cut at a line with a pointer to the rest."""
    if len(card) <= DESCRIPTION_LIMIT:
        return card
    note = f"\n\n… the whole card: artifact `{CARD_ARTIFACT}` of run `{run_id}`.\n"
    head = card[: DESCRIPTION_LIMIT - len(note)]
    return head[: head.rfind("\n")] + note
