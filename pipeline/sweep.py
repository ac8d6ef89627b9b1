"""Many seeds and learning rates at once: how often does a model get stuck, and which pair is best?

Every (seed, lr) pair is one *member*. The members' parameters are stacked along a leading dimension
and trained together by one program of batched ops (`torch.baddbmm`, `torch.bmm`), so the cost barely
grows with the number of members: at 4 rows per member the per-op overhead, not the arithmetic,
is what a step costs.

Each member starts from exactly `init_model(arch, seed)`'s weights and follows the same SGD/BCE
dynamics as a single `train()` run, with the same ATen kernels where they exist in batched form:
the BCE gradient is `binary_cross_entropy_backward` itself (its clamp included) and the sigmoid
gradient is `sigmoid_backward`. The matrix products are batched (`bmm` instead of `mm`), the bias
gradient is a sum over a different dimension, and the learning rate is folded into the loss
gradient, so members are not bit-identical to single runs: their final losses agree within 1e-4
relative (tested) and their gate verdicts agree. `docs/sweep.md` has the numbers.

Verdicts:
- converged: the gate passes, accuracy on the 4 XOR points (threshold 0.5) >= min_accuracy;
- diverged: a non-finite loss or parameter, or a loss above DIVERGENCE_FACTOR x the step-0 loss at a
  checked step (every CHECK_EVERY steps and the last; a single run checks every step). A diverged
  member never counts as converged.

Memory is bounded: the pairs are trained in chunks of `chunk` members (by default as many as fit in
about CHUNK_BYTES of stacked parameters, gradients and activations). Nothing here imports torch at
module level.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .archs import TUTORIAL, XOR_Y, Arch
from .errors import UsageError, raise_if_stopped
from .train import DIVERGENCE_FACTOR

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .recipe import Recipe

MAX_SEEDS = 1_000_000
MAX_STEPS = 10_000_000
CHECK_EVERY = 100  # steps between the (cheap, batched) divergence checks
CHUNK_BYTES = 256 * 2**20  # stacked tensors per chunk: well under 1 GB even with allocator slack
QUANTILES: tuple[tuple[str, float], ...] = (("min", 0.0), ("p5", 0.05), ("p50", 0.5), ("p95", 0.95), ("max", 1.0))

ProgressFn = Callable[[int, int], None]  # (members done, members in all), after each chunk


@dataclass(frozen=True, slots=True)
class Member:
    """One (seed, lr) pair after training."""

    seed: int
    lr: float
    final_loss: float  # the loss of the last step (before its update), as TrainResult.final_loss
    accuracy: float  # of the trained weights on the 4 XOR points
    converged: bool  # passes the gate (and did not diverge)
    diverged: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "lr": self.lr,
            "final_loss": _json_float(self.final_loss),
            "accuracy": self.accuracy,
            "converged": self.converged,
            "diverged": self.diverged,
        }


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
    min_accuracy: float
    device: str
    chunk: int  # members trained together
    seconds: float  # training and evaluation, initialisation included
    members: tuple[Member, ...]  # seed-major: (seeds[0], lrs[0]), (seeds[0], lrs[1]), ...
    summary: SweepSummary

    def failing(self, lr: float | None = None) -> list[Member]:
        """Members that did not converge (for one lr, or all)."""
        return [m for m in self.members if not m.converged and (lr is None or m.lr == lr)]

    def as_dict(self) -> dict[str, Any]:
        s = self.summary
        return {
            "arch": self.arch.name,
            "steps": self.steps,
            "min_accuracy": self.min_accuracy,
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


def check_options(n_seeds: int, lrs: Sequence[float], steps: int, min_accuracy: float) -> None:
    if not 1 <= n_seeds <= MAX_SEEDS:
        raise UsageError(f"--seeds {n_seeds}: must be between 1 and {MAX_SEEDS:,}")
    if not lrs:
        raise UsageError("--lrs: give at least one learning rate")
    for lr in lrs:
        if not math.isfinite(lr) or lr <= 0 or lr > 3.4e38:
            raise UsageError(f"--lrs {lr}: every learning rate must be a finite number > 0 within float32's range")
    if len(set(lrs)) != len(lrs):
        raise UsageError(f"--lrs {','.join(map(str, lrs))}: a learning rate is given twice")
    if not 1 <= steps <= MAX_STEPS:
        raise UsageError(f"--steps {steps}: must be between 1 and {MAX_STEPS:,}")
    if not 0.0 <= min_accuracy <= 1.0:
        raise UsageError(f"--min-accuracy {min_accuracy}: must be between 0 and 1")


def parse_lrs(text: str) -> tuple[float, ...]:
    """'0.5,1,2' -> (0.5, 1.0, 2.0); a bad item is a one-line UsageError."""
    out = []
    for item in text.split(","):
        try:
            out.append(float(item.strip()))
        except ValueError:
            raise UsageError(f"--lrs {text!r}: {item.strip()!r} is not a number (give e.g. 0.5,1,2)") from None
    return tuple(out)


def default_chunk(arch: Arch) -> int:
    """Members per chunk so the stacked tensors stay near CHUNK_BYTES."""
    rows = len(XOR_Y)
    activations = rows * sum(arch.widths)
    # parameters, gradients, the update's temporaries; forward activations, their gradients, scratch
    per_member = 4 * (3 * arch.n_params + 6 * activations)
    return max(1, CHUNK_BYTES // per_member)


def sweep(
    arch: Arch,
    seeds: Sequence[int],
    lrs: Sequence[float],
    steps: int = TUTORIAL.steps,
    device: str = "cpu",
    min_accuracy: float = TUTORIAL.min_accuracy,
    chunk: int | None = None,
    on_progress: ProgressFn | None = None,
) -> SweepResult:
    """Train every (seed, lr) pair of `arch` (seed-major order) and summarise."""
    from .train import describe_device, resolve_device

    seeds, lrs = tuple(int(s) for s in seeds), tuple(float(lr) for lr in lrs)
    if not seeds:
        raise UsageError("give at least one seed")
    for s in seeds:
        if not 0 <= s <= 2**63 - 1:
            raise UsageError(f"seed {s}: must be between 0 and 2**63-1")
    check_options(1, lrs, steps, min_accuracy)
    if chunk is not None and chunk < 1:
        raise UsageError(f"chunk {chunk}: must be at least 1")
    size = chunk or default_chunk(arch)
    dev = resolve_device(device)
    total = len(seeds) * len(lrs)
    trained: dict[tuple[int, float], Member] = {}
    done = 0
    start = time.perf_counter()
    unique = list(dict.fromkeys(seeds))
    for i in range(0, len(unique), size):
        raise_if_stopped()
        block = unique[i : i + size]
        init = _stacked_init(arch, block)  # once per seed, shared by every lr
        for lr in lrs:
            for mem in _train_chunk(arch, block, init, lr, steps, dev, min_accuracy):
                trained[(mem.seed, mem.lr)] = mem
            done += len(block)
            if on_progress is not None:
                on_progress(min(done, total), total)
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
    )


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


def _stacked_init(arch: Arch, seeds: Sequence[int]) -> list[torch.Tensor]:
    """[W0, b0, W1, b1, ...] on the CPU: W (M, out, in), b (M, out); member m is init_model(arch, seeds[m])'s."""
    import torch

    from .model import init_model

    rows = [[p.detach() for p in init_model(arch, seed).parameters()] for seed in seeds]
    return [torch.stack([r[k] for r in rows]).contiguous() for k in range(2 * arch.n_linear)]


