"""Every command in README's ``sh`` blocks runs as written in a fresh shell after ``make pipeline``.

The commands run in README's order, each in its own ``bash`` started with an empty environment (``PATH``: the
system's bin folders, ``HOME`` a temporary folder), in a copy of the working tree with the repository's
``.venv`` linked in: outputs, ``mlflow.db`` and ``.stack/`` stay in the copy. A newcomer types them in one
terminal, so a ``. .venv/bin/activate`` README shows is kept for the commands after it. Servers (``make
serve``, ``mlflow ui``) are started in the background, waited for and stopped at the end of their README
section; the ports README names are swapped for free ones, because this machine may be shared (``SERVE_PORT``
for ``make serve``). The commands this test cannot run are listed below with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess  # nosec B404 - the commands README shows, run in a temporary copy
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlgate.stack import free_port
from tests.conftest import REPO

README = REPO / "README.md"
FRESH_PATH = "/usr/local/bin:/usr/bin:/bin"
COMMAND_TIMEOUT = 900

# Commands not run, each with its reason (a command README no longer shows fails the test: keep this in step).
EXCEPTIONS = {
    "make test": "the whole suite, this test included: it would run itself",
    "make model-bundle image-serving": "builds the serving image (minutes of both cores); "
    "tests/serving/test_serving_image.py builds and runs it",
    "docker run -p 127.0.0.1:8080:8080 mlgate-serving:latest": "runs that image",
    "make k8s-set-images K8S_DIR=deploy/k8s/overlays/production SERVING_REF=ghcr.io/<owner>/mlgate-serving@"
    "sha256:<digest> BATCH_REF=ghcr.io/<owner>/mlgate-batch@sha256:<digest>": "needs the image digests a "
    "release pushed to GHCR (placeholders here); tests/deploy runs deploy/k8s/set-images.py",
    "make --silent k8s-render K8S_DIR=deploy/k8s/overlays/production | kubectl apply -f -": "needs a "
    "Kubernetes cluster; tests/deploy renders and validates every overlay",
    "mlgate score --input s3://lake/landing/ --output s3://lake/scored/today.parquet --engine spark "
    "--spark-master URL": "needs an S3 bucket and a Spark cluster; tests/batch/test_engines.py runs both "
    "engines on moto's S3 and a local-cluster",
    "make model-bundle-batch image-batch": "builds the batch image (minutes of both cores); "
    "tests/batch/test_engines.py builds and runs it",
}

# Servers: the URL that answers once they are up (README's port, swapped for the free one like the commands').
MLFLOW_UI = "mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000 --workers 1"
SERVERS = {"make serve": "http://127.0.0.1:8080/ready", MLFLOW_UI: "http://127.0.0.1:5000/health"}
README_PORTS = (8080, 5000)

# Lines MLflow printed before mlgate.mlflow_noise and register's direct create_model_version.
KNOWN_NOISE = (
    "interpreted in multiple ways",
    "already exists. Creating a new version",
    "Active model is set to the logged model",
    "Testing metrics on first row",
    "inferred as multiclass dataset",
)
STEPS = ("validate", "train", "evaluate", "register", "promote")


@dataclass
class Command:
    text: str  # as README shows it, continuation lines joined, without its trailing comment
    section: str


@dataclass
class Session:
    root: Path
    home: Path
    ports: dict[int, int]
    activations: list[str] = field(default_factory=list)
    outputs: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)
    servers: list[subprocess.Popen] = field(default_factory=list)
    server_logs: list[Path] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {"PATH": FRESH_PATH, "HOME": str(self.home), "SERVE_PORT": str(self.ports[8080])}

    def swap_ports(self, text: str) -> str:
        for old, new in self.ports.items():
            text = re.sub(rf"\b{old}\b", str(new), text)
        return text

    def script(self, command: str) -> str:
        return "\n".join([*self.activations, self.swap_ports(command)])

    def run(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(  # nosec B603 B607 - README's command in a fresh bash
            ["bash", "--noprofile", "--norc", "-c", self.script(command)],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )

    def start(self, command: str, url: str) -> None:
        log = self.home / f"server-{len(self.server_logs)}.log"
        self.server_logs.append(log)
        with log.open("w") as out:  # the server has its own copy of the descriptor
            proc = subprocess.Popen(  # nosec B603 B607 - README's command in a fresh bash
                ["bash", "--noprofile", "--norc", "-c", self.script(command)],
                cwd=self.root,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.servers.append(proc)
        url = self.swap_ports(url)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{command!r} exited {proc.returncode}:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # nosec B310 - loopback
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"{command!r} did not answer {url} within 180 s:\n{log.read_text()}")

    def stop_servers(self) -> None:
        """SIGTERM to each server's own process group (make and what it started), SIGKILL if it lingers."""
        for proc in self.servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
        self.servers.clear()


def _strip_comment(line: str) -> str:
    """The command without a trailing ``# comment`` (a ``#`` inside quotes is kept)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_commands(text: str) -> list[Command]:
    """Every command of every ``sh`` block, in order, with the section (heading) it is under."""
    commands: list[Command] = []
    section, block, pending = "", None, ""
    for line in text.splitlines():
        if block is None:
            if line.startswith("#"):
                section = line.lstrip("#").strip()
            elif line.strip() == "```sh":
                block = []
            continue
        if line.strip() == "```":
            block = None
            continue
        code = _strip_comment(line)
        if code.endswith("\\"):
            pending += code[:-1].strip() + " "
            continue
        code = (pending + code.strip()).strip()
        pending = ""
        if code:
            commands.append(Command(re.sub(r"\s+", " ", code), section))
    return commands


def json_after(text: str, marker: str) -> object:
    """The first ``json`` block after the line holding ``marker``."""
    rest = text[text.index(marker) :]
    body = rest.split("```json\n", 1)[1].split("```", 1)[0]
    return json.loads(body)


def _shape(value: object) -> object:
    """Keys and value types, not values: a README example and a real answer have the same shape."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return type(value).__name__


