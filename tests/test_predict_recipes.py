"""predict on recipe models (not only the XOR built-ins): the input width and feature names come from the
model, a CSV header is matched by name, JSON rows may be objects, and the output has the head's keys
(binary probability, multi-class probabilities, regression value) with labels typed as in the data.

The models are made without training: built with `model.build_model`, exported, and given a manifest."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import CorruptArtifact, UsageError
from pipeline.graph.contract import metadata_props
from pipeline.serving import predict as P
from pipeline.serving.inputs import open_input
from pipeline.spec.archs import Arch
from pipeline.store.manifest import FileRecord, Manifest, VerifyRecord
from tests.conftest import ROOT

MULTI = Arch(
    name="iris30",
    widths=(30, 8, 3),
    activation="relu",
    task="multiclass",
    features=tuple(f"f{i}" for i in range(30)),
    classes=(0, 2, 5),
    scale_input=True,
)
BINARY = Arch(
    name="churn",
    widths=(3, 4, 1),
    activation="tanh",
    task="binary",
    features=("age", "income", "score"),
    classes=("no", "yes"),
)
FLAG = Arch(name="flag", widths=(2, 3, 1), activation="relu", features=("p", "q"), classes=(False, True))
REGRESSION = Arch(
    name="price",
    widths=(2, 5, 1),
    activation="relu",
    task="regression",
    features=("rooms", "area"),
    classes=(),
    scale_input=True,
    scale_output=True,
)


def _export(model, arch: Arch, path: Path) -> None:
    """The exporter's call (dynamo, opset 18, symbolic batch), with the head's output name."""
    import torch

    from pipeline.graph.export import _quiet  # the exporter's logging, kept off the console (and pytest's capture)

    example = torch.zeros(4, arch.n_inputs, dtype=torch.float32)
    with _quiet():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            opset_version=18,
            input_names=["x"],
            output_names=[arch.output_name],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
        )


def make_model(root: Path, arch: Arch, *, verified: bool = True, seed: int = 0):
    """<root>/<name>/v1 (published): model.onnx (with the file's metadata_props), [verify.json], manifest.json.
    Returns the torch model (the reference)."""
    import onnx
    import torch

    from pipeline.training.model import build_model, set_scaling

    torch.manual_seed(seed)
    model = build_model(arch).eval()
    rng = np.random.default_rng(seed)
    set_scaling(
        model,
        arch,
        mean=rng.normal(size=arch.n_inputs),
        std=rng.uniform(0.5, 2.0, size=arch.n_inputs),
        target_mean=100.0,
        target_std=10.0,
    )
    folder = root / arch.name / "v1"
    folder.mkdir(parents=True)
    onnx_path = folder / "model.onnx"
    _export(model, arch, onnx_path)
    proto = onnx.load(str(onnx_path))
    del proto.metadata_props[:]
    for key, value in metadata_props(arch).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx_path.write_bytes(proto.SerializeToString())
    contents = {"model.onnx": onnx_path.read_bytes()}
    if verified:
        contents["verify.json"] = b'{"passed": true}\n'
        (folder / "verify.json").write_bytes(contents["verify.json"])
    files = {n: FileRecord(hashlib.sha256(d).hexdigest(), len(d)) for n, d in contents.items()}
    record = VerifyRecord(True, {}, {}, {}, ()) if verified else None
    manifest = Manifest(name=arch.name, model=arch.record(), files=files, verify=record, version=1)
    (folder / "manifest.json").write_bytes(manifest.to_json())
    (root / arch.name / "PUBLISHED").write_text("1\n")
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    refs = {arch.name: make_model(root, arch, seed=i) for i, arch in enumerate((MULTI, BINARY, FLAG, REGRESSION))}
    return root, refs


def reference(refs, arch: Arch, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return refs[arch.name](torch.as_tensor(x, dtype=torch.float32)).numpy().astype(np.float64)


def predictor(root: Path, arch: Arch) -> P.Predictor:
    return P.Predictor(P.resolve_model(root, arch.name, None), "cpu")


def run_json(p: P.Predictor, **source) -> dict:
    out = io.StringIO()
    src = open_input(p.spec, **source)
    src.validate()
    n = P.write_json(out, p, src)
    doc = json.loads(out.getvalue())
    assert len(doc["predictions"]) == n
    return doc


def run_table(p: P.Predictor, **source) -> list[str]:
    out = io.StringIO()
    src = open_input(p.spec, **source)
    src.validate()
    n = P.write_table(out, p, src)
    lines = out.getvalue().splitlines()
    assert len(lines) == n + 1
    return lines


# ---------------------------------------------------------------------------------------------
# Inputs: matched to the model's features


def test_the_input_width_and_names_come_from_the_model(models):
    root, _ = models
    for arch in (MULTI, BINARY, FLAG, REGRESSION):
        p = predictor(root, arch)
        assert p.spec.width == arch.n_inputs and p.spec.features == arch.features
        assert p.arch.record() == arch.record() and p.served.verified and p.served.label == f"{arch.name} v1"


def test_csv_header_in_any_order_with_extra_text_columns(models, tmp_path):
    root, refs = models
    x = np.array([[35, 52000.5, 0.25], [61, 18000, -1.5], [19, 0, 3]], dtype=np.float32)
    order = [2, 0, 1]
    lines = ['score,id,age,note,income,"city, country"']
    for r, row in enumerate(x.tolist()):
        s, a, i = (repr(row[k]) for k in order)
        lines.append(f'{s},cust-{r},{a},"hello, ""world""",{i},"Paris, FR"')
    path = tmp_path / "rows.csv"
    path.write_text("\n".join(lines) + "\n")
    doc = run_json(predictor(root, BINARY), path=path)
    got = [row["x"] for row in doc["predictions"]]
    np.testing.assert_array_equal(got, x)  # echoed in model order
    want = reference(refs, BINARY, x)[:, 0]
    np.testing.assert_allclose([row["probability"] for row in doc["predictions"]], want, rtol=1e-5, atol=1e-6)


def test_a_missing_feature_is_one_line_naming_it_and_the_closest_column(models, tmp_path):
    root, _ = models
    path = tmp_path / "rows.csv"
    path.write_text("age,Income,score_x\n1,2,3\n")
    with pytest.raises(UsageError) as exc:
        open_input(predictor(root, BINARY).spec, path=path).validate()
    message = str(exc.value)
    assert "\n" not in message
    assert "no column 'income' (closest: 'Income')" in message and "nor 1 other feature ('score')" in message


def test_headerless_csv_needs_exactly_the_feature_count(models, tmp_path):
    root, refs = models
    spec = predictor(root, BINARY).spec
    path = tmp_path / "rows.csv"
    path.write_text("1,2,3,4\n5,6,7,8\n")
    with pytest.raises(UsageError) as exc:
        open_input(spec, path=path).validate()
    assert "line 1 has 4 columns, expected 3" in str(exc.value) and "age, income, score" in str(exc.value)
    path.write_text("1,2,3\n5,6,7\n")
    doc = run_json(predictor(root, BINARY), path=path)
    want = reference(refs, BINARY, np.array([[1, 2, 3], [5, 6, 7]], np.float32))[:, 0]
    np.testing.assert_allclose([r["probability"] for r in doc["predictions"]], want, rtol=1e-5, atol=1e-6)


def test_json_rows_as_objects_or_numbers(models, tmp_path):
    root, refs = models
    p = predictor(root, REGRESSION)
    objects = [{"area": 80.5, "rooms": 3, "street": "Main St"}, {"rooms": 1, "area": 20, "extra": [1, {"a": 2}]}]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(objects))
    from_objects = run_json(p, path=path)
    from_lists = run_json(p, stdin=io.StringIO(json.dumps({"x": [[3, 80.5], [1, 20]]})))
    assert from_objects["predictions"] == from_lists["predictions"]
    path.write_text(json.dumps([{"rooms": 3, "area": 1}, {"rooms": 2, "size": 5}]))
    with pytest.raises(UsageError, match="row 2, column 'area' is missing"):
        open_input(p.spec, path=path).validate()


