"""`ship` and the model card for recipe models (multiclass with string classes, regression, and a
model that takes one raw input per column: numbers with gaps, text, a boolean, a date, named with
spaces and slashes), built without training: `build_model` + `set_scaling`, exported once (behind its
encoding when it has one), published with the artifacts helpers. Also `serve`'s reading of per-column
requests, without a server (`rest.parse_rest`).

`published_model` is also what tests/test_serve.py serves."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from pipeline import errors
from pipeline.graph.contract import metadata_props
from pipeline.serving import ship as S
from pipeline.serving.ship import ship_version
from pipeline.spec.archs import Arch
from pipeline.spec.encoding import CATEGORY, DATE, FLOAT, NUMBER, STRING, ColumnCode, Encoding
from pipeline.store import artifacts as A
from pipeline.store import versions
from pipeline.store.card import model_card
from pipeline.store.manifest import (
    ConfigRecord,
    ExportRecord,
    FileRecord,
    Manifest,
    TensorRecord,
    TrainRecord,
    ValidationRecord,
    VerifyRecord,
)

CLASSES = ("setosa", "versicolor", "virginica")
IRIS = Arch(
    name="iris",
    widths=(4, 8, 3),
    activation="relu",
    task="multiclass",
    features=("sepal_length", "sepal_width", "petal_length", "petal_width"),
    classes=CLASSES,
    scale_input=True,
)
HOUSES = Arch(
    name="houses",
    widths=(3, 6, 1),
    activation="tanh",
    task="regression",
    features=("rooms", "age", "distance"),
    classes=(),
    scale_input=True,
    scale_output=True,
    serving="house_prices",
)
# One raw input per column: a number with gaps (imputed, with an indicator), a text category, a
# boolean, a date, a numeric code as a category; names with spaces and slashes.
SALES_ENCODING = Encoding(
    (
        ColumnCode("lot size", NUMBER, FLOAT, (293.5,), True),
        ColumnCode("kind/type", CATEGORY, STRING, (), False, ("flat", "house", "villa")),
        ColumnCode("has pool", CATEGORY, STRING, (), False, ("false", "true"), boolean=True),
        ColumnCode("sold on", DATE, STRING, (2021.0, 6.0, 15.0, 3.0), True),
        ColumnCode("rooms", CATEGORY, FLOAT, (), False, (1.0, 2.0, 3.0)),
    )
)
SALES = Arch(
    name="sales",
    widths=(SALES_ENCODING.width, 6, 3),
    activation="tanh",
    task="multiclass",
    features=SALES_ENCODING.features,
    classes=("cheap", "fair", "dear"),
    scale_input=True,
    encoding=SALES_ENCODING,
)
# Names a config must escape: a double quote and a backslash.
ODD_ENCODING = Encoding(
    (
        ColumnCode('say "hi" \\ bye', CATEGORY, STRING, (), False, ("a", "b")),
        ColumnCode("x", NUMBER, FLOAT, (0.5,), False),
    )
)
ODD = Arch(
    name="odd",
    widths=(ODD_ENCODING.width, 1),
    task="regression",
    features=ODD_ENCODING.features,
    scale_input=True,
    scale_output=True,
    encoding=ODD_ENCODING,
)
SOURCES = {"iris": "/data/iris.csv", "houses": "/data/houses.csv", "sales": "/data/sales.csv", "odd": "/data/odd.csv"}
TARGETS = {"iris": "species", "houses": "price", "sales": "band", "odd": "y"}


@functools.cache
def onnx_bytes(arch: Arch) -> bytes:
    """The network `arch` describes, seeded (not trained), with scaling statistics set, exported as
    export does (dynamo, opset 18, or 20 with a date; input x, output arch.output_name, symbolic batch;
    behind its encoding when it has one, so the file takes raw columns) plus its metadata."""
    import torch

    from pipeline.graph.export import model_proto
    from pipeline.training.model import build_model, set_scaling

    torch.manual_seed(0)
    model = build_model(arch).eval()
    n = arch.n_encoded
    set_scaling(model, arch, [float(i + 1) for i in range(n)], [0.5 + i for i in range(n)], 200.0, 50.0)
    proto = model_proto(model, arch)
    del proto.metadata_props[:]
    for key, value in metadata_props(arch).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def verify_report(arch: Arch) -> dict:
    """A passing verify report, shaped as verify.Report.as_dict() (what model_card reads)."""
    return {
        "kind": "verify",
        "arch": arch.name,
        "reference": "float64 numpy oracle",
        "passed": True,
        "ran": {"ort-cpu": "onnxruntime, providers ['CPUExecutionProvider']", "onnx-reference": "onnx"},
        "skipped": {"ort-cuda": "no CUDA driver"},
        "tolerances": {"ort-cpu": {"atol": 1e-6, "rtol": 1e-5}, "onnx-reference": {"atol": 1e-6, "rtol": 1e-5}},
        "comparisons": [
            {"runtime": "ort-cpu", "max_abs": 3e-8},
            {"runtime": "onnx-reference", "max_abs": 6e-8},
        ],
        "input_sets": [{"name": "validation", "rows": 30, "seed": None}, {"name": "uniform-64", "rows": 64, "seed": 3}],
        "failures": [],
    }


def version_manifest(arch: Arch, files: dict[str, bytes]) -> Manifest:
    """The manifest of a verified version of `arch` holding `files`, with every section a recipe run writes."""
    regression = arch.task == "regression"
    validation = (
        ValidationRecord((), (), None, None, True, rmse=12.5, r2=0.81, max_rmse=20.0, rows=30, on="validation rows")
        if regression
        else ValidationRecord((), (), 0.9667, 0.9, True, rows=30, on="validation rows")
    )
    return Manifest(
        name=arch.name,
        files={n: FileRecord(hashlib.sha256(d).hexdigest(), len(d)) for n, d in files.items()},
        versions={"python": "3.11", "torch": "2.x", "onnxruntime": "1.x"},
        config=ConfigRecord(
            name=arch.name,
            widths=arch.widths,
            n_params=arch.n_params,
            steps=500,
            lr=0.01,
            seed=3,
            loss="MSE" if regression else "cross-entropy",
            optimizer="adam",
            tutorial_init=False,
            log_every=50,
            batch_size=32,
        ),
        model=arch.record(),
        recipe={
            "name": arch.name,
            "serving_name": arch.serving_name,
            "model": {"hidden": list(arch.hidden), "activation": arch.activation},
            "data": {
                "path": SOURCES[arch.name],
                "target": TARGETS[arch.name],
                "validation_fraction": 0.2,
                "split_seed": 0,
                "standardize": True,
            },
            "train": {"optimizer": "adam", "lr": 0.01, "steps": 500, "batch_size": 32, "seed": 3, "init_after": []},
            "gate": {"max_rmse": 20.0} if regression else {"min_accuracy": 0.9},
        },
        data={
            "source": SOURCES[arch.name],
            "sha256": "ab" * 32,
            "rows": 150,
            "train_rows": 120,
            "val_rows": 30,
            "features": list(arch.features),
            "target": TARGETS[arch.name],
            "task": arch.task,
            "classes": list(arch.classes),
            "stats": {"mean": [5.84, 3.06, 3.76, 1.2]} if arch is IRIS else {},  # data.Stats.record(), abridged
            "dropped_rows": 4 if arch is SALES else 0,
        },
        train=TrainRecord("cpu", "autograd", 0.42, 0.0523, ((0, 1.1), (499, 0.0523))),
        validation=validation,
        export=ExportRecord(
            "torch.onnx.export(dynamo=True)",
            20 if arch.encoding is not None and arch.encoding.has_dates else 18,
            TensorRecord("x", ("batch", arch.n_inputs), "float32"),
            TensorRecord(arch.output_name, ("batch", arch.n_outputs), "float32"),
            1.0,
            tuple(TensorRecord(c.name, ("batch", 1), c.dtype) for c in arch.encoding.columns if arch.per_column)
            if arch.encoding is not None
            else (),
        ),
        verify=VerifyRecord(True, {"ort-cpu": "onnxruntime"}, {}, {"ort-cpu": 3e-8}, ()),
        published_at="2026-11-25T00:00:00Z",
    )


def published_model(root: Path, arch: Arch) -> int:
    """Publish a verified version of `arch` in artifacts folder `root`, as publication does: the
    files, the model card, a manifest naming them all, the version folder, then PUBLISHED."""
    report = verify_report(arch)
    files = {A.ONNX: onnx_bytes(arch), A.VERIFY: json.dumps(report).encode()}
    files[A.CARD] = model_card(version_manifest(arch, files), report).encode()
    number = versions.create_version(root, arch.name, files, version_manifest(arch, files))
    versions.set_published(root, arch.name, number)
    return number


def version_files(root: Path, arch: Arch, number: int = 1) -> dict[str, bytes]:
    """What flow.ship_models hands ship_version: the version's files, as bytes."""
    folder = root / arch.name / f"v{number}"
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recipes")
    for arch in (IRIS, HOUSES, SALES, ODD):
        published_model(root, arch)
    return root


