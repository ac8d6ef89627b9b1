"""Measuring verify's tolerances (docs/verification.md): `python tools/measure_tolerances.py`.

Random-weight models of every head and activation, exported with the pipeline's own exporter, run by
every runtime against the float64 oracle on the input sets `verify` uses. A tool, not a stage: it
imports the export and verify stages, which may not import each other. It is ours, not the product's: it
lives outside the package (run it from the repository root).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.checks.verify import (
    BATCHES,
    FP32,
    TOLERANCES,
    Tolerance,
    _as_rows,
    beyond_float32,
    input_sets,
    model_scaling,
    ort_runtime,
    reference_evaluator_runtime,
    torch_runtime,
)
from pipeline.spec.archs import ACTIVATIONS, TASKS, Arch

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.spec.data import Dataset
# ---------------------------------------------------------------------------------------------
# Measuring the tolerances (docs/verification.md): `python tools/measure_tolerances.py`


def random_case(
    task: str,
    activation: str,
    seed: int,
    *,
    scale_input: bool = True,
    n_features: int = 6,
    hidden: tuple[int, ...] = (32, 32),
    n_classes: int = 4,
    gain: float | None = None,
    rows: int = 2000,
) -> tuple[Arch, Any, Dataset]:
    """(arch, model, data): a random-weight model (build_model, weights and biases times `gain`, as
    trained weights are larger than a fresh init's) on made-up data whose features have means in
    [-1000, 1000] and stds in [0.01, 1000]; a regression's target has mean in [-1e4, 1e4] and std in
    [0.1, 1e3]. The standardization buffers are the training rows' statistics, as training writes them."""
    import numpy as np
    import torch

    from pipeline.spec.data import in_memory_dataset
    from pipeline.training.model import build_model, linear_layers, set_scaling

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    gain = gain if gain is not None else (1.0, 2.0, 4.0, 3.0)[seed % 4]
    classes: tuple[Any, ...] = {"binary": (0, 1), "multiclass": tuple("abcdefgh"[:n_classes]), "regression": ()}[task]
    n_out = n_classes if task == "multiclass" else 1
    arch = Arch(
        name=f"{task}-{activation}-{seed}",
        widths=(n_features, *hidden, n_out),
        activation=activation,
        task=task,
        features=tuple(f"f{i}" for i in range(n_features)),
        classes=classes,
        scale_input=scale_input,
        scale_output=task == "regression",
    )
    model = build_model(arch)
    with torch.no_grad():
        for layer in linear_layers(model):
            layer.weight.mul_(gain)
            layer.bias.mul_(gain)
    mean = rng.uniform(-1000, 1000, n_features)
    std = 10 ** rng.uniform(-2, 3, n_features)
    x = rng.normal(mean, std, size=(rows, n_features)).astype(np.float32)
    values = rng.normal(rng.uniform(-1e4, 1e4), 10 ** rng.uniform(-1, 3), size=rows)
    y = values if task == "regression" else rng.integers(0, len(classes), size=rows)
    train_rows = np.arange(rows * 4 // 5, dtype=np.int64)
    val_rows = np.arange(rows * 4 // 5, rows, dtype=np.int64)
    data = in_memory_dataset(arch.features, arch.task, arch.classes, x, y, train_rows, val_rows, source="random")
    set_scaling(model, arch, data.stats.mean, data.stats.std, data.target_mean, data.target_std)
    return arch, model.eval(), data


@dataclass(frozen=True)
class Measurement:
    """fp32 vs float64 on every input set of `cases` random models of one head x activation, one runtime."""

    task: str
    activation: str
    runtime: str
    cases: int
    max_abs: float  # largest |fp32 - fp64| seen, in output units
    max_abs_set: str  # "<set> (<model>)" where it was seen
    per_unit: float  # largest |diff| / (unit * s): the error per unit of input scale and output unit
    per_unit_set: str
    net_per_unit: float  # largest max(|diff| - rtol |ref|, 0) / (unit * s): the atol the rtol leaves to cover
    used: float  # largest |diff| / bound with the runtime's tolerance (TOLERANCES): 1 / headroom
    used_set: str
    atol: float  # the bound in use for these models (TOLERANCES fitted by Tolerance.for_model)
    rtol: float
    per_kind: dict[str, float] = field(default_factory=dict)  # set kind (validation, uniform, ...) -> net_per_unit


def measure_tolerances(
    tasks: Sequence[str] = TASKS,
    activations: Sequence[str] = ACTIVATIONS,
    seeds: Sequence[int] = (0, 1, 2, 3),
    batches: tuple[int, ...] = BATCHES,
    on_case: Callable[[str], None] | None = None,
) -> list[Measurement]:
    """fp32 CPU runtimes (torch-cpu, ort-cpu, onnx-reference) against the float64 oracle on random
    models of each head x activation (`random_case`; odd seeds: raw inputs, no in-graph
    standardization), on every input set `verify` uses. Exports with the pipeline's own exporter
    (`export._to_onnx`). Rows beyond float32's range (`beyond_float32`) are left out, as verify does."""
    import tempfile

    import numpy as np

    from pipeline.graph.export import _to_onnx

    out: list[Measurement] = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            for activation in activations:
                acc: dict[str, dict[str, Any]] = {}
                for seed in seeds:
                    arch, model, data = random_case(task, activation, seed, scale_input=seed % 2 == 0)
                    if on_case:
                        on_case(arch.name)
                    path = Path(tmp) / f"{arch.name}.onnx"
                    _to_onnx(model, arch.n_inputs, path, output_name=arch.output_name)
                    onnx = path.read_bytes()
                    scaling = model_scaling(model, arch, data)
                    unit_tol = Tolerance(1.0, 0.0, "unit").for_model(scaling, scale_atol=False)
                    runtimes = [
                        torch_runtime(model, "cpu"),
                        ort_runtime(onnx, "cpu")[0],
                        reference_evaluator_runtime(onnx),
                    ]
                    oracle = torch_runtime(model, "cpu", "float64", name="oracle")
                    beyond = beyond_float32(model)
                    for s in input_sets(arch, data, batches=batches):
                        rows = s.x.shape[0]
                        ref = _as_rows(oracle.run(s.x), rows)
                        denom = unit_tol.bound(np.zeros_like(ref), s.x)  # unit * s
                        skip = beyond(s.x)
                        kind = s.name.split("-")[0]
                        where = f"{s.name} ({arch.name})"
                        for rt in runtimes:
                            got = _as_rows(rt.run(s.x), rows)
                            tol = TOLERANCES[rt.name].for_model(scaling)
                            bound = tol.bound(ref, s.x)
                            with np.errstate(invalid="ignore", over="ignore"):
                                diff = np.abs(got - ref)
                                diff = np.nan_to_num(diff, nan=np.inf)
                                diff[skip] = 0.0
                                gross = diff / denom
                                net = np.maximum(diff - FP32.rtol * np.abs(ref), 0.0) / denom
                                used = diff / bound
                            a = acc.setdefault(
                                rt.name, {"max_abs": (0.0, ""), "per_unit": (0.0, ""), "net": 0.0, "used": (0.0, "")}
                            )
                            a.setdefault("kinds", {})
                            a["atol"], a["rtol"] = tol.atol, tol.rtol
                            for key, value in (("max_abs", diff), ("per_unit", gross), ("used", used)):
                                if value.size and value.max() > a[key][0]:
                                    a[key] = (float(value.max()), where)
                            a["net"] = max(a["net"], float(net.max()) if net.size else 0.0)
                            a["kinds"][kind] = max(a["kinds"].get(kind, 0.0), float(net.max()) if net.size else 0.0)
                for name, a in acc.items():
                    out.append(
                        Measurement(
                            task=task,
                            activation=activation,
                            runtime=name,
                            cases=len(seeds),
                            max_abs=a["max_abs"][0],
                            max_abs_set=a["max_abs"][1],
                            per_unit=a["per_unit"][0],
                            per_unit_set=a["per_unit"][1],
                            net_per_unit=a["net"],
                            used=a["used"][0],
                            used_set=a["used"][1],
                            atol=a["atol"],
                            rtol=a["rtol"],
                            per_kind=a["kinds"],
                        )
                    )
    return out


def measurement_table(rows: Sequence[Measurement]) -> str:
    """Markdown: head x activation x runtime -> what was measured, the bound in use and its headroom;
    then, by input set kind, the largest error per unit of input scale beyond the rtol part."""
    lines = [
        "| head | activation | runtime | max \\|fp32 − fp64\\| (output units) | max per unit of s·unit "
        "| beyond rtol, per unit | bound: atol, rtol | headroom |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in rows:
        headroom = f"{1 / m.used:.0f}× ({m.used_set.split(' ')[0]})" if m.used > 0 else "∞"
        lines.append(
            f"| {m.task} | {m.activation} | {m.runtime} | {m.max_abs:.2e} ({m.max_abs_set.split(' ')[0]}) "
            f"| {m.per_unit:.2e} ({m.per_unit_set.split(' ')[0]}) | {m.net_per_unit:.2e} "
            f"| {m.atol:.0e}, {m.rtol:.0e} | {headroom} |"
        )
    kinds = sorted({k for m in rows for k in m.per_kind})
    lines += ["", "| input sets | " + " | ".join(kinds) + " |", "| --- |" + " --- |" * len(kinds)]
    for act in dict.fromkeys(m.activation for m in rows):
        cells = [max((m.per_kind.get(k, 0.0) for m in rows if m.activation == act), default=0.0) for k in kinds]
        lines.append(f"| {act} | " + " | ".join(f"{c:.2e}" for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(measurement_table(measure_tolerances(on_case=lambda n: print(n, file=sys.stderr, flush=True))))
