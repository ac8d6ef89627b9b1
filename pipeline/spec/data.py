"""A recipe's data: its file (or the built-in XOR points) read, checked, split and summarized.

    dataset = load_dataset(recipe)          # x (float32), y, train/validation rows, training-split stats
    dataset.x_train, dataset.y_val          # the splits; dataset.record() is the manifest's summary

The file (CSV with a header, Parquet, JSON Lines or a JSON document of row objects) is read by the one
table reader, `spec.tables`, as `predict` reads it: the same rule for what a number is (so `0x10`,
`true` and non-ASCII digits are not features in training either), the same missing-value tokens (the
recipe's `[data] missing`, else `tables.DEFAULT_MISSING`; a text target follows the same rule). Every
problem with the data is a `DataError` (exit 2) with one line naming the file and, where it applies,
the column and the first bad data row (1-based, the header not counted) with its line in the file.
Torch-free.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import tables as T
from .archs import TASKS, XOR_FEATURES, XOR_X, XOR_Y, Label
from .encoding import (
    CATEGORY,
    DATE,
    DATE_PATTERN,
    ENCODED,
    NUMBER,
    TIMESTAMP,
    Encoding,
    EncodingProblem,
    Raw,
    RawColumn,
    fit_encoding,
)
from .limits import FLOAT32_MAX, WIDE_FACTOR
from .numbers import MIXED, first_line_kind
from .numbers import is_number as _is_number
from .recipe import DataSpec, Recipe, name_problem
from .tables import DataError

MAX_INFERRED_CLASSES = 20  # an integer target with more distinct values is inferred as regression
HASH_BLOCK = 1 << 20
BUILTIN_XOR = "builtin:xor"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FeatureStats:
    """Per feature, over the training rows (float64 arithmetic; std is the population std, ddof=0)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    min: tuple[float, ...]
    max: tuple[float, ...]

    def record(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std), "min": list(self.min), "max": list(self.max)}


@dataclass(frozen=True, eq=False)
class Columns:
    """A data file read and checked, before the split: what `load_dataset` and `init` share."""

    source: str  # resolved absolute path, or "builtin:xor"
    sha256: str | None
    features: tuple[str, ...]
    target: str
    task: str
    classes: tuple[Label, ...]
    x: np.ndarray | None  # (rows, n_features) float32: data with no encoding (the XOR points)
    y: np.ndarray  # (rows,) int64 class index, or float32 values (regression)
    where: str  # how messages name the file
    raw: tuple[RawColumn, ...] = ()  # a file's features as read (numbers with NaN, text, dates): encoded later
    dropped_rows: int = 0  # rows left out because their target is missing

    @property
    def notes(self) -> tuple[str, ...]:
        """What reading decided that a user should hear: rows left out, stray values read as missing."""
        rows = (
            (f"{self.dropped_rows} rows left out: their target {self.target!r} is missing",)
            if self.dropped_rows
            else ()
        )
        return rows + tuple(c.note for c in self.raw if c.note)

    @property
    def rows(self) -> int:
        return int(len(self.y))


