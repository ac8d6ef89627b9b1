"""Stage 1: train an MLP: the tutorial's XOR models bit for bit, and any recipe.

Loops (all read losses back at log steps only):
- `autograd` (alias `tutorial`): modules, the head's loss (BCE, cross-entropy, MSE), torch.optim
  (SGD or Adam), zero_grad/backward/step, full batch or seeded mini-batches. For the built-ins this is
  the tutorial's loop verbatim: the reference the others are tested against, and the baseline `bench`
  measures.
- `explicit` (the CPU default, every recipe): no autograd at all (`kernels.explicit_step`): the
  forward ops the modules call, then the very backward kernels autograd would call for each
  activation and head, in autograd's order, then `kernels.optimizer_update` (SGD's `_foreach_add_`, or
  torch.optim.Adam's element-wise calls, checked against torch.optim.Adam before the run).
  Same kernels, same inputs: bit-identical to `autograd` (tested for every activation, head and
  optimizer, full batch and mini-batches). Its first step is checked against autograd's before
  training (`kernels.check_step`); a difference hands the run to `autograd` with a notice.
- `fast`: the tutorial's stack with gradients from `torch.autograd.grad`; also bit-identical, slower.
- `cuda-graph` (the CUDA default for full-batch SGD): the explicit step captured once in a CUDA graph
  and replayed; losses stay in a device buffer read once per log interval. Falls back to eager
  `explicit` with a notice if capture fails. Adam and mini-batches on CUDA run eager `explicit`.
A loop asked for where it does not apply hands over to the closest one that does, with a notice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import DeviceUnavailable, TrainingFailed
from ..spec.archs import TUTORIAL, Arch
from ..store import artifacts as A
from ..store.manifest import ConfigRecord, Manifest, TrainRecord, ValidationRecord
from .model import init_model

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..spec.data import Dataset

DEVICES = ("auto", "cpu", "cuda")
TRAINERS = (
    "auto",
    "explicit",
    "fast",
    "autograd",
    "tutorial",
)  # auto: explicit (CPU) / cuda-graph (CUDA) where they apply
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam"}
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
    `batch_size`, seeded mini-batches (`kernels.batches`). The history is kept as detached tensors
    (no sync per step).

    model: what is trained (`model.training_view`); x: (rows, n_inputs); y: (rows, 1) float for
    binary, (rows,) int64 class indices for multiclass, (rows, 1) float for regression."""
    import torch

    from .kernels import batches, criterion, make_optimizer

    loss_fn = criterion(task).to(x.device)
    opt = make_optimizer(optimizer, list(model.parameters()), lr)
    stream = batches(x, y, batch_size, seed)
    history = []
    for step in range(steps):
        xb, yb = next(stream)
        opt.zero_grad()
        hypothesis = model(xb)
        cost = loss_fn(hypothesis, yb)
        cost.backward()
        try:
            opt.step()
        except RuntimeError as exc:
            diverged = monitor.overflow(exc, step, optimizer)
            if diverged is None:
                raise
            raise diverged from None
        history.append(cost.detach())
        if step % monitor.log_every == 0:
            monitor.check_history(history, step)
    monitor.check_history(history, steps - 1)
    return torch.stack(history)


