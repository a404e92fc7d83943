"""Batch scoring benchmark: `mlgate score` on ONNX Runtime and on scikit-learn vs `mlflow models predict`,
interleaved, and the in-memory two-core limit.

Synthetic rows are drawn from the penguins distribution (per species: numeric features from a normal with that
species' mean and std, islands and sexes by their shares), as CSV, made once per size and kept. The models
(the default config's forest, and a heavy 300-tree forest behind the same preprocessing) are saved as `mlgate
train` saves them: with the compiled ONNX model and its parity report.

Each tool runs ``--repeat`` times per model and size, interleaved (the order rotates each round: A, B, C;
B, C, A; ...; so load that comes and goes hits every tool alike). Per run: wall seconds, rows/s (start-up
included), CPU seconds of the whole process tree (user + sys: the child's rusage, which counts every
descendant it waited for, or the sum of the tree sampled every 0.1 s when that is larger), CPU microseconds
per row, peak RSS of the tree (sum over its processes, sampled every 0.1 s), the peak RSS of the run's second
half over that of its first (memory that grows with the rows read shows as > 1) and the 1-minute load average
before the run. `mlgate score` runs with its defaults (one worker per core, 100,000-row chunks, Parquet
output, quarantine, summary, drift report) and ``--runtime onnx`` or ``--runtime sklearn``; each run's
``<output stem>.summary.json`` must name that runtime, and on sizes up to ``--check-max-rows`` the first
round's labels of every tool must agree. Start-up is a 5-row input of its own (``--no-startup`` to skip);
the in-memory limit (each runtime's predict on the input already in memory, parsing excluded, two halves
side by side: ONNX Runtime in two threads on one session, scikit-learn in two processes) runs once per size
after the rounds (``--no-limit`` to skip): no scorer of this model goes faster on this machine.

    .venv/bin/python bench/batch/run.py                                  # issue 16 figures (quiet machine!)
    .venv/bin/python bench/batch/run.py --rows 20000 --repeat 1          # smoke
    .venv/bin/python bench/batch/run.py --rows 1000000,10000000 --models default,heavy --runtimes onnx,sklearn
    .venv/bin/python bench/batch/run.py --rows 1000000 --repeat 5 --before /tmp/before/src   # vs another tree

``--before SRC`` adds `mlgate score` from another source tree (e.g. ``git archive <commit> src | tar -x -C
/tmp/before``), run with the same interpreter and no ``--runtime`` (older trees have none). Results:
bench/results/batch/results.json (every run) and results.md (the table, ratios of the medians, and the
issue 16 targets met or missed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess  # nosec B404 - benchmark driver runs fixed commands
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from common import (  # noqa: E402
    fmt,
    has_onnx,
    is_current,
    load_avg,
    machine,
    ratio,
    rotations,
    save_model,
    split_list,
    spread,
    write_results,
)

BIN = Path(sys.executable).parent
FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex"]
NUMERIC = FEATURES[1:5]
MLFLOW = "mlflow models predict"
BEFORE = "mlgate score (before)"
TOOL = {"onnx": "mlgate score (ONNX)", "sklearn": "mlgate score (scikit-learn)"}
MLFLOW_ENV = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
STARTUP_ROWS = 5


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
    """The default config's pipeline and a 300-tree forest, same preprocessing, saved as `mlgate train` saves
    them (with the compiled ONNX model). Kept between runs; rebuilt when older than that."""
    from mlgate import data as d
    from mlgate.config import load_config
    from mlgate.features import build_pipeline
    from mlgate.io import read_table

    cfg = load_config(REPO / "config" / "pipeline.yaml")
    typed, _ = d.coerce_types(read_table(REPO / cfg.data.source), cfg.data, cfg.task)
    train, holdout = d.split(typed, cfg.data, cfg.split, cfg.task)
    specs = {
        "default": cfg.estimator,
        "heavy": cfg.estimator.model_copy(
            update={"params": {"n_estimators": 300, "random_state": 0, "n_jobs": 1}}
        ),
    }
    paths = {}
    for name, spec in specs.items():
        dest = folder / f"model-{name}"
        if not is_current(dest):
            model = build_pipeline(cfg.data, spec, cfg.task).fit(
                train[cfg.data.feature_names], train[cfg.data.target]
            )
            save_model(dest, model, cfg, train, holdout, spec)
        paths[name] = dest
    return paths


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def measure(cmd: list[str], env: dict[str, str] | None, log: Path) -> dict[str, float]:
    """Run a command to its end: wall seconds, CPU seconds of the process tree, peak RSS (sum over the tree).

    CPU is the larger of the child's rusage (``os.wait4``: the child and every descendant it waited for) and
    the sum of each process's own user + sys as last sampled (catches a descendant nobody waited for).
    """
    start = time.monotonic()
    with open(log, "wb") as err:
        popen = subprocess.Popen(
            cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=err
        )  # nosec B603 - fixed commands of the tools under test
    proc = psutil.Process(popen.pid)
    peak, seen, samples = 0, {}, []
    while True:
        pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
        if pid:
            break
        rss = 0
        for p in _tree(proc):
            try:
                with p.oneshot():
                    rss += p.memory_info().rss
                    t = p.cpu_times()
                    seen[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        peak = max(peak, rss)
        samples.append((time.monotonic() - start, rss))
        time.sleep(0.1)
    wall = time.monotonic() - start
    popen.returncode = os.waitstatus_to_exitcode(status)
    if popen.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({popen.returncode}): {log.read_text()[-2000:]}")
    rusage = usage.ru_utime + usage.ru_stime
    sampled = sum(seen.values())
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(max(rusage, sampled), 3),
        "cpu_s_rusage": round(rusage, 3),
        "cpu_s_sampled": round(sampled, 3),
        "peak_rss_mib": round(peak / 2**20, 1),
        "rss_growth": rss_growth(samples, wall),
    }


def rss_growth(samples: list[tuple[float, int]], wall: float) -> float | None:
    """Peak RSS of the run's second half over the peak of its first half: memory that grows with the rows
    read shows as > 1; a streaming job that filled its pipeline in the first half stays at about 1."""
    first = [rss for t, rss in samples if t <= wall / 2]
    second = [rss for t, rss in samples if t > wall / 2]
    return round(max(second) / max(first), 3) if first and second and max(first) else None


def mlgate_cmd(model: Path, data: Path, out: Path, runtime: str | None) -> list[str]:
    """`mlgate score` with its defaults, as `python -m mlgate` (so that another source tree can go first)."""
    cmd = [sys.executable, "-m", "mlgate", "score", "--model", str(model), "--input", str(data)]
    cmd += ["--output", str(out), "--key", "id"]
    return cmd + (["--runtime", runtime] if runtime else [])


def mlflow_cmd(model: Path, data: Path, out: Path) -> list[str]:
    return [str(BIN / "mlflow"), "models", "predict", "-m", str(model), "-i", str(data), "-t", "csv"] + [
        "-o",
        str(out),
        "--env-manager",
        "local",
    ]


def tools_for(args: argparse.Namespace, model: Path, data: Path) -> dict[str, dict[str, Any]]:
    """Each tool's command, environment, output and the runtime its summary must name."""
    tools: dict[str, dict[str, Any]] = {}
    for runtime in args.runtimes:
        out = args.work / f"out-{runtime}.parquet"
        tools[TOOL[runtime]] = {"cmd": mlgate_cmd(model, data, out, runtime), "out": out, "runtime": runtime}
    if args.before:
        out = args.work / "out-before.parquet"
        tools[BEFORE] = {
            "cmd": mlgate_cmd(model, data, out, None),
            "env": {"PYTHONPATH": str(args.before)},
            "out": out,
        }
    rows = _rows(data)
    if not args.skip_mlflow and rows <= args.mlflow_max_rows:
        out = args.work / "out-mlflow.json"
        tools[MLFLOW] = {"cmd": mlflow_cmd(model, data, out), "env": MLFLOW_ENV, "out": out}
    return tools


