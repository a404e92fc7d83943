"""Serving benchmark: this service vs `mlflow models serve` (its default, and the same worker count) vs the
in-process predict, on the default model and a light and a heavy one behind the same preprocessing.

Requests of 1 and 100 rows at concurrency 1 and 16, from a small keep-alive asyncio HTTP client (so the load
generator costs little next to the servers). Reports req/s, p50/p99 latency, errors, overhead per request
(p50 at concurrency 1 minus the in-process predict), cold start to ready, memory, and the image size.

    .venv/bin/python bench/serving/run.py                       # full run (take figures on a quiet machine)
    .venv/bin/python bench/serving/run.py --duration 2 --models light --rows 1 --concurrency 1   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess  # nosec B404 - starts the servers under test
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OUT = REPO / "bench" / "results" / "serving"
MODELS = {
    "default": None,  # the config's estimator
    "light": ("sklearn.linear_model.LogisticRegression", {"max_iter": 1000}),
    "heavy": (
        "sklearn.ensemble.RandomForestClassifier",
        {"n_estimators": 300, "random_state": 42, "n_jobs": 1},
    ),
}


def build_models(names: list[str]) -> dict[str, Path]:
    """Fit each model on the penguins data behind the default preprocessing; save as MLflow model folders."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from mlgate import data as d
    from mlgate.config import EstimatorConfig, load_config
    from mlgate.features import build_pipeline
    from mlgate.io import read_table
    from mlgate.train import trusted_types

    cfg = load_config(REPO / "config" / "pipeline.yaml")
    typed, _ = d.coerce_types(read_table(REPO / cfg.data.source), cfg.data)
    X, y = typed[cfg.data.feature_names], typed[cfg.data.target]
    folders = {}
    for name in names:
        folder = OUT / "models" / name
        if not (folder / "MLmodel").is_file():
            spec = (
                cfg.estimator
                if MODELS[name] is None
                else EstimatorConfig(**{"class": MODELS[name][0], "params": MODELS[name][1]})
            )
            model = build_pipeline(cfg.data, spec).fit(X, y)
            mlflow.sklearn.save_model(
                model,
                str(folder),
                serialization_format="skops",
                skops_trusted_types=trusted_types(model),
                signature=infer_signature(X, model.predict(X.head(20))),
                input_example=X.head(5),
            )
        folders[name] = folder
    return folders


def sample_rows(n: int) -> list[dict[str, Any]]:
    import pandas as pd

    from mlgate.config import load_config

    cfg = load_config(REPO / "config" / "pipeline.yaml")
    df = pd.read_csv(REPO / cfg.data.source)[cfg.data.feature_names].dropna()
    df = pd.concat([df] * (n // len(df) + 1)).head(n)
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in df.to_dict(orient="records")]


def in_process_ms(folder: Path, rows: list[dict[str, Any]], repeat: int) -> float:
    """Median time of the pipeline's own predict on a DataFrame of the rows (the limit)."""
    import pandas as pd

    from mlgate.serving.model import load_served_model

    model = load_served_model(folder)
    X = pd.DataFrame(rows)
    model.pipeline.predict(X)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        model.pipeline.predict(X)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, folder: Path, workers: int | None) -> tuple[subprocess.Popen, int, float]:
    """Start a server; return it, its port and the seconds from process start to ready."""
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    if kind == "mlgate":
        cmd = [
            str(BIN / "mlgate"),
            "serve",
            "--model",
            str(folder),
            "--port",
            str(port),
            "--workers",
            str(workers or 1),
        ]
        probe = "/ready"
        env["MLGATE_SERVE_LOG_LEVEL"] = "warning"
    else:
        cmd = [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            str(folder),
            "--env-manager",
            "local",
            "-p",
            str(port),
        ]
        cmd += ["-w", str(workers)] if workers else []
        probe = "/ping"
    t = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )  # nosec B603
    while time.perf_counter() - t < 180:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=1).status_code == 200:
                return proc, port, time.perf_counter() - t
        except httpx.TransportError:
            time.sleep(0.05)
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
    raise RuntimeError(f"{' '.join(cmd)} not ready after 180 s")


