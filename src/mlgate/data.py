"""Data checks: the declared schema as a pandera schema, row-level quarantine, and the train/test split."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
from sklearn.model_selection import train_test_split

from mlgate.config import CLASSIFICATION, REGRESSION, DataConfig, SplitConfig, Task
from mlgate.quarantine import REASON as REASON_COLUMN
from mlgate.quarantine import SOURCE_ROW as ROW_COLUMN


class SchemaMismatchError(ValueError):
    """The table as a whole does not fit the schema (a column is missing), so no row can be judged."""


class TooManyInvalidRowsError(ValueError):
    """More rows were quarantined than the config allows."""


class TaskMismatchError(ValueError):
    """The target's values do not fit the configured task (a continuous target under classification)."""


# Under classification, a numeric target with more distinct values than this is taken as continuous when its
# values are not whole numbers, or when there are more of them than a tenth of the rows.
MAX_FLOAT_CLASSES = 20


@dataclass(frozen=True)
class CheckResult:
    """Rows that passed, rows quarantined with a reason, and the count of rows read."""

    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    rows_in: int

    @property
    def invalid_fraction(self) -> float:
        return len(self.quarantined) / self.rows_in if self.rows_in else 0.0


def build_schema(data: DataConfig, task: Task = CLASSIFICATION) -> pa.DataFrameSchema:
    """The pandera schema for the declared features and target (values already coerced)."""
    columns: dict[str, pa.Column] = {}
    for feature in data.features:
        checks = []
        if feature.type == "numeric":
            if feature.min is not None:
                checks.append(pa.Check.ge(feature.min))
            if feature.max is not None:
                checks.append(pa.Check.le(feature.max))
            columns[feature.name] = pa.Column(float, checks=checks, nullable=feature.nullable)
        else:
            if feature.categories is not None:
                checks.append(pa.Check.isin(feature.categories))
            columns[feature.name] = pa.Column(object, checks=checks, nullable=feature.nullable)
    if task == REGRESSION:
        columns[data.target] = pa.Column(float, nullable=False)
    else:
        target_checks = [pa.Check.isin(data.classes)] if data.classes else []
        columns[data.target] = pa.Column(object, checks=target_checks, nullable=False)
    return pa.DataFrameSchema(columns, strict=False)


def coerce_types(
    df: pd.DataFrame, data: DataConfig, task: Task = CLASSIFICATION
) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """Cast features to their declared types and the target to text (classes) or a number (regression);
    return the cast frame and the reasons of rows that failed."""
    missing = [c for c in [*data.feature_names, data.target] if c not in df.columns]
    if missing:
        raise SchemaMismatchError(f"missing column(s) {missing}; the table has {list(df.columns)}")
    out = df[[*data.feature_names, data.target]].copy()
    reasons: dict[int, list[str]] = {}
    numbers = [*data.features_of("numeric"), *([data.target] if task == REGRESSION else [])]
    for name in numbers:
        cast = pd.to_numeric(out[name], errors="coerce").astype(float)
        bad = cast.isna() & out[name].notna()
        for idx in out.index[bad]:
            reasons.setdefault(idx, []).append(f"{name}: {out.at[idx, name]!r} is not a number")
        out[name] = cast
    for name in [*data.features_of("categorical"), *([data.target] if task == CLASSIFICATION else [])]:
        col = out[name]
        out[name] = col.where(col.isna(), col.astype(str)).astype(object)
    return out, reasons


def _schema_reasons(df: pd.DataFrame, schema: pa.DataFrameSchema, skip: set[int]) -> dict[int, list[str]]:
    reasons: dict[int, list[str]] = {}
    try:
        schema.validate(df.drop(index=list(skip)), lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        for row in cases.itertuples(index=False):
            if pd.isna(row.index):
                raise SchemaMismatchError(f"column {row.column}: {row.check}: {row.failure_case}") from None
            value = "null" if pd.isna(row.failure_case) else repr(row.failure_case)
            check = "must not be null" if row.check == "not_nullable" else f"fails {row.check}"
            reasons.setdefault(int(row.index), []).append(f"{row.column}: {value} {check}")
    return reasons


def check_task(df: pd.DataFrame, data: DataConfig, task: Task) -> None:
    """Refuse a target that cannot be the configured task's: continuous numbers under classification.

    Raises:
        TaskMismatchError: one line naming the fix.
    """
    if task != CLASSIFICATION or data.classes:
        return
    values = pd.to_numeric(df[data.target].dropna(), errors="coerce")
    if len(values) == 0 or values.isna().any():
        return
    distinct = values.nunique()
    whole = bool((values == values.round()).all())
    if distinct > MAX_FLOAT_CLASSES and (not whole or distinct > len(values) / 10):
        raise TaskMismatchError(
            f"target {data.target!r} is continuous ({distinct} distinct numbers) but task is classification: "
            "set task: regression and a regressor (e.g. sklearn.ensemble.RandomForestRegressor)"
        )


def check_rows(df: pd.DataFrame, data: DataConfig, task: Task = CLASSIFICATION) -> CheckResult:
    """Split a raw table into accepted rows and quarantined rows, each quarantined row with its reasons.

    Checks types, declared ranges and categories, nulls, the target's classes and duplicate rows.
    ``rows_in == len(accepted) + len(quarantined)`` always holds.

    Raises:
        SchemaMismatchError: a declared column is missing.
        TaskMismatchError: the target is continuous under classification.
    """
    raw = df.reset_index(drop=True)
    typed, reasons = coerce_types(raw, data, task)
    check_task(raw, data, task)
    for idx, found in _schema_reasons(typed, build_schema(data, task), set(reasons)).items():
        reasons.setdefault(idx, []).extend(found)
    if data.drop_duplicates:
        first_of = typed.astype(str).groupby(list(typed.columns), sort=False).ngroup()
        first_index = pd.Series(typed.index, index=typed.index).groupby(first_of).transform("min")
        for idx in typed.index[typed.duplicated(keep="first")]:
            reasons.setdefault(idx, []).append(f"duplicate of row {int(first_index[idx])}")
    bad = sorted(reasons)
    quarantined = raw.loc[bad].copy()
    quarantined.insert(0, ROW_COLUMN, bad)
    quarantined[REASON_COLUMN] = ["; ".join(reasons[i]) for i in bad]
    accepted = typed.drop(index=bad).reset_index(drop=True)
    return CheckResult(accepted=accepted, quarantined=quarantined.reset_index(drop=True), rows_in=len(raw))


def enforce_limit(result: CheckResult, max_invalid_fraction: float) -> None:
    """Fail when the quarantined share is above the configured limit, or when nothing was accepted."""
    if result.rows_in == 0:
        raise TooManyInvalidRowsError("the data has no rows")
    if result.invalid_fraction > max_invalid_fraction:
        raise TooManyInvalidRowsError(
            f"{len(result.quarantined)} of {result.rows_in} rows invalid "
            f"({result.invalid_fraction:.1%}), above the limit of {max_invalid_fraction:.1%}"
        )
    if result.accepted.empty:
        raise TooManyInvalidRowsError("no valid rows left after validation")


def split(
    df: pd.DataFrame, data: DataConfig, cfg: SplitConfig, task: Task = CLASSIFICATION
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic train/test split, stratified on the target when configured (classification only)."""
    stratify = df[data.target] if cfg.stratify and task == CLASSIFICATION else None
    train, test = train_test_split(df, test_size=cfg.test_fraction, random_state=cfg.seed, stratify=stratify)
    return train.reset_index(drop=True), test.reset_index(drop=True)
