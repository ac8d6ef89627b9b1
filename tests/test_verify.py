"""The comparison engine, against an independent float64 numpy oracle."""

import json

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.checks import verify as V
from pipeline.errors import EquivalenceFailed
from pipeline.spec.archs import ARCHS
from pipeline.store import artifacts as A
from pipeline.training.model import load_model
from tests.conftest import load_weights, numpy_mlp

SETS = [s.name for s in V.input_sets()]
RUNTIMES = [
    "torch-cpu",
    "ort-cpu",
    "onnx-reference",
    pytest.param("torch-cuda", marks=pytest.mark.cuda),
    pytest.param("ort-cuda", marks=pytest.mark.cuda),
]


@pytest.fixture(scope="module")
def runtimes(shipped):
    out = {}
    for arch in ARCHS.values():
        folder = shipped / arch.name / "v1"
        model = load_model(arch, (folder / "weights.safetensors").read_bytes())
        onnx_path = folder / "model.onnx"
        build = {  # default arguments bind this iteration's model and file
            "torch-cpu": lambda m=model: V.torch_runtime(m, "cpu"),
            "torch-cuda": lambda m=model: V.torch_runtime(m, "cuda"),
            "ort-cpu": lambda p=onnx_path: V.ort_runtime(p, "cpu")[0],
            "ort-cuda": lambda p=onnx_path: V.ort_runtime(p, "cuda")[0],
            "onnx-reference": lambda p=onnx_path: V.reference_evaluator_runtime(p),
        }
        out[arch.name] = (build, load_weights(folder))
    return out


@pytest.mark.parametrize("set_name", SETS)
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_runtime_matches_numpy_float64(runtimes, arch, runtime, set_name):
    build, weights = runtimes[arch]
    rt = build[runtime]()
    s = next(s for s in V.input_sets() if s.name == set_name)
    ref = numpy_mlp(weights, s.x)
    out = rt.run(s.x).reshape(-1).astype(np.float64)
    bound = rt.tolerance.bound(ref, s.x)
    worst = int(np.argmax(np.abs(out - ref) - bound))
    assert np.all(np.abs(out - ref) <= bound), f"row {worst}: x={s.x[worst]} got {out[worst]} want {ref[worst]}"
    cmp = V.compare_one(rt, s, out, ref)
    assert cmp.passed and cmp.label_disagreements == 0
    if s.expected_labels:
        assert tuple(int(v > 0.5) for v in out) == s.expected_labels


def test_the_engines_oracle_agrees_with_numpy(shipped):
    arch = ARCHS["wide-deep"]
    model = load_model(arch, (shipped / arch.name / "v1" / "weights.safetensors").read_bytes())
    oracle = V.torch_runtime(model, "cpu", "float64", name="oracle")
    for s in V.input_sets():
        np.testing.assert_allclose(
            oracle.run(s.x).reshape(-1),
            numpy_mlp(load_weights(shipped / arch.name / "v1"), s.x),
            rtol=1e-12,
            atol=1e-15,
        )


def test_input_sets_are_seeded_and_cover_the_promised_cases():
    a, b = V.input_sets(seed=5), V.input_sets(seed=5)
    assert [s.name for s in a] == [s.name for s in b]
    assert all(np.array_equal(x.x, y.x) for x, y in zip(a, b))
    assert not np.array_equal(V.input_sets(seed=6)[1].x, a[1].x)
    names = {s.name for s in a}
    assert {"xor", "uniform-1", "uniform-4", "uniform-1000", "wide-65536", "edge"} <= names
    edge = next(s for s in a if s.name == "edge").x
    assert np.any(np.signbit(edge) & (edge == 0))  # -0 is there
    assert np.max(np.abs(edge)) >= 1e30 and np.min(np.abs(edge[edge != 0])) <= 1e-44
    assert all(s.seed is not None for s in a if s.name.startswith(("uniform", "wide")))


