"""pipeline.spec.data: reading, checking, splitting and summarizing a recipe's CSV (and the built-in XOR)."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.errors import UsageError
from pipeline.spec.archs import XOR_X, XOR_Y
from pipeline.spec.data import DataError, Dataset, infer_task, load_dataset, read_columns, split_rows
from pipeline.spec.recipe import DataSpec, Gate, ModelSpec, Recipe, TrainSpec, builtin_recipe

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def recipe(path: Path, target: str = "y", **data) -> Recipe:
    spec = DataSpec(path=path.name, target=target, **data)
    return Recipe("t", ModelSpec(), spec, TrainSpec(), Gate(min_accuracy=0.5), source=path.parent / "t.toml")


def load(tmp_path: Path, text: str | bytes, target: str = "y", on_progress=None, on_notice=None, **data) -> Dataset:
    return load_dataset(recipe(write(tmp_path, text), target, **data), on_progress, on_notice)


def fails(tmp_path: Path, text: str | bytes, target: str = "y", **data) -> str:
    """The one-line message of the DataError that loading raises (exit 2, names the file)."""
    with pytest.raises(DataError) as info:
        load(tmp_path, text, target, **data)
    msg = str(info.value)
    assert info.value.exit_code == 2 and isinstance(info.value, UsageError)
    assert "\n" not in msg and "data.csv" in msg, msg
    return msg


def csv_of(columns: dict[str, list]) -> str:
    names = list(columns)
    rows = zip(*columns.values())
    return ",".join(names) + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows)


# ---------------------------------------------------------------------------------------------
# Built-in XOR


def test_builtin_xor():
    ds = load_dataset(builtin_recipe("shallow"))
    assert ds.source == "builtin:xor" and ds.sha256 is None
    assert ds.features == ("x1", "x2") and ds.target == "y" and ds.task == "binary" and ds.classes == (0, 1)
    np.testing.assert_array_equal(ds.x, np.asarray(XOR_X, np.float32))
    np.testing.assert_array_equal(ds.y, np.asarray(XOR_Y))
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.train_rows, [0, 1, 2, 3])
    np.testing.assert_array_equal(ds.val_rows, [0, 1, 2, 3])
    assert ds.stats.mean == (0.5, 0.5) and ds.stats.std == (0.5, 0.5)
    assert ds.stats.min == (0.0, 0.0) and ds.stats.max == (1.0, 1.0)
    assert ds.target_mean is None and ds.target_std is None
    rec = json.loads(json.dumps(ds.record()))
    assert rec["source"] == "builtin:xor" and rec["rows"] == 4 and rec["train_rows"] == 4 and rec["val_rows"] == 4
    assert rec["classes"] == [0, 1] and rec["stats"]["mean"] == [0.5, 0.5]


# ---------------------------------------------------------------------------------------------
# The happy path


def test_binary_csv_record_sha_and_types(tmp_path):
    text = "a,b,y\n" + "".join(f"{i},{i * 0.5},{i % 2}\n" for i in range(20))
    messages: list[str] = []
    ds = load(tmp_path, text, on_progress=messages.append)
    path = tmp_path / "data.csv"
    assert ds.source == str(path.resolve())
    assert ds.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert ds.features == ("a", "b") and ds.target == "y" and ds.task == "binary" and ds.classes == (0, 1)
    assert all(type(c) is int for c in ds.classes)
    assert ds.x.dtype == np.float32 and ds.x.shape == (20, 2) and ds.x.flags.c_contiguous
    assert ds.y.dtype == np.int64 and ds.rows == 20
    np.testing.assert_array_equal(ds.x[:, 1], np.arange(20) * 0.5)
    assert ds.train_rows.dtype == np.int64 and ds.val_rows.dtype == np.int64
    assert len(ds.x_train) == 16 and len(ds.y_val) == 4 and len(ds.x_val) == 4 and len(ds.y_train) == 16
    assert ds.seconds >= 0
    rec = json.loads(json.dumps(ds.record()))
    assert set(rec) == {
        "source",
        "sha256",
        "rows",
        "train_rows",
        "val_rows",
        "features",
        "target",
        "task",
        "classes",
        "stats",
        "target_mean",
        "target_std",
        "dropped_rows",
        "encoding",
    }
    assert rec["train_rows"] == 16 and rec["val_rows"] == 4 and rec["features"] == ["a", "b"]
    assert set(rec["stats"]) == {"mean", "std", "min", "max"}
    assert any("reading data.csv" in m for m in messages)


def test_listed_features_in_order_and_other_columns_ignored(tmp_path):
    text = "id,a,b,c,y\n" + "".join(f"row{i},{i},{2 * i},{3 * i},{i % 2}\n" for i in range(10))
    ds = load(tmp_path, text, features=("c", "a"))
    assert ds.features == ("c", "a")
    np.testing.assert_array_equal(ds.x, np.stack([3 * np.arange(10), np.arange(10)], axis=1))


def test_a_true_false_feature_is_a_category_and_odd_numbers_are_not_numbers(tmp_path):
    """One rule for what a number is, in training and predict alike: true/false is a category (one-hot
    over false, true), never the numbers 1 and 0; `0x10` and non-ASCII digits are not numbers."""
    ds = load(tmp_path, "flag,v,y\ntrue,1,0\nfalse,2,1\nTrue,3,0\nFalse,4,1\n", validation_fraction=0.0)
    assert ds.encoded_names == ("flag=false", "flag=true", "v")
    assert ds.x[:, :2].tolist() == [[0, 1], [1, 0], [0, 1], [1, 0]]
    for field in ("0x10", "1_000", "\u0661"):
        assert f"line 3, column 'v': {field!r} is not a number" in fails(tmp_path, f"v,y\n1,0\n{field},1\n")


def test_bom_quoted_fields_and_crlf(tmp_path):
    text = '\ufeff"x,1","say ""hi""",y\r\n"1.5",2,"a, b"\r\n2.5,3,"c ""d"""\r\n3.5,4,"a, b"\r\n4.5,5,"c ""d"""\r\n'
    ds = load(tmp_path, text, validation_fraction=0.0)
    assert ds.features == ("x,1", 'say "hi"')
    assert ds.classes == ("a, b", 'c "d"')
    np.testing.assert_array_equal(ds.x[:, 0], [1.5, 2.5, 3.5, 4.5])
    np.testing.assert_array_equal(ds.y, [0, 1, 0, 1])


