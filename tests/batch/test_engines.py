"""The Spark engine on a multi-process cluster, and both engines on the local stack's S3 store: the same
scores, quarantine, counts and drift report as the local engine on the same inputs; and the batch image."""

from __future__ import annotations

import json
import shutil
import subprocess  # nosec B404 - fixed commands
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from mlgate.io import filesystem
from tests.batch.conftest import run_score
from tests.batch.test_bad_inputs import non_utf8, penguins, semicolons, with_value, write_csv
from tests.batch.test_score import corrupt_copy
from tests.conftest import PENGUINS, REPO, docker_ok, require

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def mixed_inputs(folder: Path) -> Path:
    """Good and bad files side by side: a corrupted copy, a Parquet file of several row groups, a
    ';'-delimited file, a file without the model's columns, an empty and a corrupt file, a non-UTF-8 byte,
    an inf."""
    corrupt_copy(folder)
    df = penguins().replace({"NA": None}).astype({c: float for c in NUMERIC})
    df.insert(0, "id", [f"q{i}" for i in range(len(df))])
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), folder / "c.parquet", row_group_size=100)
    semicolons(folder).rename(folder / "d.csv")
    write_csv(penguins()[["species", "year"]].assign(id="x"), folder / "e.csv")
    (folder / "f.csv").write_bytes(b"")
    (folder / "g.parquet").write_bytes(b"not parquet")
    non_utf8(folder).rename(folder / "h.csv")
    with_value("body_mass_g", "inf", "1e39")(folder).rename(folder / "i.csv")
    for name in ("h.csv", "i.csv"):
        df = pd.read_csv(folder / name, dtype=str, keep_default_na=False, encoding="latin-1")
        df.insert(0, "id", [f"{name[0]}{i}" for i in range(len(df))])
        (folder / name).write_bytes(df.to_csv(index=False).encode("latin-1" if name == "h.csv" else "utf-8"))
    return folder


