"""Stage 2: the gate. A model that misses it is neither saved nor exported.

Classification: accuracy on the validation rows (binary: probability > 0.5 means the last class;
multi-class: the most probable class). Regression: RMSE (the gate) and R² on the validation rows, in
the target's units. The built-ins are judged on the four XOR points, as the tutorial does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import GateFailed, MissingArtifact
from ..spec.archs import Arch, label_indices
from ..spec.recipe import Gate
from ..store import artifacts as A
from ..store.manifest import Manifest, ValidationRecord
from .model import load_trained

MAX_SHOWN = 16  # per-row probabilities and labels are recorded for at most this many validation rows
EVAL_CHUNK = 65536


@dataclass(frozen=True)
class ValidationResult:
    name: str  # the model's name
    probabilities: tuple[float, ...]  # per row (at most MAX_SHOWN rows; binary: P(last class))
    labels: tuple[Any, ...]
    accuracy: float | None
    min_accuracy: float | None
    final_loss: float
    rmse: float | None = None
    r2: float | None = None
    max_rmse: float | None = None
    rows: int = 0
    on: str = "validation rows"

    @property
    def passed(self) -> bool:
        return Gate(self.min_accuracy, self.max_rmse).passes(self.accuracy, self.rmse)

    def record(self) -> ValidationRecord:
        return ValidationRecord(
            self.probabilities, self.labels, self.accuracy, self.min_accuracy, self.passed,
            rmse=self.rmse, r2=self.r2, max_rmse=self.max_rmse, rows=self.rows, on=self.on,
        )  # fmt: skip

    def summary(self) -> str:
        """One phrase: 'accuracy 0.967 (gate >= 0.9) on 30 validation rows'."""
        if self.max_rmse is not None:
            r2 = f", R² {self.r2:.3f}" if self.r2 is not None else ""
            return f"RMSE {self.rmse:.4g}{r2} (gate <= {self.max_rmse:.4g}) on {self.rows} {self.on}"
        return f"accuracy {self.accuracy:.3f} (gate >= {self.min_accuracy:.3f}) on {self.rows} {self.on}"


def predict_outputs(model: Any, x: Any) -> Any:
    """The model's float32 outputs (rows, n_outputs) on the CPU, in chunks, as a numpy array."""
    import numpy as np
    import torch

    model = model.cpu().eval()
    outs = []
    with torch.no_grad():
        for start in range(0, max(len(x), 1), EVAL_CHUNK):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + EVAL_CHUNK], dtype=np.float32))
            outs.append(model(chunk).numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 1), np.float32)


def evaluate(model: Any, arch: Arch, final_loss: float, gate: Gate, data: Any = None) -> ValidationResult:
    """The gate's metric on the validation rows of `data` (a `data.Dataset`, or what has its x_val,
    y_val, train_rows and val_rows; not given: the built-in XOR points)."""
    import numpy as np

    from ..spec.data import xor_dataset

    data = data if data is not None else xor_dataset()
    x_val, y_val = data.x_val, data.y_val
    on = getattr(data, "gate_rows", None) or (
        "training rows"  # validation_fraction 0: the gate is on the training rows
        if data.val_rows.shape == data.train_rows.shape and np.array_equal(data.val_rows, data.train_rows)
        else "validation rows"
    )
    out = predict_outputs(model, x_val).astype(np.float64)
    rows = int(out.shape[0])
    if arch.task == "regression":
        pred = out[:, 0]
        truth = np.asarray(y_val, dtype=np.float64)
        rmse = float(np.sqrt(np.mean((pred - truth) ** 2))) if rows else math.inf
        var = float(np.sum((truth - truth.mean()) ** 2)) if rows else 0.0
        r2 = 1.0 - float(np.sum((pred - truth) ** 2)) / var if var > 0 else None
        shown = tuple(float(v) for v in pred[:MAX_SHOWN]) if rows <= MAX_SHOWN else ()
        return ValidationResult(
            arch.name, shown, (), None, None, final_loss,
            rmse=rmse, r2=r2, max_rmse=gate.max_rmse, rows=rows, on=on,
        )  # fmt: skip
    index = label_indices(arch.task, out)  # the one label rule: threshold (binary) or argmax
    probs = out[:, 0] if arch.task == "binary" else out.max(axis=1)
    accuracy = float(np.mean(index == np.asarray(y_val))) if rows else 0.0
    small = rows <= MAX_SHOWN
    labels = tuple(arch.classes[i] for i in index.tolist()) if small else ()
    shown = tuple(float(p) for p in probs.tolist()) if small else ()
    return ValidationResult(arch.name, shown, labels, accuracy, gate.min_accuracy, final_loss, rows=rows, on=on)


def gate(result: ValidationResult) -> ValidationResult:
    if not result.passed:
        if result.max_rmse is not None:
            miss = f"RMSE {result.rmse:.6g} > {result.max_rmse:.6g}"
        else:
            miss = f"accuracy {result.accuracy:.3f} < {result.min_accuracy:.3f}"
        shown = f", labels {list(result.labels)}" if result.labels else ""
        raise GateFailed(
            f"{result.name} failed the gate: {miss} on {result.rows} {result.on} "
            f"(final loss {result.final_loss:.6g}{shown}); not saved, not exported"
        )
    return result


def run_stage(
    paths: A.ArtifactPaths, arch: Arch, gate_spec: Gate, data: Any = None, manifest: Manifest | None = None
) -> ValidationResult:
    """Re-check the saved weights against the gate and record the result. `manifest`: the folder's,
    already read under the same lock."""
    manifest, model = load_trained(paths, arch, manifest)
    if manifest.train is None:
        raise MissingArtifact(f"{paths.manifest} has no training record: {paths.hint('train')}")
    result = gate(evaluate(model, arch, manifest.train.final_loss, gate_spec, data))
    A.update_sections(paths, {"validation": result.record()}, manifest)
    return result
