"""The Spark engine of batch scoring: the same checks, quarantine, outputs and drift report as the local one,
with predictions from ``mlflow.pyfunc.spark_udf`` so the job scales past one machine."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from functools import reduce
from pathlib import Path
from typing import Any

import yaml

from mlgate.drift import DEFAULT_PSI_THRESHOLD, DriftAccumulator
from mlgate.io import DataSourceError, table_format
from mlgate.score import (
    RECORD,
    REASON,
    SOURCE_FILE,
    SOURCE_ROW,
    BatchModel,
    check_counts,
    csv_header,
    finish_run,
    list_inputs,
    load_batch_model,
    output_paths,
)

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"
EXTRA = "_extra_fields"
MISSING = "_missing_columns"


def _proba_model(model: BatchModel, workdir: Path) -> Path:
    """A copy of the model folder whose pyfunc ``predict`` is the scikit-learn ``predict_proba``."""
    dest = Path(shutil.copytree(model.path, workdir / "proba-model"))
    mlmodel = yaml.safe_load((dest / "MLmodel").read_text())
    mlmodel["flavors"]["python_function"]["predict_fn"] = "predict_proba"
    mlmodel.pop("signature", None)  # outputs become probabilities; inputs are checked before the UDF
    (dest / "MLmodel").write_text(yaml.safe_dump(mlmodel, sort_keys=False))
    return dest


def _spark_path(fs_path: str, source: str) -> str:
    if "://" not in source or source.startswith("file://"):
        return f"file://{fs_path}"
    scheme = source.split("://", 1)[0]
    return f"{'s3a' if scheme == 's3' else scheme}://{fs_path}"


def _read_file(spark: Any, fs: Any, file: str, source: str, needed: list[str], signature: list[str]) -> Any:
    """One input file as a DataFrame of the needed columns (CSV as text), ``_corrupt_record`` for bad lines,
    and its row number among the well-formed rows."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    path = _spark_path(file, source)
    if table_format(file) == "csv":
        header = csv_header(fs, file)
        # Permissive CSV mode pads short lines with nulls and drops extra fields; a spare column catches
        # lines with too many fields; short lines are judged by the signature (nulls in required columns).
        extra = [StructField(EXTRA, StringType()), StructField(CORRUPT, StringType())]
        schema = StructType([StructField(c, StringType()) for c in header] + extra)
        df = spark.read.csv(
            path,
            header=True,
            schema=schema,
            mode="PERMISSIVE",
            columnNameOfCorruptRecord=CORRUPT,
            enforceSchema=True,
            nullValue="NA",
            emptyValue=None,
        )
        too_long = F.concat(F.lit(f"expected {len(header)} fields, found more: "), F.col(EXTRA))
        df = df.withColumn(CORRUPT, F.when(F.col(EXTRA).isNotNull(), too_long).otherwise(F.col(CORRUPT)))
    else:
        df = spark.read.parquet(path).withColumn(CORRUPT, F.lit(None).cast(StringType()))
    absent = "; ".join(f"{c}: missing column" for c in signature if c not in df.columns)
    df = df.select(*[c for c in needed if c in df.columns], CORRUPT).withColumn(SOURCE_FILE, F.lit(file))
    df = df.withColumn(MISSING, F.lit(absent or None).cast(StringType()))
    # Row numbers over the well-formed rows, in file order (as the local engine counts them).
    good = df.filter(F.col(CORRUPT).isNull())
    indexed = good.rdd.zipWithIndex().map(lambda pair: (*pair[0], pair[1]))
    good = spark.createDataFrame(
        indexed, StructType(good.schema.fields + [StructField(SOURCE_ROW, LongType())])
    )
    bad = df.filter(F.col(CORRUPT).isNotNull()).withColumn(SOURCE_ROW, F.lit(None).cast(LongType()))
    return good.unionByName(bad, allowMissingColumns=True)