def make_step(params: list, x, y, lr: float) -> Callable[[], torch.Tensor]:
    """One SGD step of the tutorial's stack with autograd.grad and no module or optimizer
    bookkeeping (the `fast` loop); returns the loss (a 0-dim tensor on the device).

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


def _tutorial_arch(model) -> Arch:
    """The Arch of a bare Linear/Sigmoid stack with a binary head (the built-ins' shape)."""
    from .model import linear_layers

    layers = linear_layers(model)
    return Arch("stack", (layers[0].in_features, *(m.out_features for m in layers)))


def explicit_loop(
    model,
    x,
    y,
    steps: int,
    lr: float,
    monitor: Monitor,
    *,
    arch: Arch | None = None,
    optimizer: str = "sgd",
    batch_size: int = 0,
    seed: int = 0,
    check: bool = True,
):
    """The default CPU trainer: `kernels.explicit_step` in a loop, losses read back at log steps
    only. Same arguments as `autograd_loop` (x raw: the model's own standardization is applied once
    here), plus `arch` (default: the tutorial's stack, read off the model).

    With `check`, the step's loss and gradients are first compared to autograd's on one batch
    (`kernels.check_step`); a difference raises NotBitIdentical, and the caller trains with autograd.
    """
    from .kernels import batches, check_step, explicit_step, standardized_inputs
    from .model import training_view

    arch = arch or _tutorial_arch(model)
    view = training_view(model, arch)
    xs = standardized_inputs(model, arch, x)
    step = explicit_step(arch, list(view.parameters()), optimizer, lr)
    if check:
        rows = min(batch_size, x.shape[0]) if batch_size else x.shape[0]
        differs = check_step(view, arch, step.grads, x[:rows], xs[:rows], y[:rows])
        if differs:
            raise NotBitIdentical(differs)
    stream = batches(xs, y, batch_size, seed)
    run = step.run
    return _eager_loop(lambda: run(*next(stream)), steps, monitor, optimizer)


class NotBitIdentical(Exception):
    """The explicit step's numbers differ from autograd's here (the message names the tensor)."""


def fast_loop(model, x, y, steps: int, lr: float, monitor: Monitor):
    """`make_step` (autograd.grad, no module or optimizer bookkeeping) in a loop."""
    return _eager_loop(make_step(list(model.parameters()), x, y, lr), steps, monitor)


def _eager_loop(step_fn: Callable[[], Any], steps: int, monitor: Monitor, optimizer: str = "sgd"):
    import torch

    history: list[Any] = []
    append = history.append
    every = monitor.log_every
    step = 0
    try:
        for step in range(steps):
            append(step_fn().detach())
            if step % every == 0:
                monitor.check_history(history, step)
    except RuntimeError as exc:
        diverged = monitor.overflow(exc, step, optimizer)
        if diverged is None:
            raise
        raise diverged from None
    monitor.check_history(history, steps - 1)
    return torch.stack(history)


def cuda_graph_loop(
    model, x, y, steps: int, lr: float, monitor: Monitor, *, arch: Arch | None = None, check: bool = True
):
    """The explicit full-batch SGD step captured in a CUDA graph. Raises RuntimeError if capture is
    not possible, NotBitIdentical as `explicit_loop` does."""
    import torch

    from .kernels import check_step, explicit_step, standardized_inputs
    from .model import training_view

    arch = arch or _tutorial_arch(model)
    view = training_view(model, arch)
    xs = standardized_inputs(model, arch, x)
    explicit = explicit_step(arch, list(view.parameters()), "sgd", lr)
    if check:
        differs = check_step(view, arch, explicit.grads, x, xs, y)
        if differs:
            raise NotBitIdentical(differs)
    losses = torch.empty(steps, dtype=x.dtype, device=x.device)
    cursor = torch.zeros(1, dtype=torch.int64, device=x.device)
    step_fn = recording_step(lambda: explicit.run(xs, y), losses, cursor)
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

    def overflow(self, exc: RuntimeError, step: int, optimizer: str) -> TrainingFailed | None:
        """A RuntimeError raised by a training step, when it is torch refusing to turn an update's
        scale into float32 (Adam's lr / (1 - beta1^t), say, beyond float32's largest value): the
        divergence it announces, naming the step and the optimizer. None for any other error."""
        text = str(exc)
        if "overflow" not in text:
            return None
        first = text.splitlines()[0] if text else exc.__class__.__name__
        return TrainingFailed(
            f"training diverged at step {step}: the {OPTIMIZER_NAMES.get(optimizer, optimizer)} update overflowed "
            f"float32 ({first}); lower --lr"
        )

    def check_buffer(self, losses, upto: int) -> None:
        """One device->host read of losses[checked : upto + 1]."""
        if upto >= self.checked:
            self.check(losses[self.checked : upto + 1].tolist(), upto)

    def check_history(self, history: list, upto: int) -> None:
        import torch

        if upto >= self.checked:
            self.check(torch.stack(history[self.checked : upto + 1]).tolist(), upto)


# ---------------------------------------------------------------------------------------------


WatchFn = Callable[[int, float, Any], None]  # (step, loss, the model being trained) at log steps


def train(
    config: TrainConfig, on_log: LogFn | None = None, data: Dataset | None = None, watch: WatchFn | None = None
) -> TrainResult:
    """Train `config.arch` from its seeded initialisation; the model comes back on the CPU.

    data: a `data.Dataset` (its training rows are used; its statistics go into the scaling layers);
    not given: the built-in XOR points (`data.xor_dataset()`), what the built-in recipes train on.
    watch: called at every log step with the model as trained so far, on its device (`tune` reports a
    trial's validation loss from it); what it raises stops the run. It must not touch the model's
    parameters or any random generator, so a watched run trains exactly as an unwatched one."""
    from ..spec.data import xor_dataset
    from .model import set_scaling

    data = data if data is not None else xor_dataset()
    arch = config.arch
    dev = resolve_device(config.device)
    model = init_model(arch, config.seed, config.tutorial_init)
    set_scaling(model, arch, data.stats.mean, data.stats.std, data.target_mean, data.target_std)
    model = model.to(dev)
    model.train()
    x, y = training_tensors(data, arch, dev)
    notices: list[str] = []
    trainer = pick_trainer(config, dev.type, x.shape[0], notices)
    start = time.perf_counter()
    from .kernels import small_step_threads

    rows = x.shape[0] if not config.batch_size else min(config.batch_size, x.shape[0])
    log = on_log
    if watch is not None:

        def log(step: int, loss: float) -> None:
            if on_log is not None:
                on_log(step, loss)
            watch(step, loss, model)

    with small_step_threads(dev.type, rows * max(arch.widths)):
        trainer, losses = _train_loop(trainer, model, x, y, config, log, notices)
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


def _train_loop(trainer: str, model, x, y, config: TrainConfig, on_log, notices: list[str]) -> tuple[str, Any]:
    """(the loop that ran, its losses). An explicit or graph loop whose numbers would not be
    autograd's (its first step checked against autograd), or a graph that cannot be captured, hands
    over to the next loop with a notice; the model's parameters are restored first."""
    import torch

    from .model import training_view

    arch = config.arch

    def monitor() -> Monitor:
        return Monitor(config.log_every, on_log)

    if trainer in ("autograd", "tutorial"):
        losses = autograd_loop(
            training_view(model, arch), x, y, config.steps, config.lr, monitor(),
            task=arch.task, optimizer=config.optimizer, batch_size=config.batch_size, seed=config.seed,
        )  # fmt: skip
        return trainer, losses
    if trainer == "fast":
        return trainer, fast_loop(model, x, y, config.steps, config.lr, monitor())
    snapshot = [p.detach().clone() for p in model.parameters()]

    def restore() -> None:
        with torch.no_grad():
            for p, s in zip(model.parameters(), snapshot):
                p.copy_(s)

    if trainer == "cuda-graph" and x.device.type != "cuda":
        raise DeviceUnavailable("the cuda-graph trainer needs --device cuda")
    try:
        if trainer == "cuda-graph":
            try:
                return trainer, cuda_graph_loop(model, x, y, config.steps, config.lr, monitor(), arch=arch)
            except (TrainingFailed, NotBitIdentical):
                raise
            except RuntimeError as exc:  # capture not supported here: same numbers, eagerly
                restore()
                notices.append(f"CUDA graph capture failed ({str(exc).splitlines()[0]}); trained eagerly instead")
                trainer = "explicit"
        return trainer, explicit_loop(
            model, x, y, config.steps, config.lr, monitor(),
            arch=arch, optimizer=config.optimizer, batch_size=config.batch_size, seed=config.seed,
        )  # fmt: skip
    except NotBitIdentical as exc:
        restore()
        notices.append(
            f"the explicit trainer's gradients differ from autograd's in {exc} (checked before training; torch "
            f"{torch.__version__}, {x.device.type}); trained with the autograd loop"
        )
        return _train_loop("autograd", model, x, y, config, on_log, notices)


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
    """The loop that runs: what was asked for where it applies, else the closest one that does
    (with a notice when the user named a loop that does not apply).

    explicit: every activation, head and optimizer `kernels` has kernels for, full batch or
    mini-batches; cuda-graph: the same with full-batch SGD on CUDA (torch.optim.Adam's step is not
    captured: its capturable mode computes differently); fast: the tutorial's stack only."""
    from .kernels import covers

    asked = config.trainer
    if asked not in (*TRAINERS, "cuda-graph"):
        raise ValueError(f"unknown trainer {config.trainer!r}")
    arch = config.arch
    why_not = covers(arch, config.optimizer)
    full_batch = config.batch_size == 0 or config.batch_size >= rows  # a batch of every row is the full batch
    graphable = why_not is None and config.optimizer == "sgd" and full_batch and device_type == "cuda"
    what = (
        f"{arch.name} ({arch.activation}, {arch.task}, {config.optimizer}"
        f"{', batch ' + str(config.batch_size) if config.batch_size else ''})"
    )
    if asked == "auto":
        if why_not is not None:
            return "autograd"
        return "cuda-graph" if graphable else "explicit"
    if asked == "explicit" and why_not is not None:
        notices.append(f"the explicit trainer has {why_not}; {what} trained with the autograd loop")
        return "autograd"
    if asked == "cuda-graph" and not graphable:
        fallback = "explicit" if why_not is None else "autograd"
        notices.append(
            f"the cuda-graph trainer captures full-batch SGD on CUDA; {what} trained with the {fallback} loop"
        )
        return fallback
    if asked == "fast" and not (arch.is_tutorial_stack and config.full_batch_sgd):
        fallback = "explicit" if why_not is None else "autograd"
        notices.append(
            f"the fast trainer covers sigmoid layers with a binary head and full-batch SGD; {what} trained with the "
            f"{fallback} loop"
        )
        return fallback
    return asked


def save(
    result: TrainResult,
    validation: ValidationRecord,
    paths: A.ArtifactPaths,
    recipe: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[Manifest, tuple[str, ...]]:
    """Write weights and loss history, then the manifest (with the network's description, the
    resolved recipe and the data's record). loss.png is not drawn here: `flow` draws it in a separate
    process meanwhile (`plot.LossPlot`) and commits it into the same folder before publication.

    Returns the new manifest and notices for the user. Only a model that passed the gate gets here.
    """
    from ..store.jsonout import dumps_bytes
    from .model import weights_bytes

    cfg = result.config
    folder = paths.folder
    staged = {A.WEIGHTS: A.stage_bytes(folder, A.WEIGHTS, weights_bytes(result.model, cfg.arch))}
    try:
        history = dumps_bytes({"arch": cfg.arch.name, "loss": list(result.losses)}, indent=None)
        staged[A.HISTORY] = A.stage_bytes(folder, A.HISTORY, history)
    except BaseException:
        staged[A.WEIGHTS].unlink(missing_ok=True)
        raise
    notices = list(result.notices)
    sections = {
        "versions": A.versions(),
        "config": ConfigRecord(
            name=cfg.arch.name,
            widths=cfg.arch.widths,
            n_params=cfg.arch.n_params,
            steps=cfg.steps,
            lr=cfg.lr,
            seed=cfg.seed,
            loss=LOSSES[cfg.arch.task],
            optimizer=OPTIMIZER_NAMES[cfg.optimizer],
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
