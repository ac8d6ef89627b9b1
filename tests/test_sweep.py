"""The batched sweep: members against single runs, the summary against its rows, chunking, the CLI."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

import cli
from pipeline.archs import ARCHS
from pipeline.sweep import sweep
from pipeline.train import TrainConfig, train
from pipeline.validate import Gate, evaluate

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
    # wide-deep: every batched kernel gives a single run's bits except the last layer's forward (MKL's
    # gemv in the single run, bmm here, 1 ulp apart), and those ulps grow over training: seed 777 at
    # lr 1 ends 6e-4 relative apart after 3000 steps, hence 2e-3 here (docs/sweep.md).
    arch = ARCHS["wide-deep"]
    result = sweep(arch, [777], [1.0], steps=STEPS, device="cpu")
    for m in result.members:
        loss, passed = _single(arch, m.seed, 1.0, STEPS)
        assert m.final_loss == pytest.approx(loss, rel=2e-3)
        assert m.converged == passed


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


def test_export_best_publishes_the_best_pair_through_the_pipeline(tmp_path):
    """The sweep ends in a verified, published version whose training is the best member's."""
    import json as _json

    from pipeline import artifacts as A
    from tests.conftest import run_cli

    root = tmp_path / "artifacts"
    r = run_cli("sweep", "--arch", "shallow", "--seeds", "6", "--steps", "3000", "--device", "cpu",
                "--artifacts-dir", str(root), "--export-best", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = _json.loads(r.stdout)
    best = doc["summary"]["best"]
    assert doc["published_version"] == 1 and A.read_published(root, "shallow") == 1
    m = _json.loads((root / "shallow" / "v1" / "manifest.json").read_text())
    assert m["config"]["seed"] == best["seed"] and m["verify"]["passed"] is True
    assert abs(m["train"]["final_loss"] - best["final_loss"]) <= 1e-4 * best["final_loss"]