# ---------------------------------------------------------------------------------------------
# Output: labels with their type, probabilities per class, values


def test_document_says_task_features_classes_once(models):
    root, _ = models
    doc = run_json(predictor(root, MULTI), pairs=[",".join(["0"] * 30)])
    assert doc["task"] == "multiclass" and doc["features"] == list(MULTI.features) and doc["classes"] == [0, 2, 5]
    assert "threshold" not in doc and doc["version"] == 1 and doc["verified"] is True
    doc = run_json(predictor(root, BINARY), pairs=["1,2,3"])
    assert doc["task"] == "binary" and doc["classes"] == ["no", "yes"] and doc["threshold"] == 0.5


def test_multiclass_labels_stay_ints_and_probabilities_are_an_object_in_class_order(models):
    root, refs = models
    x = np.random.default_rng(5).normal(size=(50, 30)).astype(np.float32) * 3
    doc = run_json(predictor(root, MULTI), pairs=[",".join(map(repr, row)) for row in x.tolist()])
    want = reference(refs, MULTI, x)
    seen = set()
    for row, ref in zip(doc["predictions"], want):
        assert list(row) == ["x", "label", "probabilities"]
        assert list(row["probabilities"]) == ["0", "2", "5"]
        got = np.array(list(row["probabilities"].values()))
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
        assert type(row["label"]) is int and row["label"] == MULTI.classes[int(np.argmax(got))]
        seen.add(row["label"])
    assert len(seen) > 1  # the check above saw more than one class


