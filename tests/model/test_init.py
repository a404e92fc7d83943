"""`mlgate init` on tables scikit-learn ships (never penguins): what it guesses, what it refuses, and that the
config it writes runs unchanged through `make pipeline CONFIG=...` (the Makefile's own recipe); the regression
model it leads to is then served and batch-scored with numeric outputs."""

from __future__ import annotations

import os
import subprocess  # nosec B404 - the tests run make and our own CLI
import sys
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from mlgate.cli import cli
from mlgate.config import load_config
from tests.conftest import REPO
from tests.serving.conftest import mlgate_serve

MLGATE = Path(sys.executable).with_name("mlgate")


def wine_csv(folder: Path) -> Path:
    frame = load_wine(as_frame=True).frame
    frame["cultivar"] = frame.pop("target").map({0: "barolo", 1: "grignolino", 2: "barbera"})
    frame.insert(0, "bottle_id", range(1000, 1000 + len(frame)))
    frame.loc[::17, "magnesium"] = None  # some holes: nullable is guessed from the sample
    path = folder / "wine.csv"
    frame.to_csv(path, index=False)
    return path


def cancer_csv(folder: Path) -> Path:
    frame = load_breast_cancer(as_frame=True).frame.rename(columns=lambda c: c.replace(" ", "_"))
    path = folder / "cancer.csv"
    frame.to_csv(path, index=False)
    return path


def diabetes_parquet(folder: Path) -> Path:
    frame = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
    frame["sex"] = frame["sex"].astype(int)
    path = folder / "diabetes.parquet"
    frame.to_parquet(path)
    return path


def init(*args: str):
    return CliRunner().invoke(cli, ["init", *args])


def test_wine_guesses_types_ranges_nulls_classes_and_leaves_the_id_out(tmp_path):
    out = tmp_path / "wine.yaml"
    result = init(str(wine_csv(tmp_path)), "--target", "cultivar", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "left out 'bottle_id': its name looks like an identifier" in result.output
    assert "task: classification" in result.output
    cfg = load_config(out)
    assert cfg.task == "classification" and cfg.data.classes == ["barbera", "barolo", "grignolino"]
    features = {f.name: f for f in cfg.data.features}
    assert "bottle_id" not in features and "cultivar" not in features and len(features) == 13
    table = pd.read_csv(tmp_path / "wine.csv")
    alcohol = features["alcohol"]
    assert (
        alcohol.type == "numeric"
        and alcohol.min < table["alcohol"].min() < table["alcohol"].max() < alcohol.max
    )
    assert features["magnesium"].nullable and not features["alcohol"].nullable
    text = out.read_text()
    assert text.startswith("# Written by `mlgate init`") and "# inferred from the target" in text
    assert (
        cfg.promotion.thresholds[0].metric == "accuracy_score" and cfg.promotion.thresholds[0].min_value > 0.8
    )


def test_integer_codes_become_categories_and_a_float_target_regression(tmp_path):
    out = tmp_path / "diabetes.yaml"
    result = init(str(diabetes_parquet(tmp_path)), "--target", "progression", "--out", str(out))
    assert result.exit_code == 0, result.output
    raw = yaml.safe_load(out.read_text())
    sex = next(f for f in raw["data"]["features"] if f["name"] == "sex")
    assert sex["categories"] == [1, 2]  # written as numbers, as the data has them ...
    cfg = load_config(out)
    assert next(f for f in cfg.data.features if f.name == "sex").categories == ["1", "2"]  # ... read as text
    assert cfg.task == "regression" and cfg.data.classes is None and not cfg.split.stratify
    assert [t.metric for t in cfg.promotion.thresholds][:2] == ["r2_score", "root_mean_squared_error"]
    assert cfg.promotion.thresholds[1].direction == "lower"


def test_without_out_it_prints_the_config(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(cancer_csv(tmp_path)), "--target", "target"])
    assert result.exit_code == 0
    assert "model_name: cancer-classifier" in result.stdout and "classes: ['0', '1']" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "nope"], "--target 'nope' is not a column of"),
        (["--target", "cultivar", "--task", "regression"], "target 'cultivar' is not numeric"),
        (["--target", "alcohol", "--task", "classification"], "'alcohol' is continuous"),
    ],
)
def test_bad_requests_fail_in_one_line(tmp_path, args, message):
    result = init(str(wine_csv(tmp_path)), *args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlgate init failed: ") and message in lines[0]


def test_an_existing_file_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "taken.yaml"
    out.write_text("keep me\n")
    source = str(wine_csv(tmp_path))
    assert init(source, "--target", "cultivar", "--out", str(out)).exit_code == 1
    assert out.read_text() == "keep me\n"
    assert init(source, "--target", "cultivar", "--out", str(out), "--force").exit_code == 0
    assert load_config(out).model_name == "wine-classifier"


def make_pipeline(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    """`make pipeline CONFIG=...` as written, from ``cwd`` (its outputs and store), the venv already there."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    return subprocess.run(  # nosec B603 B607 - make with a fixed argument list
        ["make", "-f", str(REPO / "Makefile"), f"VENV={REPO / '.venv'}", "-o", "install-runtime"]
        + ["pipeline", f"CONFIG={config}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.parametrize("table, target", [(wine_csv, "cultivar"), (cancer_csv, "target")])
def test_make_pipeline_runs_the_generated_classification_config_unchanged(tmp_path, table, target):
    out = tmp_path / "generated.yaml"
    assert init(str(table(tmp_path)), "--target", target, "--out", str(out)).exit_code == 0
    run = make_pipeline(out, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert '"promoted": true' in run.stdout and (tmp_path / "outputs" / "report.md").is_file()


@pytest.mark.slow
def test_regression_from_init_is_trained_served_and_batch_scored_with_numbers(tmp_path):
    source = diabetes_parquet(tmp_path)
    out = tmp_path / "diabetes.yaml"
    assert init(str(source), "--target", "progression", "--out", str(out)).exit_code == 0
    run = make_pipeline(out, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert '"promoted": true' in run.stdout
    cfg = load_config(out)
    champion = f"models:/{cfg.model_name}@champion"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}

    scores = tmp_path / "scores.parquet"
    score = subprocess.run(  # nosec B603 - our CLI, fixed arguments
        [str(MLGATE), "--config", str(out), "score", "--input", str(source), "--output", str(scores)]
        + ["--workers", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert score.returncode == 0, score.stderr[-3000:]
    table = pq.read_table(scores)
    assert str(table.schema.field("prediction").type) == "double" and table.num_rows == 442
    assert not [c for c in table.column_names if c.startswith("proba_")]

    rows = pd.read_parquet(source).drop(columns="progression").head(2)
    rows["sex"] = rows["sex"].astype(str)
    records = rows.to_dict(orient="records")
    os.chdir(tmp_path)
    with mlgate_serve(["--model", champion], tmp_path / "serve.log", env) as server:
        invocations = httpx.post(f"{server['url']}/invocations", json={"dataframe_records": records})
        predict = httpx.post(f"{server['url']}/predict", json={"records": records})
    assert invocations.status_code == 200, invocations.text
    values = invocations.json()["predictions"]
    assert all(isinstance(v, float) for v in values)
    assert predict.status_code == 200 and [p["value"] for p in predict.json()["predictions"]] == values
    assert table.column("prediction").to_pylist()[:2] == pytest.approx(values)
