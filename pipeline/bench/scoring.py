"""`bench --scoring`: batch scoring a file with `predict`, against the 9-line pyarrow + onnxruntime script
(`score_script.py`) and the scikit-learn peer (`score_sklearn.py`), on the same file and model, in one run.

Each run is its own process (wall time; peak RSS from the kernel's rusage of that process), the runs
alternate, and each figure is the median of 3 (1 with --quick). The model is a recipe's binary MLP
[32, 64, 64, 1] trained and published by `all` first; the input has an `id` text column beside 32
float features. Compared:

- `predict --carry id` CSV -> CSV, and Parquet -> Parquet, against the script reading and writing the
  same formats (rows/s ratios; the targets are 0.7x or better);
- `predict` CSV -> JSON Lines, JSON and .csv.gz, and JSON Lines -> CSV (JSON out: within 2x of CSV out);
- `predict` CSV -> stdout, which reads the input twice (a validating pass first), against a file;
- where the time goes in `predict` (waiting for parsed rows, onnxruntime, formatting and writing),
  measured inside one in-process run, against the script's own phases (the limits: a whole-file
  multi-threaded parse, one onnxruntime call, one write).

Above MAX_SCRIPT_ROWS rows the script and the peer are not run (they hold the whole file in memory:
about 1 GB per million rows): that size measures `predict`'s peak memory for every streaming format.
"""

from __future__ import annotations

import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .measure import MEASURE

FEATURES = 32
HIDDEN = (64, 64)
TRAIN_ROWS = 5000
MAX_SCRIPT_ROWS = 2_000_000
CHUNK_ROWS = 1_000_000
RSS_TARGET_MB = 300
HERE = Path(__file__).resolve().parent


@dataclass
class Run:
    """One command measured `repeats` times: wall seconds and peak RSS (MB) per run."""

    label: str
    kind: str  # predict, script or sklearn
    input: str
    output: str
    argv: list[str]
    seconds: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    phases: dict[str, float] | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def peak_rss_mb(self) -> float:
        return max(self.rss_mb)


