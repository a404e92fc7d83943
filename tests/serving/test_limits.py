"""Requests that cannot exhaust a replica, against the real server process (`mlgate serve`): bodies over the
row and column limits get 413 naming the limit, and their memory stays within the documented bound; the probes
keep answering while eight bodies of the maximum size are scored; connections beyond limit_concurrency get
503. Timings are measured and shown, never asserted (bench/serving/limits.py has the figures)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil
import pytest

from mlgate.serving.service import SCORING_MEMORY_FACTOR
from mlgate.serving.settings import ServingSettings
from tests.serving.conftest import mlgate_serve

pytestmark = pytest.mark.slow
MIB = 1024 * 1024
SETTINGS = ServingSettings()
CSV = {"content-type": "text/csv"}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(
    trained_model: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The default limits; a timeout long enough that eight maximum-size requests in a row all get their
    turn on a loaded machine."""
    log = tmp_path_factory.mktemp("limits") / "server.log"
    with mlgate_serve(
        ["--model", str(trained_model["model_dir"])], log, {"MLGATE_SERVE_TIMEOUT_SECONDS": "300"}
    ) as running:
        yield running


def maximum_csv(rows: pd.DataFrame, size: int = SETTINGS.max_body_bytes) -> bytes:
    """A CSV body of max_rows rows (the held-out rows over and over) padded with an ignored column to just
    under ``size`` bytes: the largest request the service scores."""
    many = rows.sample(SETTINGS.max_rows, replace=True, random_state=0).reset_index(drop=True)
    plain = many.to_csv(index=False).encode()
    pad = (size - len(plain) - 64) // SETTINGS.max_rows - 1
    body = many.assign(note="n" * pad).to_csv(index=False).encode()
    assert size - 2 * SETTINGS.max_rows < len(body) <= size, len(body)
    return body


def over_limit_bodies() -> dict[str, tuple[bytes, dict[str, str], str]]:
    """Bodies under the byte limit and over the row or column limit: name -> (body, headers, limit named)."""
    size = SETTINGS.max_body_bytes - 64
    one_char_rows = b"island\n" + b"a\n" * ((size - 7) // 2)
    empty_records = b'{"dataframe_records": [' + b"{}," * ((size - 30) // 3) + b"{}]}"
    wide_header = b",".join(b"c%d" % i for i in range(SETTINGS.max_columns + 1)) + b"\n"
    wide_csv = wide_header + (b"1," * SETTINGS.max_columns + b"1\n") * 3
    wide_split = json.dumps(
        {
            "dataframe_split": {
                "columns": [f"c{i}" for i in range(SETTINGS.max_columns + 1)],
                "data": [[1] * (SETTINGS.max_columns + 1)],
            }
        }
    ).encode()
    return {
        "csv rows": (one_char_rows, CSV, "MLGATE_SERVE_MAX_ROWS"),
        "json rows": (empty_records, JSON, "MLGATE_SERVE_MAX_ROWS"),
        "csv columns": (wide_csv, CSV, "MLGATE_SERVE_MAX_COLUMNS"),
        "json columns": (wide_split, JSON, "MLGATE_SERVE_MAX_COLUMNS"),
    }


class RssSampler:
    """The peak RSS of a process, sampled every few milliseconds in a thread."""

    def __init__(self, pid: int) -> None:
        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def in_flight_bound(baseline: int, requests: int) -> int:
    """The documented bound: the baseline, each request's body twice (the chunks read, then joined) and
    the one request being scored SCORING_MEMORY_FACTOR times over."""
    return baseline + (2 * requests + SCORING_MEMORY_FACTOR) * SETTINGS.max_body_bytes


def concurrently(n: int, call: Callable[[], httpx.Response]) -> list[httpx.Response]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: call(), range(n)))


