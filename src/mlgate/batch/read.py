"""Reading batch inputs: which files an input names, and each file streamed in chunks of the columns a job
needs, with every line that cannot be split into fields kept (not raised) and a file that cannot be read at
all reported as such, so that the job goes on with the others."""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from mlgate.io import DataSourceError, filesystem, table_format

CSV_BLOCK_BYTES = 2 << 20  # the CSV reader keeps up to 32 blocks ahead: this bounds memory; a line must fit
CSV_NULLS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
_GLOB = "*?["


class _Typed(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)


class Inputs(_Typed):
    """The files an input names (in order), and the files in its folders that are not tables."""

    source: str
    fs: Any
    files: list[str]
    ignored: list[str]


class Malformed(_Typed):
    """A CSV line that does not have the header's number of fields."""

    line: int | None
    reason: str
    text: str


class Chunk(_Typed):
    """Up to ``chunk_rows`` consecutive rows of one file.

    ``table`` holds the needed columns the file has (CSV values as bytes, to be checked), or every column when
    some needed one is missing or named twice (then no row can be scored and the quarantine keeps whole rows);
    ``duplicated`` counts the needed columns the header names more than once; ``header``: the file's columns.
    """

    file: str
    first_row: int
    table: pa.Table
    header: list[str]
    duplicated: dict[str, int]
    malformed: list[Malformed]


class Unreadable(_Typed):
    """A file that could not be read (from the start, or after ``rows_read`` rows), and why."""

    file: str
    reason: str
    rows_read: int


def _is_hidden(path: str, base: str) -> bool:
    """Whether a file, or a folder it is in below ``base``, is named like a marker (``_SUCCESS``, ``.x``)."""
    return any(part.startswith((".", "_")) for part in path[len(base) :].strip("/").split("/"))


def _is_table(path: str) -> bool:
    try:
        table_format(path)
    except DataSourceError:
        return False
    return True


def list_inputs(source: str) -> Inputs:
    """The files an input names: one file, every CSV/Parquet file under a folder, or the matches of a glob.

    Files whose names start with ``.`` or ``_`` (markers such as ``_SUCCESS``) are skipped; other files that
    are not CSV/Parquet are listed as ignored.

    Raises:
        DataSourceError: nothing matches, or a file named on its own is not CSV/Parquet.
    """
    fs, path = filesystem(source)
    if any(ch in path for ch in _GLOB):
        parts = path.split("/")
        first = next(i for i, p in enumerate(parts) if any(ch in p for ch in _GLOB))
        base = "/".join(parts[:first]) or "/"
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        found = sorted(
            i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path)
        )
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise DataSourceError(f"{source}: no such file or folder")
        if info.type == pafs.FileType.File:
            table_format(path)
            return Inputs(source=source, fs=fs, files=[path], ignored=[])
        base = path
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        found = sorted(i.path for i in infos if i.type == pafs.FileType.File)
    found = [f for f in found if not _is_hidden(f, base)]
    files = [f for f in found if _is_table(f)]
    if not files:
        raise DataSourceError(f"{source}: no CSV or Parquet files found")
    return Inputs(source=source, fs=fs, files=files, ignored=[f for f in found if not _is_table(f)])


def _unique(names: list[str]) -> list[str]:
    """Column names made unique by position: the second ``x`` becomes ``x (2)``."""
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _plan(header: list[str], columns: list[str]) -> tuple[list[str] | None, dict[str, int]]:
    """Which columns to read (None: all of them) and the needed ones the header names twice or more."""
    counts = Counter(header)
    duplicated = {c: counts[c] for c in columns if counts[c] > 1}
    if duplicated or any(c not in counts for c in columns):
        return None, duplicated
    return columns, duplicated


def _rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Group record batches into tables of ``rows`` rows (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count >= rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def _csv_reader(stream: Any, on_invalid: Any, convert: pacsv.ConvertOptions | None = None) -> Any:
    """A streaming CSV reader; serial, so that malformed lines are reported with their line number."""
    return pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=convert,
    )


def csv_header(fs: pafs.FileSystem, file: str) -> list[str]:
    """The column names of a CSV file (its first row, as the reader parses it)."""
    with fs.open_input_stream(file) as stream:
        return _csv_reader(stream, lambda _row: "skip").schema.names


