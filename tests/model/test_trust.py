"""A model artifact cannot choose what it runs: a registered version whose MLmodel declares a dangerous type
for skops, and one saved with pickle, are refused by serve, score and evaluate before anything is built, and
the marker file their payload writes is never created. The shipped model loads as before."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess  # nosec B404 - the real mlgate CLI, fixed arguments
import sys
from pathlib import Path

import pytest
import skops.io
import yaml
from mlflow import MlflowClient

from mlgate import trust
from mlgate.modelio import load_pipeline, read_mlmodel
from mlgate.config import PipelineConfig
from mlgate.evaluate import evaluate
from mlgate.train import train
from mlgate.validate import validate
from tests.conftest import REPO, write_config
from tests.model.payload import Payload

MLGATE = [sys.executable, "-m", "mlgate"]


def _skops_with_payload(model: Path, marker: Path) -> Path:
    """The shipped model folder with its skops file replaced by a payload, and the payload's type declared
    trusted in its MLmodel file (what anyone who can write a model version can do)."""
    mlmodel = read_mlmodel(model)
    flavor = mlmodel["flavors"]["sklearn"]
    skops.io.dump(Payload(str(marker)), model / flavor["pickled_model"])
    flavor["skops_trusted_types"] = [*flavor.get("skops_trusted_types", []), "tests.model.payload.Payload"]
    (model / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    shutil.rmtree(model / "onnx", ignore_errors=True)  # served by scikit-learn, the path that builds objects
    return model


def _pickled(model: Path, marker: Path) -> Path:
    import cloudpickle

    mlmodel = read_mlmodel(model)
    flavor = mlmodel["flavors"]["sklearn"]
    (model / flavor["pickled_model"]).unlink()
    flavor.update(serialization_format="cloudpickle", pickled_model="model.pkl")
    flavor.pop("skops_trusted_types", None)
    (model / "model.pkl").write_bytes(cloudpickle.dumps(Payload(str(marker))))
    (model / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    shutil.rmtree(model / "onnx", ignore_errors=True)
    return model


MAKERS = {"skops declaring a dangerous type": _skops_with_payload, "pickle": _pickled}


def test_the_allow_list_is_exactly_what_the_shipped_model_needs(model_copy: Path) -> None:
    mlmodel = read_mlmodel(model_copy)
    path = model_copy / mlmodel["flavors"]["sklearn"]["pickled_model"]
    needed = set(skops.io.get_untrusted_types(file=path))
    assert needed <= trust.TRUSTED_TYPES
    assert hasattr(load_pipeline(model_copy, mlmodel), "predict")


@pytest.mark.parametrize("kind", list(MAKERS))
def test_a_model_that_would_run_code_is_refused_by_score_serve_and_evaluate(
    kind: str, trained_model: dict, cfg: PipelineConfig, store: Path
) -> None:
    marker = store / "ran"
    model = MAKERS[kind](Path(shutil.copytree(trained_model["model_dir"], store / "model")), marker)
    config = write_config(cfg, store / "pipeline.yaml")
    client = MlflowClient()
    client.create_registered_model(cfg.model_name)
    version = client.create_model_version(cfg.model_name, str(model)).version
    client.set_registered_model_alias(cfg.model_name, "champion", version)
    env = dict(os.environ)  # the tracking URI of the store fixture
    tmp_path = store
    why = "not skops" if kind == "pickle" else "tests.model.payload.Payload"

    score = subprocess.run(  # nosec B603
        [*MLGATE, "--config", str(config), "score", "--input", str(REPO / "data" / "penguins.csv"),
         "--output", str(tmp_path / "scores.parquet")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert score.returncode != 0 and why in score.stderr, score.stderr[-2000:]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve = subprocess.run(  # nosec B603 - refused at start, so it returns
        [*MLGATE, "--config", str(config), "serve", "--port", str(port), "--runtime", "sklearn"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert serve.returncode != 0 and why in serve.stderr, serve.stderr[-2000:]

    validate(cfg)  # a candidate to evaluate against that champion
    train(cfg)
    with pytest.raises(trust.UntrustedModelError, match=why.replace(".", r"\.")):
        evaluate(cfg)
    assert not marker.exists(), f"the {kind} payload ran"
