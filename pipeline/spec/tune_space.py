"""A recipe's `[tune]` section: the search space `tune` explores (torch-free, numpy-free, optuna-free).

    [tune]
    layers = [1, 3]                          # a range is two numbers [low, high], both included
    width = [8, 256]                         # sampled on a log scale
    per_layer_width = false                  # false: one width for every layer; true: one per layer
    activation = ["relu", "gelu", "tanh"]    # a choice is a list
    lr = [1e-4, 0.3]                         # log scale
    batch_size = [0, 64, 256]                # a choice (0: every training row)
    optimizer = ["adam", "sgd"]
    steps = [300, 5000]                      # log scale
    prune = true                             # stop hopeless trials early (Optuna's median pruner)

Range keys (`layers`, `width`, `lr`, `steps`) take `[low, high]` or one number (fixed); choice keys
(`activation`, `batch_size`, `optimizer`) take a non-empty list or one value (fixed). A key left out
takes the default space's value (`DEFAULT`), which is also the whole space when the section is absent.

The conditional part, said plainly: with `per_layer_width = true` the widths of layers 2 and 3 exist
only in trials with that many layers, so Optuna's parameter importances (which compare parameters
every trial has) leave them out; `tune` says so. With one width for all layers nothing is conditional.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import UsageError
from .limits import FLOAT32_MAX

# The recipe's vocabulary, repeated here only as values to check against (recipe.py imports this module).
_ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu")
_OPTIMIZERS = ("sgd", "adam")
_MAX_WIDTH = 4096
_MAX_LAYERS = 16
_MAX_STEPS = 10_000_000
MAX_CHOICES = 64
FLOAT32_TINY = 1.1754943508222875e-38  # a smaller learning rate is 0 (or subnormal) in float32

RANGE_KEYS = ("layers", "width", "lr", "steps")
CHOICE_KEYS = ("activation", "batch_size", "optimizer")
FLAG_KEYS = ("per_layer_width", "prune")
KEYS = ("layers", "width", "per_layer_width", "activation", "lr", "batch_size", "optimizer", "steps", "prune")
LOG_SCALE = ("width", "lr", "steps")  # sampled on a log scale (layers: uniform)


class TuneSpaceError(UsageError):
    """A `[tune]` section that cannot be used as written (exit 2)."""


@dataclass(frozen=True)
class Range:
    """low..high, both included; integers unless `real`; on a log scale when `log`."""

    low: float
    high: float
    real: bool = False
    log: bool = False

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    def contains(self, v: float) -> bool:
        return self.low <= v <= self.high

    def plain(self) -> Any:
        lo, hi = (self.low, self.high) if self.real else (int(self.low), int(self.high))
        return lo if self.fixed else [lo, hi]


@dataclass(frozen=True)
class TuneSpace:
    layers: Range
    width: Range
    activation: tuple[str, ...]
    lr: Range
    batch_size: tuple[int, ...]
    optimizer: tuple[str, ...]
    steps: Range
    per_layer_width: bool = False
    prune: bool = True
    written: bool = True  # False: the recipe has no [tune] section (the default space)

    @property
    def fixed(self) -> bool:
        """Every key fixed: every trial would be the same network and settings."""
        ranges = (self.layers, self.width, self.lr, self.steps)
        choices = (self.activation, self.batch_size, self.optimizer)
        return all(r.fixed for r in ranges) and all(len(c) == 1 for c in choices)

    def record(self) -> dict[str, Any]:
        """The space as plain data: what a study records and compares on resume."""
        out: dict[str, Any] = {}
        for k in KEYS:
            v = getattr(self, k)
            out[k] = v.plain() if isinstance(v, Range) else list(v) if isinstance(v, tuple) else v
        return out

    def to_toml(self) -> str:
        """The section as TOML (read back by `parse_tune`)."""
        return "[tune]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in self.record().items())

    def difference(self, other: Mapping[str, Any]) -> str | None:
        """The first key whose value differs from a recorded space's (`record()`), as a phrase; None: same."""
        return record_difference(self.record(), other)

    def contains(self, params: Mapping[str, Any]) -> str | None:
        """Why a trial's values (`values_of`'s form) lie outside this space, or None."""
        hidden = params["hidden"]
        if not self.layers.contains(len(hidden)):
            return f"{len(hidden)} hidden layers is outside [tune] layers {_show(self.layers.plain())}"
        if not self.per_layer_width and len(set(hidden)) > 1:
            return f"hidden {list(hidden)} has layers of different widths, and [tune] per_layer_width is false"
        for w in hidden:
            if not self.width.contains(w):
                return f"width {w} is outside [tune] width {_show(self.width.plain())}"
        for key in ("activation", "batch_size", "optimizer"):
            if params[key] not in getattr(self, key):
                return f"{key} {params[key]!r} is not among [tune] {key} {_show(list(getattr(self, key)))}"
        for key in ("lr", "steps"):
            if not getattr(self, key).contains(params[key]):
                return f"{key} {params[key]!r} is outside [tune] {key} {_show(getattr(self, key).plain())}"
        return None


