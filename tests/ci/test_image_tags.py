"""The release's image make targets against a real registry (the HTTPS stand-in of tests/ci/standins, on
loopback), with the real docker CLI and engine: version tags are pushed once and refused the second time, the
digest printed is the one the registry holds, and `champion` moves only onto images that exist."""

from __future__ import annotations

import os
import shutil
import subprocess  # nosec B404 - tests run fixed commands
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ci.standins.registry import Registry
from tests.ci.workflows import REPO
from tests.conftest import require

REPOSITORY = "mlgate-test/mlgate"
SHA = "abc1234"
DOCKER_CERTS = Path("/etc/docker/certs.d")  # where the docker CLI itself looks (`docker manifest inspect`)

pytestmark = [pytest.mark.slow, pytest.mark.container]


def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600)  # nosec


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require(shutil.which("docker") is not None, "no docker CLI (../shared/container-engine/setup)")
    require(_docker("info").returncode == 0, "no container engine (../shared/container-engine/setup)")
    with Registry(tmp_path_factory.mktemp("registry")) as reg:
        trust = DOCKER_CERTS / reg.host
        trust.mkdir(parents=True, exist_ok=True)
        shutil.copy(reg.cert, trust / "ca.crt")
        try:
            yield reg
        finally:
            shutil.rmtree(trust, ignore_errors=True)
            refs = _docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
            mine = [r for r in refs if r.startswith(reg.host + "/")]
            if mine:
                _docker("rmi", "-f", *mine)


def _image(reg: Registry, kind: str, version: int, tmp: Path) -> None:
    """A small image tagged as ci-image tags the release's (sha-<sha>-v<n>, v<n>)."""
    ctx = tmp / f"{kind}-{version}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f'FROM python:3.11-slim\nLABEL org.mlgate.test="{kind} v{version}"\n')
    name = f"{reg.host}/{REPOSITORY}-{kind}"
    built = _docker("build", "-t", f"{name}:v{version}", "-t", f"{name}:sha-{SHA}-v{version}", str(ctx))
    assert built.returncode == 0, built.stderr


def _make(reg: Registry, target: str, out: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    variables = [f"CI_REGISTRY={reg.host}", f"CI_SHORT_SHA={SHA}", f"CI_OUTPUTS={out}"]
    return subprocess.run(  # nosec B603 B607
        ["make", "--no-print-directory", "--silent", target, *variables],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**base, "GITHUB_REPOSITORY": REPOSITORY, **env},
    )


def test_version_tags_are_pushed_once_and_champion_moves_only_onto_pushed_images(
    registry: Registry, tmp_path: Path
) -> None:
    out = tmp_path / "outputs"
    for kind in ("serving", "batch"):
        _image(registry, kind, 1, tmp_path)
        pushed = _make(registry, "ci-image-push", out, IMAGE=kind, MODEL_VERSION="1")
        assert pushed.returncode == 0, pushed.stderr
        tags = registry.tags(f"{REPOSITORY}-{kind}")
        assert set(tags) == {"v1", f"sha-{SHA}-v1"} and tags["v1"] == tags[f"sha-{SHA}-v1"]
        # name= and digest= for the attestations: the digest the registry holds for the tags
        assert pushed.stdout.splitlines() == [
            f"name={registry.host}/{REPOSITORY}-{kind}",
            f"digest={tags['v1']}",
        ]

    # the same version again (a rerun of the publish job): refused, nothing overwritten
    before = len(registry.pushes)
    again = _make(registry, "ci-image-push", out, IMAGE="serving", MODEL_VERSION="1")
    assert again.returncode != 0 and "exists already: version tags are never overwritten" in again.stderr
    assert len(registry.pushes) == before

    moved = _make(registry, "ci-retag-champion", out, VERSION="1")
    assert moved.returncode == 0, moved.stderr
    champion = {k: registry.tags(f"{REPOSITORY}-{k}")["champion"] for k in ("serving", "batch")}
    assert champion == {k: registry.tags(f"{REPOSITORY}-{k}")["v1"] for k in ("serving", "batch")}
    # the references the manifests are rendered with: exactly what champion points at
    assert (out / "champion-images.txt").read_text().splitlines() == [
        f"mlgate-{k}={registry.host}/{REPOSITORY}-{k}@{champion[k]}" for k in ("serving", "batch")
    ]

    # version 2 was never published: champion stays on version 1, and the references file is not replaced
    refused = _make(registry, "ci-retag-champion", out, VERSION="2")
    assert refused.returncode != 0
    assert {k: registry.tags(f"{REPOSITORY}-{k}")["champion"] for k in ("serving", "batch")} == champion
    assert sorted(p.name for p in out.iterdir()) == ["champion-images.txt"]  # no partial file left
    assert (out / "champion-images.txt").read_text().splitlines()[0].endswith(champion["serving"])
