"""The local batch engine: counts add up, bad rows are quarantined with a reason, outputs are atomic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from mlgate import score as batch
from mlgate.cli import EXIT_DRIFT, cli
from mlgate.io import DataSourceError
from mlgate.models import allow_model_loading
from tests.conftest import PENGUINS

FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex"]


def corrupt_copy(folder: Path) -> tuple[Path, int, int]:
    """The penguins CSV with bad types, nulls in a required column, garbage lines and a file missing a column.

    Returns the folder, the number of data lines and the number of rows that must be quarantined."""
    folder.mkdir()
    df = pd.read_csv(PENGUINS).astype(str).replace("nan", "NA")
    df.insert(0, "id", [f"p{i}" for i in range(len(df))])
    df.loc[3, "bill_length_mm"] = "abc"
    df.loc[10, "body_mass_g"] = "4,5kg"  # quoted by to_csv: one field, not a number
    df.loc[20, "island"] = "NA"
    lines = df.to_csv(index=False).splitlines()
    lines.insert(30, "complete garbage without separators")
    lines.insert(50, lines[49] + ",one,field,too,many")
    (folder / "a.csv").write_text("\n".join(lines) + "\n")
    df.drop(columns=["sex"]).head(5).to_csv(folder / "b.csv", index=False)
    return folder, len(df) + 2 + 5, 3 + 2 + 5


def _score(model_dir: Path, source: Path, out: Path, **kwargs) -> dict:
    return batch.score(str(model_dir), str(source), str(out), **{"workers": 0, **kwargs})


def test_default_data_scored_like_the_model(trained_model: dict, tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    summary = _score(trained_model["model_dir"], PENGUINS, out, keys=["year"], workers=1, chunk_rows=100)
    raw = pd.read_csv(PENGUINS)
    scores = pd.read_parquet(out)
    quarantine = pd.read_parquet(out.with_name("scores.quarantine.parquet"))
    assert summary["rows_in"] == len(raw) == summary["rows_scored"] + summary["rows_quarantined"]
    assert len(scores) == summary["rows_scored"] and len(quarantine) == summary["rows_quarantined"]
    assert scores["_source_row"].is_monotonic_increasing  # written in input order
    with allow_model_loading():
        model = mlflow.sklearn.load_model(str(trained_model["model_dir"]))
    rows = raw.iloc[scores["_source_row"]][FEATURES]
    proba = scores[[f"proba_{c}" for c in model.classes_]].to_numpy()
    np.testing.assert_allclose(proba, model.predict_proba(rows))
    assert (scores["prediction"].to_numpy() == model.predict(rows)).all()
    assert (scores["year"] == raw.iloc[scores["_source_row"]]["year"].astype(str).to_numpy()).all()
    assert scores["model_version"].iloc[0] != "" and scores["scored_at"].notna().all()
    assert json.loads(out.with_name("scores.summary.json").read_text())["counts_add_up"] is True


def test_corrupted_copy_quarantines_every_bad_row(trained_model: dict, tmp_path: Path) -> None:
    folder, lines, bad = corrupt_copy(tmp_path / "in")
    out = tmp_path / "out" / "scores.csv"
    summary = _score(trained_model["model_dir"], folder, out, keys=["id"], chunk_rows=64)
    quarantine = pd.read_csv(out.with_name("scores.quarantine.csv"))
    scores = pd.read_csv(out)
    assert summary["rows_in"] == lines
    assert summary["rows_quarantined"] == bad == len(quarantine)
    assert summary["rows_scored"] == lines - bad == len(scores)
    assert quarantine["_quarantine_reason"].notna().all()
    reasons = " | ".join(quarantine["_quarantine_reason"])
    for expected in (
        "'abc' is not a number",
        "'4,5kg' is not a number",
        "island: null but required",
        "malformed",
        "sex: missing column",
    ):
        assert expected in reasons
    assert not set(scores["id"]) & {"p3", "p10", "p20"}


def test_workers_load_the_model_without_mlflow(trained_model: dict, tmp_path: Path) -> None:
    model = batch.load_batch_model(str(trained_model["model_dir"]), tmp_path)
    predictor = batch._Predictor(model, workers=1)
    try:
        modules = predictor._pool.submit(batch._worker_modules, 0).result()
        proba, labels, _ = predictor.submit(pd.read_csv(PENGUINS).dropna().head(5)[FEATURES])
    finally:
        predictor.close()
    assert "sklearn" in modules and "mlflow" not in modules
    assert proba.shape == (5, len(model.classes)) and set(labels) <= set(model.classes)


def test_registry_alias_is_pinned_and_reported(trained_model: dict, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_model["tracking_uri"])
    mlflow.set_tracking_uri(trained_model["tracking_uri"])
    try:
        name = trained_model["config"].model_name
        model = batch.load_batch_model(f"models:/{name}@champion", tmp_path)
    finally:
        mlflow.set_tracking_uri(None)
    assert (model.name, model.version) == (name, trained_model["summary"]["champion_version"])
    assert (model.path / "MLmodel").is_file()


def test_model_without_signature_is_refused(trained_model: dict, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(trained_model["model_dir"], tmp_path / "model"))
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    del mlmodel["signature"]
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(batch.ScoringError, match="no input signature"):
        batch.load_batch_model(str(folder), tmp_path)


def test_parquet_column_of_the_wrong_type(trained_model: dict, tmp_path: Path) -> None:
    df = pd.read_csv(PENGUINS).head(20)
    df["sex"] = 1
    df.to_parquet(tmp_path / "in.parquet")
    summary = _score(trained_model["model_dir"], tmp_path / "in.parquet", tmp_path / "o.parquet")
    assert summary["rows_quarantined"] == 20 and summary["rows_scored"] == 0
    assert "sex: has type int64, expected a string" in summary["quarantine_reasons"]


def test_failure_midway_leaves_no_output(trained_model: dict, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "scores.parquet"
    real_write, calls = batch._AtomicTableWriter.write, []

    def failing_write(self, table):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt("killed")
        real_write(self, table)

    monkeypatch.setattr(batch._AtomicTableWriter, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        _score(trained_model["model_dir"], PENGUINS, out, chunk_rows=50)
    assert list(tmp_path.iterdir()) == []  # no output, no summary, no temporary left behind


def test_rerun_gives_the_same_result(trained_model: dict, tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    (tmp_path / ".scores.parquet.stale.tmp").write_text("left by a killed run")
    _score(trained_model["model_dir"], PENGUINS, out, chunk_rows=77)
    first = pd.read_parquet(out).drop(columns="scored_at")
    _score(trained_model["model_dir"], PENGUINS, out, chunk_rows=77)
    pd.testing.assert_frame_equal(first, pd.read_parquet(out).drop(columns="scored_at"))
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "no such file"),
        ("empty.csv", "", "is empty"),
        ("data.json", "{}", "unsupported"),
        ("header.csv", "island,sex\n", "no rows"),
    ],
)
def test_bad_inputs_fail_with_one_line(trained_model: dict, tmp_path: Path, name, content, message) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataSourceError, match=message):
        _score(trained_model["model_dir"], path, tmp_path / "o.parquet")
    result = CliRunner().invoke(
        cli,
        [
            "score",
            "--model",
            str(trained_model["model_dir"]),
            "--input",
            str(path),
            "--output",
            str(tmp_path / "o.parquet"),
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 1 and message in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "o.parquet").exists()


def _shifted(tmp_path: Path) -> Path:
    df = pd.read_csv(PENGUINS)
    df["body_mass_g"] = df["body_mass_g"] + 1500
    df["island"] = "Dream"
    df.to_csv(tmp_path / "shifted.csv", index=False)
    return tmp_path / "shifted.csv"


def test_drift_report_on_shifted_data(trained_model: dict, tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    summary = _score(trained_model["model_dir"], _shifted(tmp_path), out)
    report = json.loads(out.with_name("scores.drift.json").read_text())
    assert summary["drifted_features"] == report["drifted"] == ["body_mass_g", "island"]
    assert report["features"]["body_mass_g"]["psi"] > 1.0
    assert report["features"]["bill_length_mm"]["psi"] < 0.2
    assert report["features"]["island"]["shares"]["Dream"] == 1.0
    assert "| body_mass_g | numeric |" in out.with_name("scores.drift.md").read_text()


def test_fail_on_drift_exit_code(trained_model: dict, tmp_path: Path) -> None:
    base = [
        "score",
        "--model",
        str(trained_model["model_dir"]),
        "--workers",
        "0",
        "--output",
        str(tmp_path / "o.csv"),
    ]
    shifted = CliRunner().invoke(cli, [*base, "--input", str(_shifted(tmp_path)), "--fail-on-drift"])
    assert shifted.exit_code == EXIT_DRIFT and "body_mass_g" in shifted.output
    assert CliRunner().invoke(cli, [*base, "--input", str(_shifted(tmp_path))]).exit_code == 0
    assert CliRunner().invoke(cli, [*base, "--input", str(PENGUINS), "--fail-on-drift"]).exit_code == 0