class _CsvFile:
    """One CSV file streamed as record batches of bytes, malformed lines collected as they are met."""

    def __init__(self, fs: pafs.FileSystem, file: str, columns: list[str]) -> None:
        self.fs, self.file = fs, file
        self.header = csv_header(fs, file)
        self.read, self.duplicated = _plan(self.header, columns)
        self.malformed: list[Malformed] = []

    def _on_invalid(self, row: Any) -> str:
        line = row.number if row.number is not None and row.number >= 0 else None
        where = f"line {line}" if line is not None else "a line"
        reason = f"{where}: malformed, expected {row.expected_columns} fields, found {row.actual_columns}"
        self.malformed.append(Malformed(line=line, reason=reason, text=row.text))
        return "skip"

    def batches(self) -> Iterator[pa.RecordBatch]:
        by_position = self.read is None and bool(self.duplicated)
        names = self.header if self.read is None else self.read
        convert = pacsv.ConvertOptions(
            column_types={c: pa.binary() for c in names},
            include_columns=[] if by_position else names,  # [] reads every column, same-named ones too
            null_values=CSV_NULLS,
            strings_can_be_null=True,
        )
        unique = _unique(self.header)
        with self.fs.open_input_stream(self.file) as stream:
            for batch in _csv_reader(stream, self._on_invalid, convert):
                yield batch.rename_columns(unique) if by_position else batch

    def take_malformed(self) -> list[Malformed]:
        found, self.malformed = self.malformed, []
        return found


def _parquet_batches(
    fs: pafs.FileSystem, file: str, columns: list[str], chunk_rows: int, row_groups: list[int] | None
) -> tuple[list[str], dict[str, int], int, Iterator[pa.RecordBatch]]:
    """The header, duplicated needed columns, first row number and batches of (part of) a Parquet file."""
    handle = fs.open_input_file(file)
    try:
        parquet = pq.ParquetFile(handle)
    except BaseException:
        handle.close()
        raise
    header = parquet.schema_arrow.names
    read, duplicated = _plan(header, columns)
    first = sum(parquet.metadata.row_group(i).num_rows for i in range(row_groups[0])) if row_groups else 0

    def batches() -> Iterator[pa.RecordBatch]:
        with handle:
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=read, row_groups=row_groups):
                yield batch.rename_columns(_unique(header)) if read is None else batch

    return header, duplicated, first, batches()


def read_file(
    fs: pafs.FileSystem, file: str, columns: list[str], chunk_rows: int, row_groups: list[int] | None = None
) -> Iterator[Chunk | Unreadable]:
    """Stream one file in chunks of ``columns``; end with an :class:`Unreadable` if the file cannot be read.

    Args:
        columns: the columns the job needs (its keys and the model's inputs).
        row_groups: for Parquet, only these (consecutive) row groups; row numbers stay the file's.
    """
    read_rows = 0
    csv: _CsvFile | None = None
    try:
        if table_format(file) == "csv":
            csv = _CsvFile(fs, file, columns)
            header, duplicated, row, batches = csv.header, csv.duplicated, 0, csv.batches()
        else:
            header, duplicated, row, batches = _parquet_batches(fs, file, columns, chunk_rows, row_groups)
        for table in _rechunk(batches, chunk_rows):
            malformed = csv.take_malformed() if csv else []
            yield Chunk(
                file=file,
                first_row=row,
                table=table,
                header=header,
                duplicated=duplicated,
                malformed=malformed,
            )
            row += table.num_rows
            read_rows += table.num_rows
        if csv and csv.malformed:
            empty = pa.table({c: pa.array([], pa.binary()) for c in dict.fromkeys(header) if c in columns})
            yield Chunk(
                file=file,
                first_row=row,
                table=empty,
                header=header,
                duplicated=duplicated,
                malformed=csv.take_malformed(),
            )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        yield Unreadable(file=file, reason=_why(exc), rows_read=read_rows)


def _why(exc: BaseException) -> str:
    """The reader's first line, in words for the common cases."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if text.startswith("Empty CSV file") or "file size is 0" in text:
        return "the file is empty"
    return text[:500]