def read_output(uri: str) -> pd.DataFrame:
    """A scores or quarantine output (a file, or a folder of part files), local or s3://, in row order."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        parts = sorted(
            i.path for i in fs.get_file_info(pafs.FileSelector(path)) if i.path.endswith(".parquet")
        )
        df = pd.concat([pq.read_table(p, filesystem=fs).to_pandas() for p in parts], ignore_index=True)
    else:
        df = pq.read_table(path, filesystem=fs).to_pandas()
    return df.sort_values(["_source_file", "_source_row"], na_position="first", kind="stable").reset_index(
        drop=True
    )


def _json(uri: str) -> dict:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as fh:
        return json.loads(fh.read())


def assert_same_results(a: str, b: str) -> None:
    """Two runs' outputs (``a`` and ``b`` are the scores' URIs) hold the same rows, scores, reasons, drift."""
    stem = {u: u.rsplit(".", 1)[0] for u in (a, b)}
    sa, sb = _json(f"{stem[a]}.summary.json"), _json(f"{stem[b]}.summary.json")
    for key in ("rows_in", "rows_scored", "rows_quarantined", "files_unreadable", "quarantine_reasons"):
        assert sa[key] == sb[key], key
    assert sa["rows_in"] == sa["rows_scored"] + sa["rows_quarantined"]
    scores_a, scores_b = read_output(a), read_output(b)
    assert len(scores_a) == sa["rows_scored"]
    pd.testing.assert_frame_equal(scores_a.drop(columns="scored_at"), scores_b.drop(columns="scored_at"))
    qa, qb = read_output(f"{stem[a]}.quarantine.parquet"), read_output(f"{stem[b]}.quarantine.parquet")
    sort = ["_source_file", "_source_row", "_quarantine_reason"]
    pd.testing.assert_frame_equal(
        qa.sort_values(sort, na_position="first", ignore_index=True),
        qb.sort_values(sort, na_position="first", ignore_index=True),
    )
    da, db = _json(f"{stem[a]}.drift.json"), _json(f"{stem[b]}.drift.json")
    assert da["rows"] == db["rows"] == sa["rows_scored"]
    for name, fa in da["features"].items():
        assert fa["psi"] == pytest.approx(db["features"][name]["psi"]), name


@pytest.mark.slow
def test_spark_on_a_cluster_gives_the_local_engines_results(
    trained_model: dict, spark_cluster: str, tmp_path: Path
) -> None:
    folder = mixed_inputs(tmp_path / "in")
    local, spark = str(tmp_path / "local.parquet"), str(tmp_path / "spark" / "scores.parquet")
    local_run = run_score(trained_model, folder, local, keys=["id"], workers=1, chunk_rows=100)
    spark_run = run_score(
        trained_model, folder, spark, keys=["id"], engine="spark", spark_master=spark_cluster, chunk_rows=100
    )
    assert spark_run.engine_settings["spark_master"] == spark_cluster
    assert spark_run.engine_settings["tasks"] > len(spark_run.input_files)  # c.parquet split by row groups
    from pyspark.sql import SparkSession

    executors = SparkSession.getActiveSession().sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
    assert executors == 2  # two worker processes besides the driver
    assert local_run.files_unreadable == 2 and local_run.rows_scored > 3 * 340
    assert sorted(Path(p).name for p in Path(spark).iterdir()) == sorted(
        f"part-{i:05d}-0.parquet" for i in range(spark_run.engine_settings["tasks"])
    )
    assert_same_results(local, spark)


@pytest.mark.slow
def test_both_engines_read_and_write_s3(
    trained_model: dict, spark_cluster: str, s3: str, tmp_path: Path
) -> None:
    folder = mixed_inputs(tmp_path / "in")
    fs, root = filesystem(s3)
    for file in sorted(folder.iterdir()):
        with fs.open_output_stream(f"{root}/in/{file.name}") as out:
            out.write(file.read_bytes())
    source = f"{s3}/in/*"
    run_score(trained_model, folder, str(tmp_path / "ref.parquet"), keys=["id"], chunk_rows=100)
    run_score(trained_model, source, f"{s3}/local/scores.parquet", keys=["id"], workers=1, chunk_rows=100)
    spark_run = run_score(
        trained_model,
        source,
        f"{s3}/spark/scores.parquet",
        keys=["id"],
        engine="spark",
        spark_master=spark_cluster,
        chunk_rows=100,
    )
    assert all(f.startswith(f"{root}/in/") for f in spark_run.input_files)
    assert_same_results(f"{s3}/local/scores.parquet", f"{s3}/spark/scores.parquet")
    reference = read_output(str(tmp_path / "ref.parquet")).drop(columns=["scored_at", "_source_file"])
    on_s3 = read_output(f"{s3}/local/scores.parquet").drop(columns=["scored_at", "_source_file"])
    pd.testing.assert_frame_equal(reference, on_s3)
    names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(f"{root}/local"))}
    names |= {i.base_name for i in fs.get_file_info(pafs.FileSelector(f"{root}/spark"))}
    assert not [n for n in names if n.endswith(".tmp")]  # no temporary left behind
    expected = {"scores.parquet", "scores.quarantine.parquet", "scores.summary.json", "scores.drift.json"}
    assert expected | {"scores.drift.md"} == names
    assert np.isclose(_json(f"{s3}/spark/scores.summary.json")["psi_threshold"], 0.2)


@pytest.mark.slow
@pytest.mark.container
def test_image_scores_a_sample_file(trained_model: dict, tmp_path: Path) -> None:
    require(docker_ok(), "a Docker-compatible engine is needed (../shared/container-engine/setup)")
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
    pd.read_csv(PENGUINS).head(50).to_csv(data / "sample.csv", index=False)
    (data / "bad.csv").write_text("island;sex\nDream;male\n")
    subprocess.run(
        ["docker", "run", "--rm", "-v", f"{data}:/data", tag]
        + ["--input", "/data/*.csv", "--output", "/data/out/scores.parquet", "--key", "year"],
        check=True,
    )  # nosec
    summary = json.loads((data / "out" / "scores.summary.json").read_text())
    assert summary["rows_in"] == 51 == summary["rows_scored"] + summary["rows_quarantined"]
    assert summary["rows_quarantined"] == 1 and summary["psi_threshold"] == 0.2  # the config's default
    assert summary["runtime"] == "onnx"  # the champion has a parity-proven ONNX file; the image, onnxruntime
    scores = pd.read_parquet(data / "out" / "scores.parquet")
    assert len(scores) == summary["rows_scored"] and set(scores["model_version"]) == {"7"}
