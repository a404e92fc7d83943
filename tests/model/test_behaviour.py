"""Behavioural checks of the trained model (minimum functionality, invariance, direction), and the pipeline on
other datasets by changing only the config."""

from __future__ import annotations

import mlflow.pyfunc
import mlflow.sklearn
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from mlgate.models import allow_model_loading
from mlgate.pipeline import run_pipeline
from tests.conftest import REPO, make_config, write_config

TYPICAL = pd.DataFrame(
    [
        {"island": "Torgersen", "bill_length_mm": 38.8, "bill_depth_mm": 18.3, "flipper_length_mm": 190.0,
         "body_mass_g": 3700.0, "sex": "male"},
        {"island": "Dream", "bill_length_mm": 48.8, "bill_depth_mm": 18.4, "flipper_length_mm": 196.0,
         "body_mass_g": 3730.0, "sex": "female"},
        {"island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 15.0, "flipper_length_mm": 217.0,
         "body_mass_g": 5076.0, "sex": "male"},
    ]
)  # fmt: skip


@pytest.fixture(scope="module")
def sk_model(trained_model):
    with allow_model_loading():
        return mlflow.sklearn.load_model(str(trained_model["model_dir"]))


def test_minimum_functionality_on_textbook_penguins(sk_model):
    assert list(sk_model.predict(TYPICAL)) == ["Adelie", "Chinstrap", "Gentoo"]


def test_held_out_accuracy_is_high(sk_model, trained_model):
    test = pd.read_parquet(trained_model["test_path"])
    accuracy = (sk_model.predict(test[TYPICAL.columns]) == test["species"]).mean()
    assert accuracy >= 0.95


def test_invariant_to_column_order_extra_columns_and_row_order(sk_model):
    base = sk_model.predict_proba(TYPICAL)
    shuffled = TYPICAL[TYPICAL.columns[::-1]].assign(year=2009, comment="x")
    pd.testing.assert_frame_equal(pd.DataFrame(sk_model.predict_proba(shuffled)), pd.DataFrame(base))
    reversed_rows = sk_model.predict_proba(TYPICAL.iloc[::-1])
    pd.testing.assert_frame_equal(pd.DataFrame(reversed_rows[::-1]), pd.DataFrame(base))


def test_direction_longer_flippers_and_mass_make_gentoo_likelier(sk_model):
    gentoo = list(sk_model.classes_).index("Gentoo")
    row = TYPICAL.iloc[[0]].copy()
    small = sk_model.predict_proba(row)[0, gentoo]
    row[["flipper_length_mm", "body_mass_g"]] = [225.0, 5600.0]
    assert sk_model.predict_proba(row)[0, gentoo] > small + 0.15


def test_missing_values_and_unseen_categories_are_handled_inside_the_model(sk_model):
    holes = TYPICAL.copy().astype(object)
    holes.loc[0, ["bill_length_mm", "sex"]] = [None, None]
    holes.loc[1, "island"] = "Unseen Island"
    proba = sk_model.predict_proba(holes)
    assert proba.shape == (3, 3) and abs(proba.sum(axis=1) - 1).max() < 1e-9


def test_pyfunc_enforces_the_signature(trained_model):
    with allow_model_loading():
        model = mlflow.pyfunc.load_model(str(trained_model["model_dir"]))
    names = [c.name for c in model.metadata.get_input_schema().inputs]
    assert names == list(TYPICAL.columns)
    with pytest.raises(Exception, match="bill_depth_mm"):
        model.predict(TYPICAL.drop(columns=["bill_depth_mm"]))


@pytest.mark.slow
def test_binary_example_config_runs_end_to_end(store):
    cfg = make_config(store, REPO / "config" / "examples" / "penguins-sex.yaml")
    summary = run_pipeline(cfg)
    assert summary["rows_quarantined"] == 11 and summary["promoted"]
    assert summary["metrics"]["roc_auc"] > 0.9


@pytest.mark.slow
def test_another_dataset_by_changing_only_the_config(store):
    frame = load_breast_cancer(as_frame=True).frame.rename(columns=lambda c: c.replace(" ", "_"))
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    frame.to_parquet(store / "cancer.parquet")
    features = [{"name": c, "type": "numeric"} for c in frame.columns if c != "target"][:10]
    cfg = make_config(
        store,
        **{
            "experiment": "cancer",
            "model_name": "cancer-classifier",
            "data.source": str(store / "cancer.parquet"),
            "data.target": "target",
            "data.classes": ["benign", "malignant"],
            "data.features": features,
            "estimator.class": "sklearn.ensemble.HistGradientBoostingClassifier",
            "estimator.params": {"max_iter": 50, "random_state": 0},
            "promotion.thresholds": [{"metric": "roc_auc", "min_value": 0.9}],
        },
    )
    write_config(cfg, store / "cancer.yaml")
    summary = run_pipeline(cfg)
    assert summary["promoted"] and summary["metrics"]["roc_auc"] > 0.95
