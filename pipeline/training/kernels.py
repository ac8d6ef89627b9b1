"""Training steps without autograd: the kernels autograd would call, called directly.

A step of a small MLP is a few hundred flops wrapped in autograd's graph building, the engine's
bookkeeping, module calls and `zero_grad`. `explicit_step` keeps only the arithmetic: the forward ops
the modules call (`addmm`, the activation, the head's loss), then the very backward kernels autograd's
derivative formulas call for them, with the same arguments and in the same order, then the
optimizer's own update. Same kernels on the same inputs give the autograd loop's numbers to the bit;
hand-simplified gradient formulas (say `out - y` for a sigmoid+BCE head) do not.

What autograd calls (read off a dispatch trace of `loss.backward()`, torch 2.14):
- Linear (`addmm(b, h, w.t())`): input grad `mm(g, w)`, weight grad `mm(g.t(), h)`, bias grad
  `g.sum(0)` (the expand's reduction). The first layer's input needs no grad.
- activations: `sigmoid_backward(g, out)`, `tanh_backward(g, out)`, `threshold_backward(g, out, 0)`
  (ReLU), `gelu_backward(g, pre_activation)`.
- heads: binary: `sigmoid` + `binary_cross_entropy` -> `binary_cross_entropy_backward`; multiclass:
  `_log_softmax` + `nll_loss_forward` -> `nll_loss_backward` + `_log_softmax_backward_data` (what
  `CrossEntropyLoss` is); regression: `mse_loss` -> `mse_loss_backward`. All with mean reduction.
- optimizers (`optimizer_update`, shared with `sweep`): SGD is `param += -lr * grad` (`_foreach_add_`,
  what torch.optim.SGD does without momentum); Adam is `AdamUpdate`, torch.optim.Adam's element-wise
  calls without its per-step bookkeeping, compared with torch.optim.Adam itself on the parameters
  about to be trained (`adam_differs`) and replaced by it when they differ.
- input standardization has no parameters: the standardized rows are computed once, not every step
  (an element-wise op, so the same bits).

`check_step` is the guard: before training, it computes one step's loss and gradients both ways
(explicit, and autograd on the real modules) and compares them to the bit; a trainer that finds a
difference trains with the autograd loop instead and says so. A newer torch whose derivative
formulas changed therefore costs speed, never correctness.

Mini-batches come from `batches`, shared with the autograd loop: a CPU generator seeded with the
training seed, a fresh `randperm` per epoch, the short last batch of an epoch dropped.

Nothing here imports torch at module level.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..spec.archs import Arch
from ..spec.limits import FLOAT32_MAX
from ..spec.recipe import ACTIVATIONS, OPTIMIZERS, TASKS  # the vocabulary kernels cover: all of it

SMALL_STEP = 1 << 18  # elements in a step's widest activations below this: one CPU thread is faster

Grads = Callable[[Any, Any], tuple[Any, list[Any]]]  # (x, y) -> (loss, [dW0, db0, dW1, db1, ...])


def criterion(task: str) -> Any:
    """The loss module the autograd loop trains with (mean reduction)."""
    import torch

    return {"binary": torch.nn.BCELoss, "multiclass": torch.nn.CrossEntropyLoss, "regression": torch.nn.MSELoss}[task]()


def make_optimizer(name: str, params: list, lr: float) -> Any:
    """torch.optim's optimizer with its defaults: plain SGD, or Adam (betas 0.9/0.999, eps 1e-8)."""
    import torch

    return torch.optim.SGD(params, lr=lr) if name == "sgd" else torch.optim.Adam(params, lr=lr)


