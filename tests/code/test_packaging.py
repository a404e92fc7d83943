"""The project's wiring: pins in step, MLproject entry points backed by CLI commands, --help everywhere."""

import re
import subprocess  # nosec B404 - runs bash with the command MLflow builds
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlgate.cli import cli
from tests.conftest import REPO

STEPS = ["validate", "train", "evaluate", "register", "promote", "rollback"]


def test_conda_env_pins_the_same_dependencies_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert sorted(p for p in pip_section if not p.startswith("--")) == sorted(project)


def test_runtime_dependencies_are_pinned():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"] + [
        d for deps in project["optional-dependencies"].values() for d in deps
    ]:
        if dep.startswith("mlgate["):
            continue
        assert re.search(r"==|>=.*,<", dep), f"{dep} is not pinned"


def test_mlproject_has_every_step_and_main_calling_the_cli():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    assert set(project["entry_points"]) == {*STEPS, "main"}
    for name, entry in project["entry_points"].items():
        command = entry["command"]
        assert command.startswith("python -m mlgate --config {config} "), name
        assert command.split()[5] == ("run" if name == "main" else name)
        assert entry["parameters"]["config"]["type"] == "path"


HOSTILE = ["", "x;touch pwned", "a b", "it's", "$(touch pwned)", "`touch pwned`", "1 && touch pwned"]


@pytest.mark.parametrize("value", HOSTILE)
def test_mlproject_string_parameters_reach_the_cli_as_one_argument(value: str, tmp_path: Path) -> None:
    """MLflow shell-quotes string parameters itself: the command MLflow builds for each entry point, run by a
    real shell, hands the value over unchanged, as one argument, and runs nothing in it."""
    from mlflow.projects._project_spec import load_project

    project = load_project(str(REPO))
    strings = {
        name: [k for k, v in entry["parameters"].items() if v["type"] == "string"]
        for name, entry in yaml.safe_load((REPO / "MLproject").read_text())["entry_points"].items()
    }
    for name, params in strings.items():
        for param in params:
            command = project.get_entry_point(name).compute_command({param: value}, str(tmp_path))
            assert command.startswith("python -m mlgate ")
            argv = subprocess.run(  # nosec B603 B607 - the command MLflow built, with a harmless program
                ["bash", "-c", command.replace("python -m mlgate", 'printf "%s\\0"', 1)],
                cwd=tmp_path, capture_output=True,
            ).stdout.decode().split("\0")[:-1]  # fmt: skip
            flag = f"--{param.replace('_', '-')}"
            assert flag in argv or f"{flag}={value}" in argv, (name, param, argv)
            if flag in argv:
                assert argv[argv.index(flag) + 1] == value, (name, param, argv)
            assert not (tmp_path / "pwned").exists(), (name, param, command)


@pytest.mark.parametrize("command", [[], *[[s] for s in STEPS], ["run"], ["show"]])
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_config_error_is_one_line_and_exit_code_1(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("experiment: x\n")
    result = CliRunner().invoke(cli, ["--config", str(bad), "validate"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert (
        lines[-1].startswith("mlgate validate failed: invalid config")
        and "model_name: Field required" in lines[-1]
    )
