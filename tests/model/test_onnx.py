"""Compiled inference: the pipeline compiled to ONNX at training time, its parity proven on the held-out rows
(with missing and unseen values), served and scored by ONNX Runtime; scikit-learn when it cannot be."""

from __future__ import annotations

import json
import subprocess  # nosec B404 - runs this repository's own code in a fresh interpreter
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlgate import data as d
from mlgate.compiler import compile_pipeline, parity_rows
from mlgate.config import PipelineConfig
from mlgate.features import build_pipeline
from mlgate.modelio import ModelLoadError, load_pipeline, read_mlmodel
from mlgate.runtime import ONNX_FILE, PARITY_FILE, OnnxRuntime, SklearnRuntime, load_runtime, onnx_metadata
from mlgate.serving.model import load_served_model
from mlgate.train import train
from mlgate.validate import validate
from tests.conftest import REPO, make_config

EXAMPLES = REPO / "config" / "examples"


def fitted(cfg: PipelineConfig) -> tuple[object, pd.DataFrame]:
    """The config's pipeline fitted on its training split, and the held-out features."""
    table = pd.read_csv(
        REPO / cfg.data.source if not Path(cfg.data.source).is_absolute() else cfg.data.source
    )
    typed, _ = d.coerce_types(table.dropna(subset=[cfg.data.target]), cfg.data, cfg.task)
    train_df, test_df = d.split(typed, cfg.data, cfg.split, cfg.task)
    features = cfg.data.feature_names
    model = build_pipeline(cfg.data, cfg.estimator, cfg.task).fit(
        train_df[features], train_df[cfg.data.target]
    )
    return model, test_df[features]


@pytest.mark.parametrize(
    "config",
    [
        REPO / "config" / "pipeline.yaml",
        EXAMPLES / "penguins-sex.yaml",
        EXAMPLES / "diabetes-regression.yaml",
    ],
)
def test_parity_on_the_held_out_rows_with_missing_and_unseen_values(config: Path, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, config)
    model, X_test = fitted(cfg)
    compiled = compile_pipeline(model, X_test, cfg.onnx.tolerance)
    assert compiled.passed, compiled.report
    report = compiled.report
    assert report["rows"] > len(
        X_test
    )  # the held-out rows, then each feature missing and each category unseen
    runtime = OnnxRuntime(compiled.model, report["inputs"], report.get("classes"))
    rows = parity_rows(X_test, cfg.data.features_of("numeric"), cfg.data.features_of("categorical"))
    if cfg.is_regression:
        expected = model.predict(rows)
        assert np.all(
            np.abs(runtime.predict(rows) - expected) <= cfg.onnx.tolerance * np.maximum(1, np.abs(expected))
        )
    else:
        assert (runtime.predict(rows).astype(str) == model.predict(rows).astype(str)).all()
        assert np.abs(runtime.predict_proba(rows) - model.predict_proba(rows)).max() <= cfg.onnx.tolerance
        assert report["labels_differing"] == 0


def test_missing_text_is_what_scikit_learn_makes_of_it(tmp_path: Path) -> None:
    """NaN is imputed and None is a category of its own (or unseen) in scikit-learn: the same in ONNX."""
    cfg = make_config(tmp_path)
    model, X_test = fitted(cfg)
    compiled = compile_pipeline(model, X_test, cfg.onnx.tolerance)
    runtime = OnnxRuntime(compiled.model, compiled.report["inputs"], compiled.report["classes"])
    rows = X_test.head(20).copy()
    for value in (np.nan, None, "", "Atlantis"):
        rows["island"] = pd.Series([value] * len(rows), index=rows.index, dtype=object)
        assert (
            np.abs(runtime.predict_proba(rows) - model.predict_proba(rows)).max() <= cfg.onnx.tolerance
        ), value


