"""Stage 4: the comparison engine behind `serve-check` and `verify`.

One engine: a reference function, a list of runtimes and a list of seeded input sets go in; every
runtime is run on every set and compared with the reference; a report with a fail-closed verdict
comes out.

- `verify`: the reference is a float64 oracle (the torch model rebuilt from the saved weights, in
  float64 on the CPU); runtimes are torch fp32 (CPU, and CUDA when torch sees a GPU), onnxruntime
  (CPU provider, and CUDA provider when it really comes up), and onnx's pure-Python
  ReferenceEvaluator. Each runtime has its own tolerance (TOLERANCES, measured: docs/verification.md).
- `serve-check`: the reference is the torch fp32 model, the runtime is onnxruntime with the chosen
  provider.

Input sets. The built-in XOR models (`is_builtin_xor`) keep the tutorial's sets: the four XOR points
with their expected labels, uniform [0, 1], wide [-50, 50] and all pairs of edge values. A recipe's
model is checked on sets drawn from its data (`data_input_sets`): the validation rows, uniform within
each feature's observed [min, max], a wide set 10x beyond that range, and edge values one feature at a
time (the other features at their training mean).

Models with an encoding (`Arch.encoding`: raw columns in, imputation, one-hot and date parts inside the
graph) are checked on RAW rows (`encoded_input_sets`): the validation rows as read, each column
missing in turn, categories never seen in training, each category, unparseable and boundary dates,
random mixtures of those, and the number columns' uniform, wide and edge values. The float64 oracle
and the torch runtimes take the numpy reference's encoding of the rows (`Encoding.encode`); the
graph's own encoding is compared with that reference bit for bit (`graph_encoding_check`); a runtime
that cannot run a text operator is reported as skipped with the reason (`runtimes.CannotRun`); and
onnxruntime's runtimes say which provider ran which nodes (`with_placement`).

Outputs are (rows, K). An element passes when |runtime - reference| <= Tolerance.bound (numpy's
allclose rule, with an absolute part that grows with the input's scale and is in the target's units
for a regression). Labels must agree as well: binary, probability > 0.5; multi-class, the argmax.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..errors import DeviceUnavailable, EquivalenceFailed, UsageError
from ..graph.contract import check_served, parse_checked
from ..spec.archs import THRESHOLD, XOR_FEATURES, XOR_X, XOR_Y, Arch, label_indices
from ..spec.encoding import CATEGORY, NUMBER, STRING, ColumnCode, Encoding, raw_len, raw_rows
from ..spec.limits import FLOAT32_MAX, WIDE_FACTOR  # the wide set: [min - 10 range, max + 10 range]
from ..store import artifacts as A
from ..store.manifest import ProvidersRecord, ServeCheckRecord, VerifyRecord
from ..training.model import load_model, load_trained
from .runtimes import (
    RUNNER_NAMES,
    CannotRun,
    ProviderReport,
    Runner,
    node_placement,
    ort_runner,
    reference_runner,
    torch_runner,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

INPUT_SCALE_CAP = 100.0  # beyond |x| = 100 the first layer's sigmoids/tanhs of trained models are saturated
SATURATING = ("sigmoid", "tanh")  # hidden activations after which the allowance stops growing (see bound)
# ReLU and GELU saturate nowhere: on the wide sets their measured fp32 error came within 9-11x of the CPU
# atol (docs/verification.md), so their models get twice the per-runtime atol.
ACTIVATION_ATOL_FACTOR = {"sigmoid": 1.0, "tanh": 1.0, "relu": 2.0, "gelu": 2.0}
REL_FLOOR = 1e-6  # max_rel = |a - b| / max(|reference|, REL_FLOOR): values near 0 do not explode
EDGE_VALUES = (0.0, -0.0, 1e-30, -1e-30, 1e-45, 0.5, 1.0, -1.0, 1e30, -1e30)  # 1e-45: fp32 denormal
WIDE_RANGE = 50.0  # built-ins: the sigmoid saturates well inside [-50, 50]
# Recipes: each of these for one feature at a time (plus the feature's min, max and 10x beyond).
DATA_EDGE_VALUES = (0.0, -0.0, 1e-30, -1e-30, 1e-45, 1.0, -1.0, 1e30, -1e30)
VALIDATION_CAP = 65536  # at most this many validation rows (a seeded sample beyond it)
BATCHES = (1, 4, 1000, 65536)
SERVE_BATCHES = (1, 4, 1000)
XOR_KINDS = ("xor", "uniform", "wide", "edge")
DATA_KINDS = ("validation", "uniform", "wide", "edge")
# A model with an encoding (raw columns in: spec.encoding) is checked on raw rows (encoded_input_sets).
ENCODED_KINDS = ("validation", "missing", "unseen", "categories", "dates", "mixed", "uniform", "wide", "edge")
SERVE_ENCODED_KINDS = ("validation", "missing", "unseen", "mixed")
# Text never seen in training (each kept only where it is not one of the column's categories): a made-up
# value, blanks, a missing-value token the graph does not know, unicode, a slash and a space.
UNSEEN_TEXT = ("__unseen__", " ", "  ", "NA", "Ünïcödé 🐧", "a/b c", "0", "-")
UNSEEN_BOOLEAN = ("maybe", "yes", "t", "f", "TRUE ", " true", "tRuE", "2", "-1", "1.0")
# Dates: unparseable strings, impossible days, the pattern's edges and boundaries (years, leap days).
DATE_STRINGS = (
    "not a date", "NA", " ", "2021-13-01", "2021-00-10", "2021-01-00", "2021-02-30", "2021-02-31", "2021-04-31",
    "2020-02-29", "2019-02-29", "1900-02-29", "2000-02-29", "1899-12-31", "1900-01-01", "1969-12-31",
    "1970-01-01", "1999-12-31", "2000-01-01", "2038-01-19", "0000-01-01", "0001-01-01", "9999-12-31",
    "2020-1-1", " 2020-01-01", "2020-01-01 ", "２０２０-01-01", "2020/01/01", "20200101", "2020-01-01T",
    "2020-01-01T23:59:59Z", "2020-01-01 00:00", "2020-01-01T24:00:00", "2020-12-31T23:59:59.999999999Z",
    "2020-01-01T12:30:00+00:00", "2020-01-01T12:30:00+01:00", "2020-01-01T12:30:00.5", "2020-01-01T12:60",
)  # fmt: skip
# The reference evaluator's string operators are pure Python (StringSplit: ~50 us a row): on a graph that
# takes text it runs the sets of at most this many rows, and its detail names the sets it left out.
TEXT_REFERENCE_ROWS = 4096
BASE_ROWS = 4  # the missing set: the typical row and up to this many validation rows, each column missing in turn
MIXED_MISSING, MIXED_ODD = 0.2, 0.05  # mixed sets: a cell is missing / unseen or unparseable with these odds
WORST_INPUT_FEATURES = 8  # a comparison records at most this many features of its worst row
CUDA_ALIAS = ("torch-cuda", "ort-cuda")
REQUIRE_CHOICES: tuple[str, ...] = (*RUNNER_NAMES, "cuda")  # `--require cuda` means both CUDA runtimes


# ---------------------------------------------------------------------------------------------
# The data a recipe's model is checked on (duck-typed: `pipeline.data.Dataset` fits)


class FeatureStatsLike(Protocol):
    """Per-feature statistics over the training rows (tuples of floats, one per feature)."""

    @property
    def mean(self) -> Sequence[float]: ...
    @property
    def std(self) -> Sequence[float]: ...
    @property
    def min(self) -> Sequence[float]: ...
    @property
    def max(self) -> Sequence[float]: ...


class DataLike(Protocol):
    """What verify reads from a dataset: its feature names, the validation rows (raw float32,
    (rows, F)) and the training rows' feature statistics. A regression without an in-graph
    un-standardization also reads `y` and `train_rows` (for the target's std: the tolerance's unit)."""

    @property
    def features(self) -> Sequence[str]: ...
    @property
    def x_val(self) -> Any: ...
    @property
    def stats(self) -> FeatureStatsLike: ...


# ---------------------------------------------------------------------------------------------
# Tolerances


@dataclass(frozen=True)
class Tolerance:
    """Allowed |runtime - reference| per output element:

        atol * unit * s + rtol * |reference|

    where `s` is the row's largest |x| as the model's first Gemm sees it (standardized with
    `input_mean` / `input_std` when the model standardizes in-graph, raw otherwise), clipped to
    [1, input_cap]; `unit` is the output's unit (the target's std for a regression, 1 for
    probabilities). `atol` is therefore "per unit of input scale, per unit of output". The per-runtime
    numbers (TOLERANCES) have unit 1, no standardization and the sigmoid's cap; `for_model` fits them
    to one model (`Scaling`).
    """

    atol: float
    rtol: float
    basis: str  # where the numbers come from
    unit: float = 1.0
    input_cap: float = INPUT_SCALE_CAP  # math.inf: the allowance grows without bound (ReLU, GELU)
    input_mean: tuple[float, ...] | None = field(default=None, repr=False)
    input_std: tuple[float, ...] | None = field(default=None, repr=False)

    def input_scale(self, x: np.ndarray) -> np.ndarray:
        """(rows,): the row's largest |x| as the first Gemm sees it, clipped to [1, input_cap]."""
        import numpy as np

        x64 = np.asarray(x, dtype=np.float64)
        if x64.ndim == 1:
            x64 = x64.reshape(1, -1)
        if self.input_mean is not None and self.input_std is not None:
            std = np.asarray(self.input_std, dtype=np.float64)
            x64 = (x64 - np.asarray(self.input_mean, dtype=np.float64)) / np.where(std == 0, 1.0, std)
        with np.errstate(invalid="ignore"):
            biggest = np.max(np.abs(x64), axis=1) if x64.shape[1] else np.zeros(x64.shape[0])
        return np.clip(np.nan_to_num(biggest, nan=1.0, posinf=np.inf), 1.0, self.input_cap)

    def bound(self, reference: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Allowed |runtime - reference|, shaped like `reference`: (rows,) or (rows, K), for the raw
        inputs x (rows, F) that produced it."""
        import numpy as np

        ref = np.abs(np.asarray(reference, dtype=np.float64))
        scale = self.input_scale(x)
        scale = scale.reshape(scale.shape + (1,) * (ref.ndim - 1))
        # fp32 rounding in the first Gemm grows with |x| (|w . x| is up to |w| |x|): the absolute
        # allowance grows linearly with the row's largest |x|, from 1 up to input_cap.
        with np.errstate(over="ignore", invalid="ignore"):
            return self.atol * self.unit * scale + self.rtol * ref

    def for_model(self, scaling: Scaling, scale_atol: bool = True) -> Tolerance:
        """This tolerance fitted to one model: its standardization, output unit, input cap and (unless
        `scale_atol` is False, as for an atol set on the command line) its activation's atol factor."""
        factor = scaling.atol_factor if scale_atol else 1.0
        basis = self.basis if factor == 1.0 else f"{self.basis}; x{factor:g} for a non-saturating activation"
        return Tolerance(
            self.atol * factor,
            self.rtol,
            basis,
            unit=scaling.unit,
            input_cap=scaling.input_cap,
            input_mean=scaling.input_mean,
            input_std=scaling.input_std,
        )

    def record(self) -> dict[str, Any]:
        """What the report records (JSON-safe: an unbounded cap is null)."""
        return {
            "atol": self.atol,
            "rtol": self.rtol,
            "basis": self.basis,
            "unit": self.unit,
            "input_cap": None if math.isinf(self.input_cap) else self.input_cap,
            "standardized_inputs": self.input_mean is not None,
        }


@dataclass(frozen=True)
class Scaling:
    """What a model's tolerance needs to know about it: the in-graph standardization (the first Gemm
    sees (x - mean) / std), the output's unit, and whether its hidden activations saturate (the input
    cap, and the atol factor: ACTIVATION_ATOL_FACTOR)."""

    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    unit: float = 1.0
    input_cap: float = INPUT_SCALE_CAP
    atol_factor: float = 1.0


def model_scaling(model: Any, arch: Arch, data: Any = None) -> Scaling:
    """The `Scaling` of `model` (a `build_model` Sequential): the standardization is read from its first
    layer's buffers, the regression unit from its last layer's (`Unstandardize.std`); a regression
    without in-graph un-standardization takes the std of the training targets (`data.y[data.train_rows]`)
    when `data` is given, else 1."""
    import numpy as np

    mean = std = None
    if arch.scale_input:
        mean = tuple(float(v) for v in model[0].mean.detach().cpu().double())
        std = tuple(float(v) for v in model[0].std.detach().cpu().double())
    unit = 1.0
    if arch.task == "regression":
        if arch.scale_output:
            unit = abs(float(model[-1].std.detach().cpu().double().reshape(-1)[0]))
        elif data is not None and getattr(data, "y", None) is not None:
            y = np.asarray(data.y, dtype=np.float64)
            rows = getattr(data, "train_rows", None)
            y = y[np.asarray(rows)] if rows is not None else y
            unit = float(np.std(y)) if y.size else 1.0
        if not math.isfinite(unit) or unit <= 0:
            unit = 1.0
    cap = INPUT_SCALE_CAP if arch.activation in SATURATING else math.inf
    return Scaling(mean, std, unit, cap, ACTIVATION_ATOL_FACTOR.get(arch.activation, 1.0))


# Built-ins: measured with `python cli.py verify --arch all --atol 1 --rtol 1` over both archs, three
# seeds each, all input sets: fp32 runtimes (torch, onnxruntime, ReferenceEvaluator) differ from the
# float64 oracle by at most 6e-7 per unit of the input scale; atol 5e-6 gives about 8x headroom.
# Recipes: measured with `python tools/measure_tolerances.py` (measure_tolerances: every head x activation, four
# random models each, all of verify's input sets; docs/verification.md): with these numbers (and twice the
# atol for ReLU / GELU, ACTIVATION_ATOL_FACTOR) every measured error is at least 17x below its bound.
FP32 = Tolerance(
    atol=5e-6,
    rtol=1e-5,
    basis="measured max |fp32 - fp64| 6e-7 per unit input scale on the CPU; ~8x headroom",
)
TOLERANCES: dict[str, Tolerance] = {
    "torch-cpu": FP32,
    "ort-cpu": FP32,
    "onnx-reference": FP32,
    # CUDA kernels (cuBLAS GEMM with TF32 off, __expf-based sigmoid) round differently from the CPU;
    # not measured on a card from this machine (docs/gpu.md): allow 10x the CPU tolerance.
    "torch-cuda": Tolerance(5e-5, 1e-4, "fp32 on CUDA, TF32 off; 10x the CPU tolerance until measured on a card"),
    "ort-cuda": Tolerance(5e-5, 1e-4, "fp32 on CUDA, TF32 off; 10x the CPU tolerance until measured on a card"),
}


# ---------------------------------------------------------------------------------------------
# Input sets


@dataclass(frozen=True)
class InputSet:
    """Rows a model is checked on. `x` holds them as the ONNX file takes them (`spec.encoding.Raw`): a
    (rows, F) float32 matrix (NaN = missing for an encoded model), or, for a graph with one input per
    column, a mapping column -> (rows,) array (float32, or str with "" for missing). `encoded`: for a
    model with an encoding, the numpy reference's encoding of `x` (rows, width) float32, what the
    network's first layer takes; None for the others (x is what it takes)."""

    name: str
    description: str
    seed: int | None
    x: Any = field(repr=False)
    expected_labels: tuple[int, ...] | None = None
    encoded: np.ndarray | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        return raw_len(self.x)

    @property
    def features(self) -> np.ndarray:
        """(rows, n) float: what the network's first layer sees before its standardization (the
        tolerance's input scale is read from it)."""
        return self.encoded if self.encoded is not None else self.x

    @property
    def n_inputs(self) -> int:
        """Raw features per row."""
        if isinstance(self.x, Mapping):
            return len(self.x)
        return int(self.x.shape[1]) if self.x.ndim == 2 else 1

    def row(self, i: int) -> tuple[float | str, ...]:
        """Row i's raw values, in feature order (numbers as float, text as str)."""
        if isinstance(self.x, Mapping):
            return tuple(v if isinstance(v, str) else float(v) for v in (a[i] for a in self.x.values()))
        return tuple(float(v) for v in self.x[i].reshape(-1))

    def take(self, rows: Any) -> Any:
        """Rows `rows` (an index array or slice) of x, as the graph takes them."""
        return raw_rows(self.x, rows)

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "seed": self.seed, "rows": self.rows}


