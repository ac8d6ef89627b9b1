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
    text_columns: tuple[str, ...] = ()  # columns left out because they are not numbers
    other_columns: tuple[tuple[str, str], ...] = ()  # (name, type) of columns of other types, left out


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
    features, text_columns, other_columns = _numeric_columns(data, target)
    cols = read_columns(data, target, features)
    spec = DataSpec(target=target, validation_fraction=0.2, split_seed=0, standardize=True)
    cols, dropped = _drop_constant(cols, spec)
    text = recipe_text(name, cols, dropped, _data_path(data, out), text_columns, other_columns)
    recipe = parse_recipe(text, out)  # what load_recipe will see, paths resolved against `out`
    make_dataset(cols, recipe.data)  # the checks that need the split
    return Starter(out, text, name, cols.task, cols.features, cols.classes, text_columns, other_columns)


def _mostly_numbers(column: Any, sample: int = 1000) -> bool:
    """A text column whose values are mostly numbers is a numeric column with a typo: it stays, so that
    reading it names the bad row and value instead of `init` dropping the feature."""
    values = [v for v in column.slice(0, sample).to_pylist() if isinstance(v, str) and v.strip()]
    if not values:
        return False
    good = 0
    for v in values:
        try:
            float(v)
            good += 1
        except ValueError:
            pass
    return good >= 0.5 * len(values)


def _type_name(kind: str, arrow_type: Any) -> str:
    """How a left-out column's type is named in the note: pyarrow's name, with what it means."""
    if kind == "null":
        return "null: every value is empty"
    if kind == "bool":
        return "bool: true/false"
    return str(arrow_type)


def _numeric_columns(data: Path, target: str) -> tuple[list[str] | None, tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(features, text columns, other columns with their type). Only numbers are features for now: a
    text column (an id, a name, a note) and a column of any other type pyarrow infers (true/false,
    date, time, timestamp, decimal, all empty...) are left out of the starter's features and named
    in a comment, rather than failing `init`. None for features: every column is a number (or the
    data has a problem that `read_columns` will name)."""
    from .data import _kind, open_data

    where = str(data)
    if not data.is_file():
        return None, (), ()  # read_columns says what is wrong
    try:
        f = open_data(data)
    except DataError:
        return None, (), ()  # read_columns says what is wrong, in the same words
    if target not in f.names:
        return None, (), ()
    others = [n for n in f.names if n != target]
    table = f.read_all(numeric=(), infer=others)
    if table.num_rows == 0:
        return None, (), ()  # a header and no rows: read_columns says so
    text: list[str] = []
    other: list[tuple[str, str]] = []
    for n in others:
        arrow_type = table.schema.field(n).type
        kind = _kind(arrow_type)
        if kind == "str":
            # a CSV's mostly numeric text column is a typo to name; typed formats say what a column is
            if f.fmt != "csv" or not _mostly_numbers(table.column(n)):
                text.append(n)
        elif kind not in ("int", "float"):
            other.append((n, _type_name(kind, arrow_type)))
    if not text and not other:
        return None, (), ()
    left_out = {*text, *(n for n, _ in other)}
    keep = [n for n in others if n not in left_out]
    if not keep:
        shown = _names((*text, *(f"{n} ({t})" for n, t in other)))
        raise DataError(f"data file {where}: no column besides {target!r} holds numbers ({shown})")
    return keep, tuple(text), tuple(other)


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
    dropped: tuple[str, ...],
    data_path: str,
    text_columns: tuple[str, ...] = (),
    other_columns: tuple[tuple[str, str], ...] = (),
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
        _key("path", _str(data_path), "the CSV file (a header row, comma-separated); relative to this file"),
        _key("target", _str(cols.target), "the column to predict"),
    ]
    lines += _features(cols.features)
    if dropped:
        lines.append(
            f"# left out (constant on the training rows, so standardizing would divide by zero): {_names(dropped)}"
        )
    if text_columns:
        lines.append(f"# left out (not numbers; encode them as numeric columns to use them): {_names(text_columns)}")
    if other_columns:
        shown = _names(tuple(f"{n} ({t})" for n, t in other_columns))
        lines.append(f"# left out (types that are not features yet; encode them as numbers to use them): {shown}")
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
    return "\n".join(lines) + "\n"


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
    train, _ = split_rows(cols.y, cols.task, spec.validation_fraction, spec.split_seed, len(cols.classes))
    x = cols.x[train]
    keep = x.min(axis=0) != x.max(axis=0)
    if keep.all():
        return cols, ()
    if not keep.any():
        raise DataError(
            f"data file {cols.where}: every feature is constant on the training rows; there is nothing to learn from"
        )
    dropped = tuple(f for f, k in zip(cols.features, keep) if not k)
    features = tuple(f for f, k in zip(cols.features, keep) if k)
    return dataclasses.replace(cols, features=features, x=np.ascontiguousarray(cols.x[:, keep])), dropped


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
