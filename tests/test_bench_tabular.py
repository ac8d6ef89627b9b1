"""`bench --tabular`: the harness (data sets found inside their packages, the held-out split carved first,
files written back as they came, a failing command in one line), the peer's half on real data, our half
once `init` reads raw tables, and `bench --tabular --quick` end to end. No timing assertions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline.bench import tabular as T
from tests.conftest import ROOT, run_cli

PENGUINS, CARS, SEATTLE = T.SOURCES


def _finite(*values: object) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def _failing_cli(tmp_path: Path) -> Path:
    """A stand-in for cli.py that fails the way ours does on a table it cannot read: notes, an error line,
    a note after it, exit 2."""
    fake = tmp_path / "failing_cli.py"
    fake.write_text(
        "import sys\n"
        "sys.stderr.write('note: left out columns that are not numbers: island\\n')\n"
        "sys.stderr.write(\"error: data file train.csv: line 5, column 'bill_length_mm' is missing ('NA')\\n\")\n"
        "sys.stderr.write('note: no CUDA driver on this machine\\n')\n"
        "sys.exit(2)\n"
    )
    return fake


def test_the_data_sets_ship_inside_their_packages():
    for source in T.SOURCES:
        path = T.locate(source)
        table = T.Table.read(path)
        assert path.is_file() and source.target in table.columns and len(table.rows) > 300
    assert T.Table.read(T.locate(CARS)).format == "json" and T.locate(PENGUINS).name == "penguins.csv"


def test_a_package_that_is_not_installed_is_named():
    missing = T.TableSource("x", "no_such_package_xorship", ("data", "x.csv"), "y", "multiclass")
    with pytest.raises(FileNotFoundError, match="pip install no_such_package_xorship"):
        T.locate(missing)


def test_truth_reads_missing_tokens_and_json_nulls():
    assert T.truth(["Adelie", "NA", "", " NA ", "Gentoo"], "multiclass") == ["Adelie", None, None, None, "Gentoo"]
    assert T.truth([18, None, 17.5, "NaN", float("nan")], "regression") == [18.0, None, 17.5, None, None]
    assert T.truth([True, 1], "binary") == ["True", "1"]


def test_the_test_split_is_carved_first_by_class_and_missing_targets_stay_in_training():
    target = ["a"] * 50 + ["b"] * 30 + ["c"] + [None] * 5
    train, test = T.split(target, "multiclass", 0)
    assert sorted(train + test) == list(range(len(target))) and not set(train) & set(test)
    assert [sum(target[i] == k for i in test) for k in "abc"] == [10, 6, 0]  # 20% per class; a lone row trains
    assert all(target[i] is not None for i in test) and {80, 81, 82, 83, 84, 85} <= set(train)
    assert T.split(target, "multiclass", 0) == (train, test) and T.split(target, "multiclass", 1)[1] != test
    values: list[str | float | None] = [float(i) for i in range(100)] + [None]
    train, test = T.split(values, "regression", 3)
    assert len(test) == 20 and 100 in train and test == sorted(test)


def test_files_are_written_back_as_they_came(tmp_path):
    penguins = T.Table.read(T.locate(PENGUINS))
    penguins.write(tmp_path / "train.csv", range(len(penguins.rows)))
    assert (tmp_path / "train.csv").read_bytes() == T.locate(PENGUINS).read_bytes()  # "NA" stays "NA"
    penguins.write(tmp_path / "test.csv", [3, 3, 0], drop="species")
    back = T.Table.read(tmp_path / "test.csv")
    assert "species" not in back.columns and back.rows[0] == back.rows[1] and "NA" in back.rows[0]
    cars = T.Table.read(T.locate(CARS))
    nulls = [i for i, row in enumerate(cars.rows) if row["Miles_per_Gallon"] is None]
    cars.write(tmp_path / "train.json", nulls)
    assert all(row["Miles_per_Gallon"] is None for row in json.loads((tmp_path / "train.json").read_text()))
    cars.write(tmp_path / "test.json", [0], drop="Miles_per_Gallon")
    assert json.loads((tmp_path / "test.json").read_text()) == [
        {k: v for k, v in cars.rows[0].items() if k != "Miles_per_Gallon"}
    ]


def test_the_metric_is_read_back_from_the_predictions_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"label": ["a", "b", "b", "a"]}), tmp_path / "c.parquet")
    assert T.score("multiclass", ["a", "b", "a", "a"], tmp_path / "c.parquet") == 0.75
    pq.write_table(pa.table({"value": [1.0, 3.0]}), tmp_path / "r.parquet")
    assert T.score("regression", [2.0, 2.0], tmp_path / "r.parquet") == 1.0
    with pytest.raises(ValueError, match="2 predictions for 3 rows"):
        T.score("regression", [2.0, 2.0, 2.0], tmp_path / "r.parquet")


def test_a_failing_command_is_one_line_with_its_stderr_last_error_line(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    result = T.run_ours(_failing_cli(tmp_path), work, PENGUINS, 0, ["Adelie"])
    assert result.error == (
        "python cli.py init --data train.csv --target species --out r.toml: error: data file train.csv: line 5,"
        " column 'bill_length_mm' is missing ('NA') (exit 2)"
    )
    assert result.metric is None and "\n" not in result.error


def test_the_peer_gets_our_recipes_network_and_budget():
    recipe = {"model": {"hidden": [8, 4], "activation": "tanh"}, "train": {"lr": 0.01, "steps": 100}}
    config, notes = T.peer_config(recipe, 275, 3)
    assert config == {"hidden_layer_sizes": [8, 4], "activation": "tanh", "solver": "adam",
                      "learning_rate_init": 0.01, "max_iter": 100, "batch_size": 275, "random_state": 3}  # fmt: skip
    recipe = {"model": {"activation": "gelu"}, "train": {"optimizer": "sgd", "steps": 2000, "batch_size": 256}}
    config, notes = T.peer_config(recipe, 1000, 0)
    assert (config["max_iter"], config["batch_size"], config["momentum"]) == (500, 256, 0.0)  # 4 steps an epoch
    assert config["hidden_layer_sizes"] == [32, 32] and "no gelu activation" in notes[0]


def test_the_peers_lines_are_counted_between_its_markers():
    lines = T.peer_lines()
    assert lines["lines"] > lines["dates"] > 0 and lines["fillna"] > 0 and lines["target"] > 0
    penguins = T.peer_lines(PENGUINS, dates=False)
    assert penguins["dates"] == penguins["target"] == 0
    assert penguins["lines"] == lines["lines"] - lines["dates"] - lines["target"]
    assert T.peer_lines(CARS, dates=True) == lines


def _peer_only(tmp_path: Path, source: T.TableSource) -> T.DatasetResult:
    """One split of one data set with our side failing at once (a stand-in cli): the peer's half."""
    root = tmp_path / "run"
    root.mkdir()
    return T.bench_dataset(_failing_cli(tmp_path), root, source, [0], infer_rows=3000, repeats=1)