def _parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


# ---------------------------------------------------------------------------------------------
# The config and the labels


def test_a_multiclass_model_ships_with_its_labels_named_in_the_config(artifacts, tmp_path):
    r = ship_version(IRIS, 1, version_files(artifacts, IRIS), tmp_path / "repo")
    assert r.model_name == "iris" and r.labels_path == tmp_path / "repo" / "iris" / "labels.txt"
    assert r.labels_path.read_bytes() == b"setosa\nversicolor\nvirginica\n"  # output order, one per line
    cfg = _parse(r.config_path)  # Triton's own schema
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("x", model_config_pb2.TYPE_FP32, [4])]
    assert [(o.name, o.data_type, list(o.dims), o.label_filename) for o in cfg.output] == [
        ("probabilities", model_config_pb2.TYPE_FP32, [3], "labels.txt")
    ]
    assert cfg.max_batch_size == 1024 and list(cfg.version_policy.specific.versions) == [1]
    assert sorted(p.name for p in (tmp_path / "repo" / "iris").iterdir()) == ["1", "config.pbtxt", "labels.txt"]
    assert r.written == ("iris/1", "iris/labels.txt", "iris/config.pbtxt")


@pytest.mark.parametrize("reader", ["own", "triton"])
def test_a_config_that_loses_its_label_file_is_refused_by_either_reader(artifacts, tmp_path, monkeypatch, reader):
    real = S.config_pbtxt
    drop = '\n    label_filename: "labels.txt"'
    monkeypatch.setattr(S, "config_pbtxt", lambda *a, **k: real(*a, **k).replace(drop, ""))
    if reader == "own":
        monkeypatch.setattr(S, "_triton_schema", lambda: None)  # the base install
    else:
        monkeypatch.setattr(S, "_check_own_reading", lambda *a: None)
    with pytest.raises(errors.CorruptArtifact, match="label_filename"):
        ship_version(IRIS, 1, version_files(artifacts, IRIS), tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_a_regression_model_ships_under_its_serving_name_without_labels(artifacts, tmp_path):
    r = ship_version(HOUSES, 1, version_files(artifacts, HOUSES), tmp_path / "repo")
    assert r.model_name == "house_prices" and r.labels_path is None
    cfg = _parse(r.config_path)
    assert cfg.name == "house_prices"
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("x", [3])]
    assert [(o.name, list(o.dims), o.label_filename) for o in cfg.output] == [("value", [1], "")]
    assert not (tmp_path / "repo" / "house_prices" / "labels.txt").exists()
    assert (tmp_path / "repo" / "house_prices" / "1" / "model.onnx").read_bytes() == onnx_bytes(HOUSES)


