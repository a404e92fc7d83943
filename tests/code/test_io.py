import os

import pandas as pd
import pytest

from mlgate.io import DataSourceError, read_step_result, read_table, write_json, write_table


def test_table_round_trip_csv_and_parquet(tmp_path):
    df = pd.DataFrame({"a": [1.5, None], "b": ["x", "y"]})
    for name in ("t.csv", "t.parquet"):
        back = read_table(write_table(df, tmp_path / "sub" / name))
        assert back.shape == df.shape and list(back.columns) == ["a", "b"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.csv", None, "no such file"),
        ("empty.csv", "", "the file is empty"),
        ("data.json", "{}", "unsupported file type '.json'"),
        ("bad.parquet", "not parquet at all", "cannot read as parquet"),
    ],
)
def test_read_table_errors_name_the_problem(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataSourceError, match=message):
        read_table(path)


def test_failed_write_leaves_neither_partial_file_nor_temp(tmp_path):
    class Boom(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            with open(args[0], "w") as fh:
                fh.write("half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_table(Boom({"a": [1]}), tmp_path / "out.csv")
    assert os.listdir(tmp_path) == []


def test_read_step_result_names_the_step_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `mlgate evaluate` first"):
        read_step_result(tmp_path, "evaluation")
    write_json({"x": 1}, tmp_path / "train.json")
    assert read_step_result(tmp_path, "train") == {"x": 1}
