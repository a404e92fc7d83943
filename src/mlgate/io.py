"""File helpers shared by every step: tables and JSON written atomically, step results read back."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class DataSourceError(ValueError):
    """A data file is missing, empty or not in a format we read."""


def table_format(path: str | Path) -> str:
    """The format of a table file by its extension: ``csv`` or ``parquet``."""
    suffix = Path(str(path).split("?")[0]).suffix.lower()
    try:
        return TABLE_SUFFIXES[suffix]
    except KeyError:
        raise DataSourceError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv or .parquet"
        ) from None


def _is_local(source: str) -> bool:
    return "://" not in source or source.startswith("file://")


def read_table(source: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet table from a local path or a URI pandas understands.

    Raises:
        DataSourceError: the file does not exist, is empty, or cannot be parsed.
    """
    source = str(source)
    fmt = table_format(source)
    if _is_local(source):
        local = Path(source.removeprefix("file://"))
        if not local.is_file():
            raise DataSourceError(f"{source}: no such file")
        if local.stat().st_size == 0:
            raise DataSourceError(f"{source}: the file is empty")
    try:
        if fmt == "csv":
            return pd.read_csv(source, keep_default_na=True, na_values=["NA", ""])
        return pd.read_parquet(source)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as exc:
        raise DataSourceError(f"{source}: cannot read as {fmt}: {exc}") from None


def _atomic_target(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV or Parquet (by extension) to a temporary name, then rename it into place."""
    path = Path(path)
    fmt = table_format(path)
    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Write JSON atomically (temporary file, then rename)."""
    path = Path(path)
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(text: str, path: str | Path) -> Path:
    """Write a text file atomically."""
    path = Path(path)
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# Result files whose name is not the step that writes them.
_WRITTEN_BY = {"evaluation": "evaluate", "promotion": "promote"}


def read_step_result(outputs: Path, name: str) -> dict[str, Any]:
    """Read what an earlier step wrote to ``<outputs>/<name>.json``.

    Raises:
        FileNotFoundError: with a message naming the step to run first.
    """
    path = outputs / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `mlgate {_WRITTEN_BY.get(name, name)}` first")
    return json.loads(path.read_text())
