"""Time the whole pipeline end to end on the default data, side by side with `mlflow run .` of the same chain.

Each command runs in a throwaway copy of the store: first on an empty store (no champion), then again on the
store the first run left (a champion to evaluate against, the common case). Usage (from the repo root, after
`make install`, with the machine otherwise idle):

    .venv/bin/python bench/pipeline/bench.py --repeat 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess  # nosec B404 - runs the project's own commands
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"

COMMANDS = {
    "make pipeline": ["make", "--no-print-directory", "-C", str(REPO), "pipeline"],
    "mlflow run . (same chain)": [str(BIN / "mlflow"), "run", str(REPO), "--env-manager", "local"],
}


def _timed(cmd: list[str], store: Path) -> float:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)  # nosec B603
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"| command | empty store, median of {args.repeat} (s) | with a champion, median (s) |")
    print("|---|---:|---:|")
    for label, cmd in COMMANDS.items():
        first, second = [], []
        for _ in range(args.repeat):
            store = Path(tempfile.mkdtemp(prefix="mlgate-bench-"))
            try:
                first.append(_timed(cmd, store))
                second.append(_timed(cmd, store))
            finally:
                shutil.rmtree(store, ignore_errors=True)
        print(f"| `{label}` | {statistics.median(first):.1f} | {statistics.median(second):.1f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
