"""The Spark engine and the batch image: the same outputs and quarantine semantics as the local engine."""

from __future__ import annotations

import json
import shutil
import subprocess  # nosec B404 - fixed commands
from pathlib import Path

import pandas as pd
import pytest

from mlgate import score as batch
from tests.batch.test_score import corrupt_copy
from tests.conftest import REPO, require


@pytest.mark.slow
def test_spark_engine_matches_local(trained_model: dict, tmp_path: Path) -> None:
    require(shutil.which("java") is not None, "Java is needed for the Spark engine")
    folder, lines, _ = corrupt_copy(tmp_path / "in")
    local = batch.score(
        str(trained_model["model_dir"]), str(folder), str(tmp_path / "local.parquet"), keys=["id"], workers=0
    )
    spark = batch.score(
        str(trained_model["model_dir"]),
        str(folder),
        str(tmp_path / "spark.parquet"),
        keys=["id"],
        engine="spark",
        spark_master="local[1]",
    )
    assert spark["rows_in"] == spark["rows_scored"] + spark["rows_quarantined"]
    expected = pd.read_parquet(tmp_path / "local.parquet").set_index("id")
    got = pd.read_parquet(tmp_path / "spark.parquet").set_index("id")
    assert set(got.index) == set(expected.index), set(got.index) ^ set(expected.index)
    assert spark["rows_in"] == local["rows_in"] == lines  # a short garbage line: padded, then quarantined
    got = got.loc[expected.index]
    assert (got["prediction"] == expected["prediction"]).all()
    # Spark keeps the short garbage line as a (padded, quarantined) row, so later row numbers are one higher.
    assert (got["_source_row"] - expected["_source_row"]).isin([0, 1]).all()
    quarantine = pd.read_parquet(tmp_path / "spark.quarantine.parquet")
    assert quarantine["_quarantine_reason"].str.contains("'abc' is not a number").any()
    assert quarantine["_quarantine_reason"].str.contains("sex: missing column").any()
    assert json.loads((tmp_path / "spark.drift.json").read_text())["rows"] == spark["rows_scored"]


@pytest.mark.slow
@pytest.mark.container
def test_image_scores_a_sample_file(trained_model: dict, tmp_path: Path) -> None:
    setup = REPO.parent / "shared" / "container-engine" / "setup"
    require(shutil.which("docker") is not None and setup.exists(), "a Docker-compatible engine is needed")
    require(
        subprocess.run([str(setup)], capture_output=True).returncode == 0,
        "the container engine did not start",
    )  # nosec
    bundle = Path(shutil.copytree(trained_model["model_dir"], tmp_path / "model"))
    (bundle / "mlgate_bundle.json").write_text(json.dumps({"name": "penguins-classifier", "version": "7"}))
    tag = "mlgate-batch:test"
    build = [str(REPO / "scripts" / "build-image.sh"), "batch", str(bundle), tag, "testsha"]
    subprocess.run(build, check=True)  # nosec B603 - fixed argument list
    labels = json.loads(
        subprocess.run(["docker", "image", "inspect", tag], check=True, capture_output=True, text=True).stdout
    )[0]["Config"][
        "Labels"
    ]  # nosec
    assert (
        labels["io.mlgate.model.version"] == "7" and labels["org.opencontainers.image.revision"] == "testsha"
    )
    data = tmp_path / "data"
    data.mkdir(mode=0o777)
    data.chmod(0o777)  # the image runs as a non-root user
    pd.read_csv(REPO / "data" / "penguins.csv").head(50).to_csv(data / "sample.csv", index=False)
    subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-v",
            f"{data}:/data",
            tag,
            "--input",
            "/data/sample.csv",
            "--output",
            "/data/out/scores.parquet",
            "--key",
            "year",
        ],
        check=True,
    )  # nosec
    summary = json.loads((data / "out" / "scores.summary.json").read_text())
    assert summary["rows_in"] == 50 == summary["rows_scored"] + summary["rows_quarantined"]
    scores = pd.read_parquet(data / "out" / "scores.parquet")
    assert len(scores) == summary["rows_scored"] and set(scores["model_version"]) == {"7"}
