"""Batch scoring benchmark: `mlgate score` vs `mlflow models predict` vs the in-memory two-core limit.

Synthetic rows are drawn from the penguins distribution (per species: numeric features from a normal with that
species' mean and std, islands and sexes by their shares). Two models behind the same preprocessing: the
default config's forest and a heavy 300-tree forest. For each size and model: wall time, rows/s, CPU use
(user+sys / wall) and peak RSS of the whole process tree. Start-up (imports, model load) is measured on its
own on a 5-row input. Results go to bench/results/batch/ as JSON and a Markdown table.

    .venv/bin/python bench/batch/run.py --rows 1000000 10000000        # the full run (quiet machine!)
    .venv/bin/python bench/batch/run.py --rows 2000 --quick            # a smoke test

``--compare`` instead runs each tool ``--repeat`` times at each size, interleaved (the order rotates each
round, so load that comes and goes hits every tool alike), and reports min / median / max, the ratios of the
medians, and the machine's load average before each run; ``--before SRC`` adds `mlgate score` from another
source tree (e.g. ``git archive <commit> src | tar -x -C /tmp/before``), run with the same interpreter:

    .venv/bin/python bench/batch/run.py --compare --rows 1000000 --repeat 5 --before /tmp/before/src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess  # nosec B404 - benchmark driver runs fixed commands
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex"]
NUMERIC = FEATURES[1:5]


def synthesize(rows: int, path: Path, seed: int = 0, block: int = 1_000_000) -> Path:
    """Write ``rows`` synthetic penguins to a CSV, a block at a time."""
    if path.exists():
        return path
    base = pd.read_csv(REPO / "data" / "penguins.csv").dropna()
    rng = np.random.default_rng(seed)
    species = base["species"].value_counts(normalize=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            kinds = rng.choice(species.index, size=n, p=species.to_numpy())
            out = pd.DataFrame({"id": np.arange(start, start + n)})
            for col in FEATURES:
                out[col] = np.nan if col in NUMERIC else ""
            for kind in species.index:
                mask = kinds == kind
                group = base[base["species"] == kind]
                for col in NUMERIC:
                    out.loc[mask, col] = rng.normal(group[col].mean(), group[col].std(), mask.sum()).round(1)
                for col in ("island", "sex"):
                    shares = group[col].value_counts(normalize=True)
                    out.loc[mask, col] = rng.choice(shares.index, size=mask.sum(), p=shares.to_numpy())
            out.to_csv(fh, index=False, header=start == 0)
    tmp.rename(path)
    return path


def build_models(folder: Path) -> dict[str, Path]:
    """The default config's pipeline and a 300-tree forest, same preprocessing, as MLflow model folders."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from mlgate.config import load_config
    from mlgate.features import build_pipeline, reference_stats
    from mlgate.train import trusted_types

    cfg = load_config(REPO / "config" / "pipeline.yaml")
    data = pd.read_csv(REPO / "data" / "penguins.csv").dropna(subset=["species"])
    X, y = data[FEATURES], data["species"]
    specs = {
        "default": cfg.estimator,
        "heavy": cfg.estimator.model_copy(
            update={"params": {"n_estimators": 300, "random_state": 0, "n_jobs": 1}}
        ),
    }
    paths = {}
    for name, spec in specs.items():
        dest = folder / f"model-{name}"
        if not (dest / "MLmodel").exists():
            model = build_pipeline(cfg.data, spec).fit(X, y)
            mlflow.sklearn.save_model(
                model,
                str(dest),
                serialization_format="skops",
                skops_trusted_types=trusted_types(model),
                signature=infer_signature(X, model.predict(X.head(5))),
                metadata={
                    "mlgate": {
                        "classes": list(model.classes_),
                        "reference_stats": reference_stats(data, cfg.data),
                    }
                },
            )
        paths[name] = dest
    return paths


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run a command; wall seconds, CPU use of the process tree, peak RSS (sum over the tree) in MiB."""
    before = os.times()
    start = time.monotonic()
    proc = psutil.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak = 0
    while proc.poll() is None:
        try:
            procs = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.monotonic() - start
    after = os.times()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {
        "wall_s": round(wall, 2),
        "cpu_pct": round(100 * cpu / wall, 0),
        "peak_rss_mib": round(peak / 2**20, 0),
    }


def mlgate_cmd(model: Path, data: Path, out: Path) -> list[str]:
    """`mlgate score` with its defaults, as `python -m mlgate` (so that another source tree can go first)."""
    return [sys.executable, "-m", "mlgate", "score", "--model", str(model), "--input", str(data)] + [
        "--output",
        str(out),
        "--key",
        "id",
    ]


def mlflow_cmd(model: Path, data: Path, out: Path) -> list[str]:
    return [str(BIN / "mlflow"), "models", "predict", "-m", str(model), "-i", str(data), "-t", "csv"] + [
        "-o",
        str(out),
        "--env-manager",
        "local",
    ]


MLFLOW_ENV = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def compare(args: argparse.Namespace, models: dict[str, Path]) -> None:
    """Each tool ``--repeat`` times per model and size, interleaved; min / median / max and load."""
    tools: dict[str, tuple[list[str], dict[str, str]]] = {}
    lines = [
        "| model | rows | tool | runs | wall s min / median / max | rows/s median | vs mlflow (medians) "
        "| vs before (medians) | load avg before a run, min / median / max |",
        "|---|---:|---|---:|---|---:|---:|---:|---|",
    ]
    results = []
    for name in args.models:
        for rows in args.rows:
            data = synthesize(rows, args.work / f"rows-{rows}.csv")
            tools = {"mlgate score": (mlgate_cmd(models[name], data, args.work / "after.parquet"), {})}
            if args.before:
                env = {"PYTHONPATH": str(args.before)}
                tools["mlgate score (before)"] = (
                    mlgate_cmd(models[name], data, args.work / "before.parquet"),
                    env,
                )
            tools["mlflow models predict"] = (
                mlflow_cmd(models[name], data, args.work / "mlflow.json"),
                MLFLOW_ENV,
            )
            runs: dict[str, list[dict]] = {t: [] for t in tools}
            order = list(tools)
            for r in range(args.repeat):
                for tool in order[r % len(order) :] + order[: r % len(order)]:
                    load = os.getloadavg()[0]
                    m = measure(*tools[tool])
                    m["load_before"] = load
                    runs[tool].append(m)
                    print(json.dumps({"model": name, "rows": rows, "tool": tool, **m}), flush=True)
            walls = {t: _spread([m["wall_s"] for m in ms]) for t, ms in runs.items()}
            for tool, ms in runs.items():
                w, load = walls[tool], _spread([m["load_before"] for m in ms])
                vs_mlflow = walls["mlflow models predict"]["median"] / w["median"]
                vs_before = walls["mlgate score (before)"]["median"] / w["median"] if args.before else None
                results.append(
                    {"model": name, "rows": rows, "tool": tool, "runs": ms, "wall": w, "load": load}
                )
                lines.append(
                    f"| {name} | {rows:,} | {tool} | {len(ms)} "
                    f"| {w['min']:.2f} / {w['median']:.2f} / {w['max']:.2f} "
                    f"| {rows / w['median']:,.0f} | {vs_mlflow:.2f}x | "
                    + (f"{vs_before:.2f}x" if vs_before else "-")
                    + f" | {load['min']:.2f} / {load['median']:.2f} / {load['max']:.2f} |"
                )
    (args.work / "compare.json").write_text(json.dumps(results, indent=2) + "\n")
    table = "\n".join(lines) + "\n"
    (args.work / "compare.md").write_text(table)
    print(f"{os.cpu_count()} cores; ratios > 1: faster than the other tool")
    print(table)


IN_MEMORY = r"""
import os, sys, time, json, multiprocessing as mp
os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
import pandas as pd, mlflow.sklearn
model = mlflow.sklearn.load_model(sys.argv[1])
df = pd.read_csv(sys.argv[2], usecols=%r)
def half(i):
    n = len(df) // 2
    part = df.iloc[:n] if i == 0 else df.iloc[n:]
    return len(model.predict(part))
