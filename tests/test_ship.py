"""Triton repository (checked with Triton's own model-config schema), model card, loss curve."""

import struct

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from pipeline import artifacts as A
from pipeline import errors
from pipeline.archs import ARCHS
from pipeline.ship import ship
from tests.conftest import run_cli


def _parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("arch", ["shallow", "wide-deep"])
def test_config_parses_with_tritons_schema_and_matches_the_onnx_file(shipped_copy, tmp_path, arch):
    r = ship(shipped_copy, ARCHS[arch], tmp_path / "repo")
    cfg = _parse(r.config_path)
    assert cfg.name == r.model_name and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 1024
    assert (
        cfg.HasField("dynamic_batching") and cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO
    )
    model = onnx.load(str(r.model_path))
    (inp,) = model.graph.input
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        (inp.name, model_config_pb2.TYPE_FP32, [inp.type.tensor_type.shape.dim[1].dim_value])
    ]
    out = model.graph.output[0]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [(out.name, [1])]
    assert A.sha256_file(r.model_path) == A.sha256_file(shipped_copy / arch / "model.onnx")


def test_versions_increase_and_are_never_overwritten(shipped_copy, tmp_path):
    first = ship(shipped_copy, ARCHS["shallow"], tmp_path / "repo")
    marker = first.model_path.read_bytes()
    second = ship(shipped_copy, ARCHS["shallow"], tmp_path / "repo", instance_kind="cpu")
    assert (first.version, second.version) == (1, 2)
    assert first.model_path.read_bytes() == marker
    assert _parse(second.config_path).instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_unverified_artifacts_are_refused(shipped_copy, tmp_path):
    r = run_cli("export", "--arch", "shallow", "--artifacts-dir", str(shipped_copy))  # drops the verify record
    assert r.returncode == 0, r.stderr
    r = run_cli("ship", "--arch", "shallow", "--artifacts-dir", str(shipped_copy), "--out", str(tmp_path / "repo"))
    assert r.returncode == errors.MissingArtifact.exit_code and "run verify first" in r.stderr
    assert not (tmp_path / "repo" / "xor_shallow" / "1").exists()


def test_model_card_is_written_from_manifest_and_report(shipped_copy, tmp_path):
    card = ship(shipped_copy, ARCHS["wide-deep"], tmp_path / "repo").card_path.read_text()
    manifest = A.read_manifest(A.ArtifactPaths(shipped_copy, "wide-deep"))
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
    assert manifest.files["MODEL_CARD.md"].sha256 == A.sha256_file(shipped_copy / "wide-deep" / "MODEL_CARD.md")


@pytest.mark.parametrize("arch", ["shallow", "wide-deep"])
def test_loss_png_is_a_valid_image_of_sensible_size(shipped, arch):
    data = (shipped / arch / "loss.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 400 <= width <= 2000 and 300 <= height <= 1500
    assert len(data) > 10_000  # not blank: a curve, axes and labels


def test_without_matplotlib_training_still_succeeds_with_a_notice(tmp_path, monkeypatch):
    from pipeline import plot

    monkeypatch.setattr(plot, "matplotlib_missing", lambda: "matplotlib is not installed, so no loss.png")
    from typer.testing import CliRunner

    import cli

    r = CliRunner().invoke(cli.app, ["train", "--artifacts-dir", str(tmp_path), "--steps", "3000"])
    assert r.exit_code == 0 and "no loss.png" in r.output
    assert not (tmp_path / "shallow" / "loss.png").exists()
