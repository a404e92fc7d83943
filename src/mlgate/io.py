"""File helpers shared by every step: local paths and ``s3://`` URIs as one filesystem API, every output
written under a temporary name and given its final name only when complete, step results read back."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    import pyarrow.fs as pafs

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Where an S3-compatible store other than AWS is reached: the AWS SDKs' variables, then MLflow's.
S3_ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
_TEMPORARY = ".{name}.{token}.tmp"


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


def is_local(uri: str | Path) -> bool:
    """Whether ``uri`` is a path on this machine (a plain path or ``file://``)."""
    return "://" not in str(uri) or str(uri).startswith("file://")


def filesystem(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding ``uri`` and the path on it (absolute for local paths).

    ``s3://`` is reached at the endpoint of the first of ``S3_ENDPOINT_ENV`` that is set (AWS otherwise),
    with the usual AWS credential variables.
    """
    import pyarrow.fs as pafs

    uri = str(uri)
    if is_local(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri.removeprefix("file://"))
    if uri.startswith("s3://"):
        endpoint = next((os.environ[k] for k in S3_ENDPOINT_ENV if os.environ.get(k)), None)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return pafs.S3FileSystem(endpoint_override=endpoint, region=region), uri.removeprefix("s3://")
    return pafs.FileSystem.from_uri(uri)


def sibling(uri: str, name: str) -> str:
    """The URI of ``name`` in the folder holding ``uri`` (works for paths and URIs alike)."""
    parent, _, _ = str(uri).rstrip("/").rpartition("/")
    return f"{parent}/{name}" if parent else name


class Staged:
    """One output (a file, or a folder of part files) written under a temporary name beside its final one;
    :meth:`commit` gives it the final name, :meth:`abort` removes it.

    Locally the final name appears by one rename, so it holds a complete output or nothing, whatever happens
    to the process (the previous output, if any, is moved aside first). On an object store a file appears
    whole (an object is visible only once uploaded), a folder object by object: there the run summary, written
    last, is what says an output set is complete. Files get the mode the umask gives any new file.
    """

    def __init__(self, dest: str | Path, folder: bool = False) -> None:
        self.fs, self.dest = filesystem(dest)
        self.local = is_local(dest)
        self.scheme = "" if self.local else str(dest).split("://", 1)[0]
        self.folder = folder
        parent, _, name = self.dest.rpartition("/")
        self.path = f"{parent}/{_TEMPORARY.format(name=name, token=secrets.token_hex(6))}"
        self.fs.create_dir(parent, recursive=True)
        if folder:
            self.fs.create_dir(self.path)

    @property
    def uri(self) -> str:
        """The temporary output as a path or URI that :func:`filesystem` resolves (on any machine)."""
        return self.path if self.local else f"{self.scheme}://{self.path}"

    def open(self) -> Any:
        """A binary output stream on the temporary file."""
        return self.fs.open_output_stream(self.path)

    def commit(self) -> str:
        """Give the output its final name (replacing what was there); returns the final path."""
        if self.local:
            aside = None
            if os.path.isdir(self.dest) or (self.folder and os.path.lexists(self.dest)):
                aside = f"{self.path}.old.tmp"
                os.replace(self.dest, aside)
            os.replace(self.path, self.dest)
            if aside:
                _remove_local(aside)
            return self.dest
        import pyarrow.fs as pafs

        _remove(self.fs, self.dest)
        if self.folder:
            for info in self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True)):
                if info.type == pafs.FileType.File:
                    self.fs.copy_file(info.path, self.dest + info.path[len(self.path) :])
        else:
            self.fs.copy_file(self.path, self.dest)
        _remove(self.fs, self.path)
        return self.dest

    def abort(self) -> None:
        """Remove the temporary output."""
        _remove(self.fs, self.path)


def _remove_local(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


def remove(uri: str | Path) -> None:
    """Delete the file or folder at ``uri`` if there is one."""
    _remove(*filesystem(uri))


def _remove(fs: pafs.FileSystem, path: str) -> None:
    import pyarrow.fs as pafs

    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


@contextmanager
def staged(dest: str | Path, folder: bool = False) -> Iterator[Staged]:
    """Write one output under a temporary name; it gets its final name when the block ends without error."""
    out = Staged(dest, folder)
    try:
        yield out
    except BaseException:
        out.abort()
        raise
    out.commit()


def remove_stale_temporaries(dest: str | Path) -> list[str]:
    """Delete what killed earlier writes of ``dest`` left beside it (temporary files and folders)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(dest)
    parent, _, name = path.rpartition("/")
    prefix, suffix = _TEMPORARY.split("{token}")
    prefix = prefix.format(name=name)
    try:
        infos = fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
    except OSError:
        return []
    stale = [i.path for i in infos if i.base_name.startswith(prefix) and i.base_name.endswith(suffix)]
    for p in stale:
        _remove(fs, p)
    return stale


def read_table(source: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet table from a local path or a URI pandas understands.

    Raises:
        DataSourceError: the file does not exist, is empty, or cannot be parsed.
    """
    source = str(source)
    fmt = table_format(source)
    if is_local(source):
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


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV or Parquet (by extension), atomically."""
    fmt = table_format(path)
    with staged(path) as out:
        if fmt == "csv":
            df.to_csv(out.path, index=False)
        else:
            df.to_parquet(out.path, index=False)
    return Path(path)


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Write JSON atomically."""
    return write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", path)


def write_text(text: str, path: str | Path) -> Path:
    """Write a text file atomically."""
    with staged(path) as out, out.open() as fh:
        fh.write(text.encode())
    return Path(path)


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
