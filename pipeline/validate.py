"""Stage 2: the accuracy gate. A model that misses it is neither saved nor exported."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import artifacts as A
from .archs import THRESHOLD, XOR_Y, Arch
from .errors import GateFailed, MissingArtifact
from .manifest import ValidationRecord
from .model import load_trained, xor_tensors

if TYPE_CHECKING:  # pragma: no cover
    pass


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

    def record(self) -> ValidationRecord:
        return ValidationRecord(self.probabilities, self.labels, self.accuracy, self.min_accuracy, self.passed)


def evaluate(model: Any, arch: Arch, final_loss: float, min_accuracy: float) -> ValidationResult:
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


def run_stage(paths: A.ArtifactPaths, arch: Arch, min_accuracy: float) -> ValidationResult:
    """Re-check the saved weights against the gate and record the result."""
    manifest, model = load_trained(paths, arch)
    if manifest.train is None:
        raise MissingArtifact(f"{paths.manifest} has no training record: run train first")
    result = gate(evaluate(model, arch, manifest.train.final_loss, min_accuracy))
    A.update_sections(paths, {"validation": result.record()})
    return result
