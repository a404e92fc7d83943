#!/usr/bin/env python3
"""Pin images in a kustomization by digest: rewrites ``newName`` and ``digest`` of its ``images:`` entries.

    deploy/k8s/set-images.py deploy/k8s/overlays/production \\
        mlgate-serving=ghcr.io/org/mlgate-serving@sha256:<64 hex> \\
        mlgate-batch=ghcr.io/org/mlgate-batch@sha256:<64 hex>

Only the lines of the named entries change (comments and the rest of the file stay as they are). A reference
that is not ``<name>@sha256:<64 hex>``, or an image name the kustomization does not list, is refused.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REFERENCE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._/:-]*[a-z0-9])@(?P<digest>sha256:[0-9a-f]{64})$")


def set_image(text: str, image: str, reference: str) -> str:
    """``text`` (a kustomization) with the ``images:`` entry named ``image`` pointing at ``reference``."""
    match = REFERENCE.match(reference)
    if not match or ":" in match["name"].rsplit("/", 1)[-1]:
        raise ValueError(f"{image}={reference}: expected <registry>/<repository>@sha256:<64 hex digits>")
    lines = text.splitlines(keepends=True)
    start = next(
        (i for i, line in enumerate(lines) if re.fullmatch(rf"\s*- name: {re.escape(image)}\s*", line)), None
    )
    if start is None:
        raise ValueError(f"the kustomization has no images entry named {image!r}")
    indent = len(lines[start]) - len(lines[start].lstrip()) + 2
    end = start + 1
    while end < len(lines) and lines[end].strip() and len(lines[end]) - len(lines[end].lstrip()) >= indent:
        end += 1
    pinned = ("newName", "newTag", "digest")
    keep = [line for line in lines[start + 1 : end] if line.strip().split(":")[0] not in pinned]
    pad = " " * indent
    entry = [f"{pad}newName: {match['name']}\n", f"{pad}digest: {match['digest']}\n"]
    return "".join(lines[: start + 1] + entry + keep + lines[end:])


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not all("=" in a for a in argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[0]) / "kustomization.yaml"
    text = path.read_text()
    try:
        for pair in argv[1:]:
            image, _, reference = pair.partition("=")
            text = set_image(text, image, reference)
    except ValueError as exc:
        print(f"set-images: {path}: {exc}", file=sys.stderr)
        return 1
    path.write_text(text)
    print(f"set-images: {path}: {' '.join(argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
