"""`--recipe FILE` on every command that takes `--arch`, `init`, `recipes`, overrides recorded in the
manifest, data that changed since training, and data errors as one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cli

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


def _csv(folder: Path, rows: int = 240) -> Path:
    """Three string classes separable by the first two features, a third feature of noise, a text
    column first (the recipe lists its features, so the text is never read)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, 3))
    label = np.where(x[:, 0] > 0.5, "high", np.where(x[:, 1] > 0, "mid", "low"))
    path = folder / "toy.csv"
    with path.open("w") as f:
        f.write("note,a,b,c,kind\n")
        for r, k in zip(x, label):
            f.write(f"text,{r[0]:.6f},{r[1]:.6f},{r[2]:.6f},{k}\n")
    return path


RECIPE = """
name = "toy"
[model]
hidden = [16]
activation = "tanh"
[data]
path = "toy.csv"
target = "kind"
features = ["a", "b", "c"]
[train]
optimizer = "adam"
lr = 0.02
steps = 300
seed = 3
[gate]
min_accuracy = 0.6
"""


@pytest.fixture
def recipe(tmp_path) -> Path:
    _csv(tmp_path)
    path = tmp_path / "toy.toml"
    path.write_text(RECIPE)
    return path


@pytest.mark.slow
def test_every_command_takes_a_recipe(tmp_path, recipe):
    d = tmp_path / "art"
    r = invoke("train", "--recipe", recipe, "--artifacts-dir", d, "--steps", "250")
    assert r.exit_code == 0, r.output
    assert "toy: trained" in r.output and "validation rows" in r.output
    m = json.loads((d / "toy" / "candidate" / "manifest.json").read_text())
    assert m["recipe"]["train"]["steps"] == 250 and m["recipe"]["train"]["lr"] == 0.02  # the override, recorded
    assert m["model"]["task"] == "multiclass" and m["model"]["classes"] == ["high", "low", "mid"]
    assert len(m["data"]["sha256"]) == 64 and m["data"]["features"] == ["a", "b", "c"]
    assert invoke("validate", "--recipe", recipe, "--artifacts-dir", d).exit_code == 0
    r = invoke("validate", "--recipe", recipe, "--artifacts-dir", d, "--min-accuracy", "1.0")
    assert r.exit_code == 8 and "failed the gate" in r.output
    assert invoke("export", "--recipe", recipe, "--artifacts-dir", d).exit_code == 0
    assert invoke("serve-check", "--recipe", recipe, "--artifacts-dir", d, "--provider", "cpu").exit_code == 0
    r = invoke("verify", "--recipe", recipe, "--artifacts-dir", d)
    assert r.exit_code == 0, r.output
    assert "published as new version 1" in r.output
    r = invoke("versions", "--recipe", recipe, "--artifacts-dir", d, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["versions"][0]["number"] == 1
    assert invoke("publish", "--recipe", recipe, "--artifacts-dir", d, "--version", "1").exit_code == 0
    r = invoke("verify", "--recipe", recipe, "--artifacts-dir", d, "--version", "1")
    assert r.exit_code == 0, r.output
    r = invoke("ship", "--recipe", recipe, "--artifacts-dir", d, "--out", tmp_path / "triton")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "triton" / "toy" / "labels.txt").read_text().split() == ["high", "low", "mid"]
    r = invoke(
        "predict", "--recipe", recipe, "--artifacts-dir", d, "--json", "2,0,0", "-2,1,0", "-2,-1,0"
    )  # no "--" needed
    assert r.exit_code == 0, r.output
    preds = json.loads(r.stdout)["predictions"]
    assert [p["label"] for p in preds] == ["high", "mid", "low"]
    assert set(preds[0]["probabilities"]) == {"high", "low", "mid"}

    # the data changed after training: verify refuses to judge with other validation rows
    csv = tmp_path / "toy.csv"
    csv.write_text(csv.read_text().replace("text,", "text2,", 1))
    r = invoke("verify", "--recipe", recipe, "--artifacts-dir", d, "--version", "1")
    assert r.exit_code == 2 and "changed since toy was trained" in r.output


def test_arch_and_recipe_together_is_a_usage_error(recipe, tmp_path):
    r = invoke("train", "--arch", "shallow", "--recipe", recipe, "--artifacts-dir", tmp_path)
    assert r.exit_code == 2 and "not both" in r.output


