"""Fixtures shared by every test folder: an isolated MLflow store, the default config, a trained model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess  # nosec B404 - docker info
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest

from mlgate.config import PipelineConfig, load_config

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "config" / "pipeline.yaml"
PENGUINS = REPO / "data" / "penguins.csv"


TIERS = ("unit", "integration", "images", "workflows", "spark")
# Tests that share a session-scoped server or cluster run in one pytest-xdist worker (make test), so each is
# started once; the workflows group also shares the runner image, the built images and the stand-ins.
SHARED = {"emulator": "workflows", "spark_cluster": "spark", "stack": "stack"}
# Session servers that make a test an integration test: the tracking stack (PostgreSQL, S3, MLflow) and S3.
SERVERS = {"stack", "s3_server"}
GROUPS_FILE = "MLGATE_XDIST_GROUPS"  # env: where the workers write {nodeid: group} for the controller


def tier(item: pytest.Item) -> str:
    """A test's tier, by what it needs: the emulator (workflows), a Spark cluster, the container engine
    (images), real servers (integration: the session's tracking stack or S3, or marked slow: an end-to-end
    run), or nothing of these (unit)."""
    names = set(getattr(item, "fixturenames", ()))
    if "emulator" in names:
        return "workflows"
    if "spark_cluster" in names:
        return "spark"
    if item.get_closest_marker("container"):
        return "images"
    if item.get_closest_marker("slow") or names & SERVERS:
        return "integration"
    return "unit"


def group(item: pytest.Item) -> str | None:
    """The session server or cluster the test shares with others (its xdist group), if any."""
    names = set(getattr(item, "fixturenames", ()))
    return next((g for fixture, g in SHARED.items() if fixture in names), None)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets its tier's marker (`-m unit`, `-m "images or workflows"`); the longest tier (the
    workflows, the season among them) is put first, so that a worker starts it at once and the others take
    the rest of the suite around it. A pytest-xdist worker also writes each grouped test's group for the
    controller's scheduler (pytest_xdist_make_scheduler)."""
    for item in items:
        item.add_marker(tier(item))
    items.sort(key=lambda item: tier(item) != "workflows")
    path = os.environ.get(GROUPS_FILE)
    if path and hasattr(config, "workerinput"):
        groups = {item.nodeid: g for item in items if (g := group(item)) is not None}
        tmp = Path(f"{path}.{config.workerinput['workerid']}")
        tmp.write_text(json.dumps(groups))
        tmp.replace(path)  # every worker collects the same tests: the last write wins, whole


def pytest_configure(config: pytest.Config) -> None:
    """The controller of a `--dist loadgroup` run names the file the workers write the groups to."""
    if not hasattr(config, "workerinput") and config.getoption("dist", "no") == "loadgroup":
        fd, path = tempfile.mkstemp(prefix="mlgate-xdist-groups-", suffix=".json")
        os.close(fd)
        os.environ[GROUPS_FILE] = path


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and (path := os.environ.pop(GROUPS_FILE, None)):
        Path(path).unlink(missing_ok=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadgroup` with the groups of `group()`: pytest-xdist 3.8 reads `xdist_group` marks into
    item._nodeid, which pytest 9.2 no longer has (nodes keep a NodeId), so its own loadgroup spreads every
    test; this scheduler takes each test's group from the file the workers wrote when they collected.
    Ungrouped tests are their own unit (balanced one by one); the largest units go first."""
    if config.getoption("dist", "no") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedServers(LoadScopeScheduling):
        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:
                self._groups = json.loads(Path(os.environ[GROUPS_FILE]).read_text() or "{}")
            return self._groups.get(nodeid, nodeid)

    return SharedServers(config, log)


def docker_ok() -> bool:
    """A docker CLI on PATH whose engine answers (`docker info`)."""
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0  # nosec


def require(condition: bool, reason: str) -> None:
    """Skip a test whose prerequisite is missing, except in CI (MLGATE_REQUIRE_ALL=1), where it fails."""
    if condition:
        return
    if os.environ.get("MLGATE_REQUIRE_ALL") == "1":
        pytest.fail(f"required in CI but unavailable: {reason}")
    pytest.skip(reason)


def make_config(tmp: Path, path: Path = DEFAULT_CONFIG, **overrides) -> PipelineConfig:
    """The config at ``path`` with its data source made absolute and its outputs in ``tmp``."""
    raw = load_config(path)
    source = overrides.pop("data.source", None) or str((REPO / raw.data.source).resolve())
    return load_config(path, {"data.source": source, "outputs_dir": str(tmp / "outputs"), **overrides})


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty MLflow store (SQLite + local artifacts) in a temp folder, used as the tracking URI."""
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    yield tmp_path
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture
def cfg(store: Path) -> PipelineConfig:
    """The default config, writing its outputs into the test's temp folder."""
    return make_config(store)


@contextmanager
def sqlite_store(root: Path) -> Iterator[str]:
    """For a session- or module-scoped fixture: a SQLite MLflow store in ``root`` as the tracking URI and
    ``root`` as the working folder for the block, then both as they were. Yields the URI."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    before_uri, before_cwd = os.environ.get("MLFLOW_TRACKING_URI"), os.getcwd()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    os.chdir(root)
    try:
        yield uri
    finally:
        os.chdir(before_cwd)
        mlflow.set_tracking_uri(None)
        if before_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before_uri


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The default pipeline run once for the whole session; the champion model downloaded to a local folder.

    Returns a dict: ``model_dir`` (a local MLflow model folder), ``config`` (PipelineConfig), ``store`` (its
    folder), ``tracking_uri``, ``test_path`` (the held-out split).
    """
    from mlflow.artifacts import download_artifacts

    from mlgate.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("trained")
    with sqlite_store(root) as uri:
        config = make_config(root)
        summary = run_pipeline(config)
        model_dir = Path(
            download_artifacts(
                artifact_uri=f"models:/{config.model_name}@champion", dst_path=str(root / "champion")
            )
        )
    return {
        "model_dir": model_dir,
        "config": config,
        "store": root,
        "tracking_uri": uri,
        "summary": summary,
        "test_path": root / "outputs" / "split" / "test.parquet",
    }


@pytest.fixture
def model_copy(trained_model: dict[str, object], tmp_path: Path) -> Path:
    """A private copy of the trained champion model folder, free to modify."""
    return Path(shutil.copytree(trained_model["model_dir"], tmp_path / "model"))


def write_config(cfg: PipelineConfig, path: Path) -> Path:
    """Write a config back to YAML, for tests that drive the CLI."""
    import yaml

    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False))
    return path
