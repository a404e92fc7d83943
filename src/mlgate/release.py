"""The release path of pipeline.yml and rollback.yml: a version's images pushed under immutable tags, the
images' `champion` tag pointed at a version's images by digest, and that tag kept on the champion alias's
images.

Every decision of the release lives here; make and the workflows call it in one line each. Images are named
``<registry>/<repository>-<kind>`` (kind: serving, batch) and tagged ``v<version>`` and
``sha-<short commit>-v<version>``, both immutable; ``champion`` is the one tag that moves, and only to a
digest that was published for the version and that ``v<version>`` still names. The digests a release used are
recorded on the model version (tags ``mlgate.image.<kind>``), so a rollback points at the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess  # nosec B404 - runs the docker CLI with fixed arguments
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlgate.io import write_text

if TYPE_CHECKING:
    from mlgate.config import PipelineConfig

log = logging.getLogger(__name__)

KINDS = ("serving", "batch")
CHAMPION_TAG = "champion"
IMAGE_TAG_PREFIX = "mlgate.image."  # model version tag: mlgate.image.<kind> = <name>@<digest>
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PUSHED = re.compile(r"digest: (sha256:[0-9a-f]{64})")
_MISSING = ("no such manifest", "manifest unknown", "not found")


class ReleaseError(RuntimeError):
    """A release step refused to go on: the message says what is wrong and what was left as it was."""


@dataclass(frozen=True)
class Image:
    """One image of a model version, as the registry holds it."""

    kind: str
    name: str  # <registry>/<repository>-<kind>
    version: str
    digest: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.digest}"


def image_name(registry: str, repository: str, kind: str) -> str:
    """``ghcr.io/owner/repo-serving``: the registry's host, the repository in lower case, the kind."""
    if kind not in KINDS:
        raise ReleaseError(f"unknown image kind {kind!r}: use {' or '.join(KINDS)}")
    return f"{registry}/{repository.lower()}-{kind}"


def version_tags(version: str, short_sha: str) -> tuple[str, str]:
    """The two immutable tags of a version's image: ``sha-<short sha>-v<version>`` and ``v<version>``."""
    return f"sha-{short_sha}-v{check_version(version)}", f"v{version}"


def check_version(version: str | None) -> str:
    """A model version number as a string; anything else is refused (it reaches tags and shell commands)."""
    if not version or not str(version).isdigit():
        raise ReleaseError(f"not a model version number: {version!r}")
    return str(int(version))


def bundle_version(bundle: Path, override: str | None = None) -> str:
    """The model version of a bundle (``mlgate_bundle.json``, written by ``mlgate model-bundle``), or
    ``override`` (the publish job's ``MODEL_VERSION``) when given."""
    from mlgate.modelio import BUNDLE_FILE

    if override:
        return check_version(override)
    meta = bundle / BUNDLE_FILE
    try:
        return check_version(json.loads(meta.read_text()).get("version"))
    except (OSError, ValueError) as exc:
        raise ReleaseError(
            f"MODEL_VERSION must be a model version number, and {meta} has none ({exc}): run make ci-bundle"
        ) from None


def check_ref(ref: str, default_branch: str, event: str) -> None:
    """Refuse a release run that is not on the default branch (a ``workflow_dispatch`` from a branch)."""
    if ref != f"refs/heads/{default_branch}":
        raise ReleaseError(
            f"the pipeline trains and publishes from {default_branch} only; this {event or 'run'} is on "
            f"{ref or 'no ref'}: run it from {default_branch} (a branch is checked by its pull request)"
        )


def pushed_digest(output: str) -> str:
    """The manifest digest ``docker push`` printed (its last ``digest: sha256:...``)."""
    found = _PUSHED.findall(output)
    if not found:
        raise ReleaseError(f"docker push printed no digest: {output.strip()[-300:]!r}")
    return found[-1]


# --- the engine -------------------------------------------------------------------------------------------


