"""The peer `bench --tabular` measures ours against: the scikit-learn script a user writes for a raw table
(numbers with missing values, text categories, a date column, an id-like name column), exported by
skl2onnx and scored by onnxruntime.

    python peer_tabular.py fit TRAIN_FILE TARGET TASK MODEL_OUT CONFIG_JSON
    python peer_tabular.py score MODEL INPUT OUTPUT.parquet

`fit` reads TRAIN_FILE (.csv, or .json: an array of row objects), keeps every row with a target, drops
text columns with more than min(50, 10% of rows) distinct values (ids, names), turns each date column
into year, month, day and day of the week by hand, fits Pipeline(ColumnTransformer(median imputer + scaler for
numbers, most-frequent imputer + one-hot for text), MLPClassifier / MLPRegressor) with CONFIG_JSON's
hidden sizes, optimizer, learning rate, steps, batch size and seed (the budget of our recipe), and
writes MODEL_OUT: ONNX by skl2onnx (or, without skl2onnx, the pickled pipeline, said in the report).
`score` reads INPUT the same way, scores it through that file and writes `label` (classification, with
one `p_<class>` column per class) or `value` (regression) as Parquet.

Each mode prints one JSON line on stdout: what it kept and its timings (seconds, after its imports).

What the user wrote is the code between the `# user: begin` and `# user: end` markers (the rest is the
benchmark's plumbing: arguments, timings, the report); `bench --tabular` counts its lines, blank lines and
comments left out, and within them the lines marked `# dates` (date handling by hand), `# fillna`
(skl2onnx takes no missing string: the user fills them with "" and imputes "" instead) and `# target`
(the regression target scaled by hand: no skl2onnx converter for TransformedTargetRegressor).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd

# user: begin (read and prepare, shared by the training and the scoring script)
PARTS = ("year", "month", "day", "day_of_week")  # dates


def read(path: str) -> pd.DataFrame:
    return pd.read_json(path) if path.endswith(".json") else pd.read_csv(path)  # CSV: "NA", "" are missing


def is_date(col: pd.Series) -> bool:  # dates
    parsed = pd.to_datetime(col, errors="coerce", format="mixed")  # dates
    return bool(col.notna().any() and parsed.notna().sum() == col.notna().sum())  # dates


def add_dates(df: pd.DataFrame, dates: list[str]) -> pd.DataFrame:  # dates
    for col in dates:  # dates
        when = pd.to_datetime(df.pop(col), errors="coerce", format="mixed")  # dates
        for part in PARTS:  # dates
            df[f"{col}__{part}"] = getattr(when.dt, part).astype(float)  # dates
    return df  # dates


# user: end


def fit(path: str, target: str, task: str, model_out: str, config: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    # user: begin (the training script)
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df = read(path)
    df = df[df[target].notna()]
    y = df.pop(target)
    text = [c for c in df if not pd.api.types.is_numeric_dtype(df[c])]
    dates = [c for c in text if is_date(df[c])]  # dates
    dropped = [c for c in text if c not in dates and df[c].nunique() > min(50, len(df) // 10)]
    df = add_dates(df.drop(columns=dropped), dates)
    text = [c for c in text if c not in dates and c not in dropped]
    numbers = [c for c in df if c not in text]
    df[text] = df[text].astype(object).fillna("")  # fillna
    impute_text = SimpleImputer(strategy="most_frequent", missing_values="")  # fillna
    categorical = make_pipeline(impute_text, OneHotEncoder(handle_unknown="ignore"))
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    prepare = ColumnTransformer([("numbers", numeric, numbers), ("text", categorical, text)])
    mlp = (MLPRegressor if task == "regression" else MLPClassifier)(**config)
    model = Pipeline([("prepare", prepare), ("mlp", mlp)])
    if task == "regression":
        mean, std = float(y.mean()), float(y.std())  # target
        y = (y - mean) / std  # target
    # user: end
    prepare_s = time.perf_counter() - started  # imports, read, prepare
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the budget is ours, on purpose
        # user: begin
        model.fit(df, y)
        # user: end
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    try:
        # user: begin
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType

        types = [(c, FloatTensorType([None, 1])) for c in numbers] + [(c, StringTensorType([None, 1])) for c in text]
        options = {} if task == "regression" else {id(mlp): {"zipmap": False}}
        onx = to_onnx(model, initial_types=types, options=options)
        if task == "regression":
            onx.metadata_props.add(key="y", value=json.dumps([mean, std]))  # target
        with open(model_out, "wb") as f:
            f.write(onx.SerializeToString())
        # user: end
        runtime = "onnxruntime"
    except ImportError:  # no skl2onnx: the pipeline itself, pickled, is what ships
        import pickle

        with open(model_out, "wb") as f:
            pickle.dump({"model": model, "y": [mean, std] if task == "regression" else None}, f)
        runtime = "scikit-learn"
    export_s = time.perf_counter() - start
    return {
        "rows": len(df),
        "columns": len(numbers) + len(text) - 3 * len(dates),  # the data's own columns, dates once
        "kept": numbers + text,
        "dropped": dropped,
        "dates": dates,
        "prepare_s": prepare_s,
        "fit_s": fit_s,
        "export_s": export_s,
        "iterations": int(mlp.n_iter_),
        "runtime": runtime,
    }


def score(model_path: str, src: str, dst: str) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not model_path.endswith(".onnx"):
        return score_sklearn(model_path, src, dst)
    started = time.perf_counter()
    # user: begin (the scoring script)
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    # user: end
    load_s = time.perf_counter() - started
    start = time.perf_counter()
    # user: begin
    df = read(src)
    dates = sorted({i.name[: -len("__year")] for i in inputs if i.name.endswith("__year")})  # dates
    df = add_dates(df, dates)  # dates
    feeds = {
        i.name: df[[i.name]].astype(object).fillna("").to_numpy()  # fillna
        if i.type == "tensor(string)"
        else df[[i.name]].to_numpy(np.float32)
        for i in inputs
    }
    # user: end
    prepare_s = time.perf_counter() - start
    start = time.perf_counter()
    # user: begin
    outputs = session.run(None, feeds)
    # user: end
    run_s = time.perf_counter() - start
    start = time.perf_counter()
    # user: begin
    if len(outputs) == 1:  # regression: the value, in the target's units
        mean, std = json.loads(session.get_modelmeta().custom_metadata_map["y"])  # target
        table = pa.table({"value": outputs[0][:, 0] * std + mean})
    else:
        table = pa.table({"label": outputs[0]})  # classification: label, then probabilities
    pq.write_table(table, dst)
    # user: end
    return {"rows": len(df), "load_s": load_s, "prepare_s": prepare_s, "run_s": run_s,
            "write_s": time.perf_counter() - start, "runtime": "onnxruntime"}  # fmt: skip


def score_sklearn(model_path: str, src: str, dst: str) -> dict[str, Any]:
    """Without skl2onnx: the pickled pipeline's own predict on the same rows (what the user ships then)."""
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    with open(model_path, "rb") as f:
        saved = pickle.load(f)
    load_s = time.perf_counter() - started
    start = time.perf_counter()
    model = saved["model"]
    df = read(src)
    names = list(model.feature_names_in_)
    dates = sorted({n[: -len("__year")] for n in names if n.endswith("__year")})
    df = add_dates(df, dates)
    text = [c for c in names if not pd.api.types.is_numeric_dtype(df[c])]
    df[text] = df[text].astype(object).fillna("")
    prepare_s = time.perf_counter() - start
    start = time.perf_counter()
    out = model.predict(df[names])
    run_s = time.perf_counter() - start
    start = time.perf_counter()
    if saved["y"] is not None:
        mean, std = saved["y"]
        table = pa.table({"value": out * std + mean})
    else:
        table = pa.table({"label": out})
    pq.write_table(table, dst)
    return {"rows": len(df), "load_s": load_s, "prepare_s": prepare_s, "run_s": run_s,
            "write_s": time.perf_counter() - start, "runtime": "scikit-learn"}  # fmt: skip


def main(argv: list[str]) -> None:
    if argv[0] == "fit":
        report = fit(argv[1], argv[2], argv[3], argv[4], json.loads(argv[5]))
    elif argv[0] == "score":
        report = score(argv[1], argv[2], argv[3])
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}: fit or score")
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
