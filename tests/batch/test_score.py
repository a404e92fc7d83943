"""The local batch engine: scores as the model gives them, counts add up, bad rows quarantined with a reason,
outputs atomic, drift reported."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess  # nosec B404 - fixed commands
import sys
import time
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from mlgate.cli import cli
from mlgate.config import DriftConfig

from mlgate.batch.job import ScoringError, TableWriter, load_batch_model
from mlgate.batch.local import Predictor, worker_modules
from mlgate.errors import EXIT_DRIFT, EXIT_ERROR
from mlgate.io import DataSourceError
from mlgate.models import allow_model_loading
from tests.batch.conftest import cli_score, run_score
from tests.conftest import PENGUINS, write_config

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


def test_default_data_scored_like_the_model(trained_model: dict, tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    summary = run_score(trained_model, PENGUINS, out, keys=["year"], workers=1, chunk_rows=100)
    raw = pd.read_csv(PENGUINS)
    scores = pd.read_parquet(out)
    quarantine = pd.read_parquet(out.with_name("scores.quarantine.parquet"))
    assert summary.rows_in == len(raw) == summary.rows_scored + summary.rows_quarantined
    assert len(scores) == summary.rows_scored and len(quarantine) == summary.rows_quarantined
    assert scores["_source_row"].is_monotonic_increasing  # written in input order
    with allow_model_loading():
        model = mlflow.sklearn.load_model(str(trained_model["model_dir"]))
    rows = raw.iloc[scores["_source_row"]][FEATURES]
    for name in ("island", "sex"):  # a missing category is None, as in the typed data the model was fitted on
        rows[name] = rows[name].astype(object).where(rows[name].notna(), None)
    proba = scores[[f"proba_{c}" for c in model.classes_]].to_numpy()
    # the default model scores with ONNX Runtime, within the parity tolerance training proved
    assert summary.runtime == "onnx"
    np.testing.assert_allclose(
        proba, model.predict_proba(rows), rtol=0, atol=trained_model["config"].onnx.tolerance
    )
    assert (scores["prediction"].to_numpy() == model.predict(rows)).all()
    assert (scores["year"] == raw.iloc[scores["_source_row"]]["year"].astype(str).to_numpy()).all()
    assert scores["model_version"].iloc[0] != "" and scores["scored_at"].notna().all()
    assert json.loads(out.with_name("scores.summary.json").read_text())["counts_add_up"] is True
    # Parquet dictionary-encodes the repeated columns only; every column reads back with the schema's type
    parquet = pq.ParquetFile(out)
    batch_model = load_batch_model(str(trained_model["model_dir"]), tmp_path / "model")
    assert parquet.schema_arrow == batch_model.output_schema(("year",))
    chunk = parquet.metadata.row_group(0)
    encoded = {
        chunk.column(i).path_in_schema
        for i in range(chunk.num_columns)
        if chunk.column(i).dictionary_page_offset is not None
    }
    assert (
        encoded
        == set(batch_model.repeated_columns())
        == {
            "_source_file",
            "prediction",
            "model_name",
            "model_version",
            "scored_at",
        }
    )


def test_corrupted_copy_quarantines_every_bad_row(trained_model: dict, tmp_path: Path) -> None:
    folder, lines, bad = corrupt_copy(tmp_path / "in")
    out = tmp_path / "out" / "scores.csv"
    summary = run_score(trained_model, folder, out, keys=["id"], chunk_rows=64)
    quarantine = pd.read_csv(out.with_name("scores.quarantine.csv"))
    scores = pd.read_csv(out)
    assert summary.rows_in == lines
    assert summary.rows_quarantined == bad == len(quarantine)
    assert summary.rows_scored == lines - bad == len(scores)
    assert quarantine["_quarantine_reason"].notna().all()
    reasons = " | ".join(quarantine["_quarantine_reason"])
    for expected in (
        "'abc' is not a number",
        "'4,5kg' is not a number",
        "island: null but required",
        "line 31: malformed, expected 9 fields, found 1",
        "line 51: malformed, expected 9 fields, found 13",
        "sex: missing column",
    ):
        assert expected in reasons
    assert not set(scores["id"]) & {"p3", "p10", "p20"}
    assert "complete garbage without separators" in set(quarantine["_record"])  # the line as it was


def test_workers_load_the_model_without_mlflow(trained_model: dict, tmp_path: Path) -> None:
    model = load_batch_model(str(trained_model["model_dir"]), tmp_path, "sklearn")
    predictor = Predictor(model, workers=1, pool="processes")
    try:
        modules = predictor._pool.submit(worker_modules, 0).result()
        prediction = predictor.submit(pd.read_csv(PENGUINS).dropna().head(5)[FEATURES])
    finally:
        predictor.close()
    assert predictor.kind == "processes"
    assert "sklearn" in modules and not {"mlflow", "onnxruntime"} & set(modules)
    assert prediction.proba.shape == (5, len(model.classes)) and set(prediction.labels) <= set(model.classes)


@pytest.mark.parametrize("runtime", ["auto", "sklearn"])
def test_threads_share_one_model_and_score_as_one_thread_does(
    trained_model: dict, tmp_path: Path, runtime: str
) -> None:
    """ONNX Runtime and scikit-learn's trees release the GIL: threads, no copy of a chunk to a process."""
    model = load_batch_model(str(trained_model["model_dir"]), tmp_path, runtime)
    assert model.runtime == ("onnx" if runtime == "auto" else "sklearn")
    rows = pd.read_csv(PENGUINS).dropna()[FEATURES]
    predictor = Predictor(model, workers=2)
    try:
        first = predictor.submit(rows)
        later = [predictor.submit(rows.iloc[i::3]) for i in range(3)]
        later = [f.result() for f in later]
    finally:
        predictor.close()
    assert predictor.kind == "threads" and first.agree
    reference = Predictor(model.model_copy(update={"runtime": "sklearn"}), workers=0).submit(rows)
    assert (first.labels == reference.labels).all()
    assert np.abs(first.proba - reference.proba).max() <= trained_model["config"].onnx.tolerance
    for i, part in enumerate(later):
        assert (part.labels == first.labels[i::3]).all()


