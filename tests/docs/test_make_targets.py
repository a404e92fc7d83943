"""What each first-hour make target installs before it runs: the runtime set, never the development tools."""

from __future__ import annotations

import os
import subprocess  # nosec B404 - make with fixed arguments
from pathlib import Path

import pytest

from tests.conftest import REPO

RUNTIME_ONLY = ["pipeline", "serve", "score", "model-bundle", "model-bundle-batch", "validate", "promote"]


def _dry_run(target: str, venv: Path) -> str:
    """The commands ``make <target>`` would run with the virtualenv at ``venv`` (make -n: nothing runs)."""
    out = subprocess.run(  # nosec B603 B607 - fixed command
        ["make", "-n", "-C", str(REPO), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "MAKEFLAGS": ""},
    )
    return out.stdout


@pytest.mark.parametrize("target", RUNTIME_ONLY)
def test_target_on_a_fresh_machine_installs_the_runtime_set_only(target, tmp_path):
    commands = _dry_run(target, tmp_path / "venv")
    assert "uv sync --quiet --frozen" in commands
    assert "--extra dev" not in commands


@pytest.mark.parametrize("target", RUNTIME_ONLY)
def test_target_after_make_pipeline_installs_nothing(target, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    inputs = ("pyproject.toml", "uv.lock", "requirements/bootstrap.txt")
    later = max((REPO / name).stat().st_mtime for name in inputs) + 10
    for made in (venv / "bin" / "python", venv / "bin" / "uv", venv / ".runtime"):
        made.touch()
        os.utime(made, (later, later))
    commands = _dry_run(target, venv)
    assert "pip install" not in commands and "uv sync" not in commands
