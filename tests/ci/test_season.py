"""A season on GitHub: months of pushes, schedules, declined and failed releases, rollbacks, a fork's forged
state, a dispatch from a branch and an expired state, run as one chain under the emulator
(tests/ci/emulator.py), the registry state and the registry stand-in carried from event to event as GitHub
carries them.

After every event the invariants of the release path are checked against what the runs left behind:
- the champion alias (read from the registry state the next run restores: its pg_dump), the images'
  `champion` tag of both images, and the newest rendered production manifests name the same version;
- every version tag (`v<n>`, `sha-<commit>-v<n>`) was pushed once and never moved;
- each alias move has exactly one audit record, naming the move;
- the next run restores the state of the run that should have saved it, never a fork's.
No event is followed by a hand repair: each runs the workflows as a user's repository would.
"""

from __future__ import annotations

import json
import re
import subprocess  # nosec B404 - pg_restore with fixed arguments
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.ci import emulator as em

MODEL = "penguins-classifier"
KINDS = ("serving", "batch")
FORK = "someone/mlgate-fork"
CONFIG = "config/pipeline.yaml"
# Job results by job id (a matrix job's entries collapsed when they agree: `_results`).
RELEASED = {"publish": "success", "release": "success", "train": "success"}
NOTHING_TO_RELEASE = {"publish": "skipped", "release": "skipped", "train": "success"}
PUBLISHED_ONLY = {"publish": "success", "train": "success"}
REJECTED = {"publish": "skipped", "release": "skipped", "train": "failure"}
REFUSED = REJECTED  # the train job fails before anything else runs
WORKFLOWS = ("pipeline.yml", "rollback.yml")


def _pipeline(id: str, event: str, payload: dict, **kw: object) -> em.Case:
    return em.Case(id, "pipeline.yml", event, payload, **kw)  # type: ignore[arg-type]


def _rollback(id: str, version: str) -> em.Case:
    inputs = {"version": version, "reason": f"season: {id}"}
    return em.Case(id, "rollback.yml", "workflow_dispatch", em.workflow_dispatch(inputs), inputs=inputs)


def _estimator(text: str, **params: object) -> str:
    """The shipped config with other estimator params (a new commit: a change that must be released)."""
    cfg = yaml.safe_load(text)
    cfg["estimator"]["params"].update(params)
    return yaml.safe_dump(cfg, sort_keys=False)


def _worse(text: str) -> str:
    cfg = yaml.safe_load(text)
    cfg["estimator"] = {"class": "sklearn.dummy.DummyClassifier", "params": {"strategy": "most_frequent"}}
    return yaml.safe_dump(cfg, sort_keys=False)


# --- what the runs left: the registry state and the registry stand-in ------------------------------------


