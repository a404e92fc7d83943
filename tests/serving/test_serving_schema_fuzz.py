"""Property-based fuzzing of the published OpenAPI schema with `schemathesis run --checks all` against the
real server process: no 5xx, every status and body as documented, every request the schema describes is scored
and every request it excludes is refused."""

from __future__ import annotations

import subprocess  # nosec B404 - runs schemathesis' own CLI
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving.conftest import mlgate_serve

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = 100
SEED = "20261201"  # fixed, so that a failure in CI reproduces locally with the same command


def test_schemathesis_finds_no_failure_of_any_check(trained_model: dict[str, Any], tmp_path: Path) -> None:
    with mlgate_serve(["--model", str(trained_model["model_dir"])], tmp_path / "server.log") as server:
        paths = set(httpx.get(f"{server['url']}/openapi.json").json()["paths"])
        # An array over the schema's maxItems (MLGATE_SERVE_MAX_ROWS) is refused as too large, 413, counted
        # before anything is built: one more rejection status than schemathesis expects by default.
        config = tmp_path / "schemathesis.toml"
        statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
        config.write_text(
            f"[checks.negative_data_rejection]\nexpected-statuses = {statuses!r}\n".replace("'", '"')
        )
        done = subprocess.run(  # nosec B603 - fixed argument list
            [
                str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config),
                "run", f"{server['url']}/openapi.json",
                "--checks", "all", "--mode", "all", "--phases", "examples,coverage,fuzzing",
                "-n", str(EXAMPLES_PER_OPERATION), "--seed", SEED, "--no-color",
                "--generation-database", "none", "--report-dir", str(tmp_path / "report"),
            ],
            capture_output=True, text=True, timeout=900, cwd=tmp_path,  # its cache goes there, not here
        )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout
    assert {"/invocations", "/predict", "/ready", "/metadata", "/health"} <= paths
    assert f"{len(paths)} selected / {len(paths)} total" in done.stdout
