"""Torch-free inference and its input parsing."""

import json
import os
import sys

import numpy as np
import pytest

from pipeline.errors import IntegrityError
from pipeline.serving import predict as P
from tests.conftest import ROOT, invoke_cli, load_weights, numpy_mlp, run_cli


def _no_torch_env(tmp_path):
    """PYTHONPATH with a `torch` package whose import fails: any import of torch is an error."""
    blocker = tmp_path / "block" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "block"), str(ROOT)])
    return env


def test_predict_runs_without_torch(shipped, tmp_path):
    env = _no_torch_env(tmp_path)
    check = run_cli("predict", "--help", env=env)
    assert check.returncode == 0
    blocked = __import__("subprocess").run([sys.executable, "-c", "import torch"], env=env, capture_output=True)
    assert blocked.returncode != 0  # the blocker works
    r = run_cli(
        "predict", "--arch", "shallow", "--artifacts-dir", str(shipped), "--json", "0,0", "0,1", "1,0", "1,1", env=env
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [p["label"] for p in data["predictions"]] == [0, 1, 1, 0]
    ref = numpy_mlp(load_weights(shipped / "shallow" / "v1"), np.array([[0, 0], [0, 1], [1, 0], [1, 1]]))
    np.testing.assert_allclose([p["probability"] for p in data["predictions"]], ref, rtol=1e-5, atol=1e-6)
    assert data["sha256_checked"] is True and data["providers"][-1] == "CPUExecutionProvider"
    assert (data["task"], data["features"], data["classes"], data["threshold"]) == ("binary", ["x1", "x2"], [0, 1], 0.5)
    assert all(list(p) == ["x", "probability", "label"] and type(p["label"]) is int for p in data["predictions"])


def test_predict_from_csv_npy_json_and_stdin(shipped, tmp_path):
    rows = np.array([[0, 1], [1, 1]], dtype=np.float32)
    (tmp_path / "in.csv").write_text("x1,x2\n0,1\n1,1\n")
    np.save(tmp_path / "in.npy", rows)
    (tmp_path / "in.json").write_text(json.dumps({"x": rows.tolist()}))
    base = ("predict", "--arch", "wide-deep", "--artifacts-dir", str(shipped), "--json")
    outs = [invoke_cli(*base, "--input", str(tmp_path / f)) for f in ("in.csv", "in.npy", "in.json")]
    outs.append(invoke_cli(*base, "--input", "-", input="[[0, 1], [1, 1]]"))
    labels = [[p["label"] for p in json.loads(o.stdout)["predictions"]] for o in outs]
    assert labels == [[1, 0]] * 4, [o.stderr for o in outs]


def test_predict_with_model_path_and_table_output(shipped):
    r = invoke_cli("predict", "--model", str(shipped / "shallow" / "v1" / "model.onnx"), "0,1")
    assert r.returncode == 0 and "probability" in r.stdout and r.stdout.strip().endswith("1")


@pytest.mark.parametrize(
    "args,message",
    [
        (("0,1,2",), "is not 2 numbers joined by commas"),
        (("a,b",), "is not 2 numbers joined by commas"),
        (("nan,1",), "not finite"),
        (("inf,1",), "not finite"),
        ((), "give input rows either as"),
        (("--input", "/nonexistent.csv"), "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(shipped, args, message):
    r = invoke_cli("predict", "--arch", "shallow", "--artifacts-dir", str(shipped), *args)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_tampered_model_is_refused_before_loading(shipped_copy):
    onnx_path = shipped_copy / "shallow" / "v1" / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\x00")
    with pytest.raises(IntegrityError, match=r"sha256 [0-9a-f]{64} != manifest [0-9a-f]{64}"):
        P.resolve_model(shipped_copy, "shallow", None)
    with pytest.raises(IntegrityError):
        P.resolve_model(shipped_copy, None, onnx_path)
