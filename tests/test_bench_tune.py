"""`bench --tune`: tune against Optuna driving scikit-learn's MLP, held-out metrics and trials per minute
from one run, written as JSON a parser reads back."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.bench.peer_tune import mlp_config

ROOT = Path(__file__).resolve().parents[1]


def test_the_peer_gets_the_same_budget_in_scikit_learn_s_terms():
    params = {"hidden": [16, 16], "activation": "relu", "lr": 0.01, "batch_size": 64, "optimizer": "sgd", "steps": 300}
    c = mlp_config(params, 200)
    # 200 rows in batches of 64: 4 batches an epoch, so 300 steps are 75 epochs; plain SGD as torch's
    assert c["max_iter"] == 75 and c["batch_size"] == 64 and c["momentum"] == 0.0 and c["solver"] == "sgd"
    full = mlp_config({**params, "batch_size": 0, "optimizer": "adam", "activation": "sigmoid"}, 200)
    assert full["batch_size"] == 200 and full["max_iter"] == 300 and full["activation"] == "logistic"
    assert "momentum" not in full


@pytest.mark.slow
def test_bench_tune_quick_writes_the_report(tmp_path):
    out = tmp_path / "tune.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "bench", "--tune", "--quick", "--trials", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())["tune"]
    assert doc["quick"] and doc["trials"] == 3 and [d["name"] for d in doc["datasets"]] == ["penguins"]
    d = doc["datasets"][0]
    for side in ("ours", "peer"):
        s = d[side]
        assert s["error"] is None, s["error"]
        assert s["trials"] == 3 and 0 <= s["metric"] <= 1 and math.isfinite(s["trials_per_min"])
    assert 0 <= d["default"] <= 1 and math.isfinite(d["trials_per_min_ratio"])
    assert "trials/min ours" in r.stdout


def test_trials_goes_with_tune_only():
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "bench", "--trials", "3"], capture_output=True, text=True)
    assert r.returncode == 2 and "--trials goes with --tune" in r.stderr