@dataclass(frozen=True, eq=False)
class Dataset:
    """The data a recipe trains and is gated on."""

    source: str
    sha256: str | None
    features: tuple[str, ...]
    target: str
    task: str
    classes: tuple[Label, ...]
    x: np.ndarray
    y: np.ndarray
    train_rows: np.ndarray  # int64, sorted
    val_rows: np.ndarray  # int64, sorted; train_rows when validation_fraction is 0
    stats: FeatureStats
    target_mean: float | None
    target_std: float | None
    seconds: float
    encoding: Encoding | None = None  # raw columns -> x (fitted on the training rows); None: x is raw
    raw: tuple[RawColumn, ...] = ()
    dropped_rows: int = 0  # rows left out because their target is missing

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def encoded_names(self) -> tuple[str, ...]:
        return self.encoding.names if self.encoding is not None else self.features

    def raw_rows(self, rows: np.ndarray | None = None) -> Raw:
        """The rows (all, or `rows`) as the ONNX file takes them: the float32 matrix of raw features
        (NaN = missing), or one array per column (float32, or str with "" for missing); the very x for
        data with no encoding."""
        if self.encoding is None:
            return self.x if rows is None else self.x[rows]
        cols = {c.name: c.graph_values() if rows is None else c.graph_values()[rows] for c in self.raw}
        if self.encoding.per_column:
            return cols
        return np.ascontiguousarray(np.stack([cols[n] for n in self.features], axis=1), dtype=np.float32)

    @property
    def x_train(self) -> np.ndarray:
        return self._take(self.x, self.train_rows)

    @property
    def y_train(self) -> np.ndarray:
        return self._take(self.y, self.train_rows)

    @property
    def x_val(self) -> np.ndarray:
        return self._take(self.x, self.val_rows)

    @property
    def y_val(self) -> np.ndarray:
        return self._take(self.y, self.val_rows)

    @property
    def gate_rows(self) -> str:
        """What the gate is judged on, as messages say it: the XOR points, the training rows (a
        validation fraction of 0) or the validation rows."""
        if self.source == BUILTIN_XOR:
            return "XOR points"
        same = self.val_rows.shape == self.train_rows.shape and np.array_equal(self.val_rows, self.train_rows)
        return "training rows" if same else "validation rows"

    def _take(self, a: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return a if len(rows) == self.rows else a[rows]

    def record(self) -> dict[str, Any]:
        """A JSON-able summary (the manifest's `data` section)."""
        return {
            "source": self.source,
            "sha256": self.sha256,
            "rows": self.rows,
            "train_rows": len(self.train_rows),
            "val_rows": len(self.val_rows),
            "features": list(self.features),
            "target": self.target,
            "task": self.task,
            "classes": list(self.classes),
            "stats": self.stats.record(),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "dropped_rows": self.dropped_rows,
        } | ({"encoding": self.encoding.record()} if self.encoding is not None else {})


# ---------------------------------------------------------------------------------------------
# Entry points


def load_dataset(recipe: Recipe, on_progress: Progress | None = None, on_notice: Progress | None = None) -> Dataset:
    """Read, check and split a recipe's data."""
    start = time.perf_counter()
    return make_dataset(recipe_columns(recipe, on_progress, on_notice), recipe.data, on_notice, start=start)


def recipe_columns(recipe: Recipe, on_progress: Progress | None = None, on_notice: Progress | None = None) -> Columns:
    """A recipe's data read and checked, before the split (the built-in XOR points for builtin data)."""
    spec = recipe.data
    path = recipe.data_path
    if path is None:
        return xor_columns()
    assert spec.target is not None  # the recipe requires it with a path
    cols = read_columns(path, spec.target, spec.features, spec.task, on_progress, spec.missing, spec.categorical)
    if on_notice is not None:
        for note in cols.notes:
            on_notice(note)
    return cols


def in_memory_dataset(
    features: Sequence[str],
    task: str,
    classes: Sequence[Label],
    x: np.ndarray,
    y: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    source: str = "memory",
) -> Dataset:
    """A Dataset from arrays already in memory (tools and tests), with the statistics `load_dataset`
    would compute from the training rows."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    train_rows, val_rows = np.asarray(train_rows, np.int64), np.asarray(val_rows, np.int64)
    regression = task == "regression"
    target = np.asarray(y, np.float64)[train_rows] if regression else None
    return Dataset(
        source=source, sha256=None, features=tuple(features), target="y", task=task,
        classes=tuple(classes) if not regression else (), x=x,
        y=np.asarray(y, np.float32 if regression else np.int64), train_rows=train_rows, val_rows=val_rows,
        stats=_stats(x[train_rows]), target_mean=float(target.mean()) if target is not None else None,
        target_std=float(target.std()) if target is not None else None, seconds=0.0,
    )  # fmt: skip


def xor_dataset() -> Dataset:
    """The built-in XOR points as a Dataset: every point is a training and a validation row."""
    from .recipe import builtin_recipe

    return make_dataset(xor_columns(), builtin_recipe("shallow").data)


def xor_columns() -> Columns:
    """The tutorial's four XOR points."""
    return Columns(
        source=BUILTIN_XOR,
        sha256=None,
        features=XOR_FEATURES,
        target="y",
        task="binary",
        classes=(0, 1),
        x=np.asarray(XOR_X, dtype=np.float32),
        y=np.asarray(XOR_Y, dtype=np.int64),
        where=BUILTIN_XOR,
    )


def make_dataset(
    cols: Columns,
    spec: DataSpec,
    on_notice: Progress | None = None,
    start: float | None = None,
    training_rows: str = "the training rows",
) -> Dataset:
    """Split `cols` as `spec` says and summarize the training rows (checks what needs the split;
    `training_rows` is how its messages name them)."""
    start = time.perf_counter() if start is None else start
    classifier = cols.task != "regression"
    if cols.source == BUILTIN_XOR:
        train = val = np.arange(cols.rows, dtype=np.int64)
    else:
        train, val = split_rows(cols.y, cols.task, spec.validation_fraction, spec.split_seed, len(cols.classes))
        if classifier and spec.validation_fraction > 0 and on_notice is not None:
            counts = np.bincount(cols.y, minlength=len(cols.classes))
            for k in np.flatnonzero(counts == 1):
                on_notice(f"class {cols.classes[k]!r} has a single row: it is in the training split only")
    encoding = None
    if cols.x is not None:
        x = cols.x
    else:
        try:
            encoding = fit_encoding(cols.raw, train, spec.impute)
        except EncodingProblem as exc:
            raise DataError(f"{cols.where}: {exc}") from None
        x = encoding.encode({c.name: c.graph_values() for c in cols.raw})
    if encoding is not None and encoding.per_column:
        from .archs import OUTPUT_NAMES

        taken = {OUTPUT_NAMES[cols.task]: "the model's output", ENCODED: "the encoded tensor inside the model"}
        clash = next((n for n in cols.features if n in taken), None)
        if clash is not None:  # the graph takes one input per column, named as the column
            raise DataError(
                f"{cols.where}: feature {clash!r} has the name of {taken[clash]}, and the model takes each column as"
                " an input of its name; rename the column (or leave it out of [data] features)"
            )
    x_train = x if len(train) == cols.rows else x[train]
    stats = _stats(x_train)
    names = encoding.names if encoding is not None else cols.features
    plain = _plain_numbers(encoding, len(names))
    if spec.standardize:
        for j, (lo, hi) in enumerate(zip(stats.min, stats.max)):
            if lo == hi and plain[j]:
                raise DataError(
                    f"{cols.where}: feature {names[j]!r} is constant ({lo:g}) on {training_rows}, and"
                    " standardizing it would divide by zero: drop it from [data] features or set standardize = false"
                )
    if encoding is not None:
        stats = _scaling(stats, encoding)
    _check_float32_reach(names, cols.where, stats)
    target_mean = target_std = None
    if not classifier:
        y_train = cols.y if len(train) == cols.rows else cols.y[train]
        _check_float32_reach_target(cols, y_train)
        target_mean = float(np.mean(y_train, dtype=np.float64))
        target_std = float(np.std(y_train, dtype=np.float64))
        if target_std == 0:
            raise DataError(
                f"{cols.where}: target {cols.target!r} is constant ({target_mean:g}) on {training_rows};"
                " there is nothing to learn"
            )
    return Dataset(
        source=cols.source,
        sha256=cols.sha256,
        features=cols.features,
        target=cols.target,
        task=cols.task,
        classes=cols.classes,
        x=x,
        y=cols.y,
        train_rows=train,
        val_rows=val,
        stats=stats,
        target_mean=target_mean,
        target_std=target_std,
        seconds=time.perf_counter() - start,
        encoding=encoding,
        raw=cols.raw,
        dropped_rows=cols.dropped_rows,
    )


INNER_FRACTION = 0.2  # `tune`'s inner validation share of the training rows


def inner_dataset(cols: Columns, spec: DataSpec, fraction: float = INNER_FRACTION) -> Dataset:
    """What `tune` searches on: the training rows of `spec`'s split only (the gate's validation rows are
    left out altogether), split again into inner training and inner validation rows (`fraction`,
    stratified, the recipe's split seed). Everything a recipe fits (fill values, categories, scaling) is
    fitted on the inner training rows, so nothing of the inner validation rows leaks into a trial."""
    import dataclasses

    if cols.source == BUILTIN_XOR:
        raise DataError("the built-in XOR points are 4 rows: there is nothing to search on; tune a recipe with a file")
    train, _ = split_rows(cols.y, cols.task, spec.validation_fraction, spec.split_seed, len(cols.classes))
    inner_cols = dataclasses.replace(
        cols,
        x=None if cols.x is None else cols.x[train],
        y=cols.y[train],
        raw=tuple(dataclasses.replace(c, values=c.values[train]) for c in cols.raw),
    )
    if len(train) < 2:
        raise DataError(f"{cols.where}: {len(train)} training rows; tune needs at least 2 to split them again")
    inner = make_dataset(
        inner_cols, dataclasses.replace(spec, validation_fraction=fraction),
        training_rows=f"tune's inner training rows ({100 - round(100 * fraction)}% of the training rows)",
    )  # fmt: skip
    if len(inner.val_rows) == 0 or len(inner.train_rows) == 0:
        raise DataError(
            f"{cols.where}: the {len(train)} training rows leave no inner validation rows for tune to judge trials"
            " on (every class needs 2 rows or more); use more data or a smaller [data] validation_fraction"
        )
    return inner


def _plain_numbers(encoding: Encoding | None, width: int) -> list[bool]:
    """Per encoded column: whether it is a number feature's own value (a constant one is refused when
    standardizing); date parts, one-hot and indicator columns are not."""
    if encoding is None:
        return [True] * width
    return [c.kind == NUMBER and i == 0 for c in encoding.columns for i in range(c.width)]


def _scaling(stats: FeatureStats, encoding: Encoding) -> FeatureStats:
    """What the graph's standardization uses: 0/1 columns (one-hot, indicators) pass through (mean 0,
    std 1); a constant date part (every row in one year) has std 1."""
    plain = _plain_numbers(encoding, len(stats.std))
    mean = tuple(m if s else 0.0 for m, s in zip(stats.mean, encoding.scaled))
    std = tuple(d if p or (s and d > 0) else 1.0 for d, s, p in zip(stats.std, encoding.scaled, plain))
    return FeatureStats(mean, std, stats.min, stats.max)


def float32_reach(lo: float, hi: float, mean: float) -> float:
    """The largest |x - mean| float32 arithmetic meets for a column with training [lo, hi] and `mean`,
    over verify's inputs WIDE_FACTOR spans beyond that range (float64)."""
    span = hi - lo if hi > lo else max(abs(lo), 1.0)
    return max(abs(lo - WIDE_FACTOR * span), abs(hi + WIDE_FACTOR * span)) + abs(mean)


def _reach_error(where: str, what: str, names: list[tuple[str, float, float]]) -> DataError:
    shown = "; ".join(f"{n!r} from {lo:.4g} to {hi:.4g}" for n, lo, hi in names[:5])
    more = f" (and {len(names) - 5} more)" if len(names) > 5 else ""
    fix = "rescale the column (other units, or a log)" + (
        "" if what == "target" else " or leave it out of [data] features"
    )
    return DataError(
        f"{where}: {what} {shown}{more} spans too much for float32: standardizing it (x - mean) and "
        f"verify's inputs {WIDE_FACTOR:g} spans beyond its range would overflow float32 (±{FLOAT32_MAX:.4g}); {fix}"
    )


def _check_float32_reach(names: Sequence[str], where: str, stats: FeatureStats) -> None:
    """Refuse features whose training statistics overflow float32 in the model or in verify."""
    bad = [
        (name, lo, hi)
        for name, lo, hi, mean in zip(names, stats.min, stats.max, stats.mean)
        if not float32_reach(lo, hi, mean) <= FLOAT32_MAX
    ]
    if bad:
        raise _reach_error(where, "feature" if len(bad) == 1 else "features", bad)


def _check_float32_reach_target(cols: Columns, y_train: np.ndarray) -> None:
    """A regression target is standardized and un-standardized in float32 too."""
    if len(y_train) == 0:
        return
    lo, hi = float(np.min(y_train)), float(np.max(y_train))
    if not float32_reach(lo, hi, float(np.mean(y_train, dtype=np.float64))) <= FLOAT32_MAX:
        raise _reach_error(cols.where, "target", [(cols.target, lo, hi)])


def split_rows(
    y: np.ndarray, task: str, fraction: float, seed: int, n_classes: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train_rows, val_rows), sorted int64. Classification is stratified: per class, in class order, the
    class's rows are shuffled and round(fraction * n) of them (at least 1, at most n - 1) are held out; a
    class with a single row stays in training. Regression holds out a shuffled share (at least 1 row,
    and 1 row stays in training). fraction 0: both are every row."""
    n = len(y)
    everything = np.arange(n, dtype=np.int64)
    if fraction == 0:
        return everything, everything
    rng = np.random.default_rng(seed)
    held = np.zeros(n, dtype=bool)
    if task == "regression":
        n_val = min(max(round(fraction * n), 1), n - 1)
        held[rng.permutation(n)[:n_val]] = True
    else:
        k = max(n_classes, int(y.max()) + 1 if n else 0)
        order = np.argsort(y, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(y, minlength=k))])
        for c in range(k):
            rows = order[bounds[c] : bounds[c + 1]]
            n_c = len(rows)
            n_val = min(max(round(fraction * n_c), 1), n_c - 1) if n_c >= 2 else 0
            held[rng.permutation(rows)[:n_val]] = True
    return np.flatnonzero(~held).astype(np.int64), np.flatnonzero(held).astype(np.int64)


def infer_task(values: pa.Array | pa.ChunkedArray, where: str = "the target column") -> str:
    """binary, multiclass or regression from a target column's type and distinct values (nulls ignored)."""
    kind = _kind(values.type)
    distinct = [v for v in pc.unique(values).to_pylist() if v is not None]
    if kind in ("bool", "int", "float", "str") and len(distinct) < 2:
        shown = f" ({distinct[0]!r})" if distinct else ""
        raise DataError(f"{where} has a single value{shown}; there is nothing to predict")
    if kind == "bool":
        return "binary"
    if kind == "str":
        return "binary" if len(distinct) == 2 else "multiclass"
    if kind == "int":
        if len(distinct) == 2:
            return "binary"
        return "multiclass" if len(distinct) <= MAX_INFERRED_CLASSES else "regression"
    if kind == "float":
        return "binary" if set(distinct) == {0.0, 1.0} else "regression"
    raise DataError(f"{where} holds {values.type} values; a target must be numbers, true/false or text labels")


# ---------------------------------------------------------------------------------------------
# Reading a CSV


def read_columns(
    path: Path | str,
    target: str,
    features: Sequence[str] | None = None,
    task: str | None = None,
    on_progress: Progress | None = None,
    missing: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
) -> Columns:
    """Read and check a data file (CSV with a header, Parquet, JSON Lines, a JSON document of row
    objects): `features` (None: every column but the target, in file order) as float32, the target as
    class indices or float32 values; `task` None means inferred; `missing` the fields that mean a
    missing value (None: `tables.DEFAULT_MISSING`)."""
    path = Path(path)
    where = str(path)
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    try:
        if not path.exists():
            raise DataError(f"data file {where} does not exist")
        if not path.is_file():
            raise DataError(f"data file {where} is not a file")
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"data file {where} is not readable ({exc.strerror or exc.__class__.__name__})") from None
    if size == 0:
        raise DataError(f"data file {where} is empty")
    if on_progress is not None:
        on_progress(f"reading {path.name} ({_size(size)})")
    hasher = _Hasher(path)
    hasher.start()
    try:
        f = open_data(path, missing)
        features = _resolve(f.names, target, features, where)
        if categorical:
            unknown = [c for c in categorical if c not in features]
            if unknown:
                raise DataError(
                    f"data file {where}: [data] categorical names {unknown[0]!r}, which is not a feature"
                    f"{_suggest(unknown[0], features)}"
                )
        table = _read_features(f, features, target)
        if table.num_rows == 0:
            raise DataError(f"data file {where} has a header row but no data rows")
        loc = _Locator(f)
        keep = _target_present(table.column(target), loc)
        dropped = int(len(keep) - keep.sum())
        if dropped:
            if dropped == len(keep):
                raise DataError(f"data file {where}: the target {target!r} is missing in every row")
            loc.kept = np.flatnonzero(keep)
            table = table.filter(
                pa.Array.from_buffers(
                    pa.bool_(), len(keep), [None, pa.py_buffer(np.packbits(keep, bitorder="little").tobytes())]
                )
            )
        if on_progress is not None:
            on_progress(f"read {table.num_rows} rows of {len(features)} features and the target")
        task, classes, y = _target(table.column(target), target, task, loc)
        raw = tuple(_raw_column(table.column(n), n, n in (categorical or ()), loc) for n in features)
        del table
    except BaseException:
        hasher.join()
        raise
    digest = hasher.result()
    if task == "regression":
        if len(y) < 2:
            raise DataError(f"data file {where}: {len(y)} row is too few for regression; it needs at least 2 rows")
    elif len(y) < 2 * len(classes):
        raise DataError(
            f"data file {where}: {len(y)} rows are too few for {len(classes)} classes; a classifier needs at least 2 rows"
            f" per class ({2 * len(classes)})"
        )
    return Columns(str(path.resolve()), digest, tuple(features), target, task, classes, None, y, where, raw, dropped)


