"""graph.encoding_graph: the encoding as ONNX operators, run in onnxruntime (and onnx's reference
evaluator), against the independent numpy reference `Encoding.encode`, bit for bit, on random
encodings and random raw rows; and dates against Python's own calendar (the spec side is
tests/test_encoding.py)."""

from __future__ import annotations

import datetime as dt
import string

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from pipeline.graph.encoding_graph import ML_DOMAIN, ML_OPSET, encoding_graph, opset_for, string_nodes
from pipeline.spec.encoding import (
    BOOL_SPELLINGS,
    CATEGORY,
    DATE,
    NUMBER,
    STRING,
    TIMESTAMP,
    Encoding,
    RawColumn,
    feeds,
    fit_encoding,
)

# names and values with spaces, slashes, unicode and a few characters graphs and CSVs find awkward
TEXT = st.text(alphabet=string.ascii_letters[:6] + " /é漢🐧-_.'\"", min_size=1, max_size=8)
NAMES = st.text(alphabet=string.ascii_letters[:6] + "XYZ /é漢 ", min_size=1, max_size=10)


def standalone(enc: Encoding) -> onnx.ModelProto:
    """The encoding alone as a checked ONNX model: raw inputs in, the encoded features out."""
    nodes, inits, inputs, out = encoding_graph(enc)
    graph = helper.make_graph(
        nodes, "encoding", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", enc.width])], inits
    )
    opsets = [helper.make_opsetid("", opset_for(enc)), helper.make_opsetid(ML_DOMAIN, ML_OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def run_ort(model: onnx.ModelProto, raw, enc: Encoding) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds(raw, enc))[0]


def assert_same_bits(got: np.ndarray, want: np.ndarray, enc: Encoding, raw) -> None:
    assert got.dtype == np.float32 and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    bad = got.view(np.uint32) != want.view(np.uint32)  # -0.0 is not 0.0 here
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        row = {k: np.asarray(v).reshape(-1)[i] for k, v in raw.items()} if isinstance(raw, dict) else raw[i]
        pytest.fail(f"encoded column {enc.names[j]!r}, row {i} ({row!r}): graph {got[i, j]!r}, numpy {want[i, j]!r}")


# ---------------------------------------------------------------------------------------------
# Random columns: training values (fitted) and raw rows to encode (what a client sends)


def date_text(y: int, m: int, d: int, sep: str = "-") -> str:
    return f"{y:04d}{sep}{m:02d}{sep}{d:02d}"


@st.composite
def dates(draw, timestamp: bool) -> str:
    y = draw(st.one_of(st.integers(0, 9999), st.sampled_from([1899, 1900, 1969, 1970, 1999, 2000, 2038, 2100])))
    m = draw(st.integers(1, 12))
    d = draw(st.one_of(st.integers(1, 31), st.sampled_from([28, 29, 30, 31])))
    s = date_text(y, m, d, draw(st.sampled_from(["-", "-", "/"])))
    if timestamp and draw(st.booleans()):
        s += draw(st.sampled_from(["T", " "])) + f"{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}"
        if draw(st.booleans()):
            s += f":{draw(st.integers(0, 59)):02d}" + draw(st.sampled_from(["", ".5", ".123456789"]))
        s += draw(st.sampled_from(["", "Z", "+00:00"]))
    return s


BAD_DATES = st.one_of(
    st.sampled_from([
        "", " ", "NA", "not a date", "2021-13-01", "2021-00-10", "2021-01-00", "2021-01-32", "2020-1-1",
        " 2020-01-01", "2020-01-01 ", "２０２０-01-01", "20200101", "2020-01-01T", "2020-01-01T24:00",
        "2020-01-01T12:60", "2020-01-01T12:30:00+01:00", "2020-01-01T12:30:00.1234567890", "2020/01-01",
    ]),
    TEXT,
)  # fmt: skip


@st.composite
def column(draw, name: str, rows: int, n_raw: int):
    """(RawColumn for training, raw values to encode): one column of a random kind."""
    kind = draw(st.sampled_from(["number", "text", "boolean", "codes", "date", "timestamp"]))
    present = draw(st.lists(st.booleans(), min_size=rows, max_size=rows).filter(any))
    if kind == "number":
        finite = st.floats(-1e6, 1e6, width=32, allow_subnormal=True)
        train = np.array([draw(finite) if p else np.nan for p in present], np.float64)
        odd = st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e30, -1e30, 1e-45, 3.4e38])
        raw = np.array(draw(st.lists(st.one_of(finite, odd), min_size=n_raw, max_size=n_raw)), np.float32)
        return RawColumn(name, NUMBER, train), raw
    if kind == "codes":
        code = st.integers(-3, 6).map(float)
        train = np.array([draw(code) if p else np.nan for p in present], np.float64)
        odd = st.sampled_from([np.nan, -0.0, 0.5, 1e30, 7.0, -1.0])
        raw = np.array(draw(st.lists(st.one_of(code, odd), min_size=n_raw, max_size=n_raw)), np.float32)
        return RawColumn(name, CATEGORY, train), raw
    if kind == "boolean":
        train = np.array([draw(st.sampled_from(["true", "false"])) if p else None for p in present], dtype=object)
        spelled = st.sampled_from([*BOOL_SPELLINGS["true"], *BOOL_SPELLINGS["false"], "", "maybe", " true", "T"])
        raw = np.array(draw(st.lists(spelled, min_size=n_raw, max_size=n_raw)), dtype=object)
        return RawColumn(name, CATEGORY, train, boolean=True), raw
    if kind == "text":
        values = draw(st.lists(TEXT.filter(lambda s: s.strip() != ""), min_size=1, max_size=6, unique=True))
        train = np.array([draw(st.sampled_from(values)) if p else None for p in present], dtype=object)
        unseen = st.one_of(TEXT, st.sampled_from(["", " ", "__unseen__", values[0].upper(), values[0] + " "]))
        raw = np.array(
            draw(st.lists(st.one_of(st.sampled_from(values), unseen), min_size=n_raw, max_size=n_raw)), object
        )
        return RawColumn(name, CATEGORY, train), raw
    timestamp = kind == "timestamp"
    good = dates(timestamp).filter(lambda s: not s.startswith("0000"))  # training: dates the reader accepts
    train = np.array([draw(good) if p else None for p in present], dtype=object)
    raw = np.array(draw(st.lists(st.one_of(dates(timestamp), BAD_DATES), min_size=n_raw, max_size=n_raw)), object)
    return RawColumn(name, TIMESTAMP if timestamp else DATE, train), raw


