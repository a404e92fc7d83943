"""The one pipeline config: a YAML file validated into typed objects, with no side effects on load."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATH = Path("config/pipeline.yaml")
CLASSIFICATION, REGRESSION = "classification", "regression"
TASK_AUTO = "auto"  # `mlgate init --task auto`: guess it from the target
Task = Literal["classification", "regression"]


class ConfigError(ValueError):
    """The config file is missing, unreadable or does not match the schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_text(value: Any) -> Any:
    """Numbers among categories or classes are the text the data holds: ``[1, 2]`` is ``["1", "2"]``."""
    if isinstance(value, list):
        return [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
    return value


class Feature(_Strict):
    """One input column: its type and the values it may take."""

    name: str
    type: Literal["numeric", "categorical"]
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None

    _categories_as_text = field_validator("categories", mode="before")(_as_text)

    @model_validator(mode="after")
    def _check_kind(self) -> "Feature":
        if self.type == "categorical" and (self.min is not None or self.max is not None):
            raise ValueError(f"feature {self.name!r}: min/max apply to numeric features only")
        if self.type == "numeric" and self.categories is not None:
            raise ValueError(f"feature {self.name!r}: categories apply to categorical features only")
        return self


class DataConfig(_Strict):
    """Where the data is and what it must look like."""

    source: str
    target: str
    features: list[Feature] = Field(min_length=1)
    classes: list[str] | None = None
    max_invalid_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    drop_duplicates: bool = True

    _classes_as_text = field_validator("classes", mode="before")(_as_text)

    @field_validator("features")
    @classmethod
    def _unique_names(cls, features: list[Feature]) -> list[Feature]:
        names = [f.name for f in features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate feature names: {dupes}")
        return features

    @model_validator(mode="after")
    def _target_not_feature(self) -> "DataConfig":
        if self.target in self.feature_names:
            raise ValueError(f"target {self.target!r} is also listed as a feature")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def features_of(self, kind: str) -> list[str]:
        return [f.name for f in self.features if f.type == kind]


def import_class(class_path: str) -> type:
    """The class an import path names (``sklearn.ensemble.RandomForestClassifier``).

    Raises:
        ValueError: the module or the class cannot be imported.
    """
    module_name, _, class_name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"estimator.class: cannot import {class_path!r}") from None


def estimator_task(cls: type) -> Task | None:
    """The task a scikit-learn estimator class is for, or None when it is neither classifier nor regressor."""
    from sklearn.base import ClassifierMixin, RegressorMixin

    if issubclass(cls, ClassifierMixin):
        return CLASSIFICATION
    if issubclass(cls, RegressorMixin):
        return REGRESSION
    return None


class EstimatorConfig(_Strict):
    """Any scikit-learn compatible classifier or regressor, by import path and keyword parameters."""

    class_path: str = Field(alias="class")
    params: dict[str, Any] = Field(default_factory=dict)
    # types a model of this estimator needs beyond mlgate's allow-list (mlgate.trust), e.g. another library's
    # tree class: loading a model trusts their code
    trusted_types: tuple[str, ...] = ()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SplitConfig(_Strict):
    test_fraction: float = Field(default=0.25, gt=0.0, lt=1.0)
    seed: int = 42
    stratify: bool = True


def better_direction(metric: str) -> Literal["higher", "lower"]:
    """Which way a metric improves: errors and losses (``*_error``, ``*_loss``, ``log_loss``) are lower."""
    return "lower" if metric.endswith(("_error", "loss")) else "higher"


class Threshold(_Strict):
    """One promotion rule: an absolute floor (or ceiling) and a bound against the current champion.

    ``direction`` defaults to the metric's own (lower for errors and losses, higher otherwise)."""

    metric: str
    direction: Literal["higher", "lower"] | None = None
    min_value: float | None = None
    max_value: float | None = None
    max_regression: float | None = Field(default=None, ge=0.0)
    min_improvement: float | None = None
    confidence: float | None = Field(default=None, gt=0.5, lt=1.0)

    @model_validator(mode="after")
    def _one_champion_rule(self) -> "Threshold":
        if self.max_regression is not None and self.min_improvement is not None:
            raise ValueError(f"threshold {self.metric!r}: set max_regression or min_improvement, not both")
        if self.direction is None:
            object.__setattr__(self, "direction", better_direction(self.metric))
        if self.confidence is not None:
            _check_paired(self.metric, f"threshold {self.metric!r}: confidence")
        return self


def _check_paired(metric: str, where: str) -> None:
    from mlgate.evidence import PAIRED_METRICS

    if metric not in PAIRED_METRICS:
        raise ValueError(f"{where}: no paired test for {metric!r}; one of {', '.join(PAIRED_METRICS)}")


class SliceRule(_Strict):
    """No slice (the rows sharing one value of a categorical feature) may get worse than under the champion
    by more than ``max_regression``; slices of fewer than ``min_rows`` held-out rows are not judged."""

    feature: str
    metric: str
    max_regression: float = Field(ge=0.0)
    min_rows: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _known_metric(self) -> "SliceRule":
        _check_paired(self.metric, f"slice rule on {self.feature!r}")
        return self

    @property
    def direction(self) -> Literal["higher", "lower"]:
        return better_direction(self.metric)


class ShadowRule(_Strict):
    """Evidence from live traffic: a service started with ``--shadow models:/<name>@<challenger>`` scored
    copies of its requests with the candidate; ``mlgate shadow-report --output <outputs>/<report>`` saved the
    summary.
    The candidate must agree with the served champion on at least ``min_agreement`` of at least ``min_rows``
    rows; no report, a report of another version or too few rows hold the candidate (exit 3)."""

    min_agreement: float = Field(ge=0.0, le=1.0)
    min_rows: int = Field(default=1000, ge=1)
    report: str = "shadow.json"  # in the outputs folder


class AliasConfig(_Strict):
    champion: str = "champion"
    challenger: str = "challenger"


class PromotionConfig(_Strict):
    thresholds: list[Threshold] = Field(min_length=1)
    slices: list[SliceRule] = Field(default_factory=list)
    shadow: ShadowRule | None = None
    bootstrap_resamples: int = Field(default=1000, ge=100)
    aliases: AliasConfig = AliasConfig()
    lock_timeout_seconds: float = Field(default=120.0, gt=0.0)


class DriftConfig(_Strict):
    """When batch scoring reports an input feature as drifted from the training reference."""

    psi_threshold: float = Field(default=0.2, gt=0.0)


class OnnxConfig(_Strict):
    """Compiling the trained pipeline to ONNX (mlgate.compiler), used by serving and batch when it agrees."""

    enabled: bool = True
    # labels must be identical; probabilities may differ by this much, a regressor's values by this much
    # times max(1, |value|)
    tolerance: float = Field(default=1e-5, gt=0.0, le=0.1)


class PipelineConfig(_Strict):
    """The whole pipeline: experiment, model name, data, estimator, split, promotion gate and drift check."""

    experiment: str
    model_name: str
    task: Task | None = None
    intended_use: str | None = None
    data: DataConfig
    estimator: EstimatorConfig
    split: SplitConfig = SplitConfig()
    promotion: PromotionConfig
    drift: DriftConfig = DriftConfig()
    onnx: OnnxConfig = OnnxConfig()
    outputs_dir: str = "outputs"

    @model_validator(mode="after")
    def _resolve_task(self, info: ValidationInfo) -> "PipelineConfig":
        """Infer ``task`` from the estimator when absent; refuse an estimator or classes of the other task.
        With the context ``{"import_estimator": False}`` (batch scoring, which never fits: it spares the
        scoring process scikit-learn's import) the estimator is not imported and ``task`` stays as given."""
        if not (info.context or {}).get("import_estimator", True):
            return self
        kind = estimator_task(import_class(self.estimator.class_path))
        task = self.task or kind
        if task is None:
            raise ValueError(
                f"{self.estimator.class_path} is neither a classifier nor a regressor: set task: "
                "classification or task: regression"
            )
        if kind is not None and kind != task:
            other = "regressor" if kind == REGRESSION else "classifier"
            raise ValueError(
                f"{self.estimator.class_path} is a {other} but task is {task}: set task: {kind}, "
                f"or choose a {'classifier' if task == CLASSIFICATION else 'regressor'}"
            )
        if task == REGRESSION and self.data.classes is not None:
            raise ValueError("data.classes: a regression target has no classes; remove data.classes")
        categorical = self.data.features_of("categorical")
        for rule in self.promotion.slices:
            if rule.feature not in categorical:
                raise ValueError(
                    f"promotion.slices: {rule.feature!r} is not a categorical feature; "
                    f"slice by one of {categorical}"
                )
        if task == REGRESSION and self.promotion.shadow is not None:
            raise ValueError(
                "promotion.shadow: the agreement rate compares class labels; a regressor's values never "
                "agree exactly: remove promotion.shadow"
            )
        object.__setattr__(self, "task", task)
        return self

    @property
    def is_regression(self) -> bool:
        return self.task == REGRESSION

    def digest(self) -> str:
        """A stable hash of the config's content, recorded on runs and model versions."""
        canonical = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def outputs(self) -> Path:
        return Path(self.outputs_dir)


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}" if where else msg)
    return "; ".join(lines)


def load_config(
    path: str | Path = DEFAULT_CONFIG_PATH,
    overrides: dict[str, Any] | None = None,
    import_estimator: bool = True,
) -> PipelineConfig:
    """Read and validate the pipeline config.

    Args:
        path: the YAML file.
        overrides: dotted keys to replace after reading, e.g. ``{"data.source": "other.csv"}``.
        import_estimator: import the estimator class to check it and infer ``task`` (False: neither, for
            commands that never fit a model).

    Returns:
        The validated config.

    Raises:
        ConfigError: the file is missing or any key is unknown, missing or of the wrong type.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    for key, value in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return PipelineConfig.model_validate(raw, context={"import_estimator": import_estimator})
    except ValidationError as exc:
        raise ConfigError(f"invalid config {path}: {_format_errors(exc)}") from None
