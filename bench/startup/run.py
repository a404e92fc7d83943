"""Start-up benchmark: how long mlgate's commands take before they do their work, against MLflow's own.

A real `mlflow server` (SQLite, artifacts served through its proxy) on a free loopback port holds the default
config's model (saved as `mlgate train` saves it, by bench/batch/run.py's builder) registered as `mlgate
register` does (a logged model, then a version; alias ``champion``). Measured, interleaved (the order rotates
each round) and ``--repeat`` times each:

- ``mlgate --help``;
- ``mlgate score --model models:/NAME@champion`` on a 5-row CSV (start-up: process start to the outputs
  written) and on the 200,000-row CSV of bench/batch (``--rows``), against ``mlflow models predict -m
  models:/NAME@champion`` (``--env-manager local``) on the same files;
- ``mlgate serve`` time to ready (process start to ``/ready`` answering 200), on the local model folder and on
  the registry URI.

``--before SRC`` adds the score and serve commands from another source tree (``git archive <commit> src | tar
-x -C /tmp/before``), run with the same interpreter. Per run: wall seconds (CPU seconds and peak RSS of the
process tree for the batch commands, as bench/batch measures them) and the 1-minute load average before it;
per command: min / median / max over the rounds, ratios of the medians. Results: bench/results/startup/
results.json (every run) and results.md.

    .venv/bin/python bench/startup/run.py                 # 5 rounds, 200,000 rows
    .venv/bin/python bench/startup/run.py --repeat 1      # smoke
    .venv/bin/python bench/startup/run.py --before /tmp/before/src
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess  # nosec B404 - benchmark driver runs fixed commands
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from common import fmt, load_avg, machine, ratio, rotations, spread, write_results  # noqa: E402

BIN = Path(sys.executable).parent
NAME = "startup-bench"
HELP, SCORE, PREDICT, SERVE_DIR, SERVE_URI = (
    "mlgate --help",
    "mlgate score (registry URI)",
    "mlflow models predict (registry URI)",
    "mlgate serve, ready (model folder)",
    "mlgate serve, ready (registry URI)",
)
BEFORE = " (before)"
GOALS = {HELP: 0.3, SERVE_DIR: 1.0}  # issue 28, item 4 (score: start-up within 0.5 s, 2x mlflow's rows/s)


def _batch_bench() -> Any:
    """bench/batch/run.py as a module: its model builder, synthetic rows and process-tree measurement."""
    spec = importlib.util.spec_from_file_location("bench_batch_run", REPO / "bench" / "batch" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def tracking_server(work: Path) -> Iterator[str]:
    """`mlflow server` on a free loopback port (SQLite, artifacts through its proxy), stopped at the end."""
    port = free_port()
    for old in ("registry.db", "artifacts"):
        path = work / old
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    cmd = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{work / 'registry.db'}",
        "--artifacts-destination", str(work / "artifacts"),
    ]  # fmt: skip
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(work / "mlflow-server.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"mlflow server did not start: see {work / 'mlflow-server.log'}")
            time.sleep(0.3)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def register(folder: Path, uri: str) -> str:
    """Register the model folder as `mlgate train` + `register` do; its version number."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    experiment = mlflow.set_experiment(NAME)
    logged = client.create_logged_model(experiment.experiment_id)
    client.log_model_artifacts(logged.model_id, str(folder))
    client.create_registered_model(NAME)
    version = client.create_model_version(
        NAME, f"models:/{logged.model_id}", model_id=logged.model_id
    ).version
    client.set_registered_model_alias(NAME, "champion", version)
    return str(version)


def mlgate(*args: str) -> list[str]:
    """`mlgate ...` as ``python -m mlgate`` (so that ``--before``'s tree can go first on PYTHONPATH)."""
    return [sys.executable, "-m", "mlgate", *args]


def time_to_ready(
    args: list[str], env: dict[str, str], log: Path, timeout: float = 120.0
) -> dict[str, float]:
    """Start `mlgate serve ARGS`, poll /ready every 20 ms; seconds from process start to its first 200."""
    port = free_port()
    start = time.monotonic()
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            mlgate("serve", *args, "--port", str(port)), stdout=subprocess.DEVNULL, stderr=err, env=env
        )  # nosec B603 - fixed commands
    try:
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() - start < timeout:
                if proc.poll() is not None:
                    raise RuntimeError(f"mlgate serve {' '.join(args)} exited: {log.read_text()[-2000:]}")
                try:
                    if http.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                        return {"wall_s": round(time.monotonic() - start, 3)}
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        raise RuntimeError(f"mlgate serve {' '.join(args)} not ready after {timeout} s")
    finally:
        proc.kill()
        proc.wait(30)