def test_over_limit_bodies_get_413_naming_the_limit(server: dict[str, Any]) -> None:
    url = server["url"]
    rss = RssSampler(server["proc"].pid)
    baseline = rss.process.memory_info().rss
    taken = {}
    with rss, httpx.Client(timeout=120) as client:
        for name, (body, headers, limit) in over_limit_bodies().items():
            start = time.perf_counter()
            response = client.post(f"{url}/invocations", content=body, headers=headers)
            taken[name] = round(time.perf_counter() - start, 3)
            assert response.status_code == 413, (name, response.text[:300])
            assert limit in response.json()["message"], (name, response.json())
        v2 = {"inputs": [{"name": "island", "datatype": "BYTES", "shape": [SETTINGS.max_rows + 1]}]}
        v2["inputs"][0]["data"] = ["Dream"] * (SETTINGS.max_rows + 1)
        name = client.get(f"{url}/metadata").json().get("name") or "model"
        response = client.post(f"{url}/v2/models/{name}/infer", json=v2)
        assert response.status_code == 413 and "MLGATE_SERVE_MAX_ROWS" in response.json()["error"]
    print(f"413 in {taken} s; peak RSS +{(rss.peak - baseline) / MIB:.1f} MiB")
    assert rss.peak <= in_flight_bound(baseline, 1), (rss.peak - baseline) / MIB


def test_eight_over_limit_bodies_at_once_stay_within_the_memory_bound(server: dict[str, Any]) -> None:
    body, headers, _ = over_limit_bodies()["csv rows"]
    rss = RssSampler(server["proc"].pid)
    baseline = rss.process.memory_info().rss
    with rss:
        answers = concurrently(
            8, lambda: httpx.post(f"{server['url']}/invocations", content=body, headers=headers, timeout=120)
        )
    assert [a.status_code for a in answers] == [413] * 8
    print(f"8 over-limit bodies: peak RSS +{(rss.peak - baseline) / MIB:.1f} MiB")
    assert rss.peak <= in_flight_bound(baseline, 8), (rss.peak - baseline) / MIB


def test_probes_answer_while_eight_maximum_bodies_are_scored(
    server: dict[str, Any], test_rows: pd.DataFrame
) -> None:
    url, body = server["url"], maximum_csv(test_rows)
    assert httpx.post(f"{url}/invocations", content=body, headers=CSV, timeout=120).status_code == 200
    rss = RssSampler(server["proc"].pid)
    baseline = rss.process.memory_info().rss
    done = threading.Event()
    probes: dict[str, list[tuple[float, int]]] = {"/health": [], "/ready": []}

    def probe() -> None:
        with httpx.Client(timeout=120) as client:
            while not done.is_set():
                for path, answers in probes.items():
                    start = time.perf_counter()
                    status = client.get(f"{url}{path}").status_code
                    answers.append((time.perf_counter() - start, status))
                time.sleep(0.02)

    prober = threading.Thread(target=probe)
    with rss:
        with ThreadPoolExecutor(8) as pool:
            futures = [
                pool.submit(httpx.post, f"{url}/invocations", content=body, headers=CSV, timeout=300)
                for _ in range(8)
            ]
            prober.start()
            answers = [f.result() for f in futures]
            done.set()  # the probes counted below all answered before the last big request did
            answered_during = {path: len(times) for path, times in probes.items()}
        prober.join()
    assert [a.status_code for a in answers] == [200] * 8, [
        a.text[:200] for a in answers if a.status_code != 200
    ]
    assert all(len(a.json()["predictions"]) == SETTINGS.max_rows for a in answers)
    for path, times in probes.items():
        assert answered_during[path] >= 2 and all(status == 200 for _, status in times), (path, times)
    slowest = {p: round(max(t for t, _ in times), 3) for p, times in probes.items()}
    print(
        f"body {len(body) / MIB:.2f} MiB x 8; probes answered during: {answered_during}; slowest (s): "
        f"{slowest}; peak RSS +{(rss.peak - baseline) / MIB:.1f} MiB"
    )
    assert rss.peak <= in_flight_bound(baseline, 8), (rss.peak - baseline) / MIB


def test_beyond_limit_concurrency_the_answer_is_503(trained_model: dict[str, Any], tmp_path: Path) -> None:
    limit = 4
    with mlgate_serve(
        ["--model", str(trained_model["model_dir"])],
        tmp_path / "server.log",
        {"MLGATE_SERVE_LIMIT_CONCURRENCY": str(limit)},
    ) as running:
        url = running["url"]
        assert httpx.get(f"{url}/health").status_code == 200
        idle = [socket.create_connection(("127.0.0.1", running["port"])) for _ in range(limit)]
        try:
            time.sleep(0.2)  # the server has accepted them
            assert httpx.get(f"{url}/health").status_code == 503
        finally:
            for sock in idle:
                sock.close()
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").status_code != 200:  # the closed connections are let go
            assert time.monotonic() < deadline
            time.sleep(0.05)