def test_the_network_comes_from_the_manifest_only_the_name_from_the_caller(artifacts, tmp_path):
    r = ship_version("iris", 1, version_files(artifacts, IRIS), tmp_path / "repo")
    assert r.labels_path is not None and _parse(r.config_path).output[0].dims == [3]


def test_shipping_the_same_version_again_writes_nothing(artifacts, tmp_path):
    files = version_files(artifacts, IRIS)
    first = ship_version(IRIS, 1, files, tmp_path / "repo")
    model_dir = first.config_path.parent
    stamp = {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")}
    again = ship_version(IRIS, 1, files, tmp_path / "repo")
    assert again.noop and again.written == ()
    assert {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")} == stamp
    other = ship_version(IRIS, 1, files, tmp_path / "repo", instances=2)  # a new option: only the config
    assert other.noop and other.written == ("iris/config.pbtxt",)


def test_changed_labels_are_rewritten_and_a_damaged_version_is_refused(artifacts, tmp_path):
    files = version_files(artifacts, IRIS)
    r = ship_version(IRIS, 1, files, tmp_path / "repo")
    r.labels_path.write_bytes(b"a\nb\nc\n")  # someone edited it: the next ship puts the model's back
    again = ship_version(IRIS, 1, files, tmp_path / "repo")
    assert again.written == ("iris/labels.txt",) and r.labels_path.read_bytes() == b"setosa\nversicolor\nvirginica\n"
    card = r.model_path.parent / "MODEL_CARD.md"
    card.write_bytes(b"# another card")
    with pytest.raises(errors.IntegrityError, match="MODEL_CARD.md sha256") as info:
        ship_version(IRIS, 1, files, tmp_path / "repo")
    assert hashlib.sha256(files["MODEL_CARD.md"]).hexdigest() in str(info.value)
    card.unlink()
    with pytest.raises(errors.IntegrityError, match="MODEL_CARD.md sha256 absent there"):
        ship_version(IRIS, 1, files, tmp_path / "repo")


def test_a_labels_file_that_is_a_symlink_is_refused(artifacts, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    (tmp_path / "repo" / "iris").mkdir(parents=True)
    (tmp_path / "repo" / "iris" / "labels.txt").symlink_to(outside)
    with pytest.raises(errors.IntegrityError, match="symbolic link"):
        ship_version(IRIS, 1, version_files(artifacts, IRIS), tmp_path / "repo")
    assert outside.read_bytes() == b"not yours" and not (tmp_path / "repo" / "iris" / "1").exists()


def test_a_failed_config_write_puts_the_old_labels_back(artifacts, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    ship_version(IRIS, 1, version_files(artifacts, IRIS), repo)
    (repo / "iris" / "labels.txt").write_bytes(b"old\nlabels\nhere\n")
    before = {p: p.read_bytes() for p in (repo / "iris").rglob("*") if p.is_file()}
    real = A.write_atomic

    def write_atomic(path, data):
        if path.name == "config.pbtxt":
            raise A.write_error(path, OSError(28, "No space left on device"))
        real(path, data)

    monkeypatch.setattr(A, "write_atomic", write_atomic)
    with pytest.raises(errors.ArtifactWriteError, match="disk full"):
        ship_version(IRIS, 1, version_files(artifacts, IRIS), repo, instances=3)
    assert {p: p.read_bytes() for p in (repo / "iris").rglob("*") if p.is_file()} == before


def test_a_regression_version_removes_labels_a_multiclass_one_left(artifacts, tmp_path):
    repo = tmp_path / "repo"
    ship_version(HOUSES, 1, version_files(artifacts, HOUSES), repo)
    (repo / "house_prices" / "labels.txt").write_bytes(b"stale\n")
    r = ship_version(HOUSES, 1, version_files(artifacts, HOUSES), repo, instances=2)
    assert not (repo / "house_prices" / "labels.txt").exists() and "house_prices/labels.txt (removed)" in r.written


@pytest.mark.parametrize(
    "classes, why",
    [
        (("a", "b\nc", "d"), "line break"),
        (("a", "b\r", "d"), "line break"),
        (("a", "b\u2028c", "d"), "line break"),
        (("a", "b\x00", "d"), "NUL"),
        (("a", "\ud800", "d"), "not Unicode"),
    ],
    ids=["newline", "carriage-return", "line-separator", "nul", "lone-surrogate"],
)
def test_a_class_name_that_cannot_be_one_line_is_refused(classes, why):
    arch = Arch(name="odd", widths=(4, 3), task="multiclass", features=IRIS.features, classes=classes)
    with pytest.raises(errors.UsageError, match=why) as info:
        S.labels_txt(arch)
    assert "\n" not in str(info.value)


def test_class_values_are_written_as_the_data_holds_them():
    def labels(classes):
        arch = Arch(name="n", widths=(2, len(classes)), task="multiclass", classes=classes)
        return S.labels_txt(arch)

    assert labels((1, 2, 3)) == b"1\n2\n3\n"
    assert labels((0.5, 1.5)) == b"0.5\n1.5\n"
    assert labels((False, True)) == b"false\ntrue\n"
    assert labels(("", "é", "a b")) == "\né\na b\n".encode()
    with pytest.raises(errors.UsageError, match="written the same"):
        labels((1, "1"))
    assert S.labels_txt(HOUSES) is None


def test_a_graph_that_is_not_the_described_network_is_refused(artifacts, tmp_path):
    files = version_files(artifacts, IRIS)
    manifest = Manifest.from_json(files["manifest.json"], "m")
    record = dict(manifest.model, widths=[4, 8, 3], classes=["a", "b", "c"])  # other classes, same shape
    other = {**files, "manifest.json": manifest.replace(model=record).to_json()}
    with pytest.raises(errors.CorruptArtifact, match="classes"):  # the file's own metadata disagrees
        ship_version(IRIS, 1, other, tmp_path / "repo")
    regression = dict(manifest.model, task="regression", widths=[4, 8, 1], classes=[], scale_output=True)
    other = {**files, "manifest.json": manifest.replace(model=regression).to_json()}
    with pytest.raises(errors.CorruptArtifact):
        ship_version(IRIS, 1, other, tmp_path / "repo")
    assert not (tmp_path / "repo" / "iris").exists()


def test_model_tensors_name_both_signatures_when_they_differ():
    model = onnx.load_from_string(onnx_bytes(IRIS))
    assert S.model_tensors(IRIS, model)[1][0].label_filename == "labels.txt"
    with pytest.raises(errors.CorruptArtifact, match=r"input x TYPE_FP32\[4\].*says input x TYPE_FP32\[3\]"):
        S.model_tensors(HOUSES, model)


# ---------------------------------------------------------------------------------------------
# The model card


def test_the_model_card_of_a_multiclass_recipe_model(artifacts):
    card = (artifacts / "iris" / "v1" / "MODEL_CARD.md").read_text()
    manifest = Manifest.from_json((artifacts / "iris" / "v1" / "manifest.json").read_bytes(), "m")
    for needle in (
        "# Model card: iris (multiclass MLP)",
        "`sepal_length`, `sepal_width`, `petal_length`, `petal_width`",
        "`setosa`, `versicolor`, `virginica`",
        "`/data/iris.csv`",
        "ab" * 32,
        "rows: 150; split: 120 training, 30 validation (validation fraction 0.2, split seed 0)",
        "layers [4, 8, 3]: Linear + relu",
        "inputs standardized in the graph",
        "adam lr 0.01, 500 steps, batch size 32, seed 3",
        "trained on cpu with the autograd loop",
        "final training loss 0.0523",
        "accuracy on the 30 validation rows: 0.9667 (gate: at least 0.9000, passed)",
        "Verdict: PASS",
        "| ort-cpu |",
        "output `probabilities`: float32 [batch, 3]",
        "labels.txt",
        "xorship predict --recipe iris.toml --input rows.csv",
        'client.infer("iris"',
        "x = np.array([[5.84, 3.06, 3.76, 1.2]], dtype=np.float32)",  # the training split's means
        "class_count=1",
        manifest.files["model.onnx"].sha256,
    ):
        assert needle in card, needle
    assert "XOR" not in card


def test_the_model_card_of_a_regression_recipe_model():
    files = {A.ONNX: b"onnx", A.VERIFY: b"{}"}
    card = model_card(version_manifest(HOUSES, files), verify_report(HOUSES))
    for needle in (
        "# Model card: houses (regression MLP)",
        "`rooms`, `age`, `distance`",
        "target `price`: a number",
        "RMSE on the 30 validation rows: 12.5, R² 0.8100 (gate: at most 20, passed)",
        "output un-standardized in the graph",
        "output `value`",
        'client.infer("house_prices"',
        "x = np.array([[0.0, 0.0, 0.0]], dtype=np.float32)",  # no statistics recorded: zeros
        "Known limits",
    ):
        assert needle in card, needle
    assert "labels.txt" not in card and "accuracy" not in card


# ---------------------------------------------------------------------------------------------
# Integrity, round 3: a Triton model folder serves one model


def _builtin_files(shipped, arch="shallow"):
    folder = shipped / arch / "v1"
    return {n: (folder / n).read_bytes() for n in ("model.onnx", "manifest.json", "verify.json", "MODEL_CARD.md")}


def _tree(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else "dir") for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("number", [1, 2])
def test_another_model_is_never_shipped_into_a_builtins_folder(shipped, tmp_path, number):
    """An iris model served as `xor_shallow` (an older release let a recipe take that name): version 1
    collides with the XOR model's version 1; version 2 would sit beside it and re-pin the config, and
    Triton would answer `xor_shallow` with iris. Both are refused, naming both models."""
    import dataclasses

    from pipeline.spec.archs import ARCHS

    repo = tmp_path / "repo"
    ship_version(ARCHS["shallow"], 1, _builtin_files(shipped), repo)
    before = _tree(repo)
    impostor = dataclasses.replace(IRIS, serving="xor_shallow")
    root = tmp_path / "artifacts"
    published_model(root, impostor)
    files = version_files(root, impostor)
    if number == 2:
        manifest = Manifest.from_json(files["manifest.json"], "t").replace(version=2, sealed=False)
        files = {**files, "manifest.json": manifest.to_json()}
        files.pop(A.SEAL)
    with pytest.raises(errors.IntegrityError, match="serves model 'shallow'.*not 'iris'") as info:
        ship_version(impostor, number, files, repo)
    assert info.value.exit_code == 6 and "\n" not in str(info.value)
    assert _tree(repo) == before  # not a byte changed: no version 2, the config still pins the XOR model


def test_a_config_written_for_another_model_or_by_hand_is_not_replaced(shipped, tmp_path):
    from pipeline.spec.archs import ARCHS

    repo = tmp_path / "repo"
    ship_version(ARCHS["shallow"], 1, _builtin_files(shipped), repo)
    shutil_rm = __import__("shutil").rmtree
    shutil_rm(repo / "xor_shallow" / "1")  # only the config is left: it still names its model
    import dataclasses

    impostor = dataclasses.replace(IRIS, serving="xor_shallow")
    root = tmp_path / "artifacts"
    published_model(root, impostor)
    with pytest.raises(errors.IntegrityError, match="config.pbtxt serves model 'shallow', not 'iris'"):
        ship_version(impostor, 1, version_files(root, impostor), repo)
    (repo / "xor_shallow" / "config.pbtxt").write_text('name: "xor_shallow"\nplatform: "onnxruntime_onnx"\n')
    with pytest.raises(errors.IntegrityError, match="was not written by ship"):
        ship_version(impostor, 1, version_files(root, impostor), repo)
    (repo / "xor_shallow" / "config.pbtxt").unlink()
    (repo / "xor_shallow" / "7").mkdir()  # a version someone else put there
    (repo / "xor_shallow" / "7" / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(errors.IntegrityError, match="version 7 was not shipped by xorship"):
        ship_version(impostor, 1, version_files(root, impostor), repo)


def test_the_same_model_with_a_new_contract_is_a_new_version_and_re_pins_the_config(tmp_path):
    root = tmp_path / "artifacts"
    published_model(root, IRIS)
    wider = Arch(name="iris", widths=(3, 5, 4), activation="gelu", task="multiclass", features=("a", "b", "c"),
                 classes=("p", "q", "r", "s"), scale_input=True)  # fmt: skip
    assert published_model(root, wider) == 2
    repo = tmp_path / "repo"
    ship_version(IRIS, 1, version_files(root, IRIS, 1), repo)
    r = ship_version(wider, 2, version_files(root, wider, 2), repo)
    cfg = _parse(r.config_path)
    assert list(cfg.version_policy.specific.versions) == [2] and list(cfg.input[0].dims) == [3]
    assert cfg.parameters["xorship_model"].string_value == "iris"
    assert (repo / "iris" / "labels.txt").read_text().split() == ["p", "q", "r", "s"]


def test_ship_leaves_no_lock_file_in_the_repository(artifacts, tmp_path):
    repo = tmp_path / "repo"
    ship_version(IRIS, 1, version_files(artifacts, IRIS), repo)
    ship_version(IRIS, 1, version_files(artifacts, IRIS), repo, instances=2)
    assert sorted(p.name for p in repo.iterdir()) == ["iris"]  # Triton's tree and nothing else
    with A.run_lock(repo):  # a ship running meanwhile is still refused
        with pytest.raises(errors.FolderLocked):
            ship_version(IRIS, 1, version_files(artifacts, IRIS), repo)


def test_the_same_version_number_of_another_model_and_a_linked_version_are_refused_naming_both(tmp_path):
    import dataclasses

    root = tmp_path / "artifacts"
    other = dataclasses.replace(HOUSES, serving="flowers")
    mine = dataclasses.replace(IRIS, serving="flowers")
    published_model(root, other)
    published_model(root, mine)
    repo = tmp_path / "repo"
    ship_version(other, 1, version_files(root, other), repo)
    (repo / "flowers" / "config.pbtxt").unlink()  # only the version folder says whose it is
    with pytest.raises(errors.IntegrityError, match="serves model 'houses'.*not 'iris'"):
        ship_version(mine, 1, version_files(root, mine), repo)
    (repo / "flowers" / "3").symlink_to(repo / "flowers" / "1")
    with pytest.raises(errors.IntegrityError, match="version 3 is a symbolic link"):
        ship_version(other, 1, version_files(root, other), repo)


# ---------------------------------------------------------------------------------------------
# Models that take one raw input per column (issue 23): ship, the model card, serve's reading


def _onnx_inputs(data: bytes) -> list[tuple[str, int]]:
    """(name, Triton data type) of the ONNX graph's inputs, read with onnx (the independent side)."""
    from onnx import TensorProto

    to_triton = {TensorProto.FLOAT: model_config_pb2.TYPE_FP32, TensorProto.STRING: model_config_pb2.TYPE_STRING}
    model = onnx.load_from_string(data)
    return [(i.name, to_triton[i.type.tensor_type.elem_type]) for i in model.graph.input]


def _sales_rows() -> dict:
    """Raw rows as the graph takes them: a gap, an unseen category, missing text, a bad date, a
    boolean spelled TRUE, a numeric code never seen in training."""
    import numpy as np

    return {
        "lot size": np.array([120.5, np.nan, 300.0, np.nan], np.float32),
        "kind/type": np.array(["flat", "castle", "", "villa"], object),
        "has pool": np.array(["true", "TRUE", "no", ""], object),
        "sold on": np.array(["2021-03-04", "2021-02-30", "not a date", ""], object),
        "rooms": np.array([1.0, 2.0, 7.0, np.nan], np.float32),
    }


def _session_run(data: bytes, feeds: dict):
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feed = {
        k: (v.astype(object) if v.dtype == object else v.astype(np.float32)).reshape(-1, 1) for k, v in feeds.items()
    }
    return sess.run(None, feed)[0]


def test_a_per_column_model_ships_one_input_per_column_named_as_the_column(artifacts, tmp_path):
    import numpy as np

    files = version_files(artifacts, SALES)
    r = ship_version(SALES, 1, files, tmp_path / "repo")
    cfg = _parse(r.config_path)  # Triton's own schema
    got = [(i.name, i.data_type, list(i.dims)) for i in cfg.input]
    assert got == [(name, t, [1]) for name, t in _onnx_inputs(files[A.ONNX])]
    assert [g[0] for g in got] == ["lot size", "kind/type", "has pool", "sold on", "rooms"]  # no renaming
    assert [g[1] for g in got] == [
        model_config_pb2.TYPE_FP32,
        *[model_config_pb2.TYPE_STRING] * 3,
        model_config_pb2.TYPE_FP32,
    ]
    assert [(o.name, list(o.dims), o.label_filename) for o in cfg.output] == [("probabilities", [3], "labels.txt")]
    assert cfg.max_batch_size == 1024 and list(cfg.version_policy.specific.versions) == [1]
    # where the nodes run on a GPU instance: said in the config's comments and the result
    text = r.config_path.read_text()
    assert text.startswith("# ") and all(f"# {n}\n" in text for n in r.notes)
    assert any("CPU provider" in n and "LabelEncoder" in n and "RegexFullMatch" in n for n in r.notes)
    # the shipped file, fed by the config's names in a plain onnxruntime session: an unseen category
    # and missing text are the same all-zero code, so the rows differing only there agree
    data = (r.model_path).read_bytes()
    rows = _sales_rows()
    out = _session_run(data, {i.name: rows[i.name] for i in cfg.input})
    assert out.shape == (4, 3) and np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
    same = {k: v[[1, 1]].copy() for k, v in rows.items()}
    same["kind/type"] = np.array(["castle", ""], object)
    a, b = _session_run(data, same)
    assert a.tobytes() == b.tobytes()


def test_names_with_quotes_and_backslashes_are_escaped_and_read_back_by_both_readers(artifacts, tmp_path, monkeypatch):
    files = version_files(artifacts, ODD)
    r = ship_version(ODD, 1, files, tmp_path / "repo")
    text = r.config_path.read_text()
    assert 'name: "say \\"hi\\" \\\\ bye"' in text
    assert [i.name for i in _parse(r.config_path).input] == ['say "hi" \\ bye', "x"]
    assert [i["name"] for i in S.read_pbtxt(text)["input"]] == [['say "hi" \\ bye'], ["x"]]
    monkeypatch.setattr(S, "_triton_schema", lambda: None)  # the base install ships it too
    assert ship_version(ODD, 1, files, tmp_path / "repo2").config_path.read_text() == text


@pytest.mark.parametrize("name", ["a\nb", "a\tb", "nul\x00", "", "\ud800"])
def test_a_tensor_name_triton_cannot_carry_is_refused(name):
    assert S.tensor_name_problem(name)
    if name == "\ud800":
        return  # not even an ONNX name (protobuf strings are UTF-8)
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", [name], ["y"])],
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
    )
    with pytest.raises(errors.CorruptArtifact, match="cannot be written in a Triton config"):
        S.triton_tensors(helper.make_model(graph))


@pytest.mark.parametrize("name", ["lot size", "kind/type", 'say "hi"', "a\\b", "é ü", "x:0"])
def test_names_with_spaces_slashes_and_quotes_are_tensor_names(name):
    assert S.tensor_name_problem(name) is None
    cfg = text_format.Parse(f"input [ {{ name: {S.pbtxt_string(name)} }} ]", model_config_pb2.ModelConfig())
    assert cfg.input[0].name == name


@pytest.mark.parametrize("reader", ["own", "triton"])
def test_a_config_that_retypes_a_text_column_is_refused_by_either_reader(artifacts, tmp_path, monkeypatch, reader):
    real = S.config_pbtxt
    monkeypatch.setattr(
        S, "config_pbtxt", lambda *a, **k: real(*a, **k).replace("data_type: TYPE_STRING", "data_type: TYPE_FP32", 1)
    )
    if reader == "own":
        monkeypatch.setattr(S, "_triton_schema", lambda: None)
    else:
        monkeypatch.setattr(S, "_check_own_reading", lambda *a: None)
    with pytest.raises(errors.CorruptArtifact, match="kind/type"):
        ship_version(SALES, 1, version_files(artifacts, SALES), tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_a_graph_whose_columns_differ_from_the_description_is_refused():
    model = onnx.load_from_string(onnx_bytes(ODD))
    with pytest.raises(errors.CorruptArtifact, match=r"says input lot size TYPE_FP32\[1\], kind/type TYPE_STRING\[1\]"):
        S.model_tensors(SALES, model)
    assert S.model_tensors(SALES, onnx.load_from_string(onnx_bytes(SALES)))[0][1].data_type == "TYPE_STRING"


def test_the_model_card_of_a_per_column_model_describes_each_input(artifacts):
    import numpy as np

    card = (artifacts / "sales" / "v1" / "MODEL_CARD.md").read_text()
    for needle in (
        "inputs: one per column, named exactly as the columns in the data, each [batch, 1]",
        "| column | kind | graph input | encoded as | missing or unknown |",
        "| `lot size` | number | float32 | its value + a missing indicator | NaN: filled with 293.5 (training median), indicator 1 |",
        '| `kind/type` | category (text) | string | one-hot over 3: `flat`, `house`, `villa` | a value never seen in training, or "": all zeros |',
        '| `has pool` | boolean | string | one-hot over 2: `false`, `true` | any other value or "": all zeros |',
        '| `sold on` | date | string | year, month, day, weekday + a missing indicator | not ISO or "": parts filled'
        " with the training medians (year 2021, month 6, day 15, weekday 3), indicator 1 |",
        "| `rooms` | category (numeric codes) | float32 | one-hot over 3: `1`, `2`, `3` | a code never seen",
        'handle_unknown="ignore"',
        "rows left out of training because their target is missing: 4",
        f"5 raw columns into the network's {SALES.n_encoded} inputs",
        "CPU provider inside the same session",
        "# rows.csv: a header line `lot size,kind/type,has pool,sold on,rooms`",
        'result = client.infer("sales", inputs, outputs=[out])',
    ):
        assert needle in card, needle
    # the usage example's columns are what the shipped file takes: run them in a plain session
    block = card.split("```python\n", 1)[1].split("```", 1)[0]
    start = block.index("columns = {")
    end = block.index("}\n", start) + 2
    scope: dict = {"np": np}
    exec(block[start:end], scope)  # noqa: S102 - our own card's example
    columns = scope["columns"]
    assert list(columns) == list(SALES.features)
    assert [v.dtype == object for v in columns.values()] == [c.dtype == STRING for c in SALES_ENCODING.columns]
    out = _session_run(onnx_bytes(SALES), {k: v.reshape(-1) for k, v in columns.items()})
    assert out.shape == (1, 3) and np.isfinite(out).all()


# serve's reading of per-column requests, without a server: what a request becomes is what predict takes


@pytest.fixture(scope="module")
def sales_loaded(artifacts):
    from pipeline.serving import protocol as P

    return P.load(artifacts, "sales", None, "cpu")


def _rest(inputs: list[dict], binary: bytes = b"") -> tuple[bytes, str | None]:
    head = json.dumps({"inputs": inputs}).encode()
    return head + binary, (str(len(head)) if binary else None)


def _triton_bytes(values) -> bytes:
    """Triton's BYTES encoding, by tritonclient (the client's side)."""
    import numpy as np
    from tritonclient.utils import serialize_byte_tensor

    return serialize_byte_tensor(np.array(values, dtype=object)).item()


def test_serve_reads_one_tensor_per_column_as_predict_takes_them(sales_loaded):
    import numpy as np

    from pipeline.serving import predict as P
    from pipeline.serving import rest as R

    rows = _sales_rows()
    want = P.Predictor(sales_loaded.served, "cpu").outputs(rows).astype(np.float32)
    assert [t["name"] for t in sales_loaded.inputs] == list(SALES.features)
    assert [t["datatype"] for t in sales_loaded.inputs] == ["FP32", "BYTES", "BYTES", "BYTES", "FP32"]
    assert all(t["shape"] == [-1, 1] for t in sales_loaded.inputs)

    def tensor(name, dtype, data=None, size=None):
        t = {"name": name, "datatype": dtype, "shape": [4, 1]}
        if data is not None:
            t["data"] = data
        if size is not None:
            t["parameters"] = {"binary_data_size": size}
        return t

    def numbers(v):
        return [None if np.isnan(x) else float(x) for x in v]

    # JSON: null is a missing number; columns in any order
    as_json = [
        tensor("rooms", "FP32", numbers(rows["rooms"])),
        tensor("lot size", "FP32", [[x] for x in numbers(rows["lot size"])]),  # nested as [rows, 1]
        *[tensor(n, "BYTES", list(rows[n])) for n in ("kind/type", "has pool", "sold on")],
    ]
    body, head = _rest(as_json)
    got = R.parse_rest(body, head, sales_loaded, 64)
    assert sales_loaded.run(got.x).tobytes() == want.tobytes()
    # the NaN token (Python's json writes it) is missing too
    body = body.replace(b"null", b"NaN")
    assert sales_loaded.run(R.parse_rest(body, None, sales_loaded, 64).x).tobytes() == want.tobytes()
    # binary: FP32 little-endian with NaN, BYTES in Triton's length-prefixed encoding, in the inputs' order
    parts = [
        rows["lot size"].astype("<f4").tobytes(),
        *[_triton_bytes(rows[n]) for n in ("kind/type", "has pool", "sold on")],
        rows["rooms"].astype("<f4").tobytes(),
    ]
    names = ["lot size", "kind/type", "has pool", "sold on", "rooms"]
    as_binary = [tensor(n, d["datatype"], size=len(p)) for n, d, p in zip(names, sales_loaded.inputs, parts)]
    body, head = _rest(as_binary, b"".join(parts))
    assert sales_loaded.run(R.parse_rest(body, head, sales_loaded, 64).x).tobytes() == want.tobytes()
    # mixed: some inputs as JSON, others binary
    mixed = [as_json[1], *as_binary[1:4], as_json[0]]
    body, head = _rest(mixed, b"".join(parts[1:4]))
    assert sales_loaded.run(R.parse_rest(body, head, sales_loaded, 64).x).tobytes() == want.tobytes()


def _one(name, dtype, data, rows=1):
    return {"name": name, "datatype": dtype, "shape": [rows, 1], "data": data}


GOOD = {
    "lot size": _one("lot size", "FP32", [1.0]),
    "kind/type": _one("kind/type", "BYTES", ["flat"]),
    "has pool": _one("has pool", "BYTES", ["true"]),
    "sold on": _one("sold on", "BYTES", ["2021-01-01"]),
    "rooms": _one("rooms", "FP32", [2.0]),
}


def _with(**changes) -> list[dict]:
    out = []
    for name, t in GOOD.items():
        if name.replace(" ", "_").replace("/", "_") in changes:
            new = changes[name.replace(" ", "_").replace("/", "_")]
            if new is not None:
                out.append(new)
        else:
            out.append(t)
    return out


PER_COLUMN_BAD = [
    ("a missing input", _with(sold_on=None), "the request has no input 'sold on'"),
    ("an unknown input", [*_with(rooms=None), _one("room", "FP32", [2.0])], "unknown input 'room'"),
    ("an input twice", [*_with(rooms=None), GOOD["lot size"]], "input 'lot size' is given twice"),
    ("FP32 for a text column", _with(kind_type=_one("kind/type", "FP32", [1.0])), "input 'kind/type' must be BYTES, got FP32"),
    ("BYTES for a number", _with(lot_size=_one("lot size", "BYTES", ["1"])), "input 'lot size' must be FP32, got BYTES"),
    ("row counts that differ", _with(has_pool=_one("has pool", "BYTES", ["true", "false"], rows=2)), "has 2 rows and input 'lot size' has 1"),
    ("a width of 2", _with(rooms={**GOOD["rooms"], "shape": [1, 2], "data": [1.0, 2.0]}), "must have shape [rows, 1]"),
    ("a number as text", _with(kind_type=_one("kind/type", "BYTES", [3])), "3 at position 0 is not a string"),
    ("true as text", _with(has_pool=_one("has pool", "BYTES", [True])), "true/false at position 0 is not a string"),
    ("the string NaN as FP32", _with(lot_size=_one("lot size", "FP32", ["NaN"])), "a missing value is null"),
    ("Infinity", _with(lot_size=_one("lot size", "FP32", [float("inf")])), "infinite"),
    ("beyond float32", _with(lot_size=_one("lot size", "FP32", [1e39])), "infinite"),
    ("a lone surrogate", _with(kind_type=_one("kind/type", "BYTES", ["\ud800"])), "not valid Unicode"),
    ("too few strings", _with(sold_on=_one("sold on", "BYTES", []) ), "does not match shape [1, 1]"),
]  # fmt: skip


@pytest.mark.parametrize("case,inputs,message", PER_COLUMN_BAD, ids=[c[0] for c in PER_COLUMN_BAD])
def test_serve_refuses_a_bad_per_column_request_with_one_message(sales_loaded, case, inputs, message):
    from pipeline.serving import protocol as P
    from pipeline.serving import rest as R

    body = json.dumps({"inputs": inputs}).encode()
    with pytest.raises(P.BadRequest, match=None) as info:
        R.parse_rest(body, None, sales_loaded, 64)
    assert message in str(info.value) and info.value.status == 400 and "\n" not in str(info.value)
    good = R.parse_rest(json.dumps({"inputs": list(GOOD.values())}).encode(), None, sales_loaded, 64)
    assert sales_loaded.run(good.x).shape == (1, 3)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x02\x00\x00\x00\xff\xfe", "not UTF-8 text"),
        (b"\x05\x00\x00\x00flat\xc3", "not UTF-8 text"),
        (b"\x05\x00\x00\x00flat", "says 5 bytes, 4 are left"),
        (b"\x04\x00\x00\x00flat\x00", "1 bytes after the 1 strings"),
        (b"\x04\x00", "not Triton's BYTES encoding"),
    ],
    ids=["invalid-start", "truncated-utf8", "short", "trailing", "no-length"],
)
def test_serve_refuses_bytes_that_are_not_utf8_or_not_tritons_encoding(sales_loaded, raw, message):
    from pipeline.serving import protocol as P
    from pipeline.serving import rest as R

    inputs = _with(
        kind_type={
            "name": "kind/type",
            "datatype": "BYTES",
            "shape": [1, 1],
            "parameters": {"binary_data_size": len(raw)},
        }
    )
    body, head = _rest(inputs, raw)
    with pytest.raises(P.BadRequest, match=message):
        R.parse_rest(body, head, sales_loaded, 64)


def test_serve_says_where_the_string_nodes_run(sales_loaded, artifacts):
    from pipeline.checks.runtimes import CPU_EP, CUDA_EP, ProviderReport
    from pipeline.graph.encoding_graph import nodes_on_strings
    from pipeline.serving import protocol as P

    count, ops = sales_loaded.strings
    model = onnx.load_from_string(onnx_bytes(SALES))
    fed = {i.name for i in model.graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.STRING}
    readers = {n.op_type for n in model.graph.node if fed & set(n.input)}  # nodes reading a string input
    assert readers <= set(ops) and {"LabelEncoder", "RegexFullMatch", "StringSplit"} <= set(ops)
    assert "Gemm" not in ops and count >= len([n for n in model.graph.node if fed & set(n.input)])
    assert nodes_on_strings(onnx.load_from_string(onnx_bytes(IRIS))) == (0, ())
    line = sales_loaded.describe()
    assert "takes 5 columns, one input each (2 FP32, 3 BYTES)" in line
    assert line.endswith(f"runs on {CPU_EP}") and "CUDA" not in line  # the CPU path: everything on the CPU
    cuda = ProviderReport("cuda", (CUDA_EP, CPU_EP), None)
    text = P.provider_line(cuda, (count, ops))
    assert text.startswith(f"runs on {CUDA_EP}, except its {count} nodes that take or make strings (")
    assert f"which run on {CPU_EP} in the same session" in text
    assert P.provider_line(cuda, (0, ())) == f"runs on {CUDA_EP}"
    fallback = ProviderReport("cuda", (CPU_EP,), "no CUDA driver")
    assert P.provider_line(fallback, (count, ops)) == f"runs on {CPU_EP} (no CUDA driver)"
