"""Many seeds and learning rates at once: how often does a model get stuck, and which pair is best?

Every (seed, lr) pair is one *member*. The members' parameters are stacked along a leading dimension
and trained together by one program of batched ops (`torch.baddbmm`, `torch.bmm`), so the cost barely
grows with the number of members: at a few rows per member the per-op overhead, not the arithmetic,
is what a step costs.

Every recipe is covered: sigmoid, tanh, relu and gelu layers; binary (sigmoid + BCE), multi-class
(log-softmax + NLL on the logits) and regression (MSE, on the standardized target when the output is
scaled) heads; standardized inputs; SGD and Adam; full batch or mini-batches. Member *s* starts from
exactly `init_model(arch, s)`'s weights, sees exactly the batches a single `train --seed s` run sees
(its own generator seeded with s, a fresh permutation per epoch, the short last batch dropped), and
follows the same dynamics with the same ATen kernels: the loss's and the activations' own backward
kernels, the optimizer update a single explicit run takes (`kernels.optimizer_update`). The matrix
products are batched where a batched form's summation order reproduces the single run's `addmm`/`mm` (picked by a probe, `_linear_plan`); where
none does, that product runs member by member with the single run's own kernel on aligned operands
(`_per_member`). So every member is a single run to the bit, whatever its chunk (tested per head,
optimizer and batching; `docs/sweep.md` has the numbers and the cost).

Verdicts:
- converged: the gate passes on the validation rows as `validate.evaluate` computes it (accuracy with
  the 0.5 threshold or the most probable class >= min_accuracy; RMSE in the target's units <= max_rmse);
- diverged: a non-finite loss or parameter, or a loss above DIVERGENCE_FACTOR x the step-0 loss at any
  step (a running maximum of every step's loss, the rule of a single run's Monitor). A diverged member
  never counts as converged.

Memory is bounded: the pairs are trained in chunks of `chunk` members (by default as many as fit in
about CHUNK_BYTES of stacked parameters, optimizer state, activations and batch indices). Nothing here
imports torch at module level.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UsageError, raise_if_stopped
from ..spec.archs import TUTORIAL, XOR_Y, Arch, label_indices
from ..spec.limits import FLOAT32_MAX
from ..spec.recipe import MAX_STEPS, OPTIMIZERS, Gate
from .train import DIVERGENCE_FACTOR

if TYPE_CHECKING:  # pragma: no cover
    import torch


MAX_SEEDS = 1_000_000
CHUNK_BYTES = 256 * 2**20  # stacked tensors per chunk: well under 1 GB even with allocator slack
QUANTILES: tuple[tuple[str, float], ...] = (("min", 0.0), ("p5", 0.05), ("p50", 0.5), ("p95", 0.95), ("max", 1.0))

CUDA_NOTICE = (
    "on CUDA, members agree with single CUDA runs to rounding, not to the bit (measured on an H200 over 10001 steps: "
    "up to 2.4e-3 relative in the final loss for wide-deep); --device cpu trains bit-identical members"
)

ProgressFn = Callable[[int, int], None]  # (member-steps done, member-steps in all), every PROGRESS_EVERY steps
PROGRESS_EVERY = 250  # steps between progress reports (and stop checks) within a chunk


@dataclass(frozen=True, slots=True)
class Member:
    """One (seed, lr) pair after training."""

    seed: int
    lr: float
    final_loss: float  # the loss of the last step (before its update), as TrainResult.final_loss
    accuracy: float | None  # classifiers: on the validation rows (the 4 XOR points for XOR data)
    converged: bool  # passes the gate (and did not diverge)
    diverged: bool
    rmse: float | None = None  # regression: on the validation rows, in the target's units

    @property
    def metric(self) -> float:
        """The gate's metric: accuracy, or RMSE for regression."""
        value = self.rmse if self.accuracy is None else self.accuracy
        return value if value is not None else math.nan

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seed": self.seed, "lr": self.lr, "final_loss": _json_float(self.final_loss)}
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        if self.rmse is not None or self.accuracy is None:
            out["rmse"] = _json_float(self.rmse if self.rmse is not None else math.nan)
        out["converged"], out["diverged"] = self.converged, self.diverged
        return out


@dataclass(frozen=True)
class LrSummary:
    lr: float
    members: int
    converged: int
    diverged: int

    @property
    def converged_fraction(self) -> float:
        return self.converged / self.members if self.members else float("nan")


@dataclass(frozen=True)
class SweepSummary:
    per_lr: tuple[LrSummary, ...]  # in the order the lrs were given
    loss_quantiles: tuple[tuple[str, float], ...]  # (name, value) for QUANTILES, over finite final losses
    best: Member  # converged first, then the lowest final loss, then the earliest pair
    members: int
    converged: int
    diverged: int

    @property
    def converged_fraction(self) -> float:
        return self.converged / self.members


