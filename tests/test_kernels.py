"""The explicit trainer (pipeline/kernels.py) against its reference, the autograd loop: for every
activation, head and optimizer, full batch and mini-batches, with and without standardization, the
same loss history and the same weights to the bit. Plus the guard that hands a step whose numbers
differ over to autograd."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.spec.archs import Arch
from pipeline.spec.data import in_memory_dataset
from pipeline.training import kernels as K
from pipeline.training.train import TrainConfig, train

FEATURES = ("a", "b", "c", "d")


def _data(task: str, rows: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES))).astype(np.float32) * np.array([50, 1, 0.01, 3], np.float32) + 10
    y = {
        "binary": (x[:, 0] + 40 * x[:, 1] > 10).astype(int),
        "multiclass": (x[:, 0] > 10).astype(int) + (x[:, 1] > 10),
        "regression": x[:, 0] * 3.0 - 100 * x[:, 2] + rng.normal(size=rows),
    }[task]
    classes = {"binary": (0, 1), "multiclass": ("a", "b", "c"), "regression": ()}[task]
    cut = rows * 4 // 5
    return in_memory_dataset(FEATURES, task, classes, x, y, np.arange(cut), np.arange(cut, rows))


def _arch(activation: str, task: str, hidden=(8, 6), scale: bool = True) -> Arch:
    out = 3 if task == "multiclass" else 1
    classes = {"binary": (0, 1), "multiclass": ("a", "b", "c"), "regression": ()}[task]
    return Arch("toy", (len(FEATURES), *hidden, out), activation=activation, task=task, features=FEATURES,
                classes=classes, scale_input=scale, scale_output=scale and task == "regression")  # fmt: skip


def _same(a, b, ran: tuple[str, str] = ("explicit", "autograd")) -> None:
    """`a` and `b` have the same bits, and each ran the loop it was meant to (`ran`; by default the
    explicit trainer and the autograd loop): the explicit trainer hands over to autograd with only a
    notice, so without this a broken kernel would compare autograd with autograd and pass."""
    assert (a.trainer, b.trainer) == ran, (a.trainer, a.notices)
    assert a.losses == b.losses
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name


COMBOS = list(itertools.product(K.ACTIVATIONS, K.TASKS, K.OPTIMIZERS))


@pytest.mark.parametrize("activation,task,optimizer", COMBOS)
@pytest.mark.parametrize("batch_size", [0, 48])
def test_explicit_trainer_is_bit_identical_to_autograd(activation, task, optimizer, batch_size):
    data = _data(task)
    arch = _arch(activation, task)
    lr = 0.01 if optimizer == "adam" else 0.1

    def run(trainer):
        cfg = TrainConfig(arch, steps=60, lr=lr, seed=3, device="cpu", trainer=trainer, optimizer=optimizer,
                          batch_size=batch_size, log_every=7)  # fmt: skip
        return train(cfg, data=data)

    ours, reference = run("auto"), run("autograd")
    assert ours.trainer == "explicit" and not ours.notices
    assert reference.trainer == "autograd"
    _same(ours, reference)
    assert np.mean(ours.losses[-10:]) < np.mean(ours.losses[:10])  # it learns: a no-op step would also match


@pytest.mark.parametrize("task", K.TASKS)
def test_explicit_trainer_without_standardization(task):
    data = _data(task)
    arch = _arch("tanh", task, scale=False)
    runs = [train(TrainConfig(arch, steps=40, lr=1e-4, seed=9, device="cpu", trainer=t, optimizer="sgd"), data=data)
            for t in ("explicit", "autograd")]  # fmt: skip
    _same(*runs)


@pytest.mark.parametrize("activation,optimizer", [("relu", "adam"), ("gelu", "sgd")])
def test_explicit_trainer_on_wider_layers_and_more_rows(activation, optimizer):
    """Bigger matrices take other BLAS paths (blocking, both threads): still autograd's bits."""
    data = _data("multiclass", rows=3000, seed=2)
    arch = _arch(activation, "multiclass", hidden=(64, 48))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = [
            train(
                TrainConfig(
                    arch, steps=25, lr=0.005, seed=1, device="cpu", trainer=t, optimizer=optimizer, batch_size=512
                ),
                data=data,
            )  # fmt: skip
            for t in ("explicit", "autograd")
        ]
    finally:
        torch.set_num_threads(before)
    _same(*runs)