@pytest.mark.parametrize("arch, kind", [(BINARY, str), (FLAG, bool)])
def test_binary_labels_keep_their_type(models, arch, kind):
    root, refs = models
    x = np.random.default_rng(1).normal(size=(200, arch.n_inputs)).astype(np.float32) * 5
    doc = run_json(predictor(root, arch), pairs=[",".join(map(repr, r)) for r in x.tolist()])
    probs = reference(refs, arch, x)[:, 0]
    for row, p in zip(doc["predictions"], probs):
        assert list(row) == ["x", "probability", "label"]
        assert type(row["label"]) is kind and row["label"] == arch.classes[int(row["probability"] > 0.5)]
        assert row["probability"] == pytest.approx(p, rel=1e-5, abs=1e-6)


def test_regression_gives_values_in_target_units_and_no_label(models):
    root, refs = models
    x = np.array([[3, 80.5], [1, 20], [0, 0]], np.float32)
    doc = run_json(predictor(root, REGRESSION), pairs=["3,80.5", "1,20", "0,0"])
    assert doc["task"] == "regression" and doc["classes"] == [] and "threshold" not in doc
    assert all(list(row) == ["x", "value"] for row in doc["predictions"])
    want = reference(refs, REGRESSION, x)[:, 0]
    np.testing.assert_allclose([r["value"] for r in doc["predictions"]], want, rtol=1e-5, atol=1e-4)


def test_library_predictions_match_the_streamed_document(models):
    root, _ = models
    x = np.random.default_rng(2).normal(size=(7, 30)).astype(np.float32)
    p = predictor(root, MULTI)
    doc = run_json(p, pairs=[",".join(map(repr, r)) for r in x.tolist()])
    lib = P.predict(p.served, x, "cpu")
    # x as the model saw it: float32 (the document writes each as float32's shortest decimal)
    for mine, theirs in zip(lib.as_dict()["predictions"], doc["predictions"]):
        assert np.array_equal(np.float32(mine.pop("x")), np.float32(theirs.pop("x")))
        assert mine == theirs
    assert list(lib.labels) == [r["label"] for r in doc["predictions"]]
    assert {k: v for k, v in lib.as_dict().items() if k in ("task", "features", "classes")} == {
        k: doc[k] for k in ("task", "features", "classes")
    }