def _rows(data: Path) -> int:
    return int(data.stem.split("-")[1])


def summary_of(out: Path) -> dict[str, Any]:
    return json.loads(out.with_name(out.stem + ".summary.json").read_text())


def labels(tool: str, out: Path) -> np.ndarray:
    """The predicted labels a tool wrote, in input order."""
    if tool == MLFLOW:
        predictions = json.loads(out.read_text())
        predictions = predictions["predictions"] if isinstance(predictions, dict) else predictions
        return np.asarray(
            [p if not isinstance(p, dict) else next(iter(p.values())) for p in predictions], str
        )
    frame = pd.read_parquet(out)
    column = next(c for c in ("prediction", "predictions", "label") if c in frame.columns)
    frame = frame.sort_values("id", key=lambda s: s.astype(int))
    return frame[column].astype(str).to_numpy()


def check_run(tool: str, spec: dict[str, Any], rows: int) -> str | None:
    """The runtime that scored (from the summary of a `mlgate score` run); raises when it is not the one asked
    for or a row was not scored."""
    if tool == MLFLOW:
        return "sklearn"
    summary = summary_of(spec["out"])
    if spec.get("runtime") and summary.get("runtime") != spec["runtime"]:
        raise RuntimeError(f"{tool}: the summary says runtime {summary.get('runtime')!r}")
    if summary.get("rows_scored") != rows:
        raise RuntimeError(f"{tool}: scored {summary.get('rows_scored')} of {rows} rows")
    return summary.get("runtime")


