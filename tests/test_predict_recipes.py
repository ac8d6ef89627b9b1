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
from tests.conftest import ROOT, invoke_cli

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


# ---------------------------------------------------------------------------------------------
# Models that encode raw columns inside the graph, trained through the real pipeline (train, export):
# gaps, text categories, true/false and dates, column names with spaces and slashes


MIXED_COLUMNS = ("bill length/mm", "island name", "sex", "tagged", "seen on", "at", "mass")


def _mixed_csv(rng: np.random.Generator, n: int) -> str:
    def gap(values: list[str], p: float, token: str = "") -> list[str]:
        return [token if rng.random() < p else v for v in values]

    bill = rng.normal(44, 5, n).round(1)
    island = rng.choice(["Biscoe", "Dream", "Torgersen"], n)
    cols = {
        "bill length/mm": gap([str(v) for v in bill], 0.15),
        "island name": gap(list(island), 0.1, "NA"),
        "sex": gap(list(rng.choice(["male", "female"], n)), 0.1),
        "tagged": list(rng.choice(["true", "false"], n)),
        "seen on": gap([f"2021-{m:02d}-{d:02d}" for m, d in zip(rng.integers(1, 13, n), rng.integers(1, 29, n))], 0.1),
        "at": [f"2020-05-{d:02d}T{h:02d}:{m:02d}:00" for d, h, m in rng.integers([1, 0, 0], [29, 24, 60], (n, 3))],
        "mass": [str(v) for v in rng.integers(3000, 6000, n)],
        "species": list(np.where(bill > 46, "Gentoo", np.where(island == "Dream", "Chinstrap", "Adelie"))),
    }
    return "\n".join([",".join(cols), *(",".join(c[i] for c in cols.values()) for i in range(n))]) + "\n"


def _numeric_csv(rng: np.random.Generator, n: int) -> str:
    a, b = rng.normal(size=n), rng.normal(size=n)
    lines = ["a,b c/d,e,y"]
    for i in range(n):
        lines.append(f"{'' if i % 7 == 0 else round(a[i], 3)},{'NA' if i % 5 == 0 else round(b[i], 3)},{i % 3},"
                     f"{'yes' if a[i] + b[i] > 0 else 'no'}")  # fmt: skip
    return "\n".join(lines) + "\n"


def _train(folder: Path, name: str, csv: str, target: str) -> Path:
    """<folder>/art/<name>/candidate/model.onnx, trained (a few steps) and exported by the pipeline's stages."""
    from pipeline import flow
    from pipeline.spec.recipe import load_recipe

    (folder / f"{name}.csv").write_text(csv)
    recipe = folder / f"{name}.toml"
    recipe.write_text(
        f'name = "{name}"\n[model]\nhidden = [8]\n[data]\npath = "{name}.csv"\ntarget = "{target}"\n'
        "[train]\nsteps = 40\n[gate]\nmin_accuracy = 0.0\n"
    )
    r = load_recipe(recipe)
    for outcome in (*flow.train_models(r, folder / "art", device="cpu"), *flow.export_models(r, folder / "art")):
        assert outcome.error is None, outcome.error
    return folder / "art" / name / "candidate" / "model.onnx"


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """(the text/date model's file, the all-number model's file): candidates with their manifests."""
    folder = tmp_path_factory.mktemp("encoded")
    rng = np.random.default_rng(0)
    return _train(folder, "mixed", _mixed_csv(rng, 160), "species"), _train(folder, "gaps", _numeric_csv(rng, 120), "y")


def loose_predictor(model: Path) -> P.Predictor:
    return P.Predictor(P.resolve_model(model.parent, None, model, allow_unverified=True), "cpu")