def test_quoted_line_breaks_and_line_numbers(tmp_path):
    text = 'a,note,y\n1,"two\nlines",0\n2,x,1\n3,"more\nlines\nhere",0\n4,y,1\n'
    ds = load(tmp_path, text, features=("a",), validation_fraction=0.0)
    np.testing.assert_array_equal(ds.x[:, 0], [1, 2, 3, 4])
    bad = 'a,note,y\n1,"two\nlines",0\n2,x,1\n3,"more\nlines\nhere",0\nzz,y,1\n'
    msg = fails(tmp_path, bad, features=("a",), validation_fraction=0.0)
    assert "line 8, column 'a': 'zz' is not a number" in msg


def test_many_blocks(tmp_path):
    """Over pyarrow's 1 MB blocks: columns arrive in many chunks."""
    rng = np.random.default_rng(1)
    n = 60_000
    a = rng.integers(-1000, 1000, n)
    b = np.round(rng.standard_normal(n), 4)
    labels = np.array(["cat", "dog", "emu"])[rng.integers(0, 3, n)]
    text = "a,b,label\n" + "".join(f"{i},{f},{s}\n" for i, f, s in zip(a, b, labels))
    ds = load(tmp_path, text, target="label")
    assert ds.task == "multiclass" and ds.classes == ("cat", "dog", "emu")
    np.testing.assert_array_equal(ds.x[:, 0], a.astype(np.float32))
    np.testing.assert_array_equal(ds.x[:, 1], b.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(ds.classes)[ds.y], labels)