def test_readme_parsing_joins_continuations_and_drops_comments():
    text = '## A\n```sh\nmake x \\\n    Y=1   # why\ncurl -d \'{"a": "#1"}\' # c\n```\n```json\n{}\n```\n'
    assert [(c.text, c.section) for c in readme_commands(text)] == [
        ("make x Y=1", "A"),
        ('curl -d \'{"a": "#1"}\'', "A"),
    ]


def test_every_exception_and_server_is_a_command_readme_shows():
    shown = {c.text for c in readme_commands(README.read_text())}
    assert not set(EXCEPTIONS) - shown, f"listed here but no longer in README: {set(EXCEPTIONS) - shown}"
    assert not set(SERVERS) - shown, f"listed here but no longer in README: {set(SERVERS) - shown}"


def _copy_of_the_repo(dest: Path) -> Path:
    """The working tree's tracked files (mtimes kept, so make sees .venv up to date) and a link to .venv."""
    files = (
        subprocess.run(  # nosec B603 B607 - fixed command
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    dest.chmod(0o755)
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


@pytest.fixture
def fresh_copy() -> Iterator[Path]:
    """A copy of the repository under /tmp with mode 0711, not under pytest's 0700 temp root: as root, ``make
    stack-up`` runs PostgreSQL as an unprivileged user, which must reach ``.stack/`` (as tests/stack does)."""
    top = Path(tempfile.mkdtemp(prefix="mlgate-readme-"))
    top.chmod(0o711)
    try:
        yield _copy_of_the_repo(top / "mlgate")
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.slow
def test_every_readme_command_runs_in_a_fresh_shell(fresh_copy, tmp_path):
    root = fresh_copy
    up_to_date = subprocess.run(  # nosec B603 B607 - fixed command
        ["make", "-q", ".venv/.installed", ".venv/.runtime"], cwd=root, env={"PATH": FRESH_PATH}
    )
    # The copy shares the repository's .venv: installing into it from here would repoint its editable install.
    assert up_to_date.returncode == 0, "the repository's .venv is not up to date: run make install first"
    home = tmp_path / "home"
    home.mkdir()
    session = Session(root, home, {port: free_port() for port in README_PORTS})
    text = README.read_text()
    commands = readme_commands(text)
    assert (
        commands[0].text == "make pipeline"
    ), "README's first command is make pipeline: the others follow it"
    section, skipped = commands[0].section, []
    try:
        for command in commands:
            if command.section != section:
                session.stop_servers()
                section = command.section
            if command.text in EXCEPTIONS:
                skipped.append(command.text)
                continue
            if command.text in SERVERS:
                session.start(command.text, SERVERS[command.text])
                continue
            result = session.run(command.text)
            assert result.returncode == 0, (
                f"README command {command.text!r} (section {command.section!r}) exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
            )
            if command.text.startswith((". ", "source ")):
                session.activations.append(command.text)
            session.outputs.setdefault(command.text, result)
    finally:
        session.stop_servers()
        if (root / ".stack").exists():
            session.run("make stack-down")
    assert sorted(skipped) == sorted(EXCEPTIONS)

    for name, result in session.outputs.items():
        lines = (result.stdout + result.stderr).splitlines()
        assert not [line for line in lines if any(noise in line for noise in KNOWN_NOISE)], name
        if name in ("make pipeline", "make pipeline-stack"):
            assert not [line for line in lines if re.search(r"warn", line, re.IGNORECASE)], (name, lines)
    for log in session.server_logs:
        served = log.read_text()
        assert "Traceback" not in served and not any(noise in served for noise in KNOWN_NOISE), served
    pipeline = session.outputs["make pipeline"]
    lines = (pipeline.stdout + pipeline.stderr).splitlines()
    for step in STEPS:
        assert any(re.search(rf"\b{step}: done in \d+\.\d\ds$", line) for line in lines), step
    summary = json.loads(pipeline.stdout[pipeline.stdout.index("{") :])
    assert set(summary["step_seconds"]) == set(STEPS)  # the CLI prints the summary with sorted keys

    predict = next(c for c in session.outputs if "/predict" in c)
    answer = json.loads(session.outputs[predict].stdout)
    assert _shape(answer) == _shape(json_after(text, "curl -fsS http://127.0.0.1:8080/predict"))
    records = json.loads(re.search(r"-d '(.*)'", predict).group(1))["records"]
    assert len(answer["predictions"]) == len(records)

    # Batch throughput says what it counts: progress from the end of start-up, the summary both ways.
    score = session.outputs["make score"]
    assert re.search(r"\([\d,]+ rows/s while scoring\)", score.stderr), score.stderr
    assert re.search(
        r"rows/s after start-up \(until the outputs are written\), [\d,]+ rows/s including start-up",
        score.stderr,
    ), score.stderr
    scored = json.loads((root / "outputs" / "scores.summary.json").read_text())
    assert scored["rows_per_second_with_startup"] <= scored["rows_per_second_after_startup"]
    assert scored["wall_seconds"] >= scored["startup_seconds"] > 0