def _holds_only_xor_points(data: Any) -> bool:
    import numpy as np

    x = np.asarray(getattr(data, "x", np.empty((0, 0))))
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] == 0:
        return False
    return {tuple(float(v) for v in row) for row in x.tolist()} <= set(XOR_X)


def is_builtin_xor(arch: Arch | None, data: Any = None) -> bool:
    """The tutorial's case, checked on the tutorial's input sets: a Linear/Sigmoid stack on the XOR
    features (`arch.is_tutorial_stack`, features x1, x2) whose data is the XOR points themselves (no
    dataset, or one holding nothing but the four points). `arch=None` with no data means the same."""
    if arch is None:
        return data is None
    if not (arch.is_tutorial_stack and tuple(arch.features) == XOR_FEATURES):
        return False
    return data is None or _holds_only_xor_points(data)


def on_xor_points(arch: Arch | None, data: Any = None) -> bool:
    """A model trained on the built-in XOR points (`[data] builtin = "xor"`: no dataset, the XOR
    features): the tutorial's input sets fit it, whatever its network. Only the tutorial's own stack
    (`is_builtin_xor`) must also get the XOR labels right."""
    return is_builtin_xor(arch, data) or (data is None and arch is not None and tuple(arch.features) == XOR_FEATURES)


def _needs_data(arch: Arch) -> UsageError:
    return UsageError(
        f"verifying {arch.name} needs its data: its input sets are drawn from the validation rows and the "
        "training statistics (pass the dataset the recipe was trained on)"
    )


