"""Shadow scoring's cost to the live path: two `mlgate serve` processes on the default model, one with
`--shadow` (the light model as challenger, in its own lowest-priority process) and one without, loaded in turn
(interleaved rounds, same request, same concurrency) so that both see the same machine. Reports each round's
p50/p99 and req/s, min/median/max over the rounds, the median p50 ratio, the machine's load average around
each round, the serving process's own CPU time per request (the shadow process excluded: what the live path
pays, whatever else the machine runs), and the shadow's scored/dropped counts.

    .venv/bin/python bench/serving/shadow.py                          # 5 rounds of 10 s at concurrency 16
    .venv/bin/python bench/serving/shadow.py --rounds 2 --duration 3  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess  # nosec B404 - starts the servers under test
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from run import BIN, OUT, _free_port, build_models, load, sample_rows, stop


def start(folder: Path, shadow: Path | None) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    cmd = [str(BIN / "mlgate"), "serve", "--model", str(folder), "--port", str(port)]
    cmd += ["--shadow", str(shadow)] if shadow else []
    env = {**os.environ, "MLGATE_SERVE_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(  # nosec B603
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            if not shadow or "mlgate_shadow_model_info{" in metrics:
                return proc, port
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{' '.join(cmd)} not ready")


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": round(statistics.median(values), 2), "max": max(values)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    folders = build_models(["default", "light"])
    body = json.dumps({args.format: sample_rows(args.rows)}).encode()
    path = "/predict" if args.format == "records" else "/invocations"
    servers = {
        "without shadow": start(folders["default"], None),
        "with shadow": start(folders["default"], folders["light"]),
    }
    rounds: list[dict[str, Any]] = []
    try:
        for _, port in servers.values():
            load(port, body, args.concurrency, 2.0, path)  # warm-up
        for i in range(args.rounds):
            order = list(servers) if i % 2 == 0 else list(reversed(servers))
            for label in order:
                before = os.getloadavg()[0]
                server = psutil.Process(servers[label][0].pid)  # the serving process alone, not the shadow
                cpu = sum(server.cpu_times()[:2])
                cell = load(servers[label][1], body, args.concurrency, args.duration, path)
                cpu_ms = (sum(server.cpu_times()[:2]) - cpu) * 1000 / max(cell["requests"], 1)
                cell.update(
                    server_cpu_ms_per_request=round(cpu_ms, 2),
                    load1_before=round(before, 2),
                    load1_after=round(os.getloadavg()[0], 2),
                )
                rounds.append({"round": i, "server": label, **cell})
                print(json.dumps(rounds[-1]), flush=True)
        metrics = httpx.get(f"http://127.0.0.1:{servers['with shadow'][1]}/metrics").text
    finally:
        for proc, _ in servers.values():
            stop(proc)
    summary: dict[str, Any] = {
        "concurrency": args.concurrency,
        "rows": args.rows,
        "route": path,
        "rounds": rounds,
    }
    for label in servers:
        mine = [r for r in rounds if r["server"] == label]
        summary[label] = {
            "p50_ms": spread([r["p50_ms"] for r in mine]),
            "p99_ms": spread([r["p99_ms"] for r in mine]),
            "rps": spread([r["rps"] for r in mine]),
            "server_cpu_ms_per_request": spread([r["server_cpu_ms_per_request"] for r in mine]),
            "errors": sum(r["errors"] for r in mine),
        }
    summary["p50_ratio_of_medians"] = round(
        summary["with shadow"]["p50_ms"]["median"] / summary["without shadow"]["p50_ms"]["median"], 3
    )
    summary["shadow"] = {
        k: float(v)
        for k, v in re.findall(r'mlgate_shadow_requests_total\{outcome="(\w+)"\} ([0-9.e+]+)', metrics)
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of load per server per round.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--format", choices=["dataframe_records", "records"], default="dataframe_records")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    result = run(args)
    (OUT / f"shadow-{args.format}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
