"""The newcomer's numbers: what a team that forks mlgate waits for on its first day, on a fresh clone.

Clones the repository's committed HEAD into a temporary folder (``git clone --no-local``: no .venv, no
outputs, no registry), then times, in the order a newcomer types them, each in a fresh process:

1. ``make install-runtime``: set-up, the virtualenv with what the pipeline needs (from uv.lock);
2. ``make pipeline``: the first run (an empty registry: the first champion);
3. ``make pipeline``: the second run (a champion to compare with);
4. ``make install``: the development tools added;
5. ``make test-fast``: the unit tier;
6. ``make test``: every test (``--with-test``; it takes the most of this machine for 20-30 minutes).

The package caches (pip's, uv's) are the machine's own: warm when this machine installed mlgate before, as
on a second clone; ``--cold`` points uv at an empty cache folder (every wheel downloaded again). Per step:
wall seconds, the 1-minute load average before it and the exit code. Results: bench/results/newcomer/
results.json and results.md (the table README.md quotes).

    .venv/bin/python bench/newcomer/run.py               # steps 1-5, about 5 minutes
    .venv/bin/python bench/newcomer/run.py --with-test   # and make test
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess  # nosec B404 - benchmark driver runs fixed commands
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import REPO, load_avg, machine, write_results  # noqa: E402

RESULTS = REPO / "bench" / "results" / "newcomer"
STEPS = [
    ("set-up (`make install-runtime`)", ["make", "install-runtime"]),
    ("first `make pipeline`", ["make", "pipeline"]),
    ("second `make pipeline`", ["make", "pipeline"]),
    ("development tools (`make install`)", ["make", "install"]),
    ("`make test-fast`", ["make", "test-fast"]),
]
TEST = ("`make test`", ["make", "test"])


def _env(cold_cache: Path | None) -> dict[str, str]:
    """A fresh shell's environment: no virtualenv active, nothing of an MLflow or mlgate session (but
    MLGATE_REQUIRE_ALL, as .ci/run sets it: a test that cannot run fails instead of skipping)."""
    drop = ("VIRTUAL_ENV", "MLFLOW_", "MLGATE_", "PYTEST_", "CONDA_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) or k == "MLGATE_REQUIRE_ALL"}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if "/.venv/" not in p]
    env["PATH"] = os.pathsep.join(path)
    if cold_cache is not None:
        env["UV_CACHE_DIR"] = str(cold_cache)
    return env


def run(with_test: bool, cold: bool, keep: bool) -> dict:
    root = Path(tempfile.mkdtemp(prefix="mlgate-newcomer-"))
    root.chmod(0o755)  # a clone where clones go (mkdtemp's 0700 keeps out the stack's PostgreSQL user)
    clone = root / "mlgate"
    subprocess.run(  # nosec B603 B607
        ["git", "clone", "--quiet", "--no-local", str(REPO), str(clone)], check=True
    )
    commit = subprocess.run(  # nosec B603 B607
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.strip()
    env = _env(root / "uv-cache" if cold else None)
    steps = []
    try:
        for name, cmd in STEPS + ([TEST] if with_test else []):
            load = load_avg()
            started = time.perf_counter()
            with (root / "log.txt").open("a") as log:
                log.write(f"\n### {name}: {' '.join(cmd)}\n")
                log.flush()
                proc = subprocess.run(cmd, cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT)  # nosec
            seconds = time.perf_counter() - started
            steps.append({"step": name, "command": " ".join(cmd), "seconds": round(seconds, 1), "load": load,
                          "exit": proc.returncode})  # fmt: skip
            print(f"{name}: {seconds:.1f} s (exit {proc.returncode}, load {load})", flush=True)
            if proc.returncode != 0:
                print(f"stopped: see {root / 'log.txt'}", file=sys.stderr)
                keep = True
                break
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return {"commit": commit, "cold_uv_cache": cold, "machine": machine(), "steps": steps,
            "taken": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip


def markdown(result: dict) -> str:
    rows = [f"| {s['step']} | {s['seconds']:.0f} s | {s['load']} | {s['exit']} |" for s in result["steps"]]
    cache = "an empty uv cache" if result["cold_uv_cache"] else "the machine's pip and uv caches warm"
    return "\n".join(
        [
            f"Fresh clone of {result['commit']}, {result['machine']['cores']} cores, {cache}, "
            f"{result['taken']}.",
            "",
            "| step | wall | load before | exit |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--with-test", action="store_true", help="also time make test (20-30 minutes)")
    parser.add_argument("--cold", action="store_true", help="an empty uv cache: every wheel downloaded")
    parser.add_argument("--keep", action="store_true", help="keep the clone (it is kept when a step fails)")
    args = parser.parse_args()
    result = run(args.with_test, args.cold, args.keep)
    write_results(RESULTS, result, markdown(result))
    if any(s["exit"] != 0 for s in result["steps"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
