"""The scripts behind the workflows: the gate verdict (make gate-status), sticky comment, state lookup."""

from __future__ import annotations

import json
import shutil
import subprocess  # nosec B404 - tests run fixed commands
from pathlib import Path

import pytest

from mlgate.config import PipelineConfig
from mlgate.gate import decide
from mlgate.io import write_json
from tests.ci.workflows import REPO
from tests.conftest import make_config, require, write_config

NODE = shutil.which("node")


def _promotion(cfg: PipelineConfig, candidate: dict[str, float], champion: dict[str, float] | None) -> dict:
    """promotion.json as mlgate.registry.promote writes it, for the gate's real decision on these metrics."""
    decision = decide(cfg.promotion.thresholds, candidate, champion)
    return {
        "name": cfg.model_name,
        "version": "2",
        "previous_champion": "1",
        "passed": decision.passed,
        "promoted": decision.passed,
        "already_champion": False,
        "dry_run": False,
        "gate": decision.to_dict(),
    }


def _gate_status(tmp_path: Path, promotion: dict | None) -> subprocess.CompletedProcess:
    cfg = make_config(tmp_path)
    if promotion is not None:
        write_json(promotion, cfg.outputs / "promotion.json")
    config = write_config(cfg, tmp_path / "pipeline.yaml")
    summary = tmp_path / "summary.md"
    return subprocess.run(
        ["make", "--no-print-directory", "gate-status", f"CONFIG={config}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**_env(), "GITHUB_STEP_SUMMARY": str(summary)},
    )


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}


GOOD = {"accuracy_score": 0.97, "f1_score": 0.97, "log_loss": 0.10}


