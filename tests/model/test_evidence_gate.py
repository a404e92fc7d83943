"""The gate with evidence on the real pipeline and registry, with seeded models: a near-identical candidate is
held, a clearly better one promoted, a clearly worse one rejected; the interval is in promotion.json, the
report, the audit record and the version's tags; a slice that got worse fails its rule."""

from __future__ import annotations

import json

from click.testing import CliRunner
from mlflow import MlflowClient

from mlgate.cli import EXIT_REJECTED, cli
from mlgate.pipeline import run_pipeline
from mlgate.registry import audit_trail
from tests.conftest import make_config, write_config

EVIDENCE = {
    "promotion.thresholds": [
        {"metric": "accuracy_score", "min_improvement": 0.0, "confidence": 0.95},
        {"metric": "log_loss", "max_value": 5.0},
    ],
    "promotion.slices": [{"feature": "island", "metric": "accuracy_score", "max_regression": 0.05}],
    "promotion.bootstrap_resamples": 500,
}
DUMMY = {"estimator.class": "sklearn.dummy.DummyClassifier", "estimator.params": {"strategy": "prior"}}


def forest(seed: int) -> dict[str, object]:
    return {
        "estimator.class": "sklearn.ensemble.RandomForestClassifier",
        "estimator.params": {"n_estimators": 30, "max_depth": 4, "random_state": seed, "n_jobs": 1},
    }


def champion(cfg) -> str:
    return str(MlflowClient().get_model_version_by_alias(cfg.model_name, "champion").version)


def test_clearly_better_is_promoted_and_clearly_worse_rejected_with_the_interval_everywhere(store):
    weak = make_config(store, **EVIDENCE, **DUMMY)
    assert run_pipeline(weak)["promoted"]  # no champion yet: only absolute bounds apply

    strong = make_config(store, **EVIDENCE, **forest(1))
    summary = run_pipeline(strong)
    assert summary["promoted"] and summary["verdict"] == "promote" and champion(strong) == "2"
    promotion = json.loads((store / "outputs" / "promotion.json").read_text())
    check = next(c for c in promotion["gate"]["checks"] if c["rule"] == "min_improvement")
    interval = check["interval"]
    assert interval["low"] > 0.2 and interval["confidence"] == 0.95 and interval["rows"] == 104
    assert interval["mcnemar"]["p_value"] < 1e-6
    report = (store / "outputs" / "report.md").read_text()
    assert "### Evidence: candidate − champion on the same rows (paired bootstrap)" in report
    assert f"95%: [{interval['low']:+.4f}, {interval['high']:+.4f}]" in report and "### Slices" in report
    (record,) = [e for e in audit_trail(MlflowClient(), strong.model_name) if e["new"] == "2"]
    assert record["evidence"]["accuracy_score"]["low"] == interval["low"]
    version = MlflowClient().get_model_version(strong.model_name, "2")
    card = version.description
    assert card.startswith(f"# Model card: `{strong.model_name}` version 2")
    assert "gate verdict **promote**: promoted to `champion`" in card
    assert f"95%: [{interval['low']:+.4f}, {interval['high']:+.4f}]" in card and "## Slices" in card
    tags = version.tags
    assert tags["mlgate.gate"] == "passed"
    assert json.loads(tags["mlgate.gate_evidence"])["accuracy_score"]["high"] == interval["high"]

    worse = make_config(store, **EVIDENCE, **DUMMY)
    summary = run_pipeline(worse)
    assert summary["verdict"] == "reject" and not summary["promoted"] and champion(worse) == "2"
    promotion = json.loads((store / "outputs" / "promotion.json").read_text())
    failed = {c["metric"]: c for c in promotion["gate"]["checks"] if not c["passed"]}
    assert failed["accuracy_score"]["interval"]["high"] < 0 and not failed["accuracy_score"]["held"]
    assert any(m.startswith("accuracy_score[island=") for m in failed)  # the slices got worse too
    rejected = MlflowClient().get_model_version(worse.model_name, "3")
    assert rejected.tags["mlgate.gate"] == "rejected"
    assert "gate verdict **reject**: not promoted" in rejected.description


def test_a_near_identical_candidate_is_held_and_the_champion_stays(store):
    first = make_config(store, **EVIDENCE, **forest(1))
    assert run_pipeline(first)["promoted"]
    near = make_config(store, **EVIDENCE, **forest(2))
    summary = run_pipeline(near)
    assert summary["verdict"] == "hold" and not summary["promoted"] and champion(near) == "1"
    promotion = json.loads((store / "outputs" / "promotion.json").read_text())
    assert promotion["verdict"] == "hold" and not promotion["passed"]
    check = next(c for c in promotion["gate"]["checks"] if c["rule"] == "min_improvement")
    assert check["held"] and check["interval"]["low"] <= 0 <= check["interval"]["high"]
    assert "straddles" in check["detail"]
    assert "⏸️ would be held" in (store / "outputs" / "report.md").read_text()
    tags = MlflowClient().get_model_version(near.model_name, "2").tags
    assert tags["mlgate.gate"] == "held" and "accuracy_score" in json.loads(tags["mlgate.gate_evidence"])

    path = write_config(near, store / "near.yaml")
    result = CliRunner().invoke(cli, ["--config", str(path), "promote"])
    assert (
        result.exit_code == EXIT_REJECTED and "mlgate promote: hold: the champion stays at 1" in result.output
    )
    status = CliRunner().invoke(cli, ["--config", str(path), "gate-status"])
    assert status.exit_code == EXIT_REJECTED and "Promotion gate: HOLD" in status.output
    assert champion(near) == "1" and len(audit_trail(MlflowClient(), near.model_name)) == 1