def _forward(weights: list, biases: list, x) -> list:
    """Activations [x, h1, ..., out]; x: (M, rows, in)."""
    import torch

    hs = [x]
    h = x
    for w, b in zip(weights, biases):
        h = torch.sigmoid(torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)))  # (M, rows, out)
        hs.append(h)
    return hs


def _member_loss(out, y):
    """BCE, mean over each member's rows: (M,)."""
    import torch

    return torch._C._nn.binary_cross_entropy(out, y, None, 0).mean(dim=(1, 2))  # type: ignore[arg-type]


def _train_chunk(
    arch: Arch, seeds: Sequence[int], init: list, lr: float, steps: int, dev: torch.device, min_accuracy: float
) -> list[Member]:
    """Train copies of the stacked `init` (one member per seed) at one learning rate.

    One lr per chunk lets the update be torch.optim.SGD's own `p += -lr * grad` (`_foreach_add_`)."""
    import torch

    from .model import xor_tensors

    m = len(seeds)
    params = [p.to(dev, copy=True) for p in init]
    weights, biases = params[0::2], params[1::2]
    n = len(weights)
    x1, y1 = xor_tensors(dev)  # (rows, 2), (rows, 1)
    rows = x1.shape[0]
    x = x1.unsqueeze(0).expand(m, rows, x1.shape[1]).contiguous()
    y = y1.unsqueeze(0).expand(m, rows, 1).contiguous()
    # d (mean over each member's rows) / d out: BCELoss's backward divides by the row count; 1/rows is a
    # power of 2 here, so scaling first gives the same bits.
    grad_out = torch.full((m, rows, 1), 1.0 / rows, dtype=x.dtype, device=dev)

    bce_backward = torch.ops.aten.binary_cross_entropy_backward
    sigmoid_backward = torch.ops.aten.sigmoid_backward
    bmm, baddbmm, sigmoid = torch.bmm, torch.baddbmm, torch.sigmoid
    foreach_add_ = torch._foreach_add_
    bias_views = [b.unsqueeze(1) for b in biases]  # (M, 1, out): broadcast over rows
    weights_t = [w.transpose(1, 2) for w in weights]  # views: they follow the in-place updates

    loss0: Any = None
    bad = torch.zeros(m, dtype=torch.bool, device=dev)  # diverged at a checked step
    final: Any = None
    for step in range(steps):
        hs = [x]
        h = x
        for bv, wt in zip(bias_views, weights_t):
            h = sigmoid(baddbmm(bv, h, wt))  # F.linear's addmm, batched
            hs.append(h)
        last = step == steps - 1
        if last or step % CHECK_EVERY == 0:
            loss = _member_loss(h, y)
            if loss0 is None:
                loss0 = loss
            bad |= ~torch.isfinite(loss) | (loss > DIVERGENCE_FACTOR * loss0)
            if last:
                final = loss
        g = bce_backward(grad_out, h, y, None, 0)  # (M, rows, 1): d loss / d out
        grads: list[Any] = [None] * (2 * n)
        for i in range(n - 1, -1, -1):  # autograd's order: last layer first
            gz = sigmoid_backward(g, hs[i + 1])  # (M, rows, out)
            if i:
                g = bmm(gz, weights[i])  # (M, rows, in)
            grads[2 * i] = bmm(gz.transpose(1, 2), hs[i])  # (M, out, in)
            grads[2 * i + 1] = gz.sum(1)  # (M, out)
        foreach_add_(params, grads, alpha=-lr)  # torch.optim.SGD's update
        if step % 1000 == 999:
            raise_if_stopped()

    out = _forward(weights, biases, x)[-1].reshape(m, rows)  # the trained weights, as the gate sees them
    hits = ((out > 0.5) == (y.reshape(m, rows) > 0.5)).sum(1)
    finite_params = torch.stack([torch.isfinite(p.reshape(m, -1)).all(1) for p in params]).all(0)
    diverged = bad | ~finite_params | ~torch.isfinite(final)
    result = []
    for seed, loss_v, h_v, d_v in zip(seeds, final.tolist(), hits.tolist(), diverged.tolist()):
        accuracy = h_v / rows
        result.append(Member(seed, lr, loss_v, accuracy, accuracy >= min_accuracy and not d_v, bool(d_v)))
    return result


