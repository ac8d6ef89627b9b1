"""verify on recipes' models: input sets drawn from the data, (rows, K) outputs, argmax agreement with a
near-tie allowance, regression tolerances in the target's units. Models are random-weight MLPs (no
training), exported with the pipeline's exporter, checked against an independent float64 numpy MLP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from scipy.special import erf

from pipeline.checks import verify as V
from pipeline.checks.runtimes import Runner
from pipeline.errors import EquivalenceFailed, UsageError
from pipeline.spec.archs import XOR_X, Arch
from pipeline.spec.data import in_memory_dataset
from pipeline.store import artifacts as A
from pipeline.training.model import build_model, linear_layers, set_scaling

FEATURES = ("age", "income", "ratio")
MEAN = np.array([40.0, 5.0e4, 0.01])
STD = np.array([12.0, 2.0e4, 0.002])
TARGET_MEAN, TARGET_STD = 500.0, 100.0
BATCHES = (1, 4, 1000)
CASES = [
    ("binary", "tanh"),
    ("binary", "relu"),
    ("multiclass", "gelu"),
    ("multiclass", "sigmoid"),
    ("regression", "relu"),
    ("regression", "tanh"),
]


def fake_data(task: str, classes: tuple, rows: int = 500, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(MEAN, STD, size=(rows, len(FEATURES))).astype(np.float32)
    y = rng.normal(TARGET_MEAN, TARGET_STD, size=rows)
    train, val = np.arange(0, rows * 3 // 5), np.arange(rows * 3 // 5, rows)
    if task != "regression":
        y = rng.integers(0, len(classes), size=rows)
    return in_memory_dataset(FEATURES, task, classes, x, y, train, val)


def make_case(task: str, activation: str, folder: Path):
    from pipeline.graph.export import _to_onnx

    classes = {"binary": (0, 1), "multiclass": ("a", "b", "c"), "regression": ()}[task]
    arch = Arch(
        name=f"{task}-{activation}",
        widths=(3, 8, 8, 3 if task == "multiclass" else 1),
        activation=activation,
        task=task,
        features=FEATURES,
        classes=classes,
        scale_input=True,
        scale_output=task == "regression",
    )
    data = fake_data(task, classes)
    torch.manual_seed(7)
    model = build_model(arch)
    with torch.no_grad():
        for layer in linear_layers(model):  # trained weights are larger than a fresh init's
            layer.weight.mul_(2.5)
            layer.bias.mul_(2.5)
    set_scaling(model, arch, data.stats.mean, data.stats.std, TARGET_MEAN, TARGET_STD)
    path = folder / f"{arch.name}.onnx"
    _to_onnx(model.eval(), arch.n_inputs, path, output_name=arch.output_name)
    return arch, model.eval(), path, data


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipes")
    return {(t, a): make_case(t, a, folder) for t, a in CASES}


def numpy_mlp(model, arch: Arch, x: np.ndarray) -> np.ndarray:
    """Independent float64 forward pass: (rows, F) -> (rows, K)."""
    h = x.astype(np.float64)
    if arch.scale_input:
        h = (h - model[0].mean.double().numpy()) / model[0].std.double().numpy()
    acts = {
        "sigmoid": lambda z: 0.5 * (1.0 + np.tanh(0.5 * z)),
        "tanh": np.tanh,
        "relu": lambda z: np.maximum(z, 0.0),
        "gelu": lambda z: 0.5 * z * (1.0 + erf(z / np.sqrt(2.0))),
    }
    layers = linear_layers(model)
    with np.errstate(over="ignore", invalid="ignore"):
        for n, layer in enumerate(layers):
            h = h @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()
            if n < len(layers) - 1:
                h = acts[arch.activation](h)
        if arch.task == "binary":
            return 0.5 * (1.0 + np.tanh(0.5 * h))
        if arch.task == "multiclass":
            e = np.exp(h - h.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return h * float(model[-1].std) + float(model[-1].mean)


# ---------------------------------------------------------------------------------------------
# Input sets


def test_input_sets_are_drawn_from_the_data():
    data = fake_data("binary", (0, 1))
    arch = Arch("m", (3, 4, 1), (), "relu", "binary", FEATURES, (0, 1), True)
    sets = V.input_sets(arch, data, seed=3, batches=BATCHES)
    assert [s.name for s in sets] == [
        "validation", "uniform-1", "uniform-4", "uniform-1000", "wide-1", "wide-4", "wide-1000", "edge",
    ]  # fmt: skip
    assert all(s.x.dtype == np.float32 and s.x.ndim == 2 and s.x.shape[1] == 3 for s in sets)
    by = {s.name: s for s in sets}
    np.testing.assert_array_equal(by["validation"].x, data.x_val)
    assert by["validation"].seed is None and "200 validation rows" in by["validation"].description
    lo, hi, mean = (np.array(v) for v in (data.stats.min, data.stats.max, data.stats.mean))
    span = hi - lo
    u = by["uniform-1000"].x.astype(np.float64)
    assert np.all(u >= lo - 1e-6 * np.abs(lo)) and np.all(u <= hi + 1e-6 * np.abs(hi))
    w = by["wide-1000"].x.astype(np.float64)
    assert np.all(w >= lo - 10 * span - 1e-3) and np.all(w <= hi + 10 * span + 1e-3)
    assert np.all(w.min(axis=0) < lo - 5 * span) and np.all(w.max(axis=0) > hi + 5 * span)  # really 10x beyond
    edge = by["edge"].x
    assert edge.shape == (3 * 13, 3)
    at_mean = edge == mean.astype(np.float32)
    assert np.all(at_mean.sum(axis=1) >= 2)  # one feature at a time, the others at their training mean
    for f in range(3):
        col = edge[13 * f : 13 * (f + 1), f]
        assert np.any((col == 0) & np.signbit(col)) and np.any((col == 0) & ~np.signbit(col))
        assert 1.0 in col and -1.0 in col and np.float32(1e-30) in col and np.float32(-1e-30) in col
        assert np.max(col) == np.float32(1e30) and np.min(col) == np.float32(-1e30)
        assert np.min(np.abs(col[col != 0])) <= 1e-44  # the denormal
        assert np.float32(lo[f]) in col and np.float32(hi[f]) in col
        assert np.float32(lo[f] - 10 * span[f]) in col and np.float32(hi[f] + 10 * span[f]) in col
    # seeded: the same seed gives the same sets, another seed other random sets
    again = V.input_sets(arch, data, seed=3, batches=BATCHES)
    assert all(np.array_equal(a.x, b.x) for a, b in zip(sets, again))
    other = {s.name: s for s in V.input_sets(arch, data, seed=4, batches=BATCHES)}
    assert not np.array_equal(other["uniform-1000"].x, u.astype(np.float32))
    assert all(s.seed is not None for s in sets if s.name.startswith(("uniform", "wide")))


def test_validation_rows_are_capped_by_a_recorded_seeded_sample():
    data = fake_data("binary", (0, 1))
    arch = Arch("m", (3, 4, 1), (), "relu", "binary", FEATURES, (0, 1), True)
    (s,) = V.input_sets(arch, data, seed=9, kinds=("validation",), validation_cap=50)
    assert s.x.shape == (50, 3) and s.seed == 9 and "50 of the 200 validation rows" in s.description
    val = {tuple(r) for r in data.x_val.tolist()}
    assert all(tuple(r) in val for r in s.x.tolist()) and len({tuple(r) for r in s.x.tolist()}) == 50
    assert s.as_dict()["rows"] == 50


def test_builtins_keep_the_tutorial_sets_and_recipes_need_their_data():
    from pipeline.spec.archs import ARCHS

    xor_names = [s.name for s in V.input_sets()]
    assert [s.name for s in V.input_sets(ARCHS["shallow"])] == xor_names
    xor_data = in_memory_dataset(
        ("x1", "x2"), "binary", (0, 1), np.array(XOR_X, np.float32), np.array([0, 1, 1, 0]), np.arange(4), np.arange(4)
    )
    assert [s.name for s in V.input_sets(ARCHS["wide-deep"], xor_data)] == xor_names
    recipe = Arch("iris-ish", (3, 4, 3), (), "relu", "multiclass", FEATURES, ("a", "b", "c"), True)
    with pytest.raises(UsageError, match="verifying iris-ish needs its data"):
        V.input_sets(recipe)
    other = Arch("iris-ish", (3, 4, 3), (), "relu", "multiclass", ("a", "b", "c"), ("a", "b", "c"), True)
    with pytest.raises(UsageError, match="its data's features .* are not the model's"):
        V.input_sets(other, fake_data("multiclass", ("a", "b", "c")))
    with pytest.raises(UsageError, match="verifying iris-ish needs its data"):
        V.verify_folder(A.ArtifactPaths(Path("/nonexistent"), "iris-ish"), recipe)
    with pytest.raises(UsageError, match="verifying iris-ish needs its data"):
        V.run_serve_check(A.ArtifactPaths(Path("/nonexistent"), "iris-ish"), recipe, "cpu")


# ---------------------------------------------------------------------------------------------
# Whole models


@pytest.mark.parametrize("case", CASES, ids=[f"{t}-{a}" for t, a in CASES])
def test_a_correct_model_passes_verify_and_matches_numpy(cases, case):
    arch, model, path, data = cases[case]
    report = V.verify(model, arch, path, "n/a", batches=BATCHES, data=data)
    assert report.passed, report.failures()
    assert {"torch-cpu", "ort-cpu", "onnx-reference"} <= set(report.ran)
    k = arch.n_outputs
    assert all(c.expected_shape == (c.rows, k) and c.task == arch.task for c in report.comparisons)
    assert {k.runtime for k in report.checks} >= {"torch-cpu", "ort-cpu", "onnx-reference"}
    json.dumps(report.as_dict())  # the report is JSON (what run_verify writes)
    rec = report.tolerances["ort-cpu"]
    assert rec["standardized_inputs"] and rec["unit"] == pytest.approx(TARGET_STD if arch.task == "regression" else 1)
    assert rec["input_cap"] == (V.INPUT_SCALE_CAP if arch.activation in ("sigmoid", "tanh") else None)
    # the engine's oracle and every runtime agree with an independent numpy float64 forward pass
    oracle = V.torch_runtime(model, "cpu", "float64", name="oracle")
    ort_rt = V.ort_runtime(path, "cpu", V.FP32.for_model(V.model_scaling(model, arch, data)))[0]
    for s in V.input_sets(arch, data, batches=BATCHES):
        ref = numpy_mlp(model, arch, s.x)
        standardized = (s.x.astype(np.float64) - model[0].mean.double().numpy()) / model[0].std.double().numpy()
        scale = np.max(np.abs(standardized), axis=1, keepdims=True)
        unit = TARGET_STD if arch.task == "regression" else 1.0
        assert np.all(np.abs(oracle.run(s.x) - ref) <= 1e-9 * (np.abs(ref) + unit * np.maximum(scale, 1))), s.name
        out = ort_rt.run(s.x).astype(np.float64)
        assert out.shape == ref.shape
        assert np.all(np.abs(out - ref) <= ort_rt.tolerance.bound(ref, s.x)), s.name


def _initializer(model: onnx.ModelProto, name: str):
    return next(t for t in model.graph.initializer if t.name == name)


def _gemms(model: onnx.ModelProto) -> list:
    return [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]


def _tamper(src: Path, dst: Path, edit) -> Path:
    m = onnx.load(str(src))
    edit(m)
    onnx.save(m, str(dst))
    return dst


@pytest.mark.parametrize("case", [("binary", "relu"), ("multiclass", "gelu"), ("regression", "tanh")])
def test_a_weight_changed_by_1e_3_fails_verify(cases, case, tmp_path):
    arch, model, path, data = cases[case]

    def edit(m):
        init = _initializer(m, _gemms(m)[0].input[1])
        arr = numpy_helper.to_array(init).copy()
        arr.flat[0] += 1e-3
        init.CopyFrom(numpy_helper.from_array(arr, init.name))

    bad = _tamper(path, tmp_path / "bad.onnx", edit)
    report = V.verify(model, arch, bad, "n/a", batches=BATCHES, data=data)
    assert not report.passed
    assert all(c.passed for c in report.comparisons if c.runtime == "torch-cpu")
    assert {c.runtime for c in report.comparisons if not c.passed} == {"ort-cpu", "onnx-reference"}
    assert any(not c.passed for c in report.comparisons if c.input_set in ("validation", "uniform-1000"))
    with pytest.raises(EquivalenceFailed, match=r"rows over tolerance; worst row \d+ x=\[.*\] gave .* reference"):
        V.raise_on_failure(report, "verify.json")


def test_swapped_class_columns_fail_with_argmax_disagreements(cases, tmp_path):
    arch, model, path, data = cases[("multiclass", "gelu")]

    def edit(m):
        last = _gemms(m)[-1]
        trans_b = next((a.i for a in last.attribute if a.name == "transB"), 0) if last.op_type == "Gemm" else 0
        w = _initializer(m, last.input[1])
        arr = numpy_helper.to_array(w).copy()
        if trans_b:
            arr[[0, 1]] = arr[[1, 0]]
        else:
            arr[:, [0, 1]] = arr[:, [1, 0]]
        w.CopyFrom(numpy_helper.from_array(arr, w.name))
        if len(last.input) > 2:
            b = _initializer(m, last.input[2])
            barr = numpy_helper.to_array(b).copy()
            barr[[0, 1]] = barr[[1, 0]]
            b.CopyFrom(numpy_helper.from_array(barr, b.name))

    bad = _tamper(path, tmp_path / "swapped.onnx", edit)
    report = V.verify(model, arch, bad, "n/a", batches=BATCHES, data=data)
    assert not report.passed
    bad_validation = [c for c in report.comparisons if c.input_set == "validation" and c.runtime == "ort-cpu"]
    assert bad_validation and bad_validation[0].label_disagreements > 0
    failures = "\n".join(report.failures())
    assert "argmax labels disagree" in failures and "in output column" in failures


# ---------------------------------------------------------------------------------------------
# The engine, on hand-made outputs


def _runtime(tol: V.Tolerance, outputs: np.ndarray | None = None) -> V.Runtime:
    def run(x):
        return outputs if outputs is not None else np.zeros((x.shape[0], 1), np.float32)

    return V.Runtime(Runner("fake", "hand-made outputs", run, lambda x: lambda: run(x)), tol)


def _set(rows: int, features: int = 3) -> V.InputSet:
    return V.InputSet("hand", "hand-made", None, np.zeros((rows, features), np.float32))


def test_multiclass_near_ties_are_forgiven_and_real_disagreements_are_not():
    tol = V.Tolerance(1e-3, 0.0, "test")
    ref = np.array([[0.4, 0.3995, 0.2005], [0.6, 0.3, 0.1], [0.5, 0.49, 0.01]])
    out = np.array([[0.3996, 0.3999, 0.2005], [0.6, 0.3, 0.1], [0.5, 0.49, 0.01]])
    c = V.compare_one(_runtime(tol), _set(3), out, ref, "multiclass")
    assert c.passed and c.label_disagreements == 0 and c.labels_near_threshold == 1  # argmax swapped in row 0
    out_far = out.copy()
    out_far[2] = [0.49, 0.5, 0.01]  # a real swap: the reference's top two are 0.01 apart, tolerance 1e-3
    c = V.compare_one(_runtime(tol), _set(3), out_far, ref, "multiclass")
    assert not c.passed and c.label_disagreements == 1 and c.worst_row == 2 and c.rows_over_tolerance == 1
    # several columns and no task: multiclass is the default
    assert V.compare_one(_runtime(tol), _set(3), out, ref).task == "multiclass"


def test_regression_is_compared_in_the_targets_units():
    ref = np.array([[1000.0], [-3.0]])
    out = ref + np.array([[2e-3], [2e-3]])
    in_dollars = V.FP32.for_model(V.Scaling(unit=1000.0))  # target std 1000: 2e-3 is far below 5e-6 * 1000
    c = V.compare_one(_runtime(in_dollars), _set(2), out, ref, "regression")
    assert c.passed and c.label_disagreements == 0 and c.labels_near_threshold == 0
    c = V.compare_one(_runtime(V.FP32), _set(2), out, ref, "regression")  # unit 1: row 1 is over
    assert not c.passed and c.rows_over_tolerance == 1 and c.worst_row == 1
    # crossing 0.5 means nothing for a regression
    c = V.compare_one(_runtime(V.FP32), _set(1), np.array([[0.5 + 1e-7]]), np.array([[0.5 - 1e-7]]), "regression")
    assert c.passed


def test_the_regression_unit_and_the_standardization_come_from_the_model(cases):
    arch, model, _, data = cases[("regression", "relu")]
    scaling = V.model_scaling(model, arch, data)
    assert scaling.unit == pytest.approx(TARGET_STD, rel=1e-6) and scaling.input_cap == float("inf")
    np.testing.assert_allclose(scaling.input_mean, data.stats.mean, rtol=1e-6)
    # the allowance grows with the standardized |x|, not the raw one (raw incomes are ~5e4)
    tol = V.FP32.for_model(scaling)
    x = np.array([data.stats.mean, np.array(data.stats.mean) + 30 * np.array(data.stats.std)], np.float32)
    np.testing.assert_allclose(tol.input_scale(x), [1.0, 30.0], rtol=1e-3)
    unscaled = Arch("raw", (3, 4, 1), (), "relu", "regression", FEATURES, (), False, False)
    raw = V.model_scaling(build_model(unscaled), unscaled, data)  # no Unstandardize: the targets' std
    assert raw.input_mean is None and raw.unit == pytest.approx(np.std(data.y[data.train_rows]))


def test_binary_near_threshold_is_forgiven_as_before():
    tol = V.Tolerance(1e-3, 0.0, "test")
    ref = np.array([[0.5004], [0.9]])
    c = V.compare_one(_runtime(tol), _set(2), np.array([[0.4997], [0.9]]), ref, "binary")
    assert c.passed and c.labels_near_threshold == 1 and c.label_disagreements == 0


def test_batch_consistency_and_repeatability_on_several_columns():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 4))

    def good(x):
        return (x.astype(np.float64) @ w).astype(np.float32)

    def batch_dependent(x):
        return good(x) + (1e-2 if x.shape[0] > 1 else 0.0)

    s = V.InputSet("s", "s", 0, rng.normal(size=(100, 3)).astype(np.float32))
    for run, consistent in ((good, True), (batch_dependent, False)):
        rt = V.Runtime(Runner("fake", "d", run, lambda x, r=run: lambda: r(x)), V.FP32)
        k = V.check_runtime(rt, s, run(s.x))
        assert k.batch_consistent is consistent and k.repeatable and k.passed is consistent
    rt = V.Runtime(Runner("fake", "d", good, lambda x: lambda: good(x)), V.FP32)
    assert not V.check_runtime(rt, s, good(s.x)[:50]).passed  # a wrong number of rows


def test_serve_check_uses_the_validation_rows_and_uniform_batches(cases):
    arch, model, path, data = cases[("multiclass", "sigmoid")]
    report, providers = V.serve_check(model, arch, path, "n/a", "cpu", data=data)
    assert report.passed, report.failures()
    assert [s["name"] for s in report.input_sets] == ["validation", "uniform-1", "uniform-4", "uniform-1000"]
    assert providers.primary == "CPUExecutionProvider"
    assert report.checks and report.checks[0].passed


def test_worst_input_is_truncated_for_wide_rows():
    x = np.arange(20, dtype=np.float32).reshape(1, 20)
    s = V.InputSet("w", "w", None, x)
    c = V.compare_one(_runtime(V.FP32), s, np.array([[0.9]]), np.array([[0.1]]), "binary")
    assert len(c.worst_input) == V.WORST_INPUT_FEATURES and c.n_inputs == 20
    report = V.Report("verify", "m", "", "", 0, {}, [], {"fake": ""}, {}, [], [c], [], 0.0)
    assert "x=[0, 1, 2, 3, 4, 5, 6, 7, ... (20 features)]" in report.failures()[0]


def test_rows_beyond_float32_accept_non_finite_outputs_only_there():
    arch = Arch("tiny-std", (3, 8, 1), (), "relu", "regression", FEATURES, (), True, True)
    torch.manual_seed(0)
    model = build_model(arch)
    set_scaling(model, arch, [0.0, 0.0, 0.0], [1e-12, 1.0, 1.0], 0.0, 1.0)  # a near-constant feature
    x = np.array([[1e30, 0, 0], [1.0, 0, 0], [0, 1e30, 0]], np.float32)
    beyond = V.beyond_float32(model.eval())(x)
    assert beyond.tolist() == [True, False, False]  # 1e30 / 1e-12 has no float32 answer; 1e30 / 1 has
    ref = np.array([[1e42], [3.0], [2e30]])
    out = np.array([[np.nan], [3.0], [2e30]], np.float32)
    c = V.compare_one(_runtime(V.FP32), _set(3), out, ref, "regression", beyond)
    assert c.passed and c.rows_beyond_float32 == 1
    out[1, 0] = np.nan  # a NaN where float32 has an answer still fails
    c = V.compare_one(_runtime(V.FP32), _set(3), out, ref, "regression", beyond)
    assert not c.passed and c.rows_over_tolerance == 1 and c.worst_row == 1


def test_non_saturating_activations_get_the_atol_factor_but_not_over_an_explicit_atol():
    relu = Arch("r", (3, 4, 1), (), "relu", "binary", FEATURES, (0, 1), False)
    tanh = Arch("t", (3, 4, 1), (), "tanh", "binary", FEATURES, (0, 1), False)
    s_relu, s_tanh = V.model_scaling(build_model(relu), relu), V.model_scaling(build_model(tanh), tanh)
    assert V.FP32.for_model(s_tanh).atol == V.FP32.atol and V.FP32.for_model(s_tanh).input_cap == V.INPUT_SCALE_CAP
    assert V.FP32.for_model(s_relu).atol == V.ACTIVATION_ATOL_FACTOR["relu"] * V.FP32.atol
    assert V.FP32.for_model(s_relu).input_cap == float("inf")
    assert V._override("ort-cpu", 1e-3, None, s_relu).atol == 1e-3
    assert V._override("ort-cpu", None, None, s_relu).atol == V.ACTIVATION_ATOL_FACTOR["relu"] * V.FP32.atol


# ---------------------------------------------------------------------------------------------
# Models with an encoding: raw rows in (gaps, text, booleans, dates), end to end


RAW_ROWS = 300


def write_raw_table(folder: Path) -> Path:
    """A small raw table as a user has it: number gaps, a text category (spaces, slashes), a boolean,
    a date with gaps, numeric codes; the label depends on all of them."""
    import datetime as dt

    rng = np.random.default_rng(5)
    lines = ["when,size,colour,member,code,label"]
    for _ in range(RAW_ROWS):
        day = dt.date(2019, 1, 1) + dt.timedelta(days=int(rng.integers(0, 900)))
        size = rng.normal(10.0, 3.0)
        colour = str(rng.choice(["red", "dark grey", "blue/ish"]))
        member = bool(rng.random() < 0.5)
        code = int(rng.integers(1, 4))
        label = int((size > 10) ^ (colour == "red") ^ (day.weekday() >= 5) ^ member)
        cells = [
            "" if rng.random() < 0.1 else day.isoformat(),
            "" if rng.random() < 0.15 else f"{size:.3f}",
            "" if rng.random() < 0.1 else colour,
            "true" if member else "false",
            "" if rng.random() < 0.1 else str(code),
            "yes" if label else "no",
        ]
        lines.append(",".join(cells))
    path = folder / "raw.csv"
    path.write_text("\n".join(lines) + "\n")
    (folder / "raw.toml").write_text(
        'name = "raw-table"\n[model]\nhidden = [16]\nactivation = "tanh"\n'
        '[data]\npath = "raw.csv"\ntarget = "label"\ncategorical = ["code"]\n'
        "[train]\nsteps = 150\nlr = 0.01\n[gate]\nmin_accuracy = 0.3\n"
    )
    return folder / "raw.toml"


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory):
    """The raw table through the library's `all` (train, export, serve-check, verify, publish)."""
    from pipeline import load_recipe, run_all

    folder = tmp_path_factory.mktemp("raw")
    recipe = load_recipe(write_raw_table(folder))
    summary = run_all(recipe, folder / "artifacts", device="cpu", provider="cpu")
    (model_run,) = summary.models
    return model_run, recipe