def test_data_errors_are_one_line_and_write_nothing(tmp_path, recipe):
    csv = tmp_path / "toy.csv"
    lines = csv.read_text().splitlines()
    lines[5] = lines[5].replace(lines[5].split(",")[2], "oops", 1)
    csv.write_text("\n".join(lines) + "\n")
    r = invoke("all", "--recipe", recipe, "--artifacts-dir", tmp_path / "art")
    assert r.exit_code == 2
    error = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "'b'" in error[0] and "oops" in error[0]
    assert not (tmp_path / "art" / "toy").exists() or not any((tmp_path / "art" / "toy").rglob("*.onnx"))
    r = invoke("all", "--recipe", tmp_path / "missing.toml", "--artifacts-dir", tmp_path / "art")
    assert r.exit_code == 2 and "does not exist" in r.output


def test_init_writes_a_recipe_and_never_overwrites(tmp_path):
    csv = _csv(tmp_path)
    out = tmp_path / "mine.toml"
    r = invoke("init", "--data", csv, "--target", "kind", "--out", out)
    assert r.exit_code == 0, r.output
    assert "multiclass" in r.output and out.is_file()
    r = invoke("init", "--data", csv, "--target", "kind", "--out", out)
    assert r.exit_code == 2 and "--force" in r.output
    assert invoke("init", "--data", csv, "--target", "kind", "--out", out, "--force").exit_code == 0
    r = invoke("init", "--data", csv, "--target", "nope", "--out", tmp_path / "x.toml")
    assert r.exit_code == 2 and "nope" in r.output and not (tmp_path / "x.toml").exists()


def test_recipes_lists_and_shows_the_builtins():
    r = invoke("recipes")
    assert r.exit_code == 0 and r.output.splitlines()[0].startswith("shallow") and "wide-deep" in r.output
    r = invoke("recipes", "--show", "wide-deep")
    assert r.exit_code == 0 and 'init_after = ["shallow"]' in r.output
    r = invoke("recipes", "--show", "nope")
    assert r.exit_code == 2 and "unknown built-in recipe" in r.output


@pytest.mark.slow
def test_regression_recipe_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(300, 2))
    y = 100 + 30 * x[:, 0] - 10 * x[:, 1] ** 2
    path = tmp_path / "reg.csv"
    path.write_text("u,v,price\n" + "".join(f"{a:.5f},{b:.5f},{c:.4f}\n" for (a, b), c in zip(x, y)))
    (tmp_path / "reg.toml").write_text(
        'name = "reg"\n[model]\nhidden = [32]\nactivation = "gelu"\n[data]\npath = "reg.csv"\ntarget = "price"\n'
        '[train]\noptimizer = "adam"\nlr = 0.01\nsteps = 600\nbatch_size = 64\n[gate]\nmax_rmse = 10.0\n'
    )
    r = invoke("all", "--recipe", tmp_path / "reg.toml", "--artifacts-dir", tmp_path / "art", "--provider", "cpu")
    assert r.exit_code == 0, r.output
    assert "rmse" in r.output
    m = json.loads((tmp_path / "art" / "reg" / "v1" / "manifest.json").read_text())
    assert m["validation"]["rmse"] < 10 and m["validation"]["r2"] > 0.8 and m["model"]["scale_output"]
    r = invoke("predict", "--recipe", tmp_path / "reg.toml", "--artifacts-dir", tmp_path / "art", "--json", "1,0")
    value = json.loads(r.stdout)["predictions"][0]["value"]
    assert abs(value - 130) < 15  # in the target's units: the graph un-standardizes


def test_sweep_takes_any_recipe(tmp_path, recipe):
    xor3 = tmp_path / "xor3.toml"
    xor3.write_text(
        'name = "xor3"\n[model]\nhidden = [3]\nactivation = "sigmoid"\n[data]\nbuiltin = "xor"\n'
        'validation_fraction = 0.0\nstandardize = false\n[train]\noptimizer = "sgd"\nlr = 1.0\nsteps = 3000\n'
        "seed = 1\n[gate]\nmin_accuracy = 1.0\n"
    )
    out = tmp_path / "sw"
    r = invoke("sweep", "--recipe", xor3, "--seeds", "8", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["arch"] == "xor3" and doc["steps"] == 3000 and len(doc["members"]) == 8
    root = tmp_path / "artifacts"
    r = invoke("sweep", "--recipe", recipe, "--seeds", "4", "--steps", "50", "--artifacts-dir", root, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["arch"] == "toy" and doc["activation"] == "tanh" and doc["optimizer"] == "adam"
    assert doc["lrs"] == [0.02]  # no --lrs: the recipe's own lr
    assert (root / "_sweeps" / "toy" / "sweep.json").is_file() and not (root / "toy").exists()
    assert [m["seed"] for m in doc["members"]] == [0, 1, 2, 3]
    assert invoke("sweep", "--recipe", recipe, "--arch", "shallow").exit_code == 2
