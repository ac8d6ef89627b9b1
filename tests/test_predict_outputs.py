"""predict's data files out (pipeline.serving.outputs): every format reads back through pandas (and
pyarrow) with the right columns, types and row count, the numbers are the model's float32 outputs bit for
bit, carried columns come through as written, and conflicting or impossible requests are exit 2 before
any work. A bad row leaves no output file; stdout gets nothing until every row is checked.

The models are test_predict_recipes' untrained recipe models (binary, multi-class, regression)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.serving import outputs as O
from pipeline.serving import predict as P
from pipeline.serving.inputs import InputSpec, open_input
from tests.conftest import invoke_cli, run_cli
from tests.test_predict_recipes import BINARY, FLAG, MULTI, REGRESSION, make_model

EXTENSIONS = {"csv": ".csv", "csv.gz": ".csv.gz", "parquet": ".parquet", "jsonl": ".jsonl", "json": ".json"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    for i, arch in enumerate((MULTI, BINARY, FLAG, REGRESSION)):
        make_model(root, arch, seed=i)
    return root


def model_path(root: Path, arch) -> Path:
    return root / arch.name / "v1" / "model.onnx"


def input_rows(arch, n: int = 257, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A frame with an `id` (text that looks like a number: leading zeros must survive), a `note` (commas,
    quotes, a line break, non-ASCII) and the features in reverse order; and x in model order."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, arch.n_inputs)).astype(np.float32)
    frame = pd.DataFrame({"id": [f"{i:05d}" for i in range(n)]})
    frame["note"] = [["a, b", 'say "hi"', "two\nlines", "café", ""][i % 5] for i in range(n)]
    for j in reversed(range(arch.n_inputs)):
        frame[arch.features[j]] = x[:, j].astype(np.float64)
    return frame, x


def expected(root: Path, arch, x: np.ndarray) -> tuple[np.ndarray, list]:
    """The model's float32 outputs and labels, through the library (an independent path from the writers)."""
    p = P.Predictor(P.resolve_model(root, arch.name, None), "cpu")
    out = p.outputs(x).astype(np.float32)
    labels = [arch.classes[i] for i in p.label_indices(out.astype(np.float64))] if arch.is_classifier else []
    return out, labels


def output_columns(arch) -> list[str]:
    if arch.task == "regression":
        return ["value"]
    if arch.task == "binary":
        return ["label", "probability"]
    return ["label", *[f"p_{c}" for c in arch.classes]]


def read_back(path: Path, fmt: str) -> pd.DataFrame:
    if fmt in ("csv", "csv.gz"):
        return pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "jsonl":
        return pd.read_json(path, lines=True, dtype={"id": str})
    doc = json.loads(path.read_text())
    return pd.DataFrame(doc["predictions"])