def test_registry_alias_is_pinned_and_reported(trained_model: dict, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_model["tracking_uri"])
    mlflow.set_tracking_uri(trained_model["tracking_uri"])
    try:
        name = trained_model["config"].model_name
        model = load_batch_model(f"models:/{name}@champion", tmp_path)
    finally:
        mlflow.set_tracking_uri(None)
    assert (model.name, model.version) == (name, trained_model["summary"]["champion_version"])
    assert (model.path / "MLmodel").is_file()


def test_model_without_signature_is_refused(trained_model: dict, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(trained_model["model_dir"], tmp_path / "model"))
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    del mlmodel["signature"]
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(ScoringError, match="no input signature"):
        load_batch_model(str(folder), tmp_path)


def test_parquet_column_of_the_wrong_type(trained_model: dict, tmp_path: Path) -> None:
    df = pd.read_csv(PENGUINS).head(20)
    df["sex"] = 1.5
    df.to_parquet(tmp_path / "in.parquet")
    summary = run_score(trained_model, tmp_path / "in.parquet", tmp_path / "o.parquet")
    assert summary.rows_quarantined == 20 and summary.rows_scored == 0
    assert "sex: has type double, expected a string" in summary.quarantine_reasons


def test_whole_number_categories_in_parquet_are_read_as_their_text(
    trained_model: dict, tmp_path: Path
) -> None:
    df = pd.read_csv(PENGUINS).head(20)
    df["sex"] = pd.array([1, None] * 10, dtype="Int64")  # codes, as training would have read them: "1"
    df.to_parquet(tmp_path / "in.parquet")
    summary = run_score(trained_model, tmp_path / "in.parquet", tmp_path / "o.parquet")
    assert summary.rows_scored == 20
    drift = json.loads(Path(summary.outputs.drift_json).read_text())
    assert drift["features"]["sex"]["unseen_categories"] == ["1"]


def test_failure_midway_leaves_no_output(trained_model: dict, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "scores.parquet"
    real_write, calls = TableWriter.write, []

    def failing_write(self, table):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt("killed")
        real_write(self, table)

    monkeypatch.setattr(TableWriter, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        run_score(trained_model, PENGUINS, out, chunk_rows=50)
    assert list(tmp_path.iterdir()) == []  # no output, no summary, no temporary left behind


def test_rerun_gives_the_same_result(trained_model: dict, tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    (tmp_path / ".scores.parquet.stale.tmp").write_text("left by a killed run")
    run_score(trained_model, PENGUINS, out, chunk_rows=77)
    first = pd.read_parquet(out).drop(columns="scored_at")
    run_score(trained_model, PENGUINS, out, chunk_rows=77)
    pd.testing.assert_frame_equal(first, pd.read_parquet(out).drop(columns="scored_at"))
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "no such file"),
        ("data.json", "{}", "unsupported"),
        ("folder", "", "no CSV or Parquet"),
    ],
)
def test_inputs_naming_no_table_fail_with_one_line(
    trained_model: dict, tmp_path: Path, name, content, message
):
    path = tmp_path / name
    if name == "folder":
        path.mkdir()
        (path / "notes.txt").write_text("not a table")
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DataSourceError, match=message):
        run_score(trained_model, path, tmp_path / "o.parquet")
    result = cli_score(trained_model, path, tmp_path / "o.parquet")
    assert result.exit_code == EXIT_ERROR and message in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "o.parquet").exists()


def _shifted(tmp_path: Path) -> Path:
    df = pd.read_csv(PENGUINS)
    df["body_mass_g"] = df["body_mass_g"] + 1500
    df["island"] = "Dream"
    df.to_csv(tmp_path / "shifted.csv", index=False)
    return tmp_path / "shifted.csv"


