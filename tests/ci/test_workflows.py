"""The workflows are thin, pinned and least-privilege: what GitHub would run is checked here, statically."""

from __future__ import annotations

import re
import subprocess  # nosec B404 - tests run fixed commands
import sys

import pytest

from tests.ci.workflows import REPO, all_steps, check_run, commands, load, makefile_targets, workflow_files

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
    for path in workflow_files():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"^\s*(?:-\s+)?uses:", line) and not PINNED.match(line):
                unpinned.append(f"{path.name}:{n}: {line.strip()}")
    assert unpinned == []
    assert any("uses:" in p.read_text() for p in workflow_files())


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
    "packages": lambda job: "ci-image-push" in job or "ci-retag-champion" in job,
    "pull-requests": lambda job: "sticky-comment.js" in job,
    "id-token": lambda job: "actions/attest-build-provenance@" in job,
    "attestations": lambda job: "actions/attest-build-provenance@" in job,
    "actions": lambda job: "last-state.js" in job,
}


def test_permissions_are_least_privilege() -> None:
    for path in workflow_files():
        wf = load(path)
        assert wf.get("permissions") == {"contents": "read"}, f"{path.name}: top level must be contents: read"
        for job_id, job in wf["jobs"].items():
            perms = job.get("permissions", {})
            assert isinstance(perms, dict), f"{path.name}:{job_id}: permissions must be a mapping"
            text = str(job)
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


def test_pipeline_runs_the_entry_points_in_order_then_the_gate_then_the_images() -> None:
    wf = _wf("pipeline.yml")
    assert {"push", "schedule", "workflow_dispatch"} <= set(wf["on"])
    assert wf["on"]["push"]["branches"] == ["main"]
    assert wf["concurrency"]["cancel-in-progress"] is False
    assert wf["concurrency"]["group"] == _wf("rollback.yml")["concurrency"]["group"]
    train = [s.raw.get("run", "") for s in all_steps() if s.workflow == "pipeline.yml" and s.job == "train"]
    order = ["make ci-validate", "make ci-train", "make ci-evaluate", "make ci-register", "make ci-promote"]
    order.append("make model-bundle model-bundle-batch")
    positions = [train.index(cmd) for cmd in order]
    assert positions == sorted(positions)
    assert "postgres" in wf["jobs"]["train"]["services"]
    publish = wf["jobs"]["publish"]
    assert publish["needs"] == "train"
    assert "make --silent ci-image-push" in str(publish)


def test_make_targets_the_pipeline_uses_exist_and_ci_steps_use_mlflow_run() -> None:
    out = subprocess.run(
        ["make", "-n", "ci-validate", "ci-promote", "CONFIG=config/pipeline.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "mlflow run . --env-manager local" in out and "-e validate" in out and "-e promote" in out


def test_rollback_is_manual_protected_and_defaults_to_the_previous_champion() -> None:
    wf = _wf("rollback.yml")
    assert set(wf["on"]) == {"workflow_dispatch"}
    assert wf["on"]["workflow_dispatch"]["inputs"]["version"]["default"] == ""
    job = wf["jobs"]["rollback"]
    assert job["environment"] == "production"
    runs = [s.raw.get("run", "") for s in all_steps() if s.workflow == "rollback.yml"]
    assert runs.index("make ci-rollback") < runs.index("make ci-retag-champion")


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