start = time.monotonic()
with mp.get_context("fork").Pool(2) as pool:
    done = sum(pool.map(half, [0, 1]))
print(json.dumps({"predict_s": time.monotonic() - start, "rows": done}))
""" % FEATURES


def in_memory(model: Path, data: Path) -> dict[str, float]:
    """model.predict on the whole input already in memory, two halves side by side (the two-core limit)."""
    out = subprocess.run(
        [sys.executable, "-c", IN_MEMORY, str(model), str(data)], check=True, capture_output=True, text=True
    )  # nosec
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "predict_s": round(result["predict_s"], 2),
        "rows_per_s": round(result["rows"] / result["predict_s"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--models", nargs="+", default=["default", "heavy"])
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "results" / "batch")
    parser.add_argument(
        "--mlflow-max-rows",
        type=int,
        default=2_000_000,
        help="skip `mlflow models predict` above this size (it holds the whole input in memory)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    parser.add_argument("--compare", action="store_true", help="interleaved repeated runs, see above")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each tool with --compare")
    parser.add_argument("--before", type=Path, help="with --compare: a source tree of mlgate to compare with")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    models = build_models(args.work)
    if args.compare:
        compare(args, models)
        return
    results: list[dict] = []
    tiny = synthesize(5, args.work / "rows-5.csv")
    for name in args.models:
        model = models[name]
        startup = {
            "mlgate score": measure(
                [
                    str(BIN / "mlgate"),
                    "score",
                    "--model",
                    str(model),
                    "--input",
                    str(tiny),
                    "--output",
                    str(args.work / "tiny.parquet"),
                ]
            ),
            "mlflow models predict": measure(
                [
                    str(BIN / "mlflow"),
                    "models",
                    "predict",
                    "-m",
                    str(model),
                    "-i",
                    str(tiny),
                    "-t",
                    "csv",
                    "-o",
                    str(args.work / "tiny.json"),
                    "--env-manager",
                    "local",
                ],
                env={"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"},
            ),
        }
        results.append({"model": name, "rows": 5, "startup": startup})
        for rows in args.rows:
            data = synthesize(rows, args.work / f"rows-{rows}.csv")
            entry: dict = {"model": name, "rows": rows}
            entry["mlgate score"] = measure(
                [
                    str(BIN / "mlgate"),
                    "score",
                    "--model",
                    str(model),
                    "--input",
                    str(data),
                    "--output",
                    str(args.work / "scores.parquet"),
                    "--key",
                    "id",
                ]
            )
            if rows <= args.mlflow_max_rows:
                entry["mlflow models predict"] = measure(
                    [
                        str(BIN / "mlflow"),
                        "models",
                        "predict",
                        "-m",
                        str(model),
                        "-i",
                        str(data),
                        "-t",
                        "csv",
                        "-o",
                        str(args.work / "mlflow.json"),
                        "--env-manager",
                        "local",
                    ],
                    env={"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"},
                )
            entry["in-memory limit"] = in_memory(model, data)
            for tool in ("mlgate score", "mlflow models predict"):
                if tool in entry:
                    entry[tool]["rows_per_s"] = round(rows / entry[tool]["wall_s"])
            entry["mlgate_vs_limit"] = round(
                entry["mlgate score"]["rows_per_s"] / entry["in-memory limit"]["rows_per_s"], 3
            )
            if "mlflow models predict" in entry:
                entry["mlgate_vs_mlflow"] = round(
                    entry["mlgate score"]["rows_per_s"] / entry["mlflow models predict"]["rows_per_s"], 2
                )
            results.append(entry)
            print(json.dumps(entry), flush=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| model | rows | tool | wall s | rows/s | CPU % | peak RSS MiB |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for entry in results:
        if "startup" in entry:
            for tool, m in entry["startup"].items():
                lines.append(
                    f"| {entry['model']} | start-up (5 rows) | {tool} | {m['wall_s']} | - "
                    f"| {m['cpu_pct']} | {m['peak_rss_mib']} |"
                )
            continue
        for tool in ("mlgate score", "mlflow models predict"):
            if tool in entry:
                m = entry[tool]
                lines.append(
                    f"| {entry['model']} | {entry['rows']:,} | {tool} | {m['wall_s']} | {m['rows_per_s']:,} "
                    f"| {m['cpu_pct']} | {m['peak_rss_mib']} |"
                )
        lim = entry["in-memory limit"]
        lines.append(
            f"| {entry['model']} | {entry['rows']:,} | in-memory predict, 2 cores (predict only) "
            f"| {lim['predict_s']} | {lim['rows_per_s']:,} | - | - |"
        )
    table = "\n".join(lines) + "\n"
    (args.work / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