def _raw_data(recipe):
    from pipeline.spec.data import load_dataset

    return load_dataset(recipe)


def test_a_raw_table_verifies_end_to_end_with_the_graphs_encoding_checked(raw_run):
    run, _ = raw_run
    enc = run.arch.encoding
    assert enc is not None and enc.per_column and enc.has_dates
    kinds = {c.name: (c.kind, c.boolean) for c in enc.columns}
    assert kinds == {
        "when": ("date", False), "size": ("number", False), "colour": ("category", False),
        "member": ("category", True), "code": ("category", False),
    }  # fmt: skip
    report = run.verify
    assert report is not None and report.passed, report.failures()
    assert run.published is not None
    names = [s["name"] for s in report.input_sets]
    for kind in ("validation", "missing", "unseen", "categories", "dates", "mixed-1000", "wide-1000", "edge"):
        assert kind in names
    assert report.encoding is not None and report.encoding.equal
    assert report.encoding.rows == sum(s["rows"] for s in report.input_sets) and report.encoding.sets == len(names)
    assert report.encoding.line == (
        f"encoding: graph == numpy reference on {report.encoding.rows} rows ({len(names)} input sets, bit for bit)"
    )
    assert {"torch-cpu", "ort-cpu", "onnx-reference"} <= set(report.ran)
    # where onnxruntime ran the nodes, from its profile: the string operators on the CPU provider
    assert "LabelEncoder" in report.ran["ort-cpu"] and "RegexFullMatch" in report.ran["ort-cpu"]
    assert "ran on CPUExecutionProvider" in report.ran["ort-cpu"]
    assert run.providers.placement is not None and "string operators (" in run.providers.placement
    # the reference evaluator's pure-Python string operators: the big sets are left out, and named
    assert "left out: mixed-65536" in report.ran["onnx-reference"]
    assert not any(c.runtime == "onnx-reference" and c.rows > V.TEXT_REFERENCE_ROWS for c in report.comparisons)
    doc = json.loads((run.paths.folder.parent / "v1" / "verify.json").read_text())
    assert doc["passed"] and doc["encoding"]["equal"] and doc["encoding"]["line"] == report.encoding.line
    # serve-check ran on raw rows too
    assert [s["name"] for s in run.serve_check.input_sets][:3] == ["validation", "missing", "unseen"]


