"""Checking a chunk against the model's signature, vectorised: each input converted to the type the model
expects, and every row that cannot be scored given its reasons, each naming the column (or the file)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from mlgate.batch.read import Chunk
from mlgate.modelio import Column

# scikit-learn's trees compute in float32 and refuse larger values; no real feature is near this.
FLOAT32_MAX = float(np.finfo(np.float32).max)
_DELIMITERS = (";", "\t", "|")


class Checked(BaseModel):
    """The model's inputs of every row of a chunk, typed, with the rows that fail and why.

    ``reasons`` has one entry per failing row (in row order), ``kinds`` counts the reasons without their
    values (``x: not a number``), and ``keys`` holds the key columns as text.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    features: pd.DataFrame
    bad: np.ndarray
    reasons: list[str]
    kinds: dict[str, int]
    keys: dict[str, pa.ChunkedArray]


class _Problems:
    """Reasons collected per column: a row mask with either one fixed text or a text per row."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.items: list[tuple[np.ndarray, str, Any]] = []  # (mask, kind, text or function of the row)

    def add(self, mask: np.ndarray, kind: str, text: Any = None) -> None:
        if mask.any():
            self.items.append((mask, kind, kind if text is None else text))

    def everywhere(self, kind: str) -> None:
        self.add(np.ones(self.n, dtype=bool), kind)

    def result(self) -> tuple[np.ndarray, list[str], dict[str, int]]:
        bad = np.zeros(self.n, dtype=bool)
        for mask, _, _ in self.items:
            bad |= mask
        per_row: dict[int, list[str]] = {int(i): [] for i in np.flatnonzero(bad)}
        kinds: Counter[str] = Counter()
        for mask, kind, text in self.items:
            rows = np.flatnonzero(mask)
            kinds[kind] += len(rows)
            for i in rows:
                per_row[int(i)].append(text if isinstance(text, str) else text(int(i)))
        return bad, ["; ".join(per_row[i]) for i in sorted(per_row)], dict(kinds)


def _text(arr: pa.ChunkedArray) -> tuple[pa.ChunkedArray, np.ndarray | None]:
    """Bytes or dictionary-encoded text as UTF-8 strings; the rows that are not valid UTF-8 become null."""
    t = arr.type
    if pa.types.is_dictionary(t):
        arr, t = pc.cast(arr, t.value_type), t.value_type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        try:
            return pc.cast(arr, pa.string()), None
        except pa.ArrowInvalid:
            values = arr.to_pylist()
            invalid = np.array([v is not None and not _valid_utf8(v) for v in values])
            fixed = [None if bad else (None if v is None else v.decode()) for v, bad in zip(values, invalid)]
            return pa.chunked_array([pa.array(fixed, pa.string())]), invalid
    return arr, None


def _valid_utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def _is_number(t: pa.DataType) -> bool:
    return (
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)
    )


def _numeric(col: Column, arr: pa.ChunkedArray, problems: _Problems, raw: Any) -> np.ndarray:
    """A column as float64 (NaN for null), its unusable rows added to ``problems``."""
    n = len(arr)
    if _is_number(arr.type):
        values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    elif _is_text(arr.type):
        try:
            values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            text = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)
            values = pd.to_numeric(text, errors="coerce").astype(float).to_numpy()
            unparsable = np.isnan(values) & text.notna().to_numpy()
            problems.add(
                unparsable, f"{col.name}: not a number", lambda i: f"{col.name}: {raw(i)!r} is not a number"
            )
    else:
        problems.everywhere(f"{col.name}: has type {arr.type}, expected a number")
        return np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        infinite = np.isinf(values)
        too_large = ~infinite & (np.abs(values) > FLOAT32_MAX)
    problems.add(
        infinite,
        f"{col.name}: not a finite number",
        lambda i: f"{col.name}: {raw(i)!r} is not a finite number",
    )
    problems.add(
        too_large,
        f"{col.name}: outside float32's range",
        lambda i: f"{col.name}: {raw(i)!r} is outside float32's range (±{FLOAT32_MAX:.1e})",
    )
    return values


def _missing_all(chunk: Chunk, inputs: tuple[Column, ...]) -> str:
    """Why a file holding none of the model's columns cannot be scored, with a hint at a wrong delimiter."""
    header = chunk.header
    shown = f"{header[:5]}{' ...' if len(header) > 5 else ''}"
    text = f"none of the model's columns is in the file (its header: {shown})"
    if len(header) == 1:
        for sep in _DELIMITERS:
            if any(c.name in header[0].split(sep) for c in inputs):
                return f"{text}: is it {sep!r}-delimited? mlgate reads ','-delimited CSV"
    return text


