"""`init`: a starter recipe for a CSV file, with every key commented.

    name, out = starter_path(Path("iris.csv"))                # ("iris", ./iris.toml)
    starter = make_starter(Path("iris.csv"), "species", name, out)  # .recipe_text; `init` writes it

The data is read and checked exactly as training reads it (`data.read_columns`), the task is inferred from
the target column, and the recipe is parsed and resolved on the data before it is written, so the file
written always loads. Features constant on the training rows are left out (standardizing them would divide
by zero) and named in a comment. Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import unicodedata
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import numpy as np

from .archs import Label
from .data import Columns, DataError, make_dataset, read_columns, split_rows
from .recipe import BUILTIN_NAMES, DataSpec, builtin_recipe, parse_recipe, toml_string

HIDDEN = (32, 32)
ACTIVATION = "relu"
OPTIMIZER = "adam"
LR = 0.001  # Adam's usual rate (scikit-learn's MLP default too)
STEPS_FULL_BATCH = 300  # small data: more full-batch steps over-fit (measured: diabetes RMSE 58 at 300, 76 at 1000)
STEPS_MINIBATCH = 2000  # larger data: 2000 mini-batches of BATCH_SIZE
BATCH_ROWS = 10_000  # at least this many rows: minibatches of BATCH_SIZE; fewer: full batch
BATCH_SIZE = 256
SEED = 0
ACCURACY_MARGIN = 0.05  # the accuracy gate: the majority-class rate plus this
COMMENT_COLUMN = 40


@dataclass(frozen=True)
class Starter:
    """What `init` writes (`path`: where)."""

    path: Path  # the recipe written (absolute)
    recipe_text: str
    name: str
    task: str
    features: tuple[str, ...]
    classes: tuple[Label, ...]
    left_out: tuple[tuple[str, str], ...] = ()  # (column, why) for every column `init` left out
    kinds: tuple[tuple[str, str], ...] = ()  # (feature, how it is used: number, category, date...)
    row_notes: tuple[str, ...] = ()  # rows training will leave out (a missing target), counted

    @property
    def notes(self) -> tuple[str, ...]:
        """One line per column left out, naming it and why, and the rows left out (what `init` prints)."""
        return tuple(f"left out {n!r}: {why}" for n, why in self.left_out) + self.row_notes


def starter_path(data: Path, out: Path | None = None) -> tuple[str, Path]:
    """(the recipe's name, the absolute path to write it to): the name from the data file's name (a
    built-in's name or serving name gets `-data`), the path `out` or `./<name>.toml`."""
    name = starter_name(data)
    taken = {builtin_recipe(n).serving.lower() for n in BUILTIN_NAMES}
    if name in BUILTIN_NAMES or name.replace("-", "_") in taken:
        name = f"{name}-data"  # a built-in's folder and serving name are the built-in's
    return name, (Path(out) if out is not None else Path(f"{name}.toml")).absolute()


def make_starter(data: Path, target: str, name: str, out: Path) -> Starter:
    """Read and check `data` exactly as training reads it, infer the task, and compose the starter
    recipe that will be written to `out` (its data path relative to `out`). Writes nothing: `init`
    (`flow.init_recipe`) writes it. The recipe is parsed and resolved on the data first, so what is
    written always loads."""
    data = Path(data)
    features, left_out, limit = _choose_columns(data, target)
    cols = read_columns(data, target, features)
    spec = DataSpec(target=target, validation_fraction=0.2, split_seed=0, standardize=True)
    cols, constant = _drop_constant(cols, spec)
    left_out = left_out + tuple((n, "constant on the training rows: nothing to learn from") for n in constant)
    text = recipe_text(name, cols, _data_path(data, out), left_out, limit)
    recipe = parse_recipe(text, out)  # what load_recipe will see, paths resolved against `out`
    make_dataset(cols, recipe.data)  # the checks that need the split
    kinds = tuple((c.name, _kind_text(c)) for c in cols.raw)
    notes: tuple[str, ...] = (
        (f"{cols.dropped_rows} rows have no {target!r}: training leaves them out",) if cols.dropped_rows else ()
    )
    notes += tuple(c.note for c in cols.raw if c.note)
    return Starter(out, text, name, cols.task, cols.features, cols.classes, left_out, kinds, notes)


def _kind_text(c: Any) -> str:
    if c.kind == "category":
        return "category (true/false)" if c.boolean else "category"
    return str(c.kind)


MISSING_SHARE = 0.5  # a column missing in more than this share of its rows is left out
MAX_CATEGORIES = 50  # a text column is a category with at most min(MAX_CATEGORIES, CATEGORY_SHARE * rows) values
CATEGORY_SHARE = 0.1


def max_categories(rows: int) -> int:
    """The most distinct values a text column may have to be a category: min(50, 10% of the rows)."""
    return max(2, min(MAX_CATEGORIES, int(CATEGORY_SHARE * rows)))


def _choose_columns(data: Path, target: str) -> tuple[list[str] | None, tuple[tuple[str, str], ...], int]:
    """(features, (column, why) for each column left out), by the rules `init` writes into the recipe:
    numbers, true/false, dates and timestamps, and text with at most `max_categories(rows)` distinct
    values are features; a column missing in more than half its rows, text with more distinct values
    (an id, a name, free text), an all-empty column and the types that are not features (times,
    durations, binary, nested) are left out. None for features: the data has a problem that
    `read_columns` will name, in its words. Last: the category limit used."""
    from .data import _kind, _Locator, _target_present, _text_missing, mostly_dates, mostly_numbers, open_data

    where = str(data)
    if not data.is_file():
        return None, (), 0
    try:
        f = open_data(data)
    except DataError:
        return None, (), 0
    if target not in f.names:
        return None, (), 0
    others = [n for n in f.names if n != target]
    table = f.read_all(numeric=(), infer=[*others, target])
    if table.num_rows:
        table = table.filter(_target_present(table.column(target), _Locator(f)))  # the rows training keeps
    rows = table.num_rows
    if rows == 0:
        return None, (), 0
    limit = max_categories(rows)
    keep: list[str] = []
    out: list[tuple[str, str]] = []
    import pyarrow as pa

    for n in others:
        col = table.column(n)
        if pa.types.is_dictionary(col.type):  # pandas' category columns: their values' type decides
            col = col.cast(col.type.value_type)
        arrow_type = col.type
        kind = _kind(arrow_type)
        if kind == "null":
            out.append((n, "empty in every row"))
            continue
        is_date = pa.types.is_date(arrow_type) or pa.types.is_timestamp(arrow_type)
        if kind not in ("int", "float", "bool", "str") and not is_date and not pa.types.is_decimal(arrow_type):
            out.append((n, f"its type {arrow_type} is not a feature (numbers, true/false, text categories, dates)"))
            continue
        missing = col.null_count
        present: list[str] = []
        if kind == "str":
            gaps = _text_missing(col, f.missing)
            missing = int(gaps.sum())
            present = [v for v, g in zip(col.to_pylist(), gaps) if not g]
        if missing > MISSING_SHARE * rows:
            out.append((n, f"missing in {missing} of {rows} rows (more than half)"))
            continue
        if kind == "str" and not mostly_dates(present) and not (f.fmt == "csv" and mostly_numbers(present)):
            distinct = len(set(present))
            if distinct > limit:
                out.append(
                    (n, f"text with {distinct} distinct values in {rows} rows (an id, a name or free text);"
                        f" a category has at most {limit} (min(50, 10% of the rows))")
                )  # fmt: skip
                continue
        keep.append(n)
    if not out:
        return None, (), limit
    if not keep:
        shown = "; ".join(f"{n}: {why}" for n, why in out[:5])
        raise DataError(f"data file {where}: no column besides {target!r} can be a feature ({shown})")
    return keep, tuple(out), limit


def starter_name(path: Path | str) -> str:
    """A recipe name (`[a-z0-9][a-z0-9_-]{0,63}`) from a file's stem; "model" when nothing is left."""
    stem = unicodedata.normalize("NFKD", Path(path).stem).encode("ascii", "ignore").decode("ascii").lower()
    name = re.sub(r"[^a-z0-9_-]", "-", stem)
    name = re.sub(r"-{2,}", "-", name)
    name = re.sub(r"^[^a-z0-9]+", "", name)[:64].rstrip("-_")
    return name or "model"


def recipe_text(
    name: str,
    cols: Columns,
    data_path: str,
    left_out: tuple[tuple[str, str], ...] = (),
    limit: int | None = None,
) -> str:
    """The starter recipe's TOML: every key with a comment saying what it does."""
    classifier = cols.task != "regression"
    scaled = "the features" if classifier else "the features and the target"
    lines = [
        f"# Starter recipe for {_label(Path(cols.source).name)} ({cols.rows} rows, {len(cols.features)} features,"
        f" {cols.task}), written by `init`. Edit freely.",
        _key("name", _str(name), "names the run and its folder <artifacts>/<name>/"),
        "",
        "[model]",
        _key("hidden", _list(HIDDEN), "hidden layer widths, input side first"),
        _key("activation", _str(ACTIVATION), "after each hidden layer: sigmoid, tanh, relu or gelu"),
        "",
        "[data]",
        _key(
            "path", _str(data_path), "the data file (CSV with a header row, Parquet, JSON Lines); relative to this file"
        ),
        _key("target", _str(cols.target), "the column to predict"),
    ]
    lines += _features(cols.features)
    lines += _rules(cols, left_out, limit if limit else max_categories(cols.rows))
    lines.append(_key("task", _str(cols.task), "binary, multiclass or regression (inferred from the target column)"))
    if classifier:
        lines.append(f"# classes: {_names(cols.classes)}")
    lines += [
        _key("validation_fraction", "0.2", "rows held out to judge the gate" + (", per class" if classifier else "")),
        _key("split_seed", "0", "seed of the train/validation split"),
        _key("standardize", "true", f"scale {scaled} by the training rows' mean and std, inside the model"),
        "",
        "[train]",
        _key("optimizer", _str(OPTIMIZER), "adam or sgd"),
        _key("lr", repr(LR), "learning rate"),
        _key("steps", str(_steps(cols.rows)), "optimizer steps"),
        _key("batch_size", str(_batch_size(cols.rows)), "rows per step; 0 is every training row"),
        _key("seed", str(SEED), "seed of the initial weights and the batch order"),
        "",
        "[gate]",
    ]
    if classifier:
        counts = np.bincount(cols.y, minlength=len(cols.classes))
        majority = float(counts.max()) / cols.rows
        gate = min_accuracy(majority)
        lines.append(
            _key(
                "min_accuracy",
                repr(gate),
                f"validation accuracy needed to save the model (majority class {majority:.3f} + 0.05)",
            )
        )
    else:
        std = float(np.std(cols.y, dtype=np.float64))
        lines.append(
            _key(
                "max_rmse",
                repr(max_rmse(std)),
                "validation RMSE allowed, in target units (the target's std: what predicting the mean scores)",
            )
        )
    return "\n".join(lines + _tune_lines()) + "\n"


_TUNE_COMMENTS = {
    "layers": "hidden layers",
    "width": "units per hidden layer (log scale)",
    "per_layer_width": "true: one width per layer (conditional: width_2 exists with 2 layers or more)",
    "activation": "after each hidden layer",
    "lr": "learning rate (log scale)",
    "batch_size": "rows per step; 0 is every training row",
    "optimizer": "adam or sgd",
    "steps": "optimizer steps (log scale)",
    "prune": "stop hopeless trials early (Optuna's median pruner)",
}


def _tune_lines() -> list[str]:
    """The default search space, commented out: what `tune` searches while the section stays absent."""
    from .tune_space import DEFAULT, toml_value

    lines = [
        "",
        "# What `tune --recipe` searches (this default space while the section stays commented out): a range is",
        "# two numbers [low, high], a choice is a list, one value fixes a key. Trials train on the training rows",
        "# only and are judged on an inner 20% of them; the validation rows, which the gate reads, stay unseen.",
        "# [tune]",
    ]
    for key, value in DEFAULT.record().items():
        lines.append("# " + _key(key, toml_value(value), _TUNE_COMMENTS[key]))
    return lines


def _rules(cols: Columns, left_out: tuple[tuple[str, str], ...], limit: int) -> list[str]:
    """The comments and keys that say how each column is used and why a column was left out."""
    lines = [
        f"# how `init` chose: numbers are features; true/false and text with at most {limit}"
        " distinct values (min(50, 10% of the rows)) are categories;",
        "# dates (YYYY-MM-DD, YYYY/MM/DD, timestamps) give year, month, day, day of week (and hour); a column missing in more than half",
        "# its rows is left out. Inside the model, a missing number is filled and flagged, an unseen category is all zeros.",
    ]
    kinds: dict[str, list[str]] = {}
    for c in cols.raw:
        kinds.setdefault(_kind_text(c), []).append(c.name)
    for kind, names in kinds.items():
        lines.append(f"# {kind}: {_names(tuple(names))}")
    for n, why in left_out:
        lines.append(f"# left out {_label(n)}: {why}")
    lines.append(_key("categorical", "[]", "number columns that are really categories (codes), to one-hot instead"))
    lines.append(_key("impute", _str("median"), "a missing number or date part: the training rows' median or mean"))
    return lines


def min_accuracy(majority: float) -> float:
    """The majority-class rate + 0.05, at most 1, rounded down to 3 decimals."""
    return min(1.0, math.floor((majority + ACCURACY_MARGIN) * 1000 + 1e-6) / 1000)


def max_rmse(std: float) -> float:
    """`std` rounded up to 4 significant digits."""
    d = Decimal(repr(std))
    step = Decimal(1).scaleb(d.adjusted() - 3)
    return float(d.quantize(step, rounding=ROUND_CEILING))


# ---------------------------------------------------------------------------------------------


def _drop_constant(cols: Columns, spec: DataSpec) -> tuple[Columns, tuple[str, ...]]:
    """Leave out features with a single value on the training rows (missing values aside)."""
    train, _ = split_rows(cols.y, cols.task, spec.validation_fraction, spec.split_seed, len(cols.classes))
    keep = []
    for c in cols.raw:
        v = c.values[train]
        present = v[~c.missing()[train]]
        keep.append(len(set(present.tolist())) > 1)
    if all(keep):
        return cols, ()
    if not any(keep):
        raise DataError(
            f"data file {cols.where}: every feature is constant on the training rows; there is nothing to learn from"
        )
    dropped = tuple(c.name for c, k in zip(cols.raw, keep) if not k)
    raw = tuple(c for c, k in zip(cols.raw, keep) if k)
    return dataclasses.replace(cols, features=tuple(c.name for c in raw), raw=raw), dropped


def _data_path(data: Path, out: Path) -> str:
    target = data.resolve()
    try:
        return Path(os.path.relpath(target, out.parent.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return str(target)


def _batch_size(rows: int) -> int:
    return 0 if rows < BATCH_ROWS else BATCH_SIZE


def _steps(rows: int) -> int:
    return STEPS_FULL_BATCH if rows < BATCH_ROWS else STEPS_MINIBATCH


def _key(key: str, value: str, comment: str) -> str:
    line = f"{key} = {value}"
    return f"{line.ljust(COMMENT_COLUMN - 1)} # {comment}"


def _str(s: str) -> str:
    """A TOML basic string (`recipe.toml_string`: the recorded recipe writes names the same way)."""
    return toml_string(s)


def _list(values: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _features(features: tuple[str, ...]) -> list[str]:
    comment = "the input columns, in the model's input order"
    one_line = "[" + ", ".join(_str(f) for f in features) + "]"
    if len(one_line) <= 80:
        return [_key("features", one_line, comment)]
    lines = [_key("features", "[", comment)]
    row: list[str] = []
    for f in features:
        row.append(_str(f))
        if len(", ".join(row)) > 90:
            lines.append("    " + ", ".join(row) + ",")
            row = []
    if row:
        lines.append("    " + ", ".join(row) + ",")
    lines.append("]")
    return lines


def _names(values: tuple[Label, ...] | tuple[str, ...], limit: int = 50) -> str:
    shown = [_label(v) for v in values[:limit]]
    more = f", ... ({len(values)} in all)" if len(values) > limit else ""
    return ", ".join(shown) + more


def _label(v: Label) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v if v.isprintable() and "," not in v and v == v.strip() and v else _str(v)
    return repr(v)
