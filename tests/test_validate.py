import numpy as np
import pytest

from pipeline.errors import GateFailed
from pipeline.spec.archs import ARCHS, XOR_X, XOR_Y
from pipeline.spec.recipe import Gate
from pipeline.training.model import load_model
from pipeline.training.train import TrainConfig, train
from pipeline.training.validate import evaluate, gate
from tests.conftest import load_weights, numpy_mlp


def test_accuracy_matches_an_independent_computation(shipped):
    for arch in ARCHS.values():
        model = load_model(arch, (shipped / arch.name / "v1" / "weights.safetensors").read_bytes())
        result = evaluate(model, arch, 0.0, Gate(min_accuracy=1.0))
        probs = numpy_mlp(load_weights(shipped / arch.name / "v1"), np.array(XOR_X))
        np.testing.assert_allclose(result.probabilities, probs, rtol=1e-5)
        assert result.labels == XOR_Y and result.accuracy == 1.0 and result.passed


def test_gate_refuses_an_undertrained_model_naming_arch_accuracy_and_loss():
    run = train(TrainConfig(ARCHS["shallow"], steps=10, device="cpu"))
    result = evaluate(run.model, ARCHS["shallow"], run.final_loss, Gate(min_accuracy=1.0))
    assert result.accuracy < 1.0
    with pytest.raises(
        GateFailed, match=r"shallow failed the gate: accuracy 0\.\d+ < 1\.000 on 4 XOR points \(final loss 0\.69"
    ):
        gate(result)


class _Data:
    """A dataset stand-in: validation rows and labels, nothing else."""

    def __init__(self, x, y):
        self.x_val, self.y_val = np.asarray(x, np.float32), np.asarray(y)
        self.val_rows = np.arange(len(self.y_val))
        self.train_rows = np.arange(len(self.y_val) + 1)
        self.rows = len(self.y_val) + 1


def _arch(task, classes=(), n_in=3):
    from pipeline.spec.archs import Arch

    n_out = len(classes) if task == "multiclass" else 1
    return Arch("t", (n_in, 5, n_out), activation="relu", task=task, features=("a", "b", "c"), classes=classes)


def test_multiclass_accuracy_and_regression_metrics_match_numpy():
    import torch

    from pipeline.training.model import build_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    torch.manual_seed(0)
    arch = _arch("multiclass", ("a", "b", "c"))
    model = build_model(arch).eval()
    with torch.no_grad():
        probs = model(torch.from_numpy(x)).numpy()
    y = rng.integers(0, 3, 200)
    r = evaluate(model, arch, 0.1, Gate(min_accuracy=0.0), _Data(x, y))
    assert r.accuracy == pytest.approx(float(np.mean(probs.argmax(1) == y))) and r.rows == 200
    assert r.on == "validation rows" and r.labels == () and r.passed  # 200 rows: not listed

    arch = _arch("regression")
    model = build_model(arch).eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).numpy()[:, 0].astype(np.float64)
    truth = pred + rng.normal(size=200)
    r = evaluate(model, arch, 0.1, Gate(max_rmse=0.5), _Data(x, truth))
    rmse = float(np.sqrt(np.mean((pred - truth) ** 2)))
    r2 = 1 - np.sum((pred - truth) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert r.rmse == pytest.approx(rmse, rel=1e-6) and r.r2 == pytest.approx(r2, rel=1e-6)
    assert not r.passed and r.accuracy is None
    with pytest.raises(GateFailed, match=r"t failed the gate: RMSE [0-9.]+ > 0\.5 on 200 validation rows"):
        gate(r)