def _check_peer(d: T.DatasetResult) -> T.SideSummary:
    peer = d.peer
    assert peer is not None and peer.error is None and peer.ok_splits == 1, peer
    assert _finite(peer.metric, peer.train_s, peer.wall_s, peer.infer_wall_rows_per_s)
    assert peer.infer_rows_per_s is None or _finite(peer.infer_rows_per_s)  # None: too few rows to tell
    assert peer.rows == peer.fit_rows and peer.rows is not None and peer.rows > 200
    assert "our init wrote no recipe: the peer used init's documented defaults" in peer.notes
    assert d.ours is not None and d.ours.ok_splits == 0 and d.ours.error is not None
    assert d.ours.error.startswith("python cli.py init --data train.")
    assert d.ratios["metric"] is None and d.test_rows > 60
    return peer


def test_the_peer_half_on_penguins(tmp_path):
    d = _peer_only(tmp_path, PENGUINS)
    peer = _check_peer(d)
    assert peer.metric is not None and peer.metric > 0.9  # accuracy; held-out penguins are easy
    assert peer.columns == 7 and "island" in peer.kept and "sex" in peer.kept
    assert peer.wrote.startswith(f"{T.peer_lines(PENGUINS, dates=False)['lines']} lines")
    report = T.TabularReport(True, 1, 3000, 1, T.peer_lines(), [d], ["n"])
    table = T.tabular_table(report)
    assert "ours  FAILED (1/1 splits): python cli.py init --data train.csv --target species" in table
    assert "peer  accuracy" in table and "a side has no figures" in table
    out = tmp_path / "tabular.json"
    from pipeline.bench.bench import write_results

    write_results(out, {"tabular": report.as_dict()})
    doc = json.loads(out.read_text())["tabular"]
    assert doc["datasets"][0]["peer"]["metric"] == peer.metric and doc["datasets"][0]["ratios"]["metric"] is None


