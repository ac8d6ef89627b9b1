"""Raw tables at their edges (found by a red team): time zones, pandas' categories, stray values in a
date column, codes float32 cannot hold, column names the graph uses, misspelt JSON keys."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.spec.data import DataError, load_dataset
from pipeline.spec.recipe import DataSpec, Gate, ModelSpec, Recipe, TrainSpec

from .conftest import run_cli


def _recipe(path: Path, target: str = "y", **data) -> Recipe:
    spec = DataSpec(path=path.name, target=target, validation_fraction=0.0, **data)
    return Recipe("t", ModelSpec(), spec, TrainSpec(), Gate(min_accuracy=0.5), source=path.parent / "t.toml")


def test_timestamps_with_an_offset_are_read_in_utc_in_training_as_in_the_graph(tmp_path):
    stamps = [
        "2022-09-30T06:00:00+02:00",
        "2022-09-30T23:30:00-05:00",
        "2022-01-01T00:30:00+01:00",
        "2022-06-01T12:00Z",
    ]
    (tmp_path / "d.csv").write_text("when,y\n" + "".join(f"{s},{i % 2}\n" for i, s in enumerate(stamps)))
    ds = load_dataset(_recipe(tmp_path / "d.csv"))
    utc = [dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(dt.UTC) for s in stamps]
    want = [[u.year, u.month, u.day, u.weekday(), u.hour] for u in utc]
    assert ds.x.tolist() == want
    # The file's own text, fed to the encoding (as predict and a client feed the graph), gives the same.
    assert ds.encoding.encode({"when": np.array(stamps, dtype=object)}).tolist() == want


def test_a_zoned_parquet_timestamp_is_trained_in_utc(tmp_path):
    at = [dt.datetime(2022, 3, 26, 23, 30, tzinfo=dt.UTC) + dt.timedelta(hours=7 * i) for i in range(6)]
    col = pa.array(at, pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us", tz="Europe/Paris"))
    pq.write_table(pa.table({"when": col, "y": [0, 1] * 3}), tmp_path / "d.parquet")
    ds = load_dataset(_recipe(tmp_path / "d.parquet"))
    assert ds.x[:, [2, 4]].tolist() == [[a.day, a.hour] for a in at]  # UTC, not Paris wall-clock time


def test_pandas_categories_and_mostly_dates_and_codes(tmp_path):
    colour = pa.array(["red", "blue", None, "red"] * 3).dictionary_encode()
    pq.write_table(pa.table({"colour": colour, "y": [0, 1] * 6}), tmp_path / "c.parquet")
    ds = load_dataset(_recipe(tmp_path / "c.parquet"))
    assert ds.encoded_names == ("colour=blue", "colour=red")

    days = [f"2021-{m:02d}-{d:02d}" for m in range(1, 13) for d in (1, 15)] * 2
    days[3], days[30] = "unknown", "31/12/2020"
    (tmp_path / "d.csv").write_text("day,y\n" + "".join(f"{v},{i % 2}\n" for i, v in enumerate(days)))
    notes: list[str] = []
    ds = load_dataset(_recipe(tmp_path / "d.csv"), on_notice=notes.append)
    assert ds.encoding.column("day").kind == "date" and ds.encoding.column("day").indicator
    assert notes == [
        "column 'day': 2 of 48 values are not dates ('unknown', ...): they are missing values, filled and flagged"
        " like the others"
    ]

    (tmp_path / "k.csv").write_text("code,y\n5,0\n16777216,1\n16777217,0\n5,1\n")
    with pytest.raises(DataError, match="category code 16777217.0, which float32"):
        load_dataset(_recipe(tmp_path / "k.csv", categorical=("code",)))


def test_a_column_named_as_the_output_or_the_encoded_tensor_is_refused_before_training(tmp_path):
    for name, what in (("probability", "the model's output"), ("xorship_encoded", "the encoded tensor")):
        (tmp_path / "d.csv").write_text(f"{name},kind,y\n1,a,0\n2,b,1\n3,a,0\n4,b,1\n")
        with pytest.raises(DataError, match=f"feature '{name}' has the name of {what}"):
            load_dataset(_recipe(tmp_path / "d.csv"))


@pytest.fixture(scope="module")
def odd_names(tmp_path_factory):
    """A model whose columns are named as the exporter names its tensors, and as the encoding would."""
    tmp = tmp_path_factory.mktemp("names")
    rng = np.random.default_rng(0)
    lines = ["linear,relu,enc/nan_6,net/x,kind,label"]
    for i in range(80):
        a, b = rng.normal(size=2)
        lines.append(f"{a:.3f},{b:.3f},{'' if i % 7 == 0 else f'{a + b:.3f}'},{i},{'pq'[i % 2]},{int(a + b > 0)}")
    (tmp / "d.csv").write_text("\n".join(lines) + "\n")
    r = run_cli("init", "--data", str(tmp / "d.csv"), "--target", "label", "--out", str(tmp / "d.toml"))
    assert r.returncode == 0, r.stderr
    r = run_cli("all", "--recipe", str(tmp / "d.toml"), "--artifacts-dir", str(tmp / "art"), "--steps", "50")
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp


def test_columns_named_like_the_graphs_own_tensors_export_verify_and_predict(odd_names):
    import onnxruntime as ort

    tmp = odd_names
    model = next((tmp / "art").glob("*/v1/model.onnx"))
    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    assert [i.name for i in s.get_inputs()] == ["linear", "relu", "enc/nan_6", "net/x", "kind"]
    rows = [{"linear": 0.5, "relu": -1.0, "enc/nan_6": None, "net/x": 3, "kind": "q"}]
    (tmp / "new.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp / "p.parquet"
    r = run_cli("predict", "--recipe", str(tmp / "d.toml"), "--artifacts-dir", str(tmp / "art"),
                "--input", str(tmp / "new.jsonl"), "--output", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    feed = {
        "linear": np.array([[0.5]], np.float32), "relu": np.array([[-1.0]], np.float32),
        "enc/nan_6": np.array([[np.nan]], np.float32), "net/x": np.array([[3.0]], np.float32),
        "kind": np.array([["q"]], dtype=object),
    }  # fmt: skip
    want = s.run(None, feed)[0][:, 0]
    assert pq.read_table(out).column("probability").to_numpy().astype(np.float32).tobytes() == want.tobytes()


def test_a_json_key_no_row_names_is_refused_naming_the_closest_but_a_null_is_a_missing_value(odd_names):
    tmp = odd_names
    (tmp / "typo.jsonl").write_text(json.dumps({"linear": 1, "relu": 2, "enc/nan_6": 3, "net/x": 4, "knd": "p"}) + "\n")
    r = run_cli("predict", "--recipe", str(tmp / "d.toml"), "--artifacts-dir", str(tmp / "art"),
                "--input", str(tmp / "typo.jsonl"))  # fmt: skip
    assert r.returncode == 2 and "no row names feature 'kind' (closest: 'knd')" in r.stderr, r.stderr
    (tmp / "null.jsonl").write_text(
        json.dumps({"linear": 1, "relu": 2, "enc/nan_6": None, "net/x": 4, "kind": None}) + "\n"
    )
    r = run_cli("predict", "--recipe", str(tmp / "d.toml"), "--artifacts-dir", str(tmp / "art"),
                "--input", str(tmp / "null.jsonl"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    # A Parquet column pandas wrote as type null (every value None) is a column of missing numbers.
    pq.write_table(
        pa.table({"linear": [1.0], "relu": [2.0], "enc/nan_6": pa.nulls(1), "net/x": [4], "kind": ["p"]}),
        tmp / "nulls.parquet",
    )
    r = run_cli("predict", "--recipe", str(tmp / "d.toml"), "--artifacts-dir", str(tmp / "art"),
                "--input", str(tmp / "nulls.parquet"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
