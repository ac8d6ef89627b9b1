"""Issue 23's "done when", end to end as a user runs it: a raw table (numbers with gaps, a text
category, true/false, a date, an id, a mostly empty column, rows with no target) goes `init` -> `all`
-> `predict` / `ship` / `serve` with no cleaning code, and a raw row with gaps and an unseen category
gets the same bits from `predict` (every input format), `serve` (REST and gRPC) and a plain
onnxruntime session on the shipped file."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest

from .conftest import run_cli

pytestmark = pytest.mark.slow

COLUMNS = ("size mm", "colour/shade", "indoor", "bought", "code", "weight")
NEW_ROWS = [  # a gap in every column that can have one, an unseen colour, a date that is not one
    {"size mm": 12.5, "colour/shade": "red", "indoor": "true", "bought": "2021-03-04", "code": 1.0, "weight": 3.0},
    {"size mm": None, "colour/shade": "ultraviolet", "indoor": "", "bought": "", "code": 2.0, "weight": None},
    {"size mm": 40.0, "colour/shade": "", "indoor": "False", "bought": "someday", "code": None, "weight": 1.5},
]


def _raw_table(path: Path, rows: int = 240) -> None:
    rng = np.random.default_rng(7)
    lines = ["id,size mm,colour/shade,indoor,bought,code,weight,mostly empty,label"]
    for i in range(rows):
        size = rng.uniform(0, 50)
        colour = ["red", "green", "blue"][i % 3]
        indoor = ["true", "false"][int(rng.integers(0, 2))]
        month = int(rng.integers(1, 13))
        label = "big" if size + (10 if colour == "red" else 0) + (5 if month > 6 else 0) > 30 else "small"
        fields = [
            f"item-{i}",
            "NA" if i % 9 == 0 else f"{size:.2f}",
            colour if i % 11 else "",
            indoor,
            f"2020-{month:02d}-{int(rng.integers(1, 29)):02d}" if i % 13 else "",
            str(int(rng.integers(0, 4))),
            f"{rng.uniform(1, 5):.2f}",
            "x" if i % 4 == 0 else "",
            "" if i % 37 == 5 else label,
        ]
        lines.append(",".join(fields))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    data = tmp / "shop.csv"
    _raw_table(data)
    r = run_cli("init", "--data", str(data), "--target", "label", "--out", str(tmp / "shop.toml"))
    assert r.returncode == 0, r.stderr
    art = tmp / "art"
    r = run_cli("all", "--recipe", str(tmp / "shop.toml"), "--artifacts-dir", str(art))
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("ship", "--recipe", str(tmp / "shop.toml"), "--artifacts-dir", str(art), "--out", str(tmp / "triton"))
    assert r.returncode == 0, r.stderr
    return tmp, r


def test_init_keeps_every_usable_column_and_says_why_it_left_out_the_rest(made):
    tmp, _ = made
    text = (tmp / "shop.toml").read_text()
    recipe = tomllib.loads(text)
    assert tuple(recipe["data"]["features"]) == COLUMNS
    assert "# left out id: text with 233 distinct values in 233 rows" in text  # the rows with a target
    assert "# left out mostly empty: missing in 174 of 233 rows (more than half)" in text
    manifest = json.loads((tmp / "art" / "shop" / "v1" / "manifest.json").read_text())
    assert manifest["schema"] == 5 and manifest["data"]["dropped_rows"] == 7
    kinds = {c["name"]: c["kind"] for c in manifest["model"]["encoding"]["columns"]}
    assert kinds == {
        "size mm": "number", "colour/shade": "category", "indoor": "category", "bought": "date",
        "code": "number", "weight": "number",
    }  # fmt: skip


def _session_outputs(model: Path) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feed = {}
    for i in s.get_inputs():
        values = [r[i.name] for r in NEW_ROWS]
        if i.type == "tensor(string)":
            feed[i.name] = np.array([["" if v is None else v] for v in values], dtype=object)
        else:
            feed[i.name] = np.array([[np.nan if v is None else v] for v in values], dtype=np.float32)
    return s.run(None, feed)[0]


def _write_inputs(tmp: Path) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv = tmp / "new.csv"
    lines = [",".join(f'"{c}"' for c in COLUMNS)]
    for r in NEW_ROWS:
        lines.append(",".join("" if r[c] is None else str(r[c]) for c in COLUMNS))
    csv.write_text("\n".join(lines) + "\n")
    jsonl = tmp / "new.jsonl"
    jsonl.write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in NEW_ROWS))
    doc = tmp / "new.json"
    doc.write_text(json.dumps(NEW_ROWS))
    parquet = tmp / "new.parquet"
    cols = {c: [r[c] for r in NEW_ROWS] for c in COLUMNS}
    table = pa.table({c: pa.array(v, pa.float64() if c in ("size mm", "code", "weight") else pa.string())
                      for c, v in cols.items()})  # fmt: skip
    pq.write_table(table, parquet)
    return {"csv": csv, "jsonl": jsonl, "json": doc, "parquet": parquet}


def test_a_raw_row_gets_the_same_bits_from_predict_serve_and_a_plain_session(made):
    import pyarrow.parquet as pq

    tmp, _ = made
    shipped = tmp / "triton" / "shop" / "1" / "model.onnx"
    want = _session_outputs(shipped)
    assert np.isfinite(want).all() and want.shape == (3, 1)
    for fmt, path in _write_inputs(tmp).items():
        out = tmp / f"pred-{fmt}.parquet"
        r = run_cli("predict", "--recipe", str(tmp / "shop.toml"), "--artifacts-dir", str(tmp / "art"),
                    "--input", str(path), "--output", str(out))  # fmt: skip
        assert r.returncode == 0, (fmt, r.stderr)
        got = pq.read_table(out).column("probability").to_numpy().astype(np.float32)
        assert got.tobytes() == want[:, 0].tobytes(), fmt

    tritonhttp = pytest.importorskip("tritonclient.http")
    tritongrpc = pytest.importorskip("tritonclient.grpc")
    from .test_serve import Server

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    server = Server(tmp / "art", env, log=tmp / "serve.log", names=("shop",))
    try:
        for client, mod in ((server.h, tritonhttp), (server.g, tritongrpc)):
            inputs = []
            for name in COLUMNS:
                values = [r[name] for r in NEW_ROWS]
                if name in ("colour/shade", "indoor", "bought"):
                    t = mod.InferInput(name, [3, 1], "BYTES")
                    t.set_data_from_numpy(np.array([["" if v is None else v] for v in values], dtype=object))
                else:
                    t = mod.InferInput(name, [3, 1], "FP32")
                    t.set_data_from_numpy(np.array([[np.nan if v is None else v] for v in values], np.float32))
                inputs.append(t)
            answer = client.infer("shop", inputs).as_numpy("probability")
            assert answer.tobytes() == want.tobytes(), mod.__name__
    finally:
        assert server.stop() == 0, server.text()


def test_sweep_and_bench_take_a_raw_table_recipe(made):
    tmp, _ = made
    r = run_cli("sweep", "--recipe", str(tmp / "shop.toml"), "--seeds", "4", "--steps", "30",
                "--artifacts-dir", str(tmp / "art"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (
        report["n_seeds"] == 4 and len(report["members"]) == 4 and report["widths"][0] == 14
    )  # 2 + 3 + 2 + 5 + 1 + 1 encoded columns
    r = run_cli("bench", "--recipe", str(tmp / "shop.toml"), "--quick", "--out", str(tmp / "bench.json"))
    assert r.returncode == 0, r.stderr
    recipe = json.loads((tmp / "bench.json").read_text())["recipe"]
    assert recipe["features"] == len(COLUMNS) and recipe["ort_rows_per_s"] > 0
    assert any("raw rows" in n for n in recipe["notes"])
