"""Only MLflow's known harmless lines are hidden: the exact messages, nothing that only looks like them."""

from __future__ import annotations

import logging
import warnings

import pandas as pd
import pytest

from mlgate.mlflow_noise import _DropKnownLines, quiet_known_mlflow_noise


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        quiet_known_mlflow_noise()
        yield


def _warnings_of(fn) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_mlflow_noise()  # after "always", as the CLI's call comes after Python's defaults
        fn()
    return [str(w.message) for w in caught]


def test_a_local_dataset_source_no_longer_warns_twice(tmp_path):
    import mlflow

    path = tmp_path / "data.csv"
    pd.DataFrame({"x": [1.0], "y": ["a"]}).to_csv(path, index=False)
    messages = _warnings_of(lambda: mlflow.data.from_pandas(pd.read_csv(path), source=str(path)))
    assert not [m for m in messages if "interpreted in multiple ways" in m], messages


def test_an_ambiguity_between_two_different_sources_still_warns():
    from mlflow.data.dataset_source_registry import DatasetSourceRegistry
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    class OtherSource(HTTPDatasetSource):
        pass

    registry = DatasetSourceRegistry()
    registry.register(HTTPDatasetSource)
    registry.register(OtherSource)
    messages = _warnings_of(lambda: registry.resolve("https://example.com/data.csv"))
    assert any("multiple ways: HTTPDatasetSource, OtherSource" in m for m in messages), messages


def test_only_the_known_log_lines_are_dropped(quiet):
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("mlflow.tracking.fluent")
    handler = Collect()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        logger.info("Active model is set to the logged model with ID: m-123")
        logger.info("Use `mlflow.set_active_model` to set the active model to a different one if needed.")
        logger.info("Experiment with name 'x' does not exist. Creating a new experiment.")
        logger.warning("Failed to set active model ID to m-123, error: boom")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert records == [
        "Experiment with name 'x' does not exist. Creating a new experiment.",
        "Failed to set active model ID to m-123, error: boom",
    ]


def test_calling_it_again_adds_no_second_filter():
    quiet_known_mlflow_noise()
    quiet_known_mlflow_noise()
    ours = [f for f in logging.getLogger("mlflow.tracking.fluent").filters if isinstance(f, _DropKnownLines)]
    assert len(ours) == 1


def test_the_multiclass_line_goes_and_the_binary_one_stays(quiet):
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("mlflow.models.evaluation.evaluators.classifier")
    handler = Collect()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        logger.info(
            "The evaluation dataset is inferred as multiclass dataset, number of classes is inferred as 3. "
            "If this is incorrect, please specify the `label_list` parameter in `evaluator_config`."
        )
        logger.info(
            "The evaluation dataset is inferred as binary dataset, positive label is male, negative ..."
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert records == [
        "The evaluation dataset is inferred as binary dataset, positive label is male, negative ..."
    ]
