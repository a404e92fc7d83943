"""Request bodies read within the limits: rows, columns and values are counted while a JSON or CSV body is
read, and reading stops with :class:`TooLarge` (HTTP 413) at the first row, column or value past a limit, so
a body over a limit never has more than the limits' worth of Python objects built from it.

A JSON array whose elements can only be plain values (a row, a column, the column names) is found with one
regular expression and, when its separators show it is within its limit, decoded in one call of the C
decoder; rows and anything else are read element by element. A CSV record's separators are counted before
the csv module splits it.
"""

from __future__ import annotations

import csv
import io
import json
import json.scanner
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mlgate.serving.model import InputError

MAX_DEPTH = 200
_WS = re.compile(r"[ \t\n\r]*")
# An array or object holding no array or object (strings may hold anything): linear, no backtracking.
_FLAT = {
    "[": re.compile(r'\[(?:[^\[\]{}"]++|"(?:[^"\\]++|\\.)*+")*+\]'),
    "{": re.compile(r'\{(?:[^\[\]{}"]++|"(?:[^"\\]++|\\.)*+")*+\}'),
}
_CLOSE = {"[": "]", "{": "}"}
# A CSV separator outside quotes (a quote opens a quoted field only at the start of a field, as in csv).
_CSV_SEPARATOR = re.compile(r'(?:(?<=,)|(?<=\n)|^)"(?:[^"]|"")*+(?:"|\Z)|,')
_scan = json.scanner.make_scanner(json.JSONDecoder())


class TooLarge(InputError):
    """A request over one of the limits (HTTP 413); the message names the limit."""


@dataclass(frozen=True)
class Limits:
    """The most a request may hold: rows, columns (fields of a row, tensors of a V2 request) and values."""

    rows: int
    columns: int

    @property
    def values(self) -> int:
        """Values of a JSON body outside its rows' plain values (parameters, nested values): few."""
        return 2 * (self.rows + self.columns)

    def too_many(self, what: str) -> TooLarge:
        limit, setting = {
            "rows": (self.rows, "MLGATE_SERVE_MAX_ROWS"),
            "columns": (self.columns, "MLGATE_SERVE_MAX_COLUMNS"),
            "values": (self.values, "2 x (MLGATE_SERVE_MAX_ROWS + MLGATE_SERVE_MAX_COLUMNS)"),
        }[what]
        return TooLarge(
            f"more than {limit} {what} in the request: over the limit of {limit} {what} ({setting})"
        )


class _JsonReader:
    """One pass over a JSON text; each ``read_*`` method reads the value at :attr:`pos` and moves past it."""

    def __init__(self, text: str, limits: Limits) -> None:
        self.text, self.pos, self.limits, self.budget = text, 0, limits, limits.values

    def fail(self, message: str, pos: int | None = None) -> InputError:
        error = json.JSONDecodeError(message, self.text, self.pos if pos is None else pos)
        return InputError(f"the body is not valid JSON: {error}")

    def skip(self) -> str:
        """Skip whitespace; the next character ('' at the end)."""
        self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]
        return self.text[self.pos : self.pos + 1]

    def scalar(self) -> Any:
        try:
            value, self.pos = _scan(self.text, self.pos)
        except StopIteration as stop:
            raise self.fail("Expecting value", stop.value) from None
        except json.JSONDecodeError as exc:
            raise InputError(f"the body is not valid JSON: {exc}") from None
        return value

    def count(self, n: int = 1) -> None:
        self.budget -= n
        if self.budget < 0:
            raise self.limits.too_many("values")

    def value(self, depth: int = 0) -> Any:
        """Any value, every value in it counted against the values limit."""
        if depth > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH}")
        self.count()
        opening = self.skip()
        if opening == "[":
            return self.array(None, None, lambda: self.value(depth + 1))
        if opening == "{":
            return self.object(None, None, lambda _key: self.value(depth + 1))
        return self.scalar()

    def plain(self) -> Any:
        """A value expected to be plain (a string, number, boolean or null): counted only when it is not."""
        if self.skip() in _CLOSE:
            return self.value(MAX_DEPTH - 8)
        return self.scalar()

    def flat(self, opening: str, limit: int | None) -> tuple[bool, Any]:
        """(True, the array or object) when the one at :attr:`pos` holds plain values only and has no more
        than ``limit`` of them (decoded in one call); (False, None) otherwise."""
        if limit is None:
            return False, None
        match = _FLAT[opening].match(self.text, self.pos)
        if match is None or self.text.count(",", self.pos, match.end()) >= limit:
            return False, None
        return True, self.scalar()

    def items(self, opening: str, limit: int | None, what: str | None) -> Iterator[None]:
        """Yield once per element (or member) with :attr:`pos` at it; the caller reads it."""
        closing = _CLOSE[opening]
        if self.skip() != opening:
            raise self.fail(f"Expecting {opening!r}")
        self.pos += 1
        if self.skip() == closing:
            self.pos += 1
            return
        n = 0
        while True:
            n += 1
            if limit is not None and n > limit:
                raise self.limits.too_many(what or "values")
            yield
            nxt = self.skip()
            self.pos += 1
            if nxt == closing:
                return
            if nxt != ",":
                raise self.fail(f"Expecting ',' delimiter or {closing!r}", self.pos - 1)
            self.skip()

    def array(self, limit: int | None, what: str | None, item: Callable[[], Any] | None = None) -> list[Any]:
        """An array of at most ``limit`` elements, each read by ``item`` (plain values when None)."""
        if self.skip() != "[":
            return self.value()
        if item is None:
            done, values = self.flat("[", limit)
            if done:
                return values
        read = item or self.plain
        return [read() for _ in self.items("[", limit, what)]

    def object(
        self, limit: int | None, what: str | None, member: Callable[[str], Any] | None = None
    ) -> dict[str, Any]:
        """An object of at most ``limit`` members, each value read by ``member(key)`` (plain when None)."""
        if self.skip() != "{":
            return self.value()
        if member is None:
            done, values = self.flat("{", limit)
            if done:
                return values
        read = member or (lambda _key: self.plain())
        out: dict[str, Any] = {}
        for _ in self.items("{", limit, what):
            if self.skip() != '"':
                raise self.fail("Expecting property name enclosed in double quotes")
            key = self.scalar()
            if self.skip() != ":":
                raise self.fail("Expecting ':' delimiter")
            self.pos += 1
            self.skip()
            out[key] = read(key)
        return out

    def row(self) -> Any:
        """One row: a list or an object of at most ``columns`` values."""
        opening = self.skip()
        if opening == "[":
            return self.array(self.limits.columns, "columns")
        if opening == "{":
            return self.object(self.limits.columns, "columns")
        return self.value()

    def rows(self) -> list[Any]:
        return self.array(self.limits.rows, "rows", self.row)

    def column(self, _key: str = "") -> list[Any]:
        return self.array(self.limits.rows, "rows")

    def document(self, member: Callable[[str], Any]) -> Any:
        """The whole text: an object whose members are read by ``member`` (anything else as a plain value)."""
        if self.text.startswith("\ufeff"):
            raise self.fail("Unexpected UTF-8 BOM (decode using utf-8-sig)", 0)
        value = self.object(None, None, member) if self.skip() == "{" else self.value()
        if self.skip():
            raise self.fail("Extra data")
        return value


