"""The peer `bench --tune` measures `tune` against: Optuna driving scikit-learn's MLP over the same space
on the same training file, the loop a user writes.

    python peer_tune.py TRAIN_FILE TARGET TASK TRIALS SPACE_JSON MODEL_OUT

It reads and prepares TRAIN_FILE as `peer_tabular.py fit` does (rows with a target, id-like text dropped,
dates by hand, median imputer + scaler for numbers, most-frequent imputer + one-hot for text), holds out
20% of the rows (stratified for classification, seed 0) as the inner validation rows, and runs TRIALS
trials of Optuna's TPE sampler (seed 0) over SPACE_JSON (`[tune]`'s record: layers, width, activation, lr,
batch_size, optimizer, steps). A trial fits the pipeline on the inner training rows and returns the
validation loss (log loss, or the MSE of the standardized target): the objective `tune` minimizes. What
scikit-learn cannot take is said in the report: it has no gelu (left out of the choices), counts epochs
rather than steps (steps / batches per epoch, rounded up), and stops early on its own tolerance. The best
trial's settings are then fitted on every training row and exported by `peer_tabular.fit` (skl2onnx),
scored later by `peer_tabular.py score`. Prints one JSON line: the search's seconds (after imports),
trials, the best trial, notes.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_tabular as P  # noqa: E402

ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "logistic"}  # scikit-learn has no gelu


def mlp_config(params: dict[str, Any], rows: int, seed: int = 0) -> dict[str, Any]:
    """scikit-learn's MLP settings for a trial's values on `rows` rows (steps as epochs x batches)."""
    batch = rows if not params["batch_size"] else min(int(params["batch_size"]), rows)
    config = {
        "hidden_layer_sizes": list(params["hidden"]),
        "activation": ACTIVATIONS[params["activation"]],
        "solver": params["optimizer"],
        "learning_rate_init": float(params["lr"]),
        "max_iter": max(1, math.ceil(int(params["steps"]) / math.ceil(rows / batch))),
        "batch_size": batch,
        "random_state": seed,
    }
    if params["optimizer"] == "sgd":
        config["momentum"] = 0.0  # torch.optim.SGD's default: plain SGD
    return config


def search(path: str, target: str, task: str, trials: int, space: dict[str, Any], model_out: str) -> dict[str, Any]:
    started = time.perf_counter()
    # user: begin
    import optuna
    from sklearn.base import clone
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import log_loss, mean_squared_error
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df = P.read(path)
    df = df[df[target].notna()]
    y = df.pop(target)
    text = [c for c in df if not P.pd.api.types.is_numeric_dtype(df[c])]
    dates = [c for c in text if P.is_date(df[c])]
    dropped = [c for c in text if c not in dates and df[c].nunique() > min(50, len(df) // 10)]
    df = P.add_dates(df.drop(columns=dropped), dates)
    text = [c for c in text if c not in dates and c not in dropped]
    numbers = [c for c in df if c not in text]
    df[text] = df[text].astype(object).fillna("")
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent", missing_values=""), OneHotEncoder(handle_unknown="ignore")
    )
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    prepare = ColumnTransformer([("numbers", numeric, numbers), ("text", categorical, text)])
    if task == "regression":
        y = (y - y.mean()) / y.std()
    stratify = None if task == "regression" else y
    x_fit, x_val, y_fit, y_val = train_test_split(df, y, test_size=0.2, random_state=0, stratify=stratify)
    activations = [a for a in space["activation"] if a in ACTIVATIONS] or ["relu"]

    def rng(key: str) -> list[float]:
        v = space[key]
        return v if isinstance(v, list) else [v, v]

    def one(key: str) -> list[Any]:
        v = space[key]
        return v if isinstance(v, list) else [v]

    def objective(trial: optuna.Trial) -> float:
        lo, hi = rng("layers")
        layers = trial.suggest_int("layers", int(lo), int(hi))
        w_lo, w_hi = rng("width")
        if space["per_layer_width"]:
            hidden = [trial.suggest_int(f"width_{i + 1}", int(w_lo), int(w_hi), log=True) for i in range(layers)]
        else:
            hidden = [trial.suggest_int("width", int(w_lo), int(w_hi), log=True)] * layers
        params = {
            "hidden": hidden,
            "activation": trial.suggest_categorical("activation", activations),
            "lr": trial.suggest_float("lr", *rng("lr"), log=True),
            "batch_size": trial.suggest_categorical("batch_size", one("batch_size")),
            "optimizer": trial.suggest_categorical("optimizer", one("optimizer")),
            "steps": trial.suggest_int("steps", int(rng("steps")[0]), int(rng("steps")[1]), log=True),
        }
        trial.set_user_attr("params", params)
        mlp = (MLPRegressor if task == "regression" else MLPClassifier)(**mlp_config(params, len(x_fit)))
        model = Pipeline([("prepare", clone(prepare)), ("mlp", mlp)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x_fit, y_fit)
            if task == "regression":
                loss = mean_squared_error(y_val, model.predict(x_val))
            else:
                loss = log_loss(y_val, model.predict_proba(x_val), labels=model.classes_)
        if not math.isfinite(loss):
            raise ValueError(f"diverged: validation loss {loss}")
        trial.set_user_attr("epochs", [int(mlp.n_iter_), int(mlp.max_iter)])
        return float(loss)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=0))
    # user: end
    prepare_s = time.perf_counter() - started
    start = time.perf_counter()
    # user: begin
    study.optimize(objective, n_trials=trials, catch=(ValueError, ArithmeticError))
    # user: end
    search_s = time.perf_counter() - start
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial if done else None
    notes = []
    if "gelu" in space["activation"]:
        notes.append("scikit-learn has no gelu: the peer's activation choices leave it out")
    ran = [t.user_attrs["epochs"] for t in done if "epochs" in t.user_attrs]
    share = sum(a / b for a, b in ran) / len(ran) if ran else 0.0
    notes.append(
        f"steps become epochs (steps / batches per epoch, rounded up); scikit-learn stopped early at its tol: "
        f"{share:.0%} of the epoch budget ran, on average"
    )
    report: dict[str, Any] = {
        "prepare_s": prepare_s,
        "search_s": search_s,
        "trials": len(study.trials),
        "complete": len(done),
        "failed": len(study.trials) - len(done),
        "best": None
        if best is None
        else {"number": best.number, "value": best.value, "params": best.user_attrs["params"]},
        "notes": notes,
    }
    if best is not None:  # the best settings, fitted on every training row and exported as peer_tabular does
        rows = int(df.shape[0])
        fitted = P.fit(path, target, task, model_out, mlp_config(best.user_attrs["params"], rows))
        report["fit"] = {k: fitted[k] for k in ("rows", "fit_s", "export_s", "runtime")}
    return report


def main(argv: list[str]) -> None:
    report = search(argv[0], argv[1], argv[2], int(argv[3]), json.loads(argv[4]), argv[5])
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