@pytest.mark.slow
@pytest.mark.parametrize("source", [CARS, SEATTLE], ids=lambda s: s.name)
def test_the_peer_half_drops_ids_and_writes_dates_by_hand(tmp_path, source):
    peer = _check_peer(_peer_only(tmp_path, source))
    if source is CARS:
        assert peer.metric is not None and peer.metric < 6  # RMSE in miles per gallon (the spread is about 7.8)
        assert "Name" not in peer.kept and any("Name" in n for n in peer.notes) and "Origin" in peer.kept
        assert {"Year__year", "Year__month"} <= set(peer.kept) and peer.columns == 7
    else:
        assert peer.metric is not None and peer.metric > 0.5
        assert "date__month" in peer.kept and peer.columns == 5
    assert "dates" in peer.wrote and " 0 dates" not in peer.wrote


def test_tabular_goes_alone():
    r = run_cli("bench", "--tabular", "--scoring")
    assert r.returncode == 2 and "give one of --serve, --recipe, --scoring, --tabular or --tune" in r.stderr


@pytest.mark.slow
def test_our_half_on_raw_penguins(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    d = T.bench_dataset(ROOT / "cli.py", root, PENGUINS, [0], infer_rows=3000, repeats=1)
    ours = d.ours
    assert ours is not None and ours.error is None and ours.ok_splits == 1, ours
    assert _finite(ours.metric, ours.train_s, ours.wall_s, ours.infer_wall_rows_per_s, ours.rows, ours.columns)
    assert ours.infer_rows_per_s is None or _finite(ours.infer_rows_per_s)  # None: too few rows to tell
    assert ours.metric is not None and 0 <= ours.metric <= 1 and {"island", "sex"} <= set(ours.kept)  # text kept
    assert ours.fit_rows is not None and ours.rows is not None and 0 < ours.fit_rows < ours.rows
    assert _finite(d.ratios["metric"], d.ratios["train_s"], d.ratios["wall_s"])


@pytest.mark.slow
def test_bench_tabular_quick_writes_the_report(tmp_path):
    out = tmp_path / "tabular.json"
    r = run_cli("bench", "--tabular", "--quick", "--out", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())["tabular"]
    assert (doc["quick"], doc["splits"], doc["infer_rows"]) == (True, 1, T.QUICK_INFER_ROWS)
    assert [d["name"] for d in doc["datasets"]] == ["penguins", "cars", "seattle-weather"]
    for d in doc["datasets"]:
        assert d["error"] is None and d["metric"] == ("rmse" if d["name"] == "cars" else "accuracy")
        peer, ours = d["peer"], d["ours"]
        assert peer["ok_splits"] == 1 and _finite(peer["metric"], peer["train_s"], peer["infer_wall_rows_per_s"])
        if ours["ok_splits"] == 1:
            assert _finite(ours["metric"], ours["train_s"], ours["wall_s"], ours["infer_wall_rows_per_s"])
            assert _finite(d["ratios"]["metric"], d["ratios"]["train_s"]) and ours["columns"] > 0
        else:  # the failing command and its stderr's last line, on one line
            assert ours["error"].startswith("python cli.py ") and "\n" not in ours["error"]
            assert f"FAILED (1/1 splits): {ours['error']}" in r.stdout
    assert "ours/peer" in r.stdout and "what the user wrote" in r.stdout