def test_raw_input_sets_hold_gaps_unseen_categories_and_bad_dates(raw_run):
    run, recipe = raw_run
    arch, data = run.arch, _raw_data(recipe)
    enc = arch.encoding
    sets = {s.name: s for s in V.input_sets(arch, data, seed=1, batches=(4, 1000))}
    assert all(isinstance(s.x, dict) and list(s.x) == list(enc.features) for s in sets.values())
    for s in sets.values():  # every set comes with the numpy reference's encoding of its rows
        assert s.encoded.shape == (s.rows, enc.width)
        np.testing.assert_array_equal(s.encoded, enc.encode(s.x))
    val = sets["validation"].x
    np.testing.assert_array_equal(val["size"], data.raw_rows(data.val_rows)["size"])
    missing = sets["missing"].x
    # each column missing in turn (NaN for numbers and numeric codes, "" for text and dates), then all
    base = 1 + min(V.BASE_ROWS, len(data.val_rows))
    assert sets["missing"].rows == base * (len(enc.features) + 1)
    for j, name in enumerate(enc.features):
        block = slice(j * base, (j + 1) * base)
        col = missing[name][block]
        assert np.isnan(col).all() if col.dtype == np.float32 else (col == "").all(), name
    last = slice(len(enc.features) * base, None)
    assert np.isnan(missing["size"][last]).all() and (missing["colour"][last] == "").all()
    unseen = sets["unseen"].x
    assert "__unseen__" in set(unseen["colour"]) and "maybe" in set(unseen["member"])
    codes = np.asarray(unseen["code"], np.float64)
    varied = codes[codes != codes[0]]  # the first rows vary another column: code at its typical value there
    assert varied.size >= 5 and not set(varied.tolist()) & {1.0, 2.0, 3.0}
    colour = enc.column("colour")
    assert set(colour.categories) <= set(sets["categories"].x["colour"])
    assert {"TRUE", "False", "0", "1"} <= set(sets["categories"].x["member"])  # every spelling of a boolean
    assert {"2021-13-01", "not a date", "0000-01-01", "2020-02-29"} <= set(sets["dates"].x["when"])
    # an unseen category encodes as all zeros, a missing number as its fill value plus the indicator
    row = list(unseen["colour"]).index("__unseen__")
    cols = [j for j, n in enumerate(enc.names) if n.startswith("colour=")]
    assert not sets["unseen"].encoded[row, cols].any()
    mixed = sets["mixed-1000"].x
    assert np.isnan(mixed["size"]).any() and (mixed["colour"] == "").any() and (mixed["when"] == "").any()
    wide = sets["wide-1000"].x["size"].astype(np.float64)
    assert wide.min() < np.nanmin(data.raw_rows(data.train_rows)["size"]) - 5  # 10x beyond the range
    assert (sets["wide-1000"].x["colour"] == sets["wide-1000"].x["colour"][0]).all()  # the others typical


