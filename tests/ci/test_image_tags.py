"""The release's image make targets against a real registry (the HTTPS stand-in of tests/ci/standins, on
loopback), with the real docker CLI and engine: version tags are pushed once and refused the second time, the
digest printed and recorded is the one the registry holds, and `champion` moves only onto images that exist.
"""

from __future__ import annotations

import json
import os
import subprocess  # nosec B404 - tests run fixed commands
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.ci.standins.registry import Registry
from tests.ci.workflows import REPO
from mlgate.config import PipelineConfig
from tests.conftest import write_config

REPOSITORY = "mlgate-test/mlgate"
SHA = "abc1234"

pytestmark = [pytest.mark.slow, pytest.mark.container]


def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600)  # nosec


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
    registry: Registry, cfg: PipelineConfig, store: Path, tmp_path: Path
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
        # and the record the release job moves champion to
        record = json.loads((out / "published" / f"{kind}.json").read_text())
        assert record == {"kind": kind, "name": f"{registry.host}/{REPOSITORY}-{kind}", "version": "1",
                          "digest": tags["v1"]}  # fmt: skip

    # the same version again (a rerun of the publish job): refused, nothing overwritten
    before = len(registry.pushes)
    again = _make(registry, "ci-image-push", out, IMAGE="serving", MODEL_VERSION="1")
    assert again.returncode != 0 and "exists already" in again.stderr and "never overwritten" in again.stderr
    assert len(registry.pushes) == before

    # the release: versions 1 and 2 registered; champion moves onto the published digests of 1, recorded on it
    client = MlflowClient()
    client.create_registered_model(cfg.model_name)
    for _ in (1, 2):
        client.create_model_version(cfg.model_name, str(store))
    env = {
        "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
        "CONFIG": str(write_config(cfg, store / "c.yaml")),
    }
    moved = _make(registry, "ci-champion-images", out, VERSION="1", PUBLISHED=str(out / "published"), **env)
    assert moved.returncode == 0, moved.stderr
    champion = {k: registry.tags(f"{REPOSITORY}-{k}")["champion"] for k in ("serving", "batch")}
    assert champion == {k: registry.tags(f"{REPOSITORY}-{k}")["v1"] for k in ("serving", "batch")}
    # the references the manifests are rendered with: exactly what champion points at
    refs = [f"mlgate-{k}={registry.host}/{REPOSITORY}-{k}@{champion[k]}" for k in ("serving", "batch")]
    assert (out / "champion-images.txt").read_text().splitlines() == refs
    recorded = client.get_model_version(cfg.model_name, "1").tags
    assert [f"mlgate-{k}={recorded[f'mlgate.image.{k}']}" for k in ("serving", "batch")] == refs

    # version 2 was never published (no digest recorded, no v2 tag): champion stays on version 1, and the
    # references file is not replaced
    refused = _make(registry, "ci-champion-images", out, VERSION="2", **env)
    assert refused.returncode != 0 and "version 2 has no serving image" in refused.stderr
    assert {k: registry.tags(f"{REPOSITORY}-{k}")["champion"] for k in ("serving", "batch")} == champion
    assert (out / "champion-images.txt").read_text().splitlines() == refs
