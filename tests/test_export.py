"""The exported file, read back from disk."""

import onnx
import pytest

from pipeline.graph.export import OPSET, export_model
from pipeline.spec.archs import ARCHS
from pipeline.store import artifacts as A
from pipeline.training.train import TrainConfig, train


@pytest.mark.parametrize("arch", list(ARCHS))
def test_exported_file_properties(shipped, arch):
    path = shipped / arch / "v1" / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert {o.domain: o.version for o in model.opset_import}[""] == OPSET >= 18
    (inp,) = model.graph.input
    out = model.graph.output[0]
    assert inp.name == "x" and out.name == "probability"
    for vi, width in ((inp, 2), (out, 1)):
        t = vi.type.tensor_type
        assert t.elem_type == onnx.TensorProto.FLOAT
        assert t.shape.dim[0].dim_param == "batch" and t.shape.dim[1].dim_value == width
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Sigmoid"] * ARCHS[arch].n_linear
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert sorted(p.name for p in path.parent.iterdir() if "onnx" in p.name) == ["model.onnx"]  # one file
    meta = {p.key: p.value for p in model.metadata_props}
    manifest = A.read_manifest(A.ArtifactPaths(shipped, arch))
    assert meta["xorship.arch"] == arch
    assert meta["xorship.seed"] == "777" and meta["xorship.steps"] == "10001"
    assert float(meta["xorship.final_loss"]) == manifest.train.final_loss
    assert float(meta["xorship.accuracy"]) == 1.0
    assert meta["xorship.weights_sha256"] == manifest.files["weights.safetensors"].sha256


def test_export_is_quiet(tmp_path, capfd):
    run = train(TrainConfig(ARCHS["shallow"], steps=5, device="cpu"))
    capfd.readouterr()
    _, staged = export_model(run.model, ARCHS["shallow"], A.ArtifactPaths(tmp_path, "shallow"), {"arch": "shallow"})
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert staged.exists() and staged.name.startswith(A.TMP_PREFIX)  # staged, not yet in place
    assert not (tmp_path / "shallow" / "model.onnx").exists()


def test_manifest_records_export_and_hashes(shipped):
    for arch in ARCHS:
        paths = A.ArtifactPaths(shipped, arch)
        m = A.read_manifest(paths)
        assert m.export.opset == OPSET
        assert (m.export.input.name, m.export.input.shape, m.export.input.dtype) == ("x", ("batch", 2), "float32")
        for name, entry in m.files.items():
            assert A.sha256_file(paths.file(name)) == entry.sha256
        assert {"python", "torch", "onnx", "numpy"} <= set(m.versions)
        assert len(m.train.loss_log) == 101 and m.train.device == "cpu"
        assert m.serve_check.passed and m.verify.passed


def test_export_serializes_once_and_writes_the_bytes_it_checked(tmp_path, monkeypatch):
    """The exporter's model is serialized once: no file of the exporter's own is read back, and the
    staged file holds exactly the bytes that were checked and hashed."""
    import hashlib

    from pipeline.graph import export as E

    def no_read_back(*a, **k):
        raise AssertionError("the exported model was read back from a file")

    monkeypatch.setattr(onnx, "load", no_read_back)
    monkeypatch.setattr(onnx, "load_model", no_read_back)
    checked: list[bytes] = []
    check = E.check_exported
    monkeypatch.setattr(E, "check_exported", lambda data, *a: (checked.append(data), check(data, *a))[1])
    run = train(TrainConfig(ARCHS["shallow"], steps=5, device="cpu"))
    result, staged = export_model(run.model, ARCHS["shallow"], A.ArtifactPaths(tmp_path, "shallow"), {"seed": 5})
    (data,) = checked
    assert staged.read_bytes() == data and result.sha256 == hashlib.sha256(data).hexdigest()
    assert [p.name for p in staged.parent.iterdir()] == [staged.name]  # the exporter wrote no file of its own
    model = onnx.ModelProto.FromString(data)
    assert {p.key: p.value for p in model.metadata_props}["xorship.seed"] == "5"