def _exported(run) -> onnx.ModelProto:
    return onnx.load(str(run.paths.folder.parent / "v1" / "model.onnx"))


def test_a_tampered_label_encoder_fails_the_encoding_check(raw_run):
    run, recipe = raw_run
    arch, data = run.arch, _raw_data(recipe)
    sets = V.input_sets(arch, data, batches=(4,))
    good = _exported(run)
    assert V.graph_encoding_check(good, arch.encoding, sets).equal
    bad = onnx.ModelProto()
    bad.CopyFrom(good)
    (node,) = [n for n in bad.graph.node if n.op_type == "LabelEncoder" and "red" in _keys(n)]
    keys = next(a for a in node.attribute if a.name == "keys_strings")
    i, j = _keys(node).index("red"), _keys(node).index("dark grey")
    keys.strings[i], keys.strings[j] = keys.strings[j], keys.strings[i]  # "red" now lands on "dark grey"
    check = V.graph_encoding_check(bad, arch.encoding, sets)
    assert not check.equal and check.rows_differing > 0
    assert "encoded column 'colour=" in check.line and "raw 'colour' = " in check.line
    assert check.line.startswith("encoding: the graph's encoding differs from the numpy reference on set 'validation'")
    # the whole verify fails on it, with that line among its failures
    report = V.verify(_load_weights(run), arch, bad.SerializeToString(), "n/a", batches=(4,), data=data)
    assert not report.passed and any(f.startswith("encoding: ") for f in report.failures())
    with pytest.raises(EquivalenceFailed, match="verify failed for raw-table"):
        V.raise_on_failure(report, "verify.json")