def xor_input_sets(
    seed: int = 0, batches: tuple[int, ...] = BATCHES, kinds: Sequence[str] = XOR_KINDS
) -> list[InputSet]:
    """The built-ins' sets: XOR points, uniform [0, 1], wide [-50, 50], all pairs of EDGE_VALUES. Each
    random set's seed is `seed` plus its position, and is recorded."""
    import numpy as np

    sets: list[InputSet] = []
    if "xor" in kinds:
        sets.append(InputSet("xor", "the four XOR points", None, np.array(XOR_X, dtype=np.float32), tuple(XOR_Y)))
    n = 0
    for kind, low, high in (("uniform", 0.0, 1.0), ("wide", -WIDE_RANGE, WIDE_RANGE)):
        if kind not in kinds:
            continue
        for batch in batches:
            s = seed + n
            n += 1
            x = np.random.default_rng(s).uniform(low, high, size=(batch, 2)).astype(np.float32)
            sets.append(InputSet(f"{kind}-{batch}", f"uniform [{low:g}, {high:g}], {batch} rows", s, x))
    if "edge" in kinds:
        v = np.array(EDGE_VALUES, dtype=np.float32)
        x = np.stack(np.meshgrid(v, v, indexing="ij"), axis=-1).reshape(-1, 2)
        sets.append(InputSet("edge", "all pairs of " + ", ".join(f"{e:g}" for e in EDGE_VALUES), None, x))
    return sets


def _to_float32(a: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.clip(a, -FLOAT32_MAX, FLOAT32_MAX).astype(np.float32)


def data_input_sets(
    arch: Arch,
    data: DataLike,
    seed: int = 0,
    batches: tuple[int, ...] = BATCHES,
    kinds: Sequence[str] | None = None,
    validation_cap: int = VALIDATION_CAP,
) -> list[InputSet]:
    """A recipe's sets, drawn from its data. A model with an encoding gets raw rows
    (`encoded_input_sets`); the others (reads `data.x_val` and `data.stats`):

    - `validation`: the validation rows (a seeded sample of `validation_cap` rows when there are more;
      left out when there are none);
    - `uniform-<batch>`: uniform within each feature's training [min, max];
    - `wide-<batch>`: uniform within [min - 10 range, max + 10 range] per feature (range = max - min,
      or max(|min|, 1) for a constant feature);
    - `edge`: for each feature, each of DATA_EDGE_VALUES, its min, max, min - 10 range and
      max + 10 range, the other features at their training mean.

    All float32, (rows, F). Each random set's seed is `seed` plus its position, and is recorded.
    """
    import numpy as np

    if arch.encoding is not None:
        raw_data = cast(RawDataLike, data)
        return encoded_input_sets(
            arch, raw_data, seed, batches, ENCODED_KINDS if kinds is None else kinds, validation_cap
        )
    kinds = DATA_KINDS if kinds is None else kinds
    stats = data.stats
    mean, lo, hi = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (stats.mean, stats.min, stats.max))
    n_features = arch.n_inputs
    names = tuple(getattr(data, "features", arch.features))
    if names != tuple(arch.features):
        raise UsageError(
            f"verifying {arch.name}: its data's features {list(names)[:8]} are not the model's {list(arch.features)[:8]}"
        )
    if not (mean.size == lo.size == hi.size == n_features):
        raise UsageError(
            f"verifying {arch.name}: its data has statistics for {mean.size} features, the model takes {n_features}"
        )
    span = hi - lo
    span = np.where(span > 0, span, np.maximum(np.abs(lo), 1.0))
    wide_lo, wide_hi = lo - WIDE_FACTOR * span, hi + WIDE_FACTOR * span
    sets: list[InputSet] = []
    n = 0
    if "validation" in kinds:
        xv = np.asarray(data.x_val, dtype=np.float32).reshape(-1, n_features)
        total = xv.shape[0]
        if total > validation_cap:
            s = seed + n
            n += 1
            pick = np.sort(np.random.default_rng(s).choice(total, size=validation_cap, replace=False))
            sets.append(
                InputSet("validation", f"{validation_cap} of the {total} validation rows (seeded sample)", s, xv[pick])
            )
        elif total:
            sets.append(InputSet("validation", f"the {total} validation rows", None, np.ascontiguousarray(xv)))
    for kind, low, high, what in (
        ("uniform", lo, hi, "within each feature's training [min, max]"),
        ("wide", wide_lo, wide_hi, f"within [min - {WIDE_FACTOR:g} range, max + {WIDE_FACTOR:g} range] per feature"),
    ):
        if kind not in kinds:
            continue
        for batch in batches:
            s = seed + n
            n += 1
            x = _to_float32(np.random.default_rng(s).uniform(low, high, size=(batch, n_features)))
            sets.append(InputSet(f"{kind}-{batch}", f"uniform {what}, {batch} rows", s, x))
    if "edge" in kinds:
        rows = []
        for f in range(n_features):
            for v in (*DATA_EDGE_VALUES, lo[f], hi[f], wide_lo[f], wide_hi[f]):
                row = mean.copy()
                row[f] = v
                rows.append(row)
        x = _to_float32(np.array(rows, dtype=np.float64)) if rows else np.empty((0, n_features), np.float32)
        # -0.0 survives: np.clip and astype keep the sign bit
        values = ", ".join(f"{e:g}" for e in DATA_EDGE_VALUES)
        sets.append(
            InputSet(
                "edge",
                f"one feature at a time at {values}, its min, max, min - {WIDE_FACTOR:g} range and "
                f"max + {WIDE_FACTOR:g} range; the others at their training mean",
                None,
                x,
            )
        )
    return [s for s in sets if s.x.shape[0]]


class Encoder(Protocol):
    """Raw rows -> (rows, width) float32 encoded features (`spec.encoding.Encoding` fits)."""

    def encode(self, raw: Any) -> np.ndarray: ...


class KnownEncodings:
    """`Encoding.encode`, answered from the sets' own `encoded` for their very rows (the same numpy
    reference, computed once per set instead of once per runtime and run)."""

    def __init__(self, enc: Encoding, sets: Sequence[InputSet]) -> None:
        self._enc = enc
        self._known = {id(s.x): (s.x, s.encoded) for s in sets if s.encoded is not None}

    def encode(self, raw: Any) -> np.ndarray:
        hit = self._known.get(id(raw))
        if hit is not None and hit[0] is raw:
            return hit[1]
        return self._enc.encode(raw)


class RawColumnLike(Protocol):
    """A training column as read (`spec.encoding.RawColumn` fits)."""

    @property
    def name(self) -> str: ...
    def graph_values(self) -> np.ndarray: ...


class RawDataLike(Protocol):
    """What verify reads from the data of a model with an encoding (`spec.data.Dataset` fits): its
    features, each column as the graph takes it, and the split."""

    @property
    def features(self) -> Sequence[str]: ...
    @property
    def raw(self) -> Sequence[RawColumnLike]: ...
    @property
    def train_rows(self) -> Any: ...
    @property
    def val_rows(self) -> Any: ...


