"""The project's wiring: pins in step, MLproject entry points backed by CLI commands, --help everywhere."""

import re
import tomllib

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
