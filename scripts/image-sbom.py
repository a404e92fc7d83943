#!/usr/bin/env python3
"""A CycloneDX 1.5 SBOM of the Python packages inside an image, from the image's own environment.

Usage: scripts/image-sbom.py IMAGE_REF OUT.json

The image's virtualenv (/opt/venv) and the base Python's site-packages are copied out of a created (never
started) container, and every installed distribution's metadata (*.dist-info/METADATA) becomes a component
with its name, version, license and purl. Standard library only: the publish job runs it with the runner's
python3. OS packages of the base image are not listed.
"""

from __future__ import annotations

import json
import re
import subprocess  # nosec B404 - docker is called with fixed argument lists
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from email.parser import HeaderParser
from pathlib import Path

ENV_DIRS = ("/opt/venv",)


def _docker(*args: str) -> str:
    return subprocess.run(  # nosec B603 B607 - fixed command, no shell
        ["docker", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def components(root: Path) -> list[dict]:
    """One CycloneDX component per installed distribution under ``root``, sorted by name."""
    found: dict[str, dict] = {}
    for meta in root.rglob("*.dist-info/METADATA"):
        headers = HeaderParser().parsestr(meta.read_text(encoding="utf-8", errors="replace"))
        name, version = headers.get("Name"), headers.get("Version")
        if not name or not version:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        component = {
            "type": "library",
            "bom-ref": f"pkg:pypi/{key}@{version}",
            "name": name,
            "version": version,
            "purl": f"pkg:pypi/{key}@{version}",
        }
        license_id = headers.get("License-Expression") or headers.get("License")
        if license_id and len(license_id) < 100:
            component["licenses"] = [{"expression": license_id.strip()}]
        found[key] = component
    return [found[k] for k in sorted(found)]


def sbom(image: str) -> dict:
    """The SBOM document of ``image`` (its id and repo digest recorded as the subject)."""
    container = _docker("create", image)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for env_dir in ENV_DIRS:
                _docker("cp", f"{container}:{env_dir}", str(Path(tmp) / env_dir.strip("/").replace("/", "_")))
            parts = components(Path(tmp))
    finally:
        _docker("rm", container)
    image_id = _docker("image", "inspect", "--format", "{{.Id}}", image)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "mlgate scripts/image-sbom.py"}]},
            "component": {
                "type": "container",
                "bom-ref": image_id,
                "name": image.split(":")[0],
                "version": image_id,
            },
        },
        "components": parts,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    document = sbom(argv[0])
    out = Path(argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(out)
    print(f"{out}: {len(document['components'])} Python packages in {argv[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
