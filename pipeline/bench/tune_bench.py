"""`bench --tune`: `tune` against Optuna driving scikit-learn's MLP, on the raw tables `bench --tabular`
uses (penguins, cars, seattle-weather, as their packages ship them), in one run.

Per data set, a 20% test split is carved first (seed 0, stratified by class; `tabular.split`), then, each
command in its own process, on the training file only:

- **default**: `init`, `all` on the recipe it wrote, `predict` on the test file (`tabular.run_ours`);
- **tuned**: `tune --recipe r.toml --trials N --export-best` (the default space: init writes the section
  commented out), then `predict` with the published version of the best trial;
- **peer**: `peer_tune.py`: Optuna's TPE (seed 0) over scikit-learn's MLP with the same space, N trials on
  an inner 20% split, the best refitted on every training row and exported by skl2onnx, scored by
  `peer_tabular.py score`.

Reported: each side's held-out metric (accuracy, or RMSE in the target's units), trials per minute of the
search itself (counted trials over the search's seconds, as each side measures them after its imports:
process start and data reading are left out on both sides), and their ratio. A failing command is one
line in the report, never raised.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .tabular import (
    SOURCES,
    Command,
    StepFailed,
    Table,
    TableSource,
    locate,
    run_ours,
    score,
    split,
    truth,
)

HERE = Path(__file__).resolve().parent
PEER = HERE / "peer_tune.py"
SCORE = HERE / "peer_tabular.py"
TRIALS = 30
QUICK_TRIALS = 4


@dataclass
class TuneSide:
    metric: float | None = None
    trials: int | None = None  # counted (ours) or run (peer)
    search_s: float | None = None
    best: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def trials_per_min(self) -> float | None:
        if not self.trials or not self.search_s:
            return None
        return 60.0 * self.trials / self.search_s


@dataclass
class TuneDataset:
    name: str
    task: str
    metric: str
    rows: int
    test_rows: int
    default: float | None
    default_error: str | None
    ours: TuneSide
    peer: TuneSide

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ours"]["trials_per_min"] = self.ours.trials_per_min
        d["peer"]["trials_per_min"] = self.peer.trials_per_min
        a, b = self.ours.trials_per_min, self.peer.trials_per_min
        d["trials_per_min_ratio"] = a / b if a and b else None
        return d


def _cli(cli_path: Path, *args: str) -> Command:
    import shlex

    return Command([sys.executable, str(cli_path), *args], "python cli.py " + shlex.join(args))


def run_tuned(cli_path: Path, work: Path, source: TableSource, trials: int, expected: list[Any]) -> TuneSide:
    side = TuneSide()
    try:
        name = __import__("tomllib").loads((work / "r.toml").read_text())["name"]
        _cli(cli_path, "tune", "--recipe", "r.toml", "--trials", str(trials), "--artifacts-dir", "art-tune",
             "--device", "cpu", "--export-best", "--json").run(work)  # fmt: skip
        doc = json.loads((work / "art-tune" / "_tune" / name / "tune.json").read_text())
        side.trials, side.search_s, side.best = doc["counted"], doc["search_seconds"], doc["best"]
        side.notes = [f"{k}: {v}" for k, v in sorted(doc["states"].items())]
        best = f"art-tune/_tune/{name}/best.toml"
        _cli(cli_path, "predict", "--recipe", best, "--artifacts-dir", "art-tune", "--input", f"test.{source.format}",
             "--output", "pred-tuned.parquet", "--provider", "cpu").run(work)  # fmt: skip
        side.metric = score(source.task, expected, work / "pred-tuned.parquet")
    except (StepFailed, OSError, ValueError, KeyError) as exc:
        side.error = str(exc)
    return side


def run_peer(work: Path, source: TableSource, trials: int, expected: list[Any]) -> TuneSide:
    from ..spec.tune_space import DEFAULT

    side = TuneSide()
    try:
        argv = [sys.executable, str(PEER), f"train.{source.format}", source.target, source.task, str(trials),
                json.dumps(DEFAULT.record()), "peer-tuned.onnx"]  # fmt: skip
        _, out, _ = Command(argv, f"python peer_tune.py train.{source.format} ...").run(work)
        doc = json.loads(out.strip().splitlines()[-1])
        side.trials, side.search_s, side.best, side.notes = doc["trials"], doc["search_s"], doc["best"], doc["notes"]
        if doc["failed"]:
            side.notes.append(f"{doc['failed']} trials failed")
        Command([sys.executable, str(SCORE), "score", "peer-tuned.onnx", f"test.{source.format}", "pred-peer.parquet"],
                "python peer_tabular.py score ...").run(work)  # fmt: skip
        side.metric = score(source.task, expected, work / "pred-peer.parquet")
    except (StepFailed, OSError, ValueError, KeyError) as exc:
        side.error = str(exc)
    return side


def bench_dataset(cli_path: Path, root: Path, source: TableSource, trials: int) -> TuneDataset:
    work = root / source.name
    work.mkdir()
    table = Table.read(locate(source))
    expected_all = truth(table.raw(source.target), source.task)
    train_idx, test_idx = split(expected_all, source.task, 0)
    ext = source.format
    table.write(work / f"train.{ext}", train_idx)
    table.write(work / f"test.{ext}", test_idx, drop=source.target)
    expected = [expected_all[i] for i in test_idx]
    default = run_ours(cli_path, work, source, 0, expected)
    if default.error is not None:
        side = TuneSide(error="init or all failed: " + default.error)
        return TuneDataset(source.name, source.task, source.metric, len(table.rows), len(test_idx), None,
                           default.error, side, run_peer(work, source, trials, expected))  # fmt: skip
    ours = run_tuned(cli_path, work, source, trials, expected)
    peer = run_peer(work, source, trials, expected)
    return TuneDataset(source.name, source.task, source.metric, len(table.rows), len(test_idx), default.metric,
                       None, ours, peer)  # fmt: skip


@dataclass(frozen=True)
class TuneReport:
    quick: bool
    trials: int
    datasets: list[TuneDataset]

    def as_dict(self) -> dict[str, Any]:
        return {"quick": self.quick, "trials": self.trials, "datasets": [d.as_dict() for d in self.datasets]}


def bench_tune(cli_path: Path, quick: bool = False, trials: int | None = None,
               sources: Sequence[TableSource] = SOURCES) -> TuneReport:  # fmt: skip
    import tempfile

    n = trials or (QUICK_TRIALS if quick else TRIALS)
    chosen = list(sources[:1] if quick else sources)
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        return TuneReport(quick, n, [bench_dataset(cli_path, Path(tmp), s, n) for s in chosen])


def _cell(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def tune_table(r: TuneReport) -> str:
    lines = [
        f"tune against Optuna + scikit-learn's MLP, {r.trials} trials each, default space (held-out: a 20% test split)",
        f"{'data set':<16} {'metric':<9} {'init':>7} {'tuned':>7} {'peer':>7}  {'trials/min ours':>15} {'peer':>7} {'ratio':>6}",
    ]
    for d in r.datasets:
        a, b = d.ours.trials_per_min, d.peer.trials_per_min
        ratio = a / b if a and b else None
        lines.append(
            f"{d.name:<16} {d.metric:<9} {_cell(d.default, '.4g'):>7} {_cell(d.ours.metric, '.4g'):>7} "
            f"{_cell(d.peer.metric, '.4g'):>7}  {_cell(a, '.1f'):>15} {_cell(b, '.1f'):>7} {_cell(ratio, '.2f'):>6}"
        )
        for side, s in (("ours", d.ours), ("peer", d.peer)):
            if s.error:
                lines.append(f"  {side}: failed: {s.error}")
            elif s.notes:
                lines.append(f"  {side}: {'; '.join(s.notes)}")
        if d.default_error:
            lines.append(f"  init/all: failed: {d.default_error}")
    lines.append("metric: accuracy (higher is better) or RMSE in the target's units (lower is better)")
    return "\n".join(lines)