def _docker(*args: str) -> subprocess.CompletedProcess:
    log.debug("docker %s", " ".join(args))
    return subprocess.run(  # nosec B603 B607 - the docker CLI with arguments built here
        ["docker", *args], capture_output=True, text=True, timeout=1800
    )


def _checked(*args: str) -> str:
    res = _docker(*args)
    if res.returncode != 0:
        raise ReleaseError(f"docker {' '.join(args)} failed: {(res.stderr or res.stdout).strip()[-500:]}")
    return res.stdout


def resolve(ref: str) -> str | None:
    """The manifest digest the registry holds for ``name:tag`` (None when the tag does not exist).

    Raises:
        ReleaseError: the registry could not be asked (so whether the tag exists is unknown).
    """
    res = _docker("manifest", "inspect", "--verbose", ref)
    if res.returncode != 0:
        text = (res.stderr + res.stdout).lower()
        if any(m in text for m in _MISSING):
            return None
        raise ReleaseError(f"cannot tell what {ref} names: {(res.stderr or res.stdout).strip()[-300:]}")
    try:
        data = json.loads(res.stdout)
        digest = data["Descriptor"]["digest"]
    except (ValueError, KeyError, TypeError):
        raise ReleaseError(f"{ref}: not a single-image manifest (docker manifest inspect)") from None
    if not _DIGEST.fullmatch(digest):
        raise ReleaseError(f"{ref}: unexpected digest {digest!r}")
    return digest


# --- publish ----------------------------------------------------------------------------------------------


def publish(name: str, kind: str, version: str, short_sha: str, record: Path) -> Image:
    """Push the locally built ``name:<tag>`` images under the version's two immutable tags.

    A tag that exists already is never overwritten, and a registry that cannot say whether it exists stops the
    push. Both tags must name one digest, which ``record`` (JSON) keeps for the release job.

    Returns:
        The published image.
    """
    tags = version_tags(version, short_sha)
    for tag in tags:
        existing = resolve(f"{name}:{tag}")
        if existing is not None:
            raise ReleaseError(
                f"{name}:{tag} exists already ({existing}): version tags are never overwritten. A version "
                "number is used again only when the registry state went back (docs/ci.md, recovery)"
            )
    digests = {pushed_digest(_checked("push", f"{name}:{tag}")) for tag in tags}
    if len(digests) != 1:
        raise ReleaseError(f"{name}: the tags {tags} were pushed as different manifests {sorted(digests)}")
    image = Image(kind, name, check_version(version), digests.pop())
    held = resolve(f"{name}:{tags[-1]}")
    if held != image.digest:
        raise ReleaseError(f"{name}:{tags[-1]} names {held} after the push of {image.digest}")
    record.parent.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps(asdict(image), indent=2) + "\n", record)
    log.info("published %s as %s", image.ref, ", ".join(tags))
    return image


