"""Stage 2: the accuracy gate. A model that misses it is neither saved nor exported."""
from __future__ import annotations

from dataclasses import dataclass

from .archs import THRESHOLD, XOR_Y, Arch, xor_tensors
from .errors import GateFailed


@dataclass(frozen=True)
class ValidationResult:
    arch: str
    probabilities: tuple[float, ...]  # on the four XOR points
    labels: tuple[int, ...]
    accuracy: float
    min_accuracy: float
    final_loss: float

    @property
    def passed(self) -> bool:
        return self.accuracy >= self.min_accuracy

    def as_dict(self) -> dict:
        return {
            "probabilities": list(self.probabilities),
            "labels": list(self.labels),
            "accuracy": self.accuracy,
            "min_accuracy": self.min_accuracy,
            "passed": self.passed,
        }


def evaluate(model, arch: Arch, final_loss: float, min_accuracy: float) -> ValidationResult:
    """Accuracy on the XOR points at threshold 0.5, computed on the CPU in float32."""
    import torch

    x, _ = xor_tensors("cpu")
    with torch.no_grad():
        probs = model.cpu()(x).flatten().tolist()  # (4, 2) -> (4, 1) -> 4 floats
    labels = tuple(int(p > THRESHOLD) for p in probs)
    accuracy = sum(int(a == b) for a, b in zip(labels, XOR_Y)) / len(XOR_Y)
    return ValidationResult(arch.name, tuple(probs), labels, accuracy, min_accuracy, final_loss)


def gate(result: ValidationResult) -> ValidationResult:
    if not result.passed:
        raise GateFailed(
            f"{result.arch} failed the accuracy gate: accuracy {result.accuracy:.2f} < {result.min_accuracy:.2f} "
            f"(final loss {result.final_loss:.6g}, labels {list(result.labels)}); not saved, not exported"
        )
    return result


def run_stage(paths, arch: Arch, min_accuracy: float) -> ValidationResult:
    """Re-check the saved weights against the gate and record the result."""
    from . import artifacts as A
    from .train import load_trained

    manifest, model = load_trained(paths, arch)
    result = gate(evaluate(model, arch, manifest["train"]["final_loss"], min_accuracy))
    A.update_sections(paths, {"validation": result.as_dict()})
    return result
