"""pipeline.serving.inputs (and the one table reader under it, pipeline.spec.tables): every format
round-trips exact float32, bad rows are named by line/row and column, untrusted bytes only ever raise
UsageError, a JSON document (a file or stdin) is capped while it is read, columns are carried as written,
and files stream in bounded memory."""

from __future__ import annotations

import codecs
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import UsageError
from pipeline.serving import inputs as I
from pipeline.serving.inputs import ALL, InputSpec, open_input
from pipeline.spec import tables as T

ROOT = Path(__file__).resolve().parents[1]
SPEC2 = InputSpec(2)
NAMED2 = InputSpec(2, ("x1", "x2"))
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
# Names that are not numbers by the header rule (no "nan", "inf", "infinity", digits-first, ...).
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_ ]{0,7}[A-Za-z0-9_]|[A-Za-z_]", fullmatch=True).filter(
    lambda n: n.lower() not in {"nan", "inf", "infinity"}
)


def read_all(source: I.RowSource, rows: int = 7) -> np.ndarray:
    n = source.validate()
    chunks = list(source.chunks(rows))
    for c in chunks:
        assert c.dtype == np.float32 and c.ndim == 2 and c.shape[1] == source.spec.width
        assert 0 < c.shape[0] <= rows
    assert all(c.shape[0] == rows for c in chunks[:-1])
    out = np.concatenate(chunks)
    assert out.shape[0] == n
    return out


def read_file(tmp_path: Path, name: str, content: str | bytes, spec: InputSpec = SPEC2) -> np.ndarray:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return read_all(open_input(spec, path=path))


def usage_error(tmp_path: Path, name: str, content: str | bytes, spec: InputSpec = SPEC2) -> str:
    """The one-line UsageError that opening and checking this file gives (opening reads the names)."""
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(UsageError) as exc:
        open_input(spec, path=path).validate()
    message = str(exc.value)
    assert "\n" not in message and "\r" not in message
    return message


def csv_text(values: np.ndarray, header: list[str] | None = None, style: str = "repr") -> str:
    fmt = (lambda v: repr(float(v))) if style == "repr" else (lambda v: str(np.float32(v)))
    lines = [",".join(header)] if header is not None else []
    lines += [",".join(fmt(v) for v in row) for row in values]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Round trips: exact float32 in every format


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.tuples(f32, f32), min_size=1, max_size=30), style=st.sampled_from(["repr", "shortest"]))
def test_csv_round_trips_exact_float32(tmp_path, values, style):
    x = np.array(values, dtype=np.float32)
    np.testing.assert_array_equal(read_file(tmp_path, "x.csv", csv_text(x, None, style)), x)
    np.testing.assert_array_equal(read_file(tmp_path, "h.csv", csv_text(x, ["x1", "x2"], style), NAMED2), x)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.tuples(f32, f32), min_size=1, max_size=30))
def test_json_round_trips_exact_float32(tmp_path, values):
    x = np.array(values, dtype=np.float32)
    rows = [[float(v) for v in r] for r in x]
    np.testing.assert_array_equal(read_file(tmp_path, "x.json", json.dumps(rows)), x)
    np.testing.assert_array_equal(read_file(tmp_path, "x.json", json.dumps({"x": rows, "note": "hi"})), x)
    objects = [{"x2": b, "x1": a, "extra": [1, "z"]} for a, b in rows]
    np.testing.assert_array_equal(read_file(tmp_path, "o.json", json.dumps(objects), NAMED2), x)
    np.testing.assert_array_equal(read_all(open_input(SPEC2, stdin=io.StringIO(json.dumps(rows)))), x)
    np.testing.assert_array_equal(read_all(open_input(SPEC2, stdin=io.BytesIO(json.dumps(rows).encode()))), x)


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8", ">f8", "<f2", "<i4", ">i8", "<u2", "|i1"])
@pytest.mark.parametrize("fortran", [False, True])
def test_npy_round_trips_exact(tmp_path, dtype, fortran):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((1000, 3)) * 100).astype(dtype)
    if fortran:
        x = np.asfortranarray(x)
    np.save(tmp_path / "x.npy", x)
    got = read_all(open_input(InputSpec(3), path=tmp_path / "x.npy"), rows=333)
    np.testing.assert_array_equal(got, x.astype(np.float32))


def test_npy_one_dimensional_is_one_row(tmp_path):
    np.save(tmp_path / "x.npy", np.array([0.5, -2.0], dtype=np.float64))
    np.testing.assert_array_equal(read_all(open_input(SPEC2, path=tmp_path / "x.npy")), [[0.5, -2.0]])


def test_json_single_row_and_pairs():
    got = read_all(open_input(SPEC2, stdin=io.StringIO("  [0.25, -1e-3]  \n")))
    np.testing.assert_array_equal(got, np.array([[0.25, -1e-3]], dtype=np.float32))
    got = read_all(open_input(SPEC2, pairs=["0,1", "1e-3,-2", " 3 , 4 "]))
    np.testing.assert_array_equal(got, np.array([[0, 1], [1e-3, -2], [3, 4]], dtype=np.float32))


def test_wide_models_and_width_one(tmp_path):
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    np.testing.assert_array_equal(read_file(tmp_path, "w.csv", csv_text(x), InputSpec(5)), x)
    np.testing.assert_array_equal(read_file(tmp_path, "one.csv", "v\n1\n2\n", InputSpec(1, ("v",))), [[1], [2]])


def test_csv_quotes_blank_lines_crlf_and_bom(tmp_path):
    text = '\ufeffx1,"x2"\r\n\r\n"1.5",2\r\n   \r\n3,"-4e-2"\r\n\n'
    np.testing.assert_array_equal(read_file(tmp_path, "q.csv", text, NAMED2), np.float32([[1.5, 2], [3, -4e-2]]))


# ---------------------------------------------------------------------------------------------
# The header rule


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_header_rule(tmp_path, data):
    width = data.draw(st.integers(1, 4), label="width")
    features = data.draw(st.lists(names, min_size=width, max_size=width, unique=True), label="features")
    use_names = data.draw(st.booleans(), label="spec has feature names")
    with_header = data.draw(st.booleans(), label="header")
    bom = data.draw(st.booleans(), label="bom")
    x = np.array(data.draw(st.lists(st.lists(f32, min_size=width, max_size=width), min_size=1, max_size=20)))
    x = x.astype(np.float32).reshape(-1, width)
    spec = InputSpec(width, tuple(features) if use_names else None)
    if with_header and use_names:
        # Any column order plus extra columns (ignored, even when not numbers).
        extra = data.draw(st.lists(names.filter(lambda n: n not in features), max_size=2, unique=True), label="extra")
        columns = data.draw(st.permutations(features + extra), label="columns")
        header = list(columns)
        table = [
            [repr(float(row[features.index(c)])) if c in features else f"id{r}" for c in columns]
            for r, row in enumerate(x)
        ]
        text = ",".join(header) + "\n" + "".join(",".join(t) + "\n" for t in table)
    else:
        text = csv_text(x, features if with_header else None)
    if bom:
        text = "\ufeff" + text
    np.testing.assert_array_equal(read_file(tmp_path, "t.csv", text, spec), x)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=st.integers(2, 4),
    data=st.data(),
)
def test_line_one_mixing_numbers_and_text_is_an_error(tmp_path, width, data):
    fields = [repr(float(v)) for v in data.draw(st.lists(f32, min_size=width, max_size=width))]
    k = data.draw(st.integers(1, width - 1), label="text fields")
    for i in data.draw(st.permutations(range(width)))[:k]:
        fields[i] = data.draw(names, label="name")
    text = ",".join(fields) + "\n1," + ",".join(["2"] * (width - 1)) + "\n"
    message = usage_error(tmp_path, "m.csv", text, InputSpec(width))
    assert "line 1 " in message and "mixes numbers and text" in message


