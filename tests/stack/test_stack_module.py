"""The stack module's contract without starting anything: settings, missing stacks, bad service names."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mlgate.cli import cli
from mlgate.stack import (
    StackError,
    StackSettings,
    down,
    free_port,
    health,
    load_settings,
    start_service,
    status,
)
from tests.conftest import require


def _settings(root: Path) -> StackSettings:
    return StackSettings(
        root=str(root),
        pg_port=5433,
        s3_port=9100,
        mlflow_port=5100,
        db_name="mlflow",
        db_user="mlflow",
        db_password="pw",
        bucket="b",
        s3_access_key="k",
        s3_secret_key="s",
    )


def test_settings_build_every_address_on_loopback(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    assert s.tracking_uri == "http://127.0.0.1:5100"
    assert s.backend_store_uri == "postgresql+psycopg2://mlflow:pw@127.0.0.1:5433/mlflow"
    assert s.s3_endpoint == "http://127.0.0.1:9100"
    assert s.artifacts_destination == "s3://b/artifacts"


def test_missing_stack_is_reported_by_folder(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no stack in .*run `mlgate stack up`"):
        load_settings(tmp_path)
    with pytest.raises(StackError):
        status(tmp_path)
    assert down(tmp_path) == []


def test_unknown_service_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown stack service 'redis'"):
        start_service(_settings(tmp_path), "redis")


def test_nothing_listening_is_not_healthy() -> None:
    assert not health(f"http://127.0.0.1:{free_port()}", timeout=0.5)


def test_cli_status_without_stack_fails_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["stack", "status", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert "no stack in" in result.output


def test_down_never_deletes_a_folder_that_is_not_a_stack(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    assert down(tmp_path) == []
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_port_taken_before_the_server_binds_it_is_replaced_and_saved(tmp_path: Path) -> None:
    """The port was free when chosen; another process bound it before moto did (a socket bound, not
    listening, as an outgoing connection's ephemeral port is): moto exits, the stack moves to a new port."""
    import json
    import socket

    from mlgate.stack import _save_settings, stop_service

    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    root = tmp_path / "stack"
    for sub in ("pids", "logs"):
        (root / sub).mkdir(parents=True)
    settings = StackSettings(**{**_settings(root).__dict__, "s3_port": port, "bucket": "mlgate-port-test"})
    _save_settings(settings)
    try:
        started = start_service(settings, "s3", timeout=60)
        assert started.s3_port != port
        assert json.loads((root / "stack.json").read_text())["s3_port"] == started.s3_port
        assert started.s3_client().list_buckets()["Buckets"][0]["Name"] == "mlgate-port-test"
        assert "Address already in use" in (root / "logs" / "s3.log").read_text()
    finally:
        stop_service(load_settings(root), "s3")
        taken.close()


def test_a_postgresql_binary_its_user_cannot_reach_is_named_with_the_way_out() -> None:
    """Under root the embedded PostgreSQL runs as a system user: a checkout in a folder only root may enter
    (mkdtemp's 0700, a private home) stops it at its first binary; the error says whom, what and how."""
    import os
    import shutil
    import tempfile

    from mlgate.stack import PG_SYSTEM_USER, _pg_run

    require(os.geteuid() == 0, "the stack switches to its PostgreSQL user only under root")
    private = Path(tempfile.mkdtemp(prefix="mlgate-pg-private-"))  # 0700, as mkdtemp makes it
    try:
        initdb = private / "initdb"
        initdb.write_text("#!/bin/sh\nexit 0\n")
        initdb.chmod(0o755)
        with pytest.raises(StackError) as raised:
            _pg_run([str(initdb), "--version"])
        message = str(raised.value)
        assert f"could not be run as the system user {PG_SYSTEM_USER}" in message and str(initdb) in message
        assert "chmod o+x" in message
        private.chmod(0o755)  # once the folder is searchable, the same binary runs as that user
        _pg_run([str(initdb), "--version"])
    finally:
        shutil.rmtree(private, ignore_errors=True)