def batches(x, y, batch_size: int, seed: int) -> Iterator[tuple[Any, Any]]:
    """(x, y) for every step, forever: the whole set when `batch_size` is 0 (or covers every row);
    else seeded mini-batches, a fresh permutation per epoch from a CPU generator seeded with `seed`
    (so the batches do not depend on the device), the short last batch of an epoch dropped."""
    import torch

    rows = x.shape[0]
    if not 0 < batch_size < rows:
        while True:
            yield x, y
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(rows, generator=gen).to(x.device)
        for start in range(0, rows - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield x.index_select(0, idx), y.index_select(0, idx)


@contextlib.contextmanager
def small_step_threads(device_type: str, work: int) -> Iterator[None]:
    """One intra-op thread while a CPU step is small (`work`: elements in its widest layer's
    activations, below SMALL_STEP). Each op is then a few microseconds of work; splitting it across
    OpenMP threads costs more than it saves, and on a busy machine spinning threads made a 120-row
    Adam step 25x slower (measured: 78 ms vs 3 ms). Used by `train` and `sweep`."""
    import torch

    if device_type != "cpu" or work >= SMALL_STEP:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def covers(arch: Arch, optimizer: str) -> str | None:
    """None when `explicit_grads` has kernels for this network and optimizer, else why not."""
    if arch.activation not in ACTIVATIONS:
        return f"no explicit kernels for the {arch.activation} activation"
    if arch.task not in TASKS:
        return f"no explicit kernels for the {arch.task} head"
    if optimizer not in OPTIMIZERS:
        return f"no explicit update for the {optimizer} optimizer"
    return None


def standardized_inputs(model, arch: Arch, x):
    """x as the first hidden layer sees it: through the model's Standardize layer when it has one
    (its buffers hold the training split's statistics). Computed once, outside autograd."""
    import torch

    if not arch.scale_input:
        return x
    with torch.no_grad():
        return model[0](x)


def explicit_grads(arch: Arch, weights: list, biases: list) -> Grads:
    """(x, y) -> (loss, grads) for the training view of `arch` (logits for multi-class, the
    standardized value for a scaled regression), with autograd's backward kernels.

    weights: [(out, in)] and biases: [(out,)] tensors, outside autograd (detached views of the
    parameters); x: (batch, in), already standardized; y: what the head's loss takes (see
    train.training_tensors). grads come back as [dW0, db0, dW1, db1, ...], the parameters' order.
    """
    import torch

    aten = torch.ops.aten
    addmm, mm = torch.addmm, torch.mm
    n = len(weights)
    layers = list(zip(weights, biases))
    act = arch.activation
    forward_act: Callable[[Any], Any] = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "gelu": torch._C._nn.gelu,
    }[act]
    sigmoid_backward = aten.sigmoid_backward.default
    tanh_backward = aten.tanh_backward.default
    threshold_backward = aten.threshold_backward.default
    gelu_backward = aten.gelu_backward.default

    def backward_act(g, pre, out):  # d loss / d pre-activation
        if act == "sigmoid":
            return sigmoid_backward(g, out)
        if act == "tanh":
            return tanh_backward(g, out)
        if act == "relu":
            return threshold_backward(g, out, 0)
        return gelu_backward(g, pre)

    task = arch.task
    bce = torch._C._nn.binary_cross_entropy
    bce_backward = aten.binary_cross_entropy_backward.default
    log_softmax = aten._log_softmax.default
    log_softmax_backward = aten._log_softmax_backward_data.default
    nll_forward = aten.nll_loss_forward.default
    nll_backward = aten.nll_loss_backward.default
    mse = aten.mse_loss.default
    mse_backward = aten.mse_loss_backward.default
    dtype = weights[0].dtype
    one = torch.ones((), dtype=dtype, device=weights[0].device)  # d loss / d loss
    mean = 1  # reduction: mean

    def head(z, y):
        """(loss, d loss / d z) for the last layer's pre-activation z."""
        if task == "binary":
            out = torch.sigmoid(z)
            loss = bce(out, y, None, mean)  # type: ignore[arg-type]
            return loss, sigmoid_backward(bce_backward(one, out, y, None, mean), out)
        if task == "multiclass":
            logp = log_softmax(z, 1, False)
            loss, total_weight = nll_forward(logp, y, None, mean, -100)
            g = nll_backward(one, logp, y, None, mean, -100, total_weight)
            return loss, log_softmax_backward(g, logp, 1, dtype)
        return mse(z, y, mean), mse_backward(one, z, y, mean)

    def grads(x, y):
        inputs = [x]  # inputs[i]: layer i's input
        pres = []  # pre-activations (kept for GELU's backward)
        h = x
        for w, b in layers[:-1]:
            z = addmm(b, h, w.t())  # F.linear's 2-D path
            pres.append(z)
            h = forward_act(z)
            inputs.append(h)
        w, b = layers[-1]
        loss, gz = head(addmm(b, h, w.t()), y)
        out: list[Any] = [None] * (2 * n)
        g_in = gz
        for i in range(n - 1, -1, -1):  # autograd's order: last layer first
            if i < n - 1:
                gz = backward_act(g_in, pres[i], inputs[i + 1])
            if i:
                g_in = mm(gz, weights[i])  # d loss / d layer i's input
            out[2 * i] = mm(gz.t(), inputs[i])  # (out, in)
            out[2 * i + 1] = gz.sum(0)
        return loss, out

    return grads


@dataclass
class Step:
    """One training step with no host synchronisation; `run(x, y)` returns the loss (0-dim tensor)."""

    grads: Grads
    update: Callable[[list[Any]], None]

    def run(self, x, y):
        loss, g = self.grads(x, y)
        self.update(g)
        return loss


ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults
ADAM_EPS = 1e-8
ADAM_CHECK_STEPS = 3  # steps the re-typed update is compared over (bias corrections change each step)