def record_difference(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> str | None:
    """The first key (in sorted order) where two recorded spaces differ, as a phrase; None: the same."""
    for k in sorted(set(mine) | set(theirs)):
        if mine.get(k) != theirs.get(k):
            return f"[tune] {k} is {_show(mine.get(k))} here, {_show(theirs.get(k))} in the study"
    return None


DEFAULT = TuneSpace(
    layers=Range(1, 3),
    width=Range(8, 256, log=True),
    activation=("relu", "gelu", "tanh"),
    lr=Range(1e-4, 0.3, real=True, log=True),
    batch_size=(0, 64, 256),
    optimizer=("adam", "sgd"),
    steps=Range(300, 5000, log=True),
    written=False,
)


def parse_tune(table: Any, where: str) -> TuneSpace:
    """Check a `[tune]` table; every problem is one line naming the key."""
    import difflib

    if not isinstance(table, dict):
        raise TuneSpaceError(f"{where}: [tune] must be a table, not {_show(table)}")
    for k in table:
        if k not in KEYS:
            hint = difflib.get_close_matches(k, KEYS, n=1, cutoff=0.6)
            tip = f"; did you mean {hint[0]!r}?" if hint else f"; valid keys: {', '.join(KEYS)}"
            raise TuneSpaceError(f"{where}: unknown key {k!r} in [tune]{tip}")
    d = DEFAULT
    values: dict[str, Any] = {"written": True}
    values["layers"] = _range(table, "layers", d.layers, 1, _MAX_LAYERS, where)
    values["width"] = _range(table, "width", d.width, 1, _MAX_WIDTH, where)
    values["lr"] = _range(table, "lr", d.lr, FLOAT32_TINY, FLOAT32_MAX, where)
    values["steps"] = _range(table, "steps", d.steps, 1, _MAX_STEPS, where)
    values["activation"] = _choice(table, "activation", d.activation, where, allowed=_ACTIVATIONS)
    values["optimizer"] = _choice(table, "optimizer", d.optimizer, where, allowed=_OPTIMIZERS)
    values["batch_size"] = _choice(table, "batch_size", d.batch_size, where)
    for k in FLAG_KEYS:
        v = table.get(k, getattr(d, k))
        if not isinstance(v, bool):
            raise TuneSpaceError(f"{where}: [tune] {k} must be true or false, not {_show(v)}")
        values[k] = v
    return replace(d, **values)


def _range(table: Mapping[str, Any], key: str, default: Range, lo: float, hi: float, where: str) -> Range:
    v = table.get(key)
    if v is None:
        return default
    real = default.real
    kind = "numbers" if real else "integers"
    items = v if isinstance(v, list) else [v]
    if not 1 <= len(items) <= 2 or (isinstance(v, list) and len(items) != 2):
        raise TuneSpaceError(
            f"{where}: [tune] {key} must be a range of two {kind} [low, high] or one {kind[:-1]}, not {_show(v)}"
        )
    for x in items:
        bad = isinstance(x, bool) or not isinstance(x, (int, float)) or (not real and not isinstance(x, int))
        if bad or (isinstance(x, float) and not math.isfinite(x)):
            raise TuneSpaceError(f"{where}: [tune] {key} takes {kind}, not {_show(x)}")
    low, high = float(items[0]), float(items[-1])
    if low > high:
        raise TuneSpaceError(f"{where}: [tune] {key} {_show(v)} is an empty range (low {items[0]} > high {items[1]})")
    if low < lo or high > hi:
        bound = f"at least {lo:g} (float32's smallest normal number)" if key == "lr" else f"at least {lo:g}"
        raise TuneSpaceError(f"{where}: [tune] {key} {_show(v)} must be {bound} and at most {hi:g}")
    return replace(default, low=low if real else int(low), high=high if real else int(high))


def _choice(
    table: Mapping[str, Any], key: str, default: tuple, where: str, allowed: tuple[str, ...] | None = None
) -> tuple:
    v = table.get(key)
    if v is None:
        return default
    items = v if isinstance(v, list) else [v]
    if not items:
        raise TuneSpaceError(f"{where}: [tune] {key} is an empty choice: list at least one value")
    if len(items) > MAX_CHOICES:
        raise TuneSpaceError(f"{where}: [tune] {key} lists {len(items)} values; at most {MAX_CHOICES}")
    for x in items:
        if allowed is not None:
            if not isinstance(x, str) or x not in allowed:
                raise TuneSpaceError(f"{where}: [tune] {key} {_show(x)} is not one of {', '.join(allowed)}")
        elif isinstance(x, bool) or not isinstance(x, int) or x < 0:
            raise TuneSpaceError(
                f"{where}: [tune] batch_size takes integers >= 0 (0: every training row), not {_show(x)}"
            )
    dup = next((x for x in items if items.count(x) > 1), None)
    if dup is not None:
        raise TuneSpaceError(f"{where}: [tune] {key} lists {dup!r} twice")
    return tuple(items)


def toml_value(v: Any, string: Callable[[str], str] = json.dumps) -> str:
    """A plain value as TOML: true/false, a number, a string (`string` writes it: JSON's escapes are
    TOML's for the vocabulary's names; recipes pass `recipe.toml_string`), or a list of them."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x, string) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")


def _show(v: Any) -> str:
    return repr(v)[:60]
