"""Steps 4-6, register, promote and rollback: model versions, aliases, the promotion lock and the audit trail.

Every change to the registry here either completes or is undone: a version whose tagging or aliasing fails
is deleted again, and an alias move is recorded in the audit trail before it is made (a record whose move
never happened is marked so, by the move itself or by check_state).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlgate.card import CARD_ARTIFACT, description, render_card
from mlgate.config import PipelineConfig
from mlgate.gate import HOLD, PROMOTE, REJECT, Check, Decision, decide, shadow_check
from mlgate.io import read_step_result, write_json, write_text
from mlgate.models import version_by_alias
from mlgate.tracking import TAG_PREFIX, git_commit

log = logging.getLogger(__name__)

AUDIT_PREFIX = f"{TAG_PREFIX}audit."
LOCK_SUFFIX = ".mlgate-lock"
LOCK_STALE_SECONDS = 600.0


class PromotionLockTimeout(RuntimeError):
    """Another promotion or rollback held the lock for longer than the configured wait."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name, description="Managed by mlgate: see the mlgate.audit.* tags.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def register(cfg: PipelineConfig) -> dict[str, Any]:
    """Register the trained candidate as a version with lineage tags; point the challenger alias at it.

    Returns:
        The step result written to ``<outputs>/register.json``: model name, version, run id, source URI.
    """
    trained = read_step_result(cfg.outputs, "train")
    evaluation = read_step_result(cfg.outputs, "evaluation")
    client = MlflowClient()
    _ensure_registered_model(client, cfg.model_name)
    tags = {
        f"{TAG_PREFIX}run_id": trained["run_id"],
        f"{TAG_PREFIX}git_commit": trained["git_commit"],
        f"{TAG_PREFIX}data_digest": trained["dataset_digest"],
        f"{TAG_PREFIX}config_hash": trained["config_hash"],
        f"{TAG_PREFIX}evaluate_run_id": evaluation["evaluate_run_id"],
        **{f"{TAG_PREFIX}metric.{k}": f"{v:.6g}" for k, v in evaluation["candidate"]["metrics"].items()},
    }
    # What mlflow.register_model does for a models:/<id> URI, without its second create_registered_model,
    # which printed "Registered model ... already exists" on every run, the first included.
    mv = client.create_model_version(
        cfg.model_name, trained["model_uri"], tags=tags, model_id=trained.get("model_id")
    )
    alias = cfg.promotion.aliases.challenger
    try:
        write_card(client, cfg, str(mv.version), evaluation["gate"])
        client.set_registered_model_alias(cfg.model_name, alias, mv.version)
    except BaseException:
        log.error("register: the model card or alias %r failed; deleting version %s again", alias, mv.version)
        client.delete_model_version(cfg.model_name, mv.version)
        raise
    log.info(
        "register: %s version %s from run %s, alias %r", cfg.model_name, mv.version, trained["run_id"], alias
    )
    summary = {
        "name": cfg.model_name,
        "version": str(mv.version),
        "run_id": trained["run_id"],
        "model_uri": trained["model_uri"],
        "registered_uri": f"models:/{cfg.model_name}/{mv.version}",
    }
    write_json(summary, cfg.outputs / "register.json")
    return summary


def write_card(
    client: MlflowClient,
    cfg: PipelineConfig,
    version: str,
    gate: dict[str, Any],
    promoted: bool | None = None,
) -> str:
    """Render the version's model card from the step results; log it as the artifact ``model_card.md`` of
    its training run, set it as the version's description and write ``<outputs>/model_card.md``."""
    trained = read_step_result(cfg.outputs, "train")
    validated = read_step_result(cfg.outputs, "validate")
    evaluation = read_step_result(cfg.outputs, "evaluation")
    card = render_card(cfg, version, validated, trained, evaluation, gate, promoted)
    client.log_text(trained["run_id"], card, CARD_ARTIFACT)
    client.update_model_version(cfg.model_name, version, description=description(card, trained["run_id"]))
    write_text(card, cfg.outputs / CARD_ARTIFACT)
    return card


