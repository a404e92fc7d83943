"""Step durations: logged and recorded when a step succeeds; a failing step's error stays the last line."""

import logging
import re

import pytest

from mlgate.timing import timed


def test_a_step_that_succeeds_logs_and_records_its_seconds(caplog):
    durations: dict[str, float] = {}
    with caplog.at_level(logging.INFO, logger="mlgate.timing"), timed("train", durations):
        sum(range(10_000))
    assert list(durations) == ["train"] and durations["train"] >= 0
    assert [
        r.getMessage() for r in caplog.records if re.fullmatch(r"train: done in \d+\.\d\ds", r.getMessage())
    ]


def test_a_step_that_fails_logs_and_records_nothing(caplog):
    durations: dict[str, float] = {}
    with caplog.at_level(logging.INFO, logger="mlgate.timing"), pytest.raises(ValueError):
        with timed("train", durations):
            raise ValueError("bad")
    assert durations == {} and caplog.records == []