@pytest.mark.parametrize("first", ["0,1x", "0,", "1_0,2", "x,1"])
def test_a_typo_in_the_first_data_line_is_not_taken_for_a_header(tmp_path, first):
    message = usage_error(tmp_path, "t.csv", f"{first}\n1,2\n3,4\n")
    assert "line 1 " in message


def test_header_by_name_errors(tmp_path):
    message = usage_error(tmp_path, "a.csv", "x1,y,z\n1,2,3\n", NAMED2)
    assert "no column 'x2'" in message and "'x1,y,z'" in message
    assert "more than once" in usage_error(tmp_path, "b.csv", "x1,x2,x2\n1,2,3\n", NAMED2)
    # A duplicated column that is not a feature does not matter.
    np.testing.assert_array_equal(read_file(tmp_path, "c.csv", "id,x2,id,x1\na,1,b,2\n", NAMED2), [[2, 1]])
    # With a header and no feature names, exactly `width` columns.
    assert "has 3 columns, expected 2" in usage_error(tmp_path, "d.csv", "a,b,c\n1,2,3\n")
    # Extra columns: each row still needs the header's column count.
    message = usage_error(tmp_path, "e.csv", "x1,x2,id\n1,2,a\n3,4\n5,6,c\n", NAMED2)
    assert "line 3 has 2 fields, expected 3" in message


def test_a_missing_feature_names_the_closest_column_and_the_others(tmp_path):
    spec = InputSpec(4, ("age", "income", "score", "region_code"))
    message = usage_error(tmp_path, "a.csv", "id,AGE,income,scroe\n1,2,3,4\n", spec)
    assert "no column 'age' (closest: 'AGE') nor 2 other features ('score', 'region_code')" in message
    assert "its columns: 'id,AGE,income,scroe'" in message
    message = usage_error(tmp_path, "b.csv", "id,age,income,scroe,region_code\n1,2,3,4,5\n", spec)
    assert "no column 'score' (closest: 'scroe');" in message
    assert "closest" not in usage_error(tmp_path, "c.csv", "a,b,c,d\n1,2,3,4\n", spec)


def test_headerless_rows_need_exactly_the_feature_count(tmp_path):
    message = usage_error(tmp_path, "a.csv", "1,2,3\n", InputSpec(2, ("x1", "x2")))
    assert "line 1 has 3 columns, expected 2" in message and "in order (x1, x2)" in message
    assert "or give a header line naming the columns" in message
    message = usage_error(tmp_path, "b.csv", "1,2,3\n", SPEC2)
    assert "line 1 has 3 columns, expected 2" in message and "naming the columns" not in message


def test_a_header_naming_every_feature_may_have_number_like_names(tmp_path):
    spec = InputSpec(2, ("2019", "x"))
    got = read_file(tmp_path, "y.csv", "id,x,2019\na,1.5,2\nb,3,4\n", spec)
    np.testing.assert_array_equal(got, [[2, 1.5], [4, 3]])
    # Without every feature named, such a line is still an error, not a header.
    assert "mixes numbers and text" in usage_error(tmp_path, "z.csv", "id,2019\na,1\n", spec)
    # A line of numbers only is data, whatever the feature names.
    np.testing.assert_array_equal(read_file(tmp_path, "d.csv", "2019,7\n1,2\n", spec), [[2019, 7], [1, 2]])


def test_extra_columns_are_never_parsed(tmp_path):
    text = 'name,x2,comment,x1\n"Smith, J",1,"says ""hi"", twice",2\nnan,3,,4\n'
    np.testing.assert_array_equal(read_file(tmp_path, "e.csv", text, NAMED2), [[2, 1], [4, 3]])


# ---------------------------------------------------------------------------------------------
# Bad rows are found by validate(), named by line, wherever they are


