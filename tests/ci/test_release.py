"""The release make targets of pipeline.yml and rollback.yml, against a real (SQLite) registry: the bundle's
version for the job outputs, the rollback plan for an empty or a numbered version, the unchanged-retrain
check, and the gate's exit code as the runner sees it."""

from __future__ import annotations

import json
import os
import subprocess  # nosec B404 - tests run fixed commands
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlgate.config import PipelineConfig
from mlgate.gate import decide
from mlgate.io import write_json
from mlgate.registry import audit_trail, rollback
from mlgate.tracking import use_experiment
from mlgate.train import train
from mlgate.validate import validate
from tests.ci.workflows import REPO
from tests.conftest import write_config


def _make(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    return subprocess.run(
        ["make", "--no-print-directory", "--silent", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=300,
    )


def _versions(cfg: PipelineConfig, store: Path, n: int, tags: dict[str, str] | None = None) -> MlflowClient:
    client = MlflowClient()
    client.create_registered_model(cfg.model_name)
    for i in range(n):
        (store / f"m{i}").mkdir()
        client.create_model_version(cfg.model_name, str(store / f"m{i}"), tags=tags)
    return client


def test_ci_model_version_prints_the_bare_number_of_an_mlflow_bundle(tmp_path: Path) -> None:
    """MLflow writes `model_version: '2'` (quoted) into registered_model_meta; the job output must be `2`."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "MLmodel").write_text("flavors: {}\n")
    (bundle / "registered_model_meta").write_text("model_name: penguins-classifier\nmodel_version: '2'\n")
    (bundle / "mlgate_bundle.json").write_text(json.dumps({"name": "m", "version": "2"}, indent=2) + "\n")
    res = _make("ci-model-version", f"CI_BUNDLE={bundle}")
    assert (res.returncode, res.stdout) == (0, "version=2\n"), res.stderr
    (bundle / "mlgate_bundle.json").unlink()
    res = _make("ci-model-version", f"CI_BUNDLE={bundle}")
    assert res.returncode != 0 and "MODEL_VERSION must be a model version number" in res.stderr


@pytest.mark.slow
def test_rollback_plan_with_an_empty_version_names_the_previous_champion_then_ci_rollback_moves_it(
    cfg: PipelineConfig, store: Path
) -> None:
    client = _versions(cfg, store, 2)
    rollback(cfg, version="1", reason="first champion")
    rollback(cfg, version="2", reason="second champion")
    config = write_config(cfg, store / "pipeline.yaml")
    env = {"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"], "CONFIG": str(config)}

    plan = _make("ci-rollback-plan", VERSION="", **env)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines() == ["version=1", "previous=2"]
    assert (
        str(client.get_model_version_by_alias(cfg.model_name, "champion").version) == "2"
    )  # a plan moves nothing

    numbered = _make("ci-rollback-plan", VERSION="2", **env)
    assert numbered.stdout.splitlines() == ["version=2", "previous=2"], numbered.stderr
    assert _make("ci-rollback-plan", VERSION="7", **env).returncode != 0  # no such version

    moved = _make("ci-rollback", VERSION="1", REASON="the image of 2 misbehaves", **env)
    assert moved.returncode == 0, moved.stderr
    assert str(client.get_model_version_by_alias(cfg.model_name, "champion").version) == "1"
    assert audit_trail(client, cfg.model_name)[-1]["reason"] == "the image of 2 misbehaves"


@pytest.mark.slow
def test_an_unchanged_retrain_is_no_release_through_the_real_steps(cfg: PipelineConfig, store: Path) -> None:
    """The Monday schedule on unchanged data, config and commit, as a user runs it: `make pipeline`
    (validate -> train -> evaluate -> register -> promote), then lineage after that validate and again after
    `make ci-validate` (validate through `mlflow run`, as the pipeline job runs it). Both digests come from
    the real steps (train once tagged its training split's digest, which never equals validate's digest of
    the whole accepted table, so every retrain was a release)."""
    config = write_config(cfg, store / "pipeline.yaml")
    env = {"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"], "CONFIG": str(config)}
    use_experiment(cfg)  # made here, so that its artifacts go to this test's folder, not the checkout's
    assert _make("ci-validate", **env).returncode == 0
    first = _make("ci-lineage", **env)  # no champion yet: a release
    assert (first.returncode, first.stdout) == (0, "changed=true\n"), first.stderr
    pipeline = _make("pipeline", **env)
    assert pipeline.returncode == 0, pipeline.stderr
    assert str(MlflowClient().get_model_version_by_alias(cfg.model_name, "champion").version) == "1"

    direct = _make("ci-lineage", **env)  # on the validate of `mlgate run`
    assert (direct.returncode, direct.stdout) == (0, "changed=false\n"), direct.stderr
    validated = _make("ci-validate", **env)
    assert validated.returncode == 0, validated.stderr
    same = _make("ci-lineage", **env)
    assert (same.returncode, same.stdout) == (0, "changed=false\n"), same.stderr
    assert "nothing changed" in same.stderr
    assert _make("ci-lineage", FORCE="true", **env).stdout == "changed=true\n"

    fewer = store / "fewer.csv"  # new data: the same table less its last five rows
    fewer.write_text("".join(Path(cfg.data.source).read_text().splitlines(keepends=True)[:-5]))
    mlgate = REPO / ".venv" / "bin" / "mlgate"
    subprocess.run(  # nosec B603
        [str(mlgate), "--config", str(config), "validate", "--data", str(fewer)],
        check=True, capture_output=True, cwd=REPO, env={**os.environ, **env},
    )  # fmt: skip
    new_data = _make("ci-lineage", **env)
    assert new_data.stdout == "changed=true\n" and "data_digest" in new_data.stderr, new_data.stderr
    assert "config_hash" not in new_data.stderr and "git_commit" not in new_data.stderr


def test_train_on_a_given_table_records_the_digest_validate_gives_it(cfg: PipelineConfig) -> None:
    """`mlgate train --data <table>` records as lineage the digest validate gives the same table (its typed
    rows in the schema's columns), not the digest of the file as read: `mlgate lineage` compares the two."""
    validated = validate(cfg)  # the config's CSV, with a column the schema does not have
    trained = train(cfg, data_path=cfg.data.source)
    assert trained["dataset_digest"] == validated["dataset_digest"]
    run = MlflowClient().get_run(trained["run_id"])
    assert run.data.tags["mlgate.data_digest"] == validated["dataset_digest"]
    assert run.data.tags["mlgate.train_split_digest"] == trained["train_split_digest"]


def test_mlgate_gate_status_exits_3_on_a_rejection_as_the_runner_sees_it(cfg: PipelineConfig) -> None:
    worse = {"accuracy_score": 0.5, "f1_score": 0.5, "log_loss": 2.0}
    decision = decide(cfg.promotion.thresholds, worse, None)
    promotion = {"name": cfg.model_name, "version": "2", "previous_champion": "1", "passed": decision.passed}
    promotion |= {"promoted": False, "already_champion": False, "dry_run": True, "gate": decision.to_dict()}
    write_json(promotion, cfg.outputs / "promotion.json")
    config = write_config(cfg, cfg.outputs.parent / "pipeline.yaml")
    mlgate = REPO / ".venv" / "bin" / "mlgate"
    res = subprocess.run(
        [str(mlgate), "--config", str(config), "gate-status"], capture_output=True, text=True
    )
    assert res.returncode == 3 and "FAILED" in res.stdout
    good = decide(
        cfg.promotion.thresholds, {"accuracy_score": 0.99, "f1_score": 0.99, "log_loss": 0.05}, None
    )
    assert good.passed
    write_json({**promotion, "passed": True, "gate": good.to_dict()}, cfg.outputs / "promotion.json")
    dry = subprocess.run(
        [str(mlgate), "--config", str(config), "gate-status"], capture_output=True, text=True
    )
    assert dry.returncode == 0 and "becomes the champion once its images are published" in dry.stdout