IN_MEMORY = r"""
import os, sys, time, json, multiprocessing as mp, threading
os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
import pandas as pd
runtime = sys.argv[3]
df = pd.read_csv(sys.argv[2], usecols=%r)
n = len(df) // 2
halves = [df.iloc[:n], df.iloc[n:]]
if runtime == "onnx":  # as mlgate score runs it: two threads sharing one session, one ONNX thread each
    from mlgate.runtime import load_runtime
    model = load_runtime(sys.argv[1], choice="onnx")
    model.predict(df.head(10))
    done = []
    work = lambda part: done.append(len(model.predict(part)))
    threads = [threading.Thread(target=work, args=(h,)) for h in halves]
    start = time.monotonic()
    for t in threads: t.start()
    for t in threads: t.join()
    done = sum(done)
else:  # the scikit-learn pipeline, two halves in two processes
    import mlflow.sklearn
    model = mlflow.sklearn.load_model(sys.argv[1])
    def half(i):
        return len(model.predict(halves[i]))
    start = time.monotonic()
    with mp.get_context("fork").Pool(2) as pool:
        done = sum(pool.map(half, [0, 1]))
print(json.dumps({"predict_s": time.monotonic() - start, "rows": done}))
""" % FEATURES


def in_memory(model: Path, data: Path, runtime: str) -> dict[str, float]:
    """The model's predict on the whole input already in memory (parsing excluded), two halves side by side:
    the two-core limit of any scorer with this model. ONNX: two threads on one session; scikit-learn: two
    processes."""
    out = subprocess.run(
        [sys.executable, "-c", IN_MEMORY, str(model), str(data), runtime],
        check=True,
        capture_output=True,
        text=True,
    )  # nosec
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "runtime": runtime,
        "predict_s": round(result["predict_s"], 2),
        "rows_per_s": round(result["rows"] / result["predict_s"]),
    }


def run(args: argparse.Namespace, models: dict[str, Path]) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": [],
        "limits": [],
        "checks": [],
    }
    sizes = ([STARTUP_ROWS] if args.startup else []) + args.rows
    for name in args.models:
        if "onnx" in args.runtimes and not has_onnx(models[name]):
            raise SystemExit(
                f"{models[name]}: its compiled model did not pass parity; no ONNX runtime to time"
            )
        for rows in sizes:
            data = synthesize(rows, args.work / f"rows-{rows}.csv")
            tools = tools_for(args, models[name], data)
            for r, order in rotations(list(tools), args.repeat):
                for tool in order:
                    spec = tools[tool]
                    m = {"model": name, "rows": rows, "tool": tool, "round": r, "load_before": load_avg()}
                    m.update(measure(spec["cmd"], spec.get("env"), args.work / "last-run.log"))
                    m["runtime"] = check_run(tool, spec, rows)
                    m["rows_per_s"] = round(rows / m["wall_s"])
                    m["cpu_us_per_row"] = round(m["cpu_s"] / rows * 1e6, 3)
                    results["runs"].append(m)
                    print(json.dumps(m), flush=True)
                if r == 0 and rows <= args.check_max_rows:
                    results["checks"].append(agree(name, rows, tools))
            if args.limit and rows != STARTUP_ROWS:
                for runtime in args.runtimes:
                    limit = {
                        "model": name,
                        "rows": rows,
                        "load_before": load_avg(),
                        **in_memory(models[name], data, runtime),
                    }
                    results["limits"].append(limit)
                    print(json.dumps(limit), flush=True)
    return results


