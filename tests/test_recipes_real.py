"""Real data end to end, as a user with a CSV does it: `init` -> `all --recipe` -> `predict --recipe`
on a CSV whose columns are shuffled (plus a column the model does not use), with `verify` passing;
and beside it the peer, scikit-learn's MLP with the same hidden sizes on the same split.

Data sets that scikit-learn ships (iris: multi-class, breast_cancer: binary with 30 features,
diabetes: regression), written to CSV in tmp_path. scikit-learn is in the `test` extra only.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # subprocess end to end: the whole suite runs it, `-m "not slow"` does not

sklearn_datasets = pytest.importorskip("sklearn.datasets")

CASES = {  # name -> (loader, target column, how classes are written)
    "iris": ("load_iris", "species"),
    "breast_cancer": ("load_breast_cancer", "diagnosis"),
    "diabetes": ("load_diabetes", "progression"),
}


def _write_csv(name: str, folder: Path) -> tuple[Path, str]:
    loader, target = CASES[name]
    bunch = getattr(sklearn_datasets, loader)()
    cols = [c.replace(" ", "_").replace("(", "").replace(")", "") for c in bunch.feature_names]
    if name == "iris":
        y = [str(bunch.target_names[i]) for i in bunch.target]  # string classes
    elif name == "breast_cancer":
        y = [str(bunch.target_names[i]) for i in bunch.target]  # "malignant" / "benign"
    else:
        y = [f"{v:.1f}" for v in bunch.target]
    path = folder / f"{name}.csv"
    with path.open("w") as f:
        f.write(",".join([*cols, target]) + "\n")
        for row, label in zip(bunch.data, y):
            f.write(",".join([*(repr(float(v)) for v in row), label]) + "\n")
    return path, target


def _peer(recipe_path: Path):
    """(our validation metric, the peer's) on the same split."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.preprocessing import StandardScaler

    from pipeline.spec.data import load_dataset
    from pipeline.spec.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    data = load_dataset(recipe)
    scaler = StandardScaler().fit(data.x_train)
    cls = MLPRegressor if data.task == "regression" else MLPClassifier
    peer = cls(hidden_layer_sizes=recipe.model.hidden, random_state=0, max_iter=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer.fit(scaler.transform(data.x_train), data.y_train)
    pred = peer.predict(scaler.transform(data.x_val))
    if data.task == "regression":
        return data, float(np.sqrt(np.mean((pred - data.y_val) ** 2)))
    return data, float(np.mean(pred == data.y_val))


@pytest.mark.parametrize("name", list(CASES))
def test_init_all_predict_against_the_peer(tmp_path, name):
    csv, target = _write_csv(name, tmp_path)
    r = run_cli("init", "--data", str(csv), "--target", target, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    recipe = tmp_path / f"{name.replace('_', '_')}.toml"
    assert recipe.is_file(), r.stdout
    art = tmp_path / "artifacts"
    r = run_cli("all", "--recipe", str(recipe), "--artifacts-dir", str(art), "--provider", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"published: {name} version 1" in r.stdout

    manifest = json.loads((art / name / "v1" / "manifest.json").read_text())
    assert manifest["verify"]["passed"] and manifest["data"]["sha256"]
    assert manifest["recipe"]["name"] == name and manifest["model"]["features"]
    data, peer = _peer(recipe)
    val = manifest["validation"]
    if data.task == "regression":
        assert val["rmse"] <= peer * 1.05, (val["rmse"], peer)
    else:
        assert val["accuracy"] >= peer - max(0.02, 1 / len(data.val_rows)) - 1e-9, (val["accuracy"], peer)

    # predict from a CSV with the columns shuffled and an extra text column the model does not use
    rng = np.random.default_rng(0)
    order = list(rng.permutation(len(data.features)))
    rows = data.x_val[:20]
    shuffled = tmp_path / "input.csv"
    with shuffled.open("w") as f:
        f.write(",".join(["note", *(data.features[i] for i in order)]) + "\n")
        for row in rows:
            f.write(",".join(["hello", *(repr(float(row[i])) for i in order)]) + "\n")
    r = run_cli("predict", "--recipe", str(recipe), "--artifacts-dir", str(art), "--input", str(shuffled), "--json")
    assert r.returncode == 0, r.stderr
    preds = json.loads(r.stdout)["predictions"]
    assert len(preds) == 20
    model = _torch_model(art / name / "v1", manifest)
    expect = model(rows)
    for p, e in zip(preds, expect):
        if data.task == "regression":
            assert p["value"] == pytest.approx(float(e[0]), rel=1e-4, abs=1e-3)
        elif data.task == "binary":
            assert p["probability"] == pytest.approx(float(e[0]), abs=1e-5)
            assert p["label"] == data.classes[int(e[0] > 0.5)]
        else:
            got = [p["probabilities"][str(c)] for c in data.classes]
            assert got == pytest.approx([float(v) for v in e], abs=1e-5)
            assert p["label"] == data.classes[int(np.argmax(e))]


def _torch_model(folder: Path, manifest: dict):
    """The published weights in torch (the independent path: safetensors + our module builder)."""
    import torch

    from pipeline.spec.archs import Arch
    from pipeline.training.model import load_model

    arch = Arch.from_record(manifest["model"], "manifest")
    model = load_model(arch, (folder / "weights.safetensors").read_bytes())

    def run(x):
        with torch.no_grad():
            return model(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()

    return run
