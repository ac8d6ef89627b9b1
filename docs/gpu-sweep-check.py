"""Sweep members against single train() runs of the same seed, on CUDA (or DEV=cpu).

    PYTHONPATH=. python3 docs/gpu-sweep-check.py            # on the GPU machine
    DEV=cpu N=300 PYTHONPATH=. python3 docs/gpu-sweep-check.py  # a CPU smoke run (bit-equal there)

Prints, per case, how many members' final losses equal the single run's to the bit and the worst
relative difference. Results: docs/sweep.md, docs/gpu.md.
"""

import os
import time

import numpy as np

from pipeline.archs import ARCHS, Arch
from pipeline.data import in_memory_dataset
from pipeline.sweep import sweep
from pipeline.train import TrainConfig, train

DEV = os.environ.get("DEV", "cuda")
N = int(os.environ.get("N", "10001"))
SEEDS = [0, 1, 2, 5, 15, 777]


def report(label: str, members, singles) -> None:
    pairs = [(m.final_loss, r.final_loss) for m, r in zip(members, singles)]
    same = sum(a == b for a, b in pairs)
    worst = max(abs(a - b) / abs(b) for a, b in pairs)
    print(f"{label}: {len(pairs)} members, bit-equal final loss {same}, worst relative {worst:.3g}, "
          f"single-run trainer {singles[-1].trainer}")  # fmt: skip


def builtins() -> None:
    for name in ("shallow", "wide-deep"):
        start = time.time()
        result = sweep(ARCHS[name], SEEDS, [1.0], steps=N, device=DEV)
        singles = [train(TrainConfig(ARCHS[name], steps=N, lr=1.0, seed=m.seed, device=DEV)) for m in result.members]
        report(f"{name}, {N} steps (sweep {time.time() - start:.1f} s)", result.members, singles)


def recipes() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32) * 5 + 1
    steps = min(N, 1000)
    for task, optimizer, batch in (("multiclass", "adam", 32), ("regression", "adam", 50), ("binary", "sgd", 0)):
        y = {"binary": (x[:, 0] > 1).astype(int), "multiclass": (x[:, 0] > 1).astype(int) + (x[:, 1] > 1),
             "regression": x[:, 0] * 3.0}[task]  # fmt: skip
        classes = {"binary": (0, 1), "multiclass": (0, 1, 2), "regression": ()}[task]
        data = in_memory_dataset(("a", "b", "c"), task, classes, x, y, np.arange(240), np.arange(240, 300))
        arch = Arch("t", (3, 8, 6, 3 if task == "multiclass" else 1), activation="relu", task=task,
                    features=("a", "b", "c"), classes=classes, scale_input=True,
                    scale_output=task == "regression")  # fmt: skip
        lr = 0.01 if optimizer == "adam" else 0.1
        gate = {"max_rmse": 3.0, "min_accuracy": None} if task == "regression" else {"min_accuracy": 0.5}
        result = sweep(arch, range(6), [lr], steps=steps, device=DEV, data=data, optimizer=optimizer,
                       batch_size=batch, **gate)  # type: ignore[arg-type]  # fmt: skip
        singles = [
            train(
                TrainConfig(arch, steps=steps, lr=lr, seed=m.seed, device=DEV, optimizer=optimizer, batch_size=batch),
                data=data,
            )  # fmt: skip
            for m in result.members
        ]
        report(f"{task}, {optimizer}, batch {batch or 'full'}, {steps} steps", result.members, singles)


if __name__ == "__main__":
    builtins()
    recipes()
