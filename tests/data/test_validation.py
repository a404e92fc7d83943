"""Data expectations: the schema, the quarantine and its reasons, and the counts that must add up."""

import json

import pandas as pd
import pytest

from mlgate.config import load_config
from mlgate.data import (
    REASON_COLUMN,
    ROW_COLUMN,
    SchemaMismatchError,
    TooManyInvalidRowsError,
    check_rows,
    split,
)
from mlgate.validate import validate
from tests.conftest import DEFAULT_CONFIG, PENGUINS, make_config


@pytest.fixture
def penguins() -> pd.DataFrame:
    return pd.read_csv(PENGUINS)


@pytest.fixture
def data_cfg():
    return load_config(DEFAULT_CONFIG).data


def test_default_data_is_clean_and_has_real_missing_values(penguins, data_cfg):
    result = check_rows(penguins, data_cfg)
    assert result.rows_in == 344 == len(result.accepted)
    assert result.quarantined.empty
    assert result.accepted[data_cfg.feature_names].isna().any().any(), "imputation must have work to do"


def test_each_bad_row_is_quarantined_with_its_reason(penguins, data_cfg):
    bad = penguins.head(20).astype(object).copy()
    bad.loc[0, "bill_length_mm"] = "forty"  # unparseable number
    bad.loc[1, "island"] = "Atlantis"  # unknown category
    bad.loc[2, "body_mass_g"] = 99999  # out of range
    bad.loc[3, "species"] = None  # no target
    bad.loc[4, "species"] = "Emperor"  # unknown class
    bad = pd.concat([bad, bad.iloc[[10]]], ignore_index=True)  # a duplicate of row 10
    result = check_rows(bad, data_cfg)
    reasons = dict(zip(result.quarantined[ROW_COLUMN], result.quarantined[REASON_COLUMN]))
    assert reasons[0] == "bill_length_mm: 'forty' is not a number"
    assert "island: 'Atlantis' fails isin" in reasons[1]
    assert "body_mass_g: 99999.0 fails less_than_or_equal_to(7000" in reasons[2]
    assert reasons[3] == "species: null must not be null"
    assert "species: 'Emperor' fails isin" in reasons[4]
    assert reasons[20] == "duplicate of row 10"
    assert result.rows_in == 21 == len(result.accepted) + len(result.quarantined)
    assert len(result.quarantined) == 6
    # the quarantine keeps the original values, so nothing is lost
    assert result.quarantined.loc[result.quarantined[ROW_COLUMN] == 0, "bill_length_mm"].item() == "forty"


def test_missing_column_is_a_schema_error_naming_it(penguins, data_cfg):
    with pytest.raises(SchemaMismatchError, match=r"missing column\(s\) \['flipper_length_mm'\]"):
        check_rows(penguins.drop(columns=["flipper_length_mm"]), data_cfg)


def test_split_is_deterministic_and_stratified(penguins, data_cfg):
    accepted = check_rows(penguins, data_cfg).accepted
    cfg = load_config(DEFAULT_CONFIG).split
    a_train, a_test = split(accepted, data_cfg, cfg)
    b_train, b_test = split(accepted, data_cfg, cfg)
    pd.testing.assert_frame_equal(a_test, b_test)
    assert len(a_train) + len(a_test) == len(accepted)
    shares = a_test["species"].value_counts(normalize=True) - accepted["species"].value_counts(normalize=True)
    assert shares.abs().max() < 0.02


def _corrupted_config(store, penguins, rows: int, column: str, value: str):
    """The default config on a copy of the data whose first ``rows`` rows hold ``value`` in ``column``."""
    corrupted = penguins.astype(object).copy()
    corrupted.loc[: rows - 1, column] = value
    path = store / "corrupted.csv"
    corrupted.to_csv(path, index=False)
    return make_config(store, **{"data.source": str(path)})


def test_validate_step_writes_quarantine_and_counts(store, penguins):
    cfg = _corrupted_config(store, penguins, 10, "bill_depth_mm", "n/a?")
    summary = validate(cfg)
    assert summary["rows_in"] == 344 == summary["rows_accepted"] + summary["rows_quarantined"]
    assert summary["rows_quarantined"] == 10
    quarantine = pd.read_csv(summary["quarantine_path"])
    assert quarantine[REASON_COLUMN].str.startswith("bill_depth_mm: 'n/a?' is not a number").all()
    assert (
        json.loads((cfg.outputs / "validate.json").read_text())["dataset_digest"] == summary["dataset_digest"]
    )


def test_validate_fails_past_the_limit_but_keeps_the_quarantine(store, penguins):
    cfg = _corrupted_config(store, penguins, 50, "island", "Nowhere")
    with pytest.raises(
        TooManyInvalidRowsError, match=r"50 of 344 rows invalid \(14.5%\), above the limit of 5.0%"
    ):
        validate(cfg)
    assert len(pd.read_csv(cfg.outputs / "quarantine.csv")) == 50
    assert not (cfg.outputs / "validate.json").exists()