def _read_features(f: T.TableFile, features: Sequence[str], target: str) -> pa.Table:
    """Every row of the features and the target, each column's type inferred over the whole file. A
    CSV is read twice: once to infer, then its number columns again by the reader's number rule (what
    `predict` reads them by: `0x10`, which pyarrow's inference takes for 16, is not a number)."""
    table = f.read_all(numeric=(), infer=[*features, target])
    if f.fmt != T.CSV or table.num_rows == 0:
        return table
    numbers = [n for n in features if _kind(table.schema.field(n).type) in ("int", "float")]
    if not numbers:
        return table
    again = f.read_all(numeric=numbers, infer=())
    for n in numbers:
        table = table.set_column(table.schema.get_field_index(n), n, again.column(n))
    return table


def _text_missing(col: pa.ChunkedArray, tokens: Sequence[str]) -> np.ndarray:
    """Where a text column is missing: null, nothing but spaces, or a missing-value token."""
    empty = _numpy(pc.cast(pc.is_null(col), pa.int8())) == 1
    filled = pc.fill_null(col, T.text_array([""])[0]) if col.null_count else col  # a scalar made from buffers:
    empty |= _numpy(pc.utf8_length(pc.utf8_trim_whitespace(filled))) == 0  # pa.scalar("") imports pandas
    tokens = [m for m in tokens if m.strip()]
    if tokens:
        empty |= _numpy(pc.cast(pc.is_in(filled, value_set=T.text_array(tokens)), pa.int8())) == 1
    return empty