@pytest.mark.parametrize("arch", [BINARY, MULTI, REGRESSION, FLAG], ids=lambda a: a.name)
@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet", "jsonl", "json"])
def test_every_format_reads_back_through_pandas_with_exact_outputs(models, tmp_path, arch, fmt):
    frame, x = input_rows(arch)
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / f"scores{EXTENSIONS[fmt]}"
    r = invoke_cli("predict", "--model", str(model_path(models, arch)), "--input", str(source), "--carry", "id,note",
                   "--output", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = read_back(out, fmt)
    assert len(got) == len(frame)
    want_out, want_labels = expected(models, arch, x)
    if fmt == "json":
        assert list(got.columns[:2]) == ["id", "note"]
        key = {"binary": "probability", "multiclass": "probabilities", "regression": "value"}[arch.task]
        values = np.array([list(v.values()) if isinstance(v, dict) else [v] for v in got[key]])
        np.testing.assert_array_equal(np.asarray(got["x"].tolist(), dtype=np.float32), x)
    else:
        assert list(got.columns) == ["id", "note", *output_columns(arch)]
        values = got[[c for c in output_columns(arch) if c != "label"]].to_numpy()
    # Exact: the written decimal (or float32) reads back to the model's float32 output, bit for bit.
    np.testing.assert_array_equal(values.astype(np.float32), want_out)
    assert got["id"].tolist() == frame["id"].tolist()
    assert got["note"].tolist() == frame["note"].tolist()
    if arch.is_classifier:
        assert got["label"].tolist() == want_labels
    if fmt == "csv.gz":
        assert gzip.open(out).read(3) == b"id,"


def test_parquet_is_typed_and_names_the_model(models, tmp_path):
    frame, _ = input_rows(FLAG, 10)
    frame["n"] = np.arange(10, dtype=np.int64)
    frame.to_parquet(tmp_path / "in.parquet")
    out = tmp_path / "s.parquet"
    r = invoke_cli("predict", "--model", str(model_path(models, FLAG)), "--input", str(tmp_path / "in.parquet"),
                   "--carry", "n", "--carry", "id", "--output", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    table = pq.read_table(out)
    assert table.schema.field("n").type == pa.int64()  # carried with its type
    assert table.schema.field("label").type == pa.bool_()  # the label with its type from the data
    assert table.schema.field("probability").type == pa.float32()
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items() if k.startswith(b"xorship.")}
    manifest = json.loads((models / FLAG.name / "v1" / "manifest.json").read_text())
    assert meta["xorship.model"] == FLAG.name and meta["xorship.version"] == "1"
    assert meta["xorship.sha256"] == manifest["files"]["model.onnx"]["sha256"]
    assert pq.ParquetFile(out).metadata.row_group(0).column(0).compression == "SNAPPY"


def test_multiclass_labels_keep_their_type_in_every_format(models, tmp_path):
    frame, _ = input_rows(MULTI, 20)
    frame.to_csv(tmp_path / "in.csv", index=False)
    for fmt in ("parquet", "jsonl", "csv"):
        out = tmp_path / f"s{EXTENSIONS[fmt]}"
        r = invoke_cli("predict", "--model", str(model_path(models, MULTI)), "--input", str(tmp_path / "in.csv"),
                       "--output", str(out))  # fmt: skip
        assert r.returncode == 0, r.stderr
        got = read_back(out, fmt)
        assert set(got["label"].tolist()) <= {0, 2, 5} and str(got["label"].dtype).startswith("int"), fmt


def test_format_overrides_the_extension_and_json_is_the_document_on_stdout(models, tmp_path):
    frame, x = input_rows(BINARY, 5)
    frame.to_csv(tmp_path / "in.csv", index=False)
    model = str(model_path(models, BINARY))
    r = invoke_cli("predict", "--model", model, "--input", str(tmp_path / "in.csv"), "--format", "jsonl",
                   "--output", str(tmp_path / "s.txt"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "s.txt").read_text().splitlines()]
    assert len(rows) == 5 and set(rows[0]) == {"label", "probability"}
    r = invoke_cli("predict", "--model", model, "--input", str(tmp_path / "in.csv"), "--format", "csv")
    assert r.returncode == 0 and pd.read_csv(io.StringIO(r.stdout)).shape == (5, 2)
    r1 = invoke_cli("predict", "--model", model, "--input", str(tmp_path / "in.csv"), "--json")
    r2 = invoke_cli("predict", "--model", model, "--input", str(tmp_path / "in.csv"), "--format", "json")
    assert r1.returncode == r2.returncode == 0 and r1.stdout == r2.stdout
    assert len(json.loads(r1.stdout)["predictions"]) == 5


@pytest.mark.parametrize(
    "args, message",
    [
        (["--json", "--format", "csv"], "--json is --format json; it does not go with --format csv"),
        (["--carry", "id", "--carry-all"], "give --carry COLUMNS or --carry-all, not both"),
        (["--carry", "nope"], "--carry 'nope'"),
        (["--output", "{tmp}/s.xlsx"], "s.xlsx"),
        (["--carry", "label"], "label"),
        (["--carry-all", "--input", "{tmp}/clash.csv"], "probability"),
    ],
)
def test_conflicting_or_impossible_requests_are_exit_2_before_any_output(models, tmp_path, args, message):
    frame, _ = input_rows(BINARY, 3)
    frame["label"] = "x"
    frame.to_csv(tmp_path / "in.csv", index=False)
    frame.rename(columns={"label": "probability"}).to_csv(tmp_path / "clash.csv", index=False)
    argv = ["predict", "--model", str(model_path(models, BINARY))]
    if "--input" not in args:
        argv += ["--input", str(tmp_path / "in.csv")]
    r = invoke_cli(*argv, *[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stdout == "" or r.stdout.startswith("{")  # nothing but --json's error document
    assert not (tmp_path / "s.xlsx").exists()


def test_carry_on_an_input_without_names_is_exit_2(models, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    r = invoke_cli("predict", "--model", str(model_path(models, BINARY)), "--input", str(tmp_path / "x.npy"),
                   "--carry", "id")  # fmt: skip
    assert r.returncode == 2 and "has no column names to carry" in r.stderr


def test_a_bad_row_leaves_no_output_file_and_no_temporary(models, tmp_path):
    frame, _ = input_rows(BINARY, 50_000)
    frame.loc[49_000, "income"] = np.nan
    line = 2 + 49_000 + int((frame["note"][:49_000] == "two\nlines").sum())  # a quoted line break is a line
    frame.to_csv(tmp_path / "in.csv", index=False)
    for ext in (".csv", ".parquet", ".jsonl"):
        out = tmp_path / "out" / f"s{ext}"
        out.parent.mkdir(exist_ok=True)
        r = invoke_cli("predict", "--model", str(model_path(models, BINARY)), "--input", str(tmp_path / "in.csv"),
                       "--output", str(out))  # fmt: skip
        assert r.returncode == 2 and f"line {line}, column 'income' is missing" in r.stderr, r.stderr
        assert list(out.parent.iterdir()) == []
    # An existing output is left as it was.
    keep = tmp_path / "keep.csv"
    keep.write_text("old\n")
    r = invoke_cli("predict", "--model", str(model_path(models, BINARY)), "--input", str(tmp_path / "in.csv"),
                   "--output", str(keep))  # fmt: skip
    assert r.returncode == 2 and keep.read_text() == "old\n"


def test_stdout_gets_nothing_when_a_late_row_is_bad(models, tmp_path):
    frame, _ = input_rows(BINARY, 20_000)
    frame = frame.drop(columns=["note"]).astype({"age": object})
    frame.loc[19_999, "age"] = "x"
    frame.to_csv(tmp_path / "in.csv", index=False)
    r = run_cli("predict", "--model", str(model_path(models, BINARY)), "--input", str(tmp_path / "in.csv"),
                "--format", "csv")  # fmt: skip
    assert r.returncode == 2 and r.stdout == "" and "line 20001, column 'age': 'x' is not a number" in r.stderr


def test_json_lines_stream_on_stdin_and_stdout(models, tmp_path):
    frame, x = input_rows(BINARY, 100)
    lines = frame.to_json(orient="records", lines=True)
    r = run_cli("predict", "--model", str(model_path(models, BINARY)), "--input", "-", "--carry", "id",
                "--format", "jsonl", input=lines)  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = pd.read_json(io.StringIO(r.stdout), lines=True, dtype={"id": str})
    want, labels = expected(models, BINARY, x)
    assert got["id"].tolist() == frame["id"].tolist() and got["label"].tolist() == labels
    np.testing.assert_array_equal(got["probability"].to_numpy().astype(np.float32), want[:, 0])


def test_the_table_stays_what_a_terminal_gets(models, tmp_path):
    frame, _ = input_rows(BINARY, 3)
    frame.to_csv(tmp_path / "in.csv", index=False)
    r = invoke_cli("predict", "--model", str(model_path(models, BINARY)), "--input", str(tmp_path / "in.csv"))
    assert r.returncode == 0 and "probability" in r.stdout.splitlines()[0] and len(r.stdout.splitlines()) == 4


def test_number_text_is_the_shortest_float32_round_trip():
    values = np.array([0.1, 1 / 3, 1e-45, 3.4028235e38, -0.0, 1.0, 123456789.0, 5e-324], dtype=np.float32)
    text = O._numbers(values).to_pylist()
    for v, t in zip(values, text):
        assert np.float32(float(t)) == v or (v == 0 and float(t) == 0)
        assert len(t) <= len(repr(float(v)))  # never longer than the double's repr
    assert text[5] == "1.0" and text[0] == "0.1"


def test_writers_are_independent_of_the_source(models):
    """make_writer on a plain bytes buffer: the CSV it writes is what pandas reads (no CLI, no files)."""
    p = P.Predictor(P.resolve_model(models, REGRESSION.name, None), "cpu")
    source = open_input(p.spec, pairs=["1,2", "3,4"])
    buf = io.BytesIO()
    assert P.write_predictions(buf, "csv", p, source) == 2
    got = pd.read_csv(io.BytesIO(buf.getvalue()))
    want = p.outputs(np.float32([[1, 2], [3, 4]])).astype(np.float32)
    np.testing.assert_array_equal(got["value"].to_numpy().astype(np.float32), want[:, 0])
    assert isinstance(p.spec, InputSpec)


def test_the_default_provider_says_nothing_about_cuda_on_a_machine_without_a_gpu(models, tmp_path):
    """A scoring host without a GPU is the normal case: `auto` is quiet there; `--provider cuda` is not."""
    from tests.conftest import has_cuda

    if has_cuda():
        pytest.skip("this machine has a GPU: auto runs on CUDA")
    model = str(model_path(models, BINARY))
    r = invoke_cli("predict", "--model", model, "1,2,3", "--format", "csv")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = invoke_cli("predict", "--model", model, "1,2,3", "--provider", "cuda")
    assert r.returncode == 3 and "--provider cuda" in r.stderr


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_closed_pipe_ends_quietly_with_141(models, tmp_path, fmt):
    import subprocess

    from tests.conftest import cli_cmd

    frame, _ = input_rows(BINARY, 200_000)
    frame.drop(columns=["note"]).to_csv(tmp_path / "in.csv", index=False)
    cmd = cli_cmd("predict", "--model", str(model_path(models, BINARY)), "--input", str(tmp_path / "in.csv"),
                  "--format", fmt)  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, as `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "" and first


def test_the_models_recipe_says_which_fields_are_missing(models, tmp_path):
    """predict reads a model's input with the missing-value tokens its recipe trained with."""
    import hashlib
    import shutil

    folder = tmp_path / "m" / FLAG.name / "v1"
    shutil.copytree(models / FLAG.name / "v1", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["recipe"] = {"data": {"missing": ["?"]}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest() == manifest["files"]["model.onnx"]["sha256"]
    (tmp_path / "in.csv").write_text("p,q\n1,?\n")
    r = invoke_cli("predict", "--model", str(folder / "model.onnx"), "--input", str(tmp_path / "in.csv"))
    assert (
        r.returncode == 2 and "line 2, column 'q' is missing (an empty field or a missing-value token: '?')" in r.stderr
    )
    (tmp_path / "in.csv").write_text("p,q\n1,NA\n")
    r = invoke_cli("predict", "--model", str(folder / "model.onnx"), "--input", str(tmp_path / "in.csv"))
    assert r.returncode == 2 and "line 2, column 'q': 'NA' is not a number" in r.stderr, r.stderr


def test_a_row_the_model_cannot_compute_stops_before_stdout_gets_anything(models, tmp_path):
    rows = "".join(f"{i},1,2\n" for i in range(20_000)) + "x,3.4e38,3.4e38\n"
    (tmp_path / "in.csv").write_text("id,rooms,area\n" + rows)
    r = run_cli("predict", "--model", str(model_path(models, REGRESSION)), "--input",
                str(tmp_path / "in.csv"), "--format", "csv")  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert f"{tmp_path / 'in.csv'}: line 20002 gives a non-finite value" in r.stderr, r.stderr


def test_gzip_and_the_terminal_table_say_nothing_they_should_not(models, tmp_path):
    import gzip as gz

    (tmp_path / "in.csv").write_text('id,age,income,score\n"a\nb\x1b[31m",1,2,3\n')
    out = tmp_path / "s.csv.gz"
    r = invoke_cli("predict", "--model", str(model_path(models, BINARY)), "--input", str(tmp_path / "in.csv"),
                   "--carry", "id", "--output", str(out))  # fmt: skip
    assert r.returncode == 0 and b".tmp" not in out.read_bytes()[:64]  # no temporary's name in the header
    assert gz.open(out).read().decode().startswith('id,label,probability\n"a\nb\x1b[31m",')
    r = invoke_cli("predict", "--model", str(model_path(models, BINARY)), "--input", str(tmp_path / "in.csv"),
                   "--carry", "id")  # fmt: skip
    assert r.returncode == 0 and "\x1b" not in r.stdout and "a\\nb\\" in r.stdout
    assert len(r.stdout.splitlines()) == 2
