"""MLflow's known harmless lines, hidden one exact message at a time; nothing else is silenced.

No MLflow import here: the CLI calls this before every command, and the serving process never imports MLflow.
"""

from __future__ import annotations

import logging
import warnings

# MLflow lines whose cause is known and harmless, each matched exactly, by its logger or warning category.
# MLflow registers one dataset source per artifact-repository scheme, and the local repository has two ("" and
# "file"), so every local path matches LocalArtifactDatasetSource twice (HDFS likewise: "hdfs" and "viewfs");
# both resolve it the same way. Only a class named twice is hidden: two different sources still warn.
_DUPLICATE_DATASET_SOURCE = (
    r"The specified dataset source can be interpreted in multiple ways: (\w+), \1\. "
    r"MLflow will assume that this is a \1 source\.$"
)
_KNOWN_LOG_LINES = {
    # mlflow.models.evaluate makes the evaluated model MLflow's "active model" while it runs and says so;
    # mlgate never uses the active model (each step names its model URI).
    "mlflow.tracking.fluent": (
        "Active model is set to the logged model with ID: ",
        "Use `mlflow.set_active_model` to set the active model to a different one if needed.",
    ),
    # The default evaluator computes every metric on the first row before the whole set, and announces it.
    "mlflow.models.evaluation.default_evaluator": ("Testing metrics on first row...",),
    # Logged for every multiclass evaluation, even when `label_list` is given (its advice does not stop it);
    # the binary counterpart, which names the positive label the metrics use, is kept.
    "mlflow.models.evaluation.evaluators.classifier": (
        "The evaluation dataset is inferred as multiclass dataset, number of classes is inferred as ",
    ),
}


class _DropKnownLines(logging.Filter):
    """Drop a logger's records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_known_mlflow_noise() -> None:
    """Hide MLflow's known harmless lines (above), nothing else; safe to call any number of times."""
    warnings.filterwarnings(
        "ignore",
        message=_DUPLICATE_DATASET_SOURCE,
        category=UserWarning,
        module=r"mlflow\.data\.dataset_source_registry",
    )
    for name, prefixes in _KNOWN_LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownLines) for f in logger.filters):
            logger.addFilter(_DropKnownLines(prefixes))