def test_a_tampered_fill_value_fails_the_encoding_check_on_the_missing_rows(raw_run):
    run, recipe = raw_run
    arch, data = run.arch, _raw_data(recipe)
    sets = V.input_sets(arch, data, kinds=("validation", "missing"))
    bad = _exported(run)
    size_fill = [n for n in bad.graph.node if n.op_type == "Where" and n.input[2] == "size"]
    (where,) = size_fill
    init = next(t for t in bad.graph.initializer if t.name == where.input[1])
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] = np.nextafter(arr.flat[0], np.float32(np.inf))  # one ulp
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    check = V.graph_encoding_check(bad, arch.encoding, sets)
    assert not check.equal and "encoded column 'size'" in check.line and "raw 'size' = nan" in check.line


def test_a_graph_without_the_encoded_tensor_fails_the_check(raw_run):
    run, recipe = raw_run
    arch, data = run.arch, _raw_data(recipe)
    bad = _exported(run)
    for n in bad.graph.node:
        for k, out in enumerate(n.output):
            if out == "xorship_encoded":
                n.output[k] = "renamed"
    check = V.graph_encoding_check(bad, arch.encoding, V.input_sets(arch, data, kinds=("missing",)))
    assert not check.equal and "has no tensor 'xorship_encoded'" in check.line


