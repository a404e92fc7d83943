"""Every kind of bad input, as a real file: each row is scored or quarantined with a reason naming the column
or the line (a file that cannot be read at all: one quarantine entry, counted apart), the counts add up, and
the job goes on. The README's table of bad inputs is this file's list."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from mlgate.batch import ScoreOptions, score
from mlgate.batch.job import MAX_REFUSED_ROWS, ScoringError
from mlgate.errors import EXIT_EMPTY
from tests.batch.conftest import cli_score, run_score
from tests.conftest import PENGUINS

ROWS = 344  # data/penguins.csv


def penguins() -> pd.DataFrame:
    """The default data as text, as a user's export would hold it."""
    return pd.read_csv(PENGUINS, dtype=str, keep_default_na=False)


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def with_value(column: str, *values: str) -> Callable[[Path], Path]:
    """The default data with the first rows of ``column`` replaced by ``values``."""

    def build(folder: Path) -> Path:
        df = penguins()
        for i, v in enumerate(values):
            df.loc[i, column] = v
        return write_csv(df, folder / "in.csv")

    return build


def with_lines(edit: Callable[[list[str]], None]) -> Callable[[Path], Path]:
    """The default data's lines, edited."""

    def build(folder: Path) -> Path:
        lines = PENGUINS.read_text().splitlines()
        edit(lines)
        (folder / "in.csv").write_text("\n".join(lines) + "\n")
        return folder / "in.csv"

    return build


def raw_bytes(content: bytes, name: str = "in.csv") -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        (folder / name).write_bytes(content)
        return folder / name

    return build


