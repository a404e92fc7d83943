"""Every job of the three workflows run locally under act (tests/ci/emulator.py), with stand-ins for GitHub.

The runs are data (CASES, and EXPECTED: the job results each must end with); each test runs one case and
asserts on what happened: act's exit code and job results, artifacts, the API calls, the images.
pipeline.yml and rollback.yml run as one chain of events in test_season.py. Jobs the emulator cannot run are
data too (emulator.UNRUNNABLE), with their reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ci import emulator as em

PR_NUMBER, FORK_PR_NUMBER = 7, 8
FORK = "someone/mlgate-fork"
MARKER = "<!-- mlgate-evaluation-report -->"


def _case(id: str, workflow: str, event: str, payload: dict, **kw: object) -> em.Case:
    return em.Case(id, workflow, event, payload, **kw)  # type: ignore[arg-type]


# The runs, as GitHub would be given them. "HEAD" in a payload is replaced by the snapshot's commit.
CASES = {
    "ci-pr-same-repo": _case(
        "ci-pr-same-repo", "ci.yml", "pull_request", em.pull_request(PR_NUMBER, em.REPOSITORY, "HEAD"),
        branch="feature",
    ),
    "ci-pr-fork": _case(
        "ci-pr-fork", "ci.yml", "pull_request", em.pull_request(FORK_PR_NUMBER, FORK, "HEAD"),
        branch="feature",
    ),
}  # fmt: skip


# The job results each case must end with (a matrix job is "<job> (<value>)"; ci.yml's `test` job is not
# run: emulator.UNRUNNABLE).
EXPECTED = {
    "ci-pr-same-repo": {
        "comment": "success", "images (batch)": "success", "images (serving)": "success", "lint": "success",
        "smoke": "success",
    },
    "ci-pr-fork (dry run, job comment)": {"comment": "skipped", "smoke": "success"},
    "ci-pr-same-repo (dry run, job comment)": {"comment": "success", "smoke": "success"},
}  # fmt: skip


def _ok(result: em.RunResult, expected: dict[str, str]) -> None:
    assert result.results() == expected, result.failure_digest()
    assert (result.returncode == 0) == all(
        v in ("success", "skipped") for v in expected.values()
    ), f"act exit code {result.returncode}"


# --- static: the harness itself ------------------------------------------------------------------------


def test_the_jobs_the_emulator_does_not_run_are_listed_with_their_reason() -> None:
    assert set(em.UNRUNNABLE) == {("ci.yml", "test"), ("ci.yml", "test-slow")}
    assert all("recursion" in why for why in em.UNRUNNABLE.values())
    for workflow, job in em.UNRUNNABLE:
        wf = em.load_yaml(em.REPO / ".github" / "workflows" / workflow)
        assert job in wf["jobs"], f"{workflow}: no job {job} any more: drop it from UNRUNNABLE"
        assert "make test" in str(wf["jobs"][job]["steps"])


def test_every_action_the_workflows_use_has_a_stand_in() -> None:
    for path in sorted((em.REPO / ".github" / "workflows").glob("*.yml")):
        for ref in em.remote_actions(em.load_yaml(path), em.REPO):
            repo = "/".join(ref.split("@")[0].split("/")[:2])
            assert repo in em.ACTIONS, f"{path.name}: {ref} has no stand-in in tests/ci/standins/actions"
            assert (em.STANDINS / "actions" / em.ACTIONS[repo] / "action.yml").exists()


def test_the_workflow_copy_drops_unrunnable_jobs_and_replaces_service_images(tmp_path: Path) -> None:
    src = tmp_path / "ci.yml"
    src.write_text(
        "on: {pull_request: {}}\njobs:\n"
        "  test: {runs-on: ubuntu-24.04, steps: [{run: make test}]}\n"
        "  after: {needs: test, runs-on: ubuntu-24.04, steps: [{run: make lint}]}\n"
        "  db:\n    runs-on: ubuntu-24.04\n"
        "    services: {postgres: {image: 'postgres:16-bookworm@sha256:" + "0" * 64 + "'}}\n"
        "    steps: [{run: make ci-stack-up, env: {PG: '${{ job.services.postgres.id }}'}}]\n"
    )
    wf, replaced = em.rewrite_workflow(src, tmp_path / "copy.yml", {"postgres": "stand-in:1"})
    assert set(wf["jobs"]) == {"db"}  # test (recursion) and the job that needs it
    planned, _ = em.rewrite_workflow(src, tmp_path / "plan.yml", {"postgres": "stand-in:1"}, dryrun=True)
    assert set(planned["jobs"]) == {"test", "after", "db"}  # a dry run runs nothing: every job is planned
    assert wf["jobs"]["db"]["services"]["postgres"]["image"] == "stand-in:1"
    assert list(replaced.values()) == ["stand-in:1"]
    # act leaves job.services empty: the emulator's first step fills what the job reads from env
    first, step = wf["jobs"]["db"]["steps"]
    assert first["name"].startswith("emulator:") and first["env"] == {
        "MLGATE_ACT_SERVICES": "postgres=stand-in:1"
    }
    assert step == {"run": "make ci-stack-up", "env": {"PG": "${{ env.MLGATE_ACT_SERVICE_POSTGRES_ID }}"}}
    assert em.load_yaml(tmp_path / "copy.yml")["on"] == {"pull_request": {}}  # `on` stays a string key


# --- ci.yml -----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.container
def test_ci_same_repo_pull_request_lints_smokes_comments_and_builds_both_images(
    emulator: em.Emulator,
) -> None:
    result = emulator.run(CASES["ci-pr-same-repo"])
    _ok(result, EXPECTED["ci-pr-same-repo"])
    report = result.artifact("evaluation-report") / "report.md"
    assert report.read_text().startswith(MARKER)
    for kind in ("serving", "batch"):
        assert (result.artifact("model-bundle") / kind / "model" / "MLmodel").exists()
    # the sticky comment: listed, then created once with the report, through the API stand-in
    path = f"/repos/{em.REPOSITORY}/issues/{PR_NUMBER}/comments"
    calls = [(c.method, c.path) for c in emulator.api.calls(path_re=f"/issues/{PR_NUMBER}/")]
    assert calls == [("GET", path), ("POST", path)]
    (comment,) = emulator.api.comments(PR_NUMBER)
    assert comment["body"] == report.read_text()
    assert all(c.authorization == "token emulated-token" for c in emulator.api.calls(path_re="/issues/"))
    # both images were built through the socket and smoke-run
    for kind in ("serving", "batch"):
        assert any(f"image smoke ok: {kind}" in line for line in result.output_lines("images", image=kind))


@pytest.mark.slow
@pytest.mark.container
def test_ci_fork_pull_request_skips_the_comment(emulator: em.Emulator) -> None:
    """act evaluates the comment job's `if:` against each event (--dryrun: planned and evaluated, nothing run;
    the same-repository run above shows the job really posting when the condition holds)."""
    fork = emulator.run(CASES["ci-pr-fork"], job="comment", dryrun=True)
    assert fork.results() == EXPECTED["ci-pr-fork (dry run, job comment)"], fork.failure_digest()
    same = emulator.run(CASES["ci-pr-same-repo"], job="comment", dryrun=True)
    assert same.results() == EXPECTED["ci-pr-same-repo (dry run, job comment)"], same.failure_digest()
    assert emulator.api.calls(path_re=f"/issues/{FORK_PR_NUMBER}/") == []


# Which jobs each event runs (act --dryrun: planned, every `if:` evaluated, nothing run). A pull request
# gets the quick tiers beside lint, smoke and images; the slow tiers run on main, nightly, by hand, and on a
# pull request labelled full-tests.
QUICK = {
    "lint": "success",
    "smoke": "success",
    "images (serving)": "success",
    "images (batch)": "success",
    "test (unit)": "success",
    "test (integration)": "success",
}
SLOW = {f"test-slow ({tier})": "success" for tier in ("images", "workflows", "spark")}
NO_SLOW = {f"test-slow ({tier})": "skipped" for tier in ("images", "workflows", "spark")}
PLANS = {
    "pull request": (em.pull_request(PR_NUMBER, em.REPOSITORY, "HEAD"), "pull_request", "feature",
                     {**QUICK, **NO_SLOW, "comment": "success"}),
    "pull request labelled full-tests": (
        em.pull_request(PR_NUMBER, em.REPOSITORY, "HEAD", labels=("full-tests",)), "pull_request", "feature",
        {**QUICK, **SLOW, "comment": "success"}),
    "push to main": (em.push("HEAD"), "push", "main", {**QUICK, **SLOW, "comment": "skipped"}),
    "nightly": (em.schedule("41 2 * * *"), "schedule", "main", {**QUICK, **SLOW, "comment": "skipped"}),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.container
@pytest.mark.parametrize("event", list(PLANS))
def test_ci_runs_the_quick_tiers_on_pull_requests_and_the_slow_ones_on_main(
    emulator: em.Emulator, event: str
) -> None:
    payload, kind, branch, expected = PLANS[event]
    plan = emulator.run(em.Case(f"ci plan: {event}", "ci.yml", kind, payload, branch=branch), dryrun=True)
    assert plan.results() == expected, plan.failure_digest()
