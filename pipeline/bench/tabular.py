"""`bench --tabular`: real tables as they come (numbers with missing values, text categories, dates, an
id-like name column), ours against the scikit-learn peer, on three data sets that ship inside pip
packages (nothing is downloaded at run time):

- palmerpenguins' `penguins.csv` (344 rows, `NA` in numbers and text; multi-class `species`);
- vega_datasets' `cars.json` (406 rows, nulls, text `Origin`, a high-cardinality `Name`, a date-like
  `Year`; regression on `Miles_per_Gallon`);
- vega_datasets' `seattle-weather.csv` (1461 rows, a `date` column; multi-class `weather`).

For each split (seeds 0..4; 1 with --quick) a 20% test split is carved first, from the rows whose target
is known (stratified by class for classification); the rest, rows with a missing target included, is
written as the training file in the data set's own format (the raw fields as they were: `NA` stays `NA`,
JSON null stays null), the test file likewise without the target column. Then, each in its own process:

- **ours**: `init` on the training file, `all` on the recipe it wrote (CPU), `predict` on the test file
  into Parquet; rows and columns from the recipe's features and the published manifest, training time
  from the manifest (the training loop) and `all`'s wall time (the whole pipeline, process included);
- **peer** (`peer_tabular.py`): the scikit-learn script a user writes (imputers, scaler, one-hot, the
  MLP with the recipe's hidden sizes, activation, optimizer, learning rate and steps), exported by
  skl2onnx and scored through onnxruntime.

Both sides' predictions are read back with pyarrow and scored against the same held-out truth (accuracy,
or RMSE in the target's units). Inference is measured once per data set (the first split): each side
scores the test file and the test rows repeated to 500,000 rows (10,000 with --quick), in its own
process; rows/s is the difference in rows over the difference in wall time, so process start and model
load cancel out and reading the file, preparing the inputs, onnxruntime and writing Parquet remain.
A failure on either side is reported per data set in one line (the command and its stderr's last line),
never raised: the benchmark is usable while a side cannot yet read a data set.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEER = HERE / "peer_tabular.py"
TEST_FRACTION = 0.2
SPLITS = 5
INFER_ROWS = 500_000  # enough that a process start (~1 s, noisy) is small beside the scoring
QUICK_INFER_ROWS = 10_000
STEP_TIMEOUT_S = 600
# The fields that mean "missing" in a CSV file: the recipes' default list (docs/recipes.md), which is
# also among pandas' defaults; a JSON null is missing too.
MISSING = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None"})
# init's documented defaults, for the peer when our init fails (below 10,000 rows; above: mini-batches)
INIT_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"hidden": [32, 32], "activation": "relu"},
    "train": {"optimizer": "adam", "lr": 0.001, "steps": 300, "batch_size": 0},
}
SKLEARN_ACTIVATION = {"relu": "relu", "tanh": "tanh", "sigmoid": "logistic"}  # gelu: none in scikit-learn


@dataclass(frozen=True)
class TableSource:
    """One data set inside a pip package: its file, under the package's folder, and what to predict."""

    name: str
    package: str
    parts: tuple[str, ...]
    target: str
    task: str  # multiclass or regression (what `init` infers for these targets)

    @property
    def format(self) -> str:
        return "json" if self.parts[-1].endswith(".json") else "csv"

    @property
    def metric(self) -> str:
        return "rmse" if self.task == "regression" else "accuracy"


SOURCES = (
    TableSource("penguins", "palmerpenguins", ("data", "penguins.csv"), "species", "multiclass"),
    TableSource("cars", "vega_datasets", ("_data", "cars.json"), "Miles_per_Gallon", "regression"),
    TableSource("seattle-weather", "vega_datasets", ("_data", "seattle-weather.csv"), "weather", "multiclass"),
)


def locate(source: TableSource) -> Path:
    """The data file inside its installed package, found from the package's folder without importing it
    (vega_datasets imports pandas on import); FileNotFoundError names the package to install."""
    spec = importlib.util.find_spec(source.package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder, *source.parts)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{'/'.join((source.package, *source.parts))} not found: pip install {source.package} (in the test extra)"
    )


