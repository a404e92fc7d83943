"""Time the whole pipeline end to end on the default data: a first run on an empty store, then a rerun on the
store it left (a champion to evaluate against, the common case), each in a throwaway folder.

Besides wall time it reports the CPU seconds of the run (user + system, its child processes included), which
another worker's load on the machine changes far less, each step's duration from the run's summary, and the
load average. With ``--against REV`` the same runs are made with the code of git revision REV (checked out
in a temporary worktree) and of the working tree, each put first on PYTHONPATH, alternating A B A B so that
a change in the machine's load hits both. ``--mlflow-run`` also times `mlflow run .` of the same chain.
Usage (from the repo root, after `make install`):

    .venv/bin/python bench/pipeline/bench.py --repeat 3
    .venv/bin/python bench/pipeline/bench.py --repeat 3 --against HEAD~1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess  # nosec B404 - runs the project's own commands
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
STEPS = ("validate", "train", "evaluate", "register", "promote")


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)

    def add(self, wall: float, cpu: float, steps: dict[str, float]) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)
        for step, seconds in steps.items():
            self.steps.setdefault(step, []).append(seconds)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str], folder: Path, pythonpath: str | None) -> tuple[float, float, dict[str, float]]:
    """Run ``cmd`` in ``folder`` (its own store and outputs); wall and CPU seconds, and the step durations."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cpu, start = _children_cpu(), time.perf_counter()
    out = subprocess.run(cmd, cwd=folder, env=env, check=True, capture_output=True, text=True)  # nosec B603
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    try:
        steps = json.loads(out.stdout[out.stdout.index("{") :]).get("step_seconds", {})
    except ValueError:
        steps = {}
    return wall, cpu, steps


def _fresh_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="mlgate-bench-"))
    for name in ("config", "data"):
        shutil.copytree(REPO / name, folder / name)
    if (REPO / "MLproject").is_file():
        shutil.copy(REPO / "MLproject", folder / "MLproject")
    return folder


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "—"


def _spread(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--against", default=None, help="A git revision to compare with, run alternately.")
    parser.add_argument("--mlflow-run", action="store_true", help="Also time `mlflow run .` of the chain.")
    args = parser.parse_args()

    variants: dict[str, str | None] = {}
    worktree = None
    if args.against:
        worktree = Path(tempfile.mkdtemp(prefix="mlgate-bench-rev-")) / "tree"
        subprocess.run(  # nosec B603 B607 - fixed git command
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.against],
            check=True,
            capture_output=True,
        )
        variants[args.against] = str(worktree / "src")
    # The working tree first on the path too: the bench never depends on where the editable install points.
    variants["working tree"] = str(REPO / "src")
    commands = {"mlgate run": [str(BIN / "mlgate"), "--config", "config/pipeline.yaml", "run"]}
    if args.mlflow_run:
        commands["mlflow run . (same chain)"] = [str(BIN / "mlflow"), "run", ".", "--env-manager", "local"]

    results: dict[tuple[str, str], tuple[Timing, Timing]] = {}
    loads = []
    try:
        for i in range(args.repeat):
            for label, cmd in commands.items():
                for variant, pythonpath in variants.items():  # A B A B: the load hits both alike
                    first, rerun = results.setdefault((label, variant), (Timing(), Timing()))
                    folder = _fresh_folder()
                    try:
                        loads.append(os.getloadavg()[0])
                        first.add(*_timed(cmd, folder, pythonpath))
                        rerun.add(*_timed(cmd, folder, pythonpath))
                    finally:
                        shutil.rmtree(folder, ignore_errors=True)
                    print(
                        f"round {i + 1} {label} [{variant}]: first {first.wall[-1]:.1f} s, "
                        f"rerun {rerun.wall[-1]:.1f} s wall / {rerun.cpu[-1]:.1f} s CPU, "
                        f"load {loads[-1]:.2f}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        if worktree is not None:
            subprocess.run(  # nosec B603 B607 - fixed git command
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False
            )

    print(f"load average (1 min) during the runs: {min(loads):.2f} to {max(loads):.2f}\n")
    print(
        "| command | code | empty store, wall (s) | rerun, wall (s) | rerun, CPU (s) | rerun runs (s) |\n"
        "|---|---|---:|---:|---:|---|"
    )
    for (label, variant), (first, rerun) in results.items():
        print(
            f"| `{label}` | {variant} | {_median(first.wall)} | {_median(rerun.wall)} | "
            f"{_median(rerun.cpu)} | {_spread(rerun.wall)} |"
        )
    print("\nRerun step durations, median (s):\n")
    print("| command | code | " + " | ".join(STEPS) + " | steps total |")
    print("|---|---|" + "---:|" * (len(STEPS) + 1))
    for (label, variant), (_, rerun) in results.items():
        if not rerun.steps:
            continue
        medians = [statistics.median(rerun.steps.get(s, [0.0])) for s in STEPS]
        cells = " | ".join(f"{m:.2f}" for m in medians)
        print(f"| `{label}` | {variant} | {cells} | {sum(medians):.1f} |")


if __name__ == "__main__":
    main()