def test_a_step_whose_numbers_differ_hands_over_to_autograd(monkeypatch):
    """The guard: a kernel that is one ulp off (as a changed derivative formula in a newer torch
    would be) is caught at the first step; training restarts from the same initial weights with the
    autograd loop and says why."""
    real = K.explicit_grads

    def off_by_an_ulp(arch, weights, biases):
        grads = real(arch, weights, biases)

        def wrong(x, y):
            loss, g = grads(x, y)
            g[1] = torch.nextafter(g[1], torch.full_like(g[1], np.inf))
            return loss, g

        return wrong

    monkeypatch.setattr(K, "explicit_grads", off_by_an_ulp)
    data = _data("binary")
    arch = _arch("relu", "binary")
    cfg = TrainConfig(arch, steps=30, lr=0.01, seed=4, device="cpu", optimizer="adam")
    ours = train(cfg, data=data)
    assert ours.trainer == "autograd"
    assert any("differ from autograd's in the gradient of bias 0" in n for n in ours.notices)
    monkeypatch.undo()
    reference = train(TrainConfig(arch, steps=30, lr=0.01, seed=4, device="cpu", optimizer="adam", trainer="autograd"),
                      data=data)  # fmt: skip
    _same(ours, reference, ran=("autograd", "autograd"))  # the hand-over is the reference run exactly


def test_a_hand_over_restarts_from_the_initial_weights(monkeypatch):
    """A loop that fails after changing the weights (as a CUDA graph whose capture fails after its
    warm-up steps does) hands over with the parameters restored: the autograd rerun is the
    reference run exactly."""
    import pipeline.training.train as T

    real = T.explicit_loop

    def trains_then_fails(model, x, y, steps, lr, monitor, **kw):
        real(model, x, y, 5, lr, T.Monitor(100), **kw)  # five real steps: the weights move
        raise T.NotBitIdentical("the gradient of weight 1")

    monkeypatch.setattr(T, "explicit_loop", trains_then_fails)
    data = _data("multiclass")
    arch = _arch("gelu", "multiclass")
    ours = train(TrainConfig(arch, steps=30, lr=0.01, seed=4, device="cpu", optimizer="adam", batch_size=32), data=data)
    assert ours.trainer == "autograd" and "in the gradient of weight 1" in ours.notices[0]
    monkeypatch.undo()
    reference = train(TrainConfig(arch, steps=30, lr=0.01, seed=4, device="cpu", optimizer="adam", batch_size=32,
                                  trainer="autograd"), data=data)  # fmt: skip
    _same(ours, reference, ran=("autograd", "autograd"))


def test_a_batch_of_every_row_is_graphed_on_cuda():
    from pipeline.training.train import pick_trainer

    assert pick_trainer(TrainConfig(_arch("relu", "binary"), batch_size=500), "cuda", 100, []) == "cuda-graph"
    assert pick_trainer(TrainConfig(_arch("relu", "binary"), batch_size=50), "cuda", 100, []) == "explicit"


def test_check_step_names_a_wrong_loss():
    data = _data("regression")
    arch = _arch("sigmoid", "regression")
    from pipeline.training.model import init_model, set_scaling, training_view
    from pipeline.training.train import training_tensors

    model = init_model(arch, 0, False)
    set_scaling(model, arch, data.stats.mean, data.stats.std, data.target_mean, data.target_std)
    x, y = training_tensors(data, arch, "cpu")
    view = training_view(model, arch)
    grads = K.explicit_grads(arch, [p.detach() for p in view.parameters()][0::2],
                             [p.detach() for p in view.parameters()][1::2])  # fmt: skip
    xs = K.standardized_inputs(model, arch, x)
    assert K.check_step(view, arch, grads, x, xs, y) is None
    assert K.check_step(view, arch, lambda a, b: (grads(a, b)[0] * 2, grads(a, b)[1]), x, xs, y) == "the loss"
    # raw rows where standardized ones belong: everything differs, the loss is named first
    assert K.check_step(view, arch, grads, x, x, y) == "the loss"


def test_a_nan_loss_is_not_a_reason_to_change_trainers():
    """Weights that overflow give NaN both ways: the step agrees, and the monitor reports divergence."""
    from pipeline.errors import TrainingFailed

    data = _data("regression")
    arch = _arch("relu", "regression")
    with pytest.raises(TrainingFailed, match="diverged"):
        train(TrainConfig(arch, steps=50, lr=1e30, seed=0, device="cpu", optimizer="sgd", log_every=1), data=data)
    assert K._same_bits(torch.tensor([np.nan, 1.0]), torch.tensor([np.nan, 1.0]))
    assert not K._same_bits(torch.tensor([np.nan, 1.0]), torch.tensor([1.0, np.nan]))


def test_batches_are_seeded_permutations_with_the_short_batch_dropped():
    x = torch.arange(10, dtype=torch.float32).reshape(10, 1)
    y = torch.arange(10)
    stream = K.batches(x, y, 4, seed=11)
    gen = torch.Generator().manual_seed(11)
    for _epoch in range(3):
        order = torch.randperm(10, generator=gen)
        for start in (0, 4):  # rows 8-9 (a short batch) are dropped
            xb, yb = next(stream)
            assert torch.equal(yb, order[start : start + 4])
            assert torch.equal(xb[:, 0], order[start : start + 4].float())
    full = K.batches(x, y, 0, seed=0)
    assert next(full)[0] is x and next(full)[1] is y
    assert next(K.batches(x, y, 10, seed=0))[0] is x  # a batch covering every row is the full batch