def agree(name: str, rows: int, tools: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every tool wrote the same labels for every row (or this raises)."""
    got = {tool: labels(tool, spec["out"]) for tool, spec in tools.items()}
    first, reference = next(iter(got.items()))
    for tool, values in got.items():
        if len(values) != rows or (values != reference).any():
            differ = int((values != reference).sum()) if len(values) == len(reference) else "all"
            raise RuntimeError(f"{name}, {rows} rows: {tool} disagrees with {first} on {differ} labels")
    return {"model": name, "rows": rows, "tools": list(got), "labels_agree": True}


# --- the tables ------------------------------------------------------------------------------------------


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Spreads over the rounds per (model, rows, tool)."""
    groups: dict[tuple, list[dict]] = {}
    for m in results["runs"]:
        groups.setdefault((m["model"], m["rows"], m["tool"]), []).append(m)
    return [
        {
            "model": model,
            "rows": rows,
            "tool": tool,
            "runs": len(ms),
            "runtime": ms[0]["runtime"],
            **{
                key: spread([m[key] for m in ms])
                for key in (
                    "wall_s",
                    "rows_per_s",
                    "cpu_s",
                    "cpu_us_per_row",
                    "peak_rss_mib",
                    "rss_growth",
                    "load_before",
                )
            },
        }
        for (model, rows, tool), ms in groups.items()
    ]


def _get(summary: list[dict], model: str, rows: int, tool: str, key: str) -> float | None:
    row = next((s for s in summary if (s["model"], s["rows"], s["tool"]) == (model, rows, tool)), None)
    return row[key]["median"] if row else None


def targets(results: dict[str, Any], summary: list[dict]) -> list[str]:
    """The issue 16 batch targets, from the medians (default model when measured)."""
    models = [s["model"] for s in summary]
    if not models:
        return []
    model = "default" if "default" in models else models[0]
    sizes = sorted({s["rows"] for s in summary if s["model"] == model and s["rows"] != STARTUP_ROWS})
    onnx, sk = TOOL["onnx"], TOOL["sklearn"]
    lines = [
        f"Targets (issue 16), {model} model, medians:",
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    for rows, want in ((1_000_000, 2), (10_000_000, 3)):
        ours, theirs = _get(summary, model, rows, onnx, "rows_per_s"), _get(
            summary, model, rows, MLFLOW, "rows_per_s"
        )
        if ours and theirs:
            ceiling = next(
                (
                    lim["rows_per_s"]
                    for lim in results["limits"]
                    if (lim["model"], lim["rows"], lim.get("runtime")) == (model, rows, "onnx")
                ),
                None,
            )
            bound = f"; ONNX predict alone on 2 cores: {ceiling / theirs:.2f}x" if ceiling else ""
            lines.append(
                f"| {rows:,} rows: ONNX ≥ {want}x `mlflow models predict` rows/s | {ours / theirs:.2f}x "
                f"({ours:,.0f} vs {theirs:,.0f}{bound}) | {verdict(ours / theirs >= want)} |"
            )
    peaks = {rows: _get(summary, model, rows, onnx, "peak_rss_mib") for rows in sizes}
    peaks = {k: v for k, v in peaks.items() if v}
    if peaks:
        worst = max(
            s["peak_rss_mib"]["max"]
            for s in summary
            if s["model"] == model and s["tool"] == onnx and s["rows"] in peaks
        )
        shown = ", ".join(f"{rows:,}: {mib:,.0f}" for rows, mib in peaks.items())
        growth = peaks[max(peaks)] / peaks[min(peaks)] if len(peaks) > 1 else None
        lines.append(
            f"| ONNX peak RSS < 1 GiB | {shown} MiB (largest of all runs {worst:,.0f}) "
            f"| {verdict(worst < 1024)} |"
        )
        if growth:
            lines.append(
                f"| ONNX peak RSS from {min(peaks):,} to {max(peaks):,} rows | x{growth:.2f} "
                "| (a short run ends while its pipeline is still filling: see the next line) |"
            )
        within = _get(summary, model, max(peaks), onnx, "rss_growth")
        if within:
            lines.append(
                f"| ONNX RSS flat through a {max(peaks):,}-row run (peak of its second half / first half) "
                f"| x{within:.2f} | {verdict(within <= 1.10)} (flat taken as within 10%) |"
            )
    for rows in sizes:
        ours, theirs = _get(summary, model, rows, sk, "cpu_us_per_row"), _get(
            summary, model, rows, MLFLOW, "cpu_us_per_row"
        )
        if ours and theirs:
            lines.append(
                f"| {rows:,} rows: scikit-learn CPU-s per row ≤ MLflow's | {ours:.2f} vs {theirs:.2f} µs "
                f"({ours / theirs:.2f}) | {verdict(ours <= theirs)} |"
            )
    return lines


def markdown(results: dict[str, Any]) -> str:
    summary = summarize(results)
    loads = spread([m["load_before"] for m in results["runs"]])
    lines = [
        f"{results['machine']['cores']} cores, Python {results['machine']['python']}; "
        f"{results['args']['repeat']} interleaved rounds; load average before each run, min / median / max: "
        f"{fmt(loads, 2)}. Per tool: min / median / max over the rounds; rows/s include start-up; ratios are "
        "of the medians.",
        "",
        "| model | rows | tool | runs | wall s | rows/s (median) | CPU µs per row | CPU s (median) "
        "| peak RSS MiB | RSS 2nd half / 1st | load avg | rows/s vs mlflow | CPU per row vs mlflow |",
        "|---|---:|---|---:|---|---:|---|---:|---|---|---|---:|---:|",
    ]
    for s in summary:
        mlflow_rps = _get(summary, s["model"], s["rows"], MLFLOW, "rows_per_s")
        mlflow_cpu = _get(summary, s["model"], s["rows"], MLFLOW, "cpu_us_per_row")
        if s["rows"] == STARTUP_ROWS:
            size, rps, per_row, vs_rps, vs_cpu = "start-up (5 rows)", "-", "-", "-", "-"
        else:
            size, rps = f"{s['rows']:,}", f"{s['rows_per_s']['median']:,.0f}"
            per_row = fmt(s["cpu_us_per_row"], 2)
            vs_rps = ratio(s["rows_per_s"]["median"], mlflow_rps)
            vs_cpu = f"{s['cpu_us_per_row']['median'] / mlflow_cpu:.2f}" if mlflow_cpu else "-"
        lines.append(
            f"| {s['model']} | {size} | {s['tool']} | {s['runs']} | {fmt(s['wall_s'], 2)} | {rps} "
            f"| {per_row} "
            f"| {s['cpu_s']['median']:.2f} | {fmt(s['peak_rss_mib'], 0)} "
            f"| {fmt(s['rss_growth'], 2) if s.get('rss_growth') else '-'} | {fmt(s['load_before'], 2)} "
            f"| {vs_rps} | {vs_cpu} |"
        )
    for lim in results["limits"]:
        mlflow_rps = _get(summary, lim["model"], lim["rows"], MLFLOW, "rows_per_s")
        name = {"onnx": "ONNX Runtime, 2 threads", "sklearn": "scikit-learn, 2 processes"}[lim["runtime"]]
        lines.append(
            f"| {lim['model']} | {lim['rows']:,} | in-memory predict only, {name} | 1 "
            f"| {lim['predict_s']} | {lim['rows_per_s']:,} | - | - | - | - | {lim['load_before']:.2f} "
            f"| {ratio(lim['rows_per_s'], mlflow_rps)} | - |"
        )
    checks = results.get("checks") or []
    if checks:
        lines += [
            "",
            "Labels checked equal across "
            + "; ".join(f"{c['model']} {c['rows']:,} rows" for c in checks)
            + ".",
        ]
    lines += ["", *targets(results, summary)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    many = {"nargs": "+", "action": "extend", "type": split_list, "default": None}
    parser.add_argument("--rows", help="sizes, e.g. 1000000,10000000 [default]", **many)
    parser.add_argument("--models", help="default, heavy [default: default]", **many)
    parser.add_argument("--runtimes", help="mlgate score runtimes: onnx, sklearn [default: both]", **many)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "results" / "batch")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (runs of each tool)")
    parser.add_argument(
        "--mlflow-max-rows",
        type=int,
        default=10_000_000,
        help="skip `mlflow models predict` above this size (it holds the whole input and output in memory)",
    )
    parser.add_argument("--skip-mlflow", action="store_true", help="leave out `mlflow models predict`")
    parser.add_argument("--no-startup", dest="startup", action="store_false", help="skip the 5-row start-up")
    parser.add_argument("--no-limit", dest="limit", action="store_false", help="skip the in-memory limit")
    parser.add_argument(
        "--check-max-rows", type=int, default=1_000_000, help="check the tools' labels agree up to this size"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny run to check the script (2,000 rows, 1 round)"
    )
    parser.add_argument("--compare", action="store_true", help="(the default now: every run is interleaved)")
    parser.add_argument("--before", type=Path, help="a source tree of mlgate to compare with, see above")
    args = parser.parse_args()
    flat = lambda v: [x for group in v or [] for x in group]  # noqa: E731
    args.rows = [int(v) for v in flat(args.rows)] or [1_000_000, 10_000_000]
    args.models = flat(args.models) or ["default"]
    args.runtimes = flat(args.runtimes) or ["onnx", "sklearn"]
    if args.quick:
        args.rows, args.repeat, args.limit = [2000], 1, False
    for value, allowed, flag in (
        (args.models, ("default", "heavy"), "--models"),
        (args.runtimes, TOOL, "--runtimes"),
    ):
        if set(value) - set(allowed):
            parser.error(f"{flag}: choose from {', '.join(allowed)}")
    args.work.mkdir(parents=True, exist_ok=True)
    models = build_models(args.work)
    results = run(args, models)
    results["summary"] = summarize(results)
    write_results(args.work, results, markdown(results))


if __name__ == "__main__":
    main()
