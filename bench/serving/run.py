"""Serving benchmark: `mlgate serve` on ONNX Runtime and on scikit-learn vs `mlflow models serve` vs Seldon
MLServer (its MLflow runtime), one worker each, and the in-process predict of both runtimes, on the same model
folders (the default config's model and a light and a heavy one behind the same preprocessing, saved as
`mlgate train` saves them: with the compiled ONNX model and its parity report).

Everything in one run, interleaved: each round starts every server in turn (the order rotates each round:
A, B, C, D; B, C, D, A; ...), times its cold start to ready, checks its answers against the pipeline's own
labels, measures its RSS, loads it with requests of each size at each concurrency, and stops it. Reported as
min / median / max over the rounds, with the machine's 1-minute load average before each cell: req/s, p50/p99
latency, errors, overhead per request (p50 at concurrency 1 minus the in-process predict of the runtime that
server runs), ready time, RSS per worker, and the in-process one-row predict of ONNX Runtime vs the
scikit-learn pipeline (the runtime classes of mlgate.runtime on the model folder), interleaved the same way.

The load generator is a small keep-alive asyncio HTTP client in this process, on 127.0.0.1 only; it shares the
cores with the server under test. MLServer's pins conflict with this project's, so it runs from its own venv,
bench/.venv-mlserver (git-ignored), created on first use (`mlserver`, `mlserver-mlflow`, `uvloop==0.21.0`,
MLflow 3.17, this venv's scikit-learn and skops).

    .venv/bin/python bench/serving/run.py                                # issue 16 figures (quiet machine!)
    .venv/bin/python bench/serving/run.py --rounds 1 --duration 2 --repeat 20    # smoke
    .venv/bin/python bench/serving/run.py --models default,light,heavy --rows 1,100 --workers 2   # issue 8
    .venv/bin/python bench/serving/run.py --servers mlgate-onnx,mlserver --mlserver-protocol invocations

Results: bench/results/serving/results.json (every round and cell) and RESULTS.md (the tables, ratios of
medians, and the issue 16 targets met or missed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess  # nosec B404 - starts the servers under test
import sys
import time
from pathlib import Path
from typing import Any

import httpx
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
)

BIN = Path(sys.executable).parent
OUT = REPO / "bench" / "results" / "serving"
MLSERVER_VENV = REPO / "bench" / ".venv-mlserver"
# SeldonIO/MLServer#2286: a newer uvloop crashes MLServer's worker; MLflow 3.18's skinny build is not served.
MLSERVER_REQUIREMENTS = ["mlserver", "mlserver-mlflow", "uvloop==0.21.0", "mlflow>=3.17,<3.18"]
MODELS = {
    "default": None,  # the config's estimator
    "light": ("sklearn.linear_model.LogisticRegression", {"max_iter": 1000}),
    "heavy": (
        "sklearn.ensemble.RandomForestClassifier",
        {"n_estimators": 300, "random_state": 42, "n_jobs": 1},
    ),
}
# name: (kind, runtime); one worker each unless --workers adds the same-worker-count variants
SERVERS = {
    "mlgate-onnx": ("mlgate", "onnx"),
    "mlgate-sklearn": ("mlgate", "sklearn"),
    "mlflow": ("mlflow", "sklearn"),
    "mlserver": ("mlserver", "sklearn"),  # parallel_workers 1 (its default): one inference process
    "mlserver-0": ("mlserver", "sklearn"),  # parallel_workers 0: inference in its main process
}
MLSERVER_WORKERS = {"mlserver": 1, "mlserver-0": 0}
LABELS = {
    "mlgate-onnx": "mlgate serve (ONNX)",
    "mlgate-sklearn": "mlgate serve (scikit-learn)",
    "mlflow": "mlflow models serve",
    "mlserver": "MLServer (MLflow runtime, 1 parallel worker)",
    "mlserver-0": "MLServer (MLflow runtime, in its main process)",
}


# --- models and rows ---------------------------------------------------------------------------------------


def build_models(names: list[str]) -> dict[str, Path]:
    """Fit each model on the penguins data behind the default preprocessing; save each as `mlgate train` does
    (skops pipeline, mlgate metadata, ONNX model and parity report). Kept between runs; rebuilt when older."""
    from mlgate import data as d
    from mlgate.config import EstimatorConfig, load_config
    from mlgate.features import build_pipeline
    from mlgate.io import read_table

    cfg = load_config(REPO / "config" / "pipeline.yaml")
    typed, _ = d.coerce_types(read_table(REPO / cfg.data.source), cfg.data, cfg.task)
    train, holdout = d.split(typed, cfg.data, cfg.split, cfg.task)
    folders = {}
    for name in names:
        folder = OUT / "models" / name
        if not is_current(folder):
            spec = (
                cfg.estimator
                if MODELS[name] is None
                else EstimatorConfig(**{"class": MODELS[name][0], "params": MODELS[name][1]})
            )
            model = build_pipeline(cfg.data, spec, cfg.task).fit(
                train[cfg.data.feature_names], train[cfg.data.target]
            )
            save_model(folder, model, cfg, train, holdout, spec)
        folders[name] = folder
    return folders


def sample_rows(n: int) -> list[dict[str, Any]]:
    import pandas as pd

    from mlgate.config import load_config

    cfg = load_config(REPO / "config" / "pipeline.yaml")
    df = pd.read_csv(REPO / cfg.data.source)[cfg.data.feature_names].dropna()
    df = pd.concat([df] * (n // len(df) + 1)).head(n)
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in df.to_dict(orient="records")]


def in_process(folder: Path, rows: list[dict[str, Any]], repeat: int, rounds: int) -> dict[str, Any]:
    """The model's own predict, per call in ms, ``repeat`` calls per block, blocks interleaved over
    ``rounds``: ONNX Runtime on the columns (what `mlgate serve` feeds it), the scikit-learn runtime on the
    same columns (it builds the DataFrame, as `mlgate serve --runtime sklearn` does), and the scikit-learn
    pipeline on a ready DataFrame (what MLflow's and MLServer's servers call)."""
    import statistics

    import numpy as np
    import pandas as pd

    from mlgate.runtime import load_runtime

    frame = pd.DataFrame(rows)
    columns = {c: frame[c].to_numpy() for c in frame.columns}
    sklearn = load_runtime(folder, choice="sklearn")
    calls = {
        "sklearn_runtime": lambda: sklearn.predict(columns),
        "sklearn_pipeline": lambda: sklearn.pipeline.predict(frame),
    }
    expected = np.asarray(sklearn.pipeline.predict(frame))
    if has_onnx(folder):
        onnx = load_runtime(folder, choice="onnx")
        calls["onnx"] = lambda: onnx.predict(columns)
        if not (np.asarray(onnx.predict(columns)) == expected).all():
            raise RuntimeError(f"{folder}: ONNX Runtime's labels differ from the pipeline's")
    for call in calls.values():
        call()  # warm-up
    blocks: dict[str, list[float]] = {k: [] for k in calls}
    for _, order in rotations(list(calls), rounds):
        for name in order:
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                calls[name]()
                times.append(time.perf_counter() - t)
            blocks[name].append(round(statistics.median(times) * 1000, 4))
    return {k: {"block_median_ms": v, "ms": spread(v)} for k, v in blocks.items()}


# --- load ------------------------------------------------------------------------------------------------


async def _worker(port: int, request: bytes, stop: float, lat: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


def load(
    port: int, body: bytes, concurrency: int, duration: float, path: str = "/invocations"
) -> dict[str, Any]:
    """Keep ``concurrency`` connections busy for ``duration`` seconds; latency percentiles in ms."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    lat: list[float] = []
    errors: list[int] = []

    async def main() -> float:
        start = time.perf_counter()
        await asyncio.gather(
            *[_worker(port, request, start + duration, lat, errors) for _ in range(concurrency)]
        )
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    lat.sort()
    pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None  # noqa: E731
    return {
        "requests": len(lat),
        "rps": round(len(lat) / elapsed, 1),
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "errors": len(errors),
    }


