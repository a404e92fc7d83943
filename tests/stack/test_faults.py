"""Faults against the real stack, with nothing lost: the server dies mid-run, two promotions race, PostgreSQL
restarts between steps."""

from __future__ import annotations

import json
import shutil
import subprocess  # nosec B404 - the tests drive the mlgate CLI
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlgate.evaluate import evaluate
from mlgate.io import read_step_result
from mlgate.pipeline import run_pipeline
from mlgate.registry import LOCK_SUFFIX, audit_trail, promote, register
from mlgate.stack import StackSettings, _running, start_service, stop_service
from mlgate.train import train
from mlgate.validate import validate
from tests.conftest import write_config
from tests.stack.conftest import cli_env, stack_config, tracking_at

pytestmark = pytest.mark.slow

MLGATE = [sys.executable, "-m", "mlgate"]


def _client(stack: StackSettings) -> MlflowClient:
    return MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)


def _aliases(stack: StackSettings, name: str) -> dict[str, str]:
    return dict(_client(stack).get_registered_model(name).aliases)


def test_server_stopping_mid_run_fails_the_step_by_name_and_moves_no_alias(
    stack: StackSettings, tmp_path: Path
) -> None:
    cfg = stack_config(tmp_path)
    with tracking_at(stack, tmp_path):
        run_pipeline(cfg)
    before = _aliases(stack, cfg.model_name)
    assert before == {"champion": "1", "challenger": "1"}

    second = stack_config(tmp_path / "second", model_name=cfg.model_name, experiment=cfg.experiment)
    config_file = write_config(second, tmp_path / "second.yaml")
    proc = subprocess.Popen(  # nosec B603 - our own CLI
        [*MLGATE, "--config", str(config_file), "run"],
        env=cli_env(stack),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server_pid = _running(stack, "mlflow").pid
    others = {name: _running(stack, name).pid for name in ("postgres", "s3")}
    try:
        # validate is done and train is fitting and logging the model: now the server goes away.
        deadline = time.monotonic() + 180
        while not (second.outputs / "validate.json").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "validate did not finish"
            time.sleep(0.1)
        assert stop_service(stack, "mlflow")
        stopped_at = time.monotonic()
        out, err = proc.communicate(timeout=300)
        failed_after = time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            proc.kill()
        start_service(stack, "mlflow")

    assert proc.returncode == 1, err
    assert f"cannot reach the MLflow tracking server at {stack.tracking_uri}" in err
    assert failed_after < 60, f"the step took {failed_after:.0f} s to give up on a dead server"
    assert not (second.outputs / "register.json").exists()
    # stop_service stopped the server and nothing else
    assert _running(stack, "mlflow").pid != server_pid
    assert {name: _running(stack, name).pid for name in ("postgres", "s3")} == others
    assert _aliases(stack, cfg.model_name) == before
    assert [v.version for v in _client(stack).search_model_versions(f"name = '{cfg.model_name}'")] == ["1"]


def test_racing_promotions_leave_one_champion_and_a_true_audit_trail(
    stack: StackSettings, tmp_path: Path
) -> None:
    a = stack_config(tmp_path / "a")
    b = stack_config(tmp_path / "b", model_name=a.model_name, experiment=a.experiment)
    with tracking_at(stack, tmp_path):
        validate(a)
        train(a)
        evaluate(a)  # no champion yet: both candidates are judged against none
        shutil.copytree(a.outputs, b.outputs)
        versions = {register(a)["version"], register(b)["version"]}
    assert versions == {"1", "2"}
    files = {name: write_config(c, tmp_path / f"{name}.yaml") for name, c in (("a", a), ("b", b))}
    procs = {
        name: subprocess.Popen(  # nosec B603 - our own CLI
            [*MLGATE, "--config", str(path), "promote"],
            env=cli_env(stack),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, path in files.items()
    }
    codes = {name: (p.wait(timeout=300), p.stderr.read()) for name, p in procs.items()}
    assert sorted(code for code, _ in codes.values()) == [0, 3], codes

    winner = next(name for name, (code, _) in codes.items() if code == 0)
    loser = "b" if winner == "a" else "a"
    results = {"a": read_step_result(a.outputs, "promotion"), "b": read_step_result(b.outputs, "promotion")}
    won, lost = results[winner], results[loser]
    assert won["promoted"] and not lost["promoted"] and not lost["passed"]
    stale = [c for c in lost["gate"]["checks"] if c["rule"] == "unchanged_since_evaluate"]
    assert stale and not stale[0]["passed"], json.dumps(lost, indent=1)
    assert "champion moved" in codes[loser][1]

    client = _client(stack)
    assert client.get_model_version_by_alias(a.model_name, "champion").version == won["version"]
    trail = audit_trail(client, a.model_name)
    assert [(e["action"], e["previous"], e["new"]) for e in trail] == [("promote", None, won["version"])]
    with pytest.raises(MlflowException):
        client.get_registered_model(a.model_name + LOCK_SUFFIX)


def test_postgresql_restart_between_steps_is_survived(stack: StackSettings, tmp_path: Path) -> None:
    cfg = stack_config(tmp_path)
    with tracking_at(stack, tmp_path):
        validate(cfg)
        train(cfg)
        old_pid = _running(stack, "postgres").pid
        assert stop_service(stack, "postgres")
        start_service(stack, "postgres")
        assert _running(stack, "postgres").pid != old_pid
        evaluate(cfg)
        register(cfg)
        result = promote(cfg)
    assert result.promoted
    assert _client(stack).get_model_version_by_alias(cfg.model_name, "champion").version == "1"
