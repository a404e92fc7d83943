"""Request limits benchmark: `mlgate serve` before (the sources of a git ref, main by default) and after (this
checkout), each loaded with 8 concurrent maximum-size bodies (a CSV of MLGATE_SERVE_MAX_ROWS rows padded with
an ignored column to just under MLGATE_SERVE_MAX_BODY_BYTES) and then with 8 concurrent over-limit bodies (the
issue's 5 MiB CSV of one-character rows), while a client probes /health and /ready in turn.

Each server first scores one maximum-size body, so that its RSS at rest includes what the first large request
loads. Reported per server and load: the server's peak RSS over its RSS at rest, the probes' latency (p50 /
p99 / max) while the bodies are in flight, the seconds the 8 took, their statuses, and the 1-minute load
average before. The order of the servers rotates each round (bench/common.py: rotations); figures are min /
median / max over the rounds.

    .venv/bin/python bench/serving/limits.py                  # 3 rounds, main vs this checkout
    .venv/bin/python bench/serving/limits.py --rounds 1 --ref HEAD~3

Results: bench/results/serving-limits/results.json and RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess  # nosec B404 - starts the servers under test and git archive
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "bench" / "serving"))

from common import fmt, load_avg, machine, rotations, spread  # noqa: E402
from run import build_models, sample_rows  # noqa: E402

OUT = REPO / "bench" / "results" / "serving-limits"
BIN = Path(sys.executable).parent
MAX_BODY = 5 * 1024 * 1024  # the defaults of ServingSettings, the same before and after
MAX_ROWS = 10_000
CSV = {"content-type": "text/csv"}


def maximum_body() -> bytes:
    """MAX_ROWS rows padded with an ignored column to just under MAX_BODY bytes."""
    import pandas as pd

    rows = pd.DataFrame(sample_rows(MAX_ROWS))
    pad = (MAX_BODY - len(rows.to_csv(index=False).encode()) - 64) // MAX_ROWS - 1
    return rows.assign(note="n" * pad).to_csv(index=False).encode()


def over_limit_body() -> bytes:
    return b"island\n" + b"a\n" * ((MAX_BODY - 64) // 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sources(ref: str, into: Path) -> Path:
    """The ``src`` folder of ``ref``, extracted under ``into``."""
    archive = subprocess.run(  # nosec B603 B607 - fixed git command
        ["git", "-C", str(REPO), "archive", ref, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)  # nosec B603 B607
    return into / "src"


def start(src: Path, model: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(src), "MLGATE_SERVE_TIMEOUT_SECONDS": "300"}
    with log.open("w") as out:
        proc = subprocess.Popen(  # nosec B603 - fixed argument list
            [str(BIN / "mlgate"), "serve", "--model", str(model), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server on {src} not ready: see {log}")


def load(url: str, pid: int, body: bytes, n: int) -> dict[str, Any]:
    """``n`` concurrent POSTs of ``body`` while /health and /ready are probed; peak RSS over RSS before."""
    process = psutil.Process(pid)
    rest = process.memory_info().rss
    peak, done = rest, threading.Event()
    probes: list[float] = []

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)

    def probe() -> None:
        with httpx.Client(timeout=120) as client:
            while not done.is_set():
                for path in ("/health", "/ready"):
                    start = time.perf_counter()
                    client.get(f"{url}{path}")
                    probes.append(time.perf_counter() - start)
                time.sleep(0.01)

    threads = [threading.Thread(target=sample), threading.Thread(target=probe)]
    load_before = load_avg()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    with ThreadPoolExecutor(n) as pool:
        post = lambda _: httpx.post(  # noqa: E731
            f"{url}/invocations", content=body, headers=CSV, timeout=600
        )
        statuses = sorted(r.status_code for r in pool.map(post, range(n)))
    seconds = time.perf_counter() - start
    done.set()
    for thread in threads:
        thread.join()
    quantiles = statistics.quantiles(probes, n=100, method="inclusive") if len(probes) > 1 else probes * 99
    return {
        "load": load_before,
        "seconds": seconds,
        "statuses": statuses,
        "rss_rest_mb": rest / 1e6,
        "rss_peak_over_rest_mb": (peak - rest) / 1e6,
        "probes": len(probes),
        "probe_p50_ms": statistics.median(probes) * 1000 if probes else None,
        "probe_p99_ms": quantiles[98] * 1000 if probes else None,
        "probe_max_ms": max(probes) * 1000 if probes else None,
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        "| server | bodies | peak RSS over rest (MB) | probe p50 (ms) | probe p99 (ms) | probe max (ms) "
        "| 8 took (s) | statuses | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, cells in results["cells"].items():
        server, bodies = key.split("/")

        def cell(field: str, digits: int = 1) -> str:
            return fmt(spread([c[field] for c in cells]), digits)

        statuses = sorted({",".join(map(str, sorted(set(c["statuses"])))) for c in cells})
        lines.append(
            f"| {server} | {bodies} | {cell('rss_peak_over_rest_mb')} | {cell('probe_p50_ms')} "
            f"| {cell('probe_p99_ms')} | {cell('probe_max_ms')} | {cell('seconds', 2)} "
            f"| {' '.join(statuses)} "
            f"| {cell('load', 2)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ref", default="main", help="the git ref of the 'before' sources")
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args()
    model = build_models(["default"])["default"]
    bodies = {"maximum": maximum_body(), "over-limit": over_limit_body()}
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(), "args": vars(args), "cells": {}}
    with tempfile.TemporaryDirectory(prefix="mlgate-limits-") as tmp:
        srcs = {"before": sources(args.ref, Path(tmp)), "after": REPO / "src"}
        for r, order in rotations(list(srcs), args.rounds):
            for name in order:
                proc, url = start(srcs[name], model, OUT / f"{name}.log")
                try:  # one maximum body first: the RSS at rest includes what the first big request loads
                    httpx.post(f"{url}/invocations", content=bodies["maximum"], headers=CSV, timeout=600)
                    for kind, body in bodies.items():
                        cell = load(url, proc.pid, body, args.requests)
                        results["cells"].setdefault(f"{name}/{kind}", []).append(cell)
                        print(f"round {r} {name} {kind}: {json.dumps(cell)}", flush=True)
                finally:
                    proc.kill()
                    proc.wait(10)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / "RESULTS.md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
