"""Stage 1: train an MLP: the tutorial's XOR models bit for bit, and any recipe.

Loops (all read losses back at log steps only):
- `autograd` (alias `tutorial`): modules, the head's loss (BCE, cross-entropy, MSE), torch.optim
  (SGD or Adam), zero_grad/backward/step, full batch or seeded mini-batches. For the built-ins this is
  the tutorial's loop verbatim: the reference the others are tested against, and the baseline `bench`
  measures. Every recipe the explicit trainer does not cover trains here.
- `explicit` (the CPU default): no autograd at all. The forward ops the modules call (`addmm`,
  `sigmoid`, `binary_cross_entropy`), then the very backward kernels autograd would call for them
  (`binary_cross_entropy_backward`, `sigmoid_backward`, `mm`, `sum`), in autograd's order, then one
  `_foreach_add_` for SGD's update. Same kernels, same inputs: bit-identical to `tutorial`.
- `fast`: the ops called directly but gradients from `torch.autograd.grad`; also bit-identical, slower.
- `cuda-graph`: on CUDA, the explicit step captured once in a CUDA graph and replayed; losses stay in a
  device buffer read once per log interval. Falls back to eager `explicit` with a notice if capture fails.
The explicit, fast and cuda-graph loops cover the tutorial's stack (sigmoid, binary head, no scaling)
with full-batch SGD; anything else trains with `autograd`, with a notice when another loop was asked for.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import artifacts as A
from .archs import TUTORIAL, Arch
from .errors import DeviceUnavailable, TrainingFailed
from .manifest import ConfigRecord, Manifest, TrainRecord, ValidationRecord
from .model import init_model, xor_tensors

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICES = ("auto", "cpu", "cuda")
TRAINERS = (
    "auto",
    "explicit",
    "fast",
    "autograd",
    "tutorial",
)  # auto: explicit (CPU) / cuda-graph (CUDA) where they apply
LOSSES = {"binary": "BCE (mean)", "multiclass": "cross-entropy (mean)", "regression": "MSE (mean)"}
MAX_LOGGED = 1000  # loss points kept in the manifest (loss_history.json keeps every step)
DIVERGENCE_FACTOR = 10.0  # a loss above 10x the step-0 loss is an explosion, not learning
WARMUP_STEPS = 3  # eager steps on a side stream before capture, as torch.cuda.graphs asks


@dataclass(frozen=True)
class TrainConfig:
    arch: Arch
    steps: int = TUTORIAL.steps
    lr: float = TUTORIAL.lr
    seed: int = TUTORIAL.seed
    device: str = "auto"  # auto | cpu | cuda
    trainer: str = "auto"  # auto (cuda-graph on CUDA, explicit on CPU, where they apply) | explicit | fast | autograd
    log_every: int = 100
    tutorial_init: bool = True  # draw initial weights in the tutorial's order (see archs.init_model)
    optimizer: str = "sgd"  # sgd | adam (torch.optim's, default betas/eps)
    batch_size: int = 0  # 0: full batch; else seeded mini-batches (a fresh permutation per epoch)

    @property
    def full_batch_sgd(self) -> bool:
        return self.optimizer == "sgd" and self.batch_size == 0


@dataclass(frozen=True)
class TrainResult:
    arch: Arch
    config: TrainConfig
    device: str  # "cpu" or "cuda:0 (<card name>)"
    trainer: str  # the loop that actually ran
    losses: tuple[float, ...]  # one per step
    seconds: float
    model: torch.nn.Sequential = field(repr=False)  # trained, on the CPU, eval mode
    notices: tuple[str, ...] = ()

    @property
    def final_loss(self) -> float:
        return self.losses[-1]

    def logged(self) -> list[tuple[int, float]]:
        """(step, loss) at every log step, plus the last step: what the tutorial prints. At most
        about MAX_LOGGED points (the manifest stays small whatever --steps is): past that, every
        k-th log step."""
        every = self.config.log_every
        every *= max(1, -(-len(self.losses) // (every * MAX_LOGGED)))
        out = [(s, self.losses[s]) for s in range(0, len(self.losses), every)]
        if out[-1][0] != len(self.losses) - 1:
            out.append((len(self.losses) - 1, self.losses[-1]))
        return out


def resolve_device(device: str) -> torch.device:
    import torch

    if device not in DEVICES:
        raise DeviceUnavailable(f"unknown device {device!r}: choose auto, cpu or cuda")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        built = torch.version.cuda or "no CUDA (CPU-only build)"
        raise DeviceUnavailable(
            f"--device cuda: torch {torch.__version__} (built for {built}) sees no CUDA device; use --device cpu or auto"
        )
    return torch.device("cuda", torch.cuda.current_device())


def describe_device(dev: torch.device) -> str:
    import torch

    if dev.type == "cuda":
        return f"cuda:{dev.index} ({torch.cuda.get_device_name(dev)})"
    return "cpu"


# ---------------------------------------------------------------------------------------------
# Loops. Each takes the model, the data and the hyper-parameters explicitly, trains the model's
# parameters in place and returns the loss at every step as a (steps,) tensor on the device.

LogFn = Callable[[int, float], None]


def tutorial_loop(model, x, y, steps: int, lr: float, monitor: Monitor):
    """The tutorial's loop (the built-ins' reference): `autograd_loop` with BCE, SGD, full batch."""
    return autograd_loop(model, x, y, steps, lr, monitor)


def autograd_loop(
    model,
    x,
    y,
    steps: int,
    lr: float,
    monitor: Monitor,
    *,
    task: str = "binary",
    optimizer: str = "sgd",
    batch_size: int = 0,
    seed: int = 0,
):
    """The reference loop: modules, the head's loss, torch.optim, zero_grad/backward/step. With
    `batch_size`, each epoch is a fresh permutation of the rows from a generator seeded with `seed`
    (drawn on the CPU, so the batches do not depend on the device). The history is kept as detached
    tensors (no sync per step).

    model: what is trained (`model.training_view`); x: (rows, n_inputs); y: (rows, 1) float for
    binary, (rows,) int64 class indices for multiclass, (rows, 1) float for regression."""
    import torch

    criterion = {"binary": torch.nn.BCELoss, "multiclass": torch.nn.CrossEntropyLoss, "regression": torch.nn.MSELoss}[
        task
    ]().to(x.device)
    params = model.parameters()
    opt = torch.optim.SGD(params, lr=lr) if optimizer == "sgd" else torch.optim.Adam(params, lr=lr)
    rows = x.shape[0]
    batches = batch_size > 0 and batch_size < rows
    gen = torch.Generator().manual_seed(seed) if batches else None
    order, cursor = None, rows
    history = []
    for step in range(steps):
        if batches:
            if cursor + batch_size > rows:  # a new epoch (the last, short batch of an epoch is dropped)
                order, cursor = torch.randperm(rows, generator=gen).to(x.device), 0
            assert order is not None
            idx = order[cursor : cursor + batch_size]
            cursor += batch_size
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        else:
            xb, yb = x, y
        opt.zero_grad()
        hypothesis = model(xb)
        cost = criterion(hypothesis, yb)
        cost.backward()
        opt.step()
        history.append(cost.detach())
        if step % monitor.log_every == 0:
            monitor.check_history(history, step)
    monitor.check_history(history, steps - 1)
    return torch.stack(history)


def make_step(params: list, x, y, lr: float) -> Callable[[], torch.Tensor]:
    """One SGD step with no host synchronisation: forward, BCE, autograd, in-place update; returns
    the loss (a 0-dim tensor on the device). The CPU `fast` loop calls it eagerly; the CUDA-graph
    loop captures it (with `recording_step`).

    params: [w0, b0, w1, b1, ...] leaf tensors; x: (4, 2); y: (4, 1).
    """
    import torch

    linear = torch._C._nn.linear  # what nn.Linear.forward calls
    bce = torch._C._nn.binary_cross_entropy  # what nn.BCELoss calls; reduction 1 = mean
    sigmoid = torch.sigmoid
    grad = torch.autograd.grad
    foreach_add_ = torch._foreach_add_
    pairs = list(zip(params[0::2], params[1::2]))
    storage = [p.detach() for p in params]  # same memory; updating these needs no no_grad() context

    def step():
        h = x  # (batch, widths[0])
        for w, b in pairs:
            h = sigmoid(linear(h, w, b))  # (batch, widths[i+1])
        loss = bce(h, y, None, 1)  # type: ignore[arg-type]  # scalar; reduction 1 = mean
        foreach_add_(storage, grad(loss, params), alpha=-lr)  # torch.optim.SGD's update for plain SGD
        return loss

    return step


def recording_step(step: Callable, losses, cursor) -> Callable[[], None]:
    """`step` plus `losses[cursor] = loss; cursor += 1`, all on the device (what a graph replays).

    losses: (steps,) tensor; cursor: (1,) int64 tensor, both on the training device.
    """
    import torch

    one = torch.ones((), dtype=cursor.dtype, device=cursor.device)

    def run() -> None:
        loss = step()
        losses.index_copy_(0, cursor, loss.detach().reshape(1))
        cursor.add_(one)

    return run


def make_explicit_step(params: list, x, y, lr: float) -> Callable[[], torch.Tensor]:
    """One SGD step without autograd: the forward ops nn.Linear/Sigmoid/BCELoss call, then the very
    backward kernels autograd would call for them, then torch.optim.SGD's update. The same ATen
    kernels on the same inputs give the tutorial loop's numbers to the bit (tested over 10001 steps
    for both built-ins); hand-simplified gradient formulas would not.

    params: [w0, b0, w1, b1, ...]; x: (batch, widths[0]); y: (batch, 1). Returns the loss (0-dim).
    """
    import torch

    addmm, sigmoid, mm = torch.addmm, torch.sigmoid, torch.mm
    bce = torch._C._nn.binary_cross_entropy  # what nn.BCELoss calls; reduction 1 = mean
    bce_backward = torch.ops.aten.binary_cross_entropy_backward
    sigmoid_backward = torch.ops.aten.sigmoid_backward
    foreach_add_ = torch._foreach_add_
    storage = [p.detach() for p in params]  # same memory, outside autograd
    weights, biases = storage[0::2], storage[1::2]
    n = len(weights)
    one = torch.ones((), dtype=x.dtype, device=x.device)  # d loss / d loss

    def step() -> torch.Tensor:
        hs = [x]  # activations: hs[i] is layer i's input, (batch, widths[i])
        h = x
        for w, b in zip(weights, biases):
            h = sigmoid(addmm(b, h, w.t()))  # F.linear's 2-D path: addmm(bias, input, weight.t())
            hs.append(h)
        loss = bce(h, y, None, 1)  # type: ignore[arg-type]
        g = bce_backward(one, h, y, None, 1)  # (batch, 1): d loss / d output
        grads: list[Any] = [None] * (2 * n)
        for i in range(n - 1, -1, -1):  # autograd's order: last layer first
            gz = sigmoid_backward(g, hs[i + 1])  # d loss / d pre-activation, (batch, widths[i+1])
            if i:
                g = mm(gz, weights[i])  # d loss / d input, (batch, widths[i])
            grads[2 * i] = mm(hs[i].t(), gz).t()  # weight: (widths[i+1], widths[i])
            grads[2 * i + 1] = gz.sum(0)  # bias
        foreach_add_(storage, grads, alpha=-lr)  # torch.optim.SGD's update for plain SGD
        return loss

    return step


def explicit_loop(model, x, y, steps: int, lr: float, monitor: Monitor):
    """The default CPU trainer: `make_explicit_step` in a loop, losses read back at log steps only."""
    return _eager_loop(make_explicit_step(list(model.parameters()), x, y, lr), steps, monitor)


def fast_loop(model, x, y, steps: int, lr: float, monitor: Monitor):
    """`make_step` (autograd.grad, no module or optimizer bookkeeping) in a loop."""
    return _eager_loop(make_step(list(model.parameters()), x, y, lr), steps, monitor)


def _eager_loop(step_fn: Callable[[], Any], steps: int, monitor: Monitor):
    import torch

    history: list[Any] = []
    append = history.append
    every = monitor.log_every
    for step in range(steps):
        append(step_fn().detach())
        if step % every == 0:
            monitor.check_history(history, step)
    monitor.check_history(history, steps - 1)
    return torch.stack(history)


def cuda_graph_loop(model, x, y, steps: int, lr: float, monitor: Monitor):
    """The explicit step captured in a CUDA graph. Raises RuntimeError if capture is not possible."""
    import torch

    losses = torch.empty(steps, dtype=x.dtype, device=x.device)
    cursor = torch.zeros(1, dtype=torch.int64, device=x.device)
    step_fn = recording_step(make_explicit_step(list(model.parameters()), x, y, lr), losses, cursor)
    eager = min(WARMUP_STEPS, steps)
    # Warm-up on a side stream (torch.cuda.graphs docs); these are real training steps.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(eager):
            step_fn()
    torch.cuda.current_stream().wait_stream(side)
    monitor.check_buffer(losses, eager - 1)
    if eager == steps:
        return losses
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step_fn()  # recorded, not run: parameters and cursor are untouched by capture
    for step in range(eager, steps):
        graph.replay()
        if step % monitor.log_every == 0:
            monitor.check_buffer(losses, step)
    torch.cuda.synchronize()
    monitor.check_buffer(losses, steps - 1)
    return losses


class Monitor:
    """Reads losses back at log steps only: checks them for divergence and reports progress."""

    def __init__(self, log_every: int, on_log: LogFn | None = None):
        self.log_every = log_every
        self.on_log = on_log
        self.checked = 0  # steps already checked
        self.loss0: float | None = None

    def check(self, values: list[float], upto: int) -> None:
        """`values` are the losses of steps self.checked .. upto (inclusive)."""
        start = self.checked
        self.checked = upto + 1
        if self.loss0 is None and values:
            self.loss0 = values[0]
        loss0 = self.loss0 if self.loss0 is not None else math.inf
        for i, v in enumerate(values):
            if not math.isfinite(v) or v > DIVERGENCE_FACTOR * loss0:
                raise TrainingFailed(
                    f"training diverged at step {start + i}: loss {v:.6g} (step 0: {loss0:.6g}); lower --lr"
                )
        if self.on_log is not None and upto % self.log_every == 0:
            self.on_log(upto, values[-1])

    def check_buffer(self, losses, upto: int) -> None:
        """One device->host read of losses[checked : upto + 1]."""
        if upto >= self.checked:
            self.check(losses[self.checked : upto + 1].tolist(), upto)

    def check_history(self, history: list, upto: int) -> None:
        import torch

        if upto >= self.checked:
            self.check(torch.stack(history[self.checked : upto + 1]).tolist(), upto)


# ---------------------------------------------------------------------------------------------


def train(config: TrainConfig, on_log: LogFn | None = None, data: Any = None) -> TrainResult:
    """Train `config.arch` from its seeded initialisation; the model comes back on the CPU.

    data: a `data.Dataset` (its training rows are used; its statistics go into the scaling layers), or
    None for the XOR points (the built-ins)."""
    from .model import set_scaling

    arch = config.arch
    dev = resolve_device(config.device)
    model = init_model(arch, config.seed, config.tutorial_init)
    if data is not None:
        set_scaling(model, arch, data.stats.mean, data.stats.std, data.target_mean, data.target_std)
    model = model.to(dev)
    model.train()
    if data is None:
        x, y = xor_tensors(dev)
    else:
        x, y = training_tensors(data, arch, dev)
    notices: list[str] = []
    trainer = pick_trainer(config, dev.type, x.shape[0], notices)
    start = time.perf_counter()
    with _threads_for(dev.type, x.shape[0] if not config.batch_size else min(config.batch_size, x.shape[0]), arch):
        losses = _train_loop(trainer, model, x, y, config, on_log, notices)
    if trainer == "cuda-graph" and notices:
        trainer = "explicit"
    history = losses.tolist()  # one sync at the end
    seconds = time.perf_counter() - start
    model = model.cpu().eval()
    return TrainResult(
        arch=arch,
        config=config,
        device=describe_device(dev),
        trainer=trainer,
        losses=tuple(history),
        seconds=seconds,
        model=model,
        notices=tuple(notices),
    )


SMALL_STEP = 1 << 18  # rows per step x widest layer below this: one CPU thread is faster (no OpenMP hand-offs)


@contextlib.contextmanager
def _threads_for(device_type: str, rows: int, arch: Arch) -> Iterator[None]:
    """One intra-op thread for small steps on the CPU. A step of a small MLP is a few microseconds of
    work per op; splitting it across OpenMP threads costs more than it saves, and on a busy machine
    spinning threads made a 120-row step 25x slower (measured: 78 ms vs 3 ms per Adam step)."""
    import torch

    if device_type != "cpu" or rows * max(arch.widths) >= SMALL_STEP:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_loop(trainer: str, model, x, y, config: TrainConfig, on_log, notices: list[str]):
    from .model import training_view

    arch = config.arch
    if trainer == "autograd":
        monitor = Monitor(config.log_every, on_log)
        losses = autograd_loop(
            training_view(model, arch), x, y, config.steps, config.lr, monitor,
            task=arch.task, optimizer=config.optimizer, batch_size=config.batch_size, seed=config.seed,
        )  # fmt: skip
        return losses
    return _run(trainer, model, x, y, config, on_log, notices)


def training_tensors(data: Any, arch: Arch, dev: Any) -> tuple[Any, Any]:
    """(x, y) on `dev` from a dataset's training rows: x raw float32 (the model standardizes it);
    y as the head's loss takes it (the regression target standardized when the output is scaled)."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.ascontiguousarray(data.x_train, dtype=np.float32)).to(dev)
    y_np = data.y_train
    if arch.task == "multiclass":
        y = torch.from_numpy(np.ascontiguousarray(y_np, dtype=np.int64)).to(dev)
    elif arch.task == "binary":
        y = torch.from_numpy(np.ascontiguousarray(y_np, dtype=np.float32).reshape(-1, 1)).to(dev)
    else:
        values = np.asarray(y_np, dtype=np.float64)
        if arch.scale_output:
            values = (values - data.target_mean) / data.target_std
        y = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32).reshape(-1, 1)).to(dev)
    return x, y