@contextmanager
def promotion_lock(client: MlflowClient, cfg: PipelineConfig) -> Iterator[None]:
    """Hold an exclusive lock on the model's aliases while promoting or rolling back.

    The lock is a registered model named ``<model>.mlgate-lock``: creating a registered model is atomic in
    every MLflow backend, so exactly one holder exists. A lock older than ten minutes is taken as left by a
    crashed process and removed.
    """
    lock_name = cfg.model_name + LOCK_SUFFIX
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + cfg.promotion.lock_timeout_seconds
    while True:
        try:
            client.create_registered_model(
                lock_name, tags={"holder": holder, "acquired_at": str(time.time())}, description="mlgate lock"
            )
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        _break_stale_lock(client, lock_name)
        if time.monotonic() > deadline:
            raise PromotionLockTimeout(
                f"could not lock {cfg.model_name!r} within {cfg.promotion.lock_timeout_seconds:.0f}s: "
                f"another promotion holds registered model {lock_name!r}"
            )
        time.sleep(0.2)
    try:
        yield
    finally:
        _release_lock(client, lock_name, holder)


def _lock_tags(client: MlflowClient, lock_name: str) -> dict[str, str] | None:
    try:
        return dict(client.get_registered_model(lock_name).tags)
    except MlflowException:
        return None


def _release_lock(client: MlflowClient, lock_name: str, holder: str) -> None:
    """Delete the lock only while it is still ours: if it was broken as stale and taken by another process,
    that process's lock stays."""
    tags = _lock_tags(client, lock_name)
    if tags is None or tags.get("holder") != holder:
        log.warning(
            "promotion lock %s is no longer held by %s (now %s): left as it is",
            lock_name,
            holder,
            None if tags is None else tags.get("holder"),
        )
        return
    client.delete_registered_model(lock_name)


def _break_stale_lock(client: MlflowClient, lock_name: str) -> None:
    tags = _lock_tags(client, lock_name)
    if tags is None:
        return
    acquired = float(tags.get("acquired_at", "inf"))
    if time.time() - acquired <= LOCK_STALE_SECONDS:
        return
    # re-read right before deleting: a lock re-taken since it was judged stale is someone's live lock
    if _lock_tags(client, lock_name) != tags:
        return
    log.warning("removing stale promotion lock %s held by %s", lock_name, tags.get("holder"))
    try:
        client.delete_registered_model(lock_name)
    except MlflowException:
        pass


def _audit_records(client: MlflowClient, name: str) -> list[tuple[str, dict[str, Any]]]:
    """(tag key, record) of every audit record on the model, oldest first, applied or not."""
    tags = client.get_registered_model(name).tags
    return [(k, json.loads(tags[k])) for k in sorted(tags) if k.startswith(AUDIT_PREFIX)]


