"""The batched sweep: members against single runs (built-ins and every head, optimizer, batching and
activation of a recipe), the summary against its rows, chunking, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from pipeline.spec.archs import ARCHS, Arch
from pipeline.spec.recipe import Gate
from pipeline.training.sweep import sweep
from pipeline.training.train import TrainConfig, train
from pipeline.training.validate import evaluate

STEPS = 3000
STUCK_SEED = 5  # shallow seed 5 fails the gate at 3000 and 10001 steps


def _single(arch, seed: int, lr: float, steps: int):
    r = train(TrainConfig(arch, seed=seed, lr=lr, steps=steps, device="cpu"))
    return r.final_loss, evaluate(r.model, arch, r.final_loss, Gate(min_accuracy=1.0)).passed


@pytest.fixture(scope="module")
def shallow_sweep():
    return sweep(ARCHS["shallow"], [0, 1, 2, STUCK_SEED, 777], [0.5, 1.0], steps=STEPS, device="cpu")


@pytest.mark.parametrize("seed,lr", [(0, 0.5), (1, 1.0), (2, 0.5), (STUCK_SEED, 1.0), (777, 1.0)])
def test_shallow_members_match_single_runs(shallow_sweep, seed, lr):
    member = next(m for m in shallow_sweep.members if (m.seed, m.lr) == (seed, lr))
    loss, passed = _single(ARCHS["shallow"], seed, lr, STEPS)
    assert member.final_loss == pytest.approx(loss, rel=1e-4)
    assert member.converged == passed and not member.diverged


def test_wide_deep_members_match_single_runs():
    # wide-deep's 10 -> 1 layer is MKL's gemv in a single run, reproduced by one gemv over every member's
    # rows; its 4 x 10 activations take sigmoid's vectorized loop for 32 elements and the scalar loop for
    # 8, reproduced per member (docs/sweep.md). The bits are a single run's (measured); 1e-4 is the promise.
    arch = ARCHS["wide-deep"]
    result = sweep(arch, [15, 777], [1.0], steps=STEPS, device="cpu")
    for m in result.members:
        loss, passed = _single(arch, m.seed, 1.0, STEPS)
        assert m.final_loss == pytest.approx(loss, rel=1e-4)
        assert m.converged == passed


# ---------------------------------------------------------------------------------------------
# Recipes: every head x optimizer x batching, each activation at least twice, two hidden layers


def _toy(task: str):
    """300 rows of 3 features on different scales; 240 training rows, 60 validation rows."""
    from pipeline.spec.data import in_memory_dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32) * np.float32([3.0, 1.0, 0.5]) + 1
    y = {
        "binary": (x[:, 0] + x[:, 1] > 1.5).astype(int),
        "multiclass": (x[:, 0] > 1).astype(int) + (x[:, 1] > 1),
        "regression": x[:, 0] * 30.0 + 5 * x[:, 1] ** 2 + 100,
    }[task]
    classes = {"binary": (0, 1), "multiclass": ("a", "b", "c"), "regression": ()}[task]
    return in_memory_dataset(("a", "b", "c"), task, classes, x, y, np.arange(240), np.arange(240, 300))


GATES = {"binary": Gate(min_accuracy=0.9), "multiclass": Gate(min_accuracy=0.9), "regression": Gate(max_rmse=8.0)}
STEPS_RECIPE = 150

# (task, optimizer, batch size, activation, lr); batch 50 of 240 rows: 4 batches an epoch, 40 rows dropped,
# and 1/50 is not a power of two (the loss gradient's division is a separate op then)
CASES = [
    ("binary", "sgd", 0, "sigmoid", 0.5),
    ("binary", "sgd", 50, "relu", 0.2),
    ("binary", "adam", 0, "tanh", 0.02),
    ("binary", "adam", 32, "gelu", 0.02),
    ("multiclass", "sgd", 0, "relu", 0.2),
    ("multiclass", "sgd", 50, "gelu", 0.2),
    ("multiclass", "adam", 0, "sigmoid", 0.02),
    ("multiclass", "adam", 32, "tanh", 0.02),
    ("regression", "sgd", 0, "gelu", 0.02),
    ("regression", "sgd", 32, "tanh", 0.02),
    ("regression", "adam", 0, "relu", 0.02),
    ("regression", "adam", 50, "sigmoid", 0.05),
]


def _arch(task: str, activation: str, data, scale: bool = True) -> Arch:
    n_out = 3 if task == "multiclass" else 1
    return Arch("toy", (3, 8, 6, n_out), activation=activation, task=task, features=("a", "b", "c"),
                classes=data.classes, scale_input=scale, scale_output=scale and task == "regression")  # fmt: skip


def _gate_kwargs(gate: Gate) -> dict:
    return {"min_accuracy": gate.min_accuracy, "max_rmse": gate.max_rmse}


@pytest.mark.parametrize("task,optimizer,batch,activation,lr", CASES)
def test_recipe_members_match_single_autograd_runs(task, optimizer, batch, activation, lr):
    data, gate = _toy(task), GATES[task]
    arch = _arch(task, activation, data)
    seeds = [0, 4, 9]
    result = sweep(arch, seeds, [lr], steps=STEPS_RECIPE, device="cpu", data=data, optimizer=optimizer,
                   batch_size=batch, **_gate_kwargs(gate))  # fmt: skip
    assert [m.seed for m in result.members] == seeds and result.on == "validation rows" and result.val_rows == 60
    for m in result.members:
        cfg = TrainConfig(arch, steps=STEPS_RECIPE, lr=lr, seed=m.seed, device="cpu", trainer="autograd",
                          optimizer=optimizer, batch_size=batch)  # fmt: skip
        single = train(cfg, data=data)
        verdict = evaluate(single.model, arch, single.final_loss, gate, data)
        # the single run's bits (the promise is 1e-4 relative): the loss as its loss kernel reduces it
        # (nll_loss, not a gather and mean), the metric as validate.evaluate computes it
        assert m.final_loss == single.final_loss
        assert m.converged == verdict.passed and not m.diverged
        if task == "regression":
            assert m.accuracy is None and m.rmse == verdict.rmse
        else:
            assert m.rmse is None and m.accuracy == verdict.accuracy


def test_unscaled_inputs_and_raw_regression_target_match_a_single_run():
    data, gate = _toy("regression"), Gate(max_rmse=30.0)
    arch = _arch("regression", "relu", data, scale=False)
    result = sweep(arch, [1], [1e-4], steps=100, device="cpu", data=data, optimizer="adam", **_gate_kwargs(gate))
    single = train(TrainConfig(arch, steps=100, lr=1e-4, seed=1, device="cpu", trainer="autograd", optimizer="adam"),
                   data=data)  # fmt: skip
    m = result.members[0]
    assert m.final_loss == pytest.approx(single.final_loss, rel=1e-4)
    assert m.rmse == pytest.approx(evaluate(single.model, arch, single.final_loss, gate, data).rmse, rel=1e-4)


@pytest.mark.slow
def test_products_without_an_exact_batched_form_match_single_runs_whatever_the_chunk():
    """The 6 -> 1 layer at 50 rows per step has no batched form with a single run's bits (its gemv sums
    in an order no batched op reproduces, and MKL's order depends on each member's alignment in the
    stack), so it runs member by member with the single run's kernel. Before that, member 5 of seeds
    0-5 drifted (after 4000 steps its verdict flipped); now every member is a single run to the bit,
    in a chunk of 6, 4 + 2 or alone."""
    from pipeline.training.sweep import _linear_plan

    data = _toy("regression")
    arch = _arch("regression", "sigmoid", data)
    steps, lr = 600, 0.05
    kw = dict(steps=steps, device="cpu", data=data, optimizer="adam", batch_size=50, max_rmse=1.4, min_accuracy=None)
    whole = sweep(arch, range(6), [lr], **kw)
    assert not _linear_plan(6, 50, 6, 1, False, _cpu()).batched[0]  # the per-member path is what is tested
    chunked = sweep(arch, range(6), [lr], chunk=4, **kw)
    alone = sweep(arch, [5], [lr], **kw)
    for m, c in zip(whole.members, chunked.members):
        single = train(TrainConfig(arch, steps=steps, lr=lr, seed=m.seed, device="cpu", optimizer="adam",
                                   batch_size=50), data=data)  # fmt: skip
        verdict = evaluate(single.model, arch, single.final_loss, Gate(max_rmse=1.4), data)
        assert m.final_loss == c.final_loss == single.final_loss, m.seed
        assert m.rmse == c.rmse == verdict.rmse and m.converged == c.converged == verdict.passed
    assert alone.members[0] == whole.members[5]


def _cpu():
    import torch

    return torch.device("cpu")


def test_the_gate_is_judged_on_validates_row_blocks(monkeypatch):
    """Rows in blocks of validate.EVAL_CHUNK and numpy's reductions, as validate.evaluate: the same
    RMSE and accuracy to the bit (a row on the threshold gets the same verdict)."""
    import pipeline.training.validate as V

    monkeypatch.setattr(V, "EVAL_CHUNK", 7)  # 60 validation rows: 9 blocks, the last short
    for task, act in (("regression", "tanh"), ("multiclass", "relu"), ("binary", "sigmoid")):
        data, gate = _toy(task), GATES[task]
        arch = _arch(task, act, data)
        result = sweep(arch, [0, 3], [0.05], steps=40, device="cpu", data=data, optimizer="adam", **_gate_kwargs(gate))
        for m in result.members:
            single = train(TrainConfig(arch, steps=40, lr=0.05, seed=m.seed, device="cpu", optimizer="adam"), data=data)
            v = evaluate(single.model, arch, single.final_loss, gate, data)
            assert (m.rmse, m.accuracy, m.converged) == (v.rmse, v.accuracy, v.passed)


def test_divergence_is_judged_at_every_step_as_a_single_run_does():
    """A single run's Monitor checks every step's loss; a member whose loss spikes between two of the
    old checks (every 100 steps) was 'not diverged' while its single run raised TrainingFailed: here
    wide-deep seeds 3 and 10 at lr 20 (spikes between steps 0 and 100, back below 10x by then)."""
    from pipeline.errors import TrainingFailed

    arch = ARCHS["wide-deep"]
    result = sweep(arch, range(12), [20.0, 50.0], steps=120, device="cpu", min_accuracy=1.0)
    for m in result.members:
        try:
            single = train(TrainConfig(arch, seed=m.seed, lr=m.lr, steps=120, device="cpu"))
        except TrainingFailed:
            assert m.diverged and not m.converged, (m.seed, m.lr)
        else:
            assert not m.diverged and m.final_loss == single.final_loss, (m.seed, m.lr)


def test_progress_reports_member_steps_up_to_the_total():
    seen: list[tuple[int, int]] = []
    sweep(
        ARCHS["shallow"],
        range(5),
        [1.0, 2.0],
        steps=600,
        device="cpu",
        chunk=3,
        on_progress=lambda d, t: seen.append((d, t)),
    )
    assert seen[-1] == (5 * 2 * 600, 5 * 2 * 600) and all(t == 6000 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 4  # within chunks too


def test_mini_batch_members_do_not_depend_on_their_chunk():
    """Each member draws its own batches from its own seed, whoever else is in its chunk."""
    data = _toy("binary")
    arch = _arch("binary", "relu", data)
    kw = dict(steps=40, device="cpu", data=data, optimizer="adam", batch_size=50, min_accuracy=0.9)
    whole = sweep(arch, range(5), [0.02, 0.05], **kw)
    alone = sweep(arch, range(5), [0.02, 0.05], chunk=2, **kw)
    assert [(m.seed, m.lr, m.accuracy) for m in whole.members] == [(m.seed, m.lr, m.accuracy) for m in alone.members]
    for a, b in zip(whole.members, alone.members):
        assert a.final_loss == b.final_loss


def test_a_regression_sweep_needs_max_rmse_and_a_classifier_min_accuracy():
    from pipeline.errors import UsageError

    data = _toy("regression")
    with pytest.raises(UsageError, match="max_rmse"):
        sweep(_arch("regression", "relu", data), [0], [0.1], steps=2, device="cpu", data=data)
    data = _toy("binary")
    with pytest.raises(UsageError, match="min_accuracy"):
        sweep(_arch("binary", "relu", data), [0], [0.1], steps=2, device="cpu", data=data, min_accuracy=None)


def test_stuck_seed_is_not_converged(shallow_sweep):
    stuck = [m for m in shallow_sweep.members if m.seed == STUCK_SEED and m.lr == 1.0]
    assert len(stuck) == 1 and not stuck[0].converged and stuck[0].accuracy < 1.0
    assert STUCK_SEED in [m.seed for m in shallow_sweep.failing(1.0)]


def _quantile(sorted_values: list[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def test_summary_agrees_with_rows(shallow_sweep):
    r = shallow_sweep
    s = r.summary
    assert len(r.members) == len(r.seeds) * len(r.lrs) == s.members
    assert [(m.seed, m.lr) for m in r.members] == [(a, b) for a in r.seeds for b in r.lrs]
    for p in s.per_lr:
        rows = [m for m in r.members if m.lr == p.lr]
        assert p.members == len(rows)
        assert p.converged == sum(1 for m in rows if m.accuracy >= r.min_accuracy and not m.diverged)
        assert p.converged_fraction == p.converged / len(rows)
    losses = sorted(m.final_loss for m in r.members)
    got = dict(s.loss_quantiles)
    for name, q in (("min", 0), ("p5", 0.05), ("p50", 0.5), ("p95", 0.95), ("max", 1)):
        assert got[name] == pytest.approx(_quantile(losses, q), rel=1e-12)
    converged = [m for m in r.members if m.converged]
    assert s.best == min(converged, key=lambda m: m.final_loss)


def test_chunks_give_the_same_results():
    arch = ARCHS["shallow"]
    whole = sweep(arch, range(7), [1.0, 2.0], steps=500, device="cpu")
    chunked = sweep(arch, range(7), [1.0, 2.0], steps=500, device="cpu", chunk=3)
    assert chunked.chunk == 3 and whole.chunk == 7
    assert [(m.seed, m.lr, m.converged, m.accuracy) for m in whole.members] == [
        (m.seed, m.lr, m.converged, m.accuracy) for m in chunked.members
    ]
    for a, b in zip(whole.members, chunked.members):
        assert a.final_loss == pytest.approx(b.final_loss, rel=1e-6)


runner = CliRunner()


def test_cli_json_writes_sweep_json(tmp_path):
    r = runner.invoke(
        cli.app, ["sweep", "--seeds", "20", "--steps", "2000", "--device", "cpu", "--json", "--out", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # exactly one JSON document
    assert doc["n_seeds"] == 20 and len(doc["members"]) == 20
    on_disk = json.loads((tmp_path / "sweep.json").read_text())
    assert on_disk["members"] == doc["members"]
    assert doc["summary"]["per_lr"][0]["converged"] == sum(m["converged"] for m in doc["members"])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--seeds", "0"], "--seeds"),
        (["--seeds", "1000001"], "--seeds"),
        (["--lrs", "1,-1"], "--lrs"),
        (["--lrs", "nan"], "--lrs"),
        (["--lrs", "1,x"], "--lrs"),
        (["--steps", "0"], "--steps"),
        (["--steps", "10000001"], "--steps"),
        (["--arch", "resnet"], "shallow"),
        (["--device", "tpu"], "--device"),
        (["--min-accuracy", "2"], "--min-accuracy"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, args, message):
    r = runner.invoke(cli.app, ["sweep", "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_export_best_publishes_the_best_pair_through_the_pipeline(tmp_path):
    """The sweep ends in a verified, published version whose training is the best member's."""
    import json as _json

    from pipeline.store import versions
    from tests.conftest import run_cli

    root = tmp_path / "artifacts"
    r = run_cli("sweep", "--arch", "shallow", "--seeds", "6", "--steps", "3000", "--device", "cpu",
                "--artifacts-dir", str(root), "--export-best", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = _json.loads(r.stdout)
    best = doc["summary"]["best"]
    assert doc["published_version"] == 1 and versions.read_published(root, "shallow") == 1
    m = _json.loads((root / "shallow" / "v1" / "manifest.json").read_text())
    assert m["config"]["seed"] == best["seed"] and m["verify"]["passed"] is True
    assert abs(m["train"]["final_loss"] - best["final_loss"]) <= 1e-4 * best["final_loss"]


# ---------------------------------------------------------------------------------------------
# The CLI on a CSV recipe

CSV_RECIPE = """
name = "blobs"
[model]
hidden = [8]
activation = "relu"
[data]
path = "blobs.csv"
target = "kind"
[train]
optimizer = "adam"
lr = 0.05
steps = 120
batch_size = 25
seed = 3
[gate]
min_accuracy = 0.8
"""


@pytest.fixture
def csv_recipe(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 2))
    kind = np.where(x[:, 0] > 0.3, "up", np.where(x[:, 1] > 0, "left", "down"))
    with (tmp_path / "blobs.csv").open("w") as f:
        f.write("a,b,kind\n" + "".join(f"{r[0]:.5f},{r[1]:.5f},{k}\n" for r, k in zip(x, kind)))
    (tmp_path / "blobs.toml").write_text(CSV_RECIPE)
    return tmp_path / "blobs.toml"


