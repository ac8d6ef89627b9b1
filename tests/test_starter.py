"""pipeline.spec.starter (`init`): a starter recipe from a CSV file that loads back and trains on that file."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import UsageError
from pipeline.flow import init_recipe as write_starter
from pipeline.spec.archs import arch_for
from pipeline.spec.data import DataError, load_dataset
from pipeline.spec.recipe import DataSpec, load_recipe
from pipeline.spec.starter import max_rmse, min_accuracy, starter_name


def write_csv(path: Path, header: list[str], rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def iris_csv(tmp_path) -> Path:
    from sklearn.datasets import load_iris

    iris = load_iris()
    names = [n.replace(" (cm)", "").replace(" ", "_") for n in iris.feature_names]
    rows = [[*map(float, x), iris.target_names[t]] for x, t in zip(iris.data, iris.target)]
    return write_csv(tmp_path / "Iris.csv", [*names, "species"], rows)


def key_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"^[a-z_]+ = ", line)]


def test_iris_starter_loads_and_round_trips(iris_csv, tmp_path):
    out = tmp_path / "recipes" / "iris.toml"
    out.parent.mkdir()
    s = write_starter(iris_csv, "species", out=out)
    assert s.path == out and out.read_text(encoding="utf-8") == s.recipe_text
    assert s.name == "iris" and s.task == "multiclass"
    assert s.features == ("sepal_length", "sepal_width", "petal_length", "petal_width")
    assert s.classes == ("setosa", "versicolor", "virginica")
    assert "# classes: setosa, versicolor, virginica" in s.recipe_text
    lines = key_lines(s.recipe_text)
    assert len(lines) == 18 and all(" # " in line for line in lines), lines

    recipe = load_recipe(out)
    assert recipe.name == "iris"
    assert recipe.data == DataSpec(
        path="../Iris.csv",
        target="species",
        features=s.features,
        task="multiclass",
        validation_fraction=0.2,
        split_seed=0,
        standardize=True,
        categorical=(),
        impute="median",
    )
    assert recipe.model.hidden == (32, 32) and recipe.model.activation == "relu"
    assert (recipe.train.optimizer, recipe.train.lr, recipe.train.steps) == ("adam", 0.001, 300)
    assert (recipe.train.batch_size, recipe.train.seed) == (0, 0)
    assert recipe.gate.min_accuracy == 0.383 and recipe.gate.max_rmse is None
    recipe.check_gate("multiclass")

    ds = load_dataset(recipe)
    assert ds.source == str(iris_csv.resolve()) and ds.rows == 150 and ds.classes == s.classes
    assert len(ds.val_rows) == 30 and all((ds.y[ds.val_rows] == k).sum() == 10 for k in range(3))
    assert arch_for(recipe, ds.features, ds.classes, ds.task).widths == (4, 32, 32, 3)


def test_default_out_is_the_current_folder(tmp_path, monkeypatch):
    data = tmp_path / "data" / "My Sales Data (2024).csv"
    data.parent.mkdir()
    write_csv(data, ["units", "price", "sold"], [[i, i * 1.5, i % 2 == 0] for i in range(20)])
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    s = write_starter(data, "sold")
    assert s.name == "my-sales-data-2024" and s.path == work / "my-sales-data-2024.toml"
    assert s.task == "binary" and s.classes == (False, True)
    assert "# classes: false, true" in s.recipe_text
    recipe = load_recipe(s.path)
    assert recipe.data.path == "../data/My Sales Data (2024).csv"
    assert load_dataset(recipe).classes == (False, True)


@pytest.mark.parametrize(
    "file, name",
    [
        ("Iris Data (v2).csv", "iris-data-v2"),
        ("__x.csv", "x"),
        ("données.csv", "donnees"),
        ("!!!.csv", "model"),
        ("my.data.csv", "my-data"),
        ("a--b__c.csv", "a-b__c"),
        ("a - b.csv", "a-b"),
        ("X" * 100 + ".csv", "x" * 64),
        ("9lives.csv", "9lives"),
    ],
)
def test_starter_name(file, name):
    assert starter_name(Path("/some/where") / file) == name
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", starter_name(file))


def test_refuses_to_overwrite_without_force(iris_csv, tmp_path):
    out = tmp_path / "iris.toml"
    out.write_text("keep me")
    with pytest.raises(UsageError) as info:
        write_starter(iris_csv, "species", out=out)
    assert info.value.exit_code == 2 and "already exists" in str(info.value) and "--force" in str(info.value)
    assert out.read_text() == "keep me"
    write_starter(iris_csv, "species", out=out, force=True)
    assert load_recipe(out).data.target == "species"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Iris.csv", "iris.toml"]  # no temporaries left
    with pytest.raises(UsageError, match="is a folder"):
        write_starter(iris_csv, "species", out=tmp_path, force=True)
    with pytest.raises(UsageError, match="does not exist"):
        write_starter(iris_csv, "species", out=tmp_path / "nope" / "x.toml")


def test_data_errors_write_nothing(tmp_path):
    data = write_csv(tmp_path / "d.csv", ["a", "b", "label"], [[1, 2, "x"], [3, 4, "y"], [5, 6, "x"], [7, 8, "y"]])
    out = tmp_path / "d.toml"
    with pytest.raises(DataError, match="did you mean 'label'") as info:
        write_starter(data, "lable", out=out)
    assert info.value.exit_code == 2
    same = write_csv(tmp_path / "s.csv", ["a", "label"], [[1, "x"], [2, "x"], [3, "x"]])
    with pytest.raises(DataError, match="single value"):
        write_starter(same, "label", out=out)
    text = write_csv(tmp_path / "t.csv", ["name", "label"], [["bob", 0], ["al", 1], ["cy", 0], ["di", 1]])
    with pytest.raises(DataError, match=r"no column besides 'label' can be a feature \(name: text with 4 distinct"):
        write_starter(text, "label", out=out)
    with pytest.raises(DataError, match="does not exist"):
        write_starter(tmp_path / "missing.csv", "label", out=out)
    assert not out.exists()


def test_regression_gate_is_the_targets_std(tmp_path):
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    data = write_csv(tmp_path / "diabetes.csv", [*d.feature_names, "progression"], np.column_stack([d.data, d.target]))
    s = write_starter(data, "progression", out=tmp_path / "diabetes.toml")
    assert s.task == "regression" and s.classes == ()
    recipe = load_recipe(s.path)
    std = float(np.std(d.target.astype(np.float32), dtype=np.float64))
    assert recipe.gate.max_rmse == max_rmse(std) >= std and recipe.gate.min_accuracy is None
    assert recipe.gate.max_rmse == 77.01
    assert "# classes" not in s.recipe_text and "the features and the target" in s.recipe_text
    ds = load_dataset(recipe)
    assert ds.task == "regression" and ds.target_std is not None


@pytest.mark.parametrize(
    "std, expected",
    [(76.97034208, 76.98), (0.1, 0.1), (1234.0, 1234.0), (12345.1, 12350.0), (0.000123456, 0.0001235), (2.0, 2.0)],
)
def test_max_rmse_rounds_up_to_4_significant_digits(std, expected):
    assert max_rmse(std) == expected


@pytest.mark.parametrize(
    "majority, expected",
    [(0.5, 0.55), (1 / 3, 0.383), (0.35, 0.4), (0.97, 1.0), (0.951, 1.0), (0.6666, 0.716), (0.9, 0.95)],
)
def test_min_accuracy_is_majority_plus_margin_rounded_down(majority, expected):
    assert min_accuracy(majority) == expected


def test_constant_features_are_left_out(tmp_path):
    rows = [[i, 7, i % 3, "ab"[i % 2]] for i in range(30)]
    data = write_csv(tmp_path / "c.csv", ["a", "const", "b", "label"], rows)
    s = write_starter(data, "label", out=tmp_path / "c.toml")
    assert s.features == ("a", "b")
    assert "# left out const: constant on the training rows" in s.recipe_text
    assert load_dataset(load_recipe(s.path)).features == ("a", "b")
    flat = write_csv(tmp_path / "f.csv", ["a", "label"], [[1, "x"], [1, "y"], [1, "x"], [1, "y"]])
    with pytest.raises(DataError, match="every feature is constant"):
        write_starter(flat, "label", out=tmp_path / "f.toml")


def test_odd_column_names_and_long_feature_lists(tmp_path):
    names = ['say "hi"', "back\\slash", "naïve", "with,comma"] + [f"feature_number_{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    rows = [[*rng.integers(0, 100, len(names)).tolist(), "ab"[i % 2]] for i in range(40)]
    data = write_csv(tmp_path / "odd.csv", [*names, "class label"], rows)
    s = write_starter(data, "class label", out=tmp_path / "odd.toml")
    recipe = load_recipe(s.path)
    assert recipe.data.features == tuple(names) and recipe.data.target == "class label"
    assert "features = [" in s.recipe_text and len(s.recipe_text.splitlines()) > 30  # wrapped
    assert all(" # " in line for line in key_lines(s.recipe_text))
    assert load_dataset(recipe).features == tuple(names)


def test_large_data_uses_minibatches(tmp_path):
    rows = [[i, i % 7, i % 2] for i in range(10_000)]
    data = write_csv(tmp_path / "big.csv", ["a", "b", "y"], rows)
    s = write_starter(data, "y", out=tmp_path / "big.toml")
    assert load_recipe(s.path).train.batch_size == 256
    assert load_recipe(s.path).gate.min_accuracy == 0.55


def test_text_columns_are_left_out_and_named(tmp_path):
    rows = [[i, f"id{i}", i % 2 * 10 + i * 0.1, i % 2] for i in range(12)]
    data = write_csv(tmp_path / "t.csv", ["a", "name", "b", "label"], rows)
    st = write_starter(data, "label", out=tmp_path / "t.toml")
    assert st.features == ("a", "b") and [n for n, _ in st.left_out] == ["name"]
    assert "# left out name: text with 12 distinct values in 12 rows (an id, a name or free text)" in st.recipe_text
    assert load_recipe(st.path).data.features == ("a", "b")


def test_init_keeps_text_categories_dates_and_gappy_numbers_and_writes_every_rule(tmp_path):
    """The rules `init` applies: text with at most min(50, 10% of rows) values is a category, an ISO
    date a date, a number with gaps a number (filled in the graph), a column missing in more than half
    its rows is left out; each is written into the recipe with a comment, and the recipe trains."""
    rows = [
        [i * 0.5 if i % 7 else "NA", ["red", "green", "blue"][i % 3], f"2020-{i % 12 + 1:02d}-{i % 28 + 1:02d}",
         "" if i % 3 else i, i % 2]
        for i in range(60)
    ]  # fmt: skip
    data = write_csv(tmp_path / "t.csv", ["gappy", "colour", "when", "sparse", "label"], rows)
    st = write_starter(data, "label", out=tmp_path / "t.toml")
    assert st.features == ("gappy", "colour", "when")
    assert dict(st.kinds) == {"gappy": "number", "colour": "category", "when": "date"}
    assert dict(st.left_out) == {"sparse": "missing in 40 of 60 rows (more than half)"}
    text = st.recipe_text
    assert "# category: colour" in text and "# date: when" in text and "# number: gappy" in text
    assert "# left out sparse: missing in 40 of 60 rows (more than half)" in text
    assert "categorical = []" in text and 'impute = "median"' in text and "min(50, 10% of the rows)" in text
    ds = load_dataset(load_recipe(st.path))
    assert ds.encoded_names[:4] == ("gappy", "gappy (missing)", "colour=blue", "colour=green")
    assert ds.encoded_names[-4:] == ("when.year", "when.month", "when.day", "when.weekday")
    # A user's recipe names numeric codes as categories: one-hot over the codes instead of one number.
    recipe = load_recipe(st.path)
    from dataclasses import replace

    coded = write_csv(tmp_path / "c.csv", ["code", "a", "label"], [[i % 4, i, i % 2] for i in range(40)])
    spec = replace(recipe.data, path=str(coded), features=("code", "a"), categorical=("code",))
    ds = load_dataset(replace(recipe, data=spec))
    assert ds.encoded_names == ("code=0", "code=1", "code=2", "code=3", "a")


def test_init_never_writes_over_its_data_and_never_takes_a_builtin_name(tmp_path, monkeypatch):
    rows = [[i, i * 0.5, i % 2] for i in range(12)]
    data = write_csv(tmp_path / "shallow.csv", ["a", "b", "label"], rows)
    with pytest.raises(UsageError, match="is the data file itself"):
        write_starter(data, "label", out=data, force=True)
    monkeypatch.chdir(tmp_path)
    st = write_starter(data, "label")
    assert st.name == "shallow-data" and st.path.name == "shallow-data.toml"


def test_a_numeric_column_with_a_typo_is_an_error_not_a_dropped_feature(tmp_path):
    rows = [[i if i != 7 else "1.5x", i % 2] for i in range(20)]
    data = write_csv(tmp_path / "t.csv", ["a", "label"], rows)
    with pytest.raises(DataError, match=r"line 9, column 'a': '1.5x' is not a number"):
        write_starter(data, "label", out=tmp_path / "t.toml")


# ---------------------------------------------------------------------------------------------
# Integrity, round 3: every column type pyarrow infers, names that break one-line formats


def test_init_leaves_out_every_column_type_that_is_not_a_number_yet_naming_it(tmp_path):
    rows = [
        [i, i * 0.5, f"2020-01-{i + 1:02d}", f"12:{i:02d}:00", f"2020-01-01 10:{i:02d}:00",
         f"2020-01-01T00:{i:02d}:00Z", "true" if i % 2 else "false", "", f"id{i}", i % 2]
        for i in range(20)
    ]  # fmt: skip
    header = ["a", "b", "day", "clock", "stamp", "utc", "flag", "empty", "name", "label"]
    data = write_csv(tmp_path / "t.csv", header, rows)
    st = write_starter(data, "label", out=tmp_path / "t.toml")
    assert st.features == ("a", "b", "day", "stamp", "utc", "flag")
    assert dict(st.kinds) == {
        "a": "number", "b": "number", "day": "date", "stamp": "timestamp", "utc": "timestamp",
        "flag": "category (true/false)",
    }  # fmt: skip
    left = dict(st.left_out)
    assert set(left) == {"clock", "empty", "name"}
    assert left["clock"].startswith("its type time32") and left["empty"] == "empty in every row"
    assert left["name"].startswith("text with 20 distinct values")
    ds = load_dataset(load_recipe(st.path))  # and it trains on what is left
    assert ds.features == st.features and "stamp.hour" in ds.encoded_names and "flag=true" in ds.encoded_names


def test_init_on_a_date_target_or_dates_only_is_one_line(tmp_path):
    data = write_csv(tmp_path / "d.csv", ["day", "y"], [[f"12:{i:02d}:00", i % 2] for i in range(10)])
    with pytest.raises(DataError, match="no column besides 'y' can be a feature") as info:
        write_starter(data, "y", out=tmp_path / "d.toml")
    assert "day: its type time32" in str(info.value)
    data = write_csv(tmp_path / "d.csv", ["day", "y"], [[f"2020-01-{i + 1:02d}", i % 2] for i in range(10)])
    assert write_starter(data, "y", out=tmp_path / "d.toml", force=True).features == ("day",)
    data = write_csv(tmp_path / "t.csv", ["a", "day"], [[i, f"2020-01-{i + 1:02d}"] for i in range(10)])
    with pytest.raises(DataError, match="holds date32"):
        write_starter(data, "day", out=tmp_path / "t.toml")


def test_init_refuses_a_column_name_with_a_line_break_naming_it(tmp_path):
    data = write_csv(tmp_path / "t.csv", ["a", "b\nc", "y"], [[i, i * 2, i % 2] for i in range(12)])
    with pytest.raises(DataError, match=r"column 2's name 'b\\nc' holds a line break") as info:
        write_starter(data, "y", out=tmp_path / "t.toml")
    assert "\n" not in str(info.value) and not (tmp_path / "t.toml").exists()


def test_a_name_that_needs_escaping_round_trips_from_init_through_the_recorded_recipe(tmp_path):
    from pipeline.spec.recipe import recipe_from_record

    names = ['quote"d', "back\\slash", "space and / slash", "ünïcode", "a=b # c"]
    rows = [[i * (k + 1) + 0.5 * (i % 3) for k in range(len(names))] + [i % 2] for i in range(20)]
    data = write_csv(tmp_path / "t.csv", [*names, "y"], rows)
    st = write_starter(data, "y", out=tmp_path / "t.toml")
    recipe = load_recipe(st.path)
    assert recipe.data.features == tuple(names)
    assert recipe_from_record(recipe.as_dict(), "manifest").data.features == tuple(names)


def test_init_never_takes_a_builtins_serving_name_either(tmp_path, monkeypatch):
    rows = [[i, i * 0.5, i % 2] for i in range(12)]
    data = write_csv(tmp_path / "xor_shallow.csv", ["a", "b", "label"], rows)
    monkeypatch.chdir(tmp_path)
    st = write_starter(data, "label")
    assert st.name == "xor_shallow-data" and load_recipe(st.path).serving == "xor_shallow_data"


def test_left_out_names_with_control_characters_are_shown_escaped_and_a_header_only_file_is_named(tmp_path):
    from typer.testing import CliRunner

    import cli

    rows = [[i, i * 0.5, f"t{i}", i % 2] for i in range(20)]
    data = write_csv(tmp_path / "t.csv", ["a", "b", "no\x1bte", "label"], rows)
    r = CliRunner().invoke(
        cli.app, ["init", "--data", str(data), "--target", "label", "--out", str(tmp_path / "t.toml")]
    )
    assert r.exit_code == 0 and "no\\x1bte" in r.output and "\x1b" not in r.output
    head = tmp_path / "h.csv"
    head.write_text("a,b,y\n")
    with pytest.raises(DataError, match="has a header row but no data rows"):
        write_starter(head, "y", out=tmp_path / "h.toml")


def test_init_reads_parquet_and_json_lines_as_it_reads_csv(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"a": i * 0.5, "b": i % 7, "name": f"id{i}", "label": i % 2} for i in range(40)]
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), tmp_path / "t.parquet")
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("t.parquet", "t.jsonl"):
        st = write_starter(tmp_path / name, "label", out=tmp_path / f"{name}.toml")
        assert st.features == ("a", "b") and [n for n, _ in st.left_out] == ["name"] and st.task == "binary"
        assert load_dataset(load_recipe(st.path)).features == ("a", "b")


def test_init_leaves_out_a_parquet_text_column_that_looks_numeric(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 40
    pq.write_table(pa.table({"zip": [f"{i:05d}" for i in range(n)], "a": [i * 0.5 for i in range(n)],
                             "label": [i % 2 for i in range(n)]}), tmp_path / "t.parquet")  # fmt: skip
    st = write_starter(tmp_path / "t.parquet", "label", out=tmp_path / "t.toml")
    assert st.features == ("a",) and [n for n, _ in st.left_out] == ["zip"]