def audit_trail(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """Every alias move mlgate made on the model, oldest first (a record whose move never happened, marked
    ``"applied": false``, is left out)."""
    return [r for _, r in _audit_records(client, name) if r.get("applied", True)]


def check_state(client: MlflowClient, cfg: PipelineConfig) -> list[str]:
    """Check a registry (e.g. a restored saved state) before using it: the champion alias and the newest audit
    record agree. A newest record whose move never happened (the process ended between writing the record and
    moving the alias) is marked not applied, with a warning, rather than reported.

    Returns:
        The problems found, one line each; empty when the state is consistent (an empty registry is).
    """
    alias = cfg.promotion.aliases.champion
    try:
        records = _audit_records(client, cfg.model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    current = version_by_alias(client, cfg.model_name, alias)
    champion = None if current is None else str(current.version)
    applied = [(k, r) for k, r in records if r.get("applied", True)]
    if applied and _never_moved(client, cfg, applied[-1][1], champion):
        key, record = applied.pop()
        log.warning(
            "the newest audit record (%s %s -> %s at %s) was never applied: %r is %s; marking it not applied",
            record.get("action"), record["previous"], record["new"], record.get("at"), alias, champion,
        )  # fmt: skip
        client.set_registered_model_tag(
            cfg.model_name, key, json.dumps({**record, "applied": False}, sort_keys=True)
        )
    recorded = applied[-1][1]["new"] if applied else None
    if recorded != champion:
        return [
            f"{cfg.model_name!r}: {alias!r} is version {champion} but the audit trail's newest move made it "
            f"{recorded}: the alias was moved outside mlgate, or the state is not the one saved"
        ]
    return []


def _never_moved(
    client: MlflowClient, cfg: PipelineConfig, record: dict[str, Any], champion: str | None
) -> bool:
    """Whether a record's champion move never happened: the champion is still the record's previous, and the
    version lacks the ``<alias>_since`` tag of the record's time that ``_move_champion`` sets right after
    moving the alias (so an alias moved back by hand is not taken for a move cut short)."""
    if record["new"] == champion or record["previous"] != champion:
        return False
    try:
        tags = client.get_model_version(cfg.model_name, record["new"]).tags
    except MlflowException:
        return True
    return tags.get(f"{TAG_PREFIX}{cfg.promotion.aliases.champion}_since") != record["at"]


def _move_champion(
    client: MlflowClient, cfg: PipelineConfig, new: str, previous: str | None, record: dict[str, Any]
) -> dict[str, Any]:
    """Append the audit record, then point the champion alias at ``new``: a process that ends in between
    leaves a record whose move never happened (check_state marks it), never a moved alias without its record.
    If the move fails, the record is marked not applied."""
    alias = cfg.promotion.aliases.champion
    at = _now()
    entry = {
        **record,
        "alias": alias,
        "previous": previous,
        "new": new,
        "at": at.isoformat(),
        "git_commit": git_commit(),
        "actor": os.environ.get("GITHUB_ACTOR") or os.environ.get("USER") or "unknown",
    }
    key = f"{AUDIT_PREFIX}{at.strftime('%Y%m%dT%H%M%S%fZ')}"
    client.set_registered_model_tag(cfg.model_name, key, json.dumps(entry, sort_keys=True))
    try:
        client.set_registered_model_alias(cfg.model_name, alias, new)
    except BaseException:
        log.error("could not move %r to %s; marking its audit record not applied", alias, new)
        not_applied = json.dumps({**entry, "applied": False}, sort_keys=True)
        client.set_registered_model_tag(cfg.model_name, key, not_applied)
        raise
    client.set_model_version_tag(cfg.model_name, new, f"{TAG_PREFIX}{alias}_since", at.isoformat())
    return entry


@dataclass(frozen=True)
class PromotionResult:
    """What promote decided and did."""

    decision: Decision
    version: str
    previous: str | None
    promoted: bool
    already_champion: bool = False

    @property
    def passed(self) -> bool:
        return self.decision.passed

    @property
    def verdict(self) -> str:
        return self.decision.verdict


# The version tag ``mlgate.gate`` per verdict.
GATE_TAGS = {PROMOTE: "passed", HOLD: "held", REJECT: "rejected"}


def _outcome(decision: Decision) -> str:
    """What the gate did, as the log line says it."""
    if decision.verdict == HOLD:
        return (
            f"is held by the gate (evidence inconclusive in {sum(c.held for c in decision.checks)} check(s))"
        )
    return "passes the gate" if decision.passed else f"fails {len(decision.failures)} check(s) of the gate"


def _intervals(decision: Decision) -> dict[str, Any]:
    """The intervals the gate judged on, by metric: the observed difference, low, high, confidence."""
    keep = ("difference", "low", "high", "confidence", "resamples", "rows", "mcnemar")
    return {c.metric: {k: c.interval.get(k) for k in keep} for c in decision.checks if c.interval}


def _evidence_tag(decision: Decision) -> dict[str, str]:
    """``mlgate.gate_evidence`` on the version: the intervals as JSON (none when no rule asked for them)."""
    intervals = _intervals(decision)
    return {"gate_evidence": json.dumps(intervals, sort_keys=True)} if intervals else {}


def _print_failures(decision: Decision) -> None:
    for c in decision.failures:
        required = "n/a" if c.required is None else f"{c.required:.4f}"
        actual = "missing" if c.actual is None else f"{c.actual:.4f}"
        log.warning(
            "promote: %s %s %s: actual %s, required %s (%s)",
            "HOLD" if c.held else "FAIL",
            c.metric,
            c.rule,
            actual,
            required,
            c.detail,
        )


def _shadow_report(cfg: PipelineConfig) -> dict[str, Any] | None:
    """The saved ``mlgate shadow-report`` summary promotion.shadow names, or None when there is none."""
    assert cfg.promotion.shadow is not None  # nosec B101 - called only with a shadow rule
    path = cfg.outputs / cfg.promotion.shadow.report
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a shadow report ({exc})") from None
    return report if isinstance(report, dict) else None


def promote(cfg: PipelineConfig, dry_run: bool = False) -> PromotionResult:
    """The gate: move the champion alias to the registered challenger only if every threshold passes.

    The thresholds come from the config now (so a stricter config applies at once) and are applied to the
    metrics ``evaluate`` measured for the candidate and the champion on the same split. If the champion moved
    since that evaluation, the comparison is stale and the candidate is rejected.

    Returns:
        The decision; ``<outputs>/promotion.json`` holds the same.
    """
    registered = read_step_result(cfg.outputs, "register")
    evaluation = read_step_result(cfg.outputs, "evaluation")
    version = registered["version"]
    evaluated_champion = (evaluation.get("champion") or {}).get("version")
    champion_metrics = (evaluation.get("champion") or {}).get("metrics")
    decision = decide(
        cfg.promotion.thresholds,
        evaluation["candidate"]["metrics"],
        champion_metrics,
        evaluation.get("evidence"),
        cfg.promotion.slices,
        evaluation.get("slices"),
    )
    if cfg.promotion.shadow is not None:
        shadow = shadow_check(cfg.promotion.shadow, _shadow_report(cfg), version, evaluated_champion)
        decision = Decision([*decision.checks, shadow])
    client = MlflowClient()
    alias = cfg.promotion.aliases.champion

    def finish(result: PromotionResult) -> PromotionResult:
        if not dry_run:
            try:
                promoted = result.promoted or result.already_champion
                write_card(client, cfg, version, result.decision.to_dict(), promoted)
            except MlflowException as exc:  # the decision stands; only its description is stale
                log.warning("promote: could not update the model card of version %s: %s", version, exc)
        write_json(
            {
                "name": cfg.model_name,
                "version": version,
                "previous_champion": result.previous,
                "passed": result.passed,
                "verdict": result.verdict,
                "promoted": result.promoted,
                "already_champion": result.already_champion,
                "dry_run": dry_run,
                "gate": result.decision.to_dict(),
            },
            cfg.outputs / "promotion.json",
        )
        return result

    current = version_by_alias(client, cfg.model_name, alias)
    current_version = None if current is None else str(current.version)
    if current_version == version:
        log.info("promote: version %s is already %r; nothing to do", version, alias)
        return finish(
            PromotionResult(decision, version, current_version, promoted=False, already_champion=True)
        )
    if not decision.passed or dry_run:
        if not decision.passed:
            _print_failures(decision)
        log.info(
            "promote: version %s %s%s; %r stays at %s",
            version,
            _outcome(decision),
            " (dry run)" if dry_run else "",
            alias,
            current_version,
        )
        if not dry_run:
            tags = {"gate": GATE_TAGS[decision.verdict], **_evidence_tag(decision)}
            for key, value in tags.items():
                client.set_model_version_tag(cfg.model_name, version, f"{TAG_PREFIX}{key}", value)
        return finish(PromotionResult(decision, version, current_version, promoted=False))

    with promotion_lock(client, cfg):
        current = version_by_alias(client, cfg.model_name, alias)
        current_version = None if current is None else str(current.version)
        if current_version == version:
            return finish(
                PromotionResult(decision, version, current_version, promoted=False, already_champion=True)
            )
        if current_version != evaluated_champion:
            stale = Check(
                "champion",
                "unchanged_since_evaluate",
                None,
                None,
                False,
                f"champion moved from {evaluated_champion} to {current_version} since evaluate; re-run it",
            )
            decision = Decision([*decision.checks, stale])
            _print_failures(decision)
            return finish(PromotionResult(decision, version, current_version, promoted=False))
        _move_champion(
            client,
            cfg,
            version,
            current_version,
            {
                "action": "promote",
                "reason": "all promotion thresholds passed",
                "metrics": evaluation["candidate"]["metrics"],
                "champion_metrics": champion_metrics,
                "evidence": _intervals(decision),
            },
        )
        for key, value in {"gate": GATE_TAGS[decision.verdict], **_evidence_tag(decision)}.items():
            client.set_model_version_tag(cfg.model_name, version, f"{TAG_PREFIX}{key}", value)
    log.info("promote: %s version %s is now %r (was %s)", cfg.model_name, version, alias, current_version)
    return finish(PromotionResult(decision, version, current_version, promoted=True))


LINEAGE_TAGS = ("data_digest", "config_hash", "git_commit")


def lineage(cfg: PipelineConfig) -> dict[str, Any]:
    """Compare the validated data, the config and the code commit with the champion's lineage tags.

    An unchanged lineage means a retrain would rebuild the champion (the weekly schedule on unchanged data):
    the pipeline then releases nothing.

    Returns:
        The step result written to ``<outputs>/lineage.json``: ``changed``, the champion version (or None),
        and for each lineage tag the candidate's and the champion's value.
    """
    validated = read_step_result(cfg.outputs, "validate")
    candidate = {
        "data_digest": validated["dataset_digest"],
        "config_hash": cfg.digest(),
        "git_commit": git_commit(),
    }
    champion = version_by_alias(MlflowClient(), cfg.model_name, cfg.promotion.aliases.champion)
    recorded = {} if champion is None else {k: champion.tags.get(f"{TAG_PREFIX}{k}") for k in LINEAGE_TAGS}
    differs = [k for k in LINEAGE_TAGS if recorded.get(k) != candidate[k]]
    result = {
        "changed": bool(differs),
        "champion": None if champion is None else str(champion.version),
        "differs": differs,
        "candidate": candidate,
        "champion_lineage": recorded,
    }
    write_json(result, cfg.outputs / "lineage.json")
    return result


def _rollback_target(
    client: MlflowClient, cfg: PipelineConfig, version: str | None
) -> tuple[str, str | None]:
    """The version a rollback moves the champion to (checked to exist), and the current champion."""
    alias = cfg.promotion.aliases.champion
    current = version_by_alias(client, cfg.model_name, alias)
    current_version = None if current is None else str(current.version)
    if version is None:
        if current_version is None:
            raise ValueError(f"{cfg.model_name!r} has no {alias!r} to roll back from")
        moves = [e for e in audit_trail(client, cfg.model_name) if e["new"] == current_version]
        if not moves or moves[-1]["previous"] is None:
            raise ValueError(
                f"no earlier {alias!r} is recorded for {cfg.model_name!r} version {current_version}"
            )
        version = moves[-1]["previous"]
    target = client.get_model_version(cfg.model_name, version)  # raises if it does not exist
    return str(target.version), current_version


def rollback(
    cfg: PipelineConfig, version: str | None = None, reason: str = "manual rollback", dry_run: bool = False
) -> dict[str, Any]:
    """Move the champion alias back to the previous champion (from the audit trail) or to ``version``.

    With ``dry_run``, only say which version that would be (``new``), so that its images can be checked and
    tagged before the alias moves.

    Returns:
        The step result written to ``<outputs>/rollback.json``: the audit entry (or, for a dry run, the
        target ``new``, the current ``previous`` and ``dry_run: true``).

    Raises:
        ValueError: there is no champion, no earlier champion is recorded, or the version does not exist.
    """
    client = MlflowClient()
    alias = cfg.promotion.aliases.champion
    if dry_run:
        new, current_version = _rollback_target(client, cfg, version)
        plan = {
            "action": "rollback",
            "alias": alias,
            "new": new,
            "previous": current_version,
            "dry_run": True,
        }
        log.info(
            "rollback (dry run): %s %r would move from %s to %s", cfg.model_name, alias, current_version, new
        )
        write_json(plan, cfg.outputs / "rollback.json")
        return plan
    with promotion_lock(client, cfg):
        new, current_version = _rollback_target(client, cfg, version)
        entry = _move_champion(
            client,
            cfg,
            new,
            current_version,
            {"action": "rollback", "reason": reason, "metrics": None, "champion_metrics": None},
        )
    log.info("rollback: %s %r moved from %s to %s", cfg.model_name, alias, current_version, new)
    write_json(entry, cfg.outputs / "rollback.json")
    return entry
