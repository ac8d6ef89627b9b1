import numpy as np
import pytest

from pipeline.archs import ARCHS, XOR_X, XOR_Y
from pipeline.errors import GateFailed
from pipeline.model import load_model
from pipeline.train import TrainConfig, train
from pipeline.validate import evaluate, gate
from tests.conftest import load_weights, numpy_mlp


def test_accuracy_matches_an_independent_computation(shipped):
    for arch in ARCHS.values():
        model = load_model(arch, (shipped / arch.name / "v1" / "weights.safetensors").read_bytes())
        result = evaluate(model, arch, 0.0, 1.0)
        probs = numpy_mlp(load_weights(shipped / arch.name / "v1"), np.array(XOR_X))
        np.testing.assert_allclose(result.probabilities, probs, rtol=1e-5)
        assert result.labels == XOR_Y and result.accuracy == 1.0 and result.passed


def test_gate_refuses_an_undertrained_model_naming_arch_accuracy_and_loss():
    run = train(TrainConfig(ARCHS["shallow"], steps=10, device="cpu"))
    result = evaluate(run.model, ARCHS["shallow"], run.final_loss, 1.0)
    assert result.accuracy < 1.0
    with pytest.raises(
        GateFailed, match=r"shallow failed the accuracy gate: accuracy 0\.\d\d < 1\.00 \(final loss 0\.69"
    ):
        gate(result)
