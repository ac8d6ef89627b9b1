"""`ship` and the model card for recipe models (multiclass with string classes, regression), built
without training: `build_model` + `set_scaling`, exported once, published with the artifacts helpers.

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
SOURCES = {"iris": "/data/iris.csv", "houses": "/data/houses.csv"}
TARGETS = {"iris": "species", "houses": "price"}


@functools.cache
def onnx_bytes(arch: Arch) -> bytes:
    """The network `arch` describes, seeded (not trained), with scaling statistics set, exported as
    export does (dynamo, opset 18, input x, output arch.output_name, symbolic batch) plus its metadata."""
    import tempfile

    import torch

    from pipeline.graph.export import _to_onnx
    from pipeline.training.model import build_model, set_scaling

    torch.manual_seed(0)
    model = build_model(arch).eval()
    n = arch.n_inputs
    set_scaling(model, arch, [float(i + 1) for i in range(n)], [0.5 + i for i in range(n)], 200.0, 50.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        _to_onnx(model, n, path, arch.output_name)
        proto = onnx.load(str(path))
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
        },
        train=TrainRecord("cpu", "autograd", 0.42, 0.0523, ((0, 1.1), (499, 0.0523))),
        validation=validation,
        export=ExportRecord(
            "torch.onnx.export(dynamo=True)",
            18,
            TensorRecord("x", ("batch", arch.n_inputs), "float32"),
            TensorRecord(arch.output_name, ("batch", arch.n_outputs), "float32"),
            1.0,
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
    for arch in (IRIS, HOUSES):
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
