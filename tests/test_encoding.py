"""spec.encoding: the rules fitted on the training rows, and the numpy reference that training and
verify use (the ONNX side is tests/test_encoding_graph.py)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import CorruptArtifact
from pipeline.spec.encoding import (
    CATEGORY,
    DATE,
    NUMBER,
    TIMESTAMP,
    Encoding,
    EncodingProblem,
    RawColumn,
    date_parts,
    feeds,
    fit_encoding,
)


def obj(*values):
    return np.array(values, dtype=object)


def test_numbers_are_filled_from_the_training_rows_only_and_flagged_where_training_had_gaps():
    values = np.array([1.0, np.nan, 3.0, 100.0, np.nan])
    train = np.array([0, 1, 2])  # row 3 (100) is a validation row: it must not move the median
    enc = fit_encoding([RawColumn("a", NUMBER, values), RawColumn("b", NUMBER, np.arange(5.0))], train)
    a, b = enc.columns
    assert a.impute == (2.0,) and a.indicator and not b.indicator
    assert enc.names == ("a", "a (missing)", "b") and enc.scaled == (True, False, True)
    x = enc.encode(np.array([[np.nan, 1.0], [7.0, 2.0]], np.float32))
    assert x.tolist() == [[2.0, 1.0, 1.0], [7.0, 0.0, 2.0]] and x.dtype == np.float32
    mean = fit_encoding([RawColumn("a", NUMBER, values)], train, impute="mean").columns[0]
    assert mean.impute == (2.0,)
    with pytest.raises(EncodingProblem, match="missing in every training row"):
        fit_encoding([RawColumn("a", NUMBER, values)], np.array([1, 4]))


def test_categories_come_from_the_training_rows_and_anything_else_is_all_zeros():
    col = RawColumn("colour", CATEGORY, obj("red", "blue", None, "green", "teal"))
    enc = fit_encoding([col], np.array([0, 1, 2, 3]))  # "teal" is only in a validation row
    (c,) = enc.columns
    assert c.categories == ("blue", "green", "red") and enc.per_column
    raw = {"colour": obj("red", "teal", "", "NA", "Red", " red", "blue")}
    assert enc.encode(raw).tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]]
    # categories sort by UTF-8 bytes, whatever the locale
    enc = fit_encoding([RawColumn("c", CATEGORY, obj("é", "z", "a", "Z"))], np.arange(4))
    assert enc.columns[0].categories == ("Z", "a", "z", "é")
    too_many = RawColumn("id", CATEGORY, obj(*[f"id{i}" for i in range(1001)]))
    with pytest.raises(EncodingProblem, match="1001 distinct values"):
        fit_encoding([too_many], np.arange(1001))


def test_booleans_are_two_categories_whatever_the_spelling_and_codes_one_hot_on_their_values():
    flag = RawColumn("flag", CATEGORY, obj("true", "false", None), boolean=True)
    code = RawColumn("code", CATEGORY, np.array([3.0, 1.0, np.nan]))
    enc = fit_encoding([flag, code], np.arange(3))
    assert enc.names == ("flag=false", "flag=true", "code=1", "code=3")
    raw = {
        "flag": obj("True", "FALSE", "1", "0", "yes", ""),
        "code": np.array([1, 3, np.nan, 2, 3, 1], np.float32),
    }
    assert enc.encode(raw).tolist() == [
        [0, 1, 1, 0], [1, 0, 0, 1], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]
    ]  # fmt: skip
    assert feeds(raw, enc)["code"].shape == (6, 1) and feeds(raw, enc)["flag"].dtype == object


def test_dates_give_year_month_day_weekday_and_timestamps_the_hour():
    d = RawColumn("d", DATE, obj("2024-02-29", "1999/12/31", None, "2021-07-04"))
    t = RawColumn("t", TIMESTAMP, obj("2024-02-29T23:15:00Z", "2024-03-01 01:00", "2024-03-02", None))
    enc = fit_encoding([d, t], np.arange(4))
    assert enc.names == (
        "d.year", "d.month", "d.day", "d.weekday", "d (missing)",
        "t.year", "t.month", "t.day", "t.weekday", "t.hour", "t (missing)",
    )  # fmt: skip
    dc, tc = enc.columns
    assert dc.impute == (2021.0, 7.0, 29.0, 4.0)  # medians of the parsed training values, floored
    x = enc.encode({"d": obj("2024-02-29", "not a date"), "t": obj("2024-02-29T23:15:00Z", "")})
    assert x[0].tolist() == [2024, 2, 29, 3, 0, 2024, 2, 29, 3, 23, 0]
    assert x[1].tolist() == [*dc.impute, 1, *tc.impute, 1]


@pytest.mark.parametrize(
    "text",
    ["2024-13-01", "2024-00-10", "2024-01-32", "24-01-01", "2024-1-1", "2024-01-01T25:00", "2024/01-01",
     "2024-01-01T10:00+24:00", "2024-01-01T10:00+02", " 2024-01-01", "２０２４-01-01", "2024-01-01x"],
)  # fmt: skip
def test_strings_that_are_not_iso_dates_are_missing(text):
    assert date_parts(text) is None


@given(st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)), st.integers(0, 23), st.booleans())
def test_date_parts_agree_with_pythons_calendar(day, hour, slash):
    text = f"{day.year:04d}{'/' if slash else '-'}{day.month:02d}{'/' if slash else '-'}{day.day:02d}"
    assert date_parts(text) == (day.year, day.month, day.day, day.weekday())
    assert date_parts(f"{text}T{hour:02d}:30:00", TIMESTAMP) == (day.year, day.month, day.day, day.weekday(), hour)


def test_the_record_round_trips_and_a_bad_one_is_a_corrupt_artifact():
    enc = fit_encoding(
        [
            RawColumn("a b/c", NUMBER, np.array([1.0, np.nan])),
            RawColumn("s", CATEGORY, obj("x", "y")),
            RawColumn("n", CATEGORY, np.array([1.0, 2.0])),
            RawColumn("d", DATE, obj("2020-01-01", "2020-01-02")),
        ],
        np.arange(2),
    )
    again = Encoding.from_record(enc.record(), "manifest")
    assert again == enc
    bad = enc.record()
    bad["columns"][1]["kind"] = "colour"
    with pytest.raises(CorruptArtifact, match="manifest: its encoding record is not valid"):
        Encoding.from_record(bad, "manifest")
    bad = enc.record()
    bad["columns"][3]["impute"] = [1.0]
    with pytest.raises(CorruptArtifact):
        Encoding.from_record(bad, "manifest")