def _copy_rows(dump: Path, table: str) -> list[dict[str, str]]:
    """The rows of one table of a pg_dump (custom format), read with pg_restore: no server needed."""
    out = subprocess.run(  # nosec B603 B607
        ["pg_restore", "--data-only", "-t", table, "-f", "-", str(dump)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    m = re.search(rf"^COPY public\.{table} \((.*)\) FROM stdin;\n(.*?)^\\\.$", out, re.M | re.S)
    assert m, f"{dump}: no table {table}"
    columns = [c.strip() for c in m[1].split(",")]
    unescape = {"\\\\": "\\", "\\n": "\n", "\\t": "\t", "\\r": "\r"}
    rows = []
    for line in m[2].splitlines():
        values = [re.sub(r"\\[\\ntr]", lambda x: unescape[x[0]], v) for v in line.split("\t")]
        rows.append(dict(zip(columns, values)))
    return rows


@dataclass
class Registry:
    """The model registry as a pg_dump holds it."""

    champion: str | None
    versions: list[str]
    audit: list[dict]
    image_tags: dict[str, dict[str, str]]  # version -> kind -> name@digest

    @classmethod
    def read(cls, dump: Path) -> "Registry":
        aliases = {r["alias"]: r["version"] for r in _copy_rows(dump, "registered_model_aliases")}
        tags = {r["key"]: r["value"] for r in _copy_rows(dump, "registered_model_tags") if r["name"] == MODEL}
        audit = [json.loads(tags[k]) for k in sorted(tags) if k.startswith("mlgate.audit.")]
        versions = [r["version"] for r in _copy_rows(dump, "model_versions") if r["name"] == MODEL]
        images: dict[str, dict[str, str]] = {}
        for r in _copy_rows(dump, "model_version_tags"):
            if r["name"] == MODEL and r["key"].startswith("mlgate.image."):
                images.setdefault(r["version"], {})[r["key"].removeprefix("mlgate.image.")] = r["value"]
        return cls(aliases.get("champion"), sorted(versions, key=int), audit, images)


@dataclass
class Season:
    """The chain's memory: what the invariants are checked against after each event."""

    emu: em.Emulator
    state_run: int | None = None  # the run whose mlflow-state the next run must restore
    champion: str | None = None
    moves: int = 0  # audit records so far
    manifests: Path | None = None  # the newest rendered production manifests
    log: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def repo(self, kind: str) -> str:
        return f"{em.REPOSITORY}-{kind}"

    def image(self, kind: str) -> str:
        return f"{self.emu.registry.host}/{self.repo(kind)}"

    def registry(self) -> Registry | None:
        if self.state_run is None:
            return None
        return Registry.read(self.emu.artifacts / str(self.state_run) / "mlflow-state" / "mlflow.pgdump")

    def event(
        self,
        result: em.RunResult,
        expected: dict[str, str],
        saved: bool,
        champion: str | None,
        restored_from: int | None | str = "previous",
    ) -> Registry | None:
        """Check one event: its job results, which state it restored and saved, and every invariant."""
        self.log.append(f"{result.case.id} run {result.run_id}: {result.seconds:.0f}s: {result.timings()}")
        assert _results(result) == expected, f"{_results(result)}\n{result.failure_digest()}"
        restored = [line for line in _lines(result) if "restoring mlflow-state from run" in line]
        want = self.state_run if restored_from == "previous" else restored_from
        if want is None:
            assert restored == [], (result.case.id, restored)
        else:
            assert restored and all(f"from run {want} " in x for x in restored), (
                result.case.id,
                want,
                restored,
            )
        if saved:
            assert (result.artifact("mlflow-state") / "mlflow.pgdump").is_file(), result.case.id
            self.state_run = result.run_id
        else:
            assert not result.artifact("mlflow-state").exists(), f"{result.case.id} saved a state"
        if (result.artifact("k8s-production")).is_dir():
            self.manifests = result.artifact("k8s-production")
        return self.check(result.case.id, champion)

    def check(self, event: str, champion: str | None) -> Registry | None:
        """The invariants, after an event."""
        reg = self.registry()
        now = None if reg is None else reg.champion
        assert now == champion, f"{event}: champion {now}, expected {champion}"
        # each alias move: exactly one audit record, naming it
        if reg is not None:
            moved = now != self.champion
            assert len(reg.audit) == self.moves + int(moved), (event, reg.audit[self.moves :])
            if moved:
                assert (reg.audit[-1]["previous"], reg.audit[-1]["new"]) == (self.champion, now), reg.audit[
                    -1
                ]
            self.moves = len(reg.audit)
        self.champion = now
        # every version tag pushed once, never moved
        pushes: dict[tuple[str, str], list[str]] = {}
        for p in self.emu.registry.pushes:
            pushes.setdefault((p.repository, p.reference), []).append(p.digest)
        for (repo, tag), digests in pushes.items():
            if re.fullmatch(r"v\d+|sha-[0-9a-f]{7}-v\d+", tag):
                assert len(digests) == 1, f"{event}: {repo}:{tag} pushed {len(digests)} times"
                assert self.emu.registry.tags(repo)[tag] == digests[0], f"{event}: {repo}:{tag} moved"
        # the alias, the images' champion tag and the rendered manifests name the same version
        if now is not None:
            for kind in KINDS:
                tags = self.emu.registry.tags(self.repo(kind))
                assert tags.get("champion") == tags[f"v{now}"], f"{event}: {kind} champion tag is not v{now}"
                assert reg is not None and reg.image_tags.get(now, {}).get(kind) in (
                    None, f"{self.image(kind)}@{tags[f'v{now}']}"
                ), f"{event}: version {now}'s recorded {kind} image is not v{now}'s"  # fmt: skip
                assert self.manifests is not None, f"{event}: no production manifests rendered"
                rendered = "".join(p.read_text() for p in sorted(self.manifests.glob("*.yaml")))
                named = set(re.findall(rf"{re.escape(self.image(kind))}@(sha256:[0-9a-f]{{64}})", rendered))
                assert named == {tags[f"v{now}"]}, f"{event}: the manifests name {named} for {kind}"
        return reg


def _results(result: em.RunResult) -> dict[str, str]:
    """Each job's result; the entries of a matrix job as one when they agree (`publish`), else each."""
    by_job: dict[str, dict[str, str]] = {}
    for job in result.jobs:
        by_job.setdefault(job.job_id, {})[job.label] = job.result
    out = {}
    for job_id, labels in by_job.items():
        out.update({job_id: next(iter(labels.values()))} if len(set(labels.values())) == 1 else labels)
    return out


def _said(result: em.RunResult) -> str:
    """Everything the run's jobs printed or were told (act's log: commands' output, errors, annotations)."""
    return "\n".join(str(e.get("msg", "")) for e in em._read_log(result.log))


def _lines(result: em.RunResult) -> list[str]:
    return [line for job in {j.job_id for j in result.jobs} for line in result.output_lines(job)]


@pytest.mark.slow
@pytest.mark.container
def test_a_season_of_pushes_schedules_declines_failures_rollbacks_and_forgeries(
    emulator: em.Emulator,
) -> None:
    emu = emulator
    season = Season(emu)
    config = (emu.workspace / CONFIG).read_text()
    try:
        _season(emu, season, config)
    finally:
        print("\nseason (job results, seconds):\n  " + "\n  ".join(season.log))


def _season(emu: em.Emulator, season: Season, config: str) -> None:
    push = lambda id: _pipeline(id, "push", em.push("HEAD"))  # noqa: E731
    monday = lambda id: _pipeline(id, "schedule", em.schedule("23 4 * * 1"))  # noqa: E731

    # 1. the first push: the first release (no state was ever saved: the registry starts empty)
    first = emu.run(push("first push"))
    season.event(first, RELEASED, saved=True, champion="1", restored_from=None)
    _attested(season, first, "1")

    # 2. a release that fails after publish (the registry refuses the batch image's champion tag once): the
    # serving image's champion tag, already moved, goes back with the alias; v2 is pushed, the alias stays
    emu.commit({CONFIG: _estimator(config, n_estimators=120)}, "120 trees")
    emu.registry.refuse(season.repo("batch"), "champion")
    failed = emu.run(push("push, release fails after publish"))
    season.event(failed, {**RELEASED, "release": "failure"}, saved=True, champion="1")
    assert emu.registry.state.refusals[(season.repo("batch"), "champion")] == 0  # the outage was met
    assert "moved serving champion back to version 1, the alias's" in _said(failed), failed.failure_digest()

    # 3. a release cancelled while it waits for the production approval: v3 pushed, nothing moves
    emu.commit({CONFIG: _estimator(config, n_estimators=140)}, "140 trees")
    cancelled = emu.run(push("push, release cancelled"), job="publish", conclusion="cancelled")
    season.event(cancelled, PUBLISHED_ONLY, saved=True, champion="1")

    # 4. the next push, with a better model: released as v4, not jammed on v2's or v3's tags
    emu.commit({CONFIG: _estimator(config, n_estimators=150)}, "150 trees")
    better = emu.run(push("push, better model"))
    season.event(better, RELEASED, saved=True, champion="4")

    # 5-6. quiet months: the Monday schedule on unchanged data, config and commit releases nothing (exit 0);
    # 85 days on it restores the state (saved by the run before it) and saves it again, so 85 days after that
    # it is still there although the last change is 170 days old
    for days in (85, 85):
        emu.api.advance(days=days)
        quiet = emu.run(monday(f"schedule after {days} quiet days"))
        season.event(quiet, NOTHING_TO_RELEASE, saved=True, champion="4")
        assert quiet.returncode == 0 and "mlgate lineage: nothing changed" in _said(quiet)

    # 7. a fork's pull request from its own `main`, with a pipeline.yml that uploads a forged mlflow-state
    # (the first release's: champion 1): GitHub lists it among pipeline.yml's runs on branch `main`
    forged = emu.next_run_id = emu.next_run_id + 1
    _copy_artifact(emu.artifacts / str(first.run_id), emu.artifacts / str(forged), "mlflow-state")
    emu.api.add_run(forged, "pipeline.yml", "pipeline", "main", "pull_request", "success", FORK)
    season.check("a fork's forged state", "4")

    # 8. a workflow_dispatch from a branch: refused before anything is restored, built or pushed
    pushes = len(emu.registry.pushes)
    inputs = {"force": "true"}
    branch = emu.run(
        _pipeline("dispatch from a branch", "workflow_dispatch", em.workflow_dispatch(inputs, "feature"),
                  inputs=inputs, branch="feature")
    )  # fmt: skip
    season.event(branch, REFUSED, saved=False, champion="4", restored_from=None)
    assert "from main only; this workflow_dispatch is on refs/heads/feature" in _said(
        branch
    ), branch.failure_digest()
    assert len(emu.registry.pushes) == pushes

    # 9. rollback with an empty version: the previous champion from the audit trail (the fork's state of
    # event 7 is newer, and ignored)
    back = emu.run(_rollback("rollback, previous", ""))
    season.event(back, {"rollback": "success"}, saved=True, champion="1")

    # 10. a push while that rollback runs: both workflows are one concurrency group, so GitHub starts it when
    # the rollback ends (the emulator runs them in that order); its gate compares with the champion the
    # rollback left (1), and rejects this worse model: nothing built, v5 stays registered
    groups = [em.load_yaml(em.REPO / ".github" / "workflows" / w)["concurrency"] for w in WORKFLOWS]
    assert groups == [{"group": "mlgate-registry", "cancel-in-progress": False}] * 2
    emu.commit({CONFIG: _worse(config)}, "a worse estimator")
    pushes = len(emu.registry.pushes)
    worse = emu.run(push("push while the rollback runs, worse model"))
    reg = season.event(worse, REJECTED, saved=True, champion="1")
    assert len(emu.registry.pushes) == pushes and reg is not None and reg.versions[-1] == "5"
    assert "version 5 was rejected; champion stays at 1" in _said(worse), worse.failure_digest()

    # 11. a rollback to a version without images (5, rejected): refused, nothing moves (one to a version
    # that does not exist is refused by the same step: tests/model/test_promotion.py)
    refused = emu.run(_rollback("rollback to 5", "5"))
    season.event(refused, {"rollback": "failure"}, saved=True, champion="1")
    assert "version 5 has no serving image" in _said(refused), refused.failure_digest()

    # 12. rollback to a number
    forward = emu.run(_rollback("rollback to 4", "4"))
    season.event(forward, {"rollback": "success"}, saved=True, champion="4")

    # 13. the state expired (91 days without a run): the pipeline fails loudly, says how to recover, and does
    # not start from an empty registry
    emu.api.advance(days=91)
    pushes = len(emu.registry.pushes)
    lost = emu.run(monday("schedule after the state expired"))
    season.event(lost, REFUSED, saved=False, champion="4", restored_from=None)
    said = _said(lost)
    assert "cannot be restored" in said and "reset-registry" in said and "has expired" in said, said[-3000:]
    assert len(emu.registry.pushes) == pushes


def _copy_artifact(src: Path, dest: Path, name: str) -> None:
    import shutil

    shutil.copytree(src / name, dest / name)
    meta = json.loads((src / f"{name}.json").read_text())
    (dest / f"{name}.json").write_text(json.dumps({**meta, "run_id": dest.name}))


def _attested(season: Season, result: em.RunResult, version: str) -> None:
    """Both images logged in to and attested (provenance and SBOM) with the digest the registry holds."""
    logins = [(e["registry"], e["job"]) for e in result.records_of("login")]
    assert logins.count(("ghcr.io", "publish")) == 2, logins
    for kind in ("attestations", "sbom-attestations"):
        attested = {e["subject_name"]: e["subject_digest"] for e in result.records_of(kind)}
        for image in KINDS:
            pushed = season.emu.registry.tags(season.repo(image))[f"v{version}"]
            assert attested.get(season.image(image)) == pushed, (kind, image, attested)
