"""`ship_version`: a published version into a Triton repository (checked with Triton's own
model-config schema); the model card; the loss curve."""

import errno
import hashlib
import json
import os
import struct
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2

from pipeline import errors
from pipeline.serving import ship as S
from pipeline.serving.ship import ship_version
from pipeline.spec.archs import ARCHS
from pipeline.store import artifacts as A
from pipeline.store.card import model_card
from pipeline.store.manifest import FileRecord, Manifest

NAMES = ["model.onnx", "manifest.json", "verify.json"]


def _model_folder(shipped, arch):
    """The `shipped` fixture's published version folder for `arch` (the one place that knows the layout)."""
    return shipped / arch / f"v{(shipped / arch / 'PUBLISHED').read_text().strip()}"


def _version_files(shipped, arch):
    """What the caller hands ship_version: the published version's files, as bytes."""
    folder = _model_folder(shipped, arch)
    return {n: (folder / n).read_bytes() for n in [*NAMES, "MODEL_CARD.md"]}


def _parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _tree(root):
    """Everything under `root` (links not followed) but the lock: {relative path: bytes | 'dir' | 'link'}."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if rel == A.LOCK:
                continue
            out[rel] = "link" if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes()
    return out


def _temporaries(root):
    return [p for p in Path(root).rglob("*") if p.name.startswith(A.TMP_PREFIX)]


def _with_manifest(given, **changes):
    manifest = Manifest.from_json(given["manifest.json"], "test")
    return {**given, "manifest.json": manifest.replace(**changes).to_json()}


def _without_record(files, name):
    manifest = Manifest.from_json(files["manifest.json"], "test")
    return _with_manifest(files, files={k: v for k, v in manifest.files.items() if k != name})


def _with_model(files, onnx_bytes):
    """`files` with another model.onnx, and a manifest that vouches for it."""
    manifest = Manifest.from_json(files["manifest.json"], "test")
    entry = FileRecord(_sha(onnx_bytes), len(onnx_bytes))
    return {
        **files,
        "model.onnx": onnx_bytes,
        "manifest.json": manifest.replace(files={**manifest.files, "model.onnx": entry}).to_json(),
    }


def _identity_model(name="x", elem_type=TensorProto.FLOAT, shape=("batch", 2)):
    x = helper.make_tensor_value_info(name, elem_type, list(shape))
    y = helper.make_tensor_value_info("probability", elem_type, list(shape))
    graph = helper.make_graph([helper.make_node("Identity", [name], ["probability"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.fixture
def files(shipped):
    return _version_files(shipped, "shallow")


SHALLOW = ARCHS["shallow"]


# ---------------------------------------------------------------------------------------------
# The config (guarantees 3 and 4)


@pytest.mark.parametrize("arch", ["shallow", "wide-deep"])
def test_config_parses_with_tritons_schema_and_matches_the_onnx_file(shipped, tmp_path, arch):
    given = _version_files(shipped, arch)
    r = ship_version(ARCHS[arch], 1, given, tmp_path / "repo")
    assert (r.model_name, r.version, r.noop, r.repository) == (ARCHS[arch].serving_name, 1, False, tmp_path / "repo")
    cfg = _parse(r.config_path)
    assert cfg.name == r.model_name and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 1024
    assert (
        cfg.HasField("dynamic_batching") and cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO
    )
    assert cfg.instance_group[0].count == 1
    assert cfg.version_policy.WhichOneof("policy_choice") == "specific" and list(
        cfg.version_policy.specific.versions
    ) == [1]
    model = onnx.load(str(r.model_path))
    (inp,) = model.graph.input
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        (inp.name, model_config_pb2.TYPE_FP32, [inp.type.tensor_type.shape.dim[1].dim_value])
    ]
    out = model.graph.output[0]
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [(out.name, model_config_pb2.TYPE_FP32, [1])]
    for name, data in given.items():  # guarantee 8: the copies are the given bytes
        assert _sha((r.model_path.parent / name).read_bytes()) == _sha(data), name


def test_the_options_reach_the_config_and_their_limits_are_accepted(files, tmp_path):
    r = ship_version(
        SHALLOW, 1, files, tmp_path / "repo", max_batch_size=2**31 - 1, instance_kind="gpu", instances=1024
    )
    cfg = _parse(r.config_path)
    assert cfg.max_batch_size == 2**31 - 1 and cfg.instance_group[0].count == 1024
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace('platform: "onnxruntime_onnx"', 'platform: "tensorrt_plan"'),
        lambda t: t.replace("dims: [ 2 ]", "dims: [ 3 ]"),
        lambda t: t.replace("TYPE_FP32", "TYPE_FP16", 1),
        lambda t: t.replace("versions: [ 1 ]", "versions: [ 2 ]"),
        lambda t: t.replace('name: "xor_shallow"', 'name: "xor_wide_deep"'),
        lambda t: t + "bogus_field: 1\n",
        lambda t: t[:-3],  # unbalanced braces
    ],
    ids=["platform", "dims", "dtype", "version", "name", "unknown-field", "syntax"],
)
def test_a_bad_config_is_refused_without_tritonclient_and_nothing_is_written(files, tmp_path, monkeypatch, mutate):
    real = S.config_pbtxt
    monkeypatch.setattr(S, "config_pbtxt", lambda *a, **k: mutate(real(*a, **k)))
    monkeypatch.setattr(S, "_triton_schema", lambda: None)  # the base install
    with pytest.raises(errors.CorruptArtifact, match="Triton config generated for xor_shallow"):
        ship_version(SHALLOW, 1, files, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_without_tritonclient_a_good_config_still_ships(files, tmp_path, monkeypatch):
    monkeypatch.setattr(S, "_triton_schema", lambda: None)
    r = ship_version(SHALLOW, 1, files, tmp_path / "repo")
    assert _parse(r.config_path).name == "xor_shallow"


@pytest.mark.parametrize("extra", ["bogus_field: 1\n", "max_batch_size: 4294967296\n"])
def test_tritons_schema_parse_runs_before_anything_is_written(files, tmp_path, monkeypatch, extra):
    real = S.config_pbtxt
    monkeypatch.setattr(S, "config_pbtxt", lambda *a, **k: real(*a, **k) + extra)
    monkeypatch.setattr(S, "_check_own_reading", lambda *a: None)  # only Triton's schema left to catch it
    with pytest.raises(errors.CorruptArtifact, match="Triton's schema"):
        ship_version(SHALLOW, 1, files, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    "model, why",
    [
        (_identity_model(elem_type=TensorProto.INT8), "does not map to a Triton type"),
        (_identity_model(shape=(1, 2)), "not a symbolic batch dimension"),
        (_identity_model(shape=("batch",)), "needs a batch dim and at least one more"),
        (_identity_model(name='x" }\nplatform: "evil'), "cannot be written in a Triton config"),
    ],
    ids=["dtype", "fixed-batch", "rank-1", "name"],
)
def test_a_signature_triton_cannot_express_is_a_corrupt_artifact(model, why):
    with pytest.raises(errors.CorruptArtifact, match=why):
        S.triton_tensors(model)
    with pytest.raises(errors.CorruptArtifact):
        S.model_tensors(SHALLOW, model)
    assert errors.CorruptArtifact.exit_code == 5


def test_a_model_with_a_foreign_signature_is_refused_before_anything_is_written(files, tmp_path):
    other = _with_model(files, _identity_model(elem_type=TensorProto.INT64).SerializeToString())
    with pytest.raises(errors.CorruptArtifact):
        ship_version(SHALLOW, 1, other, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_check_config_refuses_values_out_of_range(files):
    tensors = S.model_tensors(SHALLOW, onnx.load_from_string(files["model.onnx"]))
    good = S.config_pbtxt("xor_shallow", tensors, 1, "auto", 1, version=1)
    S.check_config(good, "xor_shallow", tensors, 1, "auto", 1, 1)
    zero = S.config_pbtxt("xor_shallow", tensors, 0, "auto", 1, version=1)
    with pytest.raises(errors.CorruptArtifact, match="max_batch_size 0"):
        S.check_config(zero, "xor_shallow", tensors, 0, "auto", 1, 1)


def test_the_config_tensors_are_the_archs_and_only_a_classifier_with_classes_names_labels(files):
    inputs, outputs = S.model_tensors(SHALLOW, onnx.load_from_string(files["model.onnx"]))
    assert inputs == (S.TritonTensor("x", "TYPE_FP32", (2,)),)
    assert outputs == (S.TritonTensor("probability", "TYPE_FP32", (1,)),)  # binary: no label file
    assert "label_filename" not in S.config_pbtxt("xor_shallow", (inputs, outputs), 8, "auto", 1, version=1)


# ---------------------------------------------------------------------------------------------
# Options (guarantee 2)


@pytest.mark.parametrize(
    "number, options, flag",
    [
        (1, {"max_batch_size": 0}, "--max-batch-size"),
        (1, {"max_batch_size": 2**31}, "--max-batch-size"),
        (1, {"max_batch_size": True}, "--max-batch-size"),
        (1, {"instances": 0}, "--instances"),
        (1, {"instances": 1025}, "--instances"),
        (1, {"instance_kind": "tpu"}, "instance kind"),
        (0, {}, "version"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(files, tmp_path, number, options, flag):
    with pytest.raises(errors.UsageError, match=flag) as info:
        ship_version(SHALLOW, number, files, tmp_path / "repo", **options)
    assert "\n" not in str(info.value) and errors.UsageError.exit_code == 2
    assert not (tmp_path / "repo").exists()  # not even the lock


# ---------------------------------------------------------------------------------------------
# The version folder (guarantees 1 and 3)


def test_the_version_folder_holds_the_version_and_predict_can_check_it(shipped, files, tmp_path):
    weights = (_model_folder(shipped, "shallow") / "weights.safetensors").read_bytes()
    r = ship_version(
        SHALLOW, 3, {**_with_manifest(files, version=3), "weights.safetensors": weights}, tmp_path / "repo"
    )
    folder = tmp_path / "repo" / "xor_shallow" / "3"
    assert r.model_path == folder / "model.onnx" and r.config_path == folder.parent / "config.pbtxt"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*NAMES, "MODEL_CARD.md"])  # weights are not shipped
    assert (folder / "manifest.json").read_bytes() == _with_manifest(files, version=3)["manifest.json"]
    assert all((folder / n).read_bytes() == files[n] for n in ["model.onnx", "verify.json", "MODEL_CARD.md"])
    # what `predict --model <repo>/xor_shallow/3/model.onnx` does: the manifest beside it vouches for it
    paths = A.ArtifactPaths.loose(folder)
    manifest = A.read_manifest(paths)
    assert A.read_verified(paths, manifest, "model.onnx", "export") == files["model.onnx"]
    assert A.read_verified(paths, manifest, "verify.json", "verify") == files["verify.json"]
    assert manifest.verify is not None and manifest.verify.passed
    assert list(_parse(r.config_path).version_policy.specific.versions) == [3]

    without_card = {n: files[n] for n in NAMES}
    r = ship_version(SHALLOW, 4, _with_manifest(without_card, version=4), tmp_path / "repo")  # no card: none shipped
    assert sorted(p.name for p in r.model_path.parent.iterdir()) == sorted(NAMES)


def test_shipping_a_version_again_is_a_noop_that_rewrites_only_the_config(files, tmp_path):
    first = ship_version(SHALLOW, 1, files, tmp_path / "repo")
    folder = first.model_path.parent
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in [folder, *folder.iterdir()]}
    config = first.config_path.stat().st_mtime_ns
    same = ship_version(SHALLOW, 1, files, tmp_path / "repo")  # same options: nothing at all is written
    assert same.noop and same.written == () and first.config_path.stat().st_mtime_ns == config
    again = ship_version(SHALLOW, 1, files, tmp_path / "repo", instance_kind="cpu", instances=2)
    assert again.noop and not first.noop and again.written == ("xor_shallow/config.pbtxt",)
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in [folder, *folder.iterdir()]} == before
    cfg = _parse(again.config_path)
    assert (
        cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU and cfg.instance_group[0].count == 2
    )


def test_a_rollback_ships_the_older_version_and_the_config_pins_it(files, tmp_path):
    repo = tmp_path / "repo"
    ship_version(SHALLOW, 1, _with_manifest(files, version=1), repo)
    two = ship_version(SHALLOW, 2, _with_manifest(files, version=2), repo)
    assert list(_parse(two.config_path).version_policy.specific.versions) == [2]
    back = ship_version(SHALLOW, 1, _with_manifest(files, version=1), repo)
    assert back.noop and list(_parse(back.config_path).version_policy.specific.versions) == [1]
    assert sorted(p.name for p in (repo / "xor_shallow").iterdir()) == ["1", "2", "config.pbtxt"]


@pytest.mark.parametrize("name", ["verify.json", "manifest.json", "MODEL_CARD.md"])
def test_an_existing_version_with_any_other_file_is_refused_naming_it(files, tmp_path, name):
    r = ship_version(SHALLOW, 1, files, tmp_path / "repo")
    (r.model_path.parent / name).write_bytes(b"changed")
    config = r.config_path.read_bytes()
    with pytest.raises(errors.IntegrityError, match=f"{name} sha256 {_sha(b'changed')} there, {_sha(files[name])}"):
        ship_version(SHALLOW, 1, files, tmp_path / "repo", instances=2)
    assert r.config_path.read_bytes() == config


def test_an_existing_version_without_the_card_is_not_the_same_version(files, tmp_path):
    without_card = {n: files[n] for n in NAMES}
    ship_version(SHALLOW, 1, without_card, tmp_path / "repo")
    with pytest.raises(errors.IntegrityError, match="MODEL_CARD.md sha256 absent there"):
        ship_version(SHALLOW, 1, files, tmp_path / "repo")


def test_an_existing_version_with_another_model_is_refused_naming_both_hashes(files, tmp_path):
    r = ship_version(SHALLOW, 1, files, tmp_path / "repo")
    config = r.config_path.read_bytes()
    r.model_path.write_bytes(b"someone else's model")
    with pytest.raises(errors.IntegrityError) as info:
        ship_version(SHALLOW, 1, files, tmp_path / "repo", instance_kind="cpu")
    assert _sha(b"someone else's model") in str(info.value) and _sha(files["model.onnx"]) in str(info.value)
    assert errors.IntegrityError.exit_code == 6
    assert r.model_path.read_bytes() == b"someone else's model" and r.config_path.read_bytes() == config


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda f: {**f, "model.onnx": f["model.onnx"] + b"\0"}, errors.IntegrityError, "its manifest says"),
        (lambda f: {**f, "verify.json": b"{}"}, errors.IntegrityError, "verify.json has sha256"),
        (lambda f: _with_manifest(f, verify=None), errors.MissingArtifact, "no passing verify record"),
        (lambda f: _with_manifest(f, version=2), errors.IntegrityError, "says it is version 2"),
        (lambda f: {**f, "MODEL_CARD.md": b"# another card"}, errors.IntegrityError, "MODEL_CARD.md has sha256"),
        (lambda f: _without_record(f, "MODEL_CARD.md"), errors.IntegrityError, "MODEL_CARD.md is not recorded"),
        (lambda f: _with_manifest(f, name="wide-deep"), errors.CorruptArtifact, "describes arch"),
        (lambda f: {k: v for k, v in f.items() if k != "verify.json"}, errors.MissingArtifact, "no verify.json"),
    ],
    ids=[
        "onnx-hash",
        "verify-hash",
        "unverified",
        "other-version",
        "card-hash",
        "card-unrecorded",
        "other-arch",
        "missing-file",
    ],
)
def test_files_that_disagree_with_their_manifest_are_refused(files, tmp_path, change, error, match):
    with pytest.raises(error, match=match):
        ship_version(SHALLOW, 1, change(files), tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


# ---------------------------------------------------------------------------------------------
# The lock (guarantee 5)


def test_a_second_ship_into_the_same_repository_gets_folder_locked(files, tmp_path):
    repo = tmp_path / "repo"
    with A.run_lock(repo):
        with pytest.raises(errors.FolderLocked):
            ship_version(SHALLOW, 1, files, repo)
    assert errors.FolderLocked.exit_code == 12 and not (repo / "xor_shallow").exists()


def test_the_lock_is_held_until_the_config_is_written(files, tmp_path, monkeypatch):
    repo, seen = tmp_path / "repo", []
    real = A.write_atomic

    def write_atomic(path, data):
        with pytest.raises(errors.FolderLocked):
            with A.run_lock(repo):
                pass
        seen.append(path.name)
        real(path, data)

    monkeypatch.setattr(A, "write_atomic", write_atomic)
    ship_version(SHALLOW, 1, files, repo)
    ship_version(SHALLOW, 1, files, repo, instances=2)  # the no-op too, when the config changes
    ship_version(SHALLOW, 1, files, repo, instances=2)  # nothing changes: nothing written
    assert seen == ["config.pbtxt", "config.pbtxt"]


# ---------------------------------------------------------------------------------------------
# Nothing written on failure (guarantees 6 and 8)


def _disk_full(path, data):
    raise A.write_error(path, OSError(errno.ENOSPC, "No space left on device"))


@pytest.mark.parametrize("already", [False, True], ids=["empty-repository", "version-1-there"])
def test_a_failed_config_write_removes_the_version_folder_it_made(files, tmp_path, monkeypatch, already):
    repo = tmp_path / "repo"
    if already:
        ship_version(SHALLOW, 1, files, repo)
    before = _tree(repo) if repo.exists() else {}
    monkeypatch.setattr(A, "write_atomic", _disk_full)
    with pytest.raises(errors.ArtifactWriteError, match="disk full"):
        ship_version(SHALLOW, 2, _with_manifest(files, version=2), repo)
    assert _tree(repo) == before and not _temporaries(repo)
    assert errors.ArtifactWriteError.exit_code == 11


def test_a_disk_full_while_copying_leaves_nothing(files, tmp_path, monkeypatch):
    real, calls = A.write_new_file, []

    def write_file(path, data):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(A, "write_new_file", write_file)
    with pytest.raises(errors.ArtifactWriteError, match="disk full"):
        ship_version(SHALLOW, 1, files, tmp_path / "repo")
    assert _tree(tmp_path / "repo") == {} and len(calls) == 2


def test_a_copy_that_does_not_read_back_with_its_sha256_is_refused(files, tmp_path, monkeypatch):
    real = A.write_new_file
    monkeypatch.setattr(A, "write_new_file", lambda path, data: real(path, data[:-1] + bytes([data[-1] ^ 1])))
    with pytest.raises(errors.ArtifactWriteError, match="sha256"):
        ship_version(SHALLOW, 1, files, tmp_path / "repo")
    assert _tree(tmp_path / "repo") == {}


def test_temporaries_a_killed_ship_left_are_removed(files, tmp_path):
    model_dir = tmp_path / "repo" / "xor_shallow"
    (model_dir / f"{A.TMP_PREFIX}1.abc").mkdir(parents=True)
    (model_dir / f"{A.TMP_PREFIX}1.abc" / "model.onnx").write_bytes(b"half")
    (model_dir / f"{A.TMP_PREFIX}config.pbtxt.xyz").write_bytes(b"half")
    ship_version(SHALLOW, 1, files, tmp_path / "repo")
    assert not _temporaries(tmp_path / "repo")


# ---------------------------------------------------------------------------------------------
# No symbolic links followed inside the repository (guarantee 7)


def test_a_model_folder_that_is_a_symlink_is_refused(files, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "xor_shallow").symlink_to(elsewhere)
    with pytest.raises(errors.IntegrityError, match="symbolic link"):
        ship_version(SHALLOW, 1, files, tmp_path / "repo")
    assert list(elsewhere.iterdir()) == []


def test_a_version_folder_that_is_a_symlink_is_refused(files, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "repo" / "xor_shallow").mkdir(parents=True)
    (tmp_path / "repo" / "xor_shallow" / "1").symlink_to(elsewhere)
    with pytest.raises(errors.IntegrityError, match="symbolic link"):
        ship_version(SHALLOW, 1, files, tmp_path / "repo")
    assert list(elsewhere.iterdir()) == [] and not (tmp_path / "repo" / "xor_shallow" / "config.pbtxt").exists()


def test_a_config_that_is_a_symlink_is_refused_and_its_target_unchanged(files, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    (tmp_path / "repo" / "xor_shallow").mkdir(parents=True)
    (tmp_path / "repo" / "xor_shallow" / "config.pbtxt").symlink_to(outside)
    with pytest.raises(errors.IntegrityError, match="symbolic link"):
        ship_version(SHALLOW, 1, files, tmp_path / "repo")
    assert outside.read_bytes() == b"not yours" and not (tmp_path / "repo" / "xor_shallow" / "1").exists()


def test_a_shipped_model_that_is_a_symlink_is_not_followed_for_the_noop(files, tmp_path):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(files["model.onnx"])  # the same bytes: following the link would call it a no-op
    folder = tmp_path / "repo" / "xor_shallow" / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").symlink_to(outside)
    with pytest.raises(errors.IntegrityError, match="symbolic link"):
        ship_version(SHALLOW, 1, files, tmp_path / "repo")
    assert not (folder.parent / "config.pbtxt").exists()


@pytest.mark.parametrize("where", ["xor_shallow", "xor_shallow/1", "xor_shallow/config.pbtxt"])
def test_something_else_where_a_folder_or_file_belongs_is_refused(files, tmp_path, where):
    target = tmp_path / "repo" / where
    target.parent.mkdir(parents=True, exist_ok=True)
    if where.endswith("config.pbtxt"):
        target.mkdir()  # a folder where the config file goes
    else:
        target.write_bytes(b"a file where a folder goes")
    before = _tree(tmp_path / "repo")
    with pytest.raises(errors.IntegrityError):
        ship_version(SHALLOW, 1, files, tmp_path / "repo")
    assert _tree(tmp_path / "repo") == before


def test_the_repository_itself_may_be_a_symlink(files, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "repo").symlink_to(tmp_path / "real")
    ship_version(SHALLOW, 1, files, tmp_path / "repo")
    assert (tmp_path / "real" / "xor_shallow" / "1" / "model.onnx").read_bytes() == files["model.onnx"]


# ---------------------------------------------------------------------------------------------
# Model card, loss curve


def test_model_card_is_written_from_manifest_and_report(shipped):
    given = _version_files(shipped, "wide-deep")
    manifest = Manifest.from_json(given["manifest.json"], "manifest.json")
    card = model_card(manifest, json.loads(given["verify.json"]))
    for needle in (
        "XOR",
        "261 parameters",
        "Known limits",
        "ort-cpu",
        "onnx-reference",
        "opset 18",
        manifest.files["model.onnx"].sha256,
        "Verdict: PASS",
        "torch ",
    ):
        assert needle in card, needle


@pytest.mark.parametrize("arch", ["shallow", "wide-deep"])
def test_loss_png_is_a_valid_image_of_sensible_size(shipped, arch):
    data = (_model_folder(shipped, arch) / "loss.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 400 <= width <= 2000 and 300 <= height <= 1500
    assert len(data) > 10_000  # not blank: a curve, axes and labels


def test_without_matplotlib_training_still_succeeds_with_a_notice(tmp_path, monkeypatch):
    from pipeline.training import plot

    monkeypatch.setattr(plot, "matplotlib_missing", lambda: "matplotlib is not installed, so no loss.png")
    from typer.testing import CliRunner

    import cli

    r = CliRunner().invoke(cli.app, ["train", "--artifacts-dir", str(tmp_path), "--steps", "3000"])
    assert r.exit_code == 0 and "no loss.png" in r.output
    assert not list(tmp_path.rglob("loss.png"))  # wherever the layout puts it
