"""Behaviour of the gate end to end on a real (SQLite) registry: who gets promoted, rollback, and failures
that must leave the aliases as they were."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlgate import registry
from mlgate.cli import EXIT_REJECTED, cli
from mlgate.pipeline import run_pipeline
from mlgate.registry import audit_trail, promote, rollback
from tests.conftest import make_config, write_config

DUMMY = {
    "estimator.class": "sklearn.dummy.DummyClassifier",
    "estimator.params": {"strategy": "most_frequent"},
}
LOGREG = {"estimator.class": "sklearn.linear_model.LogisticRegression", "estimator.params": {"max_iter": 500}}


def champion(cfg) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(cfg.model_name, "champion").version)
    except Exception:
        return None


def cli_run(cfg, store, *args: str):
    path = write_config(cfg, store / "config.yaml")
    return CliRunner().invoke(cli, ["--config", str(path), *args], catch_exceptions=False)


def test_first_good_model_becomes_champion_with_audit_and_lineage(cfg):
    summary = run_pipeline(cfg)
    assert summary["promoted"] and summary["champion_version"] == "1" == champion(cfg)
    client = MlflowClient()
    mv = client.get_model_version(cfg.model_name, "1")
    for tag in ("run_id", "git_commit", "data_digest", "config_hash", "metric.accuracy_score"):
        assert mv.tags[f"mlgate.{tag}"], tag
    assert mv.tags["mlgate.gate"] == "passed"
    (entry,) = audit_trail(client, cfg.model_name)
    assert (entry["action"], entry["previous"], entry["new"]) == ("promote", None, "1")
    assert entry["metrics"]["accuracy_score"] == pytest.approx(summary["metrics"]["accuracy_score"])
    assert str(client.get_model_version_by_alias(cfg.model_name, "challenger").version) == "1"
    assert (cfg.outputs / "report.md").read_text().count("| accuracy_score |") == 1


def test_rerun_on_same_data_is_not_a_failure(cfg):
    run_pipeline(cfg)
    second = run_pipeline(cfg)
    assert second["gate_passed"] and second["promoted"] and champion(cfg) == "2"


def test_dummy_classifier_is_never_promoted_and_exits_with_rejected_code(cfg, store):
    run_pipeline(cfg)
    worse = make_config(store, **DUMMY)
    result = cli_run(worse, store, "run")
    assert result.exit_code == EXIT_REJECTED
    assert champion(cfg) == "1"
    promotion = json.loads((cfg.outputs / "promotion.json").read_text())
    assert not promotion["passed"] and promotion["version"] == "2"
    failed = {(c["metric"], c["rule"]) for c in promotion["gate"]["checks"] if not c["passed"]}
    assert ("accuracy_score", "min_value") in failed and ("accuracy_score", "max_regression") in failed
    assert MlflowClient().get_model_version(cfg.model_name, "2").tags["mlgate.gate"] == "rejected"


def test_dummy_is_rejected_even_without_a_champion(cfg, store):
    result = cli_run(make_config(store, **DUMMY), store, "run")
    assert result.exit_code == EXIT_REJECTED and champion(cfg) is None


def test_better_model_is_promoted_over_a_weaker_champion(cfg, store):
    weak = make_config(
        store,
        **{
            "estimator.class": "sklearn.tree.DecisionTreeClassifier",
            "estimator.params": {"max_depth": 1, "random_state": 0},
            "promotion.thresholds": [{"metric": "accuracy_score", "min_value": 0.5}],
        },
    )
    run_pipeline(weak)
    assert champion(cfg) == "1"
    summary = run_pipeline(cfg)
    assert summary["promoted"] and champion(cfg) == "2"
    assert audit_trail(MlflowClient(), cfg.model_name)[-1]["previous"] == "1"


def test_threshold_out_of_reach_exits_nonzero_and_leaves_champion(cfg, store, caplog):
    run_pipeline(cfg)
    for step in ("validate", "train", "evaluate", "register"):
        assert cli_run(cfg, store, step).exit_code == 0, step
    strict = make_config(store, **{"promotion.thresholds": [{"metric": "accuracy_score", "min_value": 1.01}]})
    result = cli_run(strict, store, "promote")
    assert result.exit_code == EXIT_REJECTED
    assert champion(cfg) == "1"
    assert "FAIL accuracy_score min_value: actual 0.9904, required 1.0100" in caplog.text


def test_dry_run_reports_but_moves_nothing(cfg):
    run_pipeline(cfg, dry_run=True)
    assert champion(cfg) is None
    assert json.loads((cfg.outputs / "promotion.json").read_text())["dry_run"] is True
    assert audit_trail(MlflowClient(), cfg.model_name) == []


def test_rollback_restores_previous_champion_with_audit(cfg, store):
    run_pipeline(cfg)
    run_pipeline(make_config(store, **LOGREG))
    assert champion(cfg) == "2"
    entry = rollback(cfg, reason="bad canary")
    assert champion(cfg) == "1"
    assert (entry["action"], entry["previous"], entry["new"], entry["reason"]) == (
        "rollback",
        "2",
        "1",
        "bad canary",
    )
    result = cli_run(cfg, store, "rollback", "--version", "2")
    assert result.exit_code == 0 and champion(cfg) == "2"
    assert [e["action"] for e in audit_trail(MlflowClient(), cfg.model_name)] == [
        "promote",
        "promote",
        "rollback",
        "rollback",
    ]
    # a version that does not exist: refused, naming it; nothing moves, nothing is recorded
    result = cli_run(cfg, store, "rollback", "--version", "99")
    assert result.exit_code == 1 and "99" in result.output, result.output
    assert champion(cfg) == "2" and len(audit_trail(MlflowClient(), cfg.model_name)) == 4


def test_rollback_without_history_fails_clearly(cfg, store):
    result = cli_run(cfg, store, "rollback")
    assert result.exit_code == 1
    assert "has no 'champion' to roll back from" in result.output


def test_failed_audit_write_leaves_the_alias_where_it_was(cfg, monkeypatch):
    run_pipeline(cfg)
    run_pipeline(
        make_config(cfg.outputs.parent, **{**LOGREG, "promotion.thresholds": [{"metric": "accuracy_score"}]}),
        dry_run=True,
    )

    def refuse(*_args, **_kwargs):
        raise RuntimeError("tracking server went away")

    monkeypatch.setattr(MlflowClient, "set_registered_model_tag", refuse)
    with pytest.raises(RuntimeError, match="went away"):
        promote(cfg)
    assert champion(cfg) == "1"
    monkeypatch.undo()
    assert [e["new"] for e in audit_trail(MlflowClient(), cfg.model_name)] == ["1"]


def test_failed_alias_in_register_deletes_the_new_version(cfg, monkeypatch):
    run_pipeline(cfg)
    run_pipeline(cfg, dry_run=True)  # leaves validate/train/evaluate outputs for a fresh register
    before = {mv.version for mv in MlflowClient().search_model_versions(f"name='{cfg.model_name}'")}

    def refuse(*_args, **_kwargs):
        raise RuntimeError("alias refused")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse)
    with pytest.raises(RuntimeError, match="alias refused"):
        registry.register(cfg)
    monkeypatch.undo()
    after = {mv.version for mv in MlflowClient().search_model_versions(f"name='{cfg.model_name}'")}
    assert after == before and champion(cfg) == "1"


def test_stale_evaluation_is_rejected_when_champion_moved(cfg, store):
    run_pipeline(cfg, dry_run=True)  # v1 evaluated against no champion, not promoted
    other = make_config(store / "other", **LOGREG)
    run_pipeline(other)  # v2 becomes champion meanwhile
    result = promote(cfg)
    assert not result.passed and champion(cfg) == "2"
    assert any(c.rule == "unchanged_since_evaluate" for c in result.decision.failures)


def test_promotion_lock_excludes_a_second_holder(cfg):
    run_pipeline(cfg)
    client = MlflowClient()
    strict = make_config(cfg.outputs.parent, **{"promotion.lock_timeout_seconds": 0.5})
    with registry.promotion_lock(client, cfg):
        with pytest.raises(registry.PromotionLockTimeout, match="another promotion holds"):
            with registry.promotion_lock(client, strict):
                pass
    with registry.promotion_lock(client, strict):  # released: free again
        pass


def _dies_after_first_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process ends (killed) right after the first registry write of an alias move: every later alias or
    tag write of the model raises instead of reaching the registry."""
    writes = {"n": 0}
    for method in ("set_registered_model_alias", "set_registered_model_tag"):
        real = getattr(MlflowClient, method)

        def write(self, *args, _real=real, **kwargs):
            writes["n"] += 1
            if writes["n"] > 1:
                raise KeyboardInterrupt("killed")
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, method, write)