def check_chunk(chunk: Chunk, inputs: tuple[Column, ...], keys: tuple[str, ...] = ()) -> Checked:
    """Convert a chunk to the model's input types and find the rows the model cannot be given.

    A row fails when its file lacks a model or key column, names it twice, or when a value is not a number
    (for a numeric input), not finite, outside float32's range, not valid UTF-8, or null in a required input.
    """
    table = chunk.table
    n = table.num_rows
    problems = _Problems(n)
    columns: dict[str, Any] = {}

    def as_read(name: str, i: int) -> Any:
        return table.column(name)[i].as_py()

    def raw(name: str) -> Any:
        return lambda i: _value(as_read(name, i))

    if not any(c.name in table.column_names for c in inputs) and n:
        problems.everywhere(_missing_all(chunk, inputs))
    for name, count in chunk.duplicated.items():
        problems.everywhere(f"{name}: {count} columns of the file have this name")
    key_text: dict[str, pa.ChunkedArray] = {}
    for key in keys:
        if key not in table.column_names:
            problems.everywhere(f"{key}: missing key column")
            continue
        text, invalid = _text(table.column(key))
        if invalid is not None:
            problems.add(
                invalid,
                f"{key}: not valid UTF-8",
                lambda i, k=key: f"{k}: {as_read(k, i)!r} is not valid UTF-8",
            )
        key_text[key] = text if _is_text(text.type) else pc.cast(text, pa.string())
    for col in inputs:
        if col.name not in table.column_names:
            if any(c.name in table.column_names for c in inputs):
                problems.everywhere(f"{col.name}: missing column")
            columns[col.name] = np.full(n, np.nan)
            continue
        arr, invalid = _text(table.column(col.name))
        if invalid is not None:
            problems.add(
                invalid,
                f"{col.name}: not valid UTF-8",
                lambda i, c=col.name: f"{c}: {as_read(c, i)!r} is not valid UTF-8",
            )
        if col.numeric:
            columns[col.name] = _numeric(col, arr, problems, raw(col.name))
        elif _is_text(arr.type):
            # a null stays None, as in the typed data training and evaluation read (and as serving passes
            # it): the pipeline was fitted with it (a category of its own), not imputed as NaN would be
            columns[col.name] = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)
            if not pa.types.is_null(arr.type):  # an unclosed quote makes the rest of a CSV file one value
                spans = pc.fill_null(pc.match_substring(arr, "\n"), False).to_numpy(zero_copy_only=False)
                problems.add(
                    spans,
                    f"{col.name}: a value spanning lines",
                    lambda i, c=col.name: f"{c}: {raw(c)(i)!r} spans lines (an unclosed quote?)",
                )
        elif pa.types.is_integer(arr.type) or pa.types.is_boolean(arr.type):
            # categories written as whole numbers (or flags): training read them as their text
            columns[col.name] = pd.Series(
                pc.cast(arr, pa.string()).to_numpy(zero_copy_only=False), dtype=object
            )
        else:
            problems.everywhere(f"{col.name}: has type {arr.type}, expected a string")
            columns[col.name] = np.full(n, np.nan)
            continue
        if col.required:
            nulls = table.column(col.name).is_null().to_numpy(zero_copy_only=False)
            if invalid is not None:
                nulls &= ~invalid
            problems.add(nulls, f"{col.name}: null but required")
    bad, reasons, kinds = problems.result()
    return Checked(features=pd.DataFrame(columns), bad=bad, reasons=reasons, kinds=kinds, keys=key_text)


def _value(value: Any) -> Any:
    """A value as read, bytes shown as text (undecodable bytes escaped)."""
    return value.decode(errors="backslashreplace") if isinstance(value, bytes) else value