# ---------------------------------------------------------------------------------------------
# The picture


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
        ax1.set_xlabel("final BCE loss")
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
        ax2.set_title(f"gate: accuracy >= {result.min_accuracy:g}")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def table(result: SweepResult, failing: int = 10) -> str:
    """The summary the CLI prints."""
    s = result.summary
    lines = [
        f"{result.arch.name}: {s.members} members ({len(result.seeds)} seeds x {len(result.lrs)} lrs), "
        f"{result.steps} steps on {result.device} in {result.seconds:.2f}s (chunks of {result.chunk})",
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
    lines.append(
        f"  best: seed {b.seed}, lr {b.lr:g}: final loss {b.final_loss:.4e}, accuracy {b.accuracy:.2f}"
        f"{'' if b.converged else ' (NOT converged: no pair passes the gate)'}"
    )
    return "\n".join(lines)


@dataclass(frozen=True)
class SweepRun:
    """A sweep with its files written and, with export_best, the best pair published."""

    result: SweepResult
    written: tuple[Path, ...]
    published: Any | None  # flow.Published of the best pair, with export_best
    notices: tuple[str, ...] = ()


def sweep_arch(recipe: Recipe) -> Arch:
    """The network a recipe's sweep trains, when the batched program covers it: sigmoid layers, a
    binary head and full-batch SGD on the built-in XOR data. Anything else is a one-line UsageError."""
    from .archs import XOR_FEATURES, arch_for
    from .errors import UsageError

    arch = arch_for(recipe, XOR_FEATURES, (0, 1), "binary")
    t = recipe.train
    if recipe.data.builtin != "xor" or not arch.is_tutorial_stack or t.optimizer != "sgd" or t.batch_size:
        what = f"{arch.activation}, {recipe.data.path or recipe.data.builtin} data, {t.optimizer}"
        raise UsageError(
            f"sweep trains sigmoid MLPs with full-batch SGD on the built-in XOR data as one batched program; "
            f"{recipe.name} ({what}{', batch ' + str(t.batch_size) if t.batch_size else ''}) is not covered yet"
        )
    return arch


def run_sweep(
    arch: Arch,
    seeds: int,
    lrs: Sequence[float],
    *,
    steps: int = TUTORIAL.steps,
    device: str = "auto",
    min_accuracy: float = TUTORIAL.min_accuracy,
    out: Path | None = None,
    artifacts_dir: Path = Path("artifacts"),
    export_best: bool = False,
    on_notice: Callable[[str], None] | None = None,
    recipe: Recipe | None = None,
) -> SweepRun:
    """`sweep`: seeds 0..seeds-1 x lrs; writes sweep.json (and sweep.png with matplotlib) into `out`
    (default <artifacts_dir>/sweeps/<arch>); with export_best, trains the best converged pair again
    through `run_all` (train, gate, export, serve-check, verify) so the sweep ends in a published version."""
    import json

    from . import artifacts as A
    from .errors import GateFailed, UsageError
    from .plot import matplotlib_missing
    from .train import DEVICES

    check_options(seeds, lrs, steps, min_accuracy)
    if device not in DEVICES:
        raise UsageError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    folder = out if out is not None else artifacts_dir / "sweeps" / arch.name
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder}: not a folder")
    result = sweep(arch, range(seeds), lrs, steps=steps, device=device, min_accuracy=min_accuracy)
    A.ensure_folder(folder)
    A.write_atomic(folder / "sweep.json", (json.dumps(result.as_dict(), indent=1) + "\n").encode())
    written = [folder / "sweep.json"]
    notices = []
    missing = matplotlib_missing()
    if missing:
        notices.append(missing.replace("loss.png", "sweep.png"))
    else:
        A.write_atomic(folder / "sweep.png", write_png(result))
        written.append(folder / "sweep.png")
    published = None
    if export_best:
        from .flow import run_all

        best = result.summary.best
        if not best.converged:
            raise GateFailed(f"no pair passed the gate (best: seed {best.seed}, lr {best.lr:g}); nothing to export")
        run = run_all(recipe if recipe is not None else arch, artifacts_dir, seed=best.seed, lr=best.lr, steps=steps, device=device,
                      min_accuracy=min_accuracy, on_notice=on_notice)  # fmt: skip
        published = run.models[0].published
    return SweepRun(result, tuple(written), published, tuple(notices))