# ---------------------------------------------------------------------------------------------
# The table, raw: its fields as the file has them


@dataclass(frozen=True)
class Table:
    """A data file's rows as it has them: CSV rows as lists of field strings, JSON rows as objects."""

    format: str  # csv or json
    columns: list[str]
    rows: list[Any]

    @classmethod
    def read(cls, path: Path) -> Table:
        if path.suffix == ".json":
            rows = json.loads(path.read_bytes())
            columns = list(dict.fromkeys(k for row in rows for k in row))
            return cls("json", columns, rows)
        with path.open(newline="", encoding="utf-8") as f:
            header, *body = list(csv.reader(f))
        return cls("csv", header, body)

    def raw(self, column: str) -> list[Any]:
        """One column's raw values (None for a JSON row without the key)."""
        if self.format == "json":
            return [row.get(column) for row in self.rows]
        i = self.columns.index(column)
        return [row[i] for row in self.rows]

    def write(self, path: Path, indices: Sequence[int], drop: str | None = None) -> None:
        """The rows at `indices` (in that order, repeats allowed) into `path` in the table's own format,
        without the column `drop`; the fields are written as they were read."""
        if self.format == "json":
            rows = [{k: v for k, v in self.rows[i].items() if k != drop} for i in indices]
            path.write_text(json.dumps(rows) + "\n", encoding="utf-8")
            return
        keep = [j for j, c in enumerate(self.columns) if c != drop]
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow([self.columns[j] for j in keep])
            w.writerows([self.rows[i][j] for j in keep] for i in indices)


def truth(values: Sequence[Any], task: str) -> list[str | float | None]:
    """The target's raw values as the held-out truth: None when missing (a missing-value field or a JSON
    null), a float for regression, the label's text for classification."""
    out: list[str | float | None] = []
    for v in values:
        if v is None or (isinstance(v, str) and v.strip() in MISSING) or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif task == "regression":
            out.append(float(v))
        else:
            out.append(str(v))
    return out


def split(target: Sequence[str | float | None], task: str, seed: int) -> tuple[list[int], list[int]]:
    """(training rows, test rows), in file order: TEST_FRACTION of the rows with a known target go to the
    test side, per class for classification (a class of one row stays in training); every row with a
    missing target stays in training, as the user's file has it."""
    import numpy as np

    rng = np.random.default_rng(seed)
    known = [i for i, v in enumerate(target) if v is not None]
    if task == "regression":
        groups = [known]
    else:
        by: dict[str, list[int]] = {}
        for i in known:
            by.setdefault(str(target[i]), []).append(i)
        groups = [by[k] for k in sorted(by)]
    test: set[int] = set()
    for g in groups:
        n = int(len(g) * TEST_FRACTION + 0.5) if len(g) > 1 else 0
        test.update(int(i) for i in rng.permutation(g)[:n])
    return [i for i in range(len(target)) if i not in test], sorted(test)


def score(task: str, expected: Sequence[str | float | None], predictions: Path) -> float:
    """Held-out accuracy (classification: `label` against the truth, as text) or RMSE (regression:
    `value`), from a predictions file read back with pyarrow."""
    import pyarrow.parquet as pq

    table = pq.read_table(predictions)
    if table.num_rows != len(expected):
        raise ValueError(f"{predictions.name}: {table.num_rows} predictions for {len(expected)} rows")
    if task == "regression":
        got = table.column("value").to_pylist()
        return math.sqrt(statistics.fmean((float(g) - float(str(e))) ** 2 for g, e in zip(got, expected)))
    got = table.column("label").to_pylist()
    return statistics.fmean(float(str(g) == str(e)) for g, e in zip(got, expected))


# ---------------------------------------------------------------------------------------------
# Running a command the way a user does


class StepFailed(Exception):
    """A command that failed: its message is one line, the command and its stderr's last line."""


def _last_line(stderr: str) -> str:
    """The line that says why: the last `error:` line if there is one (notes may follow it), else the
    last non-empty line (a traceback's exception)."""
    lines = [x.strip() for x in stderr.splitlines() if x.strip()]
    errors = [x for x in lines if x.lower().startswith("error")]
    return (errors or lines or [""])[-1]