def commands(args: argparse.Namespace, model: Path, files: dict[int, Path]) -> dict[str, dict[str, Any]]:
    """Each measured command: how it runs (``cmd`` to its end, ``serve`` args to readiness) and its env."""
    uri = f"models:/{NAME}@champion"
    trees = {"": {}} | ({BEFORE: {"PYTHONPATH": str(args.before)}} if args.before else {})
    out: dict[str, dict[str, Any]] = {HELP: {"cmd": mlgate("--help"), "rows": 0}}
    for suffix, env in trees.items():
        for rows, data in files.items():
            dest = args.work / f"scores{suffix.strip(' ()')}-{rows}.parquet"
            out[f"{SCORE}{suffix}, {rows:,} rows"] = {
                "cmd": mlgate(
                    "score", "--model", uri, "--input", str(data), "--output", str(dest), "--key", "id"
                ),
                "env": env,
                "rows": rows,
                "summary": dest.with_name(dest.stem + ".summary.json"),
            }
        out[f"{SERVE_DIR}{suffix}"] = {"serve": ["--model", str(model)], "env": env}
        out[f"{SERVE_URI}{suffix}"] = {"serve": ["--model", uri], "env": env}
    for rows, data in files.items():
        dest = args.work / f"predict-{rows}.json"
        out[f"{PREDICT}, {rows:,} rows"] = {
            "cmd": [str(BIN / "mlflow"), "models", "predict", "-m", uri, "-i", str(data), "-t", "csv", "-o",
                    str(dest), "--env-manager", "local"],
            "env": {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"},
            "rows": rows,
        }  # fmt: skip
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    batch = _batch_bench()
    args.work.mkdir(parents=True, exist_ok=True)
    model = batch.build_models(args.work)["default"]
    shared = REPO / "bench" / "results" / "batch"  # bench/batch's inputs: made once, kept
    shared.mkdir(parents=True, exist_ok=True)
    big = batch.synthesize(args.rows, shared / f"rows-{args.rows}.csv")
    files = {5: args.work / "rows-5.csv", args.rows: big}
    with big.open() as head:
        files[5].write_text("".join(itertools.islice(head, 6)))  # the header and 5 rows
    results: dict[str, Any] = {
        "machine": machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": [],
    }
    with tracking_server(args.work) as uri:
        results["version"] = register(model, uri)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        todo = commands(args, model, files)
        for r, order in rotations(list(todo), args.repeat):
            for name in order:
                spec = todo[name]
                m: dict[str, Any] = {"command": name, "round": r, "load_before": load_avg()}
                run_env = {**env, **spec.get("env", {})}
                if "serve" in spec:
                    m.update(time_to_ready(spec["serve"], run_env, args.work / "last-run.log"))
                else:
                    m.update(batch.measure(spec["cmd"], run_env, args.work / "last-run.log"))
                    m["rows"] = spec["rows"]
                    if spec.get("summary"):
                        summary = json.loads(spec["summary"].read_text())
                        assert summary["rows_scored"] == spec["rows"], summary  # nosec B101 - a check
                        m["startup_s"] = summary.get("startup_seconds")
                results["runs"].append(m)
                print(json.dumps(m), flush=True)
    return results


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    groups: dict[str, list[dict]] = {}
    for m in results["runs"]:
        groups.setdefault(m["command"], []).append(m)
    return [
        {
            "command": name,
            "runs": len(ms),
            **{k: spread([m.get(k) for m in ms]) for k in ("wall_s", "cpu_s", "peak_rss_mib", "load_before")},
        }
        for name, ms in groups.items()
    ]


def markdown(results: dict[str, Any]) -> str:
    summary = summarize(results)
    median = {s["command"]: s["wall_s"]["median"] for s in summary}
    loads = spread([m["load_before"] for m in results["runs"]])
    rows = results["args"]["rows"]
    lines = [
        f"{results['machine']['cores']} cores, Python {results['machine']['python']}; "
        f"{results['args']['repeat']} interleaved rounds; load average before each run, min / median / max: "
        f"{fmt(loads, 2)}. Wall seconds: min / median / max over the rounds.",
        "",
        "| command | runs | wall s | CPU s (median) | peak RSS MiB | load avg |",
        "|---|---:|---|---:|---|---|",
    ]
    for s in summary:
        cpu = f"{s['cpu_s']['median']:.2f}" if s["cpu_s"] else "-"
        rss = fmt(s["peak_rss_mib"], 0) if s["peak_rss_mib"] else "-"
        lines.append(
            f"| {s['command']} | {s['runs']} | {fmt(s['wall_s'], 2)} | {cpu} | {rss} "
            f"| {fmt(s['load_before'], 2)} |"
        )
    ours, theirs = median.get(f"{SCORE}, {rows:,} rows"), median.get(f"{PREDICT}, {rows:,} rows")
    start, help_s, ready = median.get(f"{SCORE}, 5 rows"), median.get(HELP), median.get(SERVE_DIR)
    lines += ["", "| goal (issue 28, item 4) | measured (medians) |", "|---|---|"]
    if start is not None:
        lines.append(
            f"| `mlgate score` with a registry URI starts within 0.5 s | {start:.2f} s "
            "(5-row run, end to end) |"
        )
    if ours and theirs:
        lines.append(
            f"| `mlgate score` ≥ 2x `mlflow models predict` on {rows:,} rows "
            f"| {ratio(rows / ours, rows / theirs)} rows/s ({ours:.2f} vs {theirs:.2f} s) |"
        )
    if help_s is not None:
        lines.append(f"| `mlgate --help` within 0.3 s | {help_s:.2f} s |")
    if ready is not None:
        lines.append(f"| `mlgate serve` ready within 1 s (model folder) | {ready:.2f} s |")
    for name in (f"{SCORE}, 5 rows", f"{SCORE}, {rows:,} rows", SERVE_DIR, SERVE_URI):
        if median.get(name + BEFORE):
            lines.append(f"| {name}: before / now | {median[name + BEFORE]:.2f} / {median[name]:.2f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the large input [200,000]")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds (runs of each command)")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "results" / "startup")
    parser.add_argument("--before", type=Path, help="a source tree of mlgate to compare with, see above")
    args = parser.parse_args()
    results = run(args)
    results["summary"] = summarize(results)
    write_results(args.work, results, markdown(results))


if __name__ == "__main__":
    main()