@pytest.fixture(scope="module")
def big_rows() -> list[str]:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((200_000, 2)).astype(np.float32)
    return [f"{a!r},{b!r}" for a, b in x.tolist()]


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize(
    "bad, expect",
    [
        ("1,abc", "column 'x2': 'abc' is not a number"),
        ("1,nan", "column 'x2' is missing"),
        ("-inf,0", "not finite"),
        ("1,2,3", "has 3 fields, expected 2"),
        ("4e38,0", "beyond float32's range"),
        ("1e999,0", "not finite"),
        ("7", "has 1 fields, expected 2"),
        ("1,2 # note", "column 'x2': '2 # note' is not a number"),
        ("0x10,1", "column 'x1': '0x10' is not a number"),
        ("1,\u0661", "is not a number"),
    ],
)
def test_bad_row_anywhere_is_named_by_validate(tmp_path, big_rows, where, bad, expect, monkeypatch):
    index = {"first": 0, "middle": len(big_rows) // 2, "last": len(big_rows) - 1}[where]
    rows = list(big_rows)
    rows[index] = bad
    path = tmp_path / "big.csv"
    path.write_text("x1,x2\n" + "\n".join(rows) + "\n")
    source = open_input(NAMED2, path=path)
    monkeypatch.setattr(type(source), "chunks", lambda *a, **k: pytest.fail("chunks() must not be needed"))
    with pytest.raises(UsageError) as exc:
        source.validate()
    assert f"line {index + 2}" in str(exc.value) and expect in str(exc.value), str(exc.value)
    assert str(path) in str(exc.value)


def test_blank_lines_keep_line_numbers(tmp_path, big_rows):
    rows = list(big_rows[:100_000])
    rows[5] = ""
    rows[70_000] = "  \t"
    rows[90_000] = "1,x"
    message = usage_error(tmp_path, "b.csv", "\n\n" + "\n".join(rows) + "\n")
    assert "line 90003," in message


def test_good_big_file_validates_and_streams_in_order(tmp_path, big_rows):
    path = tmp_path / "ok.csv"
    path.write_text("\n".join(big_rows))  # no final newline
    source = open_input(SPEC2, path=path)
    assert source.validate() == len(big_rows)
    chunks = list(source.chunks(65536))
    assert [c.shape[0] for c in chunks] == [65536, 65536, 65536, 200_000 - 3 * 65536]
    expected = np.array([[float(v) for v in r.split(",")] for r in big_rows[:10]], dtype=np.float32)
    np.testing.assert_array_equal(chunks[0][:10], expected)


@pytest.mark.parametrize(
    "text, expect",
    [
        ("[[1, 2], [3, true]]", "row 2, column 2: true is not a number"),
        ("[[1, 2], [3, null]]", "row 2, column 2 is missing"),
        ('[[1, 2], [3, "4"]]', "row 2, column 2: the string '4' is not a number"),
        ("[[1, 2], [3, NaN]]", "row 2 is not finite"),
        ("[[1, 2], [Infinity, 3]]", "row 2 is not finite"),
        ("[[1, 2], [1e39, 3]]", "row 2 has a value beyond"),
        ("[[1, 2], [3]]", "row 2 has 1 values, expected 2"),
        ("[[1, 2], 5]", "row 2 is 5"),
        ("[]", "no input rows"),
        ('{"x": []}', "no input rows"),
        ('{"y": [[1, 2]]}', 'needs the key "x"'),
        ("", "no input rows"),
        ("  \n ", "no input rows"),
        ("[[1, 2]] [[3, 4]]", "Extra data"),
        ("[1, 2, 3]", "rows have 3 values, expected 2"),
        ("[[1,2],]", "invalid JSON (line 1, column 8)"),
        ("[[1, 2], [3, " + "9" * 5000 + "]]", "row 2 is not finite"),
        ("[[1, 2], [3, 1" + "0" * 400 + "]]", "row 2 is not finite"),
        ('[{"x1": 1, "x2": 2}, {"x1": 1, "x2": 2, "x1": 3}]', "the key 'x1' appears twice"),
        ('[{"x1": 1, "x2": 2}, [3, 4]]', "row 2 is a list of 2, but row 1 is an object"),
    ],
)
def test_json_errors_name_the_row(tmp_path, text, expect):
    assert expect in usage_error(tmp_path, "bad.json", text)


def test_json_object_rows_need_every_feature(tmp_path):
    message = usage_error(tmp_path, "o.json", '[{"x1": 1, "x2": 2}, {"x1": 3, "z": 4}]', NAMED2)
    assert "row 2, column 'x2' is missing" in message
    # Without feature names, an object's keys are the columns in the order written (as a CSV header's).
    np.testing.assert_array_equal(read_file(tmp_path, "p.json", '[{"b": 1, "a": 2}]'), [[1, 2]])


@pytest.mark.parametrize(
    "junk",
    [
        "[" * 100_000,
        "[[" + "[" * 50_000 + "]" * 50_002,
        '{"x": ' + "[" * 100_000,
        '[{"x1": ' + '{"a": ' * 30_000 + "1" + "}" * 30_001 + "]",
    ],
)
def test_deeply_nested_json_is_a_usage_error(tmp_path, junk):
    usage_error(tmp_path, "deep.json", junk, NAMED2)
    with pytest.raises(UsageError):
        open_input(NAMED2, stdin=io.StringIO(junk)).validate()


def test_pairs_errors():
    with pytest.raises(UsageError, match=r"input 2 \('1e-3'\) is not 2 numbers"):
        open_input(SPEC2, pairs=["0,1", "1e-3"]).validate()
    with pytest.raises(UsageError, match=r"input 1 .* not finite"):
        open_input(SPEC2, pairs=["nan,1"]).validate()
    with pytest.raises(UsageError, match="one way only"):
        open_input(SPEC2, pairs=["0,1"], stdin=io.StringIO("[0, 1]"))
    with pytest.raises(UsageError, match="no input rows"):
        open_input(SPEC2)


def test_missing_file_folder_and_empty(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        open_input(SPEC2, path=tmp_path / "nope.csv")
    with pytest.raises(UsageError, match="is a folder"):
        open_input(SPEC2, path=tmp_path)
    for name, content in [("e.csv", ""), ("h.csv", "x1,x2\n"), ("b.csv", "\n \n"), ("e.json", "  "), ("e.jsonl", "\n")]:
        message = usage_error(tmp_path, name, content)
        assert "no input rows" in message, message
    np.save(tmp_path / "e.npy", np.zeros((0, 2)))
    with pytest.raises(UsageError, match="no input rows"):
        open_input(SPEC2, path=tmp_path / "e.npy").validate()
    with pytest.raises(UsageError, match="no input rows"):
        list(open_input(SPEC2, path=tmp_path / "e.npy").chunks())


def test_csv_encoding_long_fields_and_long_lines(tmp_path):
    assert "line 3 is not UTF-8" in usage_error(tmp_path, "u.csv", b"x1,x2\n1,2\n3,\xff4\n")
    # Fields beyond the csv module's limit and records beyond pyarrow's parse block are still read.
    assert "line 1 is not finite" in usage_error(tmp_path, "f.csv", '1,"' + "9" * 200_000 + '"\n')
    assert "line 2 is not finite" in usage_error(tmp_path, "l.csv", "1,2\n" + "3" * 3_000_000 + ",4\n")
    assert "line 1 is longer" in usage_error(tmp_path, "l.csv", "1," + "3" * 10_000_000)


def test_a_record_is_buffered_up_to_its_cap_no_further(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "MAX_RECORD_BYTES", 1 << 20)
    monkeypatch.setattr(T, "BLOCK_BYTES", 1 << 16)
    message = usage_error(tmp_path, "q.csv", 'x1,x2\n1,2\n3,"4' + "5" * 3_000_000 + "\n")
    assert "the record at line 3 is longer than 1 MB (an unclosed quote?)" in message


# ---------------------------------------------------------------------------------------------
# .npy refusals


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_npz_renamed_npy_is_refused(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2)))
    assert "zip archive" in usage_error(tmp_path, "a.npy", (tmp_path / "a.npz").read_bytes())


def test_truncated_npy_claiming_a_trillion_rows_is_refused(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 2)})
    message = usage_error(tmp_path, "t.npy", buf.getvalue() + np.zeros((10, 2), dtype="<f4").tobytes())
    assert "truncated" in message and "1000000000000" in message


def test_object_and_other_dtypes_are_refused(tmp_path):
    path = tmp_path / "o.npy"
    np.save(path, np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(UsageError, match="not numeric"):
        open_input(SPEC2, path=path).validate()
    for arr in [
        np.zeros((2, 2), dtype=complex),
        np.zeros((2, 2), dtype=bool),
        np.array([["a", "b"]]),
        np.zeros(2, dtype=[("a", "<f4"), ("b", "<f4")]),
    ]:
        assert "not numeric" in usage_error(tmp_path, "d.npy", npy_bytes(arr))


@pytest.mark.parametrize("shape", [(3, 3), (3,), (2, 2, 2), ()])
def test_npy_wrong_shape_is_refused(tmp_path, shape):
    assert "shape" in usage_error(tmp_path, "s.npy", npy_bytes(np.zeros(shape)))


def test_npy_bad_values_name_the_row(tmp_path):
    x = np.zeros((100_000, 2))
    x[77_777, 1] = np.inf
    assert "row 77778 is not finite" in usage_error(tmp_path, "v.npy", npy_bytes(x))
    x[77_777, 1] = 1e39
    assert "row 77778 has a value beyond" in usage_error(tmp_path, "v.npy", npy_bytes(x))
    assert "unexpected bytes" in usage_error(tmp_path, "v.npy", npy_bytes(np.zeros((2, 2))) + b"junk")


# ---------------------------------------------------------------------------------------------
# Fuzz: untrusted bytes only ever raise UsageError


def check_only_usage_errors(make) -> None:
    """Opening, checking and reading what `make()` opens either works or raises a one-line UsageError."""
    try:
        source = make()
        n = source.validate()
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    got = np.concatenate(list(source.chunks(5)))
    assert got.shape == (n, source.spec.width) and got.dtype == np.float32 and np.isfinite(got).all()


@FUZZ
@given(blob=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".npy", ".json", ".jsonl", ".parquet", ".txt"]))
def test_fuzz_random_bytes(tmp_path, blob, suffix):
    path = tmp_path / f"f{suffix}"
    path.write_bytes(blob)
    check_only_usage_errors(lambda: open_input(NAMED2, path=path))


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_npy(tmp_path, data):
    arr = data.draw(st.sampled_from([np.zeros((3, 2)), np.ones((2,), dtype="<i2"), np.zeros((1, 2), dtype=">f4")]))
    blob = bytearray(npy_bytes(arr))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    blob = blob[: data.draw(st.integers(0, len(blob)))]
    path = tmp_path / "m.npy"
    path.write_bytes(bytes(blob))
    check_only_usage_errors(lambda: open_input(SPEC2, path=path))


def parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_parquet(tmp_path, data):
    import pyarrow as pa

    table = pa.table({"x1": [1.0, 2.0, None], "x2": pa.array([1, 2, 3], pa.int32()), "id": ["a", "b", "c"]})
    blob = bytearray(parquet_bytes(table))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    path = tmp_path / "m.parquet"
    path.write_bytes(bytes(blob))
    check_only_usage_errors(lambda: open_input(NAMED2, path=path, carry=("id",)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(["x", "x1", "x2", "y"]), kids),
    max_leaves=12,
)