def _run(argv: list[str], cwd: Path, shown: str) -> tuple[float, str, str]:
    """(wall seconds, stdout, stderr) of one command run in `cwd`; StepFailed on a non-zero exit or a
    time-out, with `shown` (the command as a user types it) and its stderr's last line."""
    start = time.perf_counter()
    try:
        r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{shown}: timed out after {STEP_TIMEOUT_S} s") from None
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise StepFailed(f"{shown}: {_last_line(r.stderr) or f'exit {r.returncode}'} (exit {r.returncode})")
    return seconds, r.stdout, r.stderr


@dataclass(frozen=True)
class Command:
    """A command, as run (argv, in its folder) and as shown (what the user types)."""

    argv: list[str]
    shown: str

    def run(self, cwd: Path) -> tuple[float, str, str]:
        return _run(self.argv, cwd, self.shown)


def _ours(cli_path: Path, *args: str) -> Command:
    return Command([sys.executable, str(cli_path), *args], "python cli.py " + shlex.join(args))


def _peer(*args: str) -> Command:
    return Command([sys.executable, str(PEER), *args], "python peer_tabular.py " + shlex.join(args))


# ---------------------------------------------------------------------------------------------
# One split, each side


@dataclass
class SplitResult:
    """One side on one split. rows: the rows the side kept (ours: the manifest's, training and validation;
    peer: the rows with a target); fit_rows: those the optimizer saw (ours holds out a validation share
    for the gate); columns: the data's columns used as inputs (a date once)."""

    seed: int
    metric: float | None = None
    rows: int | None = None
    fit_rows: int | None = None
    columns: int | None = None
    kept: list[str] = field(default_factory=list)
    train_s: float | None = None  # ours: the training loop (manifest); peer: fit()
    wall_s: float | None = None  # ours: `all`'s process; peer: the fitting script's process
    epochs: list[int] | None = None  # peer: epochs run, of the budget's (scikit-learn stops on its tol)
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def _recipe(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def _manifest(artifacts: Path, name: str) -> dict[str, Any]:
    """The published version's manifest (read for figures only: the version was verified by `all`)."""
    number = (artifacts / name / "PUBLISHED").read_text().strip()
    doc: dict[str, Any] = json.loads((artifacts / name / f"v{number}" / "manifest.json").read_text())
    return doc


def run_ours(cli_path: Path, work: Path, source: TableSource, seed: int, expected: list[Any]) -> SplitResult:
    """init -> all -> predict on this split's files in `work` (train.<ext>, test.<ext>): the held-out
    metric, rows, columns and times, or the first failing command in one line."""
    ext = source.format
    result = SplitResult(seed)
    try:
        _, out, err = _ours(cli_path, "init", "--data", f"train.{ext}", "--target", source.target, "--out",
                            "r.toml").run(work)  # fmt: skip
        result.notes = [x.strip()[5:].strip() for x in (out + err).splitlines() if x.strip().startswith("note:")]
        recipe = _recipe(work / "r.toml")
        result.kept = list(recipe.get("data", {}).get("features", []))
        result.columns = len(result.kept)
        result.wall_s, _, _ = _ours(cli_path, "all", "--recipe", "r.toml", "--artifacts-dir", "art", "--device",
                                    "cpu").run(work)  # fmt: skip
        manifest = _manifest(work / "art", recipe["name"])
        data = manifest.get("data", {})
        result.rows = data.get("rows")
        result.fit_rows = data.get("train_rows")
        result.train_s = manifest.get("train", {}).get("seconds")
        predict_ours(cli_path, f"test.{ext}", "pred-ours.parquet").run(work)
        result.metric = score(source.task, expected, work / "pred-ours.parquet")
    except (StepFailed, OSError, ValueError, KeyError) as exc:
        result.error = str(exc)
    return result


def predict_ours(cli_path: Path, src: str, dst: str) -> Command:
    return _ours(cli_path, "predict", "--recipe", "r.toml", "--artifacts-dir", "art", "--input", src, "--output", dst,
                 "--provider", "cpu")  # fmt: skip


def peer_config(recipe: dict[str, Any], fit_rows: int, seed: int) -> tuple[dict[str, Any], list[str]]:
    """scikit-learn's MLP settings for the recipe's network and training budget: the same hidden sizes,
    activation, optimizer (plain SGD: no momentum, as torch.optim.SGD's default) and learning rate, and
    as many optimizer steps (epochs x batches per epoch), on `fit_rows` rows; with notes on what differs."""
    model = {**INIT_DEFAULTS["model"], **recipe.get("model", {})}
    train = {**INIT_DEFAULTS["train"], **recipe.get("train", {})}
    notes = []
    activation = SKLEARN_ACTIVATION.get(model["activation"])
    if activation is None:
        notes.append(f"scikit-learn has no {model['activation']} activation: the peer used relu")
        activation = "relu"
    batch = fit_rows if not train["batch_size"] else min(int(train["batch_size"]), fit_rows)
    per_epoch = math.ceil(fit_rows / batch)
    config = {
        "hidden_layer_sizes": [int(h) for h in model["hidden"]] or [1],
        "activation": activation,
        "solver": "sgd" if train["optimizer"] == "sgd" else "adam",
        "learning_rate_init": float(train["lr"]),
        "max_iter": max(1, math.ceil(int(train["steps"]) / per_epoch)),
        "batch_size": batch,
        "random_state": seed,
    }
    if config["solver"] == "sgd":
        config["momentum"] = 0.0
    return config, notes


def run_peer(work: Path, source: TableSource, seed: int, expected: list[Any], fit_rows: int) -> SplitResult:
    """The peer's fitting script on train.<ext>, then its scoring script on test.<ext>, with the recipe our
    init wrote in `work` (or init's documented defaults when there is none)."""
    ext = source.format
    result = SplitResult(seed)
    try:
        recipe_path = work / "r.toml"
        recipe = _recipe(recipe_path) if recipe_path.exists() else {}
        if not recipe:
            result.notes.append("our init wrote no recipe: the peer used init's documented defaults")
        config, notes = peer_config(recipe, fit_rows, seed)
        result.notes += notes
        model = "peer.onnx"
        wall, out, _ = _peer("fit", f"train.{ext}", source.target, source.task, model, json.dumps(config)).run(work)
        fitted = json.loads(out.strip().splitlines()[-1])
        result.wall_s, result.train_s = wall, fitted["fit_s"]
        result.rows = result.fit_rows = fitted["rows"]
        result.columns, result.kept = fitted["columns"], fitted["kept"]
        if fitted["dropped"]:
            dropped = ", ".join(fitted["dropped"])
            result.notes.append(f"dropped as id-like text (more than min(50, 10% rows) values): {dropped}")
        if fitted["dates"]:
            result.notes.append(f"dates by hand (year, month, day, day of week): {', '.join(fitted['dates'])}")
        if fitted["runtime"] != "onnxruntime":
            result.notes.append("skl2onnx is not installed: the peer's figures are scikit-learn's own predict")
        result.epochs = [fitted["iterations"], config["max_iter"]]
        _peer("score", model, f"test.{ext}", "pred-peer.parquet").run(work)
        result.metric = score(source.task, expected, work / "pred-peer.parquet")
    except (StepFailed, OSError, ValueError, KeyError) as exc:
        result.error = str(exc)
    return result


def measure_inference(commands: dict[str, tuple[Command, Command]], work: Path, small: int, big: int,
                      repeats: int) -> tuple[dict[str, dict[str, float | None]], dict[str, str]]:  # fmt: skip
    """Per side: its scoring command on the small (test) and the big (repeated) file, alternating sides,
    `repeats` times; rows/s = (big - small rows) / (median big - median small seconds): what remains is
    reading, preparing, onnxruntime and writing (process start and model load cancel out). A side whose
    command fails has no figures: its failure, in one line, instead."""
    seconds: dict[str, tuple[list[float], list[float]]] = {side: ([], []) for side in commands}
    failed: dict[str, str] = {}
    for _ in range(repeats):
        for side, (on_small, on_big) in commands.items():
            if side in failed:
                continue
            try:
                seconds[side][0].append(on_small.run(work)[0])
                seconds[side][1].append(on_big.run(work)[0])
            except StepFailed as exc:
                failed[side] = str(exc)
    out: dict[str, dict[str, float | None]] = {}
    for side, (s, b) in seconds.items():
        if side in failed or not s:
            continue
        t_small, t_big = statistics.median(s), statistics.median(b)
        out[side] = {
            "rows": big,
            "small_s": t_small,
            "big_s": t_big,
            # None: the difference drowned in the process's start (too few rows: --quick)
            "rows_per_s": (big - small) / (t_big - t_small) if t_big > t_small else None,
            "wall_rows_per_s": big / t_big,  # with the process's start and the model's load
        }
    return out, failed


# ---------------------------------------------------------------------------------------------
# Per data set: the splits, the means, the ratios


@dataclass
class SideSummary:
    """One side on one data set: over its successful splits, the mean metric and the median times (the
    machine's other work shows in a time, not in a metric); each split as it went; the first split's
    notes (each split's are in `splits`)."""

    side: str
    metric: float | None
    ok_splits: int
    rows: int | None
    fit_rows: int | None
    columns: int | None
    kept: list[str]
    train_s: float | None
    wall_s: float | None
    infer_rows_per_s: float | None
    infer_wall_rows_per_s: float | None
    infer: dict[str, float | None] | None  # the inference measurement: rows, small_s, big_s (medians)
    wrote: str
    error: str | None
    notes: list[str]
    splits: list[dict[str, Any]]


@dataclass
class DatasetResult:
    name: str
    file: str
    format: str
    target: str
    task: str
    metric: str  # accuracy (higher is better) or rmse (lower is better)
    rows: int
    test_rows: int
    ours: SideSummary | None
    peer: SideSummary | None
    ratios: dict[str, float | None]  # ours / peer
    error: str | None = None


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _summary(side: str, splits: list[SplitResult], infer: dict[str, float | None] | None, wrote: str) -> SideSummary:
    ok = [s for s in splits if s.error is None]
    first = ok[0] if ok else (splits[0] if splits else SplitResult(0))
    error = next((s.error for s in splits if s.error is not None), None)
    notes = list(splits[0].notes) if splits else []
    stopped = [s.epochs for s in ok if s.epochs is not None and s.epochs[0] < s.epochs[1]]
    if stopped:
        done = sorted(e[0] for e in stopped)
        after = f"{done[0]}" if done[0] == done[-1] else f"{done[0]}-{done[-1]}"
        notes.append(f"scikit-learn stopped on its tol on {len(stopped)} of {len(ok)} splits, after {after} of"
                     f" {stopped[0][1]} epochs")  # fmt: skip
    return SideSummary(
        side=side, metric=_mean([s.metric for s in ok]), ok_splits=len(ok), rows=first.rows,
        fit_rows=first.fit_rows, columns=first.columns, kept=first.kept, train_s=_median([s.train_s for s in ok]),
        wall_s=_median([s.wall_s for s in ok]), infer_rows_per_s=infer["rows_per_s"] if infer else None,
        infer_wall_rows_per_s=infer["wall_rows_per_s"] if infer else None, infer=infer, wrote=wrote, error=error,
        notes=notes, splits=[asdict(s) for s in splits],
    )  # fmt: skip


def peer_lines(source: TableSource | None = None, dates: bool = True) -> dict[str, int]:
    """The lines the peer's user wrote: code lines (no blank lines, no comments) between the `# user:
    begin` and `# user: end` markers of peer_tabular.py, and among them the hand-written dates, the
    fillna work-around and the target scaling; for a data set, only the parts it needs (no target
    scaling for classification, no date lines without a date column)."""
    counts = {"lines": 0, "dates": 0, "fillna": 0, "target": 0}
    inside = False
    for line in PEER.read_text().splitlines():
        s = line.strip()
        if s.startswith("# user: begin"):
            inside = True
        elif s.startswith("# user: end"):
            inside = False
        elif inside and s and not s.startswith("#"):
            counts["lines"] += 1
            for tag in ("dates", "fillna", "target"):
                counts[tag] += f"# {tag}" in s
    if source is not None:
        for tag, needed in (("dates", dates), ("target", source.task == "regression")):
            if not needed:
                counts["lines"] -= counts[tag]
                counts[tag] = 0
    return counts


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return a / b


def bench_dataset(cli_path: Path, root: Path, source: TableSource, seeds: Sequence[int], infer_rows: int,
                  repeats: int) -> DatasetResult:  # fmt: skip
    """Every split of one data set, both sides, then inference on the first split's files."""
    try:
        path = locate(source)
        table = Table.read(path)
        expected_all = truth(table.raw(source.target), source.task)
    except (OSError, ValueError) as exc:
        return DatasetResult(source.name, source.parts[-1], source.format, source.target, source.task,
                             source.metric, 0, 0, None, None, {}, error=str(exc))  # fmt: skip
    ours: list[SplitResult] = []
    peer: list[SplitResult] = []
    infer: dict[str, dict[str, float | None]] = {}
    test_rows = 0
    for seed in seeds:
        work = root / f"{source.name}-{seed}"
        work.mkdir()
        train_idx, test_idx = split(expected_all, source.task, seed)
        test_rows = len(test_idx)
        ext = source.format
        table.write(work / f"train.{ext}", train_idx)
        table.write(work / f"test.{ext}", test_idx, drop=source.target)
        expected = [expected_all[i] for i in test_idx]
        ours.append(run_ours(cli_path, work, source, seed, expected))
        fit_rows = sum(expected_all[i] is not None for i in train_idx)
        peer.append(run_peer(work, source, seed, expected, fit_rows))
        if seed == seeds[0]:
            big = [test_idx[i % len(test_idx)] for i in range(infer_rows)]
            table.write(work / f"big.{ext}", big, drop=source.target)
            commands = {}
            if ours[-1].error is None:
                commands["ours"] = (predict_ours(cli_path, f"test.{ext}", "small-ours.parquet"),
                                    predict_ours(cli_path, f"big.{ext}", "big-ours.parquet"))  # fmt: skip
            if peer[-1].error is None:
                commands["peer"] = (_peer("score", "peer.onnx", f"test.{ext}", "small-peer.parquet"),
                                    _peer("score", "peer.onnx", f"big.{ext}", "big-peer.parquet"))  # fmt: skip
            infer, failed = measure_inference(commands, work, len(test_idx), infer_rows, repeats)
            for side, message in failed.items():
                (ours if side == "ours" else peer)[-1].notes.append(f"inference not measured: {message}")
    ext = source.format
    commands_ours = [
        f"python cli.py init --data train.{ext} --target {source.target}",
        "python cli.py all --recipe train.toml",
        f"python cli.py predict --recipe train.toml --input test.{ext} --output predictions.parquet",
    ]
    has_dates = any(n.startswith("dates by hand") for split_ in peer for n in split_.notes)
    lines = peer_lines(source, dates=has_dates)
    wrote_peer = (
        f"{lines['lines']} lines ({lines['dates']} dates, {lines['fillna']} fillna, {lines['target']} target scaling)"
    )
    o = _summary("ours", ours, infer.get("ours"), f"{len(commands_ours)} commands: " + "; ".join(commands_ours))
    p = _summary("peer", peer, infer.get("peer"), wrote_peer)
    both = [(a.metric, b.metric) for a, b in zip(ours, peer) if a.error is None and b.error is None]
    ratios = {  # the metric's over the splits where both sides have one
        "metric": _ratio(_mean([a for a, _ in both]), _mean([b for _, b in both])),
        "train_s": _ratio(o.train_s, p.train_s),
        "wall_s": _ratio(o.wall_s, p.wall_s),
        "infer_rows_per_s": _ratio(o.infer_rows_per_s, p.infer_rows_per_s),
    }
    return DatasetResult(source.name, path.name, source.format, source.target, source.task, source.metric,
                         len(table.rows), test_rows, o, p, ratios)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The whole benchmark


@dataclass(frozen=True)
class TabularReport:
    quick: bool
    splits: int
    infer_rows: int
    repeats: int
    peer_lines: dict[str, int]
    datasets: list[DatasetResult]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_tabular(cli_path: Path, quick: bool = False, sources: Sequence[TableSource] = SOURCES,
                  splits: int | None = None) -> TabularReport:  # fmt: skip
    """Every data set in `sources`, `splits` splits each (default 5, 1 with --quick)."""
    n = splits or (1 if quick else SPLITS)
    infer_rows = QUICK_INFER_ROWS if quick else INFER_ROWS
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="xorship-tabular-") as tmp:
        results = [bench_dataset(cli_path, Path(tmp), s, list(range(n)), infer_rows, repeats) for s in sources]
    notes = [
        "CPU on both sides (all --device cpu, predict --provider cpu; the peer: scikit-learn, onnxruntime CPU)",
        "the peer gets our recipe's network and budget: hidden sizes, activation, optimizer, lr, steps, batch",
        "ours trains on the training file less its validation share (the gate's rows); the peer on all of it",
        f"inference: the first split's test rows repeated to {infer_rows:,}, median of {repeats}; rows/s from"
        " the difference with the test file alone (no process start, no model load; read, prepare, run, write)",
        "the peer's lines are those of peer_tabular.py between its `# user:` markers (the parts a data set needs)",
    ]
    if quick:
        notes.append("--quick: few rows to score, so rows/s may read '-' (the difference drowns in process start)")
    return TabularReport(quick, n, infer_rows, repeats, peer_lines(), results, notes)


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, fmt)