@st.composite
def encodings(draw):
    """(Encoding fitted on random training columns, raw rows for it as the graph takes them)."""
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    rows, n_raw = draw(st.integers(1, 12)), draw(st.integers(1, 24))
    pairs = [draw(column(name, rows, n_raw)) for name in names]
    cols = [c for c, _ in pairs]
    train = np.arange(rows)
    enc = fit_encoding(cols, train, draw(st.sampled_from(["median", "mean"])))
    if enc.per_column:
        raw = {c.name: values for c, (_, values) in zip(cols, pairs)}
    else:
        raw = np.stack([values.astype(np.float32) for _, values in pairs], axis=1)
    return enc, raw


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(encodings())
def test_the_graph_encodes_random_raw_rows_as_the_numpy_reference_to_the_bit(case):
    enc, raw = case
    model = standalone(enc)
    want = enc.encode(raw)
    assert_same_bits(run_ort(model, raw, enc), want, enc, raw)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(encodings())
def test_the_reference_evaluator_runs_the_encoding_graph_to_the_same_bits(case):
    """verify runs onnx's ReferenceEvaluator too: it must run the text operators, and agree."""
    from onnx.reference import ReferenceEvaluator

    enc, raw = case
    model = standalone(enc)
    got = ReferenceEvaluator(model).run(None, feeds(raw, enc))[0]
    assert_same_bits(np.asarray(got, np.float32), enc.encode(raw), enc, raw)


# ---------------------------------------------------------------------------------------------
# Dates against Python's calendar, not against the reference


def _date_model(kind: str, train: list[str]):
    enc = fit_encoding([RawColumn("when", kind, np.array(train, dtype=object))], np.arange(len(train)))
    return enc, standalone(enc)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)), min_size=1, max_size=40),
    st.lists(st.integers(0, 23), min_size=40, max_size=40),
)
def test_date_parts_and_weekdays_match_pythons_datetime(days, hours):
    enc, model = _date_model(TIMESTAMP, ["2020-01-01T00:00", "2021-06-30T12:00"])
    text = [f"{d.isoformat()}T{h:02d}:30:00Z" for d, h in zip(days, hours)]
    got = run_ort(model, {"when": np.array(text, dtype=object)}, enc)
    want = [[d.year, d.month, d.day, d.weekday(), h] for d, h in zip(days, hours)]
    assert got[:, :5].tolist() == want  # year, month, day, Monday = 0, hour; no indicator (nothing missing)
    assert enc.width == 5


EDGE_DAYS = [
    dt.date(1970, 1, 1), dt.date(1969, 12, 31), dt.date(1999, 12, 31), dt.date(2000, 1, 1), dt.date(2000, 2, 29),
    dt.date(2004, 2, 29), dt.date(2024, 2, 29), dt.date(1900, 2, 28), dt.date(1900, 3, 1), dt.date(2100, 2, 28),
    dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(1600, 2, 29), dt.date(2038, 1, 19), dt.date(1582, 10, 4),
]  # fmt: skip