def test_table_is_readable_for_wide_models_and_every_head(models):
    root, refs = models
    lines = run_table(predictor(root, MULTI), pairs=[",".join(["1"] * 30), ",".join(["-2"] * 30)])
    head = lines[0].split()
    assert head[:6] == ["f0", "f1", "f2", "f3", "f4", "...+25"] and "f5" not in head
    assert "label" in head and "probabilities" in lines[0] and "(iris30 v1, CPUExecutionProvider)" in lines[0]
    for line in lines[1:]:
        fields = line.split()
        assert fields[5] == "..." and fields[6] in ("0", "2", "5")
        best = [f.split("=") for f in fields[7:]]
        assert [c for c, _ in best] and sorted(c for c, _ in best) == ["0", "2", "5"]
        assert fields[6] == best[0][0] and float(best[0][1]) >= float(best[-1][1])
    lines = run_table(predictor(root, BINARY), pairs=["1,2,3"])
    assert lines[0].split()[:5] == ["age", "income", "score", "probability", "label"]
    assert lines[1].split()[-1] in ("no", "yes")
    lines = run_table(predictor(root, REGRESSION), pairs=["3,80.5"])
    assert lines[0].split()[:3] == ["rooms", "area", "value"]
    want = reference(refs, REGRESSION, np.array([[3, 80.5]], np.float32))[0, 0]
    assert float(lines[1].split()[-1]) == pytest.approx(want, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Which model: names, loose files, the file's own description


def test_model_names_are_checked_before_they_name_a_folder(models):
    root, _ = models
    for bad in ("../iris30", "Iris30", "a/b", "", "x" * 65):
        with pytest.raises(UsageError, match="must match"):
            P.resolve_model(root, bad, None)


def test_unverified_recipe_model_needs_allow_unverified(models, tmp_path):
    import shutil

    root, _ = models
    shutil.copytree(root / "price", tmp_path / "price")
    path = tmp_path / "price" / "v1" / "manifest.json"
    manifest = Manifest.from_json(path.read_bytes(), "m")
    files = {n: r for n, r in manifest.files.items() if n != "verify.json"}
    path.write_bytes(manifest.replace(verify=None, files=files).to_json())
    with pytest.raises(UsageError, match="no passing verify record"):
        P.resolve_model(tmp_path, "price", None)
    served = P.resolve_model(tmp_path, "price", None, allow_unverified=True)
    assert not served.verified and served.arch is not None and served.arch.record() == REGRESSION.record()


def test_a_model_file_with_its_manifest_is_described_by_the_manifest(models):
    root, _ = models
    served = P.resolve_model(root, None, root / "churn" / "v1" / "model.onnx")
    assert served.arch.record() == BINARY.record() and served.verified


def test_a_loose_file_is_described_by_its_metadata(models, tmp_path):
    root, refs = models
    loose = tmp_path / "model.onnx"
    loose.write_bytes((root / "churn" / "v1" / "model.onnx").read_bytes())
    served = P.resolve_model(tmp_path, None, loose, allow_unverified=True)
    assert served.arch is not None and served.arch.features == BINARY.features and served.arch.classes == ("no", "yes")
    assert not served.sha256_checked and served.label == str(loose)
    (tmp_path / "rows.csv").write_text("score,age,income\n3,1,2\n")
    doc = run_json(P.Predictor(served, "cpu"), path=tmp_path / "rows.csv")
    assert doc["predictions"][0]["label"] in ("no", "yes") and doc["classes"] == ["no", "yes"]
    want = reference(refs, BINARY, np.array([[1, 2, 3]], np.float32))[0, 0]
    assert doc["predictions"][0]["probability"] == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_a_file_whose_metadata_disagrees_with_its_manifest_is_refused(models, tmp_path):
    import shutil

    root, _ = models
    shutil.copytree(root / "churn", tmp_path / "churn")
    path = tmp_path / "churn" / "v1" / "manifest.json"
    doc = json.loads(path.read_text())
    doc["model"]["features"] = ["income", "age", "score"]  # swapped: the file's metadata says otherwise
    path.write_text(json.dumps(doc))
    served = P.resolve_model(tmp_path, "churn", None)
    with pytest.raises(CorruptArtifact, match="its metadata says features"):
        P.Predictor(served, "cpu")


def test_recipe_models_predict_without_torch(models, tmp_path):
    root, _ = models
    blocker = tmp_path / "block" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "block"), str(ROOT)]))
    code = (
        "import io, json, sys\n"
        "from pipeline.serving import predict as P\n"
        "from pipeline.serving.inputs import open_input\n"
        f"p = P.Predictor(P.resolve_model({str(root)!r}, 'iris30', None), 'cpu')\n"
        "src = open_input(p.spec, stdin=io.StringIO(json.dumps([{f'f{i}': i for i in range(30)}])))\n"
        "P.write_json(sys.stdout, p, src)\n"
        "assert 'torch' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["predictions"][0]["label"] in (0, 2, 5)


def test_a_row_whose_output_is_not_finite_is_the_inputs_problem_named_by_its_row(models):
    """A finite input far beyond the data (1e38 rooms) drives a ReLU regression to inf: the row is
    named, exit 2 (a bad input), no server path in the message."""
    root, _ = models
    p = predictor(root, REGRESSION)
    x = np.array([[1, 2], [3e38, 3e38]], dtype=np.float32)
    with pytest.raises(UsageError, match=r"row 2 of the batch gives a non-finite value") as info:
        p.outputs(x)
    assert info.value.exit_code == 2 and str(root) not in str(info.value)
