"""One locked environment: uv.lock satisfies pyproject.toml, the requirement files exported from it are
current, and every image installs them hash-checked. Offline: uv reads the lock and an empty cache, no index.
"""

import os
import re
import shutil
import subprocess  # nosec B404 - runs make and the virtualenv's uv
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

VENV = Path(sys.prefix)
UV = VENV / "bin" / "uv"
EXPORT_LINE = re.compile(r"^LOCK_EXPORTS := (.*?)(?<!\\)$", re.M | re.S)


def exports() -> dict[str, list[str]]:
    """The Makefile's LOCK_EXPORTS: each exported file and the dependency groups it holds."""
    value = EXPORT_LINE.search((REPO / "Makefile").read_text()).group(1).replace("\\\n", " ")
    return {f: g.split("+") for f, g in (entry.split(":") for entry in value.split())}


def offline(tmp_path: Path) -> dict[str, str]:
    """No index and an empty uv cache: what the checks need is in the repository."""
    return {**os.environ, "UV_OFFLINE": "1", "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_NO_CONFIG": "1"}


def lock_check(cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    assert UV.exists(), f"{UV} is missing: make install puts the pinned uv in the virtualenv"
    return subprocess.run(  # nosec B603 B607
        ["make", "--no-print-directory", "lock-check", f"VENV={VENV}"],
        cwd=cwd, env=offline(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def copy_project(dest: Path) -> Path:
    """The files make lock-check reads, with their times (so make sees the venv's uv as current)."""
    for rel in ["Makefile", "pyproject.toml", "uv.lock", "README.md", *exports()]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    return dest


def test_the_lock_and_its_exports_are_current(tmp_path):
    result = lock_check(REPO, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout


def test_a_pin_moved_in_pyproject_fails_the_check(tmp_path):
    project = copy_project(tmp_path / "project")
    pyproject = project / "pyproject.toml"
    pin = next(d for d in tomllib.loads(pyproject.read_text())["project"]["dependencies"] if "==" in d)
    name, version = pin.split("==")
    pyproject.write_text(pyproject.read_text().replace(f'"{pin}"', f'"{name}=={version}.post99"'))
    result = lock_check(project, tmp_path)
    assert result.returncode != 0
    assert "uv.lock does not satisfy pyproject.toml: run make lock" in result.stderr


@pytest.mark.parametrize("exported", sorted(exports()))
def test_an_edited_export_fails_the_check(exported, tmp_path):
    project = copy_project(tmp_path / "project")
    target = project / exported
    lines = target.read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if re.match(r"^[a-z0-9]", line))
    target.write_text("".join(lines[:first] + ["# edited by hand\n"] + lines[first:]))
    result = lock_check(project, tmp_path)
    assert result.returncode != 0
    assert f"{exported} is not what uv.lock gives: run make lock" in result.stderr


def test_every_exported_requirement_is_pinned_with_hashes():
    for exported in exports():
        text = (REPO / exported).read_text()
        for req in re.split(r"\n(?=[a-z0-9])", text.split("\n", 2)[2].strip()):
            assert re.match(r"^[a-z0-9._-]+==\S+", req), (exported, req)
            assert "--hash=sha256:" in req, (exported, req)


def test_the_build_backend_and_uv_are_locked():
    """[build-system] asks for what the group `build` locks (the images build mlgate without isolation with
    it), and uv is pinned exactly (requirements/bootstrap.txt is what `make install` starts from)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["build-system"]["requires"] == project["dependency-groups"]["build"]
    assert re.fullmatch(r"uv==[0-9.]+", *project["dependency-groups"]["bootstrap"])
    locked = {p["name"]: p["version"] for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]}
    assert project["dependency-groups"]["bootstrap"] == [f"uv=={locked['uv']}"]


@pytest.mark.parametrize("dockerfile", ["serving/Dockerfile", "batch/Dockerfile", "stack/Dockerfile"])
def test_the_images_install_only_hash_checked_requirements(dockerfile):
    """Every pip install of a requirement file checks hashes and takes wheels only (an sdist would fetch its
    build tools unchecked); mlgate itself goes in without dependencies, built by the locked setuptools."""
    text = (REPO / dockerfile).read_text().replace("\\\n", " ")
    installs = [line for line in text.splitlines() if re.search(r"pip install", line)]
    assert installs
    for line in installs:
        for command in re.findall(r"pip install [^&;]*", line):
            if " -r " in command:
                assert "--require-hashes" in command and "--only-binary :all:" in command, (
                    dockerfile,
                    command,
                )
                assert "--no-deps" in command, (dockerfile, command)
            else:
                assert "--no-deps" in command and "--no-build-isolation" in command, (dockerfile, command)