def ort_outputs(model: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The independent reference: a plain onnxruntime session on the file, fed by hand."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run([session.get_outputs()[0].name], feeds)[0]


# The same rows, as each format holds them: None is missing; "Mars" an island training never saw.
MIXED_ROWS = [
    {"bill length/mm": 45.1, "island name": "Biscoe", "sex": "male", "tagged": True, "seen on": (2021, 3, 4),
     "at": (2020, 5, 3, 10, 20), "mass": 4000},
    {"bill length/mm": None, "island name": None, "sex": None, "tagged": False, "seen on": None,
     "at": (2020, 5, 17, 23, 5), "mass": 3500},
    {"bill length/mm": 39.5, "island name": "Mars", "sex": "female", "tagged": None, "seen on": (2021, 12, 31),
     "at": None, "mass": None},
    {"bill length/mm": 50.0, "island name": "Dream", "sex": "male", "tagged": True, "seen on": (2021, 7, 9),
     "at": (2020, 5, 9, 0, 0), "mass": 5200},
]  # fmt: skip


def _text(column: str, v) -> str | None:
    """A value as text (CSV, JSON): ISO dates and timestamps, true/false."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if column == "seen on":
        return "{:04d}-{:02d}-{:02d}".format(*v)
    if column == "at":
        return "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:00".format(*v)
    return v


def mixed_feeds() -> dict[str, np.ndarray]:
    """MIXED_ROWS as the graph takes them, built by hand: [rows, 1] float32 (NaN missing) or str ("" missing)."""
    feeds = {}
    for c in MIXED_COLUMNS:
        values = [r[c] for r in MIXED_ROWS]
        if c in ("bill length/mm", "mass"):
            feeds[c] = np.array([np.nan if v is None else v for v in values], np.float32).reshape(-1, 1)
        else:
            feeds[c] = np.array([_text(c, v) or "" for v in values], dtype=object).reshape(-1, 1)
    return feeds


def write_mixed(folder: Path) -> dict[str, Path]:
    """MIXED_ROWS as CSV (gaps as "" and NA, other columns and another order), Parquet (real date32,
    timestamp, bool, int and null types), JSON Lines (absent keys and nulls) and a JSON document."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(exist_ok=True)
    order = ["id", *reversed(MIXED_COLUMNS)]
    lines = [",".join(order)]
    for i, r in enumerate(MIXED_ROWS):
        cells = [f"row-{i}"] + [_text(c, r[c]) for c in reversed(MIXED_COLUMNS)]
        lines.append(",".join(("NA" if i % 2 else "") if v is None else str(v) for v in cells))
    paths = {"csv": folder / "rows.csv", "parquet": folder / "rows.parquet", "jsonl": folder / "rows.jsonl"}
    paths["csv"].write_text("\n".join(lines) + "\n")
    col = {c: [r[c] for r in MIXED_ROWS] for c in MIXED_COLUMNS}
    table = pa.table(
        {
            "id": [f"row-{i}" for i in range(len(MIXED_ROWS))],
            "bill length/mm": pa.array(col["bill length/mm"], pa.float64()),
            "island name": col["island name"],
            "sex": col["sex"],
            "tagged": pa.array(col["tagged"], pa.bool_()),
            "seen on": pa.array([v and dt.date(*v) for v in col["seen on"]], pa.date32()),
            "at": pa.array([v and dt.datetime(*v) for v in col["at"]], pa.timestamp("s")),
            "mass": pa.array(col["mass"], pa.int64()),
        }
    )
    pq.write_table(table, paths["parquet"])
    objects = []
    for i, r in enumerate(MIXED_ROWS):
        obj = {"id": f"row-{i}"}
        for k, (c, v) in enumerate(r.items()):
            if v is not None or (i + k) % 2:  # absent keys, and nulls
                obj[c] = v if c in ("bill length/mm", "mass", "tagged") or v is None else _text(c, v)
        objects.append(obj)
    paths["jsonl"].write_text("".join(json.dumps(o) + "\n" for o in objects))
    paths["json"] = folder / "rows.json"
    paths["json"].write_text(json.dumps(objects))
    return paths


def test_an_encoded_model_takes_raw_rows_from_every_format_bit_for_bit(encoded, tmp_path):
    model, _ = encoded
    p = loose_predictor(model)
    assert p.arch.per_column and p.spec.per_column and p.arch.features == MIXED_COLUMNS
    want = ort_outputs(model, mixed_feeds()).astype(np.float64)
    paths = write_mixed(tmp_path)
    docs = {fmt: run_json(p, path=path) for fmt, path in paths.items()}
    docs["stdin"] = run_json(p, stdin=io.StringIO(paths["jsonl"].read_text()), fmt="jsonl")
    for fmt, doc in docs.items():
        got = np.array([list(row["probabilities"].values()) for row in doc["predictions"]])
        assert np.array_equal(got, want), fmt  # bit for bit: the float32 outputs, through JSON
        assert doc["predictions"] == docs["csv"]["predictions"], fmt  # the echoed inputs too
    echoed = docs["parquet"]["predictions"]
    assert echoed[0]["x"] == [pytest.approx(45.1), "Biscoe", "male", "true", "2021-03-04", "2020-05-03T10:20:00", 4000]
    assert echoed[1]["x"] == [None, "", "", "false", "", "2020-05-17T23:05:00", 3500]
    assert echoed[2]["x"][1] == "Mars" and echoed[2]["x"][3] == "" and echoed[2]["x"][-1] is None
    # the library's form agrees
    lib = P.predict(p.served, {k: v.reshape(-1) for k, v in mixed_feeds().items()}, "cpu")
    for mine, theirs in zip(lib.as_dict()["predictions"], echoed):
        x, y = mine.pop("x"), dict(theirs).pop("x")
        assert [np.float32(v) if isinstance(v, float) else v for v in x] == [
            np.float32(v) if isinstance(v, float) else v for v in y
        ]
        assert mine == {k: v for k, v in theirs.items() if k != "x"}


def test_an_encoded_models_outputs_carry_and_table(encoded, tmp_path):
    import pandas as pd

    model, _ = encoded
    paths = write_mixed(tmp_path)
    want = ort_outputs(model, mixed_feeds())
    classes = loose_predictor(model).arch.classes
    for fmt in ("csv", "parquet", "jsonl"):
        out = tmp_path / f"out.{fmt}"
        r = invoke_cli("predict", "--model", str(model), "--allow-unverified", "--input", str(paths["parquet"]),
                       "--carry", "id", "--carry", "island name", "--output", str(out))  # fmt: skip
        assert r.returncode == 0, r.stderr
        frame = {"csv": pd.read_csv, "parquet": pd.read_parquet}.get(fmt, lambda f: pd.read_json(f, lines=True))(out)
        assert list(frame.columns) == ["id", "island name", "label", *(f"p_{c}" for c in classes)]
        assert frame["id"].tolist() == [f"row-{i}" for i in range(4)]
        islands = [v if isinstance(v, str) else None for v in frame["island name"].tolist()]
        assert islands == ["Biscoe", None, "Mars", "Dream"]  # carried as the input holds it (a null)
        got = frame[[f"p_{c}" for c in classes]].to_numpy().astype(np.float32)
        assert np.array_equal(got, want), fmt
    r = invoke_cli("predict", "--model", str(model), "--allow-unverified", "--input", str(paths["csv"]))
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[0].split()[:2] == ["bill", "length/mm"] and len(lines) == 5
    assert lines[2].split()[:3] == ["NA", "NA", "NA"] and "Mars" in lines[3]  # missing shown as NA, text as written


def test_an_encoded_models_refusals_name_the_column_with_a_count(encoded, tmp_path):
    model, _ = encoded
    args = ("predict", "--model", str(model), "--allow-unverified", "--input")
    bad = tmp_path / "bad.csv"
    rows = ["bill length/mm,island name,sex,tagged,seen on,at,mass"]
    rows += [f"{b},Dream,male,true,2021-01-01,,{m}" for b, m in (("4o", 1), ("", 2), ("x", '"3,5"'), ("1", "?"))]
    bad.write_text("\n".join(rows) + "\n")
    r = invoke_cli(*args, str(bad))
    error = r.stderr.strip()
    assert r.returncode == 2 and error.count("\n") == 0, error
    assert "column 'bill length/mm' has 2 values that are not numbers (the first, '4o', at line 2)" in error
    assert "column 'mass' has 2 values that are not numbers (the first, '3,5', at line 4)" in error
    (tmp_path / "plain.csv").write_text("45,Dream,male,true,2021-01-01,,4000\n")
    r = invoke_cli(*args, str(tmp_path / "plain.csv"))
    assert r.returncode == 2 and "line 1 ('45,Dream,male,true,2021-01-01,,4000') is not a header line" in r.stderr
    r = invoke_cli("predict", "--model", str(model), "--allow-unverified", "45,Dream,male,true,2021-01-01,,4000")
    assert r.returncode == 2 and "rows as arguments: this model takes its columns by name" in r.stderr
    np.save(tmp_path / "x.npy", np.zeros((1, 7)))
    r = invoke_cli(*args, str(tmp_path / "x.npy"))
    assert r.returncode == 2 and "a .npy array: this model takes its columns by name" in r.stderr


def test_an_all_number_encoding_takes_gaps_as_nan_in_x(encoded, tmp_path):
    _, model = encoded
    p = loose_predictor(model)
    assert p.arch.encoding is not None and not p.arch.per_column and p.spec.takes_missing
    x = np.array([[0.5, np.nan, 1], [np.nan, np.nan, np.nan], [-1, 2, np.nan]], np.float32)
    want = ort_outputs(model, {"x": x})[:, 0].astype(np.float64)
    (tmp_path / "h.csv").write_text("y,e,b c/d,a\n?,1,,0.5\n?,NA,,\n?,,2,-1\n")
    (tmp_path / "n.csv").write_text("0.5,,1\nNA,,\n-1,2,N/A\n")  # no header: the gap on line 1 is data
    rows = [{"a": 0.5, "e": 1}, {"a": None, "b c/d": None}, {"a": -1, "b c/d": 2, "e": None}]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    np.save(tmp_path / "x.npy", x)
    sources = [
        {"path": tmp_path / "h.csv"},
        {"path": tmp_path / "n.csv"},
        {"path": tmp_path / "r.jsonl"},
        {"stdin": io.StringIO(json.dumps(rows))},
        {"path": tmp_path / "x.npy"},
        {"pairs": ["0.5,,1", "NA,,", "-1,2,"]},
    ]
    for source in sources:
        doc = run_json(p, **source)
        got = np.array([row["probability"] for row in doc["predictions"]])
        assert np.array_equal(got, want), source
        assert doc["predictions"][1]["x"] == [None, None, None]
    r = invoke_cli("predict", "--model", str(model), "--allow-unverified", "1,inf,0")
    assert r.returncode == 2 and "not finite" in r.stderr and "Inf and overflowing numbers are refused" in r.stderr


def test_a_loose_encoded_file_is_described_by_its_metadata(encoded, tmp_path):
    model, _ = encoded
    loose = tmp_path / "alone" / "model.onnx"
    loose.parent.mkdir()
    loose.write_bytes(model.read_bytes())
    with_manifest = loose_predictor(model)
    p = loose_predictor(loose)
    assert p.arch.encoding == with_manifest.arch.encoding and p.arch.per_column
    assert p.arch.n_encoded == with_manifest.arch.n_encoded and p.arch.features == MIXED_COLUMNS
    paths = write_mixed(tmp_path / "rows")
    assert (
        run_json(p, path=paths["parquet"])["predictions"]
        == run_json(with_manifest, path=paths["parquet"])["predictions"]
    )


def test_an_encoded_file_whose_manifest_says_another_encoding_is_refused(encoded, tmp_path):
    import shutil

    model, _ = encoded
    folder = tmp_path / "candidate"
    shutil.copytree(model.parent, folder)
    path = folder / "manifest.json"
    doc = json.loads(path.read_text())
    doc["model"]["encoding"]["columns"][0]["impute"] = [1.0]
    path.write_text(json.dumps(doc))
    with pytest.raises(CorruptArtifact, match="its metadata records another encoding of raw columns than its manifest"):
        loose_predictor(folder / "model.onnx")