def test_a_promotion_killed_after_its_first_write_leaves_a_consistent_registry(cfg, monkeypatch):
    """The move is recorded before it is made: a kill in between leaves the champion where it was and a record
    the next check marks as never applied (before, the alias moved first and a kill left a champion whose
    rollback had no previous)."""
    run_pipeline(cfg)
    run_pipeline(make_config(cfg.outputs.parent, **LOGREG), dry_run=True)  # v2 evaluated against v1
    _dies_after_first_write(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        promote(cfg)
    monkeypatch.undo()
    client = MlflowClient()
    assert champion(cfg) == "1"
    assert registry.check_state(client, cfg) == []  # the cut-short record is marked, not reported
    assert [e["new"] for e in audit_trail(client, cfg.model_name)] == ["1"]
    assert registry.check_state(client, cfg) == []
    promote(cfg)  # the rerun completes the move; its rollback finds the previous champion
    assert champion(cfg) == "2" and rollback(cfg, dry_run=True)["new"] == "1"


def _versions(cfg, store, n: int) -> MlflowClient:
    """``n`` versions of the configured model (empty model folders: only the registry is looked at)."""
    client = MlflowClient()
    client.create_registered_model(cfg.model_name)
    for i in range(n):
        (store / f"m{i}").mkdir()
        client.create_model_version(cfg.model_name, str(store / f"m{i}"))
    return client


def _records(client: MlflowClient, cfg) -> list[tuple[str, bool]]:
    """(new, applied) of every audit record on the model as stored, oldest first, applied or not."""
    tags = client.get_registered_model(cfg.model_name).tags
    records = [json.loads(v) for k, v in sorted(tags.items()) if k.startswith(registry.AUDIT_PREFIX)]
    return [(r["new"], r.get("applied", True)) for r in records]


def test_a_champion_move_killed_midway_keeps_the_rollback_target(cfg, store, monkeypatch):
    """Champion 1, then 2; the move to 3 is killed after its first registry write. The champion stays 2 and
    rolls back to 1, before and after check_state marks the cut-short record (before, the alias moved first:
    champion 3 with no record, whose rollback found no previous)."""
    client = _versions(cfg, store, 3)
    rollback(cfg, version="1", reason="first champion")
    rollback(cfg, version="2", reason="second champion")
    _dies_after_first_write(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        rollback(cfg, version="3", reason="killed midway")
    monkeypatch.undo()
    assert champion(cfg) == "2"
    assert rollback(cfg, dry_run=True)["new"] == "1"
    assert registry.check_state(client, cfg) == []  # repaired, not reported
    assert _records(client, cfg) == [("1", True), ("2", True), ("3", False)]
    assert [e["new"] for e in audit_trail(client, cfg.model_name)] == ["1", "2"]
    assert rollback(cfg, dry_run=True)["new"] == "1"
    ok = cli_run(cfg, store, "check-registry")
    assert (ok.exit_code, ok.stdout) == (0, "registry state ok: champion 2, 2 audit records\n")
    rollback(cfg, reason="back")
    assert champion(cfg) == "1" and registry.check_state(client, cfg) == []


def test_a_refused_alias_move_marks_its_audit_record_not_applied(cfg, store, monkeypatch):
    client = _versions(cfg, store, 2)
    rollback(cfg, version="1", reason="first champion")

    def refuse(*_args, **_kwargs):
        raise MlflowException("alias refused")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse)
    with pytest.raises(MlflowException, match="alias refused"):
        rollback(cfg, version="2", reason="refused")
    monkeypatch.undo()
    assert champion(cfg) == "1"
    assert _records(client, cfg) == [("1", True), ("2", False)]
    assert [e["new"] for e in audit_trail(client, cfg.model_name)] == ["1"]
    assert registry.check_state(client, cfg) == []


def test_check_registry_reports_an_alias_moved_outside_mlgate(cfg, store):
    assert registry.check_state(MlflowClient(), cfg) == []  # an empty registry is consistent
    empty = cli_run(cfg, store, "check-registry")
    assert (empty.exit_code, empty.stdout) == (0, "registry state ok: champion none, 0 audit records\n")
    client = _versions(cfg, store, 3)
    assert registry.check_state(client, cfg) == []  # versions, no champion, no record: consistent
    rollback(cfg, version="1", reason="first champion")
    rollback(cfg, version="2", reason="second champion")
    ok = cli_run(cfg, store, "check-registry")
    assert (ok.exit_code, ok.stdout) == (0, "registry state ok: champion 2, 2 audit records\n")
    for by_hand in ("3", "1"):  # 1: back to the previous champion, not a move of 2 cut short
        client.set_registered_model_alias(cfg.model_name, "champion", by_hand)
        (problem,) = registry.check_state(client, cfg)
        assert f"'champion' is version {by_hand} but the audit trail's newest move made it 2" in problem
    bad = CliRunner().invoke(cli, ["--config", str(store / "config.yaml"), "check-registry"])
    assert (bad.exit_code, bad.stdout) == (1, "")
    assert bad.stderr == f"mlgate check-registry: {problem}\n"
    client.delete_registered_model_alias(cfg.model_name, "champion")
    assert len(registry.check_state(client, cfg)) == 1
    assert _records(client, cfg) == [("1", True), ("2", True)]  # nothing marked: these moves happened


def test_a_lock_broken_as_stale_is_not_deleted_by_its_former_holder(cfg):
    client = MlflowClient()
    lock = cfg.model_name + registry.LOCK_SUFFIX
    first = registry.promotion_lock(client, cfg)
    first.__enter__()
    client.set_registered_model_tag(lock, "acquired_at", str(time.time() - registry.LOCK_STALE_SECONDS - 1))
    second = registry.promotion_lock(client, cfg)
    second.__enter__()  # breaks the stale lock and takes it
    holder = client.get_registered_model(lock).tags["holder"]
    first.__exit__(None, None, None)  # the first holder ends late: the second one's lock stays
    assert client.get_registered_model(lock).tags["holder"] == holder
    second.__exit__(None, None, None)
    with pytest.raises(Exception, match="(?i)not found|does not exist"):
        client.get_registered_model(lock)


def test_a_stale_lock_taken_again_while_judged_stale_is_not_broken(cfg, monkeypatch):
    """Between the read that finds the lock stale and its delete, another process breaks it and takes it: the
    lock deleted would be that process's live one."""
    client = MlflowClient()
    lock = cfg.model_name + registry.LOCK_SUFFIX
    stale = str(time.time() - registry.LOCK_STALE_SECONDS - 1)
    client.create_registered_model(lock, tags={"holder": "crashed", "acquired_at": stale})
    read = MlflowClient.get_registered_model

    def read_then_taken_again(self, name):
        found = read(self, name)
        if name == lock and found.tags.get("holder") == "crashed":
            monkeypatch.setattr(MlflowClient, "get_registered_model", read)  # once (delete reads too)
            client.delete_registered_model(lock)
            client.create_registered_model(lock, tags={"holder": "live", "acquired_at": str(time.time())})
        return found

    monkeypatch.setattr(MlflowClient, "get_registered_model", read_then_taken_again)
    strict = make_config(cfg.outputs.parent, **{"promotion.lock_timeout_seconds": 0.5})
    with pytest.raises(registry.PromotionLockTimeout):
        with registry.promotion_lock(client, strict):
            pass
    assert read(client, lock).tags["holder"] == "live"