@FUZZ
@given(value=json_values, cut=st.integers(0, 200), text=st.text(max_size=40))
def test_fuzz_json(tmp_path, value, cut, text):
    encoded = json.dumps(value)
    for candidate in (encoded, encoded[:cut], text, encoded + text):
        path = tmp_path / "j.json"
        path.write_text(candidate)
        check_only_usage_errors(lambda p=path: open_input(NAMED2, path=p))
        check_only_usage_errors(lambda c=candidate: open_input(NAMED2, stdin=io.StringIO(c)))


@FUZZ
@given(rows=st.lists(json_values, max_size=5), text=st.text(max_size=20))
def test_fuzz_json_lines(tmp_path, rows, text):
    body = "\n".join(json.dumps(r) for r in rows) + "\n" + text
    path = tmp_path / "j.jsonl"
    path.write_text(body)
    check_only_usage_errors(lambda: open_input(NAMED2, path=path, carry=ALL))
    check_only_usage_errors(lambda: open_input(NAMED2, stdin=io.StringIO(body)))


@FUZZ
@given(lines=st.lists(st.text(alphabet=st.sampled_from(list('01.e-+,"x \t\r\n\ufeffnaNIf')), max_size=12), max_size=8))
def test_fuzz_csv_text(tmp_path, lines):
    path = tmp_path / "c.csv"
    path.write_text("\n".join(lines), encoding="utf-8")
    check_only_usage_errors(lambda: open_input(NAMED2, path=path))
    check_only_usage_errors(lambda: open_input(SPEC2, path=path))


# ---------------------------------------------------------------------------------------------
# JSON Lines and Parquet


def test_json_lines_round_trip_in_any_key_order_with_blank_lines(tmp_path):
    x = np.random.default_rng(5).standard_normal((300, 2)).astype(np.float32)
    lines = [json.dumps({"id": f"r{i}", "x2": float(b), "x1": float(a)}) for i, (a, b) in enumerate(x)]
    lines.insert(100, "   ")
    text = "\n".join(lines) + "\n"
    np.testing.assert_array_equal(read_file(tmp_path, "r.jsonl", text, NAMED2), x)
    np.testing.assert_array_equal(read_file(tmp_path, "r.ndjson", text, NAMED2), x)
    np.testing.assert_array_equal(read_all(open_input(NAMED2, stdin=io.StringIO(text))), x)


@pytest.mark.parametrize(
    "bad, expect",
    [
        ('{"x1": 1, "x2": "a"}', "line 3, column 'x2': the string 'a' is not a number"),
        ('{"x1": 1, "x2": true}', "line 3, column 'x2': true is not a number"),
        ('{"x1": 1, "x1": 3, "x2": 2}', "line 3 is not a JSON object (the key 'x1' appears twice)"),
        ('{"x1": 1e400, "x2": 2}', "line 3, column 'x1' is not finite"),
        ('{"x1": NaN, "x2": 2}', "line 3 is not finite"),
        ('{"x1": 1e39, "x2": 2}', "line 3 has a value beyond float32's range"),
        ('{"x1": null, "x2": 2}', "line 3, column 'x1' is missing"),
        ('{"x2": 2}', "line 3, column 'x1' is missing"),
        ("[1, 2]", "line 3 is a list of 2, not a JSON object"),
        ('{"x1": 1, "x2": 2', "line 3 is not a JSON object"),
    ],
)
def test_json_lines_errors_name_the_line_and_column(tmp_path, bad, expect):
    text = '{"x1": 1, "x2": 2}\n\n' + bad + '\n{"x1": 3, "x2": 4}\n'
    assert expect in usage_error(tmp_path, "bad.jsonl", text, NAMED2)


def test_parquet_round_trips_typed_columns_and_names_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.random.default_rng(6).standard_normal((1000, 2)).astype(np.float32)
    table = pa.table({"id": [f"r{i}" for i in range(1000)], "x2": x[:, 1], "x1": x[:, 0].astype(np.float64)})
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=300)
    np.testing.assert_array_equal(read_all(open_input(NAMED2, path=tmp_path / "p.parquet")), x)
    ints = pa.table({"x1": pa.array([1, 2], pa.int64()), "x2": pa.array([3, 4], pa.int8())})
    assert read_file(tmp_path, "i.pq", parquet_bytes(ints), NAMED2).tolist() == [[1, 3], [2, 4]]
    # A null, or a NaN, is a missing value, named by its row.
    for x2 in ([1.0, None, 3.0], [1.0, float("nan"), 3.0]):
        message = usage_error(tmp_path, "n.parquet", parquet_bytes(pa.table({"x1": [1.0] * 3, "x2": x2})), NAMED2)
        assert "row 2, column 'x2' is missing" in message
    strings = pa.table({"x1": ["1", "2"], "x2": [1.0, 2.0]})
    assert "column 'x1' holds" in usage_error(tmp_path, "s.parquet", parquet_bytes(strings), NAMED2)
    assert "not a readable Parquet file" in usage_error(tmp_path, "j.parquet", b"PAR1 not really", NAMED2)
    # The format comes from the name; a Parquet file under another name says so.
    assert "this is a Parquet file" in usage_error(tmp_path, "p.csv", parquet_bytes(ints), NAMED2)