def _checked(df: Any, model: BatchModel) -> Any:
    """Add typed feature columns and ``_quarantine_reason`` (null for good rows), as the local engine does."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, NumericType, StringType

    types = {f.name: f.dataType for f in df.schema.fields}
    reasons = [F.col(MISSING)]  # signature columns absent from the row's file
    typed = {}
    for col in model.inputs:
        c = F.col(f"`{col.name}`")
        if col.name not in types:  # absent from every file
            typed[col.name] = F.lit(None).cast(DoubleType() if col.numeric else StringType())
            continue
        t = types[col.name]
        if col.numeric and isinstance(t, NumericType):
            typed[col.name] = c.cast(DoubleType())
        elif col.numeric and isinstance(t, StringType):
            parsed = F.expr(f"try_cast(`{col.name}` as double)")
            typed[col.name] = parsed
            reasons.append(
                F.when(
                    c.isNotNull() & parsed.isNull(),
                    F.concat(F.lit(f"{col.name}: '"), c, F.lit("' is not a number")),
                )
            )
        elif not col.numeric and isinstance(t, StringType):
            typed[col.name] = c
        else:
            expected = "a number" if col.numeric else "a string"
            reasons.append(F.lit(f"{col.name}: has type {t.simpleString()}, expected {expected}"))
            typed[col.name] = F.lit(None).cast(DoubleType() if col.numeric else StringType())
            continue
        if col.required:
            reasons.append(F.when(c.isNull(), F.lit(f"{col.name}: null but required")))
    malformed = F.concat(F.lit("malformed line: "), F.substring(F.col(CORRUPT), 1, 500))
    reason = F.when(F.col(CORRUPT).isNotNull(), malformed).otherwise(F.concat_ws("; ", *reasons))
    record = F.to_json(
        F.struct(
            *[F.col(f"`{c}`") for c in df.columns if c not in (CORRUPT, SOURCE_FILE, SOURCE_ROW, MISSING)]
        )
    )
    out = df.withColumn(REASON, F.when(reason != "", reason)).withColumn(RECORD, record)
    for name, expr in typed.items():
        out = out.withColumn(f"__f_{name}", expr)
    return out


def _write_atomically(df: Any, path: Path) -> None:
    """Write a Spark DataFrame as a folder at ``path``: into a temporary folder first, then renamed."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        writer = df.write.mode("overwrite")
        if table_format(path) == "csv":
            writer.option("header", True).csv(f"file://{tmp}")
        else:
            writer.parquet(f"file://{tmp}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace(tmp, path)


def _replace(new: Path, path: Path) -> None:
    if path.is_dir():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if path.exists():
            path.unlink()
        os.replace(new, path)


def _drift(valid: Any, model: BatchModel, threshold: float) -> dict[str, Any]:
    """Drift counts as Spark aggregations over the reference bins and categories."""
    from pyspark.sql import functions as F

    acc = DriftAccumulator(model.reference)
    aggs = [F.count(F.lit(1)).alias("__rows")]
    for name in acc.bins:
        col = F.col(f"`__f_{name}`")
        inner = (acc.reference[name].get("bin_edges") or [])[1:-1]
        bucket = reduce(lambda a, b: a + b, [F.when(col >= e, 1).otherwise(0) for e in inner], F.lit(0))
        aggs.append(F.sum(F.when(col.isNull(), 1).otherwise(0)).alias(f"__null_{name}"))
        for i in range(len(acc.bins[name])):
            aggs.append(
                F.sum(F.when(col.isNotNull() & (bucket == i), 1).otherwise(0)).alias(f"__bin_{name}_{i}")
            )
    for name in acc.categories:
        aggs.append(F.sum(F.when(F.col(f"`__f_{name}`").isNull(), 1).otherwise(0)).alias(f"__null_{name}"))
    row = valid.agg(*aggs).collect()[0].asDict()
    categories = {}
    for name in acc.categories:
        col = F.col(f"`__f_{name}`")
        counts = valid.filter(col.isNotNull()).groupBy(col.alias("v")).count().collect()
        categories[name] = {r["v"]: int(r["count"]) for r in counts}
    acc.add_counts(
        rows=int(row["__rows"]),
        nulls={n: int(row[f"__null_{n}"] or 0) for n in [*acc.bins, *acc.categories]},
        bins={n: [int(row[f"__bin_{n}_{i}"] or 0) for i in range(len(c))] for n, c in acc.bins.items()},
        categories=categories,
    )
    return acc.report(threshold)


def score_spark(
    model_uri: str,
    input_path: str,
    output_path: str,
    keys: list[str] | None = None,
    master: str = "local[*]",
    drift_threshold: float = DEFAULT_PSI_THRESHOLD,
) -> dict[str, Any]:
    """Score with Spark: same arguments, checks and reports as :func:`mlgate.score.score`; the scores and the
    quarantine are Spark output folders (part files) at the output paths.

    Raises:
        DataSourceError: the input is missing, empty or not CSV/Parquet.
        ScoringError: the counts do not add up.
    """
    import mlflow.pyfunc
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, DoubleType, StringType, TimestampType

    from mlgate.models import allow_model_loading

    started = time.monotonic()
    scored_at = datetime.now(timezone.utc).replace(microsecond=0)
    keys = list(keys or [])
    paths = output_paths(str(output_path).removeprefix("file://"))
    paths["output"].parent.mkdir(parents=True, exist_ok=True)
    fs, files = list_inputs(input_path)
    with tempfile.TemporaryDirectory(prefix="mlgate-spark-") as workdir, allow_model_loading():
        model = load_batch_model(model_uri, Path(workdir))
        needed = list(dict.fromkeys([*keys, *(c.name for c in model.inputs)]))
        proba_path = _proba_model(model, Path(workdir))
        # Python workers run this interpreter (its packages), unless the cluster says otherwise.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        spark = (
            SparkSession.builder.master(master)
            .appName("mlgate-score")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.enabled", "false")
            .getOrCreate()
        )
        frames = [_read_file(spark, fs, f, input_path, needed, [c.name for c in model.inputs]) for f in files]
        df = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
        for k in keys:
            if k not in df.columns:
                raise DataSourceError(f"{input_path}: key column {k!r} not found")
        checked = _checked(df, model).cache()
        predict = mlflow.pyfunc.spark_udf(
            spark, str(proba_path), result_type=ArrayType(DoubleType()), env_manager="local"
        )
        startup = time.monotonic() - started
        valid = checked.filter(F.col(REASON).isNull())
        features = [F.col(f"`__f_{c.name}`").alias(c.name) for c in model.inputs]
        proba = predict(F.struct(*features))
        classes = F.array(*[F.lit(c) for c in model.classes])
        scored = valid.withColumn("__proba", proba).select(
            F.col(SOURCE_FILE),
            F.col(SOURCE_ROW),
            *[F.col(f"`{k}`").cast(StringType()).alias(k) for k in keys],
            F.element_at(classes, F.array_position("__proba", F.array_max("__proba")).cast("int")).alias(
                "prediction"
            ),
            *[F.col("__proba")[i].alias(c) for i, c in enumerate(model.proba_columns)],
            F.lit(model.name).alias("model_name"),
            F.lit(model.version).alias("model_version"),
            F.lit(scored_at.replace(tzinfo=None)).cast(TimestampType()).alias("scored_at"),
        )
        quarantined = checked.filter(F.col(REASON).isNotNull()).select(
            SOURCE_FILE, SOURCE_ROW, REASON, RECORD
        )
        _write_atomically(scored.orderBy(SOURCE_FILE, SOURCE_ROW), paths["output"])
        _write_atomically(quarantined.orderBy(SOURCE_FILE, SOURCE_ROW), paths["quarantine"])
        rows_in = checked.count()
        rows_quarantined = quarantined.count()
        reasons = {
            r[REASON]: int(r["count"])
            for r in quarantined.groupBy(REASON).count().orderBy(F.desc("count")).limit(20).collect()
        }
        report = _drift(valid, model, drift_threshold)
        reader = spark.read.option("header", True)
        written = (reader.csv if table_format(paths["output"]) == "csv" else reader.parquet)(
            f"file://{paths['output']}"
        ).count()
        checked.unpersist()
    scored = rows_in - rows_quarantined
    counts = {"rows_in": rows_in, "rows_scored": scored, "rows_quarantined": rows_quarantined}
    check_counts(input_path, counts, written=written)
    run = {"engine": "spark", "spark_master": master, "input": input_path, "input_files": files}
    run.update(scored_at=scored_at, startup=startup, started=started)
    return finish_run(model, run, counts, reasons, report, drift_threshold, paths)
