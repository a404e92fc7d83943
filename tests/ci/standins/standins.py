"""The composite stand-in actions' logic, run by python3 in the job container (stdlib only).

The harness (tests/ci/emulator.py) copies this file next to each stand-in's action.yml and mounts one folder
of the test run into every job container at the same path, named by environment variables:
  MLGATE_ACT_ARTIFACTS  <run id>/<artifact name>/ files + <run id>/<artifact name>.json metadata
  MLGATE_ACT_RECORDS    *.jsonl records of what stand-ins were asked (logins, attestations)
Usage: python3 standins.py setup-python|upload-artifact|download-artifact|login|attest|attest-sbom
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path


def _out(**values: str) -> None:
    with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as f:
        for k, v in values.items():
            f.write(f"{k}={v}\n")


def _fail(msg: str) -> None:
    print(f"::error::{msg}")
    sys.exit(1)


def _record(kind: str, entry: dict) -> None:
    folder = Path(os.environ.get("MLGATE_ACT_RECORDS") or _fail("MLGATE_ACT_RECORDS is not set"))
    folder.mkdir(parents=True, exist_ok=True)
    entry = {
        "run_id": os.environ.get("GITHUB_RUN_ID"),
        "workflow": os.environ.get("GITHUB_WORKFLOW"),
        "job": os.environ.get("GITHUB_JOB"),
        "at": time.time(),
        **entry,
    }
    with open(folder / f"{kind}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def setup_python() -> None:
    want = os.environ.get("WANT", "").strip()
    have = "%d.%d.%d" % sys.version_info[:3]
    if want and not (have == want or have.startswith(want + ".")):
        _fail(f"python-version {want} asked for, the runner image has {have}")
    hit = "false"
    if os.environ.get("CACHE") == "pip":
        deps = [
            p for line in os.environ.get("DEPS", "").splitlines() if line.strip() for p in glob.glob(line)
        ]
        if os.environ.get("DEPS", "").strip() and not deps:
            _fail(f"No file in {os.getcwd()} matched to [{os.environ['DEPS'].strip()}]")
        cache = Path.home() / ".cache" / "pip"
        hit = "true" if cache.is_dir() and any(cache.iterdir()) else "false"
        print(f"pip cache {cache}: {'restored' if hit == 'true' else 'empty'}")
    _out(**{"python-version": have, "python-path": shutil.which("python3") or "", "cache-hit": hit})
    print(f"setup-python stand-in: Python {have}")


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _lca(paths: list[Path]) -> Path:
    common = Path(os.path.commonpath([str(p) for p in paths]))
    return common


def upload_artifact() -> None:
    name = os.environ["INPUT_NAME"] or "artifact"
    hidden = os.environ.get("INPUT_INCLUDE_HIDDEN_FILES", "false") == "true"
    missing = os.environ.get("INPUT_IF_NO_FILES_FOUND", "warn")
    ws = Path(os.environ["GITHUB_WORKSPACE"])
    searches, files = [], []
    for line in os.environ["INPUT_PATH"].splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("!"):
            _fail("exclusion patterns are not supported by the upload-artifact stand-in")
        pattern = str(ws / line) if not os.path.isabs(line) else line
        for match in sorted(glob.glob(pattern, recursive=True)):
            p = Path(match)
            searches.append(p if p.is_dir() else p.parent)
            found = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
            base = p if p.is_dir() else p.parent
            files += [f for f in found if hidden or not _is_hidden(f.relative_to(base))]
    files = sorted(set(files))
    if not files:
        msg = f"No files were found with the provided path: {os.environ['INPUT_PATH'].strip()}."
        if missing == "error":
            _fail(msg + " No artifacts will be uploaded.")
        print(("::warning::" if missing == "warn" else "") + msg)
        return
    root = _lca(searches)
    run = os.environ["GITHUB_RUN_ID"]
    store = Path(os.environ.get("MLGATE_ACT_ARTIFACTS") or _fail("MLGATE_ACT_ARTIFACTS is not set")) / run
    dest, meta = store / name, store / f"{name}.json"
    if meta.exists() and os.environ.get("INPUT_OVERWRITE") != "true":
        _fail(
            f"Failed to CreateArtifact: an artifact with this name already exists on the workflow run: {name}"
        )
    shutil.rmtree(dest, ignore_errors=True)
    for f in files:
        target = dest / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    rel = [str(f.relative_to(root)) for f in files]
    size = sum(f.stat().st_size for f in files)
    artifact_id = str(int(time.time() * 1000))
    meta.write_text(
        json.dumps(
            {
                "id": artifact_id,
                "name": name,
                "run_id": run,
                "workflow": os.environ.get("GITHUB_WORKFLOW"),
                "job": os.environ.get("GITHUB_JOB"),
                "files": rel,
                "size_in_bytes": size,
                "retention_days": int(os.environ.get("INPUT_RETENTION_DAYS") or 0),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
    )
    _out(**{"artifact-id": artifact_id})
    print(f"upload-artifact stand-in: {name}: {len(rel)} files, {size} bytes (root {root})")


def download_artifact() -> None:
    name = os.environ.get("INPUT_NAME", "")
    run = os.environ.get("INPUT_RUN_ID") or os.environ["GITHUB_RUN_ID"]
    if os.environ.get("INPUT_RUN_ID") and not os.environ.get("INPUT_GITHUB_TOKEN"):
        _fail("downloading from another run needs github-token")
    store = Path(os.environ.get("MLGATE_ACT_ARTIFACTS") or _fail("MLGATE_ACT_ARTIFACTS is not set")) / run
    ws = Path(os.environ["GITHUB_WORKSPACE"])
    path = os.environ.get("INPUT_PATH") or "."
    dest = Path(path) if os.path.isabs(path) else ws / path
    names = [name] if name else sorted(p.stem for p in store.glob("*.json"))
    for n in names:
        src = store / n
        if not (store / f"{n}.json").exists():
            _fail(f"Unable to download artifact(s): Artifact not found for name: {n} (run {run})")
        target = dest if name else dest / n
        target.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, target, dirs_exist_ok=True)
        print(f"download-artifact stand-in: {n} from run {run} -> {target}")
    _out(**{"download-path": str(dest)})


def login() -> None:
    registry = os.environ.get("INPUT_REGISTRY", "")
    user = os.environ.get("INPUT_USERNAME", "")
    if not user or not os.environ.get("INPUT_PASSWORD"):
        _fail("Username and password required")
    _record("login", {"registry": registry, "username": user, "password_given": True})
    print(f"login-action stand-in: logged in to {registry or 'docker.io'} as {user}")


def attest(kind: str = "attestations", extra: dict | None = None) -> None:
    name = os.environ.get("INPUT_SUBJECT_NAME", "")
    digest = os.environ.get("INPUT_SUBJECT_DIGEST", "")
    if not os.environ.get("INPUT_SUBJECT_PATH"):
        if not name:
            _fail("One of subject-path or subject-name must be provided")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            _fail(f"subject-digest must be in the format 'sha256:<hex-digest>', got {digest!r}")
    push = os.environ.get("INPUT_PUSH_TO_REGISTRY") == "true"
    _record(kind, {"subject_name": name, "subject_digest": digest, "push_to_registry": push, **(extra or {})})
    _out(**{"attestation-id": digest.split(":")[-1][:16]})
    print(f"attest-build-provenance stand-in: {name}@{digest}")


def attest_sbom() -> None:
    path = Path(os.environ["GITHUB_WORKSPACE"]) / os.environ.get("INPUT_SBOM_PATH", "")
    if not path.is_file():
        _fail(f"SBOM file not found: {path}")
    try:
        sbom = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        _fail(f"{path} is not JSON: {exc}")
    if sbom.get("bomFormat") == "CycloneDX":
        fmt = "CycloneDX"
    elif "spdxVersion" in sbom:
        fmt = "SPDX"
    else:
        _fail(f"{path} is neither a CycloneDX nor an SPDX SBOM")
    components = len(sbom.get("components") or sbom.get("packages") or [])
    attest("sbom-attestations", {"sbom_format": fmt, "sbom_components": components})


if __name__ == "__main__":
    {
        "setup-python": setup_python,
        "upload-artifact": upload_artifact,
        "download-artifact": download_artifact,
        "login": login,
        "attest": attest,
        "attest-sbom": attest_sbom,
    }[sys.argv[1]]()