def test_drift_report_on_shifted_data(trained_model: dict, tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    summary = run_score(trained_model, _shifted(tmp_path), out)
    report = json.loads(out.with_name("scores.drift.json").read_text())
    # the shifted inputs move the model's output too: its drift is reported beside theirs
    assert summary.drifted_features == report["drifted"] == ["(prediction)", "body_mass_g", "island"]
    assert report["features"]["(prediction)"]["psi"] > 0.2
    assert report["features"]["body_mass_g"]["psi"] > 1.0
    assert report["features"]["bill_length_mm"]["psi"] < 0.2
    assert report["features"]["island"]["shares"]["Dream"] == 1.0
    assert "| body_mass_g | numeric |" in out.with_name("scores.drift.md").read_text()


def test_fail_on_drift_exit_code(trained_model: dict, tmp_path: Path) -> None:
    shifted, out = _shifted(tmp_path), tmp_path / "o.csv"
    drifted = cli_score(trained_model, shifted, out, "--fail-on-drift")
    assert drifted.exit_code == EXIT_DRIFT and "body_mass_g" in drifted.output
    assert cli_score(trained_model, shifted, out).exit_code == 0
    assert cli_score(trained_model, PENGUINS, out, "--fail-on-drift").exit_code == 0


def test_drift_threshold_comes_from_the_config(trained_model: dict, tmp_path: Path) -> None:
    config = write_config(
        trained_model["config"].model_copy(update={"drift": DriftConfig(psi_threshold=50)}),
        tmp_path / "c.yaml",
    )
    result = CliRunner().invoke(
        cli,
        [
            "--config",
            str(config),
            "score",
            "--model",
            str(trained_model["model_dir"]),
            "--input",
            str(_shifted(tmp_path)),
            "--output",
            str(tmp_path / "o.parquet"),
            "--workers",
            "0",
            "--fail-on-drift",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o.summary.json").read_text())["psi_threshold"] == 50


def _big_input(path: Path, copies: int) -> Path:
    lines = PENGUINS.read_text().splitlines()
    path.write_text("\n".join([lines[0], *lines[1:] * copies]) + "\n")
    return path


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_leaves_no_output_under_a_final_name_and_a_rerun_succeeds(trained_model: dict, tmp_path: Path):
    source = _big_input(tmp_path / "big.csv", copies=1200)  # 412,800 rows: seconds of scoring
    out = tmp_path / "out" / "scores.parquet"
    finals = [
        out.with_name(f"scores.{n}")
        for n in ("parquet", "quarantine.parquet", "summary.json", "drift.json", "drift.md")
    ]
    argv = [sys.executable, "-m", "mlgate", "score", "--model", str(trained_model["model_dir"])]
    argv += ["--input", str(source), "--output", str(out), "--workers", "2", "--chunk-rows", "20000"]

    def temporary_scores() -> list[Path]:
        return list(out.parent.glob(".scores.parquet.*.tmp")) if out.parent.exists() else []

    moments = {
        "starting up": lambda: True,
        "outputs opened": lambda: bool(temporary_scores()),
        "scores being written": lambda: any(p.stat().st_size > 64 << 10 for p in temporary_scores()),
    }
    for moment, reached in moments.items():
        proc = psutil.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # nosec B603
        try:
            _wait_for(lambda: reached() or proc.poll() is not None)
            assert proc.poll() is None, f"the job ended before {moment}"
            children = proc.children(recursive=True)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            _, alive = psutil.wait_procs(children, timeout=30)  # the workers end when their parent is gone
            assert not alive, f"workers left running after a kill while {moment}"
        finally:
            if proc.poll() is None:
                proc.kill()
        assert [f for f in finals if f.exists()] == [], moment
    assert temporary_scores()  # what the killed runs left behind, under temporary names only
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)  # nosec B603
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(f.exists() for f in finals) and not list(out.parent.glob(".*.tmp"))
    summary = json.loads(finals[2].read_text())
    assert summary["rows_in"] == 344 * 1200 == summary["rows_scored"] == len(pd.read_parquet(out))


@pytest.mark.parametrize("runtime", ["auto", "sklearn"])
def test_a_missing_category_is_scored_as_serving_and_evaluation_score_it(
    trained_model: dict, tmp_path: Path, runtime: str
) -> None:
    """A null category reaches the model as None, as in the typed data it was fitted and evaluated on and as
    the REST service passes it, not as NaN (which the imputer would fill): batch and serving agree."""
    from mlgate.serving.model import load_served_model

    raw = pd.read_csv(PENGUINS).dropna(subset=["bill_length_mm"]).head(40)
    raw.loc[raw.index[::2], "sex"] = None
    source = tmp_path / "in.csv"
    raw.to_csv(source, index=False)
    out = tmp_path / "scores.parquet"
    run_score(trained_model, source, out, runtime=runtime)
    scores = pd.read_parquet(out)
    served = load_served_model(trained_model["model_dir"], runtime=runtime)
    records = [
        {k: (None if pd.isna(v) else v) for k, v in r.items()} for r in raw[FEATURES].to_dict("records")
    ]
    labels, proba = served.predict_proba(served.records_frame(records))
    assert scores["prediction"].tolist() == labels
    columns = [f"proba_{c}" for c in served.classes]
    np.testing.assert_allclose(scores[columns].to_numpy(), proba, rtol=0, atol=1e-12)