# --- the servers -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlserver_bin() -> Path:
    """MLServer's CLI in bench/.venv-mlserver, creating the venv (or updating its packages) when needed."""
    import sklearn
    import skops

    wanted = MLSERVER_REQUIREMENTS + [f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}"]
    marker = MLSERVER_VENV / "bench-requirements.txt"
    cli = MLSERVER_VENV / "bin" / "mlserver"
    if cli.is_file() and marker.is_file() and marker.read_text().split() == wanted:
        return cli
    print(f"installing MLServer into {MLSERVER_VENV} (once): {' '.join(wanted)}", flush=True)
    if not (MLSERVER_VENV / "bin" / "python").is_file():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(MLSERVER_VENV)], check=True)  # nosec B603 - fixed command
    log = MLSERVER_VENV / "install.log"
    with open(log, "w") as fh:
        done = subprocess.run(
            [str(MLSERVER_VENV / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off", *wanted],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )  # nosec B603 - fixed command, packages by name
    if done.returncode != 0 or not cli.is_file():
        raise RuntimeError(f"installing MLServer failed: see {log}")
    marker.write_text("\n".join(wanted) + "\n")
    return cli


def mlserver_folder(server: str, model: str, folder: Path, port: int) -> Path:
    """MLServer's settings.json (127.0.0.1, the ports, the worker count) and model-settings.json (the MLflow
    runtime on the model folder)."""
    root = OUT / "mlserver" / server
    (root / model).mkdir(parents=True, exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": _free_port(),
        "metrics_port": _free_port(),
        "parallel_workers": MLSERVER_WORKERS[server],
        "debug": False,
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    model_settings = {
        "name": model,
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": str(folder.resolve())},
    }
    (root / model / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
    return root


def start(server: str, model: str, folder: Path, workers: int) -> tuple[subprocess.Popen, int, float]:
    """Start a server; return it, its port and the seconds from process start to ready (model loaded)."""
    kind, runtime = SERVERS[server]
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    if kind == "mlgate":
        cmd = [str(BIN / "mlgate"), "serve", "--model", str(folder), "--port", str(port)]
        cmd += ["--workers", str(workers), "--runtime", runtime]
        probe = "/ready"
        env["MLGATE_SERVE_LOG_LEVEL"] = "warning"
    elif kind == "mlflow":
        cmd = [str(BIN / "mlflow"), "models", "serve", "-m", str(folder), "--env-manager", "local"]
        cmd += ["-p", str(port)] + (["-w", str(workers)] if workers > 1 else [])
        probe = "/ping"
    else:
        cli = mlserver_bin()
        cmd = [str(cli), "start", str(mlserver_folder(server, model, folder, port))]
        probe = f"/v2/models/{model}/ready"
        env = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env["PATH"] = f"{cli.parent}{os.pathsep}{os.environ['PATH']}"
    t = time.perf_counter()
    log = open(OUT / f"{server}.log", "wb")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )  # nosec
    log.close()
    while time.perf_counter() - t < 180:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=1).status_code == 200:
                return proc, port, time.perf_counter() - t
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(
                f"{' '.join(cmd)} exited with {proc.returncode}: see {OUT / (server + '.log')}"
            )
        time.sleep(0.02)
    stop(proc)
    raise RuntimeError(f"{' '.join(cmd)} not ready after 180 s")


def request_for(server: str, model: str, rows: list[dict[str, Any]], protocol: str) -> tuple[str, bytes]:
    """Path and JSON body of one request: MLflow's /invocations for all but MLServer on its V2 protocol."""
    if SERVERS[server][0] != "mlserver" or protocol == "invocations":
        return "/invocations", json.dumps({"dataframe_records": rows}).encode()
    inputs = []
    for name in rows[0]:
        values = [r[name] for r in rows]
        text = any(isinstance(v, str) for v in values)
        inputs.append(
            {
                "name": name,
                "shape": [len(rows)],
                "datatype": "BYTES" if text else "FP64",
                "data": values,
                **({"parameters": {"content_type": "str"}} if text else {}),
            }
        )
    return (
        f"/v2/models/{model}/infer",
        json.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs}).encode(),
    )


def labels_of(answer: Any) -> list[Any]:
    """The predicted labels in a server's answer (MLflow's {"predictions": ...} or a V2 response)."""
    if isinstance(answer, dict) and "outputs" in answer:
        return list(answer["outputs"][0]["data"])
    predictions = answer["predictions"] if isinstance(answer, dict) else answer
    return [p if not isinstance(p, dict) else next(iter(p.values())) for p in predictions]


def check(
    port: int, server: str, model: str, rows: list[dict[str, Any]], expected: list[Any], protocol: str
) -> None:
    """The server answers the rows with the pipeline's own labels, or this raises."""
    path, body = request_for(server, model, rows, protocol)
    response = httpx.post(
        f"http://127.0.0.1:{port}{path}",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    if response.status_code != 200:
        raise RuntimeError(f"{server}: {path} answered {response.status_code}: {response.text[:500]}")
    got = [str(v) for v in labels_of(response.json())]
    if got != [str(v) for v in expected]:
        raise RuntimeError(f"{server}: wrong labels {got[:5]}... (expected {expected[:5]}...)")


def runtime_of(port: int) -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=5).json().get("runtime")
    except (httpx.HTTPError, ValueError):
        return None


def memory(proc: subprocess.Popen) -> dict[str, float]:
    """RSS of the server's process tree in MiB: total, and per worker (the largest process with no child)."""
    parent = psutil.Process(proc.pid)
    procs = [parent, *parent.children(recursive=True)]
    rss = {}
    for p in procs:
        try:
            rss[p.pid] = p.memory_info().rss / 2**20
        except psutil.Error:
            pass
    leaves = [p.pid for p in procs if p.pid in rss and not p.children()] or [parent.pid]
    return {
        "processes": len(rss),
        "total_mib": round(sum(rss.values()), 1),
        "per_worker_mib": round(max(rss.get(p, 0) for p in leaves), 1),
    }


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def image_size(tag: str | None) -> float | None:
    if not tag:
        return None
    done = subprocess.run(
        ["docker", "image", "inspect", tag, "--format", "{{.Size}}"], capture_output=True, text=True
    )  # nosec
    return round(int(done.stdout.strip()) / 1e6, 1) if done.returncode == 0 else None


# --- the run ---------------------------------------------------------------------------------------------


def instances(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(label, server, workers): each server with one worker, and --workers N variants of mlgate, mlflow."""
    out = [(s, s, 1) for s in args.servers]
    if args.workers > 1:
        out += [
            (f"{s} ({args.workers} workers)", s, args.workers)
            for s in args.servers
            if SERVERS[s][0] != "mlserver"
        ]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    folders = build_models(args.models)
    servers = instances(args)
    results: dict[str, Any] = {
        "machine": machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "in_process": [],
        "starts": [],
        "cells": [],
        "failures": [],
        "image_mb": image_size(args.image),
    }
    samples = {n: sample_rows(n) for n in args.rows}
    samples[0] = sample_rows(20)  # the answers are checked on these too
    for model in args.models:
        import pandas as pd

        from mlgate.runtime import load_runtime

        pipeline = load_runtime(folders[model], choice="sklearn").pipeline
        truth = {n: list(pipeline.predict(pd.DataFrame(rows))) for n, rows in samples.items()}
        onnx = has_onnx(folders[model])
        for n in args.rows:
            entry = {"model": model, "rows": n, "load_before": load_avg()}
            entry.update(in_process(folders[model], samples[n], args.repeat, args.rounds))
            results["in_process"].append(entry)
            print(json.dumps({"in_process": entry}), flush=True)
        skip = set()
        for r, order in rotations([s[0] for s in servers], args.rounds):
            for label in order:
                if label in skip:
                    continue
                _, server, workers = next(s for s in servers if s[0] == label)
                if server == "mlgate-onnx" and not onnx:
                    results["failures"].append({"model": model, "server": label, "error": "no ONNX model"})
                    skip.add(label)
                    continue
                try:
                    record_server(
                        args, results, model, folders[model], r, label, server, workers, samples, truth
                    )
                except Exception as exc:  # a server that cannot start or answers wrong: say so, go on
                    msg = f"{type(exc).__name__}: {exc}"
                    print(f"{model} / {label}: {msg}", file=sys.stderr, flush=True)
                    results["failures"].append({"model": model, "server": label, "round": r, "error": msg})
                    skip.add(label)
    return results


def record_server(
    args: argparse.Namespace,
    results: dict[str, Any],
    model: str,
    folder: Path,
    r: int,
    label: str,
    server: str,
    workers: int,
    samples: dict[int, list[dict[str, Any]]],
    truth: dict[int, list[Any]],
) -> None:
    """One round of one server: cold start, answers checked, RSS, then every (rows, concurrency) cell."""
    load_before = load_avg()
    proc, port, ready_s = start(server, model, folder, workers)
    try:
        for n, rows in samples.items():
            check(port, server, model, rows, truth[n], args.mlserver_protocol)
        runtime = runtime_of(port) if SERVERS[server][0] == "mlgate" else SERVERS[server][1]
        if runtime != SERVERS[server][1]:
            raise RuntimeError(f"{label}: /metadata says runtime {runtime!r}, not {SERVERS[server][1]!r}")
        requests = {n: request_for(server, model, samples[n], args.mlserver_protocol) for n in args.rows}
        path, body = requests[args.rows[0]]
        load(port, body, 1, args.warmup, path)
        started = {
            "model": model,
            "server": label,
            "round": r,
            "ready_s": round(ready_s, 3),
            "runtime": runtime,
            "load_before": load_before,
            **memory(proc),
        }
        for n in args.rows:
            for c in args.concurrency:
                path, body = requests[n]
                cell = {"model": model, "server": label, "round": r, "rows": n, "concurrency": c}
                cell["load_before"] = load_avg()
                cell.update(load(port, body, c, args.duration, path))
                results["cells"].append(cell)
                print(json.dumps(cell), flush=True)
        after = memory(proc)
        started["total_mib_after_load"] = after["total_mib"]
        started["per_worker_mib_after_load"] = after["per_worker_mib"]
        results["starts"].append(started)
        print(json.dumps(started), flush=True)
    finally:
        stop(proc)


# --- the tables ------------------------------------------------------------------------------------------

# which in-process time a server's overhead is counted from: the runtime it runs
OWN_PREDICT = {"mlgate-onnx": "onnx"}


def _base(label: str) -> str:
    return label.split(" (")[0]


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Spreads over the rounds per (model, server, rows, concurrency) and per (model, server)."""
    cells: dict[tuple, list[dict]] = {}
    for c in results["cells"]:
        cells.setdefault((c["model"], c["server"], c["rows"], c["concurrency"]), []).append(c)
    table = []
    for (model, server, rows, conc), cs in cells.items():
        table.append(
            {
                "model": model,
                "server": server,
                "rows": rows,
                "concurrency": conc,
                "rps": spread([c["rps"] for c in cs]),
                "p50_ms": spread([c["p50_ms"] for c in cs]),
                "p99_ms": spread([c["p99_ms"] for c in cs]),
                "errors": sum(c["errors"] for c in cs),
                "load": spread([c["load_before"] for c in cs]),
            }
        )
    starts: dict[tuple, list[dict]] = {}
    for s in results["starts"]:
        starts.setdefault((s["model"], s["server"]), []).append(s)
    servers = [
        {
            "model": model,
            "server": server,
            "ready_s": spread([s["ready_s"] for s in ss]),
            "per_worker_mib": spread([s["per_worker_mib"] for s in ss]),
            "per_worker_mib_after_load": spread([s["per_worker_mib_after_load"] for s in ss]),
            "total_mib": spread([s["total_mib"] for s in ss]),
            "processes": ss[0]["processes"],
            "load": spread([s["load_before"] for s in ss]),
        }
        for (model, server), ss in starts.items()
    ]
    for row in table:
        inproc = next(
            (i for i in results["in_process"] if i["model"] == row["model"] and i["rows"] == row["rows"]),
            None,
        )
        own = OWN_PREDICT.get(_base(row["server"]), "sklearn_pipeline")
        if row["concurrency"] == 1 and inproc and inproc.get(own) and row["p50_ms"]:
            row["predict_ms"] = inproc[own]["ms"]["median"]
            row["overhead_ms"] = round(row["p50_ms"]["median"] - row["predict_ms"], 2)
    return {"cells": table, "servers": servers}


def _cell(summary: dict[str, Any], model: str, server: str, rows: int, conc: int) -> dict[str, Any] | None:
    return next(
        (
            c
            for c in summary["cells"]
            if (c["model"], c["server"], c["rows"], c["concurrency"]) == (model, server, rows, conc)
        ),
        None,
    )


def _median(s: dict[str, Any] | None, key: str) -> float | None:
    return s[key]["median"] if s and s.get(key) else None


def _mlserver_rps(summary: dict[str, Any], model: str, rows: int, conc: int) -> float | None:
    """The better of MLServer's configurations (median req/s): the one to beat."""
    values = [_median(_cell(summary, model, s, rows, conc), "rps") for s in MLSERVER_WORKERS]
    return max((v for v in values if v), default=None)


def targets(results: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """The issue 16 targets (default model, 1-row requests), met or missed, from the medians."""
    lines = ["| target (issue 16) | measured | result |", "|---|---|---|"]
    model = "default" if "default" in {c["model"] for c in summary["cells"]} else None
    inproc = next((i for i in results["in_process"] if i["model"] == model and i["rows"] == 1), None)

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("met" if ok else "**missed**")

    if inproc and inproc.get("onnx"):
        x = inproc["sklearn_pipeline"]["ms"]["median"] / inproc["onnx"]["ms"]["median"]
        lines.append(
            f"| in-process 1-row predict, ONNX Runtime ≥ 10x the scikit-learn pipeline | {x:.1f}x "
            f"({inproc['onnx']['ms']['median']:.3f} vs {inproc['sklearn_pipeline']['ms']['median']:.3f} ms) "
            f"| {verdict(x >= 10)} |"
        )
    for conc, want in ((1, 5), (16, 10)):
        ours = _median(_cell(summary, model, "mlgate-onnx", 1, conc), "rps")
        theirs = _median(_cell(summary, model, "mlflow", 1, conc), "rps")
        if ours and theirs:
            lines.append(
                f"| req/s at c={conc}, ONNX ≥ {want}x `mlflow models serve` | {ours / theirs:.2f}x "
                f"({ours:,.0f} vs {theirs:,.0f}) | {verdict(ours / theirs >= want)} |"
            )
        other = _mlserver_rps(summary, model, 1, conc)
        if ours and other:
            lines.append(
                f"| req/s at c={conc}, ONNX ahead of MLServer (its better configuration) "
                f"| {ours / other:.2f}x ({ours:,.0f} vs "
                f"{other:,.0f}) | {verdict(ours > other)} |"
            )
    ours_c, theirs_c = _cell(summary, model, "mlgate-onnx", 1, 1), _cell(summary, model, "mlflow", 1, 1)
    if ours_c and theirs_c and "overhead_ms" in ours_c and "overhead_ms" in theirs_c:
        a, b = ours_c["overhead_ms"], theirs_c["overhead_ms"]
        lines.append(
            f"| overhead per request ≤ 1/5 of MLflow's | {a:.2f} vs {b:.2f} ms"
            + (f" ({a / b:.2f})" if b > 0 else "")
            + f" | {verdict(a <= b / 5)} |"
        )
    srv = next((s for s in summary["servers"] if s["model"] == model and s["server"] == "mlgate-onnx"), None)
    if srv:
        ready, rss = srv["ready_s"], srv["per_worker_mib_after_load"]
        lines.append(
            f"| ready < 1.5 s | {fmt(ready, 2)} s (min / median / max) | {verdict(ready['max'] < 1.5)} |"
        )
        lines.append(
            f"| RSS per worker < 150 MiB | {fmt(rss)} MiB after load | {verdict(rss['max'] < 150)} |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The tables for bench/README.md: min / median / max over the rounds, ratios of the medians."""
    summary = summarize(results)
    load_all = spread(
        [c["load_before"] for c in results["cells"]] + [s["load_before"] for s in results["starts"]]
    )
    out = [
        f"{results['machine']['cores']} cores, Python {results['machine']['python']}; "
        f"{results['args']['rounds']} rounds, {results['args']['duration']} s per cell; load average before "
        f"each cell and start, min / median / max: {fmt(load_all, 2)}.",
        "",
        "In-process predict, ms per call (median of each block of calls; min / median / max of the blocks):",
        "",
        "| model | rows | ONNX Runtime | scikit-learn runtime (from columns) | scikit-learn pipeline "
        "(DataFrame) | pipeline / ONNX |",
        "|---|---:|---|---|---|---:|",
    ]
    for i in results["in_process"]:
        onnx = i.get("onnx", {}).get("ms")
        out.append(
            f"| {i['model']} | {i['rows']} | {fmt(onnx, 3)} | {fmt(i['sklearn_runtime']['ms'], 3)} "
            f"| {fmt(i['sklearn_pipeline']['ms'], 3)} "
            f"| {ratio(i['sklearn_pipeline']['ms']['median'], onnx['median'] if onnx else None)} |"
        )
    out += [
        "",
        "Requests per second and latency (min / median / max over the rounds; ratios of the medians):",
        "",
        "| model | rows | conc. | server | req/s | p50 ms | p99 ms | errors | load avg "
        "| vs mlflow | vs MLServer (better) |",
        "|---|---:|---:|---|---|---|---|---:|---|---:|---:|",
    ]
    order = {s: i for i, s in enumerate(SERVERS)}
    for c in sorted(
        summary["cells"],
        key=lambda c: (
            c["model"],
            c["rows"],
            c["concurrency"],
            order.get(_base(c["server"]), 99),
            c["server"],
        ),
    ):
        mlflow = _median(_cell(summary, c["model"], "mlflow", c["rows"], c["concurrency"]), "rps")
        mlserver = _mlserver_rps(summary, c["model"], c["rows"], c["concurrency"])
        out.append(
            f"| {c['model']} | {c['rows']} | {c['concurrency']} | {LABELS.get(c['server'], c['server'])} "
            f"| {fmt(c['rps'])} | {fmt(c['p50_ms'])} | {fmt(c['p99_ms'])} | {c['errors']} "
            f"| {fmt(c['load'], 2)} | {ratio(c['rps']['median'], mlflow)} "
            f"| {ratio(c['rps']['median'], mlserver)} |"
        )
    out += [
        "",
        "Overhead per request: p50 at concurrency 1 (median) minus the in-process predict (median) of the "
        "runtime the server runs (ONNX Runtime for mlgate's ONNX, else the scikit-learn pipeline):",
        "",
        "| model | rows | server | p50 ms | in-process ms | overhead ms | vs MLflow's overhead |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for c in summary["cells"]:
        if "overhead_ms" not in c:
            continue
        theirs = _cell(summary, c["model"], "mlflow", c["rows"], 1)
        base = theirs.get("overhead_ms") if theirs else None
        out.append(
            f"| {c['model']} | {c['rows']} | {LABELS.get(c['server'], c['server'])} "
            f"| {c['p50_ms']['median']:.2f} "
            f"| {c['predict_ms']:.3f} | {c['overhead_ms']:.2f} "
            + (f"| {c['overhead_ms'] / base:.2f} |" if base and base > 0 else "| - |")
        )
    out += [
        "",
        "Start-up and memory (min / median / max over the rounds): ready = process start to the model "
        "answering its readiness probe; RSS per worker = the largest process of the tree without a child,"
        " after start-up and after the load; total = the whole tree after start-up:",
        "",
        "| model | server | ready s | RSS per worker MiB, started | after load | total MiB | processes |",
        "|---|---|---|---|---|---|---:|",
    ]
    for s in summary["servers"]:
        out.append(
            f"| {s['model']} | {LABELS.get(s['server'], s['server'])} | {fmt(s['ready_s'], 2)} "
            f"| {fmt(s['per_worker_mib'])} | {fmt(s['per_worker_mib_after_load'])} | {fmt(s['total_mib'])} "
            f"| {s['processes']} |"
        )
    out += ["", *targets(results, summary)]
    if results.get("failures"):
        out += ["", "Not measured:", ""]
        out += [f"- {f['model']} / {f['server']}: {f['error']}" for f in results["failures"]]
    if results.get("image_mb"):
        out += ["", f"Serving image: {results['image_mb']} MB (docker image inspect)."]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    many = {"nargs": "+", "action": "extend", "type": split_list, "default": None}
    parser.add_argument("--models", help=f"{', '.join(MODELS)} [default: default]", **many)
    parser.add_argument("--servers", help=f"{', '.join(SERVERS)} [default: all]", **many)
    parser.add_argument("--rows", help="rows per request [default: 1]", **many)
    parser.add_argument("--concurrency", help="connections [default: 1,16]", **many)
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of load per cell.")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds (a cold start each).")
    parser.add_argument("--warmup", type=float, default=1.0, help="Seconds of load before a server's cells.")
    parser.add_argument(
        "--workers", type=int, default=1, help="> 1: also mlgate and mlflow with this many workers."
    )
    parser.add_argument("--repeat", type=int, default=200, help="In-process predict calls per block.")
    parser.add_argument("--mlserver-protocol", choices=["v2", "invocations"], default="v2")
    parser.add_argument("--image", default=None, help="Serving image tag to report the size of.")
    parser.add_argument("--skip-mlflow", action="store_true", help="Leave out mlflow models serve.")
    args = parser.parse_args()
    args.models = _flat(args.models) or ["default"]
    args.servers = _flat(args.servers) or list(SERVERS)
    args.rows = [int(v) for v in _flat(args.rows) or [1]]
    args.concurrency = [int(v) for v in _flat(args.concurrency) or [1, 16]]
    for value, allowed, flag in ((args.models, MODELS, "--models"), (args.servers, SERVERS, "--servers")):
        unknown = set(value) - set(allowed)
        if unknown:
            parser.error(f"{flag}: unknown {', '.join(sorted(unknown))} (choose from {', '.join(allowed)})")
    if args.skip_mlflow:
        args.servers = [s for s in args.servers if s != "mlflow"]
    OUT.mkdir(parents=True, exist_ok=True)
    results = run(args)
    results["summary"] = summarize(results)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    (OUT / "RESULTS.md").write_text(markdown(results) + "\n")
    print(markdown(results))


def _flat(values: list[list[str]] | None) -> list[str]:
    return [v for group in values or [] for v in group]


if __name__ == "__main__":
    main()
