"""The logged model's pip requirements: what it needs to load and predict, pinned to the installed versions,
given to log_model (MLflow's own inference re-imports everything in a subprocess and listed test tools)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from mlgate.train import MODEL_DISTRIBUTIONS, model_requirements


def test_the_logged_model_lists_exactly_its_runtime_pinned(trained_model: dict) -> None:
    model_dir = Path(trained_model["model_dir"])
    listed = (model_dir / "requirements.txt").read_text().split()
    expected = sorted(f"{n}=={importlib.metadata.version(n)}" for n in MODEL_DISTRIBUTIONS)
    assert listed == expected
    assert not any(r.startswith(("pytest", "rich", "psutil")) for r in listed)
    assert "scikit-learn==" in (model_dir / "conda.yaml").read_text()


def test_an_estimator_from_another_package_adds_its_distribution() -> None:
    # an estimator class path outside scikit-learn: its top-level package's distribution is pinned too
    found = model_requirements("mlflow.pyfunc.PythonModel")
    assert f"mlflow=={importlib.metadata.version('mlflow')}" in found
    found = model_requirements("skops.io.dump")
    assert [r for r in found if r.startswith("skops==")] == [f"skops=={importlib.metadata.version('skops')}"]
    found = model_requirements("pydantic.BaseModel")
    assert f"pydantic=={importlib.metadata.version('pydantic')}" in found