def test_a_parquet_row_group_beyond_the_memory_bound_is_read_in_pieces(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.arange(40_000, dtype=np.float32).reshape(20_000, 2)
    pq.write_table(pa.table({"x1": x[:, 0], "x2": x[:, 1]}), tmp_path / "g.parquet", row_group_size=20_000)
    monkeypatch.setattr(T, "PARQUET_BATCH_ROWS", 4096)
    source = open_input(NAMED2, path=tmp_path / "g.parquet")
    sizes = [b.rows for b in source.batches()]
    assert max(sizes) <= 4096 and sum(sizes) == 20_000
    np.testing.assert_array_equal(np.concatenate(list(source.chunks())), x)


# ---------------------------------------------------------------------------------------------
# One rule for numbers and missing values, whatever the format


@pytest.mark.parametrize(
    "field", ["0x10", "1_000", "\u0661", "\uff11", "1,5", "1.5.2", "--1", "1e", "e1", "true", "Infinity1"]
)
def test_what_is_not_a_number_in_csv(tmp_path, field):
    text = f'x1,x2\n1,2\n3,"{field}"\n'
    assert "line 3, column 'x2'" in usage_error(tmp_path, "n.csv", text, NAMED2)


def test_infinity_is_refused_as_not_finite_in_every_format(tmp_path):
    for token in ("inf", "-Infinity"):
        assert "line 2 is not finite" in usage_error(tmp_path, "i.csv", f"x1,x2\n1,{token}\n", NAMED2)
    assert "row 1 is not finite" in usage_error(tmp_path, "i.json", "[[1, Infinity]]", NAMED2)
    assert "line 1 is not finite" in usage_error(tmp_path, "i.jsonl", '{"x1": 1, "x2": -Infinity}\n', NAMED2)


@pytest.mark.parametrize("field", [" 1 ", "+1", "-0", ".5", "5.", "1e-3", "1E+3", "007", "3.4028235e38"])
def test_what_is_a_number_in_csv(tmp_path, field):
    got = read_file(tmp_path, "n.csv", f'x1,x2\n1,"{field}"\n', NAMED2)
    assert got[0, 1] == np.float32(float(field))


def test_missing_tokens_are_the_documented_list_or_the_models_own(tmp_path):
    for token in T.DEFAULT_MISSING:
        assert "column 'x2' is missing" in usage_error(tmp_path, "m.csv", f"x1,x2\n1,{token}\n", NAMED2)
    # "NA" is a country code for a model whose data says so: not missing, and here not a number either.
    own = InputSpec(2, ("x1", "x2"), missing=("?",))
    assert "column 'x2': 'NA' is not a number" in usage_error(tmp_path, "m.csv", "x1,x2\n1,NA\n", own)
    assert "column 'x2' is missing (an empty field or a missing-value token: '?')" in usage_error(
        tmp_path, "m.csv", "x1,x2\n1,?\n", own
    )


def test_quoted_line_breaks_are_csv_and_keep_line_numbers(tmp_path):
    text = 'id,x1,x2\n"a\nb",1,2\n"c, ""d""",3,4\n"e\r\n\nf",5,x\n'
    message = usage_error(tmp_path, "q.csv", text, NAMED2)
    assert "line 5, column 'x2': 'x' is not a number" in message
    path = tmp_path / "ok.csv"
    path.write_text(text.replace(",5,x", ",5,6"))
    source = open_input(NAMED2, path=path, carry=("id",))
    batch = next(source.batches())
    assert batch.carried.column("id").to_pylist() == ["a\nb", 'c, "d"', "e\r\n\nf"]
    assert batch.x.tolist() == [[1, 2], [3, 4], [5, 6]]


# ---------------------------------------------------------------------------------------------
# Carrying input columns into the output


def test_carry_copies_columns_as_written(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('id,x1,note,x2\n007,1,NA,2\n,3,"x, y",4\n')
    source = open_input(NAMED2, path=path, carry=("id", "note", "x1"))
    (batch,) = list(source.batches())
    assert batch.carried.column_names == ["id", "note", "x1"]
    assert batch.carried.column("id").to_pylist() == ["007", ""]  # text as written: an id keeps its zeros
    assert batch.carried.column("note").to_pylist() == ["NA", "x, y"]  # nothing is "missing" in a carried column
    assert batch.carried.column("x1").to_pylist() == [1.0, 3.0]
    every = open_input(NAMED2, path=path, carry=ALL)
    assert every.carry == ("id", "x1", "note", "x2")


def test_carry_needs_named_columns_that_exist(tmp_path):
    (tmp_path / "c.csv").write_text("id,x1,x2\n1,2,3\n")
    with pytest.raises(UsageError, match=r"--carry 'ID': .* has no such column \(closest: 'id'\)"):
        open_input(NAMED2, path=tmp_path / "c.csv", carry=("ID",))
    (tmp_path / "h.csv").write_text("1,2\n")
    with pytest.raises(UsageError, match="no column names to carry"):
        open_input(NAMED2, path=tmp_path / "h.csv", carry=("id",))
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    with pytest.raises(UsageError, match="--carry-all: .*x.npy has no column names"):
        open_input(NAMED2, path=tmp_path / "x.npy", carry=ALL)
    with pytest.raises(UsageError, match="the command line has no column names"):
        open_input(NAMED2, pairs=["1,2"], carry=("id",))


def test_carry_from_parquet_and_json_lines_keeps_types(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"id": pa.array([7, 8], pa.int64()), "x1": [1.0, 2.0], "x2": [3.0, 4.0]}), tmp_path / "p.pq"
    )
    (batch,) = list(open_input(NAMED2, path=tmp_path / "p.pq", carry=("id",)).batches())
    assert batch.carried.column("id").type == pa.int64() and batch.carried.column("id").to_pylist() == [7, 8]
    (tmp_path / "r.jsonl").write_text('{"id": "a", "x1": 1, "x2": 2}\n{"id": "b", "x1": 3, "x2": 4}\n')
    (batch,) = list(open_input(NAMED2, path=tmp_path / "r.jsonl", carry=("id",)).batches())
    assert batch.carried.column("id").to_pylist() == ["a", "b"]


# ---------------------------------------------------------------------------------------------
# stdin: a JSON document (read whole, capped while reading) or JSON Lines (streamed)


class GeneratorStream:
    """A read(size) stream (text or binary) fed by a generator; counts what was read."""

    def __init__(self, parts) -> None:
        self.parts = parts
        self.pending = None
        self.read_total = 0

    def read(self, size: int = -1):
        assert size > 0, "an endless stream must be read in blocks"
        if self.pending is None:
            self.pending = next(self.parts)
        while len(self.pending) < size:
            self.pending += next(self.parts)
        out, self.pending = self.pending[:size], self.pending[size:]
        self.read_total += len(out)
        return out


def endless(head, item):
    yield head
    while True:
        yield item


@pytest.mark.parametrize("head, item", [(b"[", b"[0, 1],\n"), ('{"x": [', '{"x1": 1, "x2": 2}, '), ("[[1.5", "5")])
def test_an_endless_json_document_on_stdin_fails_at_the_size_cap(monkeypatch, head, item):
    monkeypatch.setattr(T, "MAX_JSON_BYTES", 1 << 20)
    stream = GeneratorStream(endless(head, item))
    with pytest.raises(UsageError, match="stdin: more than 1 MB of JSON, the most read whole; give JSON Lines"):
        open_input(NAMED2, stdin=stream)  # type: ignore[arg-type]
    assert stream.read_total < (1 << 20) + (2 << 20)


def test_a_json_file_over_the_cap_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "MAX_JSON_BYTES", 1000)
    message = usage_error(tmp_path, "big.json", json.dumps([[1, 2]] * 500))
    assert "more than 0 MB of JSON" in message and "JSON Lines (.jsonl)" in message
    monkeypatch.setattr(T, "MAX_JSON_BYTES", 1 << 20)
    monkeypatch.setattr(T, "MAX_JSON_ROWS", 100)
    assert "more than 100 rows" in usage_error(tmp_path, "many.json", json.dumps([[1, 2]] * 101))