def beside_good(bad: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """A folder holding the default data and one bad file."""

    def build(folder: Path) -> Path:
        write_csv(penguins(), folder / "good.csv")
        sub = folder / "bad"
        sub.mkdir()
        path = bad(sub)
        path.rename(folder / path.name)
        sub.rmdir()
        return folder

    return build


def parquet(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        edit(pd.read_csv(PENGUINS)).to_parquet(folder / "in.parquet", index=False)
        return folder / "in.parquet"

    return build


def semicolons(folder: Path) -> Path:
    df = penguins()
    (folder / "in.csv").write_text(df.to_csv(index=False, sep=";"))
    return folder / "in.csv"


def non_utf8(folder: Path) -> Path:
    df = penguins()
    df.loc[7, "sex"] = "@@"
    data = df.to_csv(index=False).encode().replace(b"@@", b"f\xe9male")
    (folder / "in.csv").write_bytes(data)
    return folder / "in.csv"


def duplicated(column: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        df = penguins()
        lines = df.to_csv(index=False).splitlines()
        header, rows = lines[0], lines[1:]
        extra = "Dream" if column == "island" else "2001"
        (folder / "in.csv").write_text(
            "\n".join([f"{header},{column}", *(f"{r},{extra}" for r in rows)]) + "\n"
        )
        return folder / "in.csv"

    return build


def truncated_parquet(folder: Path) -> Path:
    pd.read_csv(PENGUINS).to_parquet(folder / "in.parquet", index=False)
    data = (folder / "in.parquet").read_bytes()
    (folder / "in.parquet").write_bytes(data[: len(data) // 2])
    return folder / "in.parquet"


def unclosed_quote(column: str) -> Callable[[Path], Path]:
    """An opening quote in ``column`` of data row 340 that is never closed: by the CSV rule the rest of the
    file is one value (here with ``column`` the last column)."""

    def build(folder: Path) -> Path:
        df = penguins().drop(columns="year")
        df = df[[c for c in df.columns if c != column] + [column]]
        lines = df.to_csv(index=False).splitlines()
        head, _, last = lines[341].rpartition(",")
        lines[341] = f'{head},"{last}'
        (folder / "in.csv").write_text("\n".join(lines) + "\n")
        return folder / "in.csv"

    return build


def unclosed_quote_mid_row(folder: Path) -> Path:
    lines = PENGUINS.read_text().splitlines()
    lines[341] = lines[341].replace(",Dream,", ',"Dream,', 1)
    (folder / "in.csv").write_text("\n".join(lines) + "\n")
    return folder / "in.csv"


@dataclass(frozen=True)
class Kind:
    """One kind of bad input: how to make it, and what the job must give."""

    build: Callable[[Path], Path]
    rows_in: int = ROWS
    quarantined: int = 0
    reason: str | None = None  # in the quarantine (a row's reason, or an unreadable file's)
    unreadable: int = 0
    exit_code: int = 0
    keys: tuple[str, ...] = ()
    check: Callable[[dict, Path], None] | None = field(default=None, compare=False)


def _unseen(summary: dict, out: Path) -> None:
    report = json.loads(out.with_name("scores.drift.json").read_text())
    assert report["features"]["island"]["unseen_categories"] == ["Atlantis"]


def _drifted(summary: dict, out: Path) -> None:
    assert summary["drifted_features"] == ["body_mass_g"]


def _ignored(summary: dict, _: Path) -> None:
    assert [Path(f).name for f in summary["files_ignored"]] == ["notes.txt"]


KINDS = {
    "value not a number": Kind(
        with_value("bill_length_mm", "abc"), quarantined=1, reason="'abc' is not a number"
    ),
    "number with a unit or decimal comma": Kind(
        with_value("body_mass_g", "4,5kg"), quarantined=1, reason="body_mass_g: '4,5kg' is not a number"
    ),
    "infinite value (inf, -inf, 1e400)": Kind(
        with_value("body_mass_g", "inf", "-inf", "1e400"),
        quarantined=3,
        reason="body_mass_g: '1e400' is not a finite number",
    ),
    "value beyond float32 (a valid double)": Kind(
        with_value("bill_depth_mm", "1e39"),
        quarantined=1,
        reason="bill_depth_mm: '1e39' is outside float32's range",
    ),
    "null in a required input": Kind(
        with_value("island", "NA"), quarantined=1, reason="island: null but required"
    ),
    "null in an optional input": Kind(with_value("bill_length_mm", "NA", "")),
    "whitespace around a number, a quoted number": Kind(
        with_lines(
            lambda lines: lines.__setitem__(
                slice(1, 3), [lines[1].replace(",39.1,", ", 39.1 ,"), lines[2].replace(",39.5,", ',"39.5",')]
            )
        )
    ),
    "line with too few fields": Kind(
        with_lines(lambda lines: lines.insert(30, "garbage")),
        rows_in=ROWS + 1,
        quarantined=1,
        reason="line 31: malformed, expected 8 fields, found 1",
    ),
    "line with too many fields": Kind(
        with_lines(lambda lines: lines.__setitem__(50, lines[50] + ",x,y")),
        quarantined=1,
        reason="line 51: malformed, expected 8 fields, found 10",
    ),
    "non-UTF-8 byte in one row": Kind(
        non_utf8, quarantined=1, reason="sex: b'f\\xe9male' is not valid UTF-8"
    ),
    "unclosed quote, mid-row": Kind(
        unclosed_quote_mid_row,
        rows_in=341,
        quarantined=1,
        reason="line 342: malformed, expected 8 fields, found 2",
    ),
    "unclosed quote in the last column": Kind(
        unclosed_quote("sex"), rows_in=341, quarantined=1, reason="spans lines (an unclosed quote?)"
    ),
    "';'-delimited CSV": Kind(
        semicolons,
        quarantined=ROWS,
        reason="';'-delimited? mlgate reads ','-delimited CSV",
        exit_code=EXIT_EMPTY,
    ),
    "CSV with none of the model's columns": Kind(
        lambda f: write_csv(penguins()[["species", "year"]], f / "in.csv"),
        quarantined=ROWS,
        reason="none of the model's columns is in the file",
        exit_code=EXIT_EMPTY,
    ),
    "Parquet with none of the model's columns": Kind(
        parquet(lambda df: df[["species", "year"]]),
        quarantined=ROWS,
        reason="none of the model's columns is in the file",
        exit_code=EXIT_EMPTY,
    ),
    "file without one of the model's columns": Kind(
        lambda f: write_csv(penguins().drop(columns="sex"), f / "in.csv"),
        quarantined=ROWS,
        reason="sex: missing column",
        exit_code=EXIT_EMPTY,
    ),
    "duplicate header: a model column twice": Kind(
        duplicated("island"),
        quarantined=ROWS,
        reason="island: 2 columns of the file have this name",
        exit_code=EXIT_EMPTY,
    ),
    "duplicate header: another column twice": Kind(duplicated("year")),
    "Parquet column of the wrong type": Kind(
        parquet(lambda df: df.assign(sex=1.5)),
        quarantined=ROWS,
        reason="sex: has type double, expected a string",
        exit_code=EXIT_EMPTY,
    ),
    "Parquet: NaN, categorical and int columns": Kind(
        parquet(
            lambda df: df.assign(
                island=df["island"].astype("category"), body_mass_g=df["body_mass_g"].astype("Int64")
            )
        )
    ),
    "unseen category": Kind(with_value("island", "Atlantis"), check=_unseen),
    "value far outside the training range": Kind(
        with_value("body_mass_g", *["1000000"] * 100), check=_drifted
    ),
    "extra columns, other column order": Kind(
        lambda f: write_csv(penguins().assign(extra="x").iloc[:, ::-1], f / "in.csv")
    ),
    "byte order mark and CRLF line ends": Kind(
        raw_bytes(b"\xef\xbb\xbf" + PENGUINS.read_bytes().replace(b"\n", b"\r\n"))
    ),
    "missing key column": Kind(
        lambda f: write_csv(penguins(), f / "in.csv"),
        quarantined=ROWS,
        reason="id: missing key column",
        keys=("id",),
        exit_code=EXIT_EMPTY,
    ),
    "header only": Kind(raw_bytes(b"island,sex\n"), rows_in=0, exit_code=EXIT_EMPTY),
    "empty file, beside a good one": Kind(
        beside_good(raw_bytes(b"", "empty.csv")), unreadable=1, reason="unreadable file: the file is empty"
    ),
    "not Parquet at all, beside a good one": Kind(
        beside_good(raw_bytes(b"PAR1 but not really", "bad.parquet")), unreadable=1, reason="unreadable file:"
    ),
    "truncated Parquet, beside a good one": Kind(
        beside_good(truncated_parquet), unreadable=1, reason="unreadable"
    ),
    "not a table, in a folder": Kind(beside_good(raw_bytes(b"hello", "notes.txt")), check=_ignored),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_input_is_scored_or_quarantined(trained_model: dict, tmp_path: Path, kind: str) -> None:
    spec = KINDS[kind]
    (tmp_path / "in").mkdir()
    source = spec.build(tmp_path / "in")
    out = tmp_path / "out" / "scores.parquet"
    args = [a for k in spec.keys for a in ("--key", k)]
    result = cli_score(trained_model, source, out, *args)
    assert result.exit_code == spec.exit_code, result.output
    summary = json.loads(out.with_name("scores.summary.json").read_text())
    assert summary["rows_in"] == spec.rows_in
    assert summary["rows_in"] == summary["rows_scored"] + summary["rows_quarantined"]
    assert summary["rows_quarantined"] == spec.quarantined
    assert summary["files_unreadable"] == spec.unreadable == len(summary["unreadable_files"])
    scores, quarantine = pd.read_parquet(out), pd.read_parquet(out.with_name("scores.quarantine.parquet"))
    assert len(scores) == summary["rows_scored"]
    assert len(quarantine) == summary["rows_quarantined"] + summary["files_unreadable"]
    assert quarantine["_quarantine_reason"].str.len().gt(0).all()
    if spec.reason:
        assert quarantine["_quarantine_reason"].str.contains(spec.reason, regex=False).any(), quarantine
    if spec.check:
        spec.check(summary, out)


def test_a_job_that_scored_nothing_has_its_own_exit_code(trained_model: dict, tmp_path: Path) -> None:
    source = semicolons(tmp_path)
    out = tmp_path / "o.parquet"
    result = cli_score(trained_model, source, out)
    assert result.exit_code == EXIT_EMPTY and "no row scored (344 rows in, 344 quarantined" in result.output
    assert cli_score(trained_model, source, out, "--allow-empty").exit_code == 0


def test_a_glob_mixing_good_and_bad_files_scores_every_good_row(trained_model: dict, tmp_path: Path) -> None:
    folder = tmp_path / "landing"
    folder.mkdir()
    write_csv(penguins(), folder / "day-1.csv")
    pd.read_csv(PENGUINS).to_parquet(folder / "day-2.parquet", index=False)
    semicolons(tmp_path).rename(folder / "day-3.csv")
    pd.read_csv(PENGUINS)[["species"]].to_parquet(folder / "day-4.parquet")
    (folder / "day-5.csv").write_bytes(b"")
    (folder / "day-6.parquet").write_bytes(b"not parquet")
    non_utf8(tmp_path).rename(folder / "day-7.csv")
    with_value("body_mass_g", "inf")(tmp_path).rename(folder / "day-8.csv")
    out = tmp_path / "scores.parquet"
    summary = run_score(trained_model, folder / "day-*", out, workers=1, chunk_rows=100)
    assert len(summary.input_files) == 8 and summary.files_unreadable == 2
    assert summary.rows_in == 6 * ROWS == summary.rows_scored + summary.rows_quarantined
    assert summary.rows_scored == 2 * ROWS + (ROWS - 1) * 2  # day 1, 2 whole; 7 and 8 but their bad row
    scored = pd.read_parquet(out).groupby("_source_file").size()
    assert {Path(f).name: n for f, n in scored.items()} == {
        "day-1.csv": ROWS,
        "day-2.parquet": ROWS,
        "day-7.csv": ROWS - 1,
        "day-8.csv": ROWS - 1,
    }


def test_every_output_gets_the_mode_of_a_new_file(trained_model: dict, tmp_path: Path) -> None:
    before = os.umask(0o022)
    try:
        cli_score(trained_model, PENGUINS, tmp_path / "out" / "scores.csv")
    finally:
        os.umask(before)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert len(modes) == 5 and set(modes.values()) == {0o644}, modes


@pytest.fixture(scope="module")
def strict_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose encoder raises on a category it never saw (``handle_unknown="error"``)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from mlgate.train import trusted_types

    data = pd.read_csv(PENGUINS).dropna()
    X = data[["island", "bill_length_mm"]]
    pre = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="error"), ["island"])], remainder="passthrough"
    )
    model = make_pipeline(pre, LogisticRegression(max_iter=1000)).fit(X, data["species"])
    dest = tmp_path_factory.mktemp("strict") / "model"
    mlflow.sklearn.save_model(
        model,
        str(dest),
        serialization_format="skops",
        skops_trusted_types=trusted_types(model),
        signature=infer_signature(X, model.predict(X.head())),
        metadata={"mlgate": {"classes": list(model.classes_)}},
    )
    return dest


def test_rows_the_model_refuses_are_found_and_quarantined(strict_model: Path, tmp_path: Path) -> None:
    df = pd.read_csv(PENGUINS).dropna()[["island", "bill_length_mm"]].head(300).reset_index(drop=True)
    df.loc[[17, 230], "island"] = "Atlantis"
    df.to_csv(tmp_path / "in.csv", index=False)
    options = {
        "model_uri": str(strict_model),
        "input": str(tmp_path / "in.csv"),
        "output": str(tmp_path / "o.parquet"),
    }
    summary = score(ScoreOptions(**options, psi_threshold=0.2, workers=0, chunk_rows=128))
    quarantine = pd.read_parquet(tmp_path / "o.quarantine.parquet")
    assert (summary.rows_in, summary.rows_scored, summary.rows_quarantined) == (300, 298, 2)
    assert quarantine["_source_row"].tolist() == [17, 230]
    assert (
        quarantine["_quarantine_reason"]
        .str.startswith("the model refused the row: Found unknown categories")
        .all()
    )
    assert summary.quarantine_reasons == {"the model refused the row": 2}
    assert 17 not in set(pd.read_parquet(tmp_path / "o.parquet")["_source_row"])


def test_a_model_refusing_most_rows_fails_the_job(strict_model: Path, tmp_path: Path) -> None:
    df = pd.read_csv(PENGUINS).dropna()[["island", "bill_length_mm"]].assign(island="Atlantis")
    df.to_csv(tmp_path / "in.csv", index=False)
    options = {
        "model_uri": str(strict_model),
        "input": str(tmp_path / "in.csv"),
        "output": str(tmp_path / "o.csv"),
    }
    with pytest.raises(ScoringError, match=f"refuses more than {MAX_REFUSED_ROWS} rows"):
        score(ScoreOptions(**options, psi_threshold=0.2, workers=0))
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.summary.json").exists()