@dataclass(frozen=True)
class ScoringReport:
    rows: int
    features: int
    repeats: int
    sizes_mb: dict[str, float]
    runs: list[dict[str, Any]]
    ratios: dict[str, float]
    phases: dict[str, dict[str, float]]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _measure(argv: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stderr) of one Python program (argv[0] is the interpreter) run
    under `bench.MEASURE`, which reports its own VmHWM (the kernel's rusage of a child carries the
    parent's peak across exec); a failure is a RuntimeError."""
    start = time.perf_counter()
    r = subprocess.run([argv[0], "-c", MEASURE, *argv[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    err = r.stderr.decode("utf-8", "replace")
    line = [x for x in err.splitlines() if x.startswith("MEASURE ")]
    if r.returncode != 0 or not line or line[-1].split()[1] != "0":
        raise RuntimeError(f"{' '.join(argv[1:4])} failed (exit {r.returncode}): {err.strip()[-400:]}")
    return seconds, int(line[-1].split()[3]) / 1024, err


# ---------------------------------------------------------------------------------------------
# The model and the files


def _features() -> list[str]:
    return [f"f{i}" for i in range(FEATURES)]


def _train_model(cli_path: Path, root: Path) -> tuple[Path, Path]:
    """A recipe trained and published by `all` (the recipe file, its model.onnx), and the peer's model
    (scikit-learn's MLPClassifier with the same hidden sizes, fitted on the same rows) pickled."""
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.normal(size=(TRAIN_ROWS, FEATURES))
    y = (x[:, :4].sum(axis=1) > 0).astype(int)
    lines = [",".join(_features() + ["label"])] + [",".join(f"{v:.6f}" for v in row) + f",{c}" for row, c in zip(x, y)]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    recipe = root / "scoring.toml"
    recipe.write_text(
        'name = "scoring"\n[model]\nhidden = [64, 64]\nactivation = "relu"\n'
        '[data]\npath = "train.csv"\ntarget = "label"\n'
        '[train]\noptimizer = "adam"\nlr = 0.01\nsteps = 200\n[gate]\nmin_accuracy = 0.8\n'
    )
    _measure([sys.executable, str(cli_path), "all", "--recipe", str(recipe), "--artifacts-dir", str(root / "art")])
    onnx = next((root / "art" / "scoring").glob("v*/model.onnx"))
    from sklearn.neural_network import MLPClassifier

    peer = MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer.fit(x, y)
    with open(root / "peer.pickle", "wb") as f:
        pickle.dump(peer, f)
    return recipe, onnx


def _write_inputs(root: Path, rows: int, jsonl: bool) -> dict[str, Path]:
    """big.csv, big.parquet (one row group per million rows) and, when asked, big.jsonl: `rows` rows of
    an `id` and FEATURES floats, written a million rows at a time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    paths = {"csv": root / "big.csv", "parquet": root / "big.parquet"}
    if jsonl:
        paths["jsonl"] = root / "big.jsonl"
    csv_writer = parquet_writer = None
    jsonl_file = paths["jsonl"].open("wb") if jsonl else None
    try:
        for start in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - start)
            ids = pc.binary_join_element_wise("id-", pc.cast(pa.array(np.arange(start, start + n)), pa.string()), "")
            cols = {"id": ids} | {f: pa.array(rng.normal(size=n).astype(np.float32)) for f in _features()}
            table = pa.table(cols)
            if csv_writer is None:
                csv_writer = pacsv.CSVWriter(paths["csv"], table.schema)
                parquet_writer = pq.ParquetWriter(paths["parquet"], table.schema)
            csv_writer.write_table(table)
            assert parquet_writer is not None
            parquet_writer.write_table(table, row_group_size=CHUNK_ROWS)
            if jsonl_file is not None:
                parts: list[Any] = ['{"id": "', ids, '"']
                for f in _features():
                    parts += [f', "{f}": ', pc.cast(table.column(f), pa.string())]
                line = pc.binary_join_element_wise(*parts, "}\n", "")
                jsonl_file.write(b"".join(s.encode() for s in line.to_pylist()))
    finally:
        if csv_writer is not None:
            csv_writer.close()
        if parquet_writer is not None:
            parquet_writer.close()
        if jsonl_file is not None:
            jsonl_file.close()
    return paths


# ---------------------------------------------------------------------------------------------
# The runs


def _runs(cli_path: Path, root: Path, recipe: Path, onnx: Path, inputs: dict[str, Path], scripts: bool) -> list[Run]:
    out = root / "out"
    out.mkdir(exist_ok=True)

    def ours(src: str, dst: str) -> Run:
        argv = [sys.executable, str(cli_path), "predict", "--recipe", str(recipe), "--artifacts-dir",
                str(root / "art"), "--input", str(inputs[src]), "--carry", "id", "--output",
                str(out / f"ours-{src}.{dst}")]  # fmt: skip
        return Run(f"predict {src} -> {dst}", "predict", src, dst, argv)

    runs = [ours("csv", "csv"), ours("parquet", "parquet")]
    if scripts:
        cols = ["id", *_features()]
        for fmt in ("csv", "parquet"):
            argv = [sys.executable, str(HERE / "score_script.py"), fmt, str(onnx), str(inputs[fmt]),
                    str(out / f"script.{fmt}"), *cols]  # fmt: skip
            runs.append(Run(f"script  {fmt} -> {fmt}", "script", fmt, fmt, argv))
        argv = [sys.executable, str(HERE / "score_sklearn.py"), str(root / "peer.pickle"), str(inputs["csv"]),
                str(out / "sklearn.csv"), *cols]  # fmt: skip
        runs.append(Run("sklearn csv -> csv", "sklearn", "csv", "csv", argv))
    runs += [ours("csv", "jsonl"), ours("csv", "json"), ours("csv", "csv.gz")]
    # stdout cannot be taken back: every row is checked in a first pass, then predicted in a second
    argv = [*ours("csv", "csv").argv[:-2], "--format", "csv"]
    runs.append(Run("predict csv -> stdout", "predict", "csv", "stdout", argv))
    if "jsonl" in inputs:
        runs.append(ours("jsonl", "csv"))
    return runs


def _phases(root: Path, inputs: dict[str, Path], fmt: str) -> dict[str, float]:
    """`predict`'s own breakdown of one run (in this process): seconds waiting for parsed rows,
    in onnxruntime, and formatting and writing."""
    from ..serving import predict as P
    from ..serving.inputs import open_input

    predictor = P.Predictor(P.resolve_model(root / "art", "scoring", None), "cpu", spin=False)
    source = open_input(predictor.spec, path=inputs[fmt], carry=("id",))
    phases: dict[str, float] = {}
    start = time.perf_counter()
    with open(root / "out" / f"phases.{fmt}", "wb") as f:
        P.write_predictions(f, fmt, predictor, source, phases=phases)
    phases["total"] = time.perf_counter() - start
    return phases


def bench_scoring(cli_path: Path, rows: int = 1_000_000, quick: bool = False) -> ScoringReport:
    repeats = 1 if quick else 3
    scripts = rows <= MAX_SCRIPT_ROWS
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="xorship-scoring-") as tmp:
        root = Path(tmp)
        recipe, onnx = _train_model(cli_path, root)
        inputs = _write_inputs(root, rows, jsonl=True)
        sizes = {k: round(p.stat().st_size / 1e6, 1) for k, p in inputs.items()}
        runs = _runs(cli_path, root, recipe, onnx, inputs, scripts)
        for _ in range(repeats):  # alternating: each repeat runs every command once, in turn
            for run in runs:
                seconds, rss, err = _measure(run.argv)
                run.seconds.append(seconds)
                run.rss_mb.append(rss)
                if run.kind != "predict":
                    run.phases = json.loads(next(x for x in reversed(err.splitlines()) if x.startswith("{")))
        phases = {f"predict {fmt}": _phases(root, inputs, fmt) for fmt in ("csv", "parquet")}
    by = {r.label: r for r in runs}
    csv_s = by["predict csv -> csv"].median_s
    ratios = {
        "json_out_vs_csv_out": by["predict csv -> json"].median_s / csv_s,
        "jsonl_out_vs_csv_out": by["predict csv -> jsonl"].median_s / csv_s,
        "stdout_vs_file": by["predict csv -> stdout"].median_s / csv_s,
    }
    if scripts:
        for fmt in ("csv", "parquet"):
            ratios[f"{fmt}_vs_script"] = by[f"script  {fmt} -> {fmt}"].median_s / by[f"predict {fmt} -> {fmt}"].median_s
            phases[f"script {fmt}"] = by[f"script  {fmt} -> {fmt}"].phases or {}
        ratios["csv_vs_sklearn"] = by["sklearn csv -> csv"].median_s / csv_s
        phases["sklearn csv"] = by["sklearn csv -> csv"].phases or {}
    else:
        notes.append(
            f"over {MAX_SCRIPT_ROWS:,} rows the script and scikit-learn are not run (they read the whole file:"
            " about 1 GB of memory per million rows); this size measures predict's peak memory"
        )
    notes.append("wall times include each process's start (imports, model load): about 1 s for predict")
    return ScoringReport(
        rows=rows,
        features=FEATURES,
        repeats=repeats,
        sizes_mb=sizes,
        runs=[
            {
                "label": r.label,
                "kind": r.kind,
                "input": r.input,
                "output": r.output,
                "seconds": r.seconds,
                "median_s": r.median_s,
                "rows_per_s": rows / r.median_s,
                "peak_rss_mb": r.peak_rss_mb,
            }
            for r in runs
        ],  # fmt: skip
        ratios=ratios,
        phases=phases,
        notes=notes,
    )


def scoring_table(r: ScoringReport) -> str:
    sizes = ", ".join(f"{v:,.0f} MB {k}" for k, v in r.sizes_mb.items())
    lines = [
        f"scoring {r.rows:,} rows x {r.features} features + an id ({sizes}); binary MLP [32, 64, 64, 1];"
        f" median of {r.repeats}, alternating",
        f"  {'run':<28} {'wall s':>8} {'rows/s':>12} {'peak RSS':>10}  vs",
    ]
    script = {run["input"]: run for run in r.runs if run["kind"] == "script"}
    csv_s = next(run["median_s"] for run in r.runs if run["label"] == "predict csv -> csv")
    for run in r.runs:
        vs = ""
        if run["kind"] == "predict" and run["input"] == run["output"] and run["input"] in script:
            ratio = script[run["input"]]["median_s"] / run["median_s"]
            vs = f"{ratio:.2f}x the script's rows/s (target >= 0.7x)"
        elif run["kind"] == "predict" and run["output"] in ("json", "jsonl"):
            vs = f"{run['median_s'] / csv_s:.2f}x CSV out's time (target <= 2x)"
        elif run["output"] == "stdout":
            vs = f"{run['median_s'] / csv_s:.2f}x a file's time: the validating pass"
        elif run["kind"] == "sklearn":
            vs = f"predict csv -> csv: {run['median_s'] / csv_s:.2f}x its rows/s"
        rss = f"{run['peak_rss_mb']:,.0f} MB"
        lines.append(f"  {run['label']:<28} {run['median_s']:8.2f} {run['rows_per_s']:12,.0f} {rss:>10}  {vs}")
    worst = max(run["peak_rss_mb"] for run in r.runs if run["kind"] == "predict")
    lines.append(f"  predict's peak RSS, every format: {worst:,.0f} MB (target < {RSS_TARGET_MB} MB at 10M rows)")
    lines.append(f"  where the time goes (s)      {'read':>8} {'inference':>10} {'write':>8}")
    for name, p in r.phases.items():
        if p:
            lines.append(f"  {name:<28} {p['read']:8.2f} {p['inference']:10.2f} {p['write']:8.2f}")
    lines += [f"  note: {n}" for n in r.notes]
    return "\n".join(lines)


__all__ = ["ScoringReport", "bench_scoring", "scoring_table"]