def test_stats_match_numpy(tmp_path):
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(3.0, 2.0, size=(500, 3)), 5)
    y = rng.normal(10, 4, 500).round(4)
    text = "p,q,r,t\n" + "".join(f"{a},{b},{c},{d}\n" for (a, b, c), d in zip(x, y))
    ds = load(tmp_path, text, target="t", validation_fraction=0.25, split_seed=3)
    assert ds.task == "regression" and ds.classes == () and ds.y.dtype == np.float32
    xt = ds.x[ds.train_rows].astype(np.float64)
    np.testing.assert_allclose(ds.stats.mean, xt.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(ds.stats.std, xt.std(axis=0), rtol=1e-10)
    assert ds.stats.min == tuple(xt.min(axis=0)) and ds.stats.max == tuple(xt.max(axis=0))
    assert all(type(v) is float for v in ds.stats.mean + ds.stats.std + ds.stats.min + ds.stats.max)
    yt = ds.y[ds.train_rows].astype(np.float64)
    assert ds.target_mean == pytest.approx(yt.mean(), rel=1e-12)
    assert ds.target_std == pytest.approx(yt.std(), rel=1e-12)
    assert type(ds.target_mean) is float and type(ds.target_std) is float
    assert len(ds.val_rows) == 125


def test_no_pandas_import(tmp_path):
    """pyarrow's to_numpy imports pandas (half a second); the reader avoids it."""
    path = write(tmp_path, "a,b,y\n1,2,x\n3,4,z\n5,6,x\n7,8,z\n")
    code = (
        "import sys; from pipeline.spec.data import read_columns; "
        f"c = read_columns({str(path)!r}, 'y'); assert c.classes == ('x', 'z'); print('pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# Tasks and classes


@pytest.mark.parametrize(
    "values, task",
    [
        (["true", "false", "true", "false"], "binary"),
        (["no", "yes", "no", "yes"], "binary"),
        (["a", "b", "c", "a", "b", "c"], "multiclass"),
        (["3", "7", "3", "7"], "binary"),
        ([str(i % 3) for i in range(6)], "multiclass"),
        ([str(i) for i in range(20)] * 2, "multiclass"),
        ([str(i) for i in range(21)] * 2, "regression"),
        (["0.0", "1.0", "1.0", "0.0"], "binary"),
        (["0", "1.0", "1", "0"], "binary"),
        (["0.5", "1.5", "0.5", "1.5"], "regression"),
        (["0.0", "1.0", "2.0", "0.0", "1.0", "2.0"], "regression"),
        (["-1", "1", "-1", "1"], "binary"),
    ],
)
def test_task_inference(tmp_path, values, task):
    text = "a,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values))
    assert load(tmp_path, text).task == task


def test_infer_task_on_arrays():
    assert infer_task(pa.array([True, False, None])) == "binary"
    assert infer_task(pa.chunked_array([pa.array(["a", "b"]), pa.array(["c"])])) == "multiclass"
    assert infer_task(pa.array(list(range(25)))) == "regression"
    assert infer_task(pa.array([0.0, 1.0, 1.0])) == "binary"
    with pytest.raises(DataError, match="single value"):
        infer_task(pa.array([2, 2, 2]))
    with pytest.raises(DataError, match="date32"):
        infer_task(pa.array([datetime.date(2020, 1, 1)] * 2))


def test_class_order_and_types(tmp_path):
    ds = load(tmp_path, "a,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate([10, 9, 100, 9, 10, 100])))
    assert ds.classes == (9, 10, 100) and all(type(c) is int for c in ds.classes)
    np.testing.assert_array_equal(ds.y, [1, 0, 2, 0, 1, 2])
    ds = load(tmp_path, "a,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate("b a C b a C".split())))
    assert ds.classes == ("C", "a", "b")
    np.testing.assert_array_equal(ds.y, [2, 1, 0, 2, 1, 0])
    ds = load(tmp_path, "a,y\n1,true\n2,false\n3,TRUE\n4,False\n")
    assert ds.classes == (False, True) and all(type(c) is bool for c in ds.classes)
    np.testing.assert_array_equal(ds.y, [1, 0, 1, 0])
    ds = load(tmp_path, "a,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate([2.0, 1.0, 3.0] * 2)), task="multiclass")
    assert ds.classes == (1.0, 2.0, 3.0) and all(type(c) is float for c in ds.classes)
    assert json.dumps(ds.record()["classes"]) == "[1.0, 2.0, 3.0]"


def test_explicit_tasks(tmp_path):
    three = "a,y\n" + "".join(f"{i},{'abc'[i % 3]}\n" for i in range(9))
    msg = fails(tmp_path, three, task="binary")
    assert "'y'" in msg and "3 distinct values" in msg and "binary" in msg
    ds = load(tmp_path, "a,y\n1,p\n2,q\n3,p\n4,q\n", task="multiclass")
    assert ds.task == "multiclass" and ds.classes == ("p", "q")
    msg = fails(tmp_path, "a,y\n1,1.0\n2,2.0\n3,2.5\n4,1.0\n5,2.0\n6,3.0\n", task="multiclass")
    assert "non-integer" in msg and "2.5 at line 4" in msg
    msg = fails(tmp_path, "a,y\n1,p\n2,q\n3,r\n", task="regression")
    assert "line 2, column 'y': 'p' is not a number" in msg
    msg = fails(tmp_path, "a,y\n1,true\n2,false\n3,true\n", task="regression")
    assert "true/false" in msg
    ds = load(tmp_path, "a,y\n1,3\n2,4\n3,3\n4,5\n", task="regression")
    assert ds.task == "regression" and ds.y.dtype == np.float32 and ds.classes == ()
    ds = load(tmp_path, "a,y\n1,0.5\n2,2\n3,0.5\n4,2\n", task="binary")
    assert ds.classes == (0.5, 2.0)


# ---------------------------------------------------------------------------------------------
# Errors


def test_missing_file_and_folder(tmp_path):
    r = recipe(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"nope\.csv does not exist") as info:
        load_dataset(r)
    assert info.value.exit_code == 2
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match="is not a file"):
        load_dataset(recipe(tmp_path / "folder.csv"))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    p = write(tmp_path, "a,y\n1,0\n2,1\n")
    p.chmod(0)
    try:
        with pytest.raises(DataError, match="not readable"):
            load_dataset(recipe(p))
    finally:
        p.chmod(0o644)


def test_read_error_is_a_data_error(tmp_path, monkeypatch):
    import pipeline.spec.data as data

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    path = write(tmp_path, "a,y\n1,0\n2,1\n")
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: denied() if self == path else real_open(self, *a, **k))
    with pytest.raises(DataError, match=r"not readable \(Permission denied\)"):
        data.read_columns(path, "y")


def test_empty_headerless_and_no_rows(tmp_path):
    assert "is empty" in fails(tmp_path, "")
    assert "no input rows (only blank lines)" in fails(tmp_path, "\n\n")
    assert "no header row" in fails(tmp_path, "1,2,3\n4,5,6\n")
    assert "no header row" in fails(tmp_path, "0.5,-2,1e3\n")
    assert "no data rows" in fails(tmp_path, "a,b,y\n")


def test_duplicate_columns(tmp_path):
    msg = fails(tmp_path, "a,b,a,y\n1,2,3,0\n")
    assert "'a'" in msg and "twice" in msg and "columns 1 and 3" in msg


def test_missing_target_or_feature_suggests(tmp_path):
    msg = fails(tmp_path, "sepal_len,species\n1,a\n", target="specie")
    assert "no column 'specie'" in msg and "did you mean 'species'" in msg
    msg = fails(tmp_path, "sepal_len,species\n1,a\n", target="species", features=("sepal_lenght",))
    assert "no column 'sepal_lenght'" in msg and "feature" in msg and "did you mean 'sepal_len'" in msg
    msg = fails(tmp_path, "a,b\n1,2\n", target="zzzzz")
    assert "its columns: 'a', 'b'" in msg


def test_unnamed_column_and_separator_hint(tmp_path):
    msg = fails(tmp_path, ",a,y\n0,1,0\n1,2,1\n")
    assert "column 1 has no name" in msg
    msg = fails(tmp_path, "a;b;y\n1;2;0\n")
    assert "only commas" in msg
    msg = fails(tmp_path, "a,y\n1,2\n3\n")
    assert "line 3 has 1 fields, expected 2" in msg


def test_non_numeric_feature_names_column_row_and_value(tmp_path):
    msg = fails(tmp_path, "a,b,y\n1,2,0\n3,4,1\n5,oops,0\n6,bad,1\n")
    assert "line 4, column 'b': 'oops' is not a number" in msg
    msg = fails(tmp_path, "a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,oops,1\n8,x,0\n9,y,1\n")  # once, with a count
    assert "line 5, column 'b': 'oops' is not a number; 3 values of this number column are not numbers" in msg
    msg = fails(tmp_path, b"a,b,y\n1,2,0\n3,\xe9t\xe9,1\n")
    assert "line 3, column 'b' is not UTF-8 text" in msg
    assert "UTF-8" in fails(tmp_path, b"a,\xe9,y\n1,2,0\n")


def test_missing_features_are_imputed_with_the_training_median_and_flagged(tmp_path):
    text = "a,b,y\n1,2,0\n3,,1\n5,NA,0\n7,10,1\n9,4,0\n11,6,1\n"
    ds = load(tmp_path, text, validation_fraction=0.0)
    assert ds.encoded_names == ("a", "b", "b (missing)")  # 'a' had no gap: no indicator
    col = ds.encoding.column("b")
    assert col.impute == (float(np.median([2, 10, 4, 6])),) and col.indicator
    assert ds.x[:, 1].tolist() == [2, 5, 5, 10, 4, 6] and ds.x[:, 2].tolist() == [0, 1, 1, 0, 0, 0]
    mean = load(tmp_path, text, validation_fraction=0.0, impute="mean").encoding.column("b")
    assert mean.impute == (float(np.float32(np.mean([2, 10, 4, 6]))),)
    # The fill value comes from the training split only: the validation rows' values never enter it.
    ds = load(tmp_path, "a,b,y\n" + "".join(f"{i},{'' if i % 5 == 0 else i * 10},{i % 2}\n" for i in range(40)))
    train_b = ds.raw[1].values[ds.train_rows]
    assert ds.encoding.column("b").impute == (float(np.float32(np.nanmedian(train_b))),)
    # A column missing in every training row cannot be filled: one line naming it.
    assert "column 'b' is empty in every row" in fails(tmp_path, "a,b,y\n1,,0\n3,,1\n5,,0\n7,,1\n")
    assert "column 'b' is missing in every training row" in fails(
        tmp_path, "a,b,y\n1,,0\n3,,1\n5,,0\n7,,1\n9,2,0\n11,3,1\n"
    )


def test_rows_with_a_missing_target_are_left_out_and_counted(tmp_path):
    notes: list[str] = []
    ds = load(tmp_path, "a,y\n1,0\n2,\n3,1\n4,NA\n5,0\n6,1\n", validation_fraction=0.0, on_notice=notes.append)
    assert ds.rows == 4 and ds.dropped_rows == 2 and ds.record()["dropped_rows"] == 2
    assert notes == ["2 rows left out: their target 'y' is missing"]
    ds = load(tmp_path, "a,y\n1,cat\n2,NA\n3,dog\n4, \n5,cat\n6,dog\n", validation_fraction=0.0)
    assert ds.classes == ("cat", "dog") and ds.dropped_rows == 2  # a text target: the same missing rule
    assert "the target 'y' is missing in every row" in fails(tmp_path, "a,y\n1,\n2,NA\n")
    # Messages still place a row by its line in the file after rows were left out.
    msg = fails(tmp_path, "a,b,y\n1,2,\n1,2,0\n3,4,1\n5,6,0\n7,inf,1\n")
    assert "line 6, column 'b': 'inf' is not finite" in msg


def test_non_finite_and_float32_range(tmp_path):
    msg = fails(tmp_path, "a,b,y\n1,2,0\n3,inf,1\n")
    assert "line 3, column 'b': 'inf' is not finite" in msg
    msg = fails(tmp_path, "a,b,y\n1,2,0\n3,4,1\n5,NAN,0\n")  # not a missing-value token (those are exact)
    assert "line 4, column 'b': 'NAN' is not finite" in msg
    msg = fails(tmp_path, "a,b,y\n1,2,0\n3,-1e39,1\n")
    assert "line 3, column 'b': '-1e39' is beyond float32's range" in msg
    msg = fails(tmp_path, "a,y\n1,1.5\n2,2.5\n3,1e40\n", task="regression")
    assert "line 4, column 'y': '1e40' is beyond float32's range" in msg
    msg = fails(tmp_path, "a,y\n1,1.5\n2,-inf\n3,2.5\n")
    assert "line 3, column 'y': '-inf' is not finite" in msg


def test_constant_feature(tmp_path):
    text = "a,c,y\n1,5,0\n2,5,1\n3,5,0\n4,5,1\n"
    msg = fails(tmp_path, text)
    assert "feature 'c'" in msg and "constant" in msg and "standardize = false" in msg
    ds = load(tmp_path, text, standardize=False)
    assert ds.stats.std[1] == 0.0
    # A date part that never changes (one year) is not an error: it passes through (std 1).
    rows = "d,a,y\n" + "".join(f"2020-0{i % 9 + 1}-1{i % 9},{i},{i % 2}\n" for i in range(8))
    ds = load(tmp_path, rows, validation_fraction=0.0)
    assert ds.encoded_names[0] == "d.year" and ds.stats.std[0] == 1.0 and ds.stats.mean[0] == 2020.0


def test_single_value_target_and_too_few_rows(tmp_path):
    msg = fails(tmp_path, "a,y\n1,cat\n2,cat\n3,cat\n")
    assert "target 'y'" in msg and "single value ('cat')" in msg
    assert "single value" in fails(tmp_path, "a,y\n1,2.5\n2,2.5\n", task="regression")
    msg = fails(tmp_path, "a,y\n1,a\n2,b\n3,c\n4,a\n5,b\n")
    assert "5 rows are too few for 3 classes" in msg and "(6)" in msg


def test_regression_target_constant_on_training_rows(tmp_path):
    y = np.array([1.0] * 9 + [5.0])
    seed = next(s for s in range(1000) if 9 in split_rows(y, "regression", 0.1, s)[1])
    text = "a,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(y))
    msg = fails(tmp_path, text, validation_fraction=0.1, split_seed=seed)
    assert "target 'y'" in msg and "constant" in msg and "training rows" in msg


def test_first_bad_row_is_reported(tmp_path):
    text = "a,b,y\n" + "".join(f"{i},{'x' if i in (40, 70) else i},{i % 2}\n" for i in range(100))
    assert "line 42, column 'b': 'x' is not a number" in fails(tmp_path, text)


def test_blank_lines_are_skipped_and_counted(tmp_path):
    msg = fails(tmp_path, "a,b,y\n\n1,2,0\n\n3,x,1\n")
    assert "line 5, column 'b': 'x' is not a number" in msg


# ---------------------------------------------------------------------------------------------
# The split


def test_single_row_class_stays_in_training(tmp_path):
    labels = ["a"] * 5 + ["b"] * 5 + ["c"]
    text = "v,y\n" + "".join(f"{i},{s}\n" for i, s in enumerate(labels))
    notes: list[str] = []
    ds = load(tmp_path, text, on_notice=notes.append)
    assert 10 in ds.train_rows and 10 not in ds.val_rows
    assert any("'c'" in n and "single row" in n for n in notes)


def test_stratified_split():
    y = np.repeat(np.arange(3), [100, 37, 8])
    rng = np.random.default_rng(5)
    y = y[rng.permutation(len(y))]
    train, val = split_rows(y, "multiclass", 0.2, 7, 3)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert not set(train) & set(val) and len(train) + len(val) == len(y)
    for k, n in enumerate([100, 37, 8]):
        assert (y[val] == k).sum() == round(0.2 * n)
        assert (y[train] == k).sum() == n - round(0.2 * n)
    again = split_rows(y, "multiclass", 0.2, 7, 3)
    np.testing.assert_array_equal(again[1], val)
    other = split_rows(y, "multiclass", 0.2, 8, 3)
    assert not np.array_equal(other[1], val)


def test_split_bounds():
    y = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    train, val = split_rows(y, "binary", 0.01, 0, 2)  # round(0.02) = 0, but each class gives one
    assert (y[val] == 0).sum() == 1 and (y[val] == 1).sum() == 1
    train, val = split_rows(np.array([0, 0, 1, 1]), "binary", 0.9, 0, 2)  # at most n - 1 per class
    assert sorted(y[:4][train].tolist()) == [0, 1] or len(train) == 2
    train, val = split_rows(np.array([1.0, 2.0], np.float32), "regression", 0.1, 0)
    assert len(train) == 1 and len(val) == 1
    train, val = split_rows(np.array([1.0, 2.0, 3.0], np.float32), "regression", 0.9, 0)
    assert len(train) == 1 and len(val) == 2
    y = np.arange(1000, dtype=np.float32)
    train, val = split_rows(y, "regression", 0.25, 3)
    assert len(val) == 250 and len(train) == 750 and not set(train) & set(val)
    train, val = split_rows(y, "regression", 0.0, 3)
    assert train is val or np.array_equal(train, val)
    np.testing.assert_array_equal(train, np.arange(1000))


def test_fraction_zero_uses_every_row(tmp_path):
    ds = load(tmp_path, "a,y\n1,0\n2,1\n3,0\n4,1\n", validation_fraction=0.0)
    np.testing.assert_array_equal(ds.train_rows, np.arange(4))
    np.testing.assert_array_equal(ds.val_rows, np.arange(4))
    assert ds.x_train is ds.x and ds.y_val is ds.y


def test_split_from_a_recipe_is_seeded(tmp_path):
    text = "a,y\n" + "".join(f"{i},{'pq'[i % 2]}\n" for i in range(40))
    one = load(tmp_path, text, split_seed=11)
    two = load(tmp_path, text, split_seed=11)
    three = load(tmp_path, text, split_seed=12)
    np.testing.assert_array_equal(one.val_rows, two.val_rows)
    assert not np.array_equal(one.val_rows, three.val_rows)
    assert set(one.y[one.val_rows]) == {0, 1} and set(one.y[one.train_rows]) == {0, 1}
    np.testing.assert_array_equal(one.x_val[:, 0], one.val_rows)


def test_read_columns_rejects_target_as_feature(tmp_path):
    p = write(tmp_path, "a,y\n1,0\n2,1\n")
    with pytest.raises(DataError, match="also listed as a feature"):
        read_columns(p, "y", ["a", "y"])


def test_a_class_name_with_a_line_break_is_refused(tmp_path):
    text = "v,y\n" + "".join(f'{i},"{s}"\n' for i, s in enumerate(["a", "b\nc"] * 4))
    message = fails(tmp_path, text)
    assert "line break" in message and "'b\\nc'" in message


# ---------------------------------------------------------------------------------------------
# Integrity, round 3: values float32 arithmetic cannot hold, names that break one-line formats


@pytest.mark.parametrize("big", ["3.4e38", "-3.4e38", "5e37"])
def test_a_feature_whose_statistics_overflow_float32_is_refused_naming_it(tmp_path, big):
    rows = {"a": [float(i) for i in range(8)], "wide": [0.5] * 7 + [big], "y": [0, 1] * 4}
    msg = fails(tmp_path, csv_of(rows), validation_fraction=0.0)
    assert "feature 'wide'" in msg and "float32" in msg and "rescale" in msg


@pytest.mark.parametrize("big", ["1e30", "1e37", "-2e37"])
def test_a_wide_but_representable_feature_is_kept(tmp_path, big):
    rows = {"a": [float(i) for i in range(8)], "wide": [0.5] * 7 + [big], "y": [0, 1] * 4}
    ds = load(tmp_path, csv_of(rows), validation_fraction=0.0)
    assert ds.features == ("a", "wide")


def test_a_regression_target_whose_statistics_overflow_float32_is_refused(tmp_path):
    rows = {"a": [float(i) for i in range(8)], "y": [1.0] * 7 + ["3e38"]}
    msg = fails(tmp_path, csv_of(rows), task="regression", validation_fraction=0.0)
    assert "target 'y'" in msg and "float32" in msg


@pytest.mark.parametrize("name", ["a\nb", "tab\tname", "c1\x85x", "u\u2028v", "del\x7f"])
def test_a_header_name_with_a_control_character_is_refused_naming_its_column(tmp_path, name):
    quoted = '"' + name + '"'
    msg = fails(tmp_path, f"k,{quoted},y\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(8)))
    assert "column 2's name" in msg and ("line break" in msg or "control character" in msg)


@pytest.mark.parametrize(
    "values,kind,names",
    [
        (["2020-01-0" + str(i % 9 + 1) for i in range(8)], "date", ("odd.year", "odd.month", "odd.day", "odd.weekday")),
        ([f"2020/01/0{i + 1}" for i in range(8)], "date", ("odd.year", "odd.month", "odd.day", "odd.weekday")),
        (
            [f"2020-01-01 1{i}:00:00" for i in range(8)],
            "timestamp",
            ("odd.year", "odd.month", "odd.day", "odd.weekday", "odd.hour"),
        ),
        (
            [f"2020-01-0{i + 1}T00:00:00Z" for i in range(8)],
            "date",
            ("odd.year", "odd.month", "odd.day", "odd.weekday"),
        ),
        (["yes", "no"] * 4, "category", ("odd=no", "odd=yes")),
        (["true", "false"] * 4, "category", ("odd=false", "odd=true")),
        ([str(i) for i in range(8)], "number", ("odd",)),
    ],
)
def test_every_type_pyarrow_infers_in_a_csv_has_a_rule(tmp_path, values, kind, names):
    rows = {"a": [float(i) for i in range(8)], "odd": values, "y": [0, 1] * 4}
    ds = load(tmp_path, csv_of(rows), validation_fraction=0.0)
    assert ds.encoding.column("odd").kind == kind and ds.encoded_names[1:] == names


@pytest.mark.parametrize(
    "values,expect",
    [([f"12:3{i}:00" for i in range(8)], "holds time32[s] values"), ([""] * 8, "is empty in every row")],
)
def test_columns_of_other_types_are_refused_as_features_with_one_line(tmp_path, values, expect):
    rows = {"a": [float(i) for i in range(8)], "odd": values, "y": [0, 1] * 4}
    with pytest.raises(DataError) as info:
        load(tmp_path, csv_of(rows))
    msg = str(info.value)
    assert "column 'odd'" in msg and "\n" not in msg and expect in msg


def test_decimal_and_large_string_columns_are_one_line_errors_not_crashes(tmp_path):
    """Types a CSV does not infer but other tables carry (decimals, large strings): a feature of such a
    type is refused with one line naming it, never an internal error."""
    import decimal

    from pipeline.spec.data import _Locator, _raw_column, open_data

    table = pa.table(
        {
            "dec": pa.array([decimal.Decimal("1.5"), decimal.Decimal("2.5")], pa.decimal128(5, 2)),
            "big": pa.array(["a", "b"], pa.large_string()),
            "date": pa.array([datetime.date(2020, 1, 1), datetime.date(2020, 1, 2)]),
            "ts": pa.array([datetime.datetime(2020, 1, 1, 5), None], pa.timestamp("s", tz="UTC")),
            "dur": pa.array([datetime.timedelta(1), datetime.timedelta(2)]),
        }
    )
    (tmp_path / "t.csv").write_text("dec,big,date,ts,dur\n1,2,3,4,5\n")
    loc = _Locator(open_data(tmp_path / "t.csv"))
    got = {n: _raw_column(table.column(n), n, False, loc) for n in ("dec", "big", "date", "ts")}
    assert got["dec"].kind == "number" and got["dec"].values.tolist() == [1.5, 2.5]
    assert got["big"].kind == "category" and got["date"].kind == "date"
    assert got["date"].values.tolist() == ["2020-01-01", "2020-01-02"]
    assert got["ts"].kind == "timestamp" and got["ts"].values.tolist() == ["2020-01-01T05:00:00", None]
    with pytest.raises(DataError, match="column 'dur'") as info:
        _raw_column(table.column("dur"), "dur", False, loc)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# One reader: Parquet, JSON Lines and JSON documents train as the same CSV does; one missing rule


def _same_dataset(a: Dataset, b: Dataset) -> None:
    assert (a.features, a.target, a.task, a.classes) == (b.features, b.target, b.task, b.classes)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.train_rows, b.train_rows)


def test_parquet_json_lines_and_json_train_like_the_csv(tmp_path):
    rng = np.random.default_rng(4)
    n = 300
    a, b = rng.normal(size=n), rng.integers(-5, 5, n)
    y = np.where(a + b > 0, "yes", "no")
    text = "a,b,y\n" + "".join(f"{float(u)!r},{int(v)},{w}\n" for u, v, w in zip(a, b, y))
    from_csv = load(tmp_path, text)
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": a, "b": pa.array(b, pa.int32()), "y": list(y)}), tmp_path / "data.parquet")
    rows = [{"y": str(w), "a": float(u), "b": int(v)} for u, v, w in zip(a, b, y)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "data.json").write_text(json.dumps(rows))
    for name in ("data.parquet", "data.jsonl", "data.json"):
        spec = DataSpec(path=name, target="y", features=("a", "b"))
        r = Recipe("t", ModelSpec(), spec, TrainSpec(), Gate(min_accuracy=0.5), source=tmp_path / "t.toml")
        _same_dataset(load_dataset(r), from_csv)


def test_other_formats_name_rows_and_lines_in_their_errors(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1.0, None, 3.0, 4.0], "y": [0, 1, 0, 1]}), tmp_path / "data.parquet")
    pq.write_table(pa.table({"a": [True, False, True, False], "y": [0, 1, 0, 1]}), tmp_path / "bool.parquet")
    assert (
        read_columns(tmp_path / "data.parquet", "y").raw[0].values[1]
        != read_columns(tmp_path / "data.parquet", "y").raw[0].values[1]
    )  # NaN: missing
    assert read_columns(tmp_path / "bool.parquet", "y").raw[0].boolean
    (tmp_path / "data.jsonl").write_text('{"a": 1, "y": 0}\n{"a": 2, "y": 1}\n\n{"a": "x", "y": 1}\n{"a": 3, "y": 0}\n')
    (tmp_path / "rows.json").write_text("[[1, 0], [2, 1]]")
    for name, expect in [
        ("data.jsonl", "line 4, column 'a': the string 'x' is not int64 as on the first rows"),
        ("rows.json", "holds lists of numbers, not row objects naming their columns"),
    ]:
        with pytest.raises(DataError, match=re.escape(expect)):
            read_columns(tmp_path / name, "y")
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    with pytest.raises(DataError, match="a .npy array has no column names"):
        read_columns(tmp_path / "x.npy", "y")


