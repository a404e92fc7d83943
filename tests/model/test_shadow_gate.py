"""The gate reads live-traffic evidence (promotion.shadow): the summary `mlgate shadow-report` saves from
a service that shadows the candidate. On the real pipeline and registry: no report, a report of other
versions or too few rows hold the candidate (exit 3, champion unchanged); low agreement rejects it; enough
agreement on enough rows promotes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from mlgate.cli import EXIT_REJECTED, cli
from mlgate.config import ConfigError
from mlgate.pipeline import run_pipeline
from tests.conftest import REPO, make_config, write_config

SHADOW = {"promotion.shadow": {"min_agreement": 0.9, "min_rows": 200}}


def _report(served: str, shadow: str, rows: int, agree: float) -> dict:
    """What `mlgate shadow-report` saves (mlgate.serving.shadow.shadow_report's keys the gate reads)."""
    return {
        "served": {"name": "penguins-classifier", "version": served, "alias": "champion"},
        "shadow": {"name": "penguins-classifier", "version": shadow, "alias": "challenger"},
        "rows_scored": rows,
        "agreement_rate": agree,
    }


def _promote(config: Path) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["--config", str(config), "promote"])
    return res.exit_code, res.output


def _champion(name: str) -> str:
    return str(MlflowClient().get_model_version_by_alias(name, "champion").version)


def test_the_gate_holds_without_shadow_evidence_rejects_disagreement_and_promotes_agreement(
    store: Path,
) -> None:
    cfg = make_config(store, **SHADOW)
    first = run_pipeline(cfg)
    assert first["promoted"]  # no champion yet: nothing was served to shadow
    second = run_pipeline(cfg)
    assert not second["promoted"] and second["verdict"] == "hold" and _champion(cfg.model_name) == "1"
    config = write_config(cfg, store / "pipeline.yaml")
    report = cfg.outputs / "shadow.json"

    for case, expect in (
        (None, "no shadow report"),
        (_report("1", "1", 5000, 1.0), "the shadow report is of version 1, the candidate is version 2"),
        (_report("3", "2", 5000, 1.0), "compares with version 3, the champion is version 1"),
        (_report("1", "2", 150, 0.99), "150 rows scored in shadow, 200 needed"),
    ):
        if case is not None:
            report.write_text(json.dumps(case))
        code, _ = _promote(config)
        promotion = json.loads((cfg.outputs / "promotion.json").read_text())
        (check,) = [c for c in promotion["gate"]["checks"] if c["rule"] == "shadow"]
        assert (code, promotion["verdict"], check["held"]) == (EXIT_REJECTED, "hold", True), check
        assert expect in check["detail"] and _champion(cfg.model_name) == "1"

    report.write_text(json.dumps(_report("1", "2", 5000, 0.8)))
    code, _ = _promote(config)
    promotion = json.loads((cfg.outputs / "promotion.json").read_text())
    assert (code, promotion["verdict"]) == (EXIT_REJECTED, "reject") and _champion(cfg.model_name) == "1"

    report.write_text(json.dumps(_report("1", "2", 5000, 0.97)))
    code, output = _promote(config)
    promotion = json.loads((cfg.outputs / "promotion.json").read_text())
    assert (code, promotion["verdict"]) == (0, "promote"), output
    assert _champion(cfg.model_name) == "2"


def test_a_shadow_rule_on_a_regressor_fails_at_config_load(tmp_path: Path) -> None:
    example = REPO / "config" / "examples" / "diabetes-regression.yaml"
    make_config(tmp_path, path=example)  # the example itself loads
    with pytest.raises(ConfigError, match="promotion.shadow: the agreement rate compares class labels"):
        make_config(tmp_path, path=example, **SHADOW)