def pick_trainer(config: TrainConfig, device_type: str, rows: int, notices: list[str]) -> str:
    """The loop that runs: what was asked for where it applies, else `autograd` (with a notice when
    the user named another loop)."""
    asked = "autograd" if config.trainer == "tutorial" else config.trainer
    if asked not in (*TRAINERS, "cuda-graph"):
        raise ValueError(f"unknown trainer {config.trainer!r}")
    covered = config.arch.is_tutorial_stack and config.optimizer == "sgd" and config.batch_size in (0,)
    if asked == "auto":
        if not covered:
            return "autograd"
        return "cuda-graph" if device_type == "cuda" else "explicit"
    if asked in ("explicit", "fast", "cuda-graph") and not covered:
        notices.append(
            f"the {asked} trainer covers sigmoid layers with a binary head and full-batch SGD; "
            f"{config.arch.name} ({config.arch.activation}, {config.arch.task}, {config.optimizer}"
            f"{', batch ' + str(config.batch_size) if config.batch_size else ''}) trained with the autograd loop"
        )
        return "autograd"
    return "tutorial" if config.trainer == "tutorial" else asked


def _run(trainer: str, model, x, y, config: TrainConfig, on_log, notices: list[str]):
    def args():
        return (model, x, y, config.steps, config.lr, Monitor(config.log_every, on_log))

    if trainer in ("tutorial", "autograd"):
        return tutorial_loop(*args())
    if trainer == "explicit":
        return explicit_loop(*args())
    if trainer == "fast":
        return fast_loop(*args())
    if trainer == "cuda-graph":
        if x.device.type != "cuda":
            raise DeviceUnavailable("the cuda-graph trainer needs --device cuda")
        snapshot = [p.detach().clone() for p in model.parameters()]
        try:
            return cuda_graph_loop(*args())
        except TrainingFailed:
            raise
        except RuntimeError as exc:  # capture not supported here: same numbers, eagerly
            import torch

            with torch.no_grad():
                for p, s in zip(model.parameters(), snapshot):
                    p.copy_(s)
            notices.append(f"CUDA graph capture failed ({str(exc).splitlines()[0]}); trained eagerly instead")
            return explicit_loop(*args())
    raise ValueError(f"unknown trainer {trainer!r}")