def test_covers_names_what_it_lacks():
    assert K.covers(_arch("relu", "binary"), "adam") is None
    assert K.covers(_arch("relu", "binary"), "rmsprop") == "no explicit update for the rmsprop optimizer"
    odd = SimpleNamespace(activation="softplus", task="binary")  # an activation the schema might add
    assert K.covers(odd, "sgd") == "no explicit kernels for the softplus activation"  # type: ignore[arg-type]


def test_every_recipe_activation_head_and_optimizer_has_kernels():
    from pipeline.spec import recipe

    assert set(recipe.ACTIVATIONS) == set(K.ACTIVATIONS)
    assert set(recipe.TASKS) == set(K.TASKS)
    assert set(recipe.OPTIMIZERS) == set(K.OPTIMIZERS)


def test_cuda_graph_asked_for_on_adam_says_which_loop_ran():
    from pipeline.training.train import pick_trainer

    notices: list[str] = []
    cfg = TrainConfig(_arch("relu", "binary"), optimizer="adam", trainer="cuda-graph")
    assert pick_trainer(cfg, "cuda", 100, notices) == "explicit"
    assert "captures full-batch SGD on CUDA" in notices[0]
    assert pick_trainer(TrainConfig(_arch("relu", "binary"), optimizer="adam"), "cuda", 100, []) == "explicit"
    assert pick_trainer(TrainConfig(_arch("relu", "binary")), "cuda", 100, []) == "cuda-graph"


@pytest.mark.cuda
@pytest.mark.parametrize("activation,task,optimizer", [("relu", "multiclass", "sgd"), ("gelu", "regression", "adam")])
def test_explicit_trainer_on_cuda_is_autograds_bits(activation, task, optimizer):
    data = _data(task)
    arch = _arch(activation, task)
    runs = [train(TrainConfig(arch, steps=50, lr=0.01, seed=2, device="cuda", trainer=t, optimizer=optimizer),
                  data=data) for t in ("auto", "autograd")]  # fmt: skip
    assert runs[0].trainer in ("cuda-graph", "explicit")
    _same(*runs, ran=(runs[0].trainer, "autograd"))


@pytest.mark.parametrize("shapes", [[(8, 4), (8,), (1, 8), (1,)], [(37, 10, 10), (37, 10), (37, 1, 10), (37, 1)]])
@pytest.mark.parametrize("lr", [1e-3, 0.5])
def test_the_retyped_adam_is_torch_optims_on_the_installed_torch(shapes, lr):
    """A single run's shapes and a sweep's stacked ones: the update both use is AdamUpdate, and it
    gives torch.optim.Adam's bits step after step (the guard's own comparison, plus 40 steps here)."""
    gen = torch.Generator().manual_seed(1)
    params = [torch.randn(s, generator=gen) for s in shapes]
    assert K.adam_differs(params, lr) is None
    update = K.optimizer_update("adam", params, lr)
    assert isinstance(update, K.AdamUpdate)
    reference = [p.clone() for p in params]
    opt = torch.optim.Adam(reference, lr=lr)
    for _ in range(40):
        grads = [torch.randn(s, generator=gen) for s in shapes]
        update(grads)
        for p, g in zip(reference, grads):
            p.grad = g
        opt.step()
    for p, q in zip(params, reference):
        assert torch.equal(p, q)


def test_an_adam_that_differs_is_replaced_by_torch_optim(monkeypatch):
    params = [torch.ones(4, 3), torch.zeros(4)]
    monkeypatch.setattr(K, "ADAM_EPS", 1e-6)  # a re-typed formula that drifted from torch.optim's
    assert K.adam_differs(params, 0.01) == "parameter 0 after step 1"
    update = K.optimizer_update("adam", params, 0.01)
    assert not isinstance(update, K.AdamUpdate)
    update([torch.ones(4, 3), torch.ones(4)])
    reference = [torch.ones(4, 3), torch.zeros(4)]
    opt = torch.optim.Adam(reference, lr=0.01)
    for p in reference:
        p.grad = torch.ones_like(p)
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(params, reference))


def test_an_update_beyond_float32_raises_as_torch_optim_does():
    params = [torch.ones(3)]
    assert K.adam_differs(params, 1e38) is None  # both raise
    with pytest.raises(RuntimeError, match="overflow"):
        K.AdamUpdate(params, 1e38)([torch.ones(3)])
