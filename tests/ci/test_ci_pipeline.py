"""`make ci-pipeline`: pipeline.yml's chain run locally against the local tracking stack, end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess  # nosec B404 - tests run fixed commands
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.ci.workflows import REPO, makefile_targets
from tests.conftest import docker_ok, make_config, require, write_config

IMAGE_REPO = "mlgate-test/ci"


def _make(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLFLOW_"))}
    return subprocess.run(
        ["make", "--no-print-directory", *args, f"CI_IMAGE_REPO={IMAGE_REPO}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )


def _images(tag: str) -> list[str]:
    """The test's own image references with this tag (every tag when empty)."""
    out = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ref for ref in out if f"/{IMAGE_REPO}-" in ref and (not tag or ref.endswith(f":{tag}"))]


def _champion(stack_root: Path, model_name: str) -> str:
    """Ask the running stack's registry which version is champion."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=(stack_root / "tracking_uri").read_text().strip())
    return str(client.get_model_version_by_alias(model_name, "champion").version)


@pytest.mark.slow
@pytest.mark.container
def test_ci_pipeline_promotes_and_builds_then_a_failing_gate_stops_before_any_image(tmp_path: Path) -> None:
    targets = makefile_targets()
    require(
        {"stack-up", "stack-down", "model-bundle", "image-serving", "image-batch"} <= targets,
        "the stack, serving and batch make targets are not all there yet",
    )
    require(docker_ok(), "no container engine (../shared/container-engine/setup)")
    # under /tmp with mode 0711, not pytest's 0700 temp root: PostgreSQL runs unprivileged as root
    stack = Path(tempfile.mkdtemp(prefix="mlgate-ci-stack-"))
    stack.chmod(0o711)
    cfg = make_config(tmp_path)
    config = write_config(cfg, tmp_path / "pipeline.yaml")
    run = uuid.uuid4().hex[:6]
    ok_tag, fail_tag = f"ok{run}", f"no{run}"
    # one stack for both runs, as pipeline.yml carries its registry from run to run; ci-pipeline leaves a
    # stack it did not start running
    up = _make("stack-up", f"STACK_ROOT={stack}")
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        first = _make("ci-pipeline", f"CONFIG={config}", f"STACK_ROOT={stack}", f"CI_SHORT_SHA={ok_tag}")
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
        promoted = json.loads((cfg.outputs / "promotion.json").read_text())
        assert promoted["promoted"] and promoted["passed"]
        version = promoted["version"]
        assert _champion(stack, cfg.model_name) == version
        for kind in ("serving", "batch"):  # the immutable tags; `champion` moves only when pushed
            for tag in (f"sha-{ok_tag}-v{version}", f"v{version}"):
                assert f"ghcr.io/{IMAGE_REPO}-{kind}:{tag}" in _images(tag)
        assert "image smoke ok: serving" in first.stdout and "image smoke ok: batch" in first.stdout
        # an SBOM of each image's own environment: the champion has a parity-proven ONNX model, so the
        # serving image is the ONNX one (no scikit-learn), the batch image holds both runtimes
        built = {
            "serving": ("requirements-onnx.txt", "onnxruntime"),
            "batch": ("requirements.txt", "scikit-learn"),
        }
        for kind, (requirements, pinned) in built.items():
            sbom = json.loads((cfg.outputs / f"sbom-{kind}.cdx.json").read_text())
            packages = {c["name"].lower(): c["version"] for c in sbom["components"]}
            assert f"{pinned}=={packages[pinned]}" in (REPO / kind / requirements).read_text()
            assert "mlgate" in packages and sbom["bomFormat"] == "CycloneDX"
            # and the OS packages of the base image, as dpkg lists them (libc6 is in every Debian image)
            assert any(c["purl"].startswith("pkg:deb/debian/libc6@") for c in sbom["components"]), kind
        assert "scikit-learn" not in {
            c["name"].lower()
            for c in json.loads((cfg.outputs / "sbom-serving.cdx.json").read_text())["components"]
        }
        # the alias moved last: after both images were built and smoke-run
        assert first.stdout.rindex("image smoke ok: batch") < first.stdout.rindex(
            "mlflow-run promote -P dry_run=false"
        )

        strict = make_config(
            tmp_path,
            **{
                "promotion.thresholds": [
                    {"metric": "accuracy_score", "direction": "higher", "min_value": 1.01}
                ]
            },
        )
        strict_config = write_config(strict, tmp_path / "strict.yaml")
        second = _make(
            "ci-pipeline", f"CONFIG={strict_config}", f"STACK_ROOT={stack}", f"CI_SHORT_SHA={fail_tag}"
        )
        assert second.returncode != 0
        assert "Promotion gate: FAILED" in second.stdout
        assert "accuracy_score | min_value" in second.stdout
        rejected = json.loads((strict.outputs / "promotion.json").read_text())
        assert not rejected["promoted"] and rejected["previous_champion"] == version
        assert int(rejected["version"]) > int(version)
        assert "docker build" not in second.stdout and "model-bundle" not in second.stdout
        assert not [ref for ref in _images("") if f"sha-{fail_tag}-" in ref]  # nothing built
        assert _champion(stack, cfg.model_name) == version  # champion untouched
    finally:
        _make("stack-down", f"STACK_ROOT={stack}")
        shutil.rmtree(stack, ignore_errors=True)
        leftovers = _images("")  # every tag in the test's own image namespace
        if leftovers:
            subprocess.run(["docker", "rmi", "-f", *leftovers], capture_output=True)
