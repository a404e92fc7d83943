"""mlgate.release against a real registry (the ghcr.io stand-in over TLS) and the real container engine: a
version published under immutable tags, the champion tag moved by digest, a moved version tag refused, and the
champion tag brought back to the alias's images after a release that stopped halfway. The pure decisions
(tags, digests, refs, published records) are checked without an engine."""

from __future__ import annotations

import json
import subprocess  # nosec B404 - tests run fixed commands
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlgate import release as rel
from mlgate.config import PipelineConfig
from tests.ci.standins.registry import Registry

DIGEST = "sha256:" + "ab" * 32


# --- decisions --------------------------------------------------------------------------------------------


def test_version_tags_are_the_immutable_pair_and_refuse_what_is_not_a_version() -> None:
    assert rel.version_tags("7", "1a2b3c4") == ("sha-1a2b3c4-v7", "v7")
    for bad in ("", "7;id", "v7", "-1", None):
        with pytest.raises(rel.ReleaseError, match="not a model version number"):
            rel.check_version(bad)


def test_pushed_digest_is_the_last_one_docker_push_printed() -> None:
    out = f"abc: Pushed\nv7: digest: {DIGEST} size: 1234\n"
    assert rel.pushed_digest(out) == DIGEST
    with pytest.raises(rel.ReleaseError, match="printed no digest"):
        rel.pushed_digest("Error: denied")


def test_a_run_on_a_branch_is_refused_and_main_is_not() -> None:
    rel.check_ref("refs/heads/main", "main", "push")
    with pytest.raises(rel.ReleaseError, match="from main only; this workflow_dispatch is on refs/heads/x"):
        rel.check_ref("refs/heads/x", "main", "workflow_dispatch")


def test_published_records_must_be_of_the_version_released(tmp_path: Path) -> None:
    for kind in rel.KINDS:
        image = rel.Image(kind, f"ghcr.io/o/r-{kind}", "3", DIGEST)
        (tmp_path / f"{kind}.json").write_text(json.dumps(image.__dict__))
    assert [i.ref for i in rel.read_published(tmp_path, "3")] == [
        f"ghcr.io/o/r-serving@{DIGEST}", f"ghcr.io/o/r-batch@{DIGEST}"
    ]  # fmt: skip
    with pytest.raises(rel.ReleaseError, match="not version 4"):
        rel.read_published(tmp_path, "4")
    (tmp_path / "batch.json").unlink()
    with pytest.raises(rel.ReleaseError, match="no published batch image"):
        rel.read_published(tmp_path, "3")


def test_bundle_version_reads_the_bundle_and_the_override_wins(tmp_path: Path) -> None:
    (tmp_path / "mlgate_bundle.json").write_text(json.dumps({"name": "m", "version": "12"}))
    assert rel.bundle_version(tmp_path) == "12"
    assert rel.bundle_version(tmp_path, "13") == "13"
    with pytest.raises(rel.ReleaseError, match="MODEL_VERSION must be a model version number"):
        rel.bundle_version(tmp_path / "missing")


# --- against the registry stand-in and the engine ---------------------------------------------------------


def _build(name: str, tag: str, label: str, tmp: Path) -> None:
    """A small image of its own (a label makes its config, so its digest, differ from the others)."""
    ctx = tmp / f"ctx-{label}"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(f"FROM python:3.11-slim\nLABEL io.mlgate.test={label}\n")
    subprocess.run(
        ["docker", "build", "-q", "-t", f"{name}:{tag}", str(ctx)], check=True, capture_output=True
    )


@pytest.mark.slow
@pytest.mark.container
def test_publish_champion_verify_and_reconcile_against_a_real_registry(
    registry: Registry, cfg: PipelineConfig, store: Path, tmp_path: Path
) -> None:
    names = {kind: rel.image_name(registry.host, "Owner/Repo", kind) for kind in rel.KINDS}
    assert names["serving"] == f"{registry.host}/owner/repo-serving"
    published: dict[str, list[rel.Image]] = {}
    for version in ("1", "2"):
        for kind, name in names.items():
            for tag in rel.version_tags(version, "abc1234"):
                _build(name, tag, f"{kind}-{version}", tmp_path)
            image = rel.publish(name, kind, version, "abc1234", tmp_path / version / f"{kind}.json")
            assert registry.tags(f"owner/repo-{kind}")[f"v{version}"] == image.digest
        published[version] = rel.read_published(tmp_path / version, version)

    # a version tag is never pushed twice
    with pytest.raises(rel.ReleaseError, match="exists already"):
        rel.publish(names["serving"], "serving", "1", "abc1234", tmp_path / "again.json")
    mine = [p.reference for p in registry.pushes if p.repository.startswith("owner/repo-")]
    assert mine.count("v1") == 2  # one per image, once each

    # the registry has versions 1 and 2; 1 released (recorded, champion), then 2's release stops halfway
    client = MlflowClient()
    client.create_registered_model(cfg.model_name)
    for _ in published:
        client.create_model_version(cfg.model_name, str(store))
    refs = tmp_path / "champion-images.txt"
    rel.record_images(client, cfg.model_name, published["1"])
    rel.move_champion_tags(published["1"], refs)
    client.set_registered_model_alias(cfg.model_name, "champion", "1")
    assert refs.read_text().splitlines() == [f"mlgate-{i.kind}={i.ref}" for i in published["1"]]
    rel.point_champion(published["2"][0])  # serving's champion tag moved; the alias never followed
    serving = "owner/repo-serving"
    assert registry.tags(serving)["champion"] == published["2"][0].digest

    said = rel.reconcile(client, cfg, names, refs)
    assert said == "moved serving champion back to version 1, the alias's"
    for image in published["1"]:
        assert registry.tags(f"owner/repo-{image.kind}")["champion"] == image.digest
    assert "as the alias does" in rel.reconcile(client, cfg, names, refs)

    # a rollback to 2 takes the digests recorded on version 2 (else v2's), and a moved v2 tag is refused
    assert rel.recorded_images(client, cfg.model_name, "2", names) == published["2"]
    _build(names["serving"], "v2", "serving-forged", tmp_path)
    subprocess.run(["docker", "push", "-q", f"{names['serving']}:v2"], check=True, capture_output=True)
    champion_before = registry.tags(serving)["champion"]
    with pytest.raises(rel.ReleaseError, match="the tag was moved"):
        rel.move_champion_tags(published["2"], refs)
    assert registry.tags(serving)["champion"] == champion_before  # nothing retagged
