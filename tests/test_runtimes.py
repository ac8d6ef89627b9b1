"""Provider truth and safe loading of ONNX files (torch-free module)."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.checks.runtimes import CPU_EP, cuda_device_problem, open_session, ort_runner, torch_runner
from pipeline.errors import CorruptArtifact, DeviceUnavailable, IntegrityError
from pipeline.graph.contract import check_served, parse_checked, signature


def inspect_onnx(path):
    """What predict/verify do with a file: parse its bytes safely, then check its signature."""
    model = parse_checked(path.read_bytes(), str(path))
    check_served(model, str(path), 2, 1)
    return model


NO_GPU = cuda_device_problem() is not None


@pytest.mark.skipif(not NO_GPU, reason="a CUDA device is present")
def test_auto_on_a_machine_without_gpu_says_why_and_never_claims_cuda(shipped, capfd):
    session, report = open_session(shipped / "shallow" / "v1" / "model.onnx", "auto")
    assert session.get_providers() == [CPU_EP] and report.used == (CPU_EP,)
    assert not report.on_cuda
    assert "runs on the CPU" in report.cuda_note and "\n" not in report.cuda_note
    out, err = capfd.readouterr()
    assert "libcublas" not in err and "CUDA" not in err  # no red onnxruntime spam


@pytest.mark.skipif(not NO_GPU, reason="a CUDA device is present")
def test_provider_cuda_without_gpu_fails_with_one_line(shipped):
    with pytest.raises(DeviceUnavailable, match=r"^--provider cuda: ") as info:
        open_session(shipped / "shallow" / "v1" / "model.onnx", "cuda")
    assert "\n" not in str(info.value)


def test_provider_cpu_uses_cpu_only(shipped):
    _, report = open_session(shipped / "shallow" / "v1" / "model.onnx", "cpu")
    assert report.used == (CPU_EP,)


@pytest.mark.cuda
def test_cuda_provider_really_runs_when_a_gpu_is_present(shipped):
    _, report = open_session(shipped / "shallow" / "v1" / "model.onnx", "cuda")
    assert report.on_cuda


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["empty", "truncated", "random"])
def test_unreadable_files_are_named(shipped, tmp_path, kind):
    good = (shipped / "shallow" / "v1" / "model.onnx").read_bytes()
    data = {"empty": b"", "truncated": good[: len(good) // 2], "random": os.urandom(4096)}[kind]
    path = _write(tmp_path / "model.onnx", data)
    with pytest.raises(CorruptArtifact, match=str(path)):
        inspect_onnx(path)


def _model(in_dim=2, out_dim=1, external=None, tmp=None):
    w = numpy_helper.from_array(np.ones((out_dim, in_dim), np.float32), "w")
    if external is not None:
        w.data_location = TensorProto.EXTERNAL
        del w.external_data[:]
        e = w.external_data.add()
        e.key, e.value = "location", external
        w.ClearField("raw_data")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["z"], transB=1), helper.make_node("Sigmoid", ["z"], ["probability"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_dim])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", out_dim])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_valid_onnx_of_the_wrong_shape_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(_model(in_dim=3), str(path))
    with pytest.raises(CorruptArtifact, match=r"expected FLOAT\[batch, 2\]"):
        inspect_onnx(path)


def test_a_well_formed_model_passes(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(_model(), str(path))
    assert [i.name for i in signature(inspect_onnx(path)).inputs] == ["x"]


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    path = tmp_path / "model.onnx"
    path.write_bytes(_model(external=location).SerializeToString())
    with pytest.raises(IntegrityError, match="outside its folder"):
        inspect_onnx(path)


def test_external_data_inside_the_folder_is_refused_too(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(_model(external="weights.bin").SerializeToString())
    with pytest.raises(IntegrityError, match="self-contained"):
        inspect_onnx(path)


def test_torch_runner_works_on_a_copy(shipped):
    """The runner never moves or changes the caller's model (bench once moved it to CUDA in place)."""
    import torch

    from pipeline.spec.archs import ARCHS
    from pipeline.training.model import load_model

    model = load_model(ARCHS["shallow"], (shipped / "shallow" / "v1" / "weights.safetensors").read_bytes())
    runner = torch_runner(model, "cpu", "float64")
    assert next(model.parameters()).dtype == torch.float32
    x = np.array([[0, 1], [1, 1]], np.float32)
    assert runner.run(x).dtype == np.float64 and runner.name == "torch-cpu"
    np.testing.assert_array_equal(runner.prepare(x)().numpy(), runner.run(x))


def test_ort_runner_names_what_ran_and_runs_from_bytes(shipped):
    data = (shipped / "shallow" / "v1" / "model.onnx").read_bytes()
    runner = ort_runner(data, "auto")
    assert runner.name == ("ort-cuda" if runner.providers.on_cuda else "ort-cpu")
    out = runner.run(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32))
    assert out.shape == (4, 1) and [int(v > 0.5) for v in out[:, 0]] == [0, 1, 1, 0]
