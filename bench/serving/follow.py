"""Live alias under load: `mlgate serve --model models:/bench-follow@champion --follow` at concurrency 16 for
30 s while `champion` moves v1 -> v2 (another estimator), then to v3 (an incompatible signature: refused),
then back to v1. Every response's X-Model-Version is recorded with its start and end time.

Reports errors, responses per version, how long each move took to reach the responses, whether any request
that started after the first answer of a new version was answered by the old one, latency around the swaps,
and the reload counters of /metrics. The registry is a SQLite store in a temporary folder.

    .venv/bin/python bench/serving/follow.py                     # 30 s at concurrency 16
    .venv/bin/python bench/serving/follow.py --duration 12 --concurrency 4   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess  # nosec B404 - starts the server under test
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from run import BIN, OUT, _free_port, build_models, sample_rows, stop

NAME = "bench-follow"


def register_versions(store: Path) -> dict[str, str]:
    """v1 the default model, v2 the light one, v3 the default one with a new required column."""
    import mlflow
    import pandas as pd
    from mlflow.models import Model
    from mlflow.types.schema import ColSpec, Schema

    from mlgate.serving.model import load_served_model
    from mlgate.train import trusted_types

    folders = build_models(["default", "light"])
    mlflow.set_tracking_uri(f"sqlite:///{store / 'registry.db'}")
    mlflow.set_experiment(NAME)
    example = pd.DataFrame(sample_rows(5))
    versions = {}
    for key, folder, wider in (("v1", "default", False), ("v2", "light", False), ("v3", "default", True)):
        signature = Model.load(str(folders[folder])).signature
        if wider:
            inputs = Schema([*signature.inputs.inputs, ColSpec("long", "year", required=True)])
            signature = type(signature)(inputs=inputs, outputs=signature.outputs)
        pipeline = load_served_model(folders[folder]).pipeline
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=signature,
                input_example=example.assign(year=2008) if wider else example,
                serialization_format="skops",
                skops_trusted_types=trusted_types(pipeline),
                registered_model_name=NAME,
            )
        versions[key] = str(info.registered_model_version)
    return versions


async def _worker(port: int, request: bytes, stop_at: float, t0: float, out: list[tuple]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
            fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
            body = await reader.readexactly(int(fields[b"content-length"]))
            end = time.perf_counter()
            version = fields.get(b"x-model-version", b"").decode()
            in_body = json.loads(body).get("model_version") if status == 200 else None
            out.append((start - t0, end - t0, status, version, in_body))
    finally:
        writer.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from mlflow import MlflowClient

    store = Path(tempfile.mkdtemp(prefix="mlgate-bench-follow-"))
    versions = register_versions(store)
    client = MlflowClient()
    client.set_registered_model_alias(NAME, "champion", versions["v1"])
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'registry.db'}",
        "MLGATE_SERVE_FOLLOW_SECONDS": str(args.poll),
        "MLGATE_SERVE_LOG_LEVEL": "info",
    }
    cmd = [
        str(BIN / "mlgate"),
        "serve",
        "--model",
        f"models:/{NAME}@champion",
        "--follow",
        "--port",
        str(port),
    ]
    log = (OUT / "follow-server.log").open("w")
    proc = subprocess.Popen(  # nosec B603
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the server did not get ready")
            time.sleep(0.2)
        while httpx.get(f"{url}/metadata").json()["follow"]["registry"] != "reachable":  # first check done
            if time.monotonic() > deadline:
                raise RuntimeError("the follower never reached the registry")
            time.sleep(0.2)
        body = json.dumps({"records": sample_rows(1)}).encode()
        request = (
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        answers: list[tuple] = []
        moves: list[tuple[float, str]] = []
        d = args.duration
        plan = [(d * 4 / 15, versions["v2"]), (d * 8 / 15, versions["v3"]), (d * 12 / 15, versions["v1"])]
        load_before = os.getloadavg()

        async def main() -> None:
            t0 = time.perf_counter()
            workers = [
                asyncio.create_task(_worker(port, request, t0 + d, t0, answers))
                for _ in range(args.concurrency)
            ]
            for at, version in plan:
                await asyncio.sleep(max(0, t0 + at - time.perf_counter()))
                await asyncio.to_thread(client.set_registered_model_alias, NAME, "champion", version)
                moves.append((time.perf_counter() - t0, version))
            await asyncio.gather(*workers)

        asyncio.run(main())
        metrics = httpx.get(f"{url}/metrics").text
        meta = httpx.get(f"{url}/metadata").json()
    finally:
        stop(proc)
    return summarise(answers, moves, versions, metrics, meta, args, load_before)


def summarise(answers, moves, versions, metrics, meta, args, load_before) -> dict[str, Any]:  # noqa: ANN001
    reached = []
    for at, version in moves:
        first = [a for a in answers if a[3] == version and a[0] >= at]
        reached.append(
            {
                "moved_to": version,
                "at_s": round(at, 2),
                "first_answer_after_s": round(min(a[1] for a in first) - at, 2) if first else None,
            }
        )
    stale = 0
    for i, (at, version) in enumerate(moves):
        first = [a for a in answers if a[3] == version and a[0] >= at]
        if not first or version == versions["v3"]:
            continue
        first_done = min(a[1] for a in first)
        until = moves[i + 1][0] if i + 1 < len(moves) else float("inf")
        stale += sum(1 for a in answers if first_done < a[0] < until and a[3] != version)
    latencies = sorted((a[1] - a[0]) * 1000 for a in answers)
    reloads = dict(re.findall(r'mlgate_model_reloads_total\{outcome="(\w+)"\} ([0-9.]+)', metrics))
    return {
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "poll_s": args.poll,
        "requests": len(answers),
        "errors": sum(1 for a in answers if a[2] != 200),
        "header_matches_body": all(a[3] == a[4] for a in answers if a[2] == 200),
        "by_version": {v: sum(1 for a in answers if a[3] == v) for v in sorted({a[3] for a in answers})},
        "moves": reached,
        "old_version_after_first_new_answer": stale,
        "refused": meta.get("follow", {}).get("refused"),
        "reloads": {k: float(v) for k, v in reloads.items()},
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--poll", type=float, default=1.0, help="MLGATE_SERVE_FOLLOW_SECONDS")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    result = run(args)
    (OUT / "follow.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