def _typical(c: ColumnCode, train: np.ndarray) -> Any:
    """The column's value in a typical row: a number's fill value (the training median or mean); the
    most frequent training category; the median training date (ISO strings sort as dates)."""
    import numpy as np

    if c.kind == NUMBER:
        return np.float32(c.impute[0])
    if c.dtype == STRING:
        present = [v for v in train.tolist() if isinstance(v, str) and v != ""]
        if c.kind == CATEGORY:
            if not present:
                return c.keys()[0][0]
            values, counts = np.unique(np.array(present, dtype=object), return_counts=True)
            return str(values[int(np.argmax(counts))])
        return sorted(present)[len(present) // 2] if present else "1970-01-01"
    codes = np.asarray(train, dtype=np.float32)
    codes = codes[~np.isnan(codes)]
    if not codes.size:
        return np.float32(c.categories[0])
    values, counts = np.unique(codes, return_counts=True)
    return np.float32(values[int(np.argmax(counts))])


def _unseen(c: ColumnCode) -> list[Any]:
    """Values of category column `c` that training never saw (none of its categories or spellings)."""
    import numpy as np

    if c.dtype == STRING:
        known = {k for k, _ in c.keys()}
        first = c.keys()[0][0]
        near = (first.upper(), first.lower(), first.swapcase(), f"{first} ", f" {first}", f"{first}/x")
        pool = UNSEEN_BOOLEAN if c.boolean else UNSEEN_TEXT
        return [v for v in dict.fromkeys((*pool, *near)) if v not in known]
    cats = np.array(c.categories, dtype=np.float32)
    lo, hi = float(cats.min()), float(cats.max())
    codes = (hi + 1.0, lo - 1.0, lo + 0.5, -lo - 7.0, 1e30, -1e30, 1e-45, 0.0, -0.0)
    return [v for v in dict.fromkeys(np.float32(p) for p in codes) if not np.any(cats == v)]


def _column(c: ColumnCode, values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """(rows,) as the graph takes column `c`: float32, or an object array of str."""
    import numpy as np

    if c.dtype == STRING:
        out = np.empty(len(values), dtype=object)
        out[:] = [str(v) for v in values]
        return out
    return np.asarray(values, dtype=np.float32)


def encoded_input_sets(
    arch: Arch,
    data: RawDataLike,
    seed: int = 0,
    batches: tuple[int, ...] = BATCHES,
    kinds: Sequence[str] = ENCODED_KINDS,
    validation_cap: int = VALIDATION_CAP,
) -> list[InputSet]:
    """The sets of a model with an encoding: RAW rows, as its ONNX file takes them (a float32 matrix
    with NaN for missing, or one array per column for a graph that takes text), each with the numpy
    reference's encoding (`InputSet.encoded`). A "typical" value per column (`_typical`) fills what a
    set does not vary.

    - `validation`: the validation rows (a seeded sample of `validation_cap` when there are more);
    - `missing`: the typical row and up to BASE_ROWS validation rows with each column missing in turn
      (NaN for numbers and numeric codes, "" for text, booleans and dates), then with every column missing;
    - `unseen`: per category column, values training never saw (`_unseen`: made-up text, blanks,
      unicode, near-misses of a category, other spellings of a boolean, codes off the list);
    - `categories`: per category column, each category (each accepted spelling of a boolean);
    - `dates`: per date column, DATE_STRINGS (unparseable strings, impossible days, boundaries);
    - `mixed-<batch>`: validation rows drawn at random, each cell missing with odds MIXED_MISSING and a
      category or date cell unseen or unparseable with odds MIXED_ODD;
    - `uniform-<batch>` / `wide-<batch>` / `edge`: as for a model without an encoding, on the number
      columns (their training [min, max] over present values), the other columns typical.

    Each random set's seed is `seed` plus its position, and is recorded. Sets with no rows are left out.
    """
    import numpy as np

    enc = arch.encoding
    assert enc is not None
    names = tuple(getattr(data, "features", ()))
    if names != tuple(arch.features):
        raise UsageError(
            f"verifying {arch.name}: its data's features {list(names)[:8]} are not the model's {list(arch.features)[:8]}"
        )
    columns = {c.name: np.asarray(c.graph_values()).reshape(-1) for c in data.raw}
    if set(enc.features) - set(columns):
        raise UsageError(
            f"verifying {arch.name}: its data has no raw columns for {sorted(set(enc.features) - set(columns))[:8]}"
        )
    train, val = np.asarray(data.train_rows, dtype=np.int64), np.asarray(data.val_rows, dtype=np.int64)
    typical = {c.name: _typical(c, columns[c.name][train]) for c in enc.columns}
    missing = {c.name: "" if c.dtype == STRING else np.float32(np.nan) for c in enc.columns}

    def build(name: str, description: str, s: int | None, cols: Mapping[str, Sequence[Any] | np.ndarray]) -> InputSet:
        as_graph = {c.name: _column(c, cols[c.name]) for c in enc.columns}
        x: Any = as_graph if enc.per_column else np.stack([as_graph[f] for f in enc.features], axis=1)
        return InputSet(name, description, s, x, encoded=enc.encode(x))

    def varying(changes: Sequence[tuple[str, Any]]) -> dict[str, list[Any]]:
        """One row per (column, value): the typical row with that column at that value."""
        return {c.name: [v if f == c.name else typical[c.name] for f, v in changes] for c in enc.columns}

    n = 0  # random sets so far: each one's seed is `seed` plus its position

    def seed_at() -> int:
        nonlocal n
        n += 1
        return seed + n - 1

    sets: list[InputSet] = []
    picked = val
    if "validation" in kinds and val.size:
        sample: int | None = None
        what = f"the {val.size} validation rows, raw"
        if val.size > validation_cap:
            sample = seed_at()
            picked = np.sort(np.random.default_rng(sample).choice(val, size=validation_cap, replace=False))
            what = f"{validation_cap} of the {val.size} validation rows (seeded sample), raw"
        sets.append(build("validation", what, sample, {f: v[picked] for f, v in columns.items()}))
    if "missing" in kinds:
        base = {c.name: [typical[c.name], *columns[c.name][val[:BASE_ROWS]].tolist()] for c in enc.columns}
        b = len(next(iter(base.values())))
        cols: dict[str, Any] = {c.name: [] for c in enc.columns}
        for gone in [*([f] for f in enc.features), list(enc.features)]:
            for c in enc.columns:
                cols[c.name] += [missing[c.name]] * b if c.name in gone else base[c.name]
        sets.append(
            build(
                "missing",
                f"the typical row and {b - 1} validation rows with each column missing in turn (NaN for numbers,"
                ' "" for text and dates), then every column missing',
                None,
                cols,
            )
        )
    category_cols = [c for c in enc.columns if c.kind == CATEGORY]
    if "unseen" in kinds and category_cols:
        changes = [(c.name, v) for c in category_cols for v in _unseen(c)]
        sets.append(
            build(
                "unseen",
                "per category column, values never seen in training; the others typical",
                None,
                varying(changes),
            )
        )
    if "categories" in kinds and category_cols:
        changes = [
            (c.name, k if c.dtype == STRING else np.float32(k))
            for c in category_cols
            for k in ([k for k, _ in c.keys()] if c.dtype == STRING else c.categories)
        ]
        sets.append(
            build(
                "categories", "per category column, each category (each spelling of a boolean)", None, varying(changes)
            )
        )
    date_cols = [c for c in enc.columns if c.kind != NUMBER and c.kind != CATEGORY]
    if "dates" in kinds and date_cols:
        changes = [(c.name, v) for c in date_cols for v in DATE_STRINGS]
        sets.append(
            build(
                "dates",
                "per date column, unparseable strings, impossible days and boundaries; the others typical",
                None,
                varying(changes),
            )
        )
    if "mixed" in kinds:
        pool = val if val.size else train
        for batch in batches:
            s = seed_at()
            rng = np.random.default_rng(s)
            rows = rng.choice(pool, size=batch, replace=True)
            cols = {}
            for c in enc.columns:
                v = columns[c.name][rows].astype(object if c.dtype == STRING else np.float32)
                odd = [*_unseen(c)] if c.kind == CATEGORY else list(DATE_STRINGS) if c.kind != NUMBER else []
                draw = rng.random(batch)
                if odd:
                    hit = draw < MIXED_ODD
                    v[hit] = [odd[i] for i in rng.integers(0, len(odd), size=int(hit.sum()))]
                v[(draw >= MIXED_ODD) & (draw < MIXED_ODD + MIXED_MISSING)] = missing[c.name]
                cols[c.name] = v
            sets.append(
                build(
                    f"mixed-{batch}",
                    f"{batch} validation rows drawn at random, each cell missing with odds {MIXED_MISSING:g} and a"
                    f" category or date unseen or unparseable with odds {MIXED_ODD:g}",
                    s,
                    cols,
                )
            )
    numbers = [c for c in enc.columns if c.kind == NUMBER]
    if numbers:
        present = [columns[c.name][train].astype(np.float64) for c in numbers]
        lo = np.array([np.nanmin(v) for v in present])
        hi = np.array([np.nanmax(v) for v in present])
        span = hi - lo
        span = np.where(span > 0, span, np.maximum(np.abs(lo), 1.0))
        wide_lo, wide_hi = lo - WIDE_FACTOR * span, hi + WIDE_FACTOR * span
        for kind, low, high, what in (
            ("uniform", lo, hi, "within each number column's training [min, max]"),
            (
                "wide",
                wide_lo,
                wide_hi,
                f"within [min - {WIDE_FACTOR:g} range, max + {WIDE_FACTOR:g} range] per number column",
            ),
        ):
            if kind not in kinds:
                continue
            for batch in batches:
                s = seed_at()
                draws = _to_float32(np.random.default_rng(s).uniform(low, high, size=(batch, len(numbers))))
                cols = {c.name: [typical[c.name]] * batch for c in enc.columns}
                cols.update({c.name: draws[:, j] for j, c in enumerate(numbers)})
                sets.append(
                    build(f"{kind}-{batch}", f"uniform {what}, the other columns typical, {batch} rows", s, cols)
                )
        if "edge" in kinds:
            changes = [
                (c.name, v)
                for j, c in enumerate(numbers)
                for v in _to_float32(np.array([*DATA_EDGE_VALUES, lo[j], hi[j], wide_lo[j], wide_hi[j]]))
            ]
            values = ", ".join(f"{e:g}" for e in DATA_EDGE_VALUES)
            sets.append(
                build(
                    "edge",
                    f"one number column at a time at {values}, its min, max, min - {WIDE_FACTOR:g} range and "
                    f"max + {WIDE_FACTOR:g} range; the other columns typical",
                    None,
                    varying(changes),
                )
            )
    return [s for s in sets if s.rows]


def input_sets(
    arch: Arch | None = None,
    data: Any = None,
    *,
    seed: int = 0,
    batches: tuple[int, ...] = BATCHES,
    kinds: Sequence[str] | None = None,
    validation_cap: int = VALIDATION_CAP,
) -> list[InputSet]:
    """The sets `verify` checks `arch` on: the tutorial's for the built-in XOR models (`is_builtin_xor`;
    `input_sets()` with no arguments gives those), else drawn from `data` (`data_input_sets`; raw rows
    for a model with an encoding, `encoded_input_sets`). `kinds` None: every kind there is. Raises
    UsageError when a recipe's model comes without its data."""
    if on_xor_points(arch, data):
        sets = xor_input_sets(seed, batches, XOR_KINDS if kinds is None else kinds)
        if is_builtin_xor(arch, data):
            return sets
        return [dataclasses.replace(s, expected_labels=None) for s in sets]  # equivalence, not XOR itself
    if arch is None:
        raise UsageError("input sets drawn from data need the model's description (arch)")
    if data is None:
        raise _needs_data(arch)
    return data_input_sets(arch, data, seed, batches, kinds, validation_cap)


# ---------------------------------------------------------------------------------------------
# Report types


@dataclass(frozen=True)
class Runtime:
    """A runner (runtimes.Runner) judged with a tolerance."""

    runner: Runner
    tolerance: Tolerance
    max_rows: int | None = None  # sets with more rows are left out for this runtime (named in its detail)

    @property
    def name(self) -> str:
        return self.runner.name

    @property
    def detail(self) -> str:
        return self.runner.detail

    @property
    def deterministic(self) -> bool:
        return self.runner.deterministic

    def run(self, x: Any) -> np.ndarray:
        return self.runner.run(x)


@dataclass(frozen=True)
class Comparison:
    runtime: str
    input_set: str
    rows: int
    max_abs: float  # over every output element, in the output's units
    max_rel: float
    mean_abs: float
    worst_row: int
    worst_input: tuple[float | str, ...]  # the worst row's raw inputs, at most WORST_INPUT_FEATURES of them
    worst_value: float
    worst_reference: float
    rows_over_tolerance: int
    label_disagreements: int
    # binary: reference within tolerance of 0.5; multiclass: the reference's top two probabilities within
    # tolerance of each other (a near tie). Either label is then within tolerance.
    labels_near_threshold: int
    expected_labels_ok: bool
    shape: tuple[int, ...]  # the runtime's output shape
    expected_shape: tuple[int, ...]  # the reference's: (rows, outputs)
    passed: bool
    worst_column: int = 0  # the output column of the worst element
    task: str = "binary"  # binary | multiclass | regression: how labels were compared
    n_inputs: int = 2  # features per row (worst_input holds at most WORST_INPUT_FEATURES of them)
    worst_bound: float = 0.0  # what the tolerance allowed for the worst element
    rows_beyond_float32: int = 0  # non-finite outputs accepted where the float64 reference leaves fp32's range
    rows_not_finite: int = 0  # rows with an inf or NaN output where the reference is finite (a failure)


@dataclass(frozen=True)
class RuntimeCheck:
    runtime: str
    batch_consistency_max_abs: float  # row alone vs the same row inside a batch
    batch_consistent: bool
    repeatable: bool  # two runs, identical bytes
    repeat_required: bool
    passed: bool


@dataclass(frozen=True)
class EncodingCheck:
    """The graph's encoding (its tensor `graph.encoding_graph.ENCODED`, run in onnxruntime on the CPU)
    against the numpy reference (`Encoding.encode`) on every input set, bit for bit."""

    rows: int  # rows compared, over every set
    sets: int
    equal: bool
    first_difference: str | None = None  # the first set, row and encoded column that differ
    rows_differing: int = 0

    @property
    def line(self) -> str:
        if self.equal:
            return f"encoding: graph == numpy reference on {self.rows} rows ({self.sets} input sets, bit for bit)"
        more = f" ({self.rows_differing} of {self.rows} rows differ)" if self.rows_differing else ""
        return f"encoding: {self.first_difference}{more}"

    def record(self) -> dict[str, Any]:
        return asdict(self) | {"line": self.line}


@dataclass(frozen=True)
class Report:
    kind: str  # "verify" or "serve-check"
    name: str  # the model's name (the report's key on disk: "arch")
    onnx_sha256: str
    reference: str
    rel_floor: float
    tolerances: dict[str, dict]
    input_sets: list[dict]
    ran: dict[str, str]  # runtime -> detail
    skipped: dict[str, str]  # runtime -> reason
    required_missing: list[str]
    comparisons: list[Comparison]
    checks: list[RuntimeCheck]
    seconds: float
    encoding: EncodingCheck | None = None  # models with an encoding: the graph's against the numpy reference

    @property
    def passed(self) -> bool:
        return (
            not self.required_missing
            and bool(self.comparisons)
            and all(c.passed for c in self.comparisons)
            and all(c.passed for c in self.checks)
            and (self.encoding is None or self.encoding.equal)
        )

    def worst(self, runtime: str | None = None) -> Comparison | None:
        rows = [c for c in self.comparisons if runtime is None or c.runtime == runtime]
        return max(rows, key=lambda c: c.max_abs, default=None)

    def failures(self) -> list[str]:
        out = [
            f"required runtime {r} did not run: {self.skipped.get(r, 'not available')}" for r in self.required_missing
        ]
        if self.encoding is not None and not self.encoding.equal:
            out.append(self.encoding.line)
        for c in self.comparisons:
            if not c.passed:
                why = []
                if c.rows_not_finite:
                    why.append(f"{c.rows_not_finite} rows with a non-finite output (inf or NaN)")
                if c.rows_over_tolerance:
                    why.append(f"{c.rows_over_tolerance} rows over tolerance")
                if c.label_disagreements:
                    what = "argmax labels" if c.task == "multiclass" else "labels"
                    why.append(f"{c.label_disagreements} {what} disagree")
                if not c.expected_labels_ok:
                    why.append("XOR labels are not [0, 1, 1, 0]")
                if c.shape != c.expected_shape:
                    why.append(f"output shape {list(c.shape)} is not the expected {list(c.expected_shape)}")
                x = ", ".join(repr(v) if isinstance(v, str) else f"{v:.9g}" for v in c.worst_input)
                if c.n_inputs > len(c.worst_input):
                    x += f", ... ({c.n_inputs} features)"
                column = (
                    f" in output column {c.worst_column}"
                    if len(c.expected_shape) == 2 and c.expected_shape[1] > 1
                    else ""
                )
                out.append(
                    f"{c.runtime} on {c.input_set}: {', '.join(why)}; worst row {c.worst_row} "
                    f"x=[{x}] gave {c.worst_value:.9g}{column}, reference {c.worst_reference:.9g} "
                    f"(|diff| {c.max_abs:.3g}, allowed {c.worst_bound:.3g})"
                )
        for k in self.checks:
            if not k.batch_consistent:
                out.append(
                    f"{k.runtime}: a row run alone differs from the same row in a batch by {k.batch_consistency_max_abs:.3g}"
                )
            if k.repeat_required and not k.repeatable:
                out.append(f"{k.runtime}: two runs on the same input gave different bytes")
        return out

    def as_dict(self) -> dict:
        d = {("arch" if k == "name" else k): v for k, v in asdict(self).items()}  # verify.json's key: "arch"
        if self.encoding is not None:
            d["encoding"] = self.encoding.record()
        else:
            del d["encoding"]  # as before encodings existed
        d["passed"] = self.passed
        d["failures"] = self.failures()
        return d


# ---------------------------------------------------------------------------------------------
# The engine


def _as_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """(rows, K) float64 view of an output (a flat (rows,) is one column)."""
    import numpy as np

    return np.asarray(a, dtype=np.float64).reshape(rows, -1)


def _labels(
    task: str, out: np.ndarray, ref: np.ndarray, bound: np.ndarray, tol: Tolerance, x: np.ndarray, excused: np.ndarray
) -> tuple[np.ndarray, int, int]:
    """(runtime's labels per row, disagreements not forgiven, rows near a threshold / tie). Rows in
    `excused` (outside float32's range, see `beyond_float32`) are not counted as disagreements."""
    import numpy as np

    rows = ref.shape[0]
    if task == "regression" or rows == 0:
        return np.zeros(rows, dtype=np.int64), 0, 0
    if task == "binary":
        # either label is within tolerance when the reference is within tolerance of 0.5
        near = np.abs(ref - THRESHOLD) <= tol.bound(np.full_like(ref, THRESHOLD), x)
        labels, ref_labels = label_indices(task, out), label_indices(task, ref)  # the one label rule
        disagree = int(np.sum((labels != ref_labels) & ~near.any(axis=1) & ~excused))
        return labels, disagree, int(np.sum(near))
    # multiclass: argmax; a different argmax j is forgiven when the reference's top value and its value
    # at j are within their two bounds of each other (each may move by its bound: a near tie).
    idx = np.arange(rows)
    ref_top = label_indices(task, ref)
    with np.errstate(invalid="ignore"):
        out_top = label_indices(task, np.nan_to_num(out, nan=-np.inf))  # a NaN is never the top class
        gap = ref[idx, ref_top] - ref[idx, out_top]
        forgiven = gap <= bound[idx, ref_top] + bound[idx, out_top]
    disagree = int(np.sum((out_top != ref_top) & ~forgiven & ~excused))
    if ref.shape[1] > 1:
        order = np.argsort(ref, axis=1)
        first, second = order[:, -1], order[:, -2]
        near = ref[idx, first] - ref[idx, second] <= bound[idx, first] + bound[idx, second]
        n_near = int(np.sum(near))
    else:
        n_near = 0
    return out_top.astype(np.int64), disagree, n_near


def compare_one(
    runtime: Runtime,
    s: InputSet,
    out: np.ndarray,
    ref: np.ndarray,
    task: str | None = None,
    beyond: np.ndarray | None = None,
) -> Comparison:
    """One runtime's output on one set against the reference's, element-wise, (rows, K). `task`
    (binary | multiclass | regression) says how labels are compared; None: binary for one output
    column, multiclass for several. `beyond` (rows,): rows on which the float64 reference leaves
    float32's range (`beyond_float32`); there a runtime's non-finite output (the best fp32 can do) is
    accepted and counted (`rows_beyond_float32`), a finite one is compared as usual."""
    import numpy as np

    rows = s.rows
    ref_shape, out_shape = tuple(int(d) for d in ref.shape), tuple(int(d) for d in out.shape)
    shape_ok = out_shape == ref_shape  # (1, batch) is not (batch, 1), whatever the values
    ref64 = _as_rows(ref, rows)
    if not shape_ok and out.size != ref.size:
        out64 = np.full(ref64.shape, np.nan)  # nothing to compare element by element: every row fails
    else:
        out64 = _as_rows(out, rows)
    k = ref64.shape[1]
    task = task or ("binary" if k == 1 else "multiclass")
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(out64 - ref64)
        # a reference beyond float32's range: the fp32 runtime's same-signed infinity is its best answer
        overflow = np.isinf(out64) & (np.abs(ref64) > FLOAT32_MAX) & (np.sign(out64) == np.sign(ref64))
        diff[overflow] = 0.0
        diff[np.isnan(out64) != np.isnan(ref64)] = np.inf  # NaN where the reference has none is a failure
        diff = np.nan_to_num(diff, nan=0.0, posinf=np.inf)
        excused = np.zeros(rows, dtype=bool)
        if beyond is not None:
            excused = np.asarray(beyond, dtype=bool).reshape(rows) & ~np.isfinite(out64).all(axis=1)
            diff[excused[:, None] & ~np.isfinite(out64)] = 0.0
        # the reference's NaN gives no bound: a runtime's number where the reference has NaN fails
        bound = runtime.tolerance.bound(np.nan_to_num(ref64, nan=0.0), s.features)
        over = diff > bound
        rel = diff / np.maximum(np.abs(np.nan_to_num(ref64)), REL_FLOOR)
        excess = np.where(over, diff - bound, -np.inf)
    flat = int(np.argmax(excess)) if over.any() else int(np.argmax(diff)) if diff.size else 0
    worst_row, worst_col = divmod(flat, k) if k else (0, 0)
    labels, disagree, near = _labels(task, out64, ref64, bound, runtime.tolerance, s.features, excused)
    expected_ok = s.expected_labels is None or tuple(int(v) for v in labels) == s.expected_labels
    n_inputs = s.n_inputs
    worst_input = s.row(worst_row)[:WORST_INPUT_FEATURES] if rows else ()
    return Comparison(
        runtime=runtime.name,
        input_set=s.name,
        rows=rows,
        max_abs=float(diff.max()) if diff.size else 0.0,
        max_rel=float(rel.max()) if rel.size else 0.0,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        worst_row=worst_row,
        worst_input=worst_input,
        worst_value=float(out64[worst_row, worst_col]) if diff.size else float("nan"),
        worst_reference=float(ref64[worst_row, worst_col]) if diff.size else float("nan"),
        rows_over_tolerance=int(over.any(axis=1).sum()),
        label_disagreements=disagree,
        labels_near_threshold=near,
        expected_labels_ok=expected_ok,
        shape=out_shape,
        expected_shape=ref_shape,
        passed=not over.any() and disagree == 0 and expected_ok and shape_ok,
        worst_column=worst_col,
        task=task,
        n_inputs=n_inputs,
        worst_bound=float(bound[worst_row, worst_col]) if diff.size else 0.0,
        rows_beyond_float32=int(excused.sum()),
        rows_not_finite=int(np.sum(~np.isfinite(out64).all(axis=1) & np.isfinite(ref64).all(axis=1) & ~excused)),
    )


class Float64Pass:
    """The model in float64 on the CPU, run layer by layer: `reference(x)` is the oracle's output
    (what `torch_runtime(model, "cpu", "float64")` computes, to the bit) and `beyond(x)` marks the rows
    outside float32's range, both from one pass (the last input's pass is kept, so asking both for
    one set costs one forward pass, not two).

    A row is beyond float32 when, after some layer, it holds a value beyond float32's largest (3.4e38)
    or NaN, or when a Linear layer's sum of |w| |x| is beyond it (a float32 Gemm may overflow there
    even when the terms cancel). Such rows (an edge value of 1e30 on a feature with a tiny std, say)
    have no float32 answer: every fp32 runtime, torch included, gives inf or NaN. Each layer is first
    checked as a whole (its largest |value|, and |x|max times the largest row sum of |w|, against half
    of float32's largest); only a layer that fails that bound is checked row by row.

    `encoding`: x is raw rows (`spec.encoding.Raw`), encoded first by the numpy reference
    (`Encoding.encode`, float32, as in training); the network then runs in float64."""

    def __init__(self, model: Any, encoding: Encoder | None = None) -> None:
        import copy

        import torch

        self._model = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
        # per Linear layer: (|w|^T (in, out), the largest row sum of |w|) for the whole-layer bound
        self._abs_w = {
            id(layer): (layer.weight.detach().abs().T, float(layer.weight.detach().abs().sum(dim=1).max()))
            for layer in self._model
            if isinstance(layer, torch.nn.Linear) and layer.weight.numel()
        }
        self._encoding = encoding
        self._last: tuple[Any, np.ndarray, np.ndarray] | None = None  # (x, output, beyond)

    def _run(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np
        import torch

        if self._last is not None and self._last[0] is x:
            return self._last[1], self._last[2]
        safe = FLOAT32_MAX / 2  # a layer whose bound stays below this has no row beyond float32
        features = self._encoding.encode(x) if self._encoding is not None else x  # (rows, width) float32
        x64 = np.ascontiguousarray(features, dtype=np.float64)
        h = torch.from_numpy(x64 if x64.ndim == 2 else x64.reshape(x64.shape[0], -1))  # (rows, F)
        bad = torch.zeros(h.shape[0], dtype=torch.bool)
        with torch.no_grad():
            for layer in self._model:
                w = self._abs_w.get(id(layer))
                if w is not None and h.numel():
                    # NaN and inf fail the test: then the layer is checked row by row
                    if not _largest_abs(h) * w[1] <= safe:
                        bad |= (h.abs() @ w[0] > FLOAT32_MAX).any(dim=1)
                h = layer(h)
                if h.numel() and not _largest_abs(h) <= safe:
                    bad |= ~(h.abs() <= FLOAT32_MAX).all(dim=1)  # beyond float32's largest, or NaN
        out, mask = h.numpy(), bad.numpy()
        self._last = (x, out, mask)
        return out, mask

    def reference(self, x: Any) -> np.ndarray:
        """(rows, outputs) float64: the oracle's output for raw inputs x (rows, F), or raw rows."""
        return self._run(x)[0]

    def beyond(self, x: Any) -> np.ndarray:
        """(rows,) bool: the rows of x on which the float64 model leaves float32's range."""
        return self._run(x)[1]


def _largest_abs(h: Any) -> float:
    """max |h| over a whole non-empty tensor, NaN when it holds a NaN (one pass, no |h| copy)."""
    import torch

    lo, hi = (float(v) for v in torch.aminmax(h))
    return math.nan if math.isnan(lo) or math.isnan(hi) else max(-lo, hi)


def beyond_float32(model: Any, encoding: Encoder | None = None) -> Callable[[Any], np.ndarray]:
    """rows(x) -> (rows,) bool: the rows on which the model, run layer by layer in float64, leaves
    float32's range (`Float64Pass.beyond`)."""
    return Float64Pass(model, encoding).beyond


def check_runtime(runtime: Runtime, s: InputSet, batch_out: np.ndarray, samples: int = 16) -> RuntimeCheck:
    """Batch consistency on `samples` rows of `s` (every output column), and byte repeatability on the
    whole of `s`."""
    import numpy as np

    rows = s.rows
    if rows == 0 or batch_out.size == 0 or batch_out.size % rows or batch_out.shape[0] not in (rows, 1):
        # a wrong output shape: already failed by compare_one
        return RuntimeCheck(runtime.name, float("inf"), False, False, runtime.deterministic, False)
    idx = np.unique(np.linspace(0, rows - 1, num=min(samples, rows)).astype(int))
    inside = _as_rows(batch_out, rows)[idx]
    alone = np.concatenate([_as_rows(runtime.run(s.take(slice(i, i + 1))), 1) for i in idx])
    if alone.shape != inside.shape:
        return RuntimeCheck(runtime.name, float("inf"), False, False, runtime.deterministic, False)
    with np.errstate(invalid="ignore"):
        gaps = np.abs(alone - inside)
        gaps[np.isnan(alone) != np.isnan(inside)] = np.inf
        gaps = np.nan_to_num(gaps, nan=0.0, posinf=np.inf)
    gap = float(np.max(gaps))
    consistent = bool(np.all(gaps <= runtime.tolerance.bound(np.nan_to_num(inside, nan=0.0), s.features[idx])))
    again = runtime.run(s.x)
    repeatable = again.tobytes() == batch_out.tobytes()
    required = runtime.deterministic
    return RuntimeCheck(
        runtime.name, gap, consistent, repeatable, required, consistent and (repeatable or not required)
    )


def run_engine(
    *,
    kind: str,
    name: str,
    onnx_sha256: str,
    reference_name: str,
    reference: Callable[[np.ndarray], np.ndarray],
    runtimes: list[Runtime],
    sets: list[InputSet],
    check_set: str | None,
    skipped: dict[str, str] | None = None,
    required: Sequence[str] = (),
    task: str | None = None,
    beyond: Callable[[Any], np.ndarray] | None = None,
    encoding: EncodingCheck | None = None,
) -> Report:
    """Run every runtime on every set and compare with `reference` (named `reference_name`): a `kind`
    report ("verify" or "serve-check") on model `name` (its ONNX file's sha256). `check_set`: the set
    batch consistency and repeatability are checked on; `skipped`: runtimes that could not run and
    why (a runtime that raises CannotRun on some set joins them, its comparisons dropped: skipped,
    never passed); `required`: runtimes that must have run; `task`: how labels compare; `beyond(x)`
    marks the rows outside float32's range (see `compare_one`); `encoding`: the graph's encoding
    check, recorded in the report (a difference fails it). Keyword-only: thirteen things, each named."""
    start = time.perf_counter()
    refs: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for s in sets:  # set by set: a `Float64Pass` answers both for one set from one pass
        refs[s.name] = reference(s.x)
        if beyond is not None:
            masks[s.name] = beyond(s.x)
    comparisons: list[Comparison] = []
    checks: list[RuntimeCheck] = []
    skipped = dict(skipped or {})
    ran: dict[str, str] = {}
    for rt in runtimes:
        mine: list[Comparison] = []
        mine_checks: list[RuntimeCheck] = []
        left_out = [s.name for s in sets if rt.max_rows is not None and s.rows > rt.max_rows]
        try:
            for s in sets:
                if s.name in left_out:
                    continue
                out = rt.run(s.x)
                mine.append(compare_one(rt, s, out, refs[s.name], task, masks.get(s.name)))
                if s.name == check_set:
                    mine_checks.append(check_runtime(rt, s, out))
        except CannotRun as exc:
            skipped[rt.name] = str(exc)
            continue
        comparisons += mine
        checks += mine_checks
        ran[rt.name] = rt.detail + (
            f"; sets of at most {rt.max_rows} rows only, left out: {', '.join(left_out)}" if left_out else ""
        )
    return Report(
        kind=kind,
        name=name,
        onnx_sha256=onnx_sha256,
        reference=reference_name,
        rel_floor=REL_FLOOR,
        tolerances={rt.name: rt.tolerance.record() for rt in runtimes if rt.name in ran},
        input_sets=[s.as_dict() for s in sets],
        ran=ran,
        skipped=skipped,
        required_missing=[r for r in required if r not in ran],
        comparisons=comparisons,
        checks=checks,
        seconds=time.perf_counter() - start,
        encoding=encoding,
    )


# ---------------------------------------------------------------------------------------------
# Runtimes: runners from runtimes.py, each with its tolerance


def torch_runtime(
    model: Any,
    device: str,
    dtype_name: str = "float32",
    tol: Tolerance | None = None,
    name: str | None = None,
    encoding: Encoder | None = None,
) -> Runtime:
    """The torch model; with `encoding`, it takes raw rows, encoded first by the numpy reference."""
    runner = torch_runner(model, device, dtype_name, name, encoding=encoding)
    return Runtime(runner, tol or TOLERANCES.get(runner.name, FP32))


def ort_runtime(onnx: bytes | Path, provider: str, tol: Tolerance | None = None) -> tuple[Runtime, ProviderReport]:
    """(Runtime, ProviderReport). The runtime's name says what really ran, not what was asked."""
    runner = ort_runner(onnx, provider)
    assert runner.providers is not None
    return Runtime(runner, tol or TOLERANCES[runner.name]), runner.providers


def with_placement(
    rt: Runtime, providers: ProviderReport, onnx: bytes | Path, provider: str, x: Any
) -> tuple[Runtime, ProviderReport]:
    """The onnxruntime runtime and its ProviderReport, each saying where the graph's nodes really ran
    (`runtimes.node_placement`: a profiled run of raw rows `x` with the same `provider`): the string
    operators of an encoding run on the CPU provider whatever was asked, and the report says so."""
    summary = node_placement(onnx, provider, x).summary
    runner = dataclasses.replace(rt.runner, detail=f"{rt.runner.detail}; {summary}")
    placed = dataclasses.replace(providers, placement=summary)
    return Runtime(dataclasses.replace(runner, providers=placed), rt.tolerance), placed


def graph_encoding_check(model: Any, enc: Encoding, sets: Sequence[InputSet]) -> EncodingCheck:
    """The graph's own encoding against the numpy reference, bit for bit, on every set: a copy of the
    model (a ModelProto, or its bytes or path) with `graph.encoding_graph.ENCODED` (the network's input
    inside the merged graph) added as a graph output, run in onnxruntime on the CPU provider, compared
    with `InputSet.encoded` (`Encoding.encode`). One line names the first set, row and encoded column
    that differ."""
    import numpy as np
    import onnx as onnx_lib
    from onnx import TensorProto, helper

    from ..graph.encoding_graph import ENCODED
    from .runtimes import open_session, raw_feeds

    proto = onnx_lib.ModelProto()
    if isinstance(model, Path):
        model = model.read_bytes()
    if isinstance(model, bytes):
        proto.ParseFromString(model)
    else:
        proto.CopyFrom(model)
    total = sum(s.rows for s in sets)
    if not any(ENCODED in n.output for n in proto.graph.node):
        return EncodingCheck(total, len(sets), False, f"the graph has no tensor {ENCODED!r} (the encoded features)")
    proto.graph.output.append(helper.make_tensor_value_info(ENCODED, TensorProto.FLOAT, None))
    session, _ = open_session(proto.SerializeToString(), "cpu", where="the model with its encoding exposed")
    column_of = [c for c in enc.columns for _ in range(c.width)]  # encoded column -> its raw column
    first: str | None = None
    differing = 0
    for s in sets:
        assert s.encoded is not None
        got = np.asarray(session.run([ENCODED], raw_feeds(s.x, session.get_inputs()))[0])
        want = s.encoded
        if got.shape != want.shape or got.dtype != np.float32:
            differing += s.rows
            first = first or (
                f"the graph's encoding on set {s.name!r} is {got.dtype} {list(got.shape)}, the numpy reference's "
                f"float32 {list(want.shape)}"
            )
            continue
        bad = got.view(np.uint32) != want.view(np.uint32)  # bit for bit: -0.0 is not 0.0
        differing += int(bad.any(axis=1).sum())
        if first is None and bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            c = column_of[j]
            value = s.row(i)[enc.features.index(c.name)]
            first = (
                f"the graph's encoding differs from the numpy reference on set {s.name!r}, row {i}, encoded "
                f"column {enc.names[j]!r} (raw {c.name!r} = {value!r}): graph {float(got[i, j])!r}, "
                f"reference {float(want[i, j])!r}"
            )
    return EncodingCheck(total, len(sets), first is None, first, differing)


def reference_evaluator_runtime(onnx: Any, tol: Tolerance | None = None) -> Runtime:
    """onnx's ReferenceEvaluator on a checked ModelProto (or a file's bytes or path, parsed and checked)."""
    if isinstance(onnx, Path):
        onnx = onnx.read_bytes()
    if isinstance(onnx, bytes):
        onnx = parse_checked(onnx, "model")
    return Runtime(reference_runner(onnx), tol or TOLERANCES["onnx-reference"])


def _override(name: str, atol: float | None, rtol: float | None, scaling: Scaling | None = None) -> Tolerance:
    base = TOLERANCES.get(name, FP32)
    if atol is not None or rtol is not None:
        base = Tolerance(
            atol if atol is not None else base.atol,
            rtol if rtol is not None else base.rtol,
            "set on the command line (--atol/--rtol)",
        )
    return base.for_model(scaling, scale_atol=atol is None) if scaling is not None else base


def _resolve(arch: Arch | str) -> Arch:
    if isinstance(arch, Arch):
        return arch
    from ..spec.archs import get_arch

    return get_arch(arch)


# ---------------------------------------------------------------------------------------------
# The two stages


def verify(
    model: Any,
    arch: Arch | str,
    onnx: bytes | Path,
    onnx_sha256: str,
    require: tuple[str, ...] = (),
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    batches: tuple[int, ...] = BATCHES,
    *,
    data: Any = None,
    checked: Any = None,
) -> Report:
    """Every runtime available here against the float64 oracle, on `input_sets(arch, data)`. `arch` is
    the model's `Arch` (a built-in's name is accepted too); `data` its dataset (None for the built-ins);
    `checked` the ModelProto already parsed and checked from these very bytes (else they are parsed
    and checked here, once). Does not raise on a failed verdict: the caller records the report first,
    then fails (see `raise_on_failure`).

    A model with an encoding (`arch.encoding`): the sets are raw rows; the oracle and the torch
    runtimes encode them with the numpy reference; the graph's own encoding is checked against that
    reference bit for bit (`graph_encoding_check`); onnxruntime's runtimes say where their nodes ran
    (`with_placement`); the reference evaluator, if it cannot run a text operator, is skipped with
    the reason."""
    import torch

    arch = _resolve(arch)
    enc = arch.encoding
    sets = input_sets(arch, data, seed=seed, batches=batches)  # raises first when a recipe comes without data
    scaling = model_scaling(model, arch, data)
    known = KnownEncodings(enc, sets) if enc is not None else None
    required: list[str] = []
    for r in require:
        required.extend(CUDA_ALIAS if r == "cuda" else [r])
    runtimes: list[Runtime] = []
    skipped: dict[str, str] = {}
    runtimes.append(torch_runtime(model, "cpu", tol=_override("torch-cpu", atol, rtol, scaling), encoding=known))
    if torch.cuda.is_available():
        runtimes.append(torch_runtime(model, "cuda", tol=_override("torch-cuda", atol, rtol, scaling), encoding=known))
    else:
        skipped["torch-cuda"] = f"torch {torch.__version__} sees no CUDA device"
    if isinstance(onnx, Path):
        onnx = onnx.read_bytes()
    probe = sets[0].take(slice(0, 4))  # rows for the profiled run that says where nodes ran
    for provider in ("cpu", "cuda"):
        try:
            rt, providers = ort_runtime(onnx, provider, _override(f"ort-{provider}", atol, rtol, scaling))
        except DeviceUnavailable as exc:
            skipped["ort-cuda"] = str(exc).removeprefix("--provider cuda: ")
            continue
        if enc is not None:
            rt, _ = with_placement(rt, providers, onnx, provider, probe)
        runtimes.append(rt)
    try:
        ref_rt = reference_evaluator_runtime(
            checked if checked is not None else onnx, _override("onnx-reference", atol, rtol, scaling)
        )
        if arch.per_column:  # its string operators are pure Python: 65536-row sets would take minutes
            ref_rt = dataclasses.replace(ref_rt, max_rows=TEXT_REFERENCE_ROWS)
        runtimes.append(ref_rt)
    except CannotRun as exc:  # only for a graph with text operators (runtimes.reference_runner)
        skipped["onnx-reference"] = str(exc)
    encoding = graph_encoding_check(checked if checked is not None else onnx, enc, sets) if enc is not None else None
    oracle = Float64Pass(model, known)  # the reference and the rows beyond float32, from one float64 pass
    return run_engine(
        kind="verify", name=arch.name, onnx_sha256=onnx_sha256,
        reference_name="torch float64 on the CPU (weights from the artifact)"
        + ("; raw rows encoded by the numpy reference (Encoding.encode)" if enc is not None else ""),
        reference=oracle.reference, runtimes=runtimes, sets=sets, check_set=_check_set(sets), skipped=skipped,
        required=required, task=arch.task, beyond=oracle.beyond, encoding=encoding,
    )  # fmt: skip


def _check_set(sets: Sequence[InputSet]) -> str:
    """The set batch consistency and repeatability are checked on: the first wide set of at least
    1000 rows, else the first mixed one (a model with an encoding and no number column), else the last."""
    for prefix in ("wide-", "mixed-"):
        found = next((s.name for s in sets if s.name.startswith(prefix) and s.rows >= 1000), None)
        if found is not None:
            return found
    return sets[-1].name


def serve_check(
    model: Any,
    arch: Arch | str,
    onnx: bytes | Path,
    onnx_sha256: str,
    provider: str,
    seed: int = 0,
    *,
    data: Any = None,
) -> tuple[Report, ProviderReport]:
    """onnxruntime (chosen provider) against the torch fp32 model: (Report, ProviderReport). Sets: the
    XOR points (built-ins) or the validation rows (recipes), and uniform batches of 1, 4 and 1000. A
    model with an encoding: raw rows (SERVE_ENCODED_KINDS: validation, missing, unseen and mixed batches
    of 1, 4 and 1000), torch fed the numpy reference's encoding, and the ProviderReport says where the
    graph's nodes ran (`with_placement`: its string operators run on the CPU provider)."""
    arch = _resolve(arch)
    builtin = on_xor_points(arch, data)
    enc = arch.encoding
    kinds = ("xor", "uniform") if builtin else SERVE_ENCODED_KINDS if enc is not None else ("validation", "uniform")
    sets = input_sets(arch, data, seed=seed, batches=SERVE_BATCHES, kinds=kinds)
    scaling = model_scaling(model, arch, data)
    torch_ref = torch_runtime(model, "cpu", encoding=KnownEncodings(enc, sets) if enc is not None else None)
    rt, providers = ort_runtime(onnx, provider)
    if enc is not None:
        rt, providers = with_placement(rt, providers, onnx, provider, sets[0].take(slice(0, 4)))
    # Both sides carry fp32 rounding: the allowed gap is the sum of both tolerances.
    own = TOLERANCES[rt.name]
    tol = Tolerance(
        own.atol + torch_ref.tolerance.atol,
        own.rtol + torch_ref.tolerance.rtol,
        f"{rt.name} tolerance + torch-cpu tolerance (both fp32)",
    ).for_model(scaling)
    rt = Runtime(rt.runner, tol)
    report = run_engine(
        kind="serve-check", name=arch.name, onnx_sha256=onnx_sha256,
        reference_name="torch float32 on the CPU (weights from the artifact)", reference=torch_ref.run,
        runtimes=[rt], sets=sets, check_set="mixed-1000" if enc is not None else "uniform-1000", task=arch.task,
    )  # fmt: skip
    return report, providers


def raise_on_failure(report: Report, where: str) -> None:
    if not report.passed:
        problems = report.failures()
        more = f" (+{len(problems) - 1} more, see {where})" if len(problems) > 1 else ""
        raise EquivalenceFailed(f"{report.kind} failed for {report.name}: {problems[0]}{more}")


# ---------------------------------------------------------------------------------------------
# From an artifacts folder: load (hash-checked), run, record, then fail closed.


def _load(
    paths: A.ArtifactPaths, arch: Arch, files: Mapping[str, bytes] | None = None, manifest: Any = None
) -> tuple[Any, Any, bytes, str, Any]:
    """(manifest, torch model, ONNX bytes, ONNX sha256, the checked ModelProto): each file read
    once, hashed, and parsed (and checked) from those same bytes. `files` and `manifest`: a version
    already read and checked (`store.versions.Version`): its bytes are used, not read again; a
    `manifest` alone: the folder's, read by the caller under the same lock."""
    if files is not None and manifest is not None:
        model = load_model(arch, files[A.WEIGHTS], str(paths.weights))
        data = files[A.ONNX]
    else:
        manifest, model = load_trained(paths, arch, manifest)
        data = A.read_verified(paths, manifest, A.ONNX, "export")
    proto = parse_checked(data, str(paths.onnx))
    check_served(proto, str(paths.onnx), arch.n_inputs, arch.n_outputs, arch)
    return manifest, model, data, manifest.files[A.ONNX].sha256, proto


def _check_data(arch: Arch, data: Any) -> None:
    """Fail before loading anything when a recipe's model comes without its data."""
    if data is None and not on_xor_points(arch, None):
        raise _needs_data(arch)


@dataclass(frozen=True)
class ServeCheckResult:
    report: Report
    providers: ProviderReport


def run_serve_check(
    paths: A.ArtifactPaths, arch: Arch, provider: str, *, data: Any = None, manifest: Any = None
) -> ServeCheckResult:
    """Recorded in the manifest; raises EquivalenceFailed on a failure. `data`: the model's dataset
    (None for the built-in XOR models); `manifest`: the folder's, already read under the same lock."""
    _check_data(arch, data)
    manifest, model, onnx, sha, _ = _load(paths, arch, None, manifest)
    report, providers = serve_check(model, arch, onnx, sha, provider, data=data)
    worst = report.worst()
    A.update_sections(
        paths,
        {
            "serve_check": ServeCheckRecord(
                passed=report.passed,
                providers=ProvidersRecord(
                    providers.requested, providers.used, providers.cuda_note, providers.placement
                ),
                reference=report.reference,
                tolerance=report.tolerances,
                max_abs_diff=worst.max_abs if worst else None,
                max_rel_diff=max((c.max_rel for c in report.comparisons), default=None),
                input_sets=tuple(report.input_sets),
                failures=tuple(report.failures()),
            )
        },
        manifest,
    )
    raise_on_failure(report, str(paths.manifest))
    return ServeCheckResult(report, providers)


def verify_folder(
    paths: A.ArtifactPaths,
    arch: Arch,
    require: tuple[str, ...] = (),
    atol: float | None = None,
    rtol: float | None = None,
    *,
    data: Any = None,
    files: Mapping[str, bytes] | None = None,
    manifest: Any = None,
) -> Report:
    """Verify a model folder (the candidate, or a version) and write nothing. `files` and `manifest`:
    the version as `store.versions` read and checked it (its bytes are not read again)."""
    _check_data(arch, data)
    _, model, onnx, sha, proto = _load(paths, arch, files, manifest)
    return verify(model, arch, onnx, sha, tuple(require), atol, rtol, data=data, checked=proto)


def run_verify(
    paths: A.ArtifactPaths,
    arch: Arch,
    require: tuple[str, ...] = (),
    atol: float | None = None,
    rtol: float | None = None,
    *,
    data: Any = None,
    manifest: Any = None,
) -> tuple[Report, Any]:
    """(the full report, the manifest it was recorded in): the report written to the folder's
    verify.json and summarised in the manifest. `manifest`: the folder's, already read under the
    same lock (not read again). Does not raise on a failed verdict, so the caller can show it first:
    then `raise_on_failure`."""
    from ..store.jsonout import dumps_bytes

    _check_data(arch, data)
    manifest, model, onnx, sha, proto = _load(paths, arch, None, manifest)
    report = verify(model, arch, onnx, sha, tuple(require), atol, rtol, data=data, checked=proto)
    staged = A.stage_bytes(paths.folder, A.VERIFY, dumps_bytes(report.as_dict()))  # strict JSON
    committed = A.commit(
        paths,
        "verify",
        {A.VERIFY: staged},
        {
            "verify": VerifyRecord(
                passed=report.passed,
                runtimes=report.ran,
                skipped=report.skipped,
                max_abs_vs_oracle={rt: w.max_abs for rt in report.ran if (w := report.worst(rt)) is not None},
                failures=tuple(report.failures()),
            )
        },
        manifest,
    )
    return report, committed