def _decode(body: bytes) -> str:
    try:
        return body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise InputError(f"the body is not valid JSON: {exc}") from None


def read_invocation(body: bytes, limits: Limits) -> Any:
    """The JSON of an MLflow scoring request (as :func:`json.loads` gives it), read within ``limits``.

    Raises:
        TooLarge: more rows, columns or values than ``limits`` allow.
        InputError: the body is not JSON.
    """
    reader = _JsonReader(_decode(body), limits)

    def split(key: str) -> Any:
        if key == "columns":
            return reader.array(limits.columns, "columns")
        return reader.rows() if key == "data" else reader.value()

    def member(key: str) -> Any:
        if key not in ("dataframe_split", "dataframe_records", "instances", "inputs"):
            return reader.value()
        if reader.skip() == "[":
            return reader.rows()
        if key == "dataframe_split":
            return reader.object(None, None, split)
        return reader.object(limits.columns, "columns", reader.column)

    return reader.document(member)


def read_records(body: bytes, limits: Limits) -> Any:
    """The JSON of a ``/predict`` request (``{"records": [...]}``), read within ``limits``.

    Raises:
        TooLarge, InputError: as :func:`read_invocation`.
    """
    reader = _JsonReader(_decode(body), limits)
    return reader.document(lambda key: reader.rows() if key == "records" else reader.value())


def read_infer(text: str | bytes, limits: Limits) -> Any:
    """The JSON header of a V2 infer request, read within ``limits``: at most ``columns`` input tensors,
    each with at most ``rows`` elements of data.

    Raises:
        TooLarge, InputError: as :func:`read_invocation`.
    """
    reader = _JsonReader(_decode(text) if isinstance(text, bytes) else text, limits)

    def tensor_member(key: str) -> Any:
        return reader.array(limits.rows, "rows") if key == "data" else reader.value()

    def tensor() -> Any:
        return reader.object(None, None, tensor_member) if reader.skip() == "{" else reader.value()

    def member(key: str) -> Any:
        return reader.array(limits.columns, "columns", tensor) if key == "inputs" else reader.value()

    return reader.document(member)


def _records(lines: Iterator[str], limits: Limits) -> Iterator[list[str]]:
    """CSV records of at most ``limits.columns`` fields: a record's separators are counted (exactly, by
    CSV's quoting rule, when the quick count says it could be over) before the csv module splits it."""
    pending: list[str] = []
    separators = 0

    def feed() -> Iterator[str]:
        nonlocal separators
        for line in lines:
            pending.append(line)
            separators += line.count(",")
            if separators >= limits.columns:
                text = "".join(pending)
                found = 0
                for match in _CSV_SEPARATOR.finditer(text):
                    found += match.group() == ","
                    if found >= limits.columns:
                        raise limits.too_many("columns")
                separators = found
            yield line

    for record in csv.reader(feed()):
        pending.clear()
        separators = 0
        yield record


def read_csv(text: str, limits: Limits) -> tuple[list[str], list[list[str]]]:
    """The header and the non-empty data records of a CSV text, read within ``limits``.

    Raises:
        TooLarge: more rows or columns than ``limits`` allow.
        InputError: the text is not CSV, or has no header.
    """
    data: list[list[str]] = []
    records = _records(iter(io.StringIO(text)), limits)
    try:
        header = next(records, None)
        if not header:
            raise InputError("the CSV body needs a header row naming the columns")
        for record in records:
            if record:
                if len(data) == limits.rows:
                    raise limits.too_many("rows")
                data.append(record)
    except csv.Error as exc:
        raise InputError(f"the body is not valid CSV: {exc}") from None
    return header, data