def _keys(node) -> list[str]:
    return [s.decode() for s in next(a for a in node.attribute if a.name == "keys_strings").strings]


def _load_weights(run):
    from pipeline.training.model import load_model

    return load_model(run.arch, (run.paths.folder.parent / "v1" / "weights.safetensors").read_bytes(), "weights")


def test_a_runtime_that_cannot_run_a_text_operator_is_skipped_with_the_reason_never_passed(
    raw_run, monkeypatch, tmp_path
):
    run, recipe = raw_run
    arch, data = run.arch, _raw_data(recipe)
    from onnx.reference import ReferenceEvaluator

    def refuse(self, *args, **kwargs):
        raise NotImplementedError("StringSplit is not implemented")

    monkeypatch.setattr(ReferenceEvaluator, "run", refuse)
    onnx_bytes = (run.paths.folder.parent / "v1" / "model.onnx").read_bytes()
    report = V.verify(_load_weights(run), arch, onnx_bytes, "n/a", batches=(4,), data=data)
    assert "onnx-reference" not in report.ran and "onnx-reference" not in report.tolerances
    why = report.skipped["onnx-reference"]
    assert "cannot run this graph's text operators (" in why and "LabelEncoder" in why and "StringSplit is not" in why
    assert not any(c.runtime == "onnx-reference" for c in report.comparisons + report.checks)
    assert report.passed  # the others ran and agree; the skipped one is not counted as passed...
    required = V.verify(_load_weights(run), arch, onnx_bytes, "n/a", ("onnx-reference",), batches=(4,), data=data)
    assert not required.passed  # ...and where it is required, verify fails naming why
    assert required.failures()[0].startswith("required runtime onnx-reference did not run: onnx ")
    # a graph without text: the same failure is an error, not a skip
    arch_num, model, path, data_num = make_case("binary", "tanh", tmp_path)
    with pytest.raises(NotImplementedError):
        V.verify(model, arch_num, path, "n/a", batches=(4,), data=data_num)


