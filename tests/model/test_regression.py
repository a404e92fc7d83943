"""Regression end to end on a table mlgate has never seen (scikit-learn's diabetes, raw units): the real
pipeline, its metrics and gate, behavioural checks (minimum functionality, invariance, direction), serving
with numeric answers and batch scoring with a numeric prediction column and drift of the predictions."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from mlflow.artifacts import download_artifacts
from sklearn.datasets import load_diabetes

from mlgate.batch import ScoreOptions, score
from mlgate.config import ConfigError, load_config
from mlgate.data import TaskMismatchError
from mlgate.batch.job import Scorer
from mlgate.drift import PREDICTION, DriftAccumulator
from mlgate.models import allow_model_loading
from mlgate.pipeline import run_pipeline
from mlgate.serving.app import create_app
from mlgate.serving.model import load_served_model
from mlgate.serving.settings import ServingSettings
from mlgate.validate import validate
from tests.conftest import DEFAULT_CONFIG, make_config, sqlite_store

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
REGRESSION_OVERRIDES = {
    "experiment": "diabetes",
    "model_name": "diabetes-regressor",
    "data.target": "progression",
    "data.classes": None,
    "data.features": [
        {"name": "sex", "type": "categorical", "categories": [1, 2], "nullable": False},
        *({"name": n, "type": "numeric"} for n in FEATURES if n != "sex"),
    ],
    "estimator.class": "sklearn.ensemble.GradientBoostingRegressor",
    "estimator.params": {"n_estimators": 100, "max_depth": 2, "learning_rate": 0.05, "random_state": 0},
    "promotion.thresholds": [
        {"metric": "r2_score", "min_value": 0.3, "max_regression": 0.05},
        {"metric": "root_mean_squared_error", "max_value": 70.0, "max_regression": 3.0},
        {"metric": "mean_absolute_error", "max_value": 60.0},
        {"metric": "mean_absolute_percentage_error", "max_value": 0.6},
    ],
}


def diabetes_csv(folder: Path) -> Path:
    frame = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
    frame["sex"] = frame["sex"].astype(int)
    path = folder / "diabetes.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("regression")
    with sqlite_store(root):
        cfg = make_config(root, **{**REGRESSION_OVERRIDES, "data.source": str(diabetes_csv(root))})
        summary = run_pipeline(cfg)
        model_dir = Path(
            download_artifacts(artifact_uri=f"models:/{cfg.model_name}@champion", dst_path=str(root / "m"))
        )
    return {"cfg": cfg, "summary": summary, "model_dir": model_dir, "root": root}


@pytest.fixture(scope="module")
def sk_model(regression_run):
    with allow_model_loading():
        return mlflow.sklearn.load_model(str(regression_run["model_dir"]))


def test_task_is_inferred_from_the_estimator_and_the_gate_uses_lower_is_better(regression_run):
    cfg, summary = regression_run["cfg"], regression_run["summary"]
    assert cfg.task == "regression"
    directions = {t.metric: t.direction for t in cfg.promotion.thresholds}
    assert directions == {
        "r2_score": "higher",
        "root_mean_squared_error": "lower",
        "mean_absolute_error": "lower",
        "mean_absolute_percentage_error": "lower",
    }
    assert summary["promoted"] and summary["champion_version"] == "1"
    metrics = summary["metrics"]
    assert (
        0.3 < metrics["r2_score"] < 1.0
        and 0 < metrics["mean_absolute_error"] < metrics["root_mean_squared_error"]
    )
    evaluation = json.loads((regression_run["root"] / "outputs" / "evaluation.json").read_text())
    assert evaluation["task"] == "regression"
    client = mlflow.MlflowClient(f"sqlite:///{regression_run['root'] / 'mlflow.db'}")
    artifacts = [a.path for a in client.list_artifacts(evaluation["evaluate_run_id"], "evaluation")]
    assert "evaluation/residuals.png" in artifacts and "evaluation/feature_importance.png" in artifacts


def test_minimum_functionality_beats_predicting_the_mean(regression_run, sk_model):
    test = pd.read_parquet(regression_run["root"] / "outputs" / "split" / "test.parquet")
    predicted = sk_model.predict(test[FEATURES])
    y = test["progression"].to_numpy()
    baseline = np.abs(y - y.mean()).mean()
    assert np.abs(y - predicted).mean() < 0.85 * baseline
    assert predicted.dtype.kind == "f" and not hasattr(sk_model, "predict_proba")


def test_invariant_to_column_order_extra_columns_and_row_order(regression_run, sk_model):
    test = pd.read_parquet(regression_run["root"] / "outputs" / "split" / "test.parquet").head(20)
    base = sk_model.predict(test[FEATURES])
    shuffled = test[FEATURES[::-1]].assign(comment="x")
    np.testing.assert_allclose(sk_model.predict(shuffled), base)
    np.testing.assert_allclose(sk_model.predict(test[FEATURES].iloc[::-1])[::-1], base)


def test_direction_higher_bmi_and_s5_predict_more_progression(regression_run, sk_model):
    test = pd.read_parquet(regression_run["root"] / "outputs" / "split" / "test.parquet").head(30)
    low = test[FEATURES].assign(bmi=20.0, s5=4.0)
    high = test[FEATURES].assign(bmi=35.0, s5=5.5)
    gain = sk_model.predict(high) - sk_model.predict(low)
    assert (gain > 0).all() and gain.mean() > 40


def test_serving_answers_numbers_without_probabilities(regression_run):
    served = load_served_model(regression_run["model_dir"])
    test = pd.read_parquet(regression_run["root"] / "outputs" / "split" / "test.parquet").head(3)
    rows = test[FEATURES].assign(sex=test["sex"].astype(str)).to_dict(orient="records")
    with TestClient(create_app(ServingSettings(), served)) as client:
        invocations = client.post("/invocations", json={"dataframe_records": rows})
        predict = client.post("/predict", json={"records": rows})
        v2 = client.get(f"/v2/models/{served.info['name'] or 'model'}").json()
        metrics = client.get("/metrics").text
    assert invocations.status_code == 200, invocations.text
    values = invocations.json()["predictions"]
    assert len(values) == 3 and all(isinstance(v, float) for v in values)
    assert predict.status_code == 200, predict.text
    assert [p["value"] for p in predict.json()["predictions"]] == pytest.approx(values)
    assert "probabilities" not in predict.text
    assert [o["name"] for o in v2["outputs"]] == ["label"] and v2["outputs"][0]["datatype"] == "FP64"
    assert "mlgate_predictions_total{" not in metrics


def test_batch_writes_a_numeric_prediction_and_counts_drift_of_the_predictions(regression_run, tmp_path):
    test = pd.read_parquet(regression_run["root"] / "outputs" / "split" / "test.parquet")
    source = tmp_path / "in.csv"
    test[FEATURES].to_csv(source, index=False)
    out = tmp_path / "scores.parquet"
    options = {"model_uri": str(regression_run["model_dir"]), "input": str(source), "output": str(out)}
    summary = score(ScoreOptions(**options, workers=0, psi_threshold=0.2))
    assert summary.rows_scored == len(test)
    table = pq.read_table(out)
    assert str(table.schema.field("prediction").type) == "double"
    assert not [c for c in table.column_names if c.startswith("proba_")]
    with allow_model_loading():
        expected = mlflow.sklearn.load_model(str(regression_run["model_dir"])).predict(test[FEATURES])
    # ONNX Runtime, within the parity tolerance: relative to max(1, |value|)
    tolerance = regression_run["cfg"].onnx.tolerance
    np.testing.assert_array_less(
        np.abs(table.column("prediction").to_numpy() - expected),
        tolerance * np.maximum(1, np.abs(expected)) + 1e-12,
    )
    report = json.loads(Path(summary.outputs.drift_json).read_text())["features"][PREDICTION]
    assert report["type"] == "numeric" and report["psi"] < 0.5 and not report["drifted"]

    scorer = Scorer(regression_run["model_dir"])
    features = test[FEATURES].assign(sex=test["sex"].astype(str))
    accumulator = DriftAccumulator(scorer.reference)
    accumulator.add(scorer.score(features, check=True, use_predict=False).drift)
    held_out = accumulator.report(0.2).features[PREDICTION]
    assert held_out.type == "numeric" and held_out.psi < 0.5 and not held_out.drifted
    shifted = features.assign(bmi=features["bmi"] + 12.0)
    accumulator = DriftAccumulator(scorer.reference)
    accumulator.add(scorer.score(shifted, check=False, use_predict=False, drift=False).drift)
    assert accumulator.report(0.2).features[PREDICTION].drifted


def test_a_regressor_under_classification_fails_at_config_load_in_one_line():
    with pytest.raises(ConfigError) as err:
        load_config(
            DEFAULT_CONFIG, {"task": "classification", "estimator.class": "sklearn.linear_model.Ridge"}
        )
    assert "\n" not in str(err.value)
    assert "Ridge is a regressor but task is classification: set task: regression" in str(err.value)


def test_a_continuous_target_under_classification_fails_in_validate_before_training(store):
    cfg = make_config(
        store,
        **{
            **REGRESSION_OVERRIDES,
            "data.source": str(diabetes_csv(store)),
            "estimator.class": "sklearn.ensemble.RandomForestClassifier",
            "estimator.params": {},
            "promotion.thresholds": [{"metric": "accuracy_score"}],
        },
    )
    progression = pd.read_csv(store / "diabetes.csv")["progression"].astype(float) + 0.5
    pd.read_csv(store / "diabetes.csv").assign(progression=progression).to_csv(store / "d.csv", index=False)
    with pytest.raises(TaskMismatchError, match="continuous .* set task: regression") as err:
        validate(cfg, source=str(store / "d.csv"))
    assert "\n" not in str(err.value)
    assert not (store / "outputs" / "validated.parquet").exists()