@dataclass(frozen=True)
class SweepResult:
    arch: Arch
    seeds: tuple[int, ...]
    lrs: tuple[float, ...]
    steps: int
    min_accuracy: float | None  # the gate: min_accuracy (classifiers) or max_rmse (regression)
    device: str
    chunk: int  # members trained together
    seconds: float  # training and evaluation, initialisation included
    members: tuple[Member, ...]  # seed-major: (seeds[0], lrs[0]), (seeds[0], lrs[1]), ...
    summary: SweepSummary
    max_rmse: float | None = None
    optimizer: str = "sgd"
    batch_size: int = 0
    data: str = "builtin:xor"  # the data's source
    train_rows: int = 4
    val_rows: int = 4
    on: str = "validation rows"  # what the gate is judged on (`Dataset.gate_rows`)  # what the gate was judged on

    @property
    def gate_text(self) -> str:
        return Gate(self.min_accuracy, self.max_rmse).text

    def failing(self, lr: float | None = None) -> list[Member]:
        """Members that did not converge (for one lr, or all)."""
        return [m for m in self.members if not m.converged and (lr is None or m.lr == lr)]

    def as_dict(self) -> dict[str, Any]:
        s = self.summary
        return {
            "arch": self.arch.name,
            "task": self.arch.task,
            "widths": list(self.arch.widths),
            "activation": self.arch.activation,
            "optimizer": self.optimizer,
            "batch_size": self.batch_size,
            "data": self.data,
            "train_rows": self.train_rows,
            "val_rows": self.val_rows,
            "gate_on": self.on,
            "steps": self.steps,
            "min_accuracy": self.min_accuracy,
            "max_rmse": self.max_rmse,
            "device": self.device,
            "chunk": self.chunk,
            "seconds": round(self.seconds, 4),
            "n_seeds": len(self.seeds),
            "lrs": list(self.lrs),
            "summary": {
                "members": s.members,
                "converged": s.converged,
                "diverged": s.diverged,
                "converged_fraction": s.converged_fraction,
                "per_lr": [
                    {
                        "lr": p.lr,
                        "members": p.members,
                        "converged": p.converged,
                        "diverged": p.diverged,
                        "converged_fraction": p.converged_fraction,
                    }
                    for p in s.per_lr
                ],
                "final_loss_quantiles": {k: _json_float(v) for k, v in s.loss_quantiles},
                "best": s.best.as_dict(),
            },
            "members": [m.as_dict() for m in self.members],
        }


def _json_float(v: float) -> float | None:
    return v if math.isfinite(v) else None  # JSON has no NaN/inf


# ---------------------------------------------------------------------------------------------


def check_options(n_seeds: int, lrs: Sequence[float], steps: int, min_accuracy: float | None = None) -> None:
    if not 1 <= n_seeds <= MAX_SEEDS:
        raise UsageError(f"--seeds {n_seeds}: must be between 1 and {MAX_SEEDS:,}")
    if not lrs:
        raise UsageError("--lrs: give at least one learning rate")
    for lr in lrs:
        if not math.isfinite(lr) or lr <= 0 or lr > FLOAT32_MAX:
            raise UsageError(f"--lrs {lr}: every learning rate must be a finite number > 0 within float32's range")
    if len(set(lrs)) != len(lrs):
        raise UsageError(f"--lrs {','.join(map(str, lrs))}: a learning rate is given twice")
    if not 1 <= steps <= MAX_STEPS:
        raise UsageError(f"--steps {steps}: must be between 1 and {MAX_STEPS:,}")
    if min_accuracy is not None and not 0.0 <= min_accuracy <= 1.0:
        raise UsageError(f"--min-accuracy {min_accuracy}: must be between 0 and 1")


