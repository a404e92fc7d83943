"""The one pipeline config: a YAML file validated into typed objects, with no side effects on load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG_PATH = Path("config/pipeline.yaml")


class ConfigError(ValueError):
    """The config file is missing, unreadable or does not match the schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    """One input column: its type and the values it may take."""

    name: str
    type: Literal["numeric", "categorical"]
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None

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


class EstimatorConfig(_Strict):
    """Any scikit-learn compatible classifier, by import path and keyword parameters."""

    class_path: str = Field(alias="class")
    params: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SplitConfig(_Strict):
    test_fraction: float = Field(default=0.25, gt=0.0, lt=1.0)
    seed: int = 42
    stratify: bool = True


class Threshold(_Strict):
    """One promotion rule: an absolute floor (or ceiling) and a bound against the current champion."""

    metric: str
    direction: Literal["higher", "lower"] = "higher"
    min_value: float | None = None
    max_value: float | None = None
    max_regression: float | None = Field(default=None, ge=0.0)
    min_improvement: float | None = None

    @model_validator(mode="after")
    def _one_champion_rule(self) -> "Threshold":
        if self.max_regression is not None and self.min_improvement is not None:
            raise ValueError(f"threshold {self.metric!r}: set max_regression or min_improvement, not both")
        return self


class AliasConfig(_Strict):
    champion: str = "champion"
    challenger: str = "challenger"


class PromotionConfig(_Strict):
    thresholds: list[Threshold] = Field(min_length=1)
    aliases: AliasConfig = AliasConfig()
    lock_timeout_seconds: float = Field(default=120.0, gt=0.0)


class DriftConfig(_Strict):
    """When batch scoring reports an input feature as drifted from the training reference."""

    psi_threshold: float = Field(default=0.2, gt=0.0)


class PipelineConfig(_Strict):
    """The whole pipeline: experiment, model name, data, estimator, split, promotion gate and drift check."""

    experiment: str
    model_name: str
    data: DataConfig
    estimator: EstimatorConfig
    split: SplitConfig = SplitConfig()
    promotion: PromotionConfig
    drift: DriftConfig = DriftConfig()
    outputs_dir: str = "outputs"

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
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)


def load_config(
    path: str | Path = DEFAULT_CONFIG_PATH, overrides: dict[str, Any] | None = None
) -> PipelineConfig:
    """Read and validate the pipeline config.

    Args:
        path: the YAML file.
        overrides: dotted keys to replace after reading, e.g. ``{"data.source": "other.csv"}``.

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
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid config {path}: {_format_errors(exc)}") from None
