"""Recipes: a TOML file that says everything a run needs (model, data, training, gate).

The built-in XOR models are recipes too (`pipeline/recipes/*.toml`, shipped as package data), read by
the same code as a user's file:

    recipe = load_recipe("iris.toml")            # or builtin_recipe("shallow")
    recipe = recipe.with_overrides(steps=500)     # what a command-line flag changes
    print(recipe.to_toml())

Every problem in a file is a `RecipeError` (exit 2) with one line naming the key: an unknown key names
the closest valid one, a wrong type says what was expected. Torch-free and numpy-free.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .limits import FLOAT32_MAX
from .tune_space import TuneSpace, parse_tune
from .tune_space import toml_value as _toml_value

# The vocabulary of a recipe (archs.py, which resolves a recipe to a network, re-exports it).
TASKS = ("binary", "multiclass", "regression")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu")
XOR_FEATURES: tuple[str, ...] = ("x1", "x2")
Label = bool | int | float | str  # a class value, with the type it has in the data

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
SERVING_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
OPTIMIZERS = ("sgd", "adam")
IMPUTE = ("median", "mean")  # spec.encoding.IMPUTE
BUILTIN_DATA = ("xor",)
MAX_STEPS = 10_000_000
MAX_WIDTH = 4096
MAX_HIDDEN_LAYERS = 16
MAX_RECIPE_BYTES = 1 << 20


class RecipeError(UsageError):
    """A recipe that cannot be used as written (exit 2)."""


@dataclass(frozen=True)
class ModelSpec:
    hidden: tuple[int, ...] = (16, 16)
    activation: str = "relu"


@dataclass(frozen=True)
class DataSpec:
    path: str | None = None  # as written; resolved against the recipe's folder
    builtin: str | None = None  # "xor"
    target: str | None = None
    features: tuple[str, ...] | None = None  # None: every column but the target, in file order
    task: str | None = None  # None: inferred from the target column
    validation_fraction: float = 0.2
    split_seed: int = 0
    standardize: bool = True
    missing: tuple[str, ...] | None = None  # the fields that mean "missing"; None: spec.tables.DEFAULT_MISSING
    categorical: tuple[str, ...] | None = None  # features that are categories whatever their type (numeric codes)
    impute: str = "median"  # a missing number (or date part): the training split's median or mean


@dataclass(frozen=True)
class TrainSpec:
    optimizer: str = "adam"
    lr: float = 0.01
    steps: int = 2000
    batch_size: int = 0  # 0: full batch
    seed: int = 0
    init_after: tuple[str, ...] = ()


@dataclass(frozen=True)
class Gate:
    """What a model must reach to be saved: `min_accuracy` (classification, on the validation rows) or
    `max_rmse` (regression, in the target's units). The recipe's [gate], and the one rule `train`,
    `validate` and `sweep` judge by."""

    min_accuracy: float | None = None
    max_rmse: float | None = None

    def passes(self, accuracy: float | None = None, rmse: float | None = None) -> bool:
        """The verdict on a metric: accuracy >= min_accuracy, or rmse <= max_rmse."""
        if self.max_rmse is not None:
            return rmse is not None and rmse <= self.max_rmse
        return accuracy is not None and self.min_accuracy is not None and accuracy >= self.min_accuracy

    @property
    def text(self) -> str:
        return f"RMSE <= {self.max_rmse:g}" if self.max_rmse is not None else f"accuracy >= {self.min_accuracy:g}"


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelSpec
    data: DataSpec
    train: TrainSpec
    gate: Gate
    serving_name: str | None = None
    source: Path | None = None  # the file it was read from (for a built-in: inside the package)
    builtin: bool = False
    gate_source: str = "[gate]"  # where the gate came from: the file, or a command-line option
    tune: TuneSpace | None = None  # the [tune] section (`tune`'s search space); None: not written

    @property
    def serving(self) -> str:
        return self.serving_name or self.name.replace("-", "_")

    @property
    def data_path(self) -> Path | None:
        """The data file, resolved against the recipe's folder (None for built-in data)."""
        if self.data.path is None:
            return None
        p = Path(self.data.path)
        try:
            p = p.expanduser()
        except RuntimeError:  # ~user of no user here: the path as written (reading it says it is missing)
            pass
        if not p.is_absolute() and self.source is not None:
            p = self.source.parent / p
        return p

    @property
    def selector(self) -> str:
        """How the command line names this recipe's model (`--arch shallow`, `--recipe iris.toml`)."""
        return selector(self.name, None if self.builtin else self.source)

    @property
    def where(self) -> str:
        return f"built-in recipe {self.name}" if self.builtin else str(self.source or f"recipe {self.name}")

    def with_overrides(
        self,
        *,
        steps: int | None = None,
        lr: float | None = None,
        seed: int | None = None,
        min_accuracy: float | None = None,
        max_rmse: float | None = None,
    ) -> Recipe:
        """The recipe with the command-line flags a user typed (None: not given, the recipe's value)."""
        train = self.train
        if steps is not None:
            train = dataclasses.replace(train, steps=_steps(steps, "--steps"))
        if lr is not None:
            train = dataclasses.replace(train, lr=_lr(lr, "--lr"))
        if seed is not None:
            train = dataclasses.replace(train, seed=_seed(seed, "--seed"))
        gate, source = self.gate, self.gate_source
        if min_accuracy is not None and max_rmse is not None:
            raise RecipeError("give --min-accuracy (classification) or --max-rmse (regression), not both")
        if min_accuracy is not None:
            gate = Gate(min_accuracy=_fraction(min_accuracy, "--min-accuracy"))
            source = "--min-accuracy"
        if max_rmse is not None:
            gate = Gate(max_rmse=_positive(max_rmse, "--max-rmse"))
            source = "--max-rmse"
        return dataclasses.replace(self, train=train, gate=gate, gate_source=source)

    def as_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (what the manifest records); the data path is absolute."""
        data = {k: v for k, v in _plain(self.data).items() if v is not None}
        if data.get("impute") == DataSpec.impute:
            del data["impute"]  # the default, left out: records of earlier versions read the same
        if self.data_path is not None:
            data["path"] = str(self.data_path.resolve())
        out: dict[str, Any] = {"name": self.name, "serving_name": self.serving}
        out["model"] = _plain(self.model)
        out["data"] = data
        out["train"] = _plain(self.train)
        out["gate"] = {k: v for k, v in _plain(self.gate).items() if v is not None}
        return out

    def to_toml(self) -> str:
        """The resolved recipe as TOML (readable back by `load_recipe`)."""
        d = self.as_dict()
        lines = [f"name = {toml_value(d['name'])}", f"serving_name = {toml_value(d['serving_name'])}"]
        for section in ("model", "data", "train", "gate"):
            lines += ["", f"[{section}]"] + [f"{k} = {toml_value(v)}" for k, v in d[section].items()]
        if self.tune is not None and self.tune.written:
            lines += ["", self.tune.to_toml().rstrip("\n")]
        return "\n".join(lines) + "\n"

    def check_gate(self, task: str) -> None:
        """The gate must fit the task (known once the data is read when `task` is inferred)."""
        g = self.gate
        if self.gate_source != "[gate]" and (task == "regression") != (g.max_rmse is not None):
            right = "--max-rmse" if task == "regression" else "--min-accuracy"
            raise RecipeError(f"{self.gate_source} does not fit {self.name}, a {task} model: use {right}")
        if task == "regression" and g.max_rmse is None:
            raise RecipeError(
                f"{self.where}: a regression model needs [gate] max_rmse (min_accuracy is for classifiers)"
            )
        if task != "regression" and g.min_accuracy is None:
            raise RecipeError(f"{self.where}: a {task} model needs [gate] min_accuracy (max_rmse is for regression)")


# ---------------------------------------------------------------------------------------------
# Reading


_SECTIONS: dict[str, type] = {"model": ModelSpec, "data": DataSpec, "train": TrainSpec, "gate": Gate}
_TOP_KEYS = ("name", "serving_name", *_SECTIONS, "tune")


def load_recipe(path: Path | str) -> Recipe:
    """Read and check a recipe file."""
    path = Path(path)
    try:
        if not path.is_file():
            raise RecipeError(f"recipe {path} does not exist" if not path.exists() else f"recipe {path} is not a file")
        with path.open("rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        raise RecipeError(f"recipe {path} is not readable ({exc.strerror or exc.__class__.__name__})") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(f"recipe {path} is larger than {MAX_RECIPE_BYTES} bytes; a recipe is a short TOML file")
    return parse_recipe(raw, path)


def parse_recipe(raw: bytes | str, source: Path | None, builtin: bool = False) -> Recipe:
    where = str(source) if source is not None else "recipe"
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
        doc = tomllib.loads(text)
    except UnicodeDecodeError:
        raise RecipeError(f"{where} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{where} is not valid TOML: {str(exc).splitlines()[0]}") from None
    _known(doc, _TOP_KEYS, where, "")
    name = _name(doc.get("name"), where)
    if not builtin and name in BUILTIN_NAMES:
        raise RecipeError(
            f"{where}: name {name!r} is a built-in model's; choose another (its folder would mix both models' versions)"
        )
    serving = doc.get("serving_name")
    if serving is not None and (not isinstance(serving, str) or not SERVING_NAME_RE.fullmatch(serving)):
        raise RecipeError(
            f"{where}: serving_name {_show(serving)} must match {SERVING_NAME_RE.pattern} (letters, digits, '_', '-')"
        )
    if not builtin:
        served_as = serving if serving is not None else name.replace("-", "_")
        taken = {builtin_recipe(n).serving.lower(): n for n in BUILTIN_NAMES}
        if served_as.lower() in taken:
            key = "serving_name" if serving is not None else f"name {name!r}, served as"
            raise RecipeError(
                f"{where}: {key} {served_as!r} is the built-in {taken[served_as.lower()]}'s serving name (Triton and "
                "serve would answer one model for the other); choose another serving_name"
            )
    sections: dict[str, Any] = {}
    for key, cls in _SECTIONS.items():
        table = doc.get(key, {})
        if not isinstance(table, dict):
            raise RecipeError(f"{where}: [{key}] must be a table, not {_show(table)}")
        _known(table, [f.name for f in dataclasses.fields(cls)], where, key)
        sections[key] = table
    recipe = Recipe(
        name=name,
        serving_name=serving,
        model=_model(sections["model"], where),
        data=_data(sections["data"], where),
        train=_train(sections["train"], where, name),
        gate=_gate(sections["gate"], where),
        source=source,
        builtin=builtin,
        tune=parse_tune(doc["tune"], where) if "tune" in doc else None,
    )
    if recipe.data.task is not None:
        recipe.check_gate(recipe.data.task)
    return recipe


def _model(t: Mapping[str, Any], where: str) -> ModelSpec:
    d = ModelSpec()
    hidden = t.get("hidden", list(d.hidden))
    if not isinstance(hidden, list) or len(hidden) > MAX_HIDDEN_LAYERS:
        raise RecipeError(
            f"{where}: [model] hidden must be a list of at most {MAX_HIDDEN_LAYERS} widths, like [16, 16]"
        )
    for w in hidden:
        if not _is_int(w) or not 1 <= w <= MAX_WIDTH:
            raise RecipeError(f"{where}: [model] hidden width {_show(w)} must be an integer from 1 to {MAX_WIDTH}")
    return ModelSpec(
        tuple(hidden), _choice(t.get("activation", d.activation), ACTIVATIONS, where, "[model] activation")
    )


def _data(t: Mapping[str, Any], where: str) -> DataSpec:
    d = DataSpec()
    path, builtin = t.get("path"), t.get("builtin")
    if (path is None) == (builtin is None):
        raise RecipeError(f'{where}: [data] needs exactly one of path (a CSV file) or builtin ("xor")')
    if path is not None and (not isinstance(path, str) or not path.strip() or "\x00" in path):
        raise RecipeError(f"{where}: [data] path must be a file name, not {_show(path)}")
    if builtin is not None:
        builtin = _choice(builtin, BUILTIN_DATA, where, "[data] builtin")
    target = t.get("target")
    if target is not None and (not isinstance(target, str) or not target):
        raise RecipeError(f"{where}: [data] target must be a column name, not {_show(target)}")
    if isinstance(target, str) and name_problem(target):
        raise RecipeError(f"{where}: [data] target {_show(target)} {name_problem(target)}; rename the column")
    if path is not None and target is None:
        raise RecipeError(f"{where}: [data] target is missing: name the column to predict")
    features = t.get("features")
    if features is not None:
        _column_list(features, where, "features", "a non-empty list of column names", empty=False)
        if target is not None and target in features:
            raise RecipeError(f"{where}: [data] the target {target!r} is also listed as a feature")
        for f in features:
            if name_problem(f):
                raise RecipeError(f"{where}: [data] feature {_show(f)} {name_problem(f)}; rename the column")
        features = tuple(features)
    if builtin == "xor":
        if features is not None and features != XOR_FEATURES:
            raise RecipeError(f"{where}: [data] builtin xor has features {list(XOR_FEATURES)}")
        if target not in (None, "y"):
            raise RecipeError(f"{where}: [data] builtin xor has target 'y'")
        target, features = "y", XOR_FEATURES
    task = t.get("task")
    if task is not None:
        task = _choice(task, TASKS, where, "[data] task")
    if builtin == "xor" and task not in (None, "binary"):
        raise RecipeError(f"{where}: [data] builtin xor is a binary task")
    fraction = _number(t.get("validation_fraction", d.validation_fraction), where, "[data] validation_fraction")
    if not 0 <= fraction < 1:
        raise RecipeError(f"{where}: [data] validation_fraction {fraction:g} must be at least 0 and below 1")
    split_seed = t.get("split_seed", d.split_seed)
    if not _is_int(split_seed) or not 0 <= split_seed < 2**32:
        raise RecipeError(f"{where}: [data] split_seed must be an integer from 0 to 2**32-1, not {_show(split_seed)}")
    standardize = t.get("standardize", d.standardize)
    if not isinstance(standardize, bool):
        raise RecipeError(f"{where}: [data] standardize must be true or false, not {_show(standardize)}")
    missing = t.get("missing")
    if missing is not None:
        if not isinstance(missing, list) or not all(isinstance(m, str) and len(m) <= 64 for m in missing):
            raise RecipeError(
                f"{where}: [data] missing must be a list of the fields that mean a missing value (each at most 64"
                f' characters), e.g. ["", "NA"], not {_show(missing)}'
            )
        if len(set(missing)) != len(missing):
            raise RecipeError(
                f"{where}: [data] missing lists {next(m for m in missing if missing.count(m) > 1)!r} twice"
            )
        odd = next((m for m in missing if any(c in m for c in '\r\n"')), None)
        if odd is not None:
            raise RecipeError(
                f"{where}: [data] missing token {odd!r} holds a line break or a quote; a field never equals it"
            )
        missing = tuple(missing)
    categorical = t.get("categorical")
    if categorical is not None:
        _column_list(categorical, where, "categorical", f"a list of column names, not {_show(categorical)}")
        if target is not None and target in categorical:
            raise RecipeError(f"{where}: [data] categorical names the target {target!r}; it lists features")
        if features is not None:
            stray = next((c for c in categorical if c not in features), None)
            if stray is not None:
                raise RecipeError(f"{where}: [data] categorical names {stray!r}, which is not in [data] features")
        if builtin is not None:
            raise RecipeError(f"{where}: [data] categorical does not apply to builtin data")
        categorical = tuple(categorical)
    impute = _choice(t.get("impute", d.impute), IMPUTE, where, "[data] impute")
    return DataSpec(
        path, builtin, target, features, task, fraction, split_seed, standardize, missing, categorical, impute
    )


def _column_list(v: Any, where: str, key: str, expected: str, empty: bool = True) -> None:
    """[data] `key` must be a list of distinct, non-empty column names (`expected` says what it must be)."""
    if not isinstance(v, list) or (not empty and not v) or not all(isinstance(c, str) and c for c in v):
        raise RecipeError(f"{where}: [data] {key} must be {expected}")
    if len(set(v)) != len(v):
        dup = next(c for c in v if v.count(c) > 1)
        raise RecipeError(f"{where}: [data] {key} names {dup!r} twice")


def _train(t: Mapping[str, Any], where: str, name: str) -> TrainSpec:
    d = TrainSpec()
    batch = t.get("batch_size", d.batch_size)
    if not _is_int(batch) or batch < 0:
        raise RecipeError(f"{where}: [train] batch_size must be an integer >= 0 (0: full batch), not {_show(batch)}")
    init_after = t.get("init_after", [])
    if not isinstance(init_after, list) or not all(isinstance(n, str) for n in init_after):
        raise RecipeError(f"{where}: [train] init_after must be a list of built-in recipe names")
    for n in init_after:
        if n not in BUILTIN_NAMES or n == name:
            raise RecipeError(
                f"{where}: [train] init_after names {n!r}; it takes built-in recipes other than this one ({', '.join(BUILTIN_NAMES)})"
            )
    return TrainSpec(
        optimizer=_choice(t.get("optimizer", d.optimizer), OPTIMIZERS, where, "[train] optimizer"),
        lr=_lr(_number(t.get("lr", d.lr), where, "[train] lr"), f"{where}: [train] lr"),
        steps=_steps(_integer(t.get("steps", d.steps), where, "[train] steps"), f"{where}: [train] steps"),
        batch_size=batch,
        seed=_seed(_integer(t.get("seed", d.seed), where, "[train] seed"), f"{where}: [train] seed"),
        init_after=tuple(init_after),
    )


def _gate(t: Mapping[str, Any], where: str) -> Gate:
    acc, rmse = t.get("min_accuracy"), t.get("max_rmse")
    if acc is None and rmse is None:
        raise RecipeError(f"{where}: [gate] needs min_accuracy (classification) or max_rmse (regression)")
    if acc is not None and rmse is not None:
        raise RecipeError(f"{where}: [gate] takes one of min_accuracy or max_rmse, not both")
    if acc is not None:
        return Gate(min_accuracy=_fraction(_number(acc, where, "[gate] min_accuracy"), f"{where}: [gate] min_accuracy"))
    return Gate(max_rmse=_positive(_number(rmse, where, "[gate] max_rmse"), f"{where}: [gate] max_rmse"))


# ---------------------------------------------------------------------------------------------
# Checks shared by the file and the command line


def _steps(v: int, what: str) -> int:
    if not 1 <= v <= MAX_STEPS:
        raise RecipeError(f"{what} {v}: must be between 1 and {MAX_STEPS}")
    return v


def _lr(v: float, what: str) -> float:
    if not math.isfinite(v) or v <= 0 or v > FLOAT32_MAX:
        raise RecipeError(f"{what} {v}: must be a finite number > 0 within float32's range (at most {FLOAT32_MAX!r})")
    return float(v)


def _seed(v: int, what: str) -> int:
    if not 0 <= v <= 2**63 - 1:
        raise RecipeError(f"{what} {v}: must be between 0 and 2**63-1")
    return v


def _fraction(v: float, what: str) -> float:
    if not math.isfinite(v) or not 0 <= v <= 1:
        raise RecipeError(f"{what} {v}: must be between 0 and 1")
    return float(v)


def _positive(v: float, what: str) -> float:
    if not math.isfinite(v) or v <= 0:
        raise RecipeError(f"{what} {v}: must be a finite number > 0")
    return float(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _integer(v: Any, where: str, key: str) -> int:
    if not _is_int(v):
        raise RecipeError(f"{where}: {key} must be an integer, not {_show(v)}")
    return int(v)


def _number(v: Any, where: str, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RecipeError(f"{where}: {key} must be a number, not {_show(v)}")
    return float(v)


def _choice(v: Any, choices: Sequence[str], where: str, key: str) -> str:
    if not isinstance(v, str) or v not in choices:
        hint = _closest(v, choices) if isinstance(v, str) else None
        tip = f" (did you mean {hint!r}?)" if hint else ""
        raise RecipeError(f"{where}: {key} {_show(v)} is not one of {', '.join(choices)}{tip}")
    return v


def _name(v: Any, where: str) -> str:
    if v is None:
        raise RecipeError(f"{where}: name is missing (it names the folder <artifacts>/<name>/)")
    if not isinstance(v, str) or not NAME_RE.fullmatch(v):
        raise RecipeError(
            f"{where}: name {_show(v)} must match {NAME_RE.pattern} (lower-case letters, digits, '_', '-'; 64 at most)"
        )
    return v


def _known(table: Mapping[str, Any], keys: Sequence[str], where: str, section: str) -> None:
    for k in table:
        if k not in keys:
            hint = _closest(k, keys)
            place = f"[{section}]" if section else "the top level"
            tip = f"; did you mean {hint!r}?" if hint else f"; valid keys: {', '.join(keys)}"
            raise RecipeError(f"{where}: unknown key {k!r} in {place}{tip}")


def _closest(v: str, choices: Sequence[str]) -> str | None:
    found = difflib.get_close_matches(v, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def _show(v: Any) -> str:
    return repr(v)[:60]


def _plain(spec: Any) -> dict[str, Any]:
    return {
        f.name: (list(v) if isinstance(v, tuple) else v)
        for f in dataclasses.fields(spec)
        for v in [getattr(spec, f.name)]
    }


def toml_string(v: str) -> str:
    """A TOML basic string that reads back as `v`: backslash and quote escaped, and every control
    character (C0, DEL, C1) and Unicode line or paragraph separator as \\uXXXX, so a recipe is one
    line per key whatever the names in it."""
    out = ['"']
    for ch in v:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def name_problem(name: str) -> str | None:
    """Why a column name cannot be a feature or target name (it would break the one-line formats that
    carry it: the recorded recipe, CSV headers, Triton's files, messages), or None when it can: a
    control character (C0, DEL, C1) or a line break of any kind."""
    for ch in name:
        if unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029":
            what = "a line break" if ch in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029" else "a control character"
            return f"holds {what} (U+{ord(ch):04X})"
    return None


def toml_value(v: Any) -> str:
    """A plain value (bool, number, string, list) as TOML; strings as `toml_string` writes them."""
    return _toml_value(v, toml_string)


# ---------------------------------------------------------------------------------------------
# Built-ins


def _builtin_files() -> dict[str, Any]:
    folder = resources.files("pipeline.spec") / "recipes"
    return {p.name[: -len(".toml")]: p for p in folder.iterdir() if p.name.endswith(".toml")}


BUILTIN_NAMES: tuple[str, ...] = ("shallow", "wide-deep")  # declaration order: `all` runs them in this order


@functools.cache
def builtin_recipe(name: str) -> Recipe:
    files = _builtin_files()
    if name not in files:
        raise RecipeError(f"unknown built-in recipe {name!r}: choose one of {', '.join(BUILTIN_NAMES)}")
    return parse_recipe(files[name].read_bytes(), Path(str(files[name])), builtin=True)


def builtin_text(name: str) -> str:
    """A built-in recipe's file, as shipped (`recipes --show`)."""
    files = _builtin_files()
    if name not in files:
        raise RecipeError(f"unknown built-in recipe {name!r}: choose one of {', '.join(BUILTIN_NAMES)}")
    return str(files[name].read_text(encoding="utf-8"))


PROGRAM = "python cli.py"  # how hints name the command line (the README's form)


def selector(name: str, source: Path | str | None = None) -> str:
    """How the command line names a model: `--arch NAME` for a built-in, `--recipe FILE` for a recipe
    (its file when known)."""
    import shlex

    if name in BUILTIN_NAMES:
        return f"--arch {name}"
    return f"--recipe {shlex.quote(str(source))}" if source is not None else f"--recipe <the recipe file of {name}>"


def command(cmd: str, name: str, source: Path | str | None = None) -> str:
    """A command line that runs `cmd` on model `name`, for a hint: `python cli.py all --arch wide-deep`."""
    return f"{PROGRAM} {cmd} {selector(name, source)}"


def hint(cmd: str, sel: str, when: str = "first", extra: str = "") -> str:
    """A hint that names the command that fixes what a message names: `run all first (python cli.py all
    --arch wide-deep)`; `sel` is `selector(...)`'s, `extra` more options (`--artifacts-dir DIR`)."""
    return f"run {cmd} {when} (`{PROGRAM} {cmd} {sel}{' ' + extra if extra else ''}`)"


def parse_lrs(text: str) -> tuple[float, ...]:
    """'0.5,1,2' -> (0.5, 1.0, 2.0) (`sweep --lrs`); a bad item is a one-line UsageError."""
    out = []
    for item in text.split(","):
        try:
            out.append(float(item.strip()))
        except ValueError:
            raise UsageError(f"--lrs {text!r}: {item.strip()!r} is not a number (give e.g. 0.5,1,2)") from None
    return tuple(out)


def recipe_for(arch: str | None, recipe: Path | str | None) -> Recipe:
    """What `--arch NAME` / `--recipe FILE` select (exactly one; neither: the shallow built-in)."""
    if arch is not None and recipe is not None:
        raise UsageError("give --arch or --recipe, not both")
    if recipe is not None:
        return load_recipe(recipe)
    return builtin_recipe(arch or "shallow")


def recipe_from_record(record: Mapping[str, Any], where: str) -> Recipe:
    """The recipe a manifest recorded (`Recipe.as_dict()`), read back with the file checks."""
    try:
        lines = [f"name = {toml_value(record['name'])}", f"serving_name = {toml_value(record['serving_name'])}"]
        for section in ("model", "data", "train", "gate"):
            lines += [f"[{section}]"] + [f"{k} = {toml_value(v)}" for k, v in dict(record[section]).items()]
    except (KeyError, TypeError, ValueError) as exc:
        from ..errors import CorruptArtifact

        raise CorruptArtifact(f"{where}: its recipe record is not readable ({exc})") from None
    return parse_recipe("\n".join(lines) + "\n", None, builtin=record.get("data", {}).get("builtin") is not None)
