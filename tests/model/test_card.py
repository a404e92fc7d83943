"""The model card of each registered version: an artifact of its run, its description and a file in
outputs, with data digest and size, features, task, metrics, gate verdict and intended use; linked from the
report."""

from __future__ import annotations

import json

from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from mlgate.card import DESCRIPTION_LIMIT, description
from mlgate.pipeline import run_pipeline


def test_each_version_gets_a_card_as_artifact_description_and_file(cfg, store):
    summary = run_pipeline(cfg)
    trained = json.loads((store / "outputs" / "train.json").read_text())
    version = MlflowClient().get_model_version(cfg.model_name, summary["candidate_version"])
    card = (store / "outputs" / "model_card.md").read_text()
    assert version.description == card
    logged = download_artifacts(run_id=trained["run_id"], artifact_path="model_card.md", dst_path=str(store))
    assert open(logged).read() == card
    assert f"- digest: `{trained['dataset_digest']}`" in card
    assert "- rows: 344 read, 344 accepted, 0 quarantined; 240 trained on, 104 held out" in card
    assert (
        "**Task**: classification" in card
        and "| island | categorical | Biscoe, Dream, Torgersen | yes |" in card
    )
    assert cfg.intended_use and cfg.intended_use in card
    assert "gate verdict **promote**: promoted to `champion`" in card and "| **accuracy_score** |" in card
    report = (store / "outputs" / "report.md").read_text()
    assert f"runs:/{trained['run_id']}/model_card.md" in report


def test_a_long_card_is_cut_at_a_line_with_a_pointer_to_the_artifact():
    card = "\n".join(f"| row {i} | {'x' * 60} |" for i in range(200))
    short = description(card, "abc123")
    assert len(short) <= DESCRIPTION_LIMIT and short.endswith("artifact `model_card.md` of run `abc123`.\n")
    assert description("# small\n", "abc123") == "# small\n"