def save(
    result: TrainResult,
    validation: ValidationRecord,
    paths: A.ArtifactPaths,
    recipe: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[Manifest, tuple[str, ...]]:
    """Write weights, loss history and (with matplotlib) loss.png, then the manifest (with the
    network's description, the resolved recipe and the data's record).

    Returns the new manifest and notices for the user. Only a model that passed the gate gets here.
    """
    import json

    from .model import weights_bytes
    from .plot import matplotlib_missing, uses_tutorial_settings, write_loss_png

    cfg = result.config
    folder = paths.folder
    staged = {
        A.WEIGHTS: A.stage_bytes(folder, A.WEIGHTS, weights_bytes(result.model, cfg.arch)),
        A.HISTORY: A.stage_bytes(
            folder, A.HISTORY, json.dumps({"arch": cfg.arch.name, "loss": list(result.losses)}).encode()
        ),
    }
    notices = list(result.notices)
    missing = matplotlib_missing()
    if missing:
        notices.append(missing)
    else:
        overlay = uses_tutorial_settings(cfg.arch.name, cfg.steps, cfg.lr, cfg.seed, cfg.tutorial_init)
        try:
            staged[A.LOSS_PNG] = A.stage_file(
                folder, A.LOSS_PNG, lambda p: write_loss_png(p, cfg.arch.name, result.losses, overlay)
            )
        except BaseException as exc:  # any plotting failure (a bad MPLBACKEND, a broken font cache...) is a notice
            if isinstance(exc, A.ArtifactWriteError) or not isinstance(exc, Exception):  # disk full, Ctrl-C, SIGTERM
                for tmp in staged.values():
                    tmp.unlink(missing_ok=True)
                raise
            first = (str(exc).splitlines() or [exc.__class__.__name__])[0][:200]
            notices.append(
                f"loss.png not written: matplotlib failed ({exc.__class__.__name__}: {first}); the model is saved"
            )
    sections = {
        "versions": A.versions(),
        "config": ConfigRecord(
            arch=cfg.arch.name,
            widths=cfg.arch.widths,
            n_params=cfg.arch.n_params,
            steps=cfg.steps,
            lr=cfg.lr,
            seed=cfg.seed,
            loss=LOSSES[cfg.arch.task],
            optimizer={"sgd": "SGD", "adam": "Adam"}[cfg.optimizer],
            tutorial_init=cfg.tutorial_init,
            log_every=cfg.log_every,
            batch_size=cfg.batch_size,
        ),
        "model": cfg.arch.record(),
        "recipe": recipe,
        "data": data,
        "train": TrainRecord(
            device=result.device,
            trainer=result.trainer,
            seconds=round(result.seconds, 4),
            final_loss=result.final_loss,
            loss_log=tuple(result.logged()),
        ),
        "validation": validation,
    }
    return A.commit(paths, "train", staged, sections), tuple(notices)
