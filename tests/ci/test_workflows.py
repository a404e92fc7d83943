"""The workflows are thin, pinned and least-privilege: what GitHub would run is checked here, statically."""

from __future__ import annotations

import re
import subprocess  # nosec B404 - tests run fixed commands
import sys

import pytest

from tests.ci.workflows import (
    REPO,
    action_files,
    all_steps,
    check_run,
    commands,
    load,
    makefile_targets,
    workflow_files,
)

PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s+[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+\s*$")
WORKFLOW_NAMES = {"ci.yml", "pipeline.yml", "rollback.yml"}


def _wf(name: str) -> dict:
    return load(REPO / ".github" / "workflows" / name)


def test_the_three_workflows_exist() -> None:
    assert WORKFLOW_NAMES <= {p.name for p in workflow_files()}


def test_every_run_step_is_a_make_target_or_an_allowed_command() -> None:
    targets = makefile_targets()
    problems = [
        f"{step.where}: {problem}"
        for step in all_steps()
        if "run" in step.raw
        for problem in check_run(step.raw["run"], targets)
    ]
    assert problems == []


def test_the_run_checker_catches_what_it_should() -> None:
    targets = {"lint", "test"}
    assert check_run("make lint test", targets) == []
    assert check_run('make --silent lint >> "$GITHUB_OUTPUT"', targets) == []
    assert check_run('make lint IMAGE="$IMAGE"', targets) == []
    assert check_run("make deploy", targets) == ["make target 'deploy' does not exist in the Makefile"]
    assert "command 'python' is not" in check_run("python -m mlgate run", targets)[0]
    assert "command 'pip' is not" in check_run("make lint && pip install x", targets)[0]
    assert "expression" in check_run('echo "${{ github.event.pull_request.title }}"', targets)[0]
    assert commands("A=1 make lint | tee log; echo done") == [
        ["make", "lint"],
        ["tee", "log"],
        ["echo", "done"],
    ]


def test_makefile_targets_are_read_from_rule_lines() -> None:
    targets = makefile_targets()
    assert {
        "lint",
        "test",
        "pipeline",
        "ci-pipeline",
        "ci-promote",
        "gate-status",
        "report-summary",
    } <= targets
    assert {"validate", "train", "ci-validate", "ci-register"} <= targets  # multi-target rules
    assert "PATH" not in targets and "CONFIG" not in targets


def test_every_action_is_pinned_to_a_commit_sha_with_its_version() -> None:
    unpinned = []
    for path in [*workflow_files(), *action_files()]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            local = re.match(r"^\s*(?:-\s+)?uses:\s+\./", line)
            if re.match(r"^\s*(?:-\s+)?uses:", line) and not local and not PINNED.match(line):
                unpinned.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert unpinned == []
    assert any("uses:" in p.read_text() for p in workflow_files())
    assert {p.parent.name for p in action_files()} == {"setup", "stack-up", "stack-save"}


def test_no_expression_of_event_data_inside_run() -> None:
    for path in workflow_files():
        for step in all_steps():
            assert "${{" not in step.raw.get("run", ""), step.where
        # and nowhere in a run block of the raw text either (e.g. in a composite or a multi-line script)
        text = path.read_text()
        for block in re.findall(r"run: \|\n((?:\s{8,}.*\n)+)", text):
            assert "github.event" not in block, path.name


def test_checkouts_do_not_keep_the_token() -> None:
    for step in all_steps():
        if step.raw.get("uses", "").startswith("actions/checkout@"):
            assert step.raw.get("with", {}).get("persist-credentials") is False, step.where


# What each write (or extra read) permission is for: a job may ask for it only when one of its steps needs it.
_NEEDS = {
    "packages": lambda job: any(t in job for t in ("ci-image-push", "ci-champion-images", "ci-reconcile")),
    "pull-requests": lambda job: "sticky-comment.js" in job,
    "id-token": lambda job: "actions/attest-" in job,
    "attestations": lambda job: "actions/attest-" in job,
    # last-state.js looks up the last saved state through the runs API (state 'last', the default)
    "actions": lambda job: re.search(r"'state': ('last'|\"[^\"]*'last'[^\"]*\")", job) is not None,
}


def _with_defaults(job: dict) -> dict:
    """The job with the inputs of its local actions' steps completed by their defaults."""
    job = {**job, "steps": [dict(s) for s in job.get("steps", [])]}
    for step in job["steps"]:
        if step.get("uses", "").startswith("./.github/actions/"):
            action = load(REPO / step["uses"] / "action.yml")
            defaults = {k: v["default"] for k, v in action.get("inputs", {}).items() if "default" in v}
            step["with"] = {**defaults, **step.get("with", {})}
    return job


def test_permissions_are_least_privilege() -> None:
    for path in workflow_files():
        wf = load(path)
        assert wf.get("permissions") == {"contents": "read"}, f"{path.name}: top level must be contents: read"
        for job_id, job in wf["jobs"].items():
            perms = job.get("permissions", {})
            assert isinstance(perms, dict), f"{path.name}:{job_id}: permissions must be a mapping"
            text = str(_with_defaults(job))
            for scope, level in perms.items():
                if scope == "contents":
                    assert level == "read", f"{path.name}:{job_id}: contents: {level}"
                    continue
                assert scope in _NEEDS, f"{path.name}:{job_id}: unexpected permission {scope}"
                assert _NEEDS[scope](text), f"{path.name}:{job_id}: {scope}: {level} but no step needs it"
            for scope, needed in _NEEDS.items():
                if needed(text):
                    assert scope in perms, f"{path.name}:{job_id}: needs {scope} but does not ask for it"


def test_ci_runs_on_pull_requests_with_path_filters_and_cancels_superseded_runs() -> None:
    wf = _wf("ci.yml")
    assert {"pull_request", "push"} <= set(wf["on"])
    assert wf["on"]["pull_request"].get("paths-ignore") or wf["on"]["pull_request"].get("paths")
    assert "pull_request.number" in wf["concurrency"]["group"]
    assert "pull_request" in str(wf["concurrency"]["cancel-in-progress"])
    runs = " ".join(s.raw.get("run", "") for s in all_steps() if s.workflow == "ci.yml")
    for target in (
        "make lint",
        "make test",
        "make pipeline",
        "make report-summary",
        "ci-image",
        "ci-image-smoke",
    ):
        assert target in runs
    assert "ci-image-push" not in runs  # pull requests build images, never push them
    comment = wf["jobs"]["comment"]
    assert "head.repo.full_name == github.repository" in comment["if"]  # forks: no write token, no comment
    assert wf["jobs"]["images"]["strategy"]["matrix"]["image"] == ["serving", "batch"]


def test_pipeline_gates_then_publishes_then_moves_the_champion_last() -> None:
    wf = _wf("pipeline.yml")
    assert {"push", "schedule", "workflow_dispatch"} <= set(wf["on"])
    assert wf["on"]["push"]["branches"] == ["main"]
    assert wf["concurrency"]["cancel-in-progress"] is False
    train = [s.raw.get("run", "") for s in all_steps() if s.workflow == "pipeline.yml" and s.job == "train"]
    order = ["make ci-check-ref", "make ci-check-registry", "make ci-validate"]
    order += ['make --silent ci-lineage >> "$GITHUB_OUTPUT"', "make ci-train"]
    order += ["make ci-evaluate", "make ci-register", "make ci-promote DRY_RUN=true", "mlgate gate-status"]
    order += ["make ci-bundle"]
    positions = [train.index(cmd) for cmd in order]
    assert positions == sorted(positions)
    assert "postgres" in wf["jobs"]["train"]["services"]
    publish, release = wf["jobs"]["publish"], wf["jobs"]["release"]
    assert publish["needs"] == "train"
    assert "make --silent ci-image-push" in str(publish)
    assert set(release["needs"]) == {"train", "publish"}
    assert release["environment"] == "production"
    assert wf["jobs"]["train"]["environment"] != "production"
    runs = [s.raw.get("run", "") for s in all_steps() if s.workflow == "pipeline.yml" and s.job == "release"]
    # the images' champion tag first, the manifests with its digests, then the alias (the last registry
    # change), then its verdict; the manifests are published only once the alias moved
    assert (
        runs.index("make ci-champion-images PUBLISHED=outputs/published")
        < runs.index("make ci-k8s-manifests")
        < runs.index("make ci-promote")
        < runs.index("mlgate gate-status")
    )
    _manifests_published_after(release)
    for job in (publish, release):  # an unchanged lineage releases nothing
        assert "needs.train.outputs.changed == 'true'" in job["if"]


def test_pipeline_and_rollback_are_one_writer_at_a_time_never_cancelled_halfway() -> None:
    """Each run restores the state the run before it saved: two at once would each save their own copy."""
    pipeline, rollback = _wf("pipeline.yml"), _wf("rollback.yml")
    assert pipeline["concurrency"] == rollback["concurrency"] == {
        "group": "mlgate-registry", "cancel-in-progress": False
    }  # fmt: skip


def test_only_jobs_with_an_environment_read_secrets() -> None:
    for path in workflow_files():
        for job_id, job in load(path)["jobs"].items():
            if "secrets." in str(job):
                assert job.get("environment"), f"{path.name}:{job_id} reads secrets without an environment"


def test_the_gate_verdict_is_read_from_mlgate_itself_not_through_make() -> None:
    """make ends with exit 2 whenever a recipe fails, so a step running `make gate-status` (or a target that
    calls it) would turn the documented exit 3 (rejected) into 2."""
    gate_steps = [s for s in all_steps() if "gate-status" in s.raw.get("run", "")]
    assert gate_steps
    for step in gate_steps:
        assert step.raw["run"].strip() == "mlgate gate-status", step.where
    recipe = subprocess.run(
        ["make", "-n", "ci-promote", "CONFIG=config/pipeline.yaml"], cwd=REPO, capture_output=True, text=True
    ).stdout
    assert "gate-status" not in recipe


def test_make_targets_the_pipeline_uses_exist_and_ci_steps_use_mlflow_run() -> None:
    out = subprocess.run(
        ["make", "-n", "ci-validate", "ci-promote", "CONFIG=config/pipeline.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "mlflow-run validate" in out and "mlflow-run promote -P dry_run=false" in out


def test_rollback_is_manual_protected_and_moves_the_alias_last() -> None:
    wf = _wf("rollback.yml")
    assert set(wf["on"]) == {"workflow_dispatch"}
    assert wf["on"]["workflow_dispatch"]["inputs"]["version"]["default"] == ""
    job = wf["jobs"]["rollback"]
    assert job["environment"] == "production"
    runs = [s.raw.get("run", "") for s in all_steps() if s.workflow == "rollback.yml"]
    plan = runs.index('make --silent ci-rollback-plan >> "$GITHUB_OUTPUT"')
    assert plan < runs.index("make ci-champion-images") < runs.index("make ci-k8s-manifests")
    assert runs.index("make ci-k8s-manifests") < runs.index("make ci-rollback")
    _manifests_published_after(job)


def _manifests_published_after(job: dict) -> None:
    """The k8s-production artifact is uploaded after the alias moved, and then, whatever happened before
    (failure, cancel, timeout), the images' champion tag is made to follow the alias (make ci-reconcile)."""
    steps = job["steps"]
    runs = [s.get("run", "") for s in steps]
    alias = max(i for i, r in enumerate(runs) if r in ("make ci-promote", "make ci-rollback"))
    upload = next(i for i, s in enumerate(steps) if s.get("with", {}).get("name") == "k8s-production")
    assert alias < upload and steps[upload]["with"]["path"] == "outputs/k8s/"
    (back,) = [s for s in steps[upload:] if s.get("run") == "make ci-reconcile"]
    assert back["if"].startswith("${{ always() ")


def test_ci_rollback_refuses_a_version_that_is_not_a_number() -> None:
    res = subprocess.run(
        ["make", "--no-print-directory", "ci-rollback"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "VERSION": '1"; touch pwned; "', "HOME": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0
    assert "VERSION must be a model version number" in res.stderr
    assert not (REPO / "pwned").exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