def default_chunk(arch: Arch, rows_per_step: int = len(XOR_Y), optimizer: str = "sgd", batch_rows: int = 0) -> int:
    """Members per chunk so the stacked tensors stay near CHUNK_BYTES: per member, its parameters,
    gradients, update temporaries (and Adam's two moments), its activations and their gradients at
    rows_per_step rows, and its epoch's permutation of batch_rows rows (int64) with mini-batches."""
    activations = rows_per_step * sum(arch.widths)
    state = (3 + (4 if optimizer == "adam" else 0)) * arch.n_params
    per_member = 4 * (state + 8 * activations) + 8 * batch_rows
    return max(1, CHUNK_BYTES // per_member)


def sweep(
    arch: Arch,
    seeds: Sequence[int],
    lrs: Sequence[float],
    steps: int = TUTORIAL.steps,
    device: str = "cpu",
    min_accuracy: float | None = TUTORIAL.min_accuracy,
    chunk: int | None = None,
    on_progress: ProgressFn | None = None,
    *,
    data: Any = None,
    optimizer: str = "sgd",
    batch_size: int = 0,
    max_rmse: float | None = None,
    tutorial_init: bool = True,
) -> SweepResult:
    """Train every (seed, lr) pair of `arch` (seed-major order) and summarise.

    data: a `data.Dataset` (trained on its training rows, judged on its validation rows) or None for
    the four XOR points; optimizer, batch_size: as `TrainConfig`'s; the gate: min_accuracy for
    classifiers, max_rmse for regression."""
    from .kernels import small_step_threads
    from .train import describe_device, resolve_device

    seeds, lrs = tuple(int(s) for s in seeds), tuple(float(lr) for lr in lrs)
    if not seeds:
        raise UsageError("give at least one seed")
    for s in seeds:
        if not 0 <= s <= 2**63 - 1:
            raise UsageError(f"seed {s}: must be between 0 and 2**63-1")
    check_options(1, lrs, steps, min_accuracy)
    if arch.task == "regression":
        if max_rmse is None or not math.isfinite(max_rmse) or max_rmse <= 0:
            raise UsageError(f"{arch.name} is a regression model: give its gate as max_rmse > 0")
        gate = Gate(max_rmse=max_rmse)
        min_accuracy = None
    else:
        if min_accuracy is None:
            raise UsageError(f"{arch.name} is a {arch.task} model: give its gate as min_accuracy")
        gate = Gate(min_accuracy=min_accuracy)
        max_rmse = None
    if chunk is not None and chunk < 1:
        raise UsageError(f"chunk {chunk}: must be at least 1")
    dev = resolve_device(device)
    prob = problem(arch, data, optimizer, batch_size, dev)
    batch_rows = prob.rows if prob.rows_per_step < prob.rows else 0
    size = chunk or default_chunk(arch, prob.rows_per_step, optimizer, batch_rows)
    total = len(set(seeds)) * len(lrs) * steps  # member-steps
    trained: dict[tuple[int, float], Member] = {}
    done = 0
    start = time.perf_counter()
    unique = list(dict.fromkeys(seeds))
    for i in range(0, len(unique), size):
        raise_if_stopped()
        block = unique[i : i + size]
        init = _stacked_init(arch, block, tutorial_init)  # once per seed, shared by every lr
        for lr in lrs:
            tick = None if on_progress is None else _ticker(on_progress, done * steps, len(block), total)
            with small_step_threads(dev.type, len(block) * prob.rows_per_step * max(arch.widths)):
                for mem in _train_chunk(arch, block, init, lr, steps, dev, prob, gate, tick):
                    trained[(mem.seed, mem.lr)] = mem
            done += len(block)
            if on_progress is not None:
                on_progress(done * steps, total)
    members = [trained[(s, lr)] for s in seeds for lr in lrs]
    seconds = time.perf_counter() - start
    return SweepResult(
        arch=arch,
        seeds=seeds,
        lrs=lrs,
        steps=steps,
        min_accuracy=min_accuracy,
        device=describe_device(dev),
        chunk=min(size, len(unique)),
        seconds=seconds,
        members=tuple(members),
        summary=summarize(members, lrs),
        max_rmse=max_rmse,
        optimizer=optimizer,
        batch_size=batch_size,
        data=data.source if data is not None else "builtin:xor",
        train_rows=prob.rows,
        val_rows=int(prob.x_val.shape[0]),
        on=prob.on,
    )


def _ticker(on_progress: ProgressFn, before: int, members: int, total: int) -> Callable[[int], None]:
    """A chunk's step count -> on_progress(member-steps done, in all)."""
    return lambda step: on_progress(before + members * step, total)


def summarize(members: Sequence[Member], lrs: Sequence[float]) -> SweepSummary:
    import numpy as np

    per_lr = []
    for lr in lrs:
        these = [m for m in members if m.lr == lr]
        per_lr.append(LrSummary(lr, len(these), sum(m.converged for m in these), sum(m.diverged for m in these)))
    finite = np.array([m.final_loss for m in members if math.isfinite(m.final_loss)], dtype=np.float64)
    quantiles = tuple((name, float(np.quantile(finite, q)) if finite.size else float("nan")) for name, q in QUANTILES)

    def rank(m: Member) -> tuple[bool, float]:
        return (not m.converged, m.final_loss if math.isfinite(m.final_loss) else math.inf)

    best = min(members, key=rank)  # min keeps the first of equals: the earliest pair
    return SweepSummary(
        per_lr=tuple(per_lr),
        loss_quantiles=quantiles,
        best=best,
        members=len(members),
        converged=sum(m.converged for m in members),
        diverged=sum(m.diverged for m in members),
    )


# ---------------------------------------------------------------------------------------------
# The batched trainer


@dataclass(frozen=True, eq=False)
class Problem:
    """What every member trains on and is judged on, on the training device: the data as a single
    `train` run sees it, and the optimizer settings shared by all members."""

    x: Any  # (rows, n_inputs) float32: the training rows, standardized as the model's first layer does
    y: Any  # binary/regression (rows, 1) float32 (regression: standardized when scale_output); multiclass (rows,) int64
    x_val: Any  # (val_rows, n_inputs) float32, standardized likewise
    y_val: Any  # numpy: class indices (classifiers) or float64 targets in the target's units (regression)
    out_scale: tuple[float, float] | None  # regression: (std, mean), float32 values of the Unstandardize layer
    optimizer: str = "sgd"
    batch_size: int = 0  # 0 or >= rows: full batch
    on: str = "validation rows"  # what the gate is judged on (`Dataset.gate_rows`)

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def rows_per_step(self) -> int:
        return self.batch_size if 0 < self.batch_size < self.rows else self.rows


def problem(arch: Arch, data: Any = None, optimizer: str = "sgd", batch_size: int = 0, device: Any = "cpu") -> Problem:
    """The training and validation tensors of `arch` on `data` (a `data.Dataset`; not given: the four
    XOR points), standardized once with the training split's float32 statistics (`model.set_scaling`):
    `(x - mean) / std` row by row is exactly what the model's Standardize layer computes on each batch."""
    import numpy as np
    import torch

    from ..spec.data import xor_dataset
    from .train import training_tensors

    if optimizer not in OPTIMIZERS:
        raise UsageError(f"optimizer {optimizer!r}: choose {' or '.join(OPTIMIZERS)}")
    if batch_size < 0:
        raise UsageError(f"batch size {batch_size}: must be >= 0 (0: full batch)")
    if data is None:
        if arch.task != "binary" or arch.n_inputs != 2:
            raise UsageError(f"{arch.name} is a {arch.task} model with {arch.n_inputs} inputs: give its data")
        data = xor_dataset()
    x, y = training_tensors(data, arch, device)
    x_val = torch.from_numpy(np.ascontiguousarray(data.x_val, dtype=np.float32)).to(device)
    if arch.scale_input:
        mean = torch.as_tensor(data.stats.mean, dtype=torch.float32, device=device)
        std = torch.as_tensor(data.stats.std, dtype=torch.float32, device=device)
        x, x_val = (x - mean) / std, (x_val - mean) / std
    out_scale = None
    if arch.task == "regression":
        y_val = np.asarray(data.y_val, dtype=np.float64)
        if arch.scale_output:
            out_scale = (float(np.float32(data.target_std)), float(np.float32(data.target_mean)))
    else:
        y_val = np.asarray(data.y_val, dtype=np.int64)
    return Problem(
        x.contiguous(), y.contiguous(), x_val.contiguous(), y_val, out_scale, optimizer, batch_size, data.gate_rows
    )


def _stacked_init(arch: Arch, seeds: Sequence[int], tutorial_init: bool = True) -> list[torch.Tensor]:
    """[W0, b0, W1, b1, ...] on the CPU: W (M, out, in), b (M, out); member m is init_model(arch, seeds[m])'s."""
    import torch

    from .model import init_model, linear_layers

    rows = []
    for seed in seeds:
        layers = linear_layers(init_model(arch, seed, tutorial_init))
        rows.append([t.detach() for layer in layers for t in (layer.weight, layer.bias)])
    return [torch.stack([r[k] for r in rows]).contiguous() for k in range(2 * arch.n_linear)]


@dataclass(frozen=True)
class _LinearPlan:
    """How one layer's three products are computed for stacked members (see `_linear_plan`)."""

    forward: Callable[..., Any]  # (h (M, rows, in), w (M, out, in), w_t view, b_view (M, 1, out)) -> (M, rows, out)
    weight_grad: Callable[..., Any]  # (gz (M, rows, out), h) -> (M, out, in)
    input_grad: Callable[..., Any]  # (gz, w) -> (M, rows, in)
    batched: tuple[bool, bool, bool]  # per product: a batched form (True) or the per-member loop (False)


def _forms(m: int, rows: int, n_in: int, n_out: int, dev: Any) -> tuple[list, list, list]:
    """Batched forms of a layer's forward, weight-gradient and input-gradient products, in order of
    preference (cheapest first). They compute the same sums in different orders."""
    import torch

    bmm, baddbmm, mv = torch.bmm, torch.baddbmm, torch.mv
    forward = [
        lambda h, w, wt, bv: baddbmm(bv, h, wt),  # F.linear's addmm(b, h, w.t()), batched
        lambda h, w, wt, bv: bmm(h, wt) + bv,
    ]
    if n_out == 1:
        # One output: the single run's addmm hands (rows, in) @ (in, 1) to MKL's gemv, whose order is
        # reproduced by one gemv over every member's rows at once: the products h * w (M, rows, in),
        # summed by `mv` against ones (the order of a gemv row does not depend on the row count).
        ones = torch.ones(n_in, device=dev)
        forward.append(lambda h, w, wt, bv: mv((h * w).reshape(-1, n_in), ones).view(m, -1, 1) + bv)
    weight_grad = [
        lambda gz, h: bmm(gz.transpose(1, 2), h),  # autograd: grad.t().mm(input)
        lambda gz, h: bmm(h.transpose(1, 2), gz).transpose(1, 2),
    ]
    input_grad = [
        lambda gz, w: bmm(gz, w),  # autograd: grad.mm(weight)
        lambda gz, w: bmm(w.transpose(1, 2), gz.transpose(1, 2)).transpose(1, 2),
    ]
    return forward, weight_grad, input_grad


PROBE_DRAWS = 8  # random operands per probe: a form that differs in rare elements only must show it
ALIGN = 16  # float32 elements in 64 bytes: the CPU allocator's alignment, which every single-run tensor has


def _per_member(m: int, rows: int, n_in: int, n_out: int) -> tuple[Callable[..., Any], ...]:
    """The three products computed member by member with a single run's own kernels (`addmm(b, h,
    w.t())`, `mm(g.t(), h)`, `mm(g, w)`) on 2-D tensors laid out as a single run's: contiguous and
    64-byte aligned. MKL's small-matrix kernels pick their summation order by the operands' alignment
    (16 bytes matters), and member k of a stacked tensor starts at k x its size, so the operands are
    first copied (one op each) into staging buffers whose members start at 64-byte boundaries, and
    the results written into such a buffer, then copied out contiguous. M kernel calls per product:
    the price of exactness where no batched form has it."""
    import torch

    addmm, mm = torch.addmm, torch.mm

    def stage(a: int, b: int) -> tuple[Any, list[Any]]:
        n = a * b
        buf = torch.empty(m, -(-n // ALIGN) * ALIGN)  # torch.empty is 64-byte aligned
        stacked = buf[:, :n].view(m, a, b)
        return stacked, [stacked[k] for k in range(m)]

    h_st, h_k = stage(rows, n_in)
    w_st, w_k = stage(n_out, n_in)
    b_st, b_k = stage(1, n_out)
    gz_st, gz_k = stage(rows, n_out)
    f_st, f_k = stage(rows, n_out)
    g_st, g_k = stage(n_out, n_in)
    i_st, i_k = stage(rows, n_in)
    wt_k = [w.t() for w in w_k]
    gzt_k = [g.t() for g in gz_k]
    b_k = [b[0] for b in b_k]  # (out,), as the single run's bias

    def inputs(h: Any) -> list[Any]:
        if h.stride(0) == 0 and h[0].is_contiguous():  # one input shared by every member: a single run's own x
            return [h[0]] * m
        h_st.copy_(h)
        return h_k

    def forward(h: Any, w: Any, wt: Any, bv: Any) -> Any:
        hs = inputs(h)
        w_st.copy_(w)
        b_st.copy_(bv)
        for k in range(m):
            addmm(b_k[k], hs[k], wt_k[k], out=f_k[k])
        return f_st.contiguous()

    def weight_grad(gz: Any, h: Any) -> Any:
        hs = inputs(h)
        gz_st.copy_(gz)
        for k in range(m):
            mm(gzt_k[k], hs[k], out=g_k[k])
        return g_st.contiguous()

    def input_grad(gz: Any, w: Any) -> Any:
        gz_st.copy_(gz)
        w_st.copy_(w)
        for k in range(m):
            mm(gz_k[k], w_k[k], out=i_k[k])
        return i_st.contiguous()

    return forward, weight_grad, input_grad


_PLANS: dict[tuple, _LinearPlan] = {}


def _probe_members(m: int) -> list[int]:
    """Members the probe checks: one of each alignment class (member k of a stacked tensor starts at
    k x its size, so the classes repeat within ALIGN members), the middle and the last."""
    return sorted({*range(min(m, ALIGN)), m // 2, m - 1})


def _linear_plan(m: int, rows: int, n_in: int, n_out: int, shared_input: bool, dev: Any) -> _LinearPlan:
    """For a layer (rows, n_in) -> (rows, n_out) stacked m times: per product, the first batched form
    that reproduces on random data the bits autograd gives a single run (`F.linear` and its backward)
    for every probed member (`_probe_members`); where none does, the per-member loop of the single
    run's own kernel (`_per_member`). Which order a kernel sums in is a property of the shapes, strides
    and alignment (MKL's kernels; ATen's own loop below about 400 multiply-adds), not of the values, so
    the probe decides for the real data too. On CUDA the first forms are used. shared_input: the
    layer's input is one (rows, n_in) tensor expanded over members."""
    import torch

    key = (m, rows, n_in, n_out, shared_input, str(dev))
    if key in _PLANS:
        return _PLANS[key]
    forward, weight_grad, input_grad = _forms(m, rows, n_in, n_out, dev)
    if dev.type != "cpu":
        plan = _LinearPlan(forward[0], weight_grad[0], input_grad[0], (True, True, True))
        _PLANS[key] = plan
        return plan
    gen = torch.Generator().manual_seed(0)
    probe = _probe_members(m)
    draws = []  # (h, w, b, gz, [(out, weight grad, input grad) of a single run per probed member])
    for _ in range(PROBE_DRAWS):
        h = torch.randn(1 if shared_input else m, rows, n_in, generator=gen)
        h = h.expand(m, rows, n_in) if shared_input else h
        w = torch.randn(m, n_out, n_in, generator=gen)
        b = torch.randn(m, n_out, generator=gen)
        gz = torch.randn(m, rows, n_out, generator=gen)
        ref: list[tuple[Any, Any, Any]] = []
        for k in probe:
            wk, bk, hk = (t[k].clone().requires_grad_() for t in (w, b, h))  # fresh, aligned: a single run's
            out = torch.nn.functional.linear(hk, wk, bk)
            out.backward(gz[k].clone())
            ref.append((out.detach(), wk.grad, hk.grad))
        draws.append((h, w, b, gz, ref))
    loop = _per_member(m, rows, n_in, n_out)

    def first(forms: list, which: int) -> tuple[Callable[..., Any], bool]:
        for form in forms:
            for h, w, b, gz, ref in draws:
                args = ((h, w, w.transpose(1, 2), b.unsqueeze(1)), (gz, h), (gz, w))[which]
                got = form(*args)
                if not all(torch.equal(got[k], r[which]) for k, r in zip(probe, ref)):
                    break
            else:
                return form, True
        return loop[which], False

    f, fb = first(forward, 0)
    g, gb = first(weight_grad, 1)
    i, ib = first(input_grad, 2)
    plan = _LinearPlan(f, g, i, (fb, gb, ib))
    _PLANS[key] = plan
    return plan


def _vector_block() -> int:
    """Elements ATen's CPU elementwise loop handles per vectorized iteration (two SIMD registers of
    float32); a tensor's last (numel mod this) elements take the scalar loop."""
    import torch

    return 32 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 16


def _sigmoid_as_single(m: int, rows: int, width: int, dev: Any) -> Callable[[Any], Any]:
    """torch.sigmoid on (m, rows, width), each member's elements computed by the loop (vectorized or
    scalar) that computes them in a single run's (rows, width) tensor. The two loops of sigmoid give
    different bits (1 ulp now and then; every other op in the step agrees): a single run's tensor takes
    the vectorized loop for its first (n // block) * block elements and the scalar loop for the rest,
    where the stacked tensor would take the vectorized loop for nearly everything. So: every element
    through the vectorized loop (a padded flat buffer), then each member's tail again through the scalar
    loop (a strided view, which ATen cannot vectorize)."""
    import torch

    n = rows * width
    block = _vector_block()
    head = n // block * block
    if dev.type != "cpu" or head == n:
        return torch.sigmoid
    if head == 0:  # all scalar: write through a view with stride 2
        buf = torch.zeros(m, n, 2, device=dev)
        view = buf[:, :, 0]

        def scalar(z):
            torch.sigmoid(z.reshape(m, n), out=view)
            return view.reshape(z.shape).contiguous()

        return scalar
    padded = -(-m * n // block) * block
    zbuf = torch.zeros(padded, device=dev)
    z_used = zbuf[: m * n]

    def mixed(z):
        z_used.copy_(z.reshape(-1))
        h = torch.sigmoid(zbuf)  # (padded,): every element through the vectorized loop
        tails = h[: m * n].view(m, n)[:, head:]  # (m, n - head), rows n apart: the scalar loop
        torch.sigmoid(z_used.view(m, n)[:, head:], out=tails)
        return h[: m * n].view(z.shape)

    return mixed


def _activation(name: str) -> tuple[Callable[..., Any], Callable[..., Any], bool]:
    """(forward, backward(grad, saved), whether backward takes the pre-activation): the module's op and
    the backward kernel autograd calls for it."""
    import torch

    aten = torch.ops.aten
    if name == "sigmoid":
        return torch.sigmoid, aten.sigmoid_backward, False
    if name == "tanh":
        return torch.tanh, aten.tanh_backward, False
    if name == "relu":
        return torch.relu, lambda g, out: aten.threshold_backward(g, out, 0), False
    if name == "gelu":
        gelu = torch._C._nn.gelu
        return gelu, lambda g, z: aten.gelu_backward(g, z, approximate="none"), True
    raise ValueError(f"unknown activation {name!r}")


class _Head:
    """A task's head over stacked members, (M, rows, n_out): the output from the last pre-activation,
    each member's loss, and d loss / d pre-activation with the kernels a single run's autograd calls
    (`kernels.explicit_grads`'s `head`, batched: reduction none, then the mean's 1/rows as BCELoss's
    backward applies it)."""

    def __init__(self, arch: Arch, m: int, rows: int, dev: Any) -> None:
        import torch

        aten = torch.ops.aten
        self.task, self.m, self.rows = arch.task, m, rows
        self.sigmoid = _sigmoid_as_single(m, rows, arch.widths[-1], dev)
        self.bce, self.bce_backward = torch._C._nn.binary_cross_entropy, aten.binary_cross_entropy_backward
        self.sigmoid_backward = aten.sigmoid_backward
        self.log_softmax, self.log_softmax_backward = torch.log_softmax, aten._log_softmax_backward_data
        self.mse, self.mse_backward = aten.mse_loss.default, aten.mse_loss_backward  # what a single run calls
        self.nll = aten.nll_loss_forward.default
        # The loss gradient's 1/rows: BCELoss's backward divides by the row count after the elementwise
        # formula; when 1/rows is a power of 2, multiplying first gives the same bits in one op fewer.
        self.inv = torch.tensor(1.0, device=dev) / rows  # float32 1/rows, as the kernels compute it
        self.power_of_2 = rows & (rows - 1) == 0
        ones = torch.ones((m, rows, 1), device=dev)
        self.grad_out = torch.full((m, rows, 1), float(self.inv), device=dev) if self.power_of_2 else ones
        self.nll_value = -self.inv  # nll_loss's backward: -grad / total_weight at each row's class

    def out(self, z: Any) -> Any:
        """What the loss reads: probabilities (binary), log-probabilities (multiclass), z (regression)."""
        if self.task == "binary":
            return self.sigmoid(z)
        if self.task == "multiclass":
            return self.log_softmax(z, 2)
        return z

    def batch_loss(self, out: Any, y: Any) -> Any:
        """Each member's loss on its batch (mean over its rows), batched: (M,). Within rounding of a
        single run's (the reduction's order differs); read every step for the divergence rule only."""
        if self.task == "binary":
            return self.bce(out, y, None, 0).mean(dim=(1, 2))  # type: ignore[arg-type]
        if self.task == "multiclass":
            return -out.gather(2, y.unsqueeze(2)).mean(dim=(1, 2))
        return self.mse(out, y, 0).mean(dim=(1, 2))

    def single_loss(self, out: Any, y: Any) -> Any:
        """Each member's loss as a single run computes it, to the bit: the head's loss kernel with mean
        reduction on the member's own (fresh, aligned) 2-D tensors, one call per member: (M,)."""
        import torch

        each = []
        for k in range(self.m):
            o, t = out[k].clone(), y[k].clone()
            if self.task == "binary":
                each.append(self.bce(o, t, None, 1))  # type: ignore[arg-type]
            elif self.task == "multiclass":
                each.append(self.nll(o, t, None, 1, -100)[0])  # CrossEntropyLoss: nll_loss on log_softmax
            else:
                each.append(self.mse(o, t, 1))
        return torch.stack(each)

    def grad(self, out: Any, y: Any) -> Any:
        """d loss / d the last pre-activation, (M, rows, n_out)."""
        import torch

        if self.task == "binary":
            g = self.bce_backward(self.grad_out, out, y, None, 0)
            if not self.power_of_2:
                g = g.div_(self.rows)
            return self.sigmoid_backward(g, out)
        if self.task == "multiclass":
            g = torch.zeros_like(out).scatter_(2, y.unsqueeze(2), self.nll_value.expand(self.m, self.rows, 1))
            return self.log_softmax_backward(g, out, 2, out.dtype)
        return self.mse_backward(self.inv, out, y, 0)  # 2 * (out - y) * (1/rows): MSELoss's 2/rows * (out - y)


class _Stack:
    """The members' layers, stacked: forward keeps what backward needs; backward returns the gradients
    in the parameters' order [dW0, db0, dW1, db1, ...], last layer first as autograd computes them."""

    def __init__(self, arch: Arch, params: list, m: int, rows: int, shared_input: bool, dev: Any) -> None:
        self.weights = params[0::2]
        self.weights_t = [w.transpose(1, 2) for w in self.weights]  # views: they follow in-place updates
        self.bias_views = [b.unsqueeze(1) for b in params[1::2]]  # (M, 1, out): broadcast over rows
        widths, n = arch.widths, len(self.weights)
        self.n = n
        self.plans = [_linear_plan(m, rows, widths[i], widths[i + 1], i == 0 and shared_input, dev) for i in range(n)]
        act, self.act_backward, self.needs_z = _activation(arch.activation)
        sigmoid = arch.activation == "sigmoid"
        self.acts = [_sigmoid_as_single(m, rows, widths[i + 1], dev) if sigmoid else act for i in range(n - 1)]
        self.hs: list[Any] = []  # hs[i]: layer i's input, (M, rows, widths[i])
        self.zs: list[Any] = []  # hidden pre-activations (gelu's backward takes them)

    def forward(self, x: Any) -> Any:
        """The last layer's pre-activation, (M, rows, n_out)."""
        self.hs, self.zs = [x], []
        h = x
        for i in range(self.n):
            z = self.plans[i].forward(h, self.weights[i], self.weights_t[i], self.bias_views[i])
            if i == self.n - 1:
                return z
            h = self.acts[i](z)
            self.hs.append(h)
            if self.needs_z:
                self.zs.append(z)
        raise AssertionError("unreachable")  # pragma: no cover

    def backward(self, gz: Any) -> list[Any]:
        grads: list[Any] = [None] * (2 * self.n)
        g = gz
        for i in range(self.n - 1, -1, -1):
            if i < self.n - 1:
                gz = self.act_backward(g, self.zs[i] if self.needs_z else self.hs[i + 1])
            if i:
                g = self.plans[i].input_grad(gz, self.weights[i])  # (M, rows, widths[i])
            grads[2 * i] = self.plans[i].weight_grad(gz, self.hs[i])  # (M, out, in)
            grads[2 * i + 1] = gz.sum(1)  # (M, out)
        return grads


def _member_batches(prob: Problem, seeds: Sequence[int], dev: Any) -> Any:
    """(x, y) stacked per member for every step, forever: the batches `kernels.batches` gives a single
    run seeded with each member's seed (a fresh permutation per epoch from a CPU generator, the short
    last batch dropped); full batch: one copy of the rows, expanded (no per-member memory)."""
    import torch

    m, rows, step_rows = len(seeds), prob.rows, prob.rows_per_step
    x_all, y_all = prob.x, prob.y
    if step_rows == rows:
        xb = x_all.unsqueeze(0).expand(m, *x_all.shape)
        yb = y_all.unsqueeze(0).expand(m, *y_all.shape)
        while True:
            yield xb, yb
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    while True:
        order = torch.stack([torch.randperm(rows, generator=g) for g in gens]).to(dev)  # (M, rows)
        for start in range(0, rows - step_rows + 1, step_rows):
            idx = order[:, start : start + step_rows].reshape(-1)  # (M * rows_per_step,)
            yield (
                x_all.index_select(0, idx).view(m, step_rows, -1),
                y_all.index_select(0, idx).view(m, step_rows, *y_all.shape[1:]),
            )


def _train_chunk(
    arch: Arch,
    seeds: Sequence[int],
    init: list,
    lr: float,
    steps: int,
    dev: torch.device,
    prob: Problem,
    gate: Gate,
    on_step: Callable[[int], None] | None = None,
) -> list[Member]:
    """Train copies of the stacked `init` (one member per seed) at one learning rate.

    One step, per member exactly what `train.autograd_loop` does for a single run: the member's batch
    (`_member_batches`), the modules' forward ops and their backward kernels in autograd's order
    (`_Stack`), the loss's own (`_Head`), and the optimizer's update (`kernels.optimizer_update`, the
    one a single explicit run takes: SGD's `_foreach_add_`, Adam's `AdamUpdate` checked against torch.optim)."""
    import torch

    from .kernels import optimizer_update

    m = len(seeds)
    params = [p.to(dev, copy=True) for p in init]
    step_rows = prob.rows_per_step
    net = _Stack(arch, params, m, step_rows, step_rows == prob.rows, dev)
    head = _Head(arch, m, step_rows, dev)
    feed = _member_batches(prob, seeds, dev)
    update = optimizer_update(prob.optimizer, params, lr)
    loss0: Any = None  # step 0's loss per member, as a single run computes it
    peak: Any = None  # the highest loss of any step so far per member (NaN once one was NaN)
    final: Any = None
    overflowed = False  # an update's scale beyond float32 (Adam at a huge lr): every member diverged
    for step in range(steps):
        xb, yb = next(feed)
        out = head.out(net.forward(xb))
        # The divergence rule of a single run's Monitor, which reads every step's loss: non-finite, or
        # above DIVERGENCE_FACTOR x step 0's. A running maximum (NaN propagates) decides it at the end.
        exact = step == 0 or step == steps - 1
        loss = head.single_loss(out, yb) if exact else head.batch_loss(out, yb)
        loss0 = loss if step == 0 else loss0
        final = loss
        peak = loss if peak is None else torch.maximum(peak, loss)
        try:
            update(net.backward(head.grad(out, yb)))
        except RuntimeError as exc:  # what `train` reports as "the Adam update overflowed float32"
            if "overflow" not in str(exc):
                raise
            overflowed = True
            break
        if step % PROGRESS_EVERY == PROGRESS_EVERY - 1:
            raise_if_stopped()
            if on_step is not None:
                on_step(step + 1)

    if overflowed:
        final = torch.full((m,), math.nan)
        peak = torch.full((m,), math.nan)
    finite_params = torch.stack([torch.isfinite(p.reshape(m, -1)).all(1) for p in params]).all(0)
    blown = ~torch.isfinite(peak) | ~torch.isfinite(loss0) | (peak > DIVERGENCE_FACTOR * loss0)
    diverged = (blown | ~finite_params).tolist()
    metric = _evaluate(arch, net, prob, dev)
    result = []
    for seed, loss_v, metric_v, d_v in zip(seeds, final.tolist(), metric, diverged):
        accuracy, rmse = (None, metric_v) if arch.task == "regression" else (metric_v, None)
        passed = gate.passes(accuracy, rmse)  # the gate's one rule
        result.append(Member(seed, lr, loss_v, accuracy, passed and not d_v, bool(d_v), rmse))
    return result


def _evaluate(arch: Arch, net: _Stack, prob: Problem, dev: Any) -> list[float]:
    """The gate's metric per member on the validation rows, as `validate.evaluate` computes it from the
    model's outputs: the same blocks of `validate.EVAL_CHUNK` rows, each layer's product as the single
    run's `addmm` (`_linear_plan`), the head's op (sigmoid, softmax, Unstandardize's `x * std + mean` in
    float32), then per member numpy's own reductions on the float64 outputs: accuracy (binary:
    probability > 0.5; multi-class: the first most probable class) or RMSE in the target's units. So a
    row on the threshold gets the single run's verdict."""
    import numpy as np
    import torch

    from .validate import EVAL_CHUNK

    weights, weights_t, bias_views = net.weights, net.weights_t, net.bias_views
    m = weights[0].shape[0]
    sigmoid = arch.activation == "sigmoid"
    act = _activation(arch.activation)[0]
    x = prob.x_val
    n_rows = int(x.shape[0])
    truth = prob.y_val
    if not n_rows:
        return [math.inf if arch.task == "regression" else 0.0] * m
    truth = np.asarray(truth, dtype=np.float64 if arch.task == "regression" else np.int64)
    right = np.zeros(m, dtype=np.int64)  # classification: rows labelled right, per member
    outs = []  # regression: the outputs, per chunk (M, rows)
    for start in range(0, n_rows, EVAL_CHUNK):
        h = x[start : start + EVAL_CHUNK].unsqueeze(0).expand(m, -1, -1)  # (M, rows, n_inputs)
        rows = int(h.shape[1])
        for i, (w, wt, bv) in enumerate(zip(weights, weights_t, bias_views)):
            plan = _linear_plan(m, rows, arch.widths[i], arch.widths[i + 1], i == 0, dev)
            h = plan.forward(h, w, wt, bv)  # the products the single run's addmm computes, in its order
            if i < len(weights) - 1:
                h = _sigmoid_as_single(m, rows, int(h.shape[2]), dev)(h) if sigmoid else act(h)
        if arch.is_classifier:
            head = _sigmoid_as_single(m, rows, 1, dev)(h) if arch.task == "binary" else torch.softmax(h, 2)
            probs = head.cpu().numpy()  # (M, rows, K): the model's outputs, as a single run's
            chunk = truth[start : start + rows]
            for k in range(m):  # the one label rule, member by member (no (M, rows) index array)
                right[k] += int(np.sum(label_indices(arch.task, probs[k]) == chunk))
        else:
            out = h[:, :, 0]
            if prob.out_scale is not None:
                std, mean = (torch.tensor(v, dtype=torch.float32, device=out.device) for v in prob.out_scale)
                out = out * std + mean  # Unstandardize: x * std + mean, float32
            outs.append(out.cpu().numpy())
    if arch.is_classifier:
        return [float(right[k] / n_rows) for k in range(m)]
    got = np.concatenate(outs, axis=1)  # (M, rows)
    return [float(np.sqrt(np.mean((got[k].astype(np.float64) - truth) ** 2))) for k in range(m)]


# ---------------------------------------------------------------------------------------------
# The picture

LOSS_NAMES = {"binary": "BCE", "multiclass": "cross-entropy", "regression": "MSE"}


def write_png(result: SweepResult) -> bytes:
    """Final-loss histogram (log x) and converged fraction per lr, as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80, gridspec_kw={"width_ratios": [2.2, 1]})
    try:
        for lr in result.lrs:
            v = np.array([m.final_loss for m in result.members if m.lr == lr and math.isfinite(m.final_loss)])
            v = v[v > 0]
            if v.size:
                lo, hi = float(v.min()), float(v.max())
                bins = np.logspace(math.log10(lo), math.log10(hi * 1.0001) if hi > lo else math.log10(lo) + 0.1, 40)
                ax1.hist(v, bins=bins, alpha=0.6, label=f"lr {lr:g}")
        ax1.set_xscale("log")
        ax1.set_yscale("log")
        ax1.set_xlabel(f"final {LOSS_NAMES[result.arch.task]} loss")
        ax1.set_ylabel("members")
        ax1.set_title(f"{result.arch.name}: {len(result.seeds)} seeds, {result.steps} steps")
        ax1.grid(True, which="major", alpha=0.3)
        ax1.legend(fontsize=8)
        s = result.summary
        labels = [f"{p.lr:g}" for p in s.per_lr]
        fractions = [p.converged_fraction for p in s.per_lr]
        bars = ax2.bar(labels, fractions, color="tab:green")
        for bar, f in zip(bars, fractions):
            ax2.text(bar.get_x() + bar.get_width() / 2, f, f"{f:.3f}", ha="center", va="bottom", fontsize=8)
        ax2.set_ylim(0, 1.1)
        ax2.set_xlabel("learning rate")
        ax2.set_ylabel("converged fraction")
        ax2.set_title(f"gate: {result.gate_text}")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def table(result: SweepResult, failing: int = 10) -> str:
    """The summary the CLI prints."""
    s = result.summary
    batch = f", batch {result.batch_size}" if result.batch_size else ""
    lines = [
        f"{result.arch.name}: {s.members} members ({len(result.seeds)} seeds x {len(result.lrs)} lrs), "
        f"{result.steps} steps{batch} with {result.optimizer} on {result.device} in {result.seconds:.2f}s "
        f"(chunks of {result.chunk}); gate {result.gate_text} on {result.val_rows} {result.on}",
        f"  {'lr':>8} {'members':>8} {'converged':>10} {'fraction':>9} {'diverged':>9}  first failing seeds",
    ]
    for p in s.per_lr:
        fails = [m.seed for m in result.failing(p.lr)]
        shown = ", ".join(map(str, fails[:failing])) + (", ..." if len(fails) > failing else "")
        lines.append(
            f"  {p.lr:>8g} {p.members:>8} {p.converged:>10} {p.converged_fraction:>9.4f} {p.diverged:>9}  {shown or '-'}"
        )
    q = "  ".join(f"{k} {v:.3e}" for k, v in s.loss_quantiles)
    lines.append(f"  final loss: {q}")
    b = s.best
    metric = f"RMSE {b.metric:.4g}" if b.accuracy is None else f"accuracy {b.metric:.3f}"
    lines.append(
        f"  best: seed {b.seed}, lr {b.lr:g}: final loss {b.final_loss:.4e}, {metric}"
        f"{'' if b.converged else ' (NOT converged: no pair passes the gate)'}"
    )
    return "\n".join(lines)