def _target_present(col: pa.ChunkedArray, loc: _Locator) -> np.ndarray:
    """Rows whose target is there (a row with a missing target is left out of training, counted)."""
    if _kind(col.type) == "str":
        return ~_text_missing(col, loc.file.missing)
    if col.null_count == 0:
        return np.ones(len(col), dtype=bool)
    return _numpy(pc.cast(pc.is_valid(col), pa.int8())) == 1


def _float_values(col: pa.ChunkedArray, name: str, loc: _Locator) -> np.ndarray:
    """A number column as float64 with NaN where missing (null); a value that is not finite (`inf`, a
    `NaN` that is not a missing-value token) or beyond float32's range is refused, naming its row."""
    values = np.array(_numpy(pc.cast(col, pa.float64())), dtype=np.float64)  # a null's slot holds any value
    present = _numpy(pc.cast(pc.is_valid(col), pa.int8())) == 1 if col.null_count else None
    if present is not None:
        values[~present] = np.nan
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite(values.astype(np.float32))
    if present is not None:
        bad &= present
    if bad.any():
        raise loc.non_finite(name, col, np.where(bad, np.inf, 0.0).astype(np.float32))
    return values


def _iso_dates(col: pa.ChunkedArray) -> tuple[str, np.ndarray]:
    """A date or timestamp column as ISO strings (None where missing), timestamps in UTC: (DATE or
    TIMESTAMP, values). A timestamp whose every value is at midnight is a date (JSON readers infer
    timestamps for dates)."""
    if pa.types.is_timestamp(col.type):
        if col.type.tz:  # its values are UTC instants: without the zone, strftime writes them in UTC
            col = pc.cast(col, pa.timestamp(col.type.unit))
        text = pc.strftime(col, format="%Y-%m-%dT%H:%M:%S")  # fractions of a second: dropped below
        values = np.array([v if v is None else v[:19] for v in text.to_pylist()], dtype=object)
        kind = TIMESTAMP if any(v is not None and not v.endswith("T00:00:00") for v in values) else DATE
        if kind == DATE:
            values = np.array([v[:10] if v is not None else None for v in values], dtype=object)
        return kind, values
    return DATE, np.array(pc.strftime(pc.cast(col, pa.date32()), format="%Y-%m-%d").to_pylist(), dtype=object)