def test_node_placement_reads_the_providers_from_onnxruntimes_profile(raw_run):
    from pipeline.checks.runtimes import node_placement

    run, recipe = raw_run
    data = _raw_data(recipe)
    placement = node_placement(run.paths.folder.parent / "v1" / "model.onnx", "cpu", data.raw_rows(data.val_rows[:3]))
    ops = {op for _, op, _, _ in placement.nodes}
    assert {"LabelEncoder", "RegexFullMatch", "StringSplit"} <= ops
    assert ops & {"Gemm", "FusedGemm", "MatMul"}  # the network, as onnxruntime fused it
    assert placement.providers() == {"CPUExecutionProvider": len(placement.nodes)}
    text = placement.string_ops()["CPUExecutionProvider"]
    assert "LabelEncoder" in text and "StringSplit" in text and "Gemm" not in text
    assert placement.summary.startswith("string operators (") and "(onnxruntime session profile)" in placement.summary


def _encoded_case(folder: Path, csv: str, recipe_tail: str, activation: str = "relu"):
    """(arch, model, onnx bytes, data): a random-weight model on a raw table, exported as `export`
    does (the network at the encoding's opset, the encoding attached in front)."""
    from pipeline import load_recipe
    from pipeline.graph.encoding_graph import attach, opset_for
    from pipeline.graph.export import _to_proto
    from pipeline.spec.archs import arch_for
    from pipeline.spec.data import load_dataset

    (folder / "t.csv").write_text(csv)
    (folder / "r.toml").write_text(
        f'name = "enc"\n[model]\nhidden = [8]\nactivation = "{activation}"\n[data]\npath = "t.csv"\n{recipe_tail}'
    )
    recipe = load_recipe(folder / "r.toml")
    data = load_dataset(recipe)
    arch = arch_for(recipe, data.features, data.classes, data.task, data.encoding)
    torch.manual_seed(3)
    model = build_model(arch)
    set_scaling(model, arch, data.stats.mean, data.stats.std, data.target_mean, data.target_std)
    proto = attach(_to_proto(model.eval(), arch.n_encoded, arch.output_name, opset_for(arch.encoding)), arch.encoding)
    return arch, model.eval(), proto.SerializeToString(), data


