"""The champion is evaluated once per model and held-out split: a rerun logs the evaluation the previous run
kept of that model (as its candidate) instead of loading and scoring it again, and what it logs is what a
fresh evaluation logs. A different split, or a kept file that changed, is never reused."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import pytest
from mlflow import MlflowClient

from mlgate import evaluate as ev
from mlgate.pipeline import run_pipeline
from tests.conftest import make_config


class Spy:
    """Records the models MLflow evaluates and loads, and calls the real functions."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.evaluated: list[Any] = []
        self.loaded: list[str] = []
        real_evaluate = mlflow.models.evaluate
        real_pyfunc, real_sklearn = mlflow.pyfunc.load_model, mlflow.sklearn.load_model

        def evaluate(*args: Any, **kwargs: Any) -> Any:
            self.evaluated.append(kwargs.get("model", args[0] if args else None))
            return real_evaluate(*args, **kwargs)

        def pyfunc_load(model_uri: Any, *args: Any, **kwargs: Any) -> Any:
            self.loaded.append(str(model_uri))
            return real_pyfunc(model_uri, *args, **kwargs)

        def sklearn_load(model_uri: Any, *args: Any, **kwargs: Any) -> Any:
            self.loaded.append(str(model_uri))
            return real_sklearn(model_uri, *args, **kwargs)

        monkeypatch.setattr(mlflow.models, "evaluate", evaluate)
        monkeypatch.setattr(mlflow.pyfunc, "load_model", pyfunc_load)
        monkeypatch.setattr(mlflow.sklearn, "load_model", sklearn_load)


def _run_state(run_id: str) -> dict[str, Any]:
    """What a user sees of an evaluate run: every metric's history, tags, inputs, metrics linked to logged
    models, and the bytes of every artifact."""
    client = MlflowClient()
    run = client.get_run(run_id)
    history = {k: [(m.value, m.step) for m in client.get_metric_history(run_id, k)] for k in run.data.metrics}
    datasets = sorted(
        (d.dataset.name, d.dataset.digest, sorted((t.key, t.value) for t in d.tags))
        for d in run.inputs.dataset_inputs
    )
    linked = {}
    for model in run.inputs.model_inputs or []:
        metrics = client.get_logged_model(model.model_id).metrics or []
        linked[model.model_id] = sorted((m.key, m.value) for m in metrics if m.run_id == run_id)
    root = Path(run.info.artifact_uri)
    artifacts = {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }
    return {
        "metrics": history,
        "tags": sorted(k for k in run.data.tags if k != "mlflow.runName"),
        "datasets": datasets,
        "linked": linked,
        "artifacts": artifacts,
    }


def _without_run_ids(evaluation: dict[str, Any]) -> str:
    return re.sub(r"[0-9a-f]{32}", "<id>", json.dumps(evaluation, sort_keys=True))


def test_a_rerun_reuses_the_champions_evaluation_and_logs_what_a_fresh_one_logs(cfg, monkeypatch, caplog):
    first = run_pipeline(cfg)
    spy = Spy(monkeypatch)
    with caplog.at_level("INFO", logger="mlgate.evaluate"):
        second = run_pipeline(cfg)
    champion_uri = f"models:/{cfg.model_name}/{first['candidate_version']}"
    assert len(spy.evaluated) == 1 and isinstance(spy.evaluated[0], mlflow.pyfunc.PyFuncModel)  # candidate
    assert champion_uri not in spy.loaded
    candidate_uri = json.loads((cfg.outputs / "train.json").read_text())["model_uri"]
    # From the registry, only the candidate is loaded, once, for MLflow and for our own predictions (train's
    # log_model loads its local copy to check the input example).
    assert [uri for uri in spy.loaded if uri.startswith("models:/")] == [candidate_uri]
    assert "its evaluation on this split is reused" in caplog.text
    assert second["promoted"] and second["metrics"] == first["metrics"]

    # The same evaluation (candidate vs the new champion) with the kept result, then recomputed.
    reused = ev.evaluate(cfg)
    assert len(spy.evaluated) == 2 and (cfg.outputs / "report.md").read_text().count("champion (v2)") == 1
    # Recomputed: nothing kept to find (the candidate's own result, kept first, is this champion's too).
    shutil.rmtree(cfg.outputs / ev.CACHE_FOLDER)
    monkeypatch.setattr(ev, "_kept", lambda *_: None)
    fresh = ev.evaluate(cfg)
    assert len(spy.evaluated) == 4  # candidate and champion, both by MLflow
    assert fresh["champion"]["metrics"] == reused["champion"]["metrics"]
    assert _without_run_ids(fresh) == _without_run_ids(reused)
    assert _run_state(fresh["evaluate_run_id"]) == _run_state(reused["evaluate_run_id"])
    kept = sorted(p.name for p in (cfg.outputs / ev.CACHE_FOLDER).iterdir())
    assert len(kept) == 1  # candidate and champion are one model here; nothing else is kept


def test_a_changed_kept_file_or_another_split_is_never_reused(cfg, store, monkeypatch):
    run_pipeline(cfg)
    (folder,) = (cfg.outputs / ev.CACHE_FOLDER).iterdir()  # version 1's evaluation, kept as the candidate
    plot = next((folder / "artifacts").glob("*.png"))
    original = plot.read_bytes()
    plot.write_bytes(original + b"changed")
    spy = Spy(monkeypatch)
    second = run_pipeline(cfg)
    assert len(spy.evaluated) == 2 and f"models:/{cfg.model_name}/1" in spy.loaded  # scored again
    logged = _run_state(json.loads((cfg.outputs / "evaluation.json").read_text())["evaluate_run_id"])
    assert logged["artifacts"][f"champion_{plot.name}"] == hashlib.sha256(original).hexdigest()
    assert plot.read_bytes() == original and second["promoted"]  # kept afresh; version 2 is the champion

    reseeded = make_config(store, **{"split.seed": 7})
    run_pipeline(reseeded)
    assert len(spy.evaluated) == 4  # version 2's evaluation was kept on the other split: scored again
    assert f"models:/{cfg.model_name}/{second['candidate_version']}" in spy.loaded