def test_stdin_is_read_once_and_kept():
    stream = io.StringIO("[[1, 2], [3, 4]]")
    source = open_input(SPEC2, stdin=stream)
    assert source.validate() == 2
    np.testing.assert_array_equal(np.concatenate(list(source.chunks())), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(np.concatenate(list(source.chunks(1))), [[1, 2], [3, 4]])
    source.close()


def test_stdin_json_lines_is_told_from_a_document_and_its_copy_is_removed():
    lines = '{"x1": 1, "x2": 2}\n{"x1": 3, "x2": 4}\n'
    source = open_input(NAMED2, stdin=io.StringIO(lines), carry=ALL)
    assert source.file.fmt == T.JSONL
    copy = source.file.path
    assert copy.exists() and source.validate() == 2
    source.close()
    assert not copy.exists()
    for document in ('{"x": [[1, 2]]}\n', '{\n "x": [[1, 2]]\n}', '[{"x1": 1, "x2": 2}]'):
        source = open_input(NAMED2, stdin=io.StringIO(document))
        assert source.file.fmt == T.JSON and source.validate() == 1
        source.close()


def test_stdin_not_utf8_and_bom():
    with pytest.raises(UsageError, match="not UTF-8"):
        open_input(SPEC2, stdin=io.BytesIO(b"[[1, 2], [3, \xff]]")).validate()
    got = read_all(open_input(SPEC2, stdin=io.BytesIO(codecs.BOM_UTF8 + b"[[1, 2]]")))
    np.testing.assert_array_equal(got, [[1, 2]])


# ---------------------------------------------------------------------------------------------
# Bounded memory, cheap import

_PEAK = """
import sys, tracemalloc
from pathlib import Path
import pyarrow as pa
from pipeline.serving.inputs import InputSpec, open_input
from pipeline.spec import tables
tables.BLOCK_BYTES = 1 << 18  # many blocks in the small file too: what is compared is what a block holds
tables.PARQUET_BATCH_ROWS = 8192
tracemalloc.start()
source = open_input(InputSpec(2, ("x1", "x2")), path=Path(sys.argv[1]), carry=("id",))
n = source.validate()
rows = sum(b.rows for b in source.batches())
assert n == rows, (n, rows)
print(rows, (pa.default_memory_pool().max_memory() + tracemalloc.get_traced_memory()[1]) / 2**20)
"""


def peak_mib(path: Path) -> tuple[int, float]:
    """(rows read, peak MiB held by pyarrow's memory pool plus Python objects) over both passes, in a fresh
    process (the pool's figure is exact where RSS, shared with the allocator's caches, is noisy)."""
    result = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    rows, mib = result.stdout.split()
    return int(rows), float(mib)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_memory_does_not_grow_with_rows(tmp_path, fmt):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.random.default_rng(3).integers(-99999, 99999, size=(200_000, 2)) / 1000
    ids = [f"row-{i}" for i in range(200_000)]
    if fmt == "csv":
        block = "".join(f"{i},{a},{b}\n" for i, (a, b) in zip(ids, x.tolist()))
    elif fmt == "jsonl":
        block = "".join(json.dumps({"id": i, "x1": a, "x2": b}) + "\n" for i, (a, b) in zip(ids, x.tolist()))
    small, big = tmp_path / f"small.{fmt}", tmp_path / f"big.{fmt}"
    if fmt == "parquet":
        table = pa.table({"id": ids, "x1": x[:, 0], "x2": x[:, 1]})
        pq.write_table(table, small, row_group_size=50_000)
        with pq.ParquetWriter(big, table.schema) as w:
            for _ in range(10):
                w.write_table(table, row_group_size=50_000)
    else:
        header = "id,x1,x2\n" if fmt == "csv" else ""
        small.write_text(header + block)
        with big.open("w") as f:
            f.write(header)
            for _ in range(10):
                f.write(block)
    n_small, peak_small = peak_mib(small)
    n_big, peak_big = peak_mib(big)
    assert (n_small, n_big) == (200_000, 2_000_000)
    # 10x the rows, the same memory: 2M rows of these columns alone would take well over 40 MiB.
    assert peak_big < peak_small + 4, f"{fmt}: peak {peak_big:.1f} MiB for 2M rows vs {peak_small:.1f} MiB for 200k"


# Python run in a subprocess before the code under test: importing torch or pandas fails there.
BLOCK_TORCH_AND_PANDAS = (
    "import sys, importlib.abc\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'pandas'):\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


def test_import_is_torch_free():
    code = BLOCK_TORCH_AND_PANDAS + "import pipeline.serving.inputs\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_input_spec_checks_itself():
    with pytest.raises(ValueError):
        InputSpec(0)
    with pytest.raises(ValueError):
        InputSpec(2, ("a",))
    with pytest.raises(ValueError):
        InputSpec(2, ("a", "a"))
    with pytest.raises(ValueError):
        list(open_input(SPEC2, pairs=["0,1"]).chunks(0))


def test_feature_names_that_look_like_numbers_make_a_first_line_naming_them_all_the_header(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("3,2,1\n0,0.5,0.25\n")
    source = open_input(InputSpec(3, ("1", "2", "3")), path=path)
    assert source.validate() == 1
    np.testing.assert_array_equal(np.concatenate(list(source.chunks())), np.array([[0.25, 0.5, 0.0]], np.float32))
    path.write_text("4,5,6\n0,0.5,0.25\n")  # numbers that are not the feature names: data
    assert open_input(InputSpec(3, ("1", "2", "3")), path=path).validate() == 2


def test_pyarrow_allocates_from_jemalloc_unless_the_user_says_otherwise():
    """The allocator is chosen when pyarrow is imported: `import pipeline` sets it first (Linux)."""
    import os

    code = "import pipeline, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert r.stdout.strip() == ("jemalloc" if sys.platform == "linux" else r.stdout.strip()), r.stderr
    env["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert r.stdout.strip() == "system", r.stderr


# ---------------------------------------------------------------------------------------------
# Red team, round 1 of the one reader: each class of what broke, with a test


def test_a_quote_inside_an_unquoted_field_is_an_ordinary_character(tmp_path, monkeypatch):
    """As pyarrow and Python's csv read it: only a quote at a field's start opens a quoted field."""
    rows = "".join(f"{i if i != 50 else '5' + chr(34) + '0'},{i},1\n" for i in range(1, 101))
    path = tmp_path / "q.csv"
    path.write_text('id,x1,x"2\n' + rows)
    spec = InputSpec(2, ("x1", 'x"2'))
    source = open_input(spec, path=path, carry=("id",))
    batches = list(source.batches())
    assert sum(b.rows for b in batches) == 100
    assert batches[0].carried.column("id").to_pylist()[49] == '5"0'
    # A stray quote before quoted fields with line breaks, across many blocks.
    monkeypatch.setattr(T, "BLOCK_BYTES", 1 << 14)
    path.write_text('id,x1,x2\nn"x,1,2\n' + "".join(f'"p{i}\nq",1,2\n' for i in range(5000)) + "zz,1,oops\n")
    message = usage_error(tmp_path, "q.csv", path.read_bytes(), NAMED2)
    assert f"line {3 + 2 * 5000}, column 'x2': 'oops' is not a number" in message


def test_json_lines_read_only_the_columns_asked_for_with_one_type_each(tmp_path):
    text = (
        '{"x1": 1, "x2": 2, "note": 1, "z": 1e400, "id": 7}\n{"x1": 3, "x2": 4, "note": "x", "z": [1, "a"], "id": 8}\n'
    )
    (tmp_path / "a.jsonl").write_text(text)
    batches = list(open_input(NAMED2, path=tmp_path / "a.jsonl", carry=("id",)).batches())
    assert batches[0].x.tolist() == [[1, 2], [3, 4]] and batches[0].carried.column("id").to_pylist() == [7, 8]
    (tmp_path / "b.jsonl").write_text('{"x1": 1, "x2": 2, "id": 7}\n{"x1": 3, "x2": 4, "id": "x"}\n')
    with pytest.raises(UsageError, match=r"line 2, column 'id': the string 'x' is not int64 as on the first rows"):
        list(open_input(NAMED2, path=tmp_path / "b.jsonl", carry=("id",)).batches())
    (tmp_path / "c.jsonl").write_text('{"x1": 1, "x2": 2, "id": {"k": 1}}\n')
    with pytest.raises(UsageError, match=r"column 'id' holds an object"):
        list(open_input(NAMED2, path=tmp_path / "c.jsonl", carry=("id",)).batches())
    # A first row that lacks a feature: that row's value is missing, not the whole column.
    (tmp_path / "d.jsonl").write_text('{"x1": 1, "id": "q"}\n{"x1": 1, "x2": 3}\n')
    assert "line 1, column 'x2' is missing" in usage_error(
        tmp_path, "d.jsonl", (tmp_path / "d.jsonl").read_bytes(), NAMED2
    )
    # A byte-order mark, and a first line over 1 MB.
    np.testing.assert_array_equal(read_file(tmp_path, "e.jsonl", b'\xef\xbb\xbf{"x1": 1, "x2": 2}\n', NAMED2), [[1, 2]])
    long = '{"x1": 1, "x2": 2, "pad": "' + "p" * 1_500_000 + '"}\n'
    np.testing.assert_array_equal(read_file(tmp_path, "f.jsonl", long, NAMED2), [[1, 2]])


def test_old_mac_line_endings_are_refused_in_one_line(tmp_path):
    message = usage_error(tmp_path, "mac.csv", "x1,x2\r1,2\r3,4\r", NAMED2)
    assert "line 1 has a carriage return (\\r) without a line feed" in message


def test_stdin_is_named_stdin_in_every_message_and_takes_a_format():
    with pytest.raises(UsageError, match=r"^stdin: invalid JSON"):
        open_input(NAMED2, stdin=io.StringIO("x1,x2\n1,2\n"))
    with pytest.raises(UsageError, match=r"^stdin: row 2, column 'x2' is missing"):
        open_input(NAMED2, stdin=io.StringIO('[{"x1": 1, "x2": 2}, {"x1": 1}]')).validate()
    one = open_input(NAMED2, stdin=io.StringIO('{"x1": 1, "x2": 2}'))  # one row object, no line break
    assert one.validate() == 1
    csv_in = open_input(NAMED2, stdin=io.StringIO("x2,x1\n2,1\n"), fmt="csv")
    np.testing.assert_array_equal(np.concatenate(list(csv_in.chunks())), [[1, 2]])
    for source in (one, csv_in):
        source.close()


def test_carrying_an_ambiguous_or_nested_column_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d.csv").write_text("x1,x2,id,id\n1,2,3,4\n")
    for carry in (("id",), ALL):
        with pytest.raises(UsageError, match="names column 'id' more than once; which to copy is ambiguous"):
            open_input(NAMED2, path=tmp_path / "d.csv", carry=carry)
    pq.write_table(pa.table({"x1": [1.0], "x2": [2.0], "s": [{"k": "v"}]}), tmp_path / "n.parquet")
    with pytest.raises(UsageError, match=r"column 's' holds struct"):
        list(open_input(NAMED2, path=tmp_path / "n.parquet", carry=("s",)).batches())
    (tmp_path / "m.json").write_text('[{"x1": 1, "x2": 2, "id": 1}, {"x1": 1, "x2": 2, "id": "x"}]')
    (batch,) = list(open_input(NAMED2, path=tmp_path / "m.json", carry=("id",)).batches())
    assert batch.carried.column("id").to_pylist() == ["1", "x"]  # mixed: each as its JSON text


def test_an_empty_field_is_missing_whatever_the_tokens(tmp_path):
    own = InputSpec(2, ("x1", "x2"), missing=("?",))
    message = usage_error(tmp_path, "e.csv", "x1,x2\n1,\n", own)
    assert "line 2, column 'x2' is missing (an empty field or a missing-value token: '?')" in message


# ---------------------------------------------------------------------------------------------
# Models whose graph encodes raw columns (spec.encoding): missing values taken, text columns by name

from pipeline.spec.encoding import ColumnCode, Encoding  # noqa: E402

NUM_ENC = Encoding(
    (ColumnCode("a", "number", "float32", (0.0,), True), ColumnCode("b c/d", "number", "float32", (1.0,), True))
)
NUM_SPEC = InputSpec(2, NUM_ENC.features, encoding=NUM_ENC)
MIXED_ENC = Encoding(
    (
        ColumnCode("n/1", "number", "float32", (0.0,), True),
        ColumnCode("cat x", "category", "string", categories=("a", "b")),
        ColumnCode("flag", "category", "string", categories=("false", "true"), boolean=True),
        ColumnCode("day", "date", "string", (2020.0, 1.0, 1.0, 0.0), True),
        ColumnCode("at", "timestamp", "string", (2020.0, 1.0, 1.0, 0.0, 0.0), True),
    )
)
MIXED_SPEC = InputSpec(5, MIXED_ENC.features, encoding=MIXED_ENC)
NAN = float("nan")


def read_columns(source: I.RowSource) -> dict[str, list]:
    """Every row of a per-column source, as lists per column (NaN kept)."""
    source.validate()
    parts = [b.x for b in source.batches()]
    assert all(isinstance(p, dict) and list(p) == list(source.spec.features) for p in parts)
    for p in parts:
        for name, code in zip(source.spec.features, source.spec.encoding.columns):
            assert p[name].ndim == 1
            assert p[name].dtype == (np.float32 if code.dtype == "float32" else object)
    return {n: [v for p in parts for v in p[n].tolist()] for n in source.spec.features}


def same(got: list, want: list) -> bool:
    """Lists equal, NaN equal to NaN, float32 values compared as float32."""
    return len(got) == len(want) and all(
        (isinstance(w, float) and w != w and g != g)
        or (isinstance(w, float) and np.float32(g) == np.float32(w))
        or g == w
        for g, w in zip(got, want)
    )


def test_a_model_that_imputes_takes_missing_values_as_nan_in_every_format(tmp_path):
    want = np.array([[1.5, NAN], [NAN, 2], [NAN, NAN], [3, 4]], np.float32)
    csv = 'a,b c/d\n1.5,\nNA,2\n"",N/A\n3,4\n'
    np.testing.assert_array_equal(read_file(tmp_path, "m.csv", csv, NUM_SPEC), want)
    # without a header the first line may hold a gap: it is data, not a line that mixes numbers and text
    np.testing.assert_array_equal(read_file(tmp_path, "h.csv", "1.5,\nNA,2\n,\n3,4\n", NUM_SPEC), want)
    rows = [{"a": 1.5, "b c/d": None}, {"b c/d": 2}, {"a": None}, {"a": 3, "b c/d": 4}]
    np.testing.assert_array_equal(read_file(tmp_path, "m.json", json.dumps(rows), NUM_SPEC), want)
    jsonl = "".join(json.dumps(r) + "\n" for r in rows)
    np.testing.assert_array_equal(read_file(tmp_path, "m.jsonl", jsonl, NUM_SPEC), want)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"b c/d": [NAN, 2.0, None, 4.0], "a": pa.array([1.5, None, None, 3.0])}), tmp_path / "m.parquet"
    )
    np.testing.assert_array_equal(read_all(open_input(NUM_SPEC, path=tmp_path / "m.parquet")), want)
    np.save(tmp_path / "m.npy", want.astype(np.float64))
    np.testing.assert_array_equal(read_all(open_input(NUM_SPEC, path=tmp_path / "m.npy")), want)
    got = read_all(open_input(NUM_SPEC, pairs=["1.5,", "NA,2", ",N/A", "3,4"]))
    np.testing.assert_array_equal(got, want)
    # Inf and overflow are still refused: once per column, counted
    message = usage_error(tmp_path, "i.csv", "a,b c/d\ninf,1\n2,1e39\n-inf,\n", NUM_SPEC)
    assert "column 'a' has 2 values infinite or beyond float32's range" in message
    assert "(the first, inf, at line 2)" in message
    np.save(tmp_path / "i.npy", np.array([[1.0, np.inf]]))
    with pytest.raises(UsageError, match=r"row 1 is not finite .* Inf and overflowing numbers are refused"):
        open_input(NUM_SPEC, path=tmp_path / "i.npy").validate()


def test_a_model_that_takes_no_missing_value_still_names_the_column_and_says_missing(tmp_path):
    assert "line 3, column 'x2' is missing" in usage_error(tmp_path, "m.csv", "x1,x2\n1,2\n3,\n", NAMED2)
    message = usage_error(tmp_path, "m.jsonl", '{"x1": 1, "x2": 2}\n{"x1": 1}\n', NAMED2)
    assert "line 2, column 'x2' is missing" in message
    with pytest.raises(UsageError, match="not 2 numbers joined by commas"):
        open_input(NAMED2, pairs=["1,"]).validate()


def test_per_column_rows_are_numbers_and_text_as_written_matched_by_name(tmp_path):
    csv = (
        "at,extra,day,flag,cat x,n/1\n"
        "2020-01-02T03:04:05,z,2021-02-03,true,a,1.5\n"
        "2020-01-02 03:04,z,NA,TRUE, b ,NA\n"  # text as written (spaces kept), a token is missing
        ",z,,,   ,\n"  # missing everywhere: "" for text, NaN for numbers
        "garbage,z,2021-13-01,0,Mars,-2\n"  # the graph reads what is not a date as missing, unseen as all zeros
    )
    got = read_columns(open_input(MIXED_SPEC, path=_write(tmp_path, "m.csv", csv)))
    assert same(got["n/1"], [1.5, NAN, NAN, -2.0])
    assert got["cat x"] == ["a", " b ", "", "Mars"]
    assert got["flag"] == ["true", "TRUE", "", "0"]
    assert got["day"] == ["2021-02-03", "", "", "2021-13-01"]
    assert got["at"] == ["2020-01-02T03:04:05", "2020-01-02 03:04", "", "garbage"]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parquet_typed_columns_become_the_text_the_graph_reads(tmp_path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "n/1": pa.array([1, None, 3], pa.int32()),
            "cat x": pa.array(["a", None, "NA"]).dictionary_encode(),
            "flag": pa.array([True, None, False]),
            "day": pa.array([dt.date(2021, 2, 3), None, dt.date(1999, 12, 31)], pa.date32()),
            "at": pa.array(
                [dt.datetime(2020, 1, 2, 3, 4, 5, 678000), None, dt.datetime(2020, 12, 31, 23, 59, 59)],
                pa.timestamp("us"),
            ),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    got = read_columns(open_input(MIXED_SPEC, path=tmp_path / "t.parquet"))
    assert same(got["n/1"], [1.0, NAN, 3.0])
    assert got["cat x"] == ["a", "", ""]
    assert got["flag"] == ["true", "", "false"]
    assert got["day"] == ["2021-02-03", "", "1999-12-31"]
    assert got["at"] == ["2020-01-02T03:04:05", "", "2020-12-31T23:59:59"]  # to the second
    # other types: a day as a timestamp, a time zone (the UTC instant, as training formats it), large strings
    table = pa.table(
        {
            "n/1": pa.array([0.5, float("nan")]),
            "cat x": pa.array(["b", "a"], pa.large_string()),
            "flag": pa.array([None, None], pa.null()),
            "day": pa.array([dt.datetime(2021, 2, 3), None], pa.timestamp("ms")),
            "at": pa.array([dt.datetime(2020, 1, 2, 3, 4, 5), None], pa.timestamp("s", tz="Europe/Paris")),
        }
    )
    pq.write_table(table, tmp_path / "u.parquet")
    got = read_columns(open_input(MIXED_SPEC, path=tmp_path / "u.parquet"))
    assert same(got["n/1"], [0.5, NAN]) and got["cat x"] == ["b", "a"] and got["flag"] == ["", ""]
    assert got["day"] == ["2021-02-03T00:00:00", ""] and got["at"] == [
        "2020-01-02T03:04:05",
        "",
    ]  # UTC, not Paris' 04:04:05


def test_per_column_json_lines_and_documents_take_absent_keys_and_nulls(tmp_path):
    rows = [
        {"n/1": 2, "cat x": "a", "flag": True, "day": "2021-02-03", "at": "2020-01-02T03:04:05", "other": [1]},
        {"cat x": None, "flag": False},
        {"n/1": None, "cat x": "b", "flag": None, "day": None, "at": None},
    ]
    want = {
        "n/1": [2.0, NAN, NAN],
        "cat x": ["a", "", "b"],
        "flag": ["true", "false", ""],
        "day": ["2021-02-03", "", ""],
        "at": ["2020-01-02T03:04:05", "", ""],
    }
    jsonl = "".join(json.dumps(r) + "\n" for r in rows)
    sources = [
        open_input(MIXED_SPEC, path=_write(tmp_path, "r.jsonl", jsonl)),
        open_input(MIXED_SPEC, path=_write(tmp_path, "r.json", json.dumps(rows))),
        open_input(MIXED_SPEC, stdin=io.StringIO(jsonl)),
        open_input(MIXED_SPEC, stdin=io.StringIO(json.dumps(rows)), fmt="json"),
    ]
    for source in sources:
        got = read_columns(source)
        assert all(same(got[k], v) for k, v in want.items()), (source.name, got)


def test_a_value_that_is_not_a_number_is_counted_once_per_column(tmp_path):
    csv = "n/1,cat x,flag,day,at\nabc,a,true,,\n1,a,true,,\n4y,a,true,,\nNA,a,true,,\n0x10,a,true,,\n"
    message = usage_error(tmp_path, "b.csv", csv, MIXED_SPEC)
    assert "b.csv: column 'n/1' has 3 values that are not numbers (the first, 'abc', at line 2)" in message
    assert "a missing number is imputed" in message
    two = InputSpec(2, NUM_ENC.features, encoding=NUM_ENC)
    message = usage_error(tmp_path, "c.csv", "a,b c/d\n1,x\ny,2\n3,z\n", two)
    assert "column 'a' has 1 value that is not a number (the first, 'y', at line 3)" in message
    assert "column 'b c/d' has 2 values that are not numbers (the first, 'x', at line 2)" in message
    rows = [{"n/1": 1}, {"n/1": "2"}, {"n/1": True}, {"n/1": None}]
    message = usage_error(tmp_path, "b.jsonl", "".join(json.dumps(r) + "\n" for r in rows), MIXED_SPEC)
    assert "column 'n/1' has 2 values that are not numbers (the first, '\"2\"', at line 2)" in message
    message = usage_error(tmp_path, "b.json", json.dumps(rows), MIXED_SPEC)
    assert "column 'n/1' has 2 values that are not numbers (the first, '\"2\"', at row 2)" in message


def test_a_per_column_model_needs_its_columns_by_name(tmp_path):
    message = usage_error(tmp_path, "h.csv", "1.5,a,true,2021-01-01,\n", MIXED_SPEC)
    assert "line 1 ('1.5,a,true,2021-01-01,') is not a header line: this model takes its columns by name" in message
    assert "n/1, cat x, flag, day, at" in message
    assert "takes its columns by name" in usage_error(tmp_path, "l.json", '[[1, "a", true, "", ""]]', MIXED_SPEC)
    np.save(tmp_path / "x.npy", np.zeros((1, 5)))
    for source in ({"path": tmp_path / "x.npy"}, {"pairs": ["1,a,true,,"]}):
        with pytest.raises(UsageError, match=r"this model takes its columns by name \(column 'cat x' is text\)"):
            open_input(MIXED_SPEC, **source)
    # a header that names the columns, in any order and with others, is enough
    got = read_columns(open_input(MIXED_SPEC, path=_write(tmp_path, "o.csv", "x,at,day,flag,cat x,n/1\n0,,,,b,7\n")))
    assert got["cat x"] == ["b"] and same(got["n/1"], [7.0])


def test_per_column_chunks_regroup_mappings_across_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "BLOCK_BYTES", 64)  # many small batches (the header's read, too)
    monkeypatch.setattr(T, "MAX_HEADER_BYTES", 64)
    lines = [f"{i},{'ab'[i % 2]},true,2021-01-{i % 28 + 1:02d}," for i in range(40)]
    path = _write(tmp_path, "m.csv", "n/1,cat x,flag,day,at\n" + "\n".join(lines) + "\n")
    source = open_input(MIXED_SPEC, path=path)
    assert len(list(source.batches())) > 3
    chunks = list(source.chunks(7))
    assert [len(c["n/1"]) for c in chunks] == [7] * 5 + [5]
    assert np.concatenate([c["n/1"] for c in chunks]).tolist() == list(range(40))
    assert np.concatenate([c["cat x"] for c in chunks]).tolist() == ["ab"[i % 2] for i in range(40)]


def test_per_column_reading_imports_neither_pandas_nor_torch(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"n/1": [1.0], "cat x": ["a"], "flag": [True], "day": ["2021-01-01"], "at": [None]}),
                   tmp_path / "t.parquet")  # fmt: skip
    code = (
        BLOCK_TORCH_AND_PANDAS + "from tests.test_inputs import MIXED_SPEC, read_columns\n"
        "from pipeline.serving.inputs import open_input\n"
        f"got = read_columns(open_input(MIXED_SPEC, path={str(tmp_path / 't.parquet')!r}))\n"
        "assert got['cat x'] == ['a'] and got['flag'] == ['true'], got\n"
        "assert 'pandas' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