def test_an_all_numeric_table_with_gaps_is_checked_on_float32_matrices_with_nan(tmp_path):
    rng = np.random.default_rng(2)
    rows = ["a,b,code,y"]
    for i in range(120):
        a = "" if i % 7 == 0 else f"{rng.normal(3, 1):.4f}"
        b = "" if i % 5 == 0 else f"{rng.normal(-50, 9):.3f}"
        code = "" if i % 11 == 0 else str(int(rng.integers(0, 3)))
        rows.append(f"{a},{b},{code},{rng.normal(100, 10):.3f}")
    arch, model, onnx_bytes, data = _encoded_case(
        tmp_path, "\n".join(rows) + "\n", 'target = "y"\ncategorical = ["code"]\n[gate]\nmax_rmse = 1e9\n'
    )
    enc = arch.encoding
    assert enc is not None and not enc.per_column and enc.width == 2 + 2 + 3  # a, a?, b, b?, code=0..2
    sets = {s.name: s for s in V.input_sets(arch, data, batches=(4, 1000))}
    assert "unseen" in sets and "dates" not in sets
    for s in sets.values():
        assert isinstance(s.x, np.ndarray) and s.x.dtype == np.float32 and s.x.shape == (s.rows, 3)
    assert np.isnan(sets["missing"].x).any(axis=0).all()  # each column missing somewhere
    assert np.isnan(sets["mixed-1000"].x).any(axis=0).all()
    unseen_codes = sets["unseen"].x[:, 2]
    assert not np.isin(unseen_codes, [0.0, 1.0, 2.0]).all()
    report = V.verify(model, arch, onnx_bytes, "n/a", batches=(4, 1000), data=data)
    assert report.passed, report.failures()
    assert report.encoding is not None and report.encoding.equal and "bit for bit" in report.encoding.line
    assert "onnx-reference" in report.ran and "left out" not in report.ran["onnx-reference"]  # no text: every set
    assert "; nodes: " in report.ran["ort-cpu"] and "string operators" not in report.ran["ort-cpu"]
    serve, providers = V.serve_check(model, arch, onnx_bytes, "n/a", "cpu", data=data)
    assert serve.passed and providers.placement is not None and providers.placement.startswith("nodes: ")
