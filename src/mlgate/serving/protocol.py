"""MLflow's scoring protocol for ``POST /invocations``: request bodies parsed into named columns, so any
client of ``mlflow models serve`` works unchanged. JSON with ``dataframe_split``, ``dataframe_records``,
``instances`` or ``inputs`` (plus an ignored ``params``), or ``text/csv`` with a header row.

Rows and columns are counted while a body is read (:mod:`mlgate.serving.reader`); a body of up to
:data:`SMALL_BODY` bytes, whose parse can allocate little whatever it holds, is parsed whole and counted
after.
"""

from __future__ import annotations

import json
from typing import Any

from mlgate.serving.errors import show
from mlgate.serving.model import Column, InputError
from mlgate.serving.reader import Limits, read_csv, read_invocation

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PARAMS_KEY = "params"
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
SMALL_BODY = 16 * 1024

Columns = dict[str, list[Any]]


class UnsupportedMediaType(InputError):
    """The content type is neither JSON nor CSV (HTTP 415)."""


def _from_records(records: Any, where: str) -> tuple[Columns, int]:
    if not isinstance(records, list):
        raise InputError(f"{where} must be a list of records (objects of column name to value)")
    names: dict[str, None] = {}
    for i, row in enumerate(records):
        if not isinstance(row, dict):
            raise InputError(
                f"{where}[{i}] must be an object of column name to value, got {type(row).__name__}"
            )
        names.update(dict.fromkeys(row))
    return {name: [row.get(name) for row in records] for name in names}, len(records)


def _from_split(split: Any) -> tuple[Columns, int]:
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
        raise InputError('dataframe_split must be an object with "columns" (a list of names) and "data"')
    names, rows = split["columns"], split.get("data")
    if not all(isinstance(n, str) for n in names):
        raise InputError("dataframe_split.columns must hold column names (strings)")
    if not isinstance(rows, list):
        raise InputError("dataframe_split.data must be a list of rows")
    width = len(names)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise InputError(f"dataframe_split.data[{i}] must be a list of {width} values, one per column")
    return {name: [row[j] for row in rows] for j, name in enumerate(names)}, len(rows)


def _from_columnar(data: dict[str, Any], where: str) -> tuple[Columns, int]:
    lengths = set()
    for name, values in data.items():
        if not isinstance(values, list):
            raise InputError(f"{where}.{name[:60]} must be a list of values (one per row)")
        lengths.add(len(values))
    if len(lengths) > 1:
        raise InputError(
            f"{where}: every column must have the same number of values, got lengths {sorted(lengths)}"
        )
    return dict(data), lengths.pop() if lengths else 0


def _load_small(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError("the body is not valid JSON: nested too deeply") from None


def check_limits(columns: Columns, n_rows: int, limits: Limits) -> tuple[Columns, int]:
    """``columns`` and ``n_rows`` when they are within ``limits``.

    Raises:
        TooLarge: more rows or columns than ``limits`` allow.
    """
    if n_rows > limits.rows:
        raise limits.too_many("rows")
    if len(columns) > limits.columns:
        raise limits.too_many("columns")
    return columns, n_rows


def parse_json(body: bytes, limits: Limits) -> tuple[Columns, int]:
    """Named columns and the row count of a JSON scoring request.

    Raises:
        TooLarge: more rows or columns than ``limits`` allow.
        InputError: the body is not JSON, has no (or more than one) format key, or the wrong shape.
    """
    payload = _load_small(body) if len(body) <= SMALL_BODY else read_invocation(body, limits)
    if not isinstance(payload, dict):
        raise InputError(f"the body must be a JSON object with one of the keys {list(FORMATS)}")
    keys = [k for k in FORMATS if k in payload]
    if len(keys) != 1:
        raise InputError(
            f"the body must have exactly one of the keys {list(FORMATS)}, got {show(sorted(payload))}"
        )
    if not isinstance(payload.get(PARAMS_KEY, {}), dict):
        raise InputError(f"{PARAMS_KEY} must be an object of parameter name to value")
    key = keys[0]
    data = payload[key]
    if key == "dataframe_split":
        return check_limits(*_from_split(data), limits)
    if key != "dataframe_records" and isinstance(data, dict):
        return check_limits(*_from_columnar(data, key), limits)
    return check_limits(*_from_records(data, key), limits)


def _csv_value(col: Column | None, text: str, row: int) -> Any:
    if text == "":
        return None
    if col is None or col.python_type is str:
        return text
    try:
        if col.python_type is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        return col.python_type(text)
    except ValueError:
        raise InputError(f"column {col.name!r} expects {col.type}; CSV row {row} has {show(text)}") from None


def parse_csv(body: bytes, columns: list[Column], limits: Limits) -> tuple[Columns, int]:
    """Named columns and the row count of a CSV body with a header row, typed by the signature.

    Raises:
        TooLarge: more rows or columns than ``limits`` allow.
        InputError: the body is not UTF-8, has no header, a row has the wrong width or a value the wrong type.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"the CSV body is not UTF-8: {exc}") from None
    header, data = read_csv(text, limits)
    by_name = {c.name: c for c in columns}
    for i, row in enumerate(data, start=1):
        if len(row) != len(header):
            raise InputError(f"CSV row {i} has {len(row)} values, the header names {len(header)} columns")
    return {
        name: [_csv_value(by_name.get(name), row[j], i) for i, row in enumerate(data, start=1)]
        for j, name in enumerate(header)
    }, len(data)


def media_type(content_type: str | None, accepted: tuple[str, ...] = (JSON_TYPE, CSV_TYPE)) -> str:
    """The media type of a request, if it is one of ``accepted`` (charset utf-8 only, like MLflow).

    Raises:
        UnsupportedMediaType: another media type, or another charset.
    """
    mime, *params = [p.strip() for p in (content_type or "").split(";")]
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            raise UnsupportedMediaType(
                f"unsupported content type parameter {show(param)}: only charset=utf-8"
            )
    mime = mime.lower()
    if mime not in accepted:
        raise UnsupportedMediaType(
            f"content type {show(content_type)} is not supported: use {' or '.join(accepted)}"
        )
    return mime


def parse_request(
    body: bytes, content_type: str | None, columns: list[Column], limits: Limits
) -> tuple[Columns, int]:
    """Dispatch on the content type: JSON or CSV.

    Raises:
        UnsupportedMediaType: not JSON or CSV, or another charset.
        TooLarge: more rows or columns than ``limits`` allow.
        InputError: the body does not parse.
    """
    if media_type(content_type) == JSON_TYPE:
        return parse_json(body, limits)
    return parse_csv(body, columns, limits)