def test_verify_report_is_written_and_says_what_ran(shipped):
    for arch in ARCHS:
        data = json.loads((shipped / arch / "v1" / "verify.json").read_text())
        assert data["passed"] and data["failures"] == []
        assert {"torch-cpu", "ort-cpu", "onnx-reference"} <= set(data["ran"])
        assert all(c["passed"] for c in data["comparisons"])
        # every recorded error is within the loosest bound its recorded tolerance allows (|reference| <= 1)
        for c in data["comparisons"]:
            tol = data["tolerances"][c["runtime"]]
            assert c["max_abs"] <= tol["atol"] * V.INPUT_SCALE_CAP + tol["rtol"], c
        assert {k["runtime"] for k in data["checks"] if k["repeat_required"]} >= {"torch-cpu", "ort-cpu"}
        assert all(k["repeatable"] for k in data["checks"] if k["repeat_required"])
        # the built-ins have no encoding: their report is what it was before encodings existed
        assert "encoding" not in data and [s["name"] for s in data["input_sets"]] == [s.name for s in V.input_sets()]
        assert data["ran"]["ort-cpu"] == "onnxruntime, providers ['CPUExecutionProvider']"


@pytest.mark.parametrize("arch", list(ARCHS))
def test_verify_report_figures_match_an_independent_recomputation(shipped, arch):
    """The report's max_abs / max_rel for onnxruntime on the XOR points, recomputed here with
    onnxruntime called directly and the numpy float64 oracle."""
    import onnxruntime as ort

    data = json.loads((shipped / arch / "v1" / "verify.json").read_text())
    (c,) = [c for c in data["comparisons"] if c["runtime"] == "ort-cpu" and c["input_set"] == "xor"]
    session = ort.InferenceSession(str(shipped / arch / "v1" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    out = session.run(None, {"x": x})[0].reshape(-1).astype(np.float64)
    ref = numpy_mlp(load_weights(shipped / arch / "v1"), x)
    diff = np.abs(out - ref)
    assert c["max_abs"] == pytest.approx(diff.max(), rel=1e-6, abs=1e-15)
    assert c["max_rel"] == pytest.approx((diff / np.maximum(np.abs(ref), 1e-6)).max(), rel=1e-6, abs=1e-15)
    assert c["worst_row"] == int(np.argmax(diff))


def _perturb(onnx_path, delta: float):
    model = onnx.load(str(onnx_path))
    init = model.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[0] += delta
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(onnx_path))


def test_a_perturbed_weight_fails_verify_and_names_the_worst_input(shipped_copy):
    paths = A.ArtifactPaths(shipped_copy, "shallow")
    _perturb(paths.onnx, 0.01)
    model = load_model(ARCHS["shallow"], paths.weights.read_bytes())
    report = V.verify(model, "shallow", paths.onnx, "n/a")
    assert not report.passed
    assert report.ran["torch-cpu"] and all(c.passed for c in report.comparisons if c.runtime == "torch-cpu")
    bad = [c for c in report.comparisons if not c.passed]
    assert {c.runtime for c in bad} == {"ort-cpu", "onnx-reference"}
    with pytest.raises(EquivalenceFailed, match=r"worst row \d+ x=\[.*\] gave .* reference"):
        V.raise_on_failure(report, "verify.json")


def test_require_cuda_fails_closed_on_this_machine(shipped):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    model = load_model(ARCHS["shallow"], (shipped / "shallow" / "v1" / "weights.safetensors").read_bytes())
    report = V.verify(
        model, "shallow", shipped / "shallow" / "v1" / "model.onnx", "n/a", require=("cuda",), batches=(4,)
    )
    assert report.required_missing == ["torch-cuda", "ort-cuda"] and not report.passed
    with pytest.raises(EquivalenceFailed, match="required runtime torch-cuda did not run"):
        V.raise_on_failure(report, "verify.json")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    x=arrays(
        np.float32, st.tuples(st.integers(1, 64), st.just(2)), elements=st.floats(-100, 100, allow_nan=False, width=32)
    ),
)
def test_onnxruntime_matches_float64_on_random_batches(runtimes, x):
    for arch in ARCHS:
        build, weights = runtimes[arch]
        rt = build["ort-cpu"]()
        ref = numpy_mlp(weights, x)
        out = rt.run(x).reshape(-1)
        assert np.all(np.abs(out - ref) <= rt.tolerance.bound(ref, x))


