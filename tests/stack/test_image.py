"""The Docker flavour of the stack: a valid, loopback-only compose file; a server image answering /health."""

from __future__ import annotations

import shutil
import subprocess  # nosec B404 - the tests drive docker and docker-compose
import time
import uuid
from pathlib import Path

import pytest
import yaml

from mlgate.stack import free_port, health
from tests.conftest import REPO, docker_ok, require

COMPOSE = REPO / "docker-compose.yml"


def _compose_command() -> list[str] | None:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_compose_publishes_on_loopback_only_and_takes_secrets_from_the_env_file() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"postgres", "minio", "create-bucket", "mlflow"} <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert services["mlflow"]["build"] == {"context": "stack", "dockerfile": "Dockerfile"}
    example = dict(
        line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines() if "=" in line
    )
    text = COMPOSE.read_text()
    for key in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert example[key] not in text, f"{key}'s value is written into docker-compose.yml"
        assert "${" + key in text


def test_compose_config_validates() -> None:
    command = _compose_command()
    require(
        command is not None, "no docker compose / docker-compose (CE_WITH_COMPOSE=1 container-engine/setup)"
    )
    res = subprocess.run(  # nosec B603 - fixed argv
        [*command, "--env-file", str(REPO / ".env.example"), "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr


@pytest.mark.slow
@pytest.mark.container
def test_server_image_runs_as_non_root_and_answers_health(tmp_path: Path) -> None:
    require(docker_ok(), "no container engine (../shared/container-engine/setup)")
    tag = f"mlgate-mlflow-server:test-{uuid.uuid4().hex[:8]}"
    build = subprocess.run(  # nosec B603 - fixed argv
        ["docker", "build", "-q", "-f", "stack/Dockerfile", "-t", tag, "stack"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=1800,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    name = f"mlgate-stack-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    try:
        user = subprocess.run(  # nosec B603 - fixed argv
            ["docker", "image", "inspect", "--format", "{{.Config.User}}", tag],
            capture_output=True,
            text=True,
        )
        assert user.stdout.strip() not in ("", "root", "0")
        run = (
            subprocess.run(  # nosec B603 - fixed argv; no command: the image's default CMD starts the server
                ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:5000", tag],
                capture_output=True,
                text=True,
            )
        )
        assert run.returncode == 0, run.stderr
        deadline = time.monotonic() + 180
        while not health(f"http://127.0.0.1:{port}"):
            state = subprocess.run(
                ["docker", "inspect", "--format", "{{.State.Running}}", name], capture_output=True
            )
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
            assert state.stdout.strip() == b"true", logs.stdout[-2000:] + logs.stderr[-2000:]
            assert time.monotonic() < deadline, logs.stderr[-2000:]
            time.sleep(1)
        whoami = subprocess.run(["docker", "exec", name, "id", "-u"], capture_output=True, text=True)
        assert whoami.stdout.strip() not in ("", "0")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