def read_published(folder: Path, version: str) -> list[Image]:
    """The images the publish jobs recorded for ``version`` (``<folder>/<kind>.json``, one per kind)."""
    images = []
    for kind in KINDS:
        path = folder / f"{kind}.json"
        try:
            image = Image(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ReleaseError(f"{path}: no published {kind} image ({exc})") from None
        if (
            image.kind != kind
            or image.version != check_version(version)
            or not _DIGEST.fullmatch(image.digest)
        ):
            raise ReleaseError(
                f"{path}: records {image.ref} of version {image.version}, not version {version}"
            )
        images.append(image)
    return images


# --- the champion tag -------------------------------------------------------------------------------------


def verify(image: Image) -> None:
    """``v<version>`` still names the digest that was published for the version (GHCR lets a writer move a
    tag; a moved one is refused, never followed)."""
    held = resolve(f"{image.name}:v{image.version}")
    if held is None:
        raise ReleaseError(
            f"{image.name}:v{image.version} does not exist: version {image.version} has no image"
        )
    if held != image.digest:
        raise ReleaseError(
            f"{image.name}:v{image.version} names {held}, but version {image.version} was released as "
            f"{image.digest}: the tag was moved; nothing is retagged"
        )


def point_champion(image: Image) -> None:
    """Make ``name:champion`` name exactly ``image.digest`` (pulled by digest, so the bytes are checked)."""
    _checked("pull", "--quiet", image.ref)
    _checked("tag", image.ref, f"{image.name}:{CHAMPION_TAG}")
    moved = pushed_digest(_checked("push", f"{image.name}:{CHAMPION_TAG}"))
    if moved != image.digest:
        raise ReleaseError(f"{image.name}:{CHAMPION_TAG} was stored as {moved}, not as {image.digest}")
    log.info("%s:%s -> %s (version %s)", image.name, CHAMPION_TAG, image.digest, image.version)


def write_champion_refs(images: list[Image], path: Path) -> None:
    """``mlgate-<kind>=<name>@<digest>`` per line: what ``make ci-k8s-manifests`` pins the manifests to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text("".join(f"mlgate-{i.kind}={i.ref}\n" for i in images), path)


def record_images(client: Any, model_name: str, images: list[Image]) -> None:
    """Keep the digests on the model version (``mlgate.image.<kind>``), for rollbacks and audits."""
    for image in images:
        client.set_model_version_tag(model_name, image.version, IMAGE_TAG_PREFIX + image.kind, image.ref)


def recorded_images(client: Any, model_name: str, version: str, names: dict[str, str]) -> list[Image]:
    """A version's images: the digests recorded on it, else (a version released before they were recorded)
    what its ``v<version>`` tag names now."""
    tags = client.get_model_version(model_name, check_version(version)).tags
    images = []
    for kind in KINDS:
        ref = tags.get(IMAGE_TAG_PREFIX + kind)
        if ref:
            name, _, digest = ref.partition("@")
            if name != names[kind]:
                raise ReleaseError(f"version {version}'s {kind} image is {name}, not {names[kind]}")
        else:
            digest = resolve(f"{names[kind]}:v{version}") or ""
            if not digest:
                raise ReleaseError(
                    f"version {version} has no {kind} image ({names[kind]}:v{version} is missing)"
                )
        images.append(Image(kind, names[kind], str(version), digest))
    return images


def move_champion_tags(images: list[Image], refs_path: Path) -> None:
    """Verify each image, then point every ``champion`` tag at it; the references go to ``refs_path``."""
    for image in images:
        verify(image)
    for image in images:
        point_champion(image)
    write_champion_refs(images, refs_path)


def reconcile(client: Any, cfg: PipelineConfig, names: dict[str, str], refs_path: Path) -> str:
    """Make the images' ``champion`` tag name the champion alias's images (after a release or rollback that
    failed, was cancelled or timed out between the tag and the alias). Returns what was done, in a line."""
    from mlgate.models import champion_version

    champion = champion_version(cfg, client)
    if champion is None:
        alias = cfg.promotion.aliases.champion
        return f"{cfg.model_name} has no {alias!r}: the images' {CHAMPION_TAG} tag is left as it is"
    version = str(champion.version)
    images = recorded_images(client, cfg.model_name, version, names)
    stale = [i for i in images if resolve(f"{i.name}:{CHAMPION_TAG}") != i.digest]
    for image in stale:
        verify(image)
        point_champion(image)
    write_champion_refs(images, refs_path)
    if not stale:
        return f"the images' {CHAMPION_TAG} tag names version {version}'s images, as the alias does"
    return f"moved {', '.join(i.kind for i in stale)} {CHAMPION_TAG} back to version {version}, the alias's"


def release_environment() -> tuple[str, str, str]:
    """GITHUB_REF, the event's name and the repository's default branch, as a runner gives them."""
    event_path = os.environ.get("GITHUB_EVENT_PATH", "")
    default = "main"
    if event_path and Path(event_path).is_file():
        repo = json.loads(Path(event_path).read_text()).get("repository") or {}
        default = repo.get("default_branch") or default
    return os.environ.get("GITHUB_REF", ""), os.environ.get("GITHUB_EVENT_NAME", ""), default