def test_utc_offsets_are_taken_away_in_the_graph_as_in_pythons_datetime():
    enc, model = _date_model(TIMESTAMP, ["2020-01-01T00:00", "2021-06-30T12:00"])
    text = ["2022-09-30T06:00:00+02:00", "2022-09-30T23:30-05:00", "2021-01-01T00:15+05:30", "2024-02-29 22:00:00-03:00",
            "2020/12/31T23:00-01:00", "0001-01-01T00:30+01:00", "9999-12-31T23:00-02:00", "2022-01-01T00:00Z"]  # fmt: skip
    got = run_ort(model, {"when": np.array(text, dtype=object)}, enc)
    for row, t in zip(got.tolist(), text[:5]):
        at = dt.datetime.fromisoformat(t.replace("/", "-").replace(" ", "T")).astimezone(dt.UTC)
        assert row[:5] == [at.year, at.month, at.day, at.weekday(), at.hour], t
    assert got[5].tolist() == got[6].tolist() == [*enc.columns[0].impute]  # before year 1, after 9999: missing
    assert got[7].tolist() == [2022, 1, 1, 5, 0]
    assert_same_bits(got, enc.encode({"when": np.array(text, dtype=object)}), enc, {"when": text})


def test_year_boundaries_and_leap_days_match_pythons_calendar():
    enc, model = _date_model(DATE, ["2020-01-01", "2021-01-01", None])  # a gap in training: an indicator column
    text = [d.isoformat() for d in EDGE_DAYS] + ["1900-02-29", "2021-02-29", "2100-02-29", "2021-04-31", "2021-02-31"]
    got = run_ort(model, {"when": np.array(text, dtype=object)}, enc)
    want = [[d.year, d.month, d.day, d.weekday(), 0] for d in EDGE_DAYS]
    # a day past the month's end rolls into the next month (documented): its parts are that day's
    rolled = [dt.date(1900, 3, 1), dt.date(2021, 3, 1), dt.date(2100, 3, 1), dt.date(2021, 5, 1), dt.date(2021, 3, 3)]
    want += [[d.year, d.month, d.day, d.weekday(), 0] for d in rolled]
    assert got.tolist() == want
    assert_same_bits(got, enc.encode({"when": np.array(text, dtype=object)}), enc, {"when": text})


def test_unparseable_dates_are_missing_on_both_sides():
    enc, model = _date_model(DATE, ["2020-01-01", "2020-01-03", "2020-01-05", None])
    fill = list(enc.columns[0].impute)
    bad = [
        "",
        "bad",
        "2021-13-01",
        "2021-01-00",
        "２０２０-01-01",
        "2020-1-1",
        " 2020-01-01",
        "0000-01-01",
        "0000-03-01",
    ]
    raw = {"when": np.array(bad, dtype=object)}
    got = run_ort(model, raw, enc)
    assert got.tolist() == [[*fill, 1.0]] * len(bad), "each is imputed with the training medians, indicator 1"
    assert_same_bits(got, enc.encode(raw), enc, raw)


# ---------------------------------------------------------------------------------------------
# The graph's shape


def test_names_with_spaces_slashes_and_unicode_are_the_graphs_input_names():
    cols = [
        RawColumn("body mass / g", NUMBER, np.array([1.0, np.nan, 3.0])),
        RawColumn("île", CATEGORY, np.array(["Biscoe", "Dream/2", None], dtype=object)),
        RawColumn("on time?", CATEGORY, np.array(["true", "false", "true"], dtype=object), boolean=True),
    ]
    enc = fit_encoding(cols, np.arange(3))
    model = standalone(enc)
    assert [i.name for i in model.graph.input] == ["body mass / g", "île", "on time?"]
    types = [i.type.tensor_type.elem_type for i in model.graph.input]
    assert types == [TensorProto.FLOAT, TensorProto.STRING, TensorProto.STRING]
    assert {"LabelEncoder"} <= set(string_nodes(model)) and opset_for(enc) == 18  # no dates: opset 18
    raw = {"body mass / g": np.array([np.nan, 2.0], np.float32), "île": np.array(["Dream/2", "dream/2"], object),
           "on time?": np.array(["TRUE", "no"], object)}  # fmt: skip
    got = run_ort(model, raw, enc)
    assert got.tolist() == [[2.0, 1.0, 0.0, 1.0, 0.0, 1.0], [2.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    assert_same_bits(got, enc.encode(raw), enc, raw)


def test_an_all_numeric_encoding_keeps_one_x_input_with_nan_for_missing():
    cols = [
        RawColumn("a", NUMBER, np.array([1.0, np.nan, 5.0])),
        RawColumn("k", CATEGORY, np.array([1.0, 2.0, np.nan])),
    ]
    enc = fit_encoding(cols, np.arange(3))
    assert not enc.per_column and enc.columns[1].dtype != STRING
    model = standalone(enc)
    assert [
        (i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in model.graph.input
    ] == [("x", ["batch", 2])]
    x = np.array([[np.nan, 1.0], [-0.0, np.nan], [7.0, 3.0]], np.float32)
    got = run_ort(model, x, enc)
    assert got.tolist() == [[3.0, 1.0, 1.0, 0.0], [-0.0, 0.0, 0.0, 0.0], [7.0, 0.0, 0.0, 0.0]]
    assert np.signbit(got[1, 0])  # -0.0 passes through as it came
    assert_same_bits(got, enc.encode(x), enc, x)