def test_a_model_the_converter_does_not_support_trains_serves_and_scores_with_scikit_learn(
    store: Path, tmp_path: Path
) -> None:
    cfg = make_config(
        store, **{"estimator.class": "sklearn.neighbors.NearestCentroid", "estimator.params": {}}
    )
    validate(cfg)
    summary = train(cfg)  # no failed training
    assert summary["runtime"] == "sklearn"
    from mlflow.artifacts import download_artifacts

    folder = Path(download_artifacts(artifact_uri=summary["model_uri"], dst_path=str(tmp_path / "m")))
    meta = onnx_metadata(read_mlmodel(folder))
    assert meta["passed"] is False and "NearestCentroid" in meta["reason"]
    assert not (folder / ONNX_FILE).exists() and json.loads((folder / PARITY_FILE).read_text()) == meta
    served = load_served_model(folder)
    assert served.info["runtime"] == "sklearn" and served.info["onnx"]["passed"] is False
    assert served.predict(served.records_frame(served.input_example)) == list(
        load_pipeline(folder).predict(pd.DataFrame(served.input_example))
    )
    with pytest.raises(ModelLoadError, match="no parity-proven ONNX model .*NearestCentroid"):
        load_runtime(folder, choice="onnx")
    out = tmp_path / "scores.parquet"
    result = subprocess.run(  # nosec B603 - this repository's own CLI
        [
            sys.executable,
            "-m",
            "mlgate",
            "score",
            "--model",
            str(folder),
            "--input",
            cfg.data.source,
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    scored = json.loads(out.with_name("scores.summary.json").read_text())
    assert scored["runtime"] == "sklearn" and scored["rows_scored"] > 300


def test_a_parity_failure_keeps_the_model_scikit_learn_only(store: Path) -> None:
    cfg = make_config(store, **{"onnx.tolerance": 1e-12})  # float32 cannot be this close
    validate(cfg)
    summary = train(cfg)
    assert summary["runtime"] == "sklearn"
    from mlflow.artifacts import download_artifacts

    folder = Path(download_artifacts(artifact_uri=summary["model_uri"], dst_path=str(store / "m")))
    meta = onnx_metadata(read_mlmodel(folder))
    assert meta["passed"] is False and "differs from the pipeline" in meta["reason"]
    assert isinstance(load_runtime(folder), SklearnRuntime)


def test_onnx_disabled_logs_no_compiled_model(store: Path) -> None:
    cfg = make_config(store, **{"onnx.enabled": False})
    validate(cfg)
    summary = train(cfg)
    from mlflow.artifacts import download_artifacts

    folder = Path(download_artifacts(artifact_uri=summary["model_uri"], dst_path=str(store / "m")))
    assert summary["runtime"] == "sklearn" and onnx_metadata(read_mlmodel(folder)) == {}
    assert not (folder / "onnx").exists()


def test_the_trained_champion_runs_on_onnx_and_a_setting_forces_scikit_learn(trained_model: dict) -> None:
    folder = trained_model["model_dir"]
    assert (folder / ONNX_FILE).is_file()
    compiled, sklearn = load_served_model(folder), load_served_model(folder, runtime="sklearn")
    assert compiled.info["runtime"] == "onnx" and sklearn.info["runtime"] == "sklearn"
    assert compiled.info["onnx"]["passed"] is True
    test = pd.read_parquet(trained_model["test_path"])
    columns = compiled.records_frame(test[[c.name for c in compiled.columns]].to_dict("records"))
    labels, proba = compiled.predict_proba(columns)
    their_labels, their_proba = sklearn.predict_proba(columns)
    assert labels == their_labels
    assert np.abs(proba - their_proba).max() <= trained_model["config"].onnx.tolerance


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in {"pandas", "sklearn", "scipy", "skops", "mlflow", "pyarrow"}:
            raise ImportError(f"{name} is not in the ONNX serving image")
sys.meta_path.insert(0, Block())
from fastapi.testclient import TestClient
from mlgate.serving.app import create_app
from mlgate.serving.model import load_served_model
from mlgate.serving.settings import ServingSettings
settings = ServingSettings(model=sys.argv[1])
served = load_served_model(sys.argv[1])
with TestClient(create_app(settings, served)) as client:
    ready = client.get("/ready").status_code
    answer = client.post("/invocations", json={"dataframe_records": served.input_example})
print(served.info["runtime"], ready, answer.status_code, answer.json()["predictions"][0])
"""


def test_serving_an_onnx_model_needs_neither_pandas_nor_scikit_learn(trained_model: dict) -> None:
    result = subprocess.run(  # nosec B603 - this repository's own code
        [sys.executable, "-c", BLOCKER, str(trained_model["model_dir"])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    runtime, ready, status, first = result.stdout.split()[-4:]
    assert (runtime, ready, status) == ("onnx", "200", "200") and first in trained_model[
        "config"
    ].data.classes