def test_gate_status_passes_a_promoted_candidate(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    res = _gate_status(tmp_path, _promotion(cfg, GOOD, None))
    assert res.returncode == 0, res.stderr
    assert "passed" in (tmp_path / "summary.md").read_text()


def test_gate_status_exits_3_and_lists_each_failing_threshold(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    worse = {"accuracy_score": 0.80, "f1_score": 0.97, "log_loss": 0.90}
    res = _gate_status(tmp_path, _promotion(cfg, worse, GOOD))
    assert res.returncode != 0
    assert "Error 3" in res.stderr  # make reports the script's own exit code
    summary = (tmp_path / "summary.md").read_text()
    assert "FAILED" in summary and "champion stays at 1" in summary
    failing = {
        line.split("|")[1].strip()
        for line in summary.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    assert {"accuracy_score", "log_loss"} <= failing and "f1_score" not in failing


def test_gate_status_is_an_error_when_promote_wrote_nothing(tmp_path: Path) -> None:
    res = _gate_status(tmp_path, None)
    assert res.returncode != 0 and "Error 1" in res.stderr
    assert "promotion.json not found" in res.stderr


def _node(script: str, harness: str) -> object:
    require(NODE is not None, "node is not installed (GitHub's runners have it)")
    code = f"const fn = require({json.dumps(str(REPO / '.github' / 'scripts' / script))});\n{harness}"
    out = subprocess.run([NODE, "-e", code], capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


FAKE_ISSUES = """
const comments = INITIAL;
let next = 100;
const github = {
  paginate: async (fn, args) => (await fn(args)).data,
  rest: { issues: {
    listComments: async () => ({ data: comments.map((c) => ({ ...c })) }),
    createComment: async ({ body }) => { const c = { id: next++, body, user: { type: 'Bot' } };
      comments.push(c); return { data: c }; },
    updateComment: async ({ comment_id, body }) => { comments.find((c) => c.id === comment_id).body = body; },
    deleteComment: async ({ comment_id }) => {
      comments.splice(comments.findIndex((c) => c.id === comment_id), 1); },
  } },
};
const context = { repo: { owner: 'o', repo: 'r' }, issue: { number: 7 } };
const core = { info: () => {} };
(async () => {
  for (const body of BODIES) { await fn({ github, context, core, body }); }
  console.log(JSON.stringify(comments));
})();
"""


def _sticky(initial: list[dict], bodies: list[str]) -> list[dict]:
    harness = FAKE_ISSUES.replace("INITIAL", json.dumps(initial)).replace("BODIES", json.dumps(bodies))
    return _node("sticky-comment.js", harness)  # type: ignore[return-value]


def test_sticky_comment_is_created_once_then_updated_in_place() -> None:
    report = (REPO / "src" / "mlgate" / "report.py").read_text()
    marker = report.split('REPORT_MARKER = "')[1].split('"')[0]
    human = {"id": 1, "body": f"quoting {marker} by hand", "user": {"type": "User"}}
    out = _sticky([human], [f"{marker}\nfirst push", f"{marker}\nsecond push", f"{marker}\nthird push"])
    bots = [c for c in out if c["user"]["type"] == "Bot"]
    assert len(bots) == 1 and bots[0]["body"].endswith("third push")
    assert human in out  # a person's comment is never edited


def test_sticky_comment_removes_duplicates_left_by_a_race() -> None:
    marker = "<!-- mlgate-evaluation-report -->"
    dupes = [{"id": i, "body": f"{marker}\nold {i}", "user": {"type": "Bot"}} for i in (5, 6)]
    out = _sticky(dupes, ["no marker in this body"])
    assert [c["id"] for c in out] == [5]
    assert out[0]["body"].startswith(marker)  # the marker is added when the body lacks it


_LAST_STATE = """
const own = { full_name: 'o/r' }, fork = { full_name: 'someone/r-fork' };
const run = (id, event, day, head = own) => ({ id, name: 'w', event, head_branch: 'main',
  head_repository: head, conclusion: id % 2 ? 'success' : 'failure',
  run_started_at: new Date(Date.now() - (10 - day) * 86400000).toISOString() });  // `day` 10 is today
const runs = RUNS;
const artifacts = ARTIFACTS;
const asked = [], said = [];
const github = { rest: { actions: {
  listWorkflowRuns: async ({ workflow_id, status, branch, page }) => {
    asked.push([workflow_id, status, branch]);
    return { data: { workflow_runs: page === 1 ? runs[workflow_id] || [] : [] } };
  },
  listWorkflowRunArtifacts: async ({ run_id }) => ({ data: { artifacts: (artifacts[run_id] || []).map(
    (expired) => ({ name: 'mlflow-state', expired, created_at: '2026-01-01T00:00:00Z' })) } }),
} } };
const outputs = {};
const core = { info: (m) => said.push(m), warning: (m) => said.push(m), setFailed: (m) => said.push(m),
  setOutput: (k, v) => { outputs[k] = v; } };
const context = { repo: { owner: 'o', repo: 'r' }, payload: { repository: { default_branch: 'main' } } };
(async () => {
  let error = null;
  try { await fn({ github, context, core, required: REQUIRED }); } catch (e) { error = e.message; }
  console.log(JSON.stringify({ outputs, asked, said, error }));
})();
"""


def _last_state(runs: str, artifacts: str, required: bool = True) -> dict:
    harness = _LAST_STATE.replace("RUNS", runs).replace("ARTIFACTS", artifacts)
    harness = harness.replace("REQUIRED", json.dumps(required))
    return _node("last-state.js", harness)  # type: ignore[return-value]


def test_last_state_takes_this_repositorys_own_newest_state_never_a_pull_requests() -> None:
    """A fork's pull request from its own `main` (head branch `main`) with a pipeline.yml that uploads
    mlflow-state is listed among pipeline.yml's runs on `main`: it is skipped, as is a same-repository pull
    request's; a run whose state expired is passed over for the newest live one, whatever its conclusion."""
    runs = """{
  'pipeline.yml': [run(1, 'push', 1), run(3, 'schedule', 3), run(5, 'pull_request', 6, fork),
                   run(7, 'pull_request', 7), run(8, 'push', 8)],
  'rollback.yml': [run(2, 'workflow_dispatch', 2), run(4, 'workflow_dispatch', 4)],
}"""
    out = _last_state(
        runs, "{1: [false], 2: [false], 3: [false], 4: [false], 5: [false], 7: [false], 8: [true]}"
    )
    assert out["outputs"] == {"run-id": "4"}, out
    assert all(status == "completed" and branch == "main" for _, status, branch in out["asked"])


def test_last_state_starts_empty_only_when_no_state_was_ever_saved() -> None:
    first = _last_state("{'pipeline.yml': [run(1, 'push', 1)]}", "{}")  # a first run that failed early
    assert first["outputs"] == {"run-id": ""} and first["error"] is None
    assert any("starting from an empty registry" in m for m in first["said"])
    # a run older than the state's 90 days of retention may have saved one that is gone: not a first run
    old = _last_state("{'pipeline.yml': [run(1, 'push', -90)]}", "{}")
    assert old["error"] and "older than the state's 90 days of retention" in old["error"], old
    # a fork's forged state does not count as "ever saved" either
    forged = _last_state("{'pipeline.yml': [run(5, 'pull_request', 6, fork)]}", "{5: [false]}")
    assert forged["outputs"] == {"run-id": ""} and forged["error"] is None


def test_a_lost_state_fails_loudly_with_the_way_to_recover_and_never_starts_empty() -> None:
    out = _last_state(
        "{'pipeline.yml': [run(1, 'push', 1), run(3, 'schedule', 3)]}", "{1: [true], 3: [true]}"
    )
    assert out["outputs"] == {} and out["error"], out
    assert "run 3 saved it on" in out["error"] and "has expired" in out["error"]
    assert "reset-registry" in out["error"] and "Nothing was started from an empty registry" in out["error"]
    # pull requests only compare with main's champion: there, a lost state is a warning and an empty copy
    pr = _last_state("{'pipeline.yml': [run(1, 'push', 1)]}", "{1: [true]}", required=False)
    assert pr["outputs"] == {"run-id": ""} and pr["error"] is None
    assert any("cannot be restored" in m for m in pr["said"])


@pytest.mark.slow
def test_the_workflow_and_dockerfile_linters_pass() -> None:
    """The same hooks `make lint` runs, through pre-commit, on every workflow and Dockerfile."""
    pre_commit = REPO / ".venv" / "bin" / "pre-commit"
    require(pre_commit.exists(), "pre-commit is not installed in .venv (make install)")
    dockerfiles = sorted(str(p.relative_to(REPO)) for p in REPO.glob("*/Dockerfile"))
    assert any(d.startswith("serving/") for d in dockerfiles)
    for hook in ("check-github-workflows", "github-workflow-parser", "zizmor", "zizmor-auditor", "hadolint"):
        res = subprocess.run(
            [str(pre_commit), "run", hook, "--all-files", "--color=never"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert res.returncode == 0, f"{hook}:\n{res.stdout}\n{res.stderr}"
        assert "Passed" in res.stdout, f"{hook} did not run on any file:\n{res.stdout}"