_DATE_TEXT = re.compile(DATE_PATTERN)
DATE_SHARE = 0.9  # a text column is a date column when at least this share of its values are dates


def mostly_dates(present: Sequence[str]) -> bool:
    """A text column's rule (training and `init` alike): at least DATE_SHARE of its values are dates."""
    return bool(present) and sum(1 for v in present if _DATE_TEXT.fullmatch(v)) >= DATE_SHARE * len(present)


def mostly_numbers(present: Sequence[str]) -> bool:
    """A text column whose values are at least half numbers is a number column with stray text (named,
    with a count), not a category (training and `init` alike)."""
    return bool(present) and sum(1 for v in present if _is_number(v)) * 2 >= len(present)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _raw_column(col: pa.ChunkedArray, name: str, categorical: bool, loc: _Locator) -> RawColumn:
    """One feature as the encoder takes it, its kind from its type: numbers (and numeric codes named in
    [data] categorical), true/false and text as categories, ISO dates and timestamps as dates."""
    if pa.types.is_dictionary(col.type):  # pandas' category columns, in Parquet: their values' type decides
        col = col.cast(col.type.value_type)
    kind = _kind(col.type)
    if kind in ("int", "float") or pa.types.is_decimal(col.type):
        return RawColumn(name, CATEGORY if categorical else NUMBER, _float_values(col, name, loc))
    if kind == "bool":
        values = np.array([None if v is None else ("true" if v else "false") for v in col.to_pylist()], dtype=object)
        return RawColumn(name, CATEGORY, values, boolean=True)
    if pa.types.is_date(col.type) or pa.types.is_timestamp(col.type):
        date_kind, values = _iso_dates(col)
        return RawColumn(name, CATEGORY if categorical else date_kind, values)
    if kind == "null":
        raise DataError(f"{loc.where}: column {name!r} is empty in every row; leave it out of [data] features")
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        row = next((i for i, v in enumerate(col.to_pylist()) if v is not None and not _utf8(v)), 0)
        raise DataError(f"{loc.where}: {loc.at(row)}, column {name!r} is not UTF-8 text")
    if kind != "str":
        raise loc.not_numbers(name, col, "feature")
    missing = _text_missing(col, loc.file.missing)
    values = np.array(col.to_pylist(), dtype=object)
    values[missing] = None
    present = [v for v in values if v is not None]
    if not present:
        raise DataError(f"{loc.where}: column {name!r} is missing in every row; leave it out of [data] features")
    if not categorical:
        if mostly_dates(present):  # a date column with a few stray values: those are missing
            dates = [v for v in present if _DATE_TEXT.fullmatch(v)]
            kind = TIMESTAMP if any(len(v) > 10 for v in dates) else DATE
            stray = len(present) - len(dates)
            note = (
                f"column {name!r}: {stray} of {len(present)} values are not dates ({next(v for v in present if not _DATE_TEXT.fullmatch(v))[:30]!r}, ...):"
                " they are missing values, filled and flagged like the others"
            ) if stray else ""  # fmt: skip
            return RawColumn(name, kind, values, note=note)
        if mostly_numbers(present):  # a number column with stray text: name it, with a count
            bad = [i for i, v in enumerate(values) if v is not None and not _is_number(v)]
            more = f"; {len(bad)} values of this number column are not numbers" if len(bad) > 1 else ""
            raise DataError(
                f"{loc.where}: {loc.at(bad[0])}, column {name!r}: {values[bad[0]][:40]!r} is not a number{more}: fix"
                " them, or list the column in [data] categorical to treat every value as a category"
            )
    return RawColumn(name, CATEGORY, values)