def test_cli_sweeps_a_csv_recipe_with_its_own_settings(tmp_path, csv_recipe):
    out = tmp_path / "sw"
    r = runner.invoke(cli.app, ["sweep", "--recipe", str(csv_recipe), "--seeds", "5", "--lrs", "0.02,0.05",
                                "--device", "cpu", "--out", str(out), "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["arch"], doc["task"], doc["optimizer"], doc["batch_size"], doc["steps"]) == (
        "blobs", "multiclass", "adam", 25, 120
    )  # fmt: skip
    assert doc["min_accuracy"] == 0.8 and doc["max_rmse"] is None and doc["val_rows"] == 40
    assert [(m["seed"], m["lr"]) for m in doc["members"]] == [(s, lr) for s in range(5) for lr in (0.02, 0.05)]
    assert all("accuracy" in m and "rmse" not in m for m in doc["members"])
    assert json.loads((out / "sweep.json").read_text())["members"] == doc["members"]
    # the same member as `train --recipe ... --seed 4 --lr 0.05` (the autograd loop)
    from pipeline.spec.data import load_dataset
    from pipeline.spec.recipe import load_recipe

    recipe = load_recipe(csv_recipe)
    data = load_dataset(recipe)
    arch = Arch("blobs", (2, 8, 3), activation="relu", task="multiclass", features=("a", "b"),
                classes=data.classes, scale_input=True, serving=recipe.serving)  # fmt: skip
    single = train(TrainConfig(arch, steps=120, lr=0.05, seed=4, device="cpu", trainer="autograd", optimizer="adam",
                               batch_size=25), data=data)  # fmt: skip
    member = next(m for m in doc["members"] if (m["seed"], m["lr"]) == (4, 0.05))
    assert member["final_loss"] == pytest.approx(single.final_loss, rel=1e-4)
    r = runner.invoke(cli.app, ["sweep", "--recipe", str(csv_recipe), "--seeds", "2", "--steps", "30",
                                "--min-accuracy", "0.1", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "blobs: 2 members" in r.output and "with adam" in r.output and "accuracy >= 0.1" in r.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--recipe", "missing.toml"], "does not exist"),
        (["--recipe", "{recipe}", "--max-rmse", "3"], "--max-rmse does not fit blobs"),
        (["--recipe", "{recipe}", "--min-accuracy", "0.5", "--max-rmse", "3"], "not both"),
        (["--recipe", "{recipe}", "--arch", "shallow"], "not both"),
        (["--recipe", "{bad}"], "unknown key"),
    ],
)
def test_cli_bad_recipe_or_option_is_one_line(tmp_path, csv_recipe, args, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(CSV_RECIPE.replace("hidden", "hiden"))
    args = [a.format(recipe=csv_recipe, bad=bad) for a in args]
    r = runner.invoke(cli.app, ["sweep", "--seeds", "2", "--device", "cpu", "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_export_best_publishes_a_csv_recipe_verified(tmp_path, csv_recipe):
    from pipeline.store import versions
    from tests.conftest import run_cli

    root = tmp_path / "artifacts"
    r = run_cli("sweep", "--recipe", str(csv_recipe), "--seeds", "4", "--lrs", "0.02,0.05", "--device", "cpu",
                "--artifacts-dir", str(root), "--export-best", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    best = doc["summary"]["best"]
    assert best["converged"] and doc["published_version"] == 1 and versions.read_published(root, "blobs") == 1
    assert (root / "_sweeps" / "blobs" / "sweep.json").is_file()  # the default --out: no model can be named so
    m = json.loads((root / "blobs" / "v1" / "manifest.json").read_text())
    assert (m["config"]["seed"], m["config"]["lr"]) == (best["seed"], best["lr"]) and m["verify"]["passed"] is True
    assert m["config"]["batch_size"] == 25 and m["config"]["optimizer"] == "Adam"
    assert abs(m["train"]["final_loss"] - best["final_loss"]) <= 1e-4 * best["final_loss"]
    assert m["validation"]["accuracy"] == pytest.approx(best["accuracy"], abs=1 / 40 + 1e-9)


# ---------------------------------------------------------------------------------------------
# Defaults, the output folder, --export-best without a converged pair, a stale picture


def test_default_lrs_are_the_recipes_own(tmp_path, csv_recipe):
    """Without --lrs: the recipe's lr (0.05 here; the built-ins' is the tutorial's 1), not 1 for all."""
    r = runner.invoke(cli.app, ["sweep", "--recipe", str(csv_recipe), "--seeds", "2", "--steps", "5", "--device",
                                "cpu", "--out", str(tmp_path / "a"), "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["lrs"] == [0.05] and {m["lr"] for m in doc["members"]} == {0.05}
    r = runner.invoke(cli.app, ["sweep", "--seeds", "2", "--steps", "5", "--device", "cpu", "--out",
                                str(tmp_path / "b"), "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["lrs"] == [1.0]


def test_out_is_refused_inside_model_artifacts(tmp_path):
    """The default folder (_sweeps) cannot be a model's; an --out among a model's files is refused
    before anything is trained or written."""
    root = tmp_path / "artifacts"
    (root / "shallow" / "v1").mkdir(parents=True)
    (root / "shallow" / "v1" / "manifest.json").write_text("{}")
    elsewhere = tmp_path / "shipped" / "m"
    elsewhere.mkdir(parents=True)
    (elsewhere / "manifest.json").write_text("{}")
    unpublished = tmp_path / "other-root" / "mine"  # a model folder of another root: a candidate only
    (unpublished / "candidate").mkdir(parents=True)
    (unpublished / "candidate" / "manifest.json").write_text("{}")
    for out in (
        root / "shallow" / "v1",
        root / "shallow" / "new",
        root / "sweeps",
        root / "v1" / "x",
        elsewhere / "sub",
        unpublished,
    ):
        r = runner.invoke(cli.app, ["sweep", "--seeds", "2", "--steps", "5", "--device", "cpu",
                                    "--artifacts-dir", str(root), "--out", str(out)])  # fmt: skip
        assert r.exit_code == 2, (out, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and "--out" in lines[0], r.output
        assert not (out / "sweep.json").exists()
    assert sorted(p.name for p in root.iterdir()) == ["shallow"]  # nothing written
    r = runner.invoke(
        cli.app, ["sweep", "--seeds", "2", "--steps", "5", "--device", "cpu", "--artifacts-dir", str(root)]
    )
    assert r.exit_code == 0, r.output
    assert (root / "_sweeps" / "shallow" / "sweep.json").is_file()


def test_export_best_with_nothing_converged_still_reports_the_sweep(tmp_path):
    root = tmp_path / "artifacts"
    args = ["sweep", "--seeds", "3", "--steps", "5", "--device", "cpu", "--artifacts-dir", str(root), "--export-best"]
    r = runner.invoke(cli.app, [*args, "--json"])
    assert r.exit_code == 8, r.output
    doc = json.loads(r.stdout)  # one document: the results, and why nothing was published
    assert len(doc["members"]) == 3 and doc["summary"]["converged"] == 0
    assert doc["published_version"] is None and doc["exit_code"] == 8 and "no pair passed the gate" in doc["error"]
    assert json.loads((root / "_sweeps" / "shallow" / "sweep.json").read_text())["members"] == doc["members"]
    assert not (root / "shallow").exists()
    r = runner.invoke(cli.app, args)
    assert r.exit_code == 8
    assert "shallow: 3 members" in r.stdout and "error: no pair passed the gate" in r.stderr


def test_a_stale_picture_is_removed_without_matplotlib(tmp_path, monkeypatch):
    from pipeline.flow import run_sweep
    from pipeline.training import plot

    (tmp_path / "sweep.png").write_bytes(b"an old sweep")
    monkeypatch.setattr(plot, "matplotlib_missing", lambda: "matplotlib is not installed, so no loss.png")
    run = run_sweep("shallow", 2, [1.0], steps=5, device="cpu", out=tmp_path)
    assert not (tmp_path / "sweep.png").exists() and run.written == (tmp_path / "sweep.json",)
    assert any("sweep.png" in n and "removed" in n for n in run.notices)


def test_a_sweep_on_cuda_says_its_members_are_not_bit_identical(tmp_path, monkeypatch):
    """The CPU promise (bit-identical members) does not hold on CUDA; the user hears it."""
    import dataclasses

    import pipeline.training.sweep as SW
    from pipeline.flow import run_sweep

    real = SW.sweep
    monkeypatch.setattr(SW, "sweep", lambda *a, **k: dataclasses.replace(real(*a, **k), device="cuda:0 (a card)"))
    run = run_sweep("shallow", 2, [1.0], steps=5, device="cpu", out=tmp_path)
    assert SW.CUDA_NOTICE in run.notices and "--device cpu" in SW.CUDA_NOTICE
    monkeypatch.undo()
    assert SW.CUDA_NOTICE not in run_sweep("shallow", 2, [1.0], steps=5, device="cpu", out=tmp_path / "b").notices


def test_an_lr_whose_update_overflows_float32_marks_its_members_diverged_and_the_rest_trains():
    """As a single run reports divergence (exit 7) at such an lr, the sweep counts its members as
    diverged; the other lrs of the same sweep are unaffected (compared with their single runs)."""
    data = _toy("binary")
    arch = Arch("toy", (3, 4, 1), activation="relu", task="binary", features=("a", "b", "c"), scale_input=True)
    result = sweep(arch, [0, 1], [1e38, 0.01], steps=40, device="cpu", data=data, optimizer="adam", min_accuracy=0.5)
    by_lr = {lr: [m for m in result.members if m.lr == lr] for lr in (1e38, 0.01)}
    assert all(m.diverged and not m.converged and math.isnan(m.final_loss) for m in by_lr[1e38])
    for m in by_lr[0.01]:
        single = train(TrainConfig(arch, seed=m.seed, lr=0.01, steps=40, device="cpu", optimizer="adam"), data=data)
        assert not m.diverged and m.final_loss == pytest.approx(single.final_loss, rel=1e-4)
    doc = json.loads(json.dumps(result.as_dict(), allow_nan=False))  # strict JSON: the NaN loss is null
    assert any(m["final_loss"] is None and m["diverged"] for m in doc["members"])
