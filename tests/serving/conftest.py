"""Fixtures for the serving tests: the session's champion loaded for serving, an app, held-out rows."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from mlgate.serving.app import create_app
from mlgate.serving.model import ServedModel, load_served_model
from mlgate.serving.settings import ServingSettings


@pytest.fixture(scope="session")
def served_model(trained_model: dict[str, Any]) -> ServedModel:
    """The champion of the session's pipeline run, loaded the way the service loads it."""
    return load_served_model(trained_model["model_dir"])


@pytest.fixture(scope="session")
def test_rows(trained_model: dict[str, Any]) -> pd.DataFrame:
    """The held-out rows (features only, with their missing values)."""
    features = [f.name for f in trained_model["config"].data.features]
    return pd.read_parquet(trained_model["test_path"])[features]


@pytest.fixture
def client(served_model: ServedModel) -> Iterator[TestClient]:
    """A started app (lifespan run) with default settings."""
    with TestClient(create_app(ServingSettings(), served_model)) as c:
        yield c


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready records: NaN becomes null."""
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_dir(trained_model: dict[str, Any]) -> Path:
    return Path(trained_model["model_dir"])