def test_the_recipe_chooses_what_missing_means(tmp_path):
    text = "a,country,y\n" + "".join(f"{i},{['NA', 'FR', 'DE'][i % 3]},{i % 2}\n" for i in range(12))
    # By default "NA" is a missing value, also in a text column: those rows are left out of training ...
    assert load(tmp_path, text, target="country").dropped_rows == 4
    # ... and a recipe where it is Namibia says which fields are missing instead.
    ds = load(tmp_path, text, target="country", missing=("", "?"))
    assert ds.classes == ("DE", "FR", "NA")
    ds = load(tmp_path, "a,y\n1,0\n?,1\n2,0\n3,1\n", missing=("?",), validation_fraction=0.0)
    assert ds.encoded_names == ("a", "a (missing)") and ds.x[1].tolist() == [2, 1]
    msg = fails(tmp_path, "a,y\n1,0\nNA,1\n2,0\n3,1\n", missing=("?",))
    assert "line 3, column 'a': 'NA' is not a number" in msg


def test_training_and_predict_read_alike_where_they_once_differed(tmp_path):
    # A header whose names look like numbers is a header in training (it needs one).
    ds = load(tmp_path, "a,2020,y\n1,2,0\n2,3,1\n3,4,0\n4,5,1\n", validation_fraction=0.0)
    assert ds.features == ("a", "2020")
    # Old Mac line endings: refused, as predict refuses them.
    assert "carriage return" in fails(tmp_path, "a,y\r1,0\r2,1\r3,0\r4,1\r")
    # JSON Lines whose first row lacks a key: the key is a column (its first value is missing).
    (tmp_path / "data.jsonl").write_text(
        '{"a": 1, "y": 0}\n{"a": 2, "b": 3, "y": 1}\n{"a": 3, "y": 0}\n{"a": 4, "y": 1}\n'
    )
    b = read_columns(tmp_path / "data.jsonl", "y").raw[1]
    assert b.name == "b" and np.isnan(b.values[0]) and b.values[1] == 3 and np.isnan(b.values[3])