def tabular_table(r: TabularReport) -> str:
    seeds = "seed 0" if r.splits == 1 else f"seeds 0-{r.splits - 1}"
    lines = [
        f"tabular data as it comes: {r.splits} held-out split(s) ({seeds}; {TEST_FRACTION:.0%} test rows carved"
        " first, by class for classification): mean metric, median times; ours / peer are ratios",
        f"  {'data set':<24} {'side':<5} {'held-out':<16} {'ok':>4} {'rows':>6} {'cols':>5} {'train s':>8}"
        f" {'wall s':>7} {'infer rows/s':>13}  what the user wrote",
    ]
    for d in r.datasets:
        title = f"{d.name} ({d.rows:,})"
        if d.error is not None:
            lines.append(f"  {title:<24} skipped: {d.error}")
            continue
        for side in (d.ours, d.peer):
            if side is None:
                continue
            name = title if side.side == "ours" else ""
            total = len(side.splits)
            if side.ok_splits == 0:
                lines.append(f"  {name:<24} {side.side:<5} FAILED ({total}/{total} splits): {side.error}")
                continue
            metric = f"{d.metric} {_cell(side.metric, '.3f')}"
            lines.append(
                f"  {name:<24} {side.side:<5} {metric:<16} {side.ok_splits}/{total:<2} {_cell(side.rows, ','):>6}"
                f" {_cell(side.columns, 'd'):>5} {_cell(side.train_s, '.2f'):>8} {_cell(side.wall_s, '.2f'):>7}"
                f" {_cell(side.infer_rows_per_s, ',.0f'):>13}  {side.wrote if side.side == 'peer' else '3 commands'}"
            )
            if side.error is not None:
                lines.append(f"  {'':<24} {'':<5} failed on a split: {side.error}")
        q = d.ratios
        better = "higher" if d.metric == "accuracy" else "lower"
        if q.get("metric") is not None:
            lines.append(
                f"  {'':<24} ours/peer: {d.metric} {_cell(q.get('metric'), '.3f')}x ({better} is better), training"
                f" time {_cell(q.get('train_s'), '.2f')}x, whole-run time {_cell(q.get('wall_s'), '.2f')}x, inference"
                f" rows/s {_cell(q.get('infer_rows_per_s'), '.2f')}x"
            )
        else:
            lines.append(f"  {'':<24} ours/peer: - (a side has no figures on this data set)")
        for side in (d.ours, d.peer):
            if side is not None:
                lines += [f"  {'':<24} {side.side}: {n}" for n in side.notes]
    lines.append(
        "  ours wrote: python cli.py init --data FILE --target COLUMN; all --recipe R; predict --recipe R --input F"
    )
    lines += [f"  note: {n}" for n in r.notes]
    return "\n".join(lines)


__all__ = ["SOURCES", "TabularReport", "bench_tabular", "locate", "split", "tabular_table"]