def _beyond_row_by_row(model, x):
    """The definition, checked on every row at every layer (an independent reference)."""
    import torch

    big = 3.4028234663852886e38
    m = __import__("copy").deepcopy(model).double().eval()
    h = torch.from_numpy(np.asarray(x, dtype=np.float64))
    bad = torch.zeros(h.shape[0], dtype=torch.bool)
    with torch.no_grad():
        for layer in m:
            if isinstance(layer, torch.nn.Linear):
                bad |= (h.abs() @ layer.weight.abs().T > big).any(dim=1)
            h = layer(h)
            bad |= (h.abs() > big).any(dim=1) | torch.isnan(h).any(dim=1)
    return bad.numpy()


def test_one_float64_pass_gives_the_oracle_and_the_rows_beyond_float32():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.5], [-1.0, 3.0]]))
    rng = np.random.default_rng(0)
    ordinary = rng.normal(size=(1000, 2)).astype(np.float32)
    edges = np.array(
        [[1e38, 1e38], [3e38, -3e38], [1e30, 0.0], [np.nan, 0.0], [np.inf, 1.0], [-np.inf, 0.0], [0.0, 0.0]],
        np.float32,
    )
    oracle = V.torch_runtime(model, "cpu", "float64", name="oracle")
    f64 = V.Float64Pass(model)
    for x in (ordinary, edges, np.concatenate([ordinary, edges]), ordinary[:0]):
        ref = f64.reference(x)
        assert ref.tobytes() == oracle.run(x).tobytes()  # the oracle's numbers, to the bit
        np.testing.assert_array_equal(f64.beyond(x), _beyond_row_by_row(model, x))
        np.testing.assert_array_equal(V.beyond_float32(model)(x), _beyond_row_by_row(model, x))
    assert not _beyond_row_by_row(model, ordinary).any()
    assert _beyond_row_by_row(model, edges).tolist() == [True, True, False, True, True, True, False]


def test_non_finite_outputs_fail_verify_with_exit_10_and_every_json_file_stays_strict(shipped_copy, monkeypatch):
    """A runtime answering inf/NaN where the float64 oracle is finite fails verify (exit 10, naming the
    runtime, set and row), and verify.json and the manifest are still strict JSON (null, explained)."""
    from pipeline.checks import runtimes as R
    from pipeline.flow import verify_models

    real = R.ort_runner

    def broken(onnx, provider, **kw):
        runner = real(onnx, provider, **kw)
        run = runner.run

        def nan_on_big_batches(x):
            out = run(x)
            if x.shape[0] >= 1000:
                out = out.copy()
                out[3] = np.inf
                out[5] = np.nan
            return out

        object.__setattr__(runner, "run", nan_on_big_batches)
        return runner

    monkeypatch.setattr(V, "ort_runner", broken, raising=False)
    monkeypatch.setattr(R, "ort_runner", broken)
    (outcome,) = verify_models("shallow", shipped_copy)
    assert isinstance(outcome.error, EquivalenceFailed) and outcome.error.exit_code == 10
    msg = str(outcome.error)
    assert "ort-cpu on" in msg and "non-finite output" in msg and "worst row" in msg
    paths = A.ArtifactPaths(shipped_copy, "shallow")
    for f in (paths.verify, paths.manifest):
        json.loads(f.read_text(), parse_constant=lambda c, f=f: pytest.fail(f"{f.name} holds {c}"))  # no NaN/Infinity
    doc = json.loads(paths.verify.read_text())
    assert doc["passed"] is False and doc["non_finite"]["paths"] and "not finite" in doc["non_finite"]["note"]
    assert (shipped_copy / "shallow" / "PUBLISHED").read_text() == "1\n"  # nothing new published


def test_strict_json_writes_null_for_non_finite_values_and_says_where():
    from pipeline.store.jsonout import dumps

    text = dumps({"a": [1.0, float("inf")], "b": {"c": float("nan")}, "d": np.float32(2.5), "e": (1, 2)})
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(c))
    assert doc["a"] == [1.0, None] and doc["b"] == {"c": None} and doc["d"] == 2.5 and doc["e"] == [1, 2]
    assert doc["non_finite"]["paths"] == ["a[1]", "b.c"] and doc["non_finite"]["count"] == 2
    assert "non_finite" not in json.loads(dumps({"a": 1.0}))