class AdamUpdate:
    """torch.optim.Adam's step with its defaults (no weight decay, no amsgrad), as the element-wise
    calls its implementation makes (`lerp_`, `mul_`, `addcmul_`, `sqrt`, `div_`, `add_`, `addcdiv_`),
    without torch.optim's per-step bookkeeping (measured: about 150 us a step on 8 small tensors, as
    much as a small step's arithmetic). Every element is updated as a single run updates it, so it
    serves stacked members as well. Not trusted blindly: `adam_differs` compares it with torch.optim
    on the parameters about to be trained, and `optimizer_update` falls back to torch.optim."""

    def __init__(self, params: list, lr: float) -> None:
        import torch

        self.params = params
        self.lr = lr
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.t = 0

    def __call__(self, grads: list[Any]) -> None:
        import torch

        beta1, beta2 = ADAM_BETAS
        self.t += 1
        step_size = self.lr / (1 - beta1**self.t)
        bias_correction2_sqrt = (1 - beta2**self.t) ** 0.5
        torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sq, beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, ADAM_EPS)
        if not abs(step_size) <= FLOAT32_MAX:  # torch.optim refuses the scale with this error
            raise RuntimeError("value cannot be converted to type float without overflow")
        torch._foreach_addcdiv_(self.params, self.exp_avg, denom, value=-step_size)


def adam_differs(params: list, lr: float) -> str | None:
    """None when `AdamUpdate` gives torch.optim.Adam's parameters to the bit over ADAM_CHECK_STEPS
    steps from copies of `params` (so on their shapes, layout and device), with seeded gradients of
    several magnitudes; else what differed. Errors count too: both raise, or neither."""
    import torch

    gen = torch.Generator().manual_seed(0)
    ours = [p.detach().clone() for p in params]
    theirs = [p.detach().clone() for p in params]
    mine, reference = AdamUpdate(ours, lr), make_optimizer("adam", theirs, lr)
    for t in range(ADAM_CHECK_STEPS):
        grads = [torch.randn(p.shape, generator=gen).mul_(10.0 ** (2 * t - 2)).to(p.device) for p in params]
        failed = [_raises(mine, grads), _raises(_torch_step, reference, theirs, grads)]
        if failed[0] != failed[1]:
            return f"step {t + 1} raised in {'ours' if failed[0] else 'torch.optim'} only"
        if failed[0]:
            return None
        for k, (a, b) in enumerate(zip(ours, theirs)):
            if not _same_bits(a, b):
                return f"parameter {k} after step {t + 1}"
    return None


def _raises(fn: Callable[..., Any], *args: Any) -> bool:
    try:
        fn(*args)
    except RuntimeError:
        return True
    return False


def _torch_step(opt: Any, params: list, grads: list[Any]) -> None:
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()


def optimizer_update(optimizer: str, params: list, lr: float) -> Callable[[list[Any]], None]:
    """grads -> None: one update of `params` ([w0, b0, w1, b1, ...] updated in place, [dW0, db0, ...]
    in the same order). The one home of the update, for a single explicit run's parameters and for
    `sweep`'s stacked (members, ...) ones: SGD's `_foreach_add_` (torch.optim.SGD without momentum);
    Adam's `AdamUpdate` once `adam_differs` finds it equal to torch.optim.Adam on these parameters,
    else torch.optim.Adam's own step (speed lost, never numbers). An update whose scale is beyond
    float32 raises RuntimeError ("... overflow"), as torch.optim does."""
    import torch

    storage = [p.detach() for p in params]  # same memory; updating these needs no no_grad() context
    if optimizer == "sgd":
        foreach_add_ = torch._foreach_add_

        def sgd(g: list[Any]) -> None:
            foreach_add_(storage, g, alpha=-lr)

        return sgd
    if adam_differs(storage, lr) is None:
        return AdamUpdate(storage, lr)
    opt = make_optimizer(optimizer, list(params), lr)
    return lambda g: _torch_step(opt, list(params), g)


def explicit_step(arch: Arch, params: list, optimizer: str, lr: float) -> Step:
    """The explicit step for `params` (the training view's parameters, [w0, b0, w1, b1, ...], leaf
    tensors): `explicit_grads`, then `optimizer_update`."""
    storage = [p.detach() for p in params]
    return Step(explicit_grads(arch, storage[0::2], storage[1::2]), optimizer_update(optimizer, params, lr))


def check_step(view, arch: Arch, grads: Grads, x_raw, x, y) -> str | None:
    """None when `grads` gives autograd's loss and gradients to the bit on this batch, else which
    tensor differs. view: the training view (modules, standardization included); x_raw: the batch as
    the view takes it; x: the same rows standardized (what `grads` takes)."""
    import torch

    params = list(view.parameters())
    cost = criterion(arch.task).to(x_raw.device)(view(x_raw), y)
    reference = torch.autograd.grad(cost, params)
    with torch.no_grad():
        loss, ours = grads(x, y)
    if not _same_bits(loss, cost.detach()):
        return "the loss"
    names = [f"{'weight' if k % 2 == 0 else 'bias'} {k // 2}" for k in range(len(params))]
    for name, a, b in zip(names, ours, reference):
        if not _same_bits(a, b):
            return f"the gradient of {name}"
    return None


def _same_bits(a, b) -> bool:
    """Equal shapes and values, NaN where the other has NaN (a NaN loss is the monitor's business,
    not a reason to change trainers)."""
    import torch

    if a.shape != b.shape:
        return False
    nan = torch.isnan(a)
    return torch.equal(nan, torch.isnan(b)) and torch.equal(a.masked_fill(nan, 0), b.masked_fill(nan, 0))
