"""Read the GitHub workflows and the Makefile for the CI tests: steps, `run:` commands, make targets."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
ACTIONS = REPO / ".github" / "actions"

# Commands a `run:` step may call: the package CLI, make, mlflow, docker, and standard shell utilities.
ALLOWED_COMMANDS = frozenset(
    {"make", "mlgate", "mlflow", "docker"}
    | {"echo", "printf", "cat", "test", "[", "true", "false", "cd", "mkdir", "rm", "cp", "mv", "ls", "tee"}
    | {"grep", "sed", "cut", "head", "tail", "tr", "sort", "wc", "env", "sleep", "tar", "gzip", "curl"}
)
_SEPARATORS = re.compile(r"&&|\|\||[;|\n]")
_TARGET_LINE = re.compile(r"^([A-Za-z0-9_.%-]+(?:[ \t]+[A-Za-z0-9_.%-]+)*)[ \t]*::?(?!=)")


@dataclass(frozen=True)
class Step:
    """One step of one job, with where it came from."""

    workflow: str
    job: str
    index: int
    raw: dict[str, Any]

    @property
    def where(self) -> str:
        return (
            f"{self.workflow}:{self.job}:step {self.index} ({self.raw.get('name') or self.raw.get('uses')})"
        )


def load(path: Path) -> dict[str, Any]:
    """A workflow file as data (PyYAML reads the key `on` as True: it is put back as "on")."""
    data = yaml.safe_load(path.read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


def action_files() -> list[Path]:
    """The repository's own composite actions (`uses: ./.github/actions/<name>`)."""
    return sorted(ACTIONS.glob("*/action.yml"))


def steps(workflow: dict[str, Any], name: str) -> Iterator[Step]:
    for job_id, job in workflow.get("jobs", {}).items():
        for i, step in enumerate(job.get("steps", [])):
            yield Step(name, job_id, i, step)


def all_steps() -> list[Step]:
    """Every step of every workflow, and of every local composite action (job = "action")."""
    found = [s for path in workflow_files() for s in steps(load(path), path.name)]
    for path in action_files():
        action = load(path)
        found += [Step(path.parent.name, "action", i, st) for i, st in enumerate(action["runs"]["steps"])]
    return found


def makefile_targets(makefile: Path = REPO / "Makefile") -> set[str]:
    """Every explicit target a rule line of the Makefile names (pattern rules are not expanded)."""
    targets: set[str] = set()
    for line in makefile.read_text().splitlines():
        if line.startswith(("\t", "#", " ")):
            continue
        m = _TARGET_LINE.match(line)
        if m and not line.lstrip().startswith(("export ", "override ")):
            targets.update(m.group(1).split())
    return targets


def _drop_redirections(words: list[str]) -> list[str]:
    """Words without `> file`, `>> file`, `2>&1`, `< file` and their targets."""
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if re.fullmatch(r"\d?(>>?|<)(&\d)?", w):
            skip = not w.endswith(("&1", "&2"))
            continue
        if re.match(r"^\d?(>>?|<)", w):
            continue
        out.append(w)
    return out


def commands(script: str) -> list[list[str]]:
    """Split a `run:` script into simple commands (words), dropping leading VAR=value assignments."""
    out = []
    for part in _SEPARATORS.split(script.replace("\\\n", " ")):
        words = _drop_redirections(shlex.split(part, comments=True))
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]
        if words:
            out.append(words)
    return out


def check_run(script: str, targets: set[str]) -> list[str]:
    """Problems with one `run:` script: disallowed commands, make targets that do not exist, expressions."""
    problems = []
    if "${{" in script:
        problems.append("expression ${{ ... }} inside run: (pass it through env:)")
    for words in commands(script):
        cmd = words[0]
        if cmd not in ALLOWED_COMMANDS:
            problems.append(
                f"command {cmd!r} is not make, mlgate, mlflow, docker or a standard shell utility"
            )
        if cmd == "make":
            named = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
            problems += [
                f"make target {t!r} does not exist in the Makefile" for t in named if t not in targets
            ]
            if not named:
                problems.append("bare `make` (name the target)")
    return problems