def open_data(path: Path, missing: Sequence[str] | None = None) -> T.TableFile:
    """A data file opened by the one table reader, its column names checked: training needs names (a
    CSV header, a schema, JSON row objects), each once."""
    where = f"data file {path}"
    fmt = T.file_format(path)
    if fmt == T.NPY:
        raise DataError(f"{where}: a .npy array has no column names; give CSV, Parquet or JSON Lines")
    f = T.open_table(path, fmt, missing, where=where)
    if f.fmt == T.CSV and not f.named and first_line_kind([x.strip() for x in f.first_fields]) == MIXED:
        T.set_header(f, True)  # training's first line is its header: a name may look like a number ("2020")
    if not f.named:
        shown = ",".join(f.first_fields) if f.fmt == T.CSV else "lists of numbers"
        raise DataError(f"{where} has no header row: its first line ({shown[:60]!r}) holds only numbers"
                        if f.fmt == T.CSV else f"{where} holds {shown}, not row objects naming their columns")  # fmt: skip
    if f.fmt in (T.JSONL, T.JSON):
        f.names = T.all_names(f)  # JSON rows name their own keys: the first may lack some
    _check_header(f.names, where)
    return f


class _Hasher(threading.Thread):
    """The file's sha256, computed beside the parse (hashlib releases the GIL on large blocks)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.digest: str | None = None
        self.error: OSError | None = None

    def run(self) -> None:
        h = hashlib.sha256()
        try:
            with self.path.open("rb") as f:
                while block := f.read(HASH_BLOCK):
                    h.update(block)
            self.digest = h.hexdigest()
        except OSError as exc:
            self.error = exc

    def result(self) -> str:
        self.join()
        if self.error is not None or self.digest is None:
            reason = self.error.strerror if self.error is not None else None
            raise DataError(f"data file {self.path} is not readable ({reason or 'error'})")
        return self.digest


def _check_header(names: list[str], where: str) -> list[str]:
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise DataError(f"{where}: column name {n!r} appears twice (columns {seen[n] + 1} and {i + 1})")
        seen[n] = i
    return names


def _resolve(names: list[str], target: str, features: Sequence[str] | None, where: str) -> list[str]:
    chosen = _choose(names, target, features, where)
    for n in (*chosen, target):
        problem = name_problem(n)
        if problem:
            raise DataError(
                f"data file {where}: column {names.index(n) + 1}'s name {n!r} {problem}; rename the column in the header"
            )
    return chosen


def _choose(names: list[str], target: str, features: Sequence[str] | None, where: str) -> list[str]:
    if len(names) == 1 and target != names[0] and any(s in names[0] for s in (";", "\t", "|")):
        raise DataError(f"data file {where} seems to separate fields with ';', tabs or '|'; only commas are read")
    if target not in names:
        raise DataError(f"data file {where} has no column {target!r} (the target){_suggest(target, names)}")
    if features is None:
        chosen = [n for n in names if n != target]
        if not chosen:
            raise DataError(f"data file {where} has no feature columns: its only column is the target {target!r}")
        if "" in chosen:
            raise DataError(
                f"data file {where}: column {names.index('') + 1} has no name in the header (an index column?);"
                " name it, drop it, or list [data] features"
            )
        return chosen
    if target in features:
        raise DataError(f"data file {where}: the target {target!r} is also listed as a feature")
    for f in features:
        if f not in names:
            raise DataError(f"data file {where} has no column {f!r} (a feature){_suggest(f, names)}")
    return list(features)


# ---------------------------------------------------------------------------------------------
# Columns


def _target(
    col: pa.ChunkedArray, name: str, task: str | None, loc: _Locator
) -> tuple[str, tuple[Label, ...], np.ndarray]:
    where = loc.where
    kind = _kind(col.type)
    if kind == "null":
        raise loc.missing(name, col)
    if kind not in ("bool", "int", "float", "str"):
        raise loc.not_numbers(name, col, "target")
    if col.null_count:
        raise loc.missing(name, col)
    if kind == "str":  # the missing rule for text: a missing-value token, or nothing but spaces
        empty = _numpy(pc.utf8_length(pc.utf8_trim_whitespace(col))) == 0
        tokens = [m for m in loc.file.missing if m.strip()]
        if tokens:
            empty |= _numpy(pc.cast(pc.is_in(col, value_set=T.text_array(tokens)), pa.int8())) == 1
        if empty.any():
            raise loc.missing(name, col, int(np.argmax(empty)))
    if kind == "float":
        values = _numpy(col)
        if not np.isfinite(values).all():
            raise loc.non_finite(name, col, values)
    what = f"{where}: target {name!r}"
    found = task or infer_task(col, what)
    if task is not None:
        infer_task(col, what)  # a single value is an error whatever the task says
    if found == "regression":
        if kind not in ("int", "float"):
            raise (
                loc.text_in_numbers(name, col, "regression target")
                if kind == "str"
                else DataError(f"{what} holds true/false values; task regression needs numbers")
            )
        with np.errstate(over="ignore"):
            y32 = _numpy(col).astype(np.float32)
        if not np.isfinite(y32).all():
            raise loc.non_finite(name, col, y32)
        return found, (), y32
    value_set = _sorted_unique(col)
    classes: tuple[Label, ...] = tuple(value_set.to_pylist())
    odd = next((c for c in classes if isinstance(c, str) and any(ch in c for ch in "\r\n\x00")), None)
    if odd is not None:  # one name a line in Triton's labels.txt, and one row a line in predict's table
        raise DataError(f"{what} has a class name with a line break or NUL ({odd!r}); rename that class")
    if found == "binary" and len(classes) != 2:
        raise DataError(f"{what} has {len(classes)} distinct values ({_preview(classes)}); task binary needs exactly 2")
    if found == "multiclass" and kind == "float":
        values = _numpy(col)
        frac = values != np.round(values)
        if frac.any():
            row = int(np.argmax(frac))
            raise DataError(
                f"{what} holds non-integer numbers ({values[row]:g} at {loc.at(row)}); task multiclass needs class labels"
            )
    y = _numpy(pc.index_in(col, value_set=value_set)).astype(np.int64)
    return found, classes, y


def _sorted_unique(col: pa.ChunkedArray) -> pa.Array:
    """The distinct values, sorted: numbers numerically, text by code point (UTF-8 byte order), False < True."""
    unique = pc.drop_null(pc.unique(col))
    return pc.take(unique, pc.array_sort_indices(unique))


def _stats(x: np.ndarray, block: int = 1 << 16) -> FeatureStats:
    """Mean, population std, min and max per column in float64, in blocks of rows (no full float64 copy)."""
    n = x.shape[0]
    mean = x.sum(axis=0, dtype=np.float64) / n
    sq = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, n, block):
        d = x[start : start + block].astype(np.float64) - mean
        sq += np.einsum("ij,ij->j", d, d)
    std = np.sqrt(sq / n)
    return FeatureStats(
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        min=tuple(float(v) for v in x.min(axis=0)),
        max=tuple(float(v) for v in x.max(axis=0)),
    )


# ---------------------------------------------------------------------------------------------
# Errors: locating the first bad row (slow paths only)


class _Locator:
    """Builds the one-line errors that name a column and its first bad data row (and where it is: its
    line in a CSV or JSON Lines file). Slow paths only: the file is read again to place a row."""

    def __init__(self, f: T.TableFile) -> None:
        self.file = f
        self.path, self.where, self.names = f.path, f.where, f.names
        self.kept: np.ndarray | None = None  # the file's data rows left after rows with no target were dropped

    def at(self, row: int) -> str:
        """How messages place a 0-based data row, as `spec.tables` does: "line L" where the file has
        lines (CSV, JSON Lines), else "row N"."""
        line, _ = self._find(row)
        return (
            f"line {line}" if line is not None else f"row {(int(self.kept[row]) if self.kept is not None else row) + 1}"
        )

    def _find(self, row: int) -> tuple[int | None, list[str] | None]:
        """The file line where 0-based data row `row` starts (CSV, JSON Lines), and its raw fields (CSV)."""
        if self.kept is not None:
            row = int(self.kept[row])
        if self.file.fmt == T.JSONL:
            return self._jsonl_line(row), None
        if self.file.fmt != T.CSV:
            return None, None
        try:
            with self.path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
                reader = csv.reader(f)
                seen = -1  # the header is -1
                line = 1
                for fields in reader:
                    if not fields or not "".join(fields).strip():
                        line = reader.line_num + 1
                        continue
                    if seen == row:
                        return line, fields
                    seen += 1
                    line = reader.line_num + 1
        except (OSError, csv.Error):
            pass
        return None, None

    def _jsonl_line(self, row: int) -> int | None:
        seen = -1
        try:
            with self.path.open("rb") as f:
                for line, raw in enumerate(f, start=1):
                    if raw.strip():
                        seen += 1
                        if seen == row:
                            return line
        except OSError:
            pass
        return None

    def _raw(self, row: int, name: str) -> tuple[str, str]:
        line, fields = self._find(row)
        place = (
            f"line {line}" if line is not None else f"row {(int(self.kept[row]) if self.kept is not None else row) + 1}"
        )
        i = self.names.index(name)
        raw = fields[i] if fields is not None and i < len(fields) else ""
        return place, raw

    def missing(self, name: str, col: pa.ChunkedArray, row: int | None = None) -> DataError:
        row = _first_true(pc.is_null(col)) if row is None else row
        place, raw = self._raw(row, name)
        tokens = T.tokens_text(self.file.missing)
        what = f"{raw[:40]!r}, a missing-value token" if raw.strip() else "an empty field or a missing-value token"
        if self.file.fmt not in (T.CSV,):
            what = "null or absent"
        return DataError(
            f"{self.where}: {place}, column {name!r} is missing ({what}{': ' + tokens if self.file.fmt == T.CSV else ''})"
        )

    def text_in_numbers(self, name: str, col: pa.ChunkedArray, role: str) -> DataError:
        values = col.to_pylist()
        row = next((i for i, v in enumerate(values) if v is None or not _is_number(v)), 0)
        if values[row] is None or not str(values[row]).strip() or values[row] in self.file.missing:
            return self.missing(name, col, row)
        return DataError(
            f"{self.where}: {self.at(row)}, column {name!r}: {values[row][:40]!r} is not a number; a {role} must be a number"
        )

    def not_numbers(self, name: str, col: pa.ChunkedArray, role: str) -> DataError:
        if col.type == pa.null():
            return self.missing(name, col)
        if col.null_count:
            return self.missing(name, col)
        first = col[0].as_py()
        shown = first[:40] if isinstance(first, bytes) else str(first)[:40]
        extra = " (not UTF-8 text)" if pa.types.is_binary(col.type) else ""
        needs = "a number" if role == "feature" else "a number, true/false or a text label"
        return DataError(
            f"{self.where}: column {name!r} holds {col.type} values{extra} ({shown!r} at {self.at(0)});"
            f" a {role} must be {needs}"
        )

    def non_finite(self, name: str, col: pa.ChunkedArray, cast: np.ndarray) -> DataError:
        row = int(np.argmax(~np.isfinite(cast)))
        place, raw = self._raw(row, name)
        value = col[row].as_py()
        if isinstance(value, (int, float)) and math.isfinite(value):
            return DataError(
                f"{self.where}: {place}, column {name!r}: {raw[:40] or value!r} is beyond float32's range"
                f" (±{FLOAT32_MAX:.4g})"
            )
        return DataError(f"{self.where}: {place}, column {name!r}: {raw[:40] or value!r} is not finite")


# ---------------------------------------------------------------------------------------------
# Small helpers


def _kind(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    if pa.types.is_null(t):
        return "null"
    return "other"


def _first_true(mask: pa.ChunkedArray) -> int:
    return int(np.argmax(_numpy(mask)))


def _chunk_numpy(chunk: pa.Array) -> np.ndarray:
    """A null-free numeric or bool array's values, read from its buffer (pyarrow's own `to_numpy` imports
    pandas, half a second)."""
    if pa.types.is_boolean(chunk.type):
        chunk = pc.cast(chunk, pa.int8())
    t = chunk.type
    code = "f" if pa.types.is_floating(t) else "i" if pa.types.is_signed_integer(t) else "u"
    dtype = np.dtype(f"{code}{t.bit_width // 8}")
    if len(chunk) == 0:
        return np.empty(0, dtype=dtype)
    return np.frombuffer(chunk.buffers()[1], dtype=dtype, count=chunk.offset + len(chunk))[chunk.offset :]


def _numpy(col: pa.ChunkedArray) -> np.ndarray:
    parts = [_chunk_numpy(c) for c in col.chunks]
    if not parts:
        return np.empty(0, dtype=np.int8)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _suggest(name: str, names: Sequence[str]) -> str:
    hint = difflib.get_close_matches(name, list(names), n=1, cutoff=0.5)
    if hint:
        return f"; did you mean {hint[0]!r}?"
    shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
    return f"; its columns: {shown}"


def _preview(values: Sequence[Label], n: int = 5) -> str:
    return ", ".join(repr(v) for v in values[:n]) + (", ..." if len(values) > n else "")


def _first_line(message: str) -> str:
    lines = message.strip().splitlines()
    return lines[0] if lines else message


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}" if n >= 10 * scale else f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