def memory(proc: subprocess.Popen) -> dict[str, float]:
    """RSS of the server's process tree in MiB: total, and per worker (the processes that serve)."""
    parent = psutil.Process(proc.pid)
    procs = [parent, *parent.children(recursive=True)]
    rss = {p.pid: p.memory_info().rss / 2**20 for p in procs}
    leaves = [p.pid for p in procs if not p.children()] or [parent.pid]
    return {"total_mib": round(sum(rss.values()), 1), "per_worker_mib": round(max(rss[p] for p in leaves), 1)}


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def image_size(tag: str | None) -> float | None:
    if not tag:
        return None
    done = subprocess.run(
        ["docker", "image", "inspect", tag, "--format", "{{.Size}}"], capture_output=True, text=True
    )  # nosec
    return round(int(done.stdout.strip()) / 1e6, 1) if done.returncode == 0 else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    folders = build_models(args.models)
    servers = [("mlgate", 1), ("mlflow", None)]
    if args.workers > 1:
        servers += [("mlgate", args.workers), ("mlflow", args.workers)]
    if args.skip_mlflow:
        servers = [s for s in servers if s[0] == "mlgate"]
    results: dict[str, Any] = {"cells": [], "servers": [], "image_mb": image_size(args.image)}
    bodies = {n: json.dumps({"dataframe_records": sample_rows(n)}).encode() for n in args.rows}
    for model in args.models:
        limit = {n: in_process_ms(folders[model], sample_rows(n), args.repeat) for n in args.rows}
        for n in args.rows:
            results["cells"].append(
                {
                    "model": model,
                    "server": "in-process",
                    "rows": n,
                    "predict_ms": round(limit[n], 3),
                    "rps_limit": round(1000 / limit[n], 1),
                }
            )
        for kind, workers in servers:
            label = f"{kind} ({workers or 'default'} worker{'s' if (workers or 1) > 1 else ''})"
            proc, port, ready_s = start(kind, folders[model], workers)
            try:
                load(port, bodies[args.rows[0]], 1, 0.5)  # warm-up
                results["servers"].append(
                    {"model": model, "server": label, "ready_s": round(ready_s, 2), **memory(proc)}
                )
                for n in args.rows:
                    for c in args.concurrency:
                        cell = {
                            "model": model,
                            "server": label,
                            "rows": n,
                            "concurrency": c,
                            **load(port, bodies[n], c, args.duration),
                        }
                        if c == 1 and cell["p50_ms"] is not None:
                            cell["overhead_ms"] = round(cell["p50_ms"] - limit[n], 2)
                        results["cells"].append(cell)
                        print(json.dumps(cell), flush=True)
            finally:
                stop(proc)
    return results


def markdown(results: dict[str, Any]) -> str:
    """The RESULTS tables for bench/README.md."""
    lines = [
        "| model | server | rows | conc. | req/s | p50 ms | p99 ms | errors | overhead ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in results["cells"]:
        if c["server"] == "in-process":
            lines.append(
                f"| {c['model']} | in-process predict | {c['rows']} | - | {c['rps_limit']} "
                f"| {c['predict_ms']} | - | - | 0 |"
            )
        else:
            lines.append(
                f"| {c['model']} | {c['server']} | {c['rows']} | {c['concurrency']} | {c['rps']} "
                f"| {c['p50_ms']} | {c['p99_ms']} "
                f"| {c['errors']} | {c.get('overhead_ms', '')} |"
            )
    lines += ["", "| model | server | ready s | memory total MiB | per worker MiB |", "|---|---|---|---|---|"]
    lines += [
        f"| {s['model']} | {s['server']} | {s['ready_s']} | {s['total_mib']} | {s['per_worker_mib']} |"
        for s in results["servers"]
    ]
    if results.get("image_mb"):
        lines += ["", f"Serving image: {results['image_mb']} MB (docker image inspect)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rows", nargs="+", type=int, default=[1, 100])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--duration", type=float, default=15.0, help="Seconds of load per cell.")
    parser.add_argument(
        "--workers", type=int, default=2, help="Worker count for the same-workers comparison."
    )
    parser.add_argument("--repeat", type=int, default=200, help="In-process predict repetitions.")
    parser.add_argument("--image", default=None, help="Serving image tag to report the size of.")
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()
    results = run(args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    (OUT / "RESULTS.md").write_text(markdown(results) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
