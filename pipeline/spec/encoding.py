"""How raw columns become the network's inputs: imputation, missing indicators, one-hot categories and
date parts. The same rules run in two independent places: here, in numpy (training's features and
verify's reference), and inside the exported ONNX graph (`graph.encoding_graph`), so that a client sends
raw rows (numbers with NaN for missing, text as strings) and needs no preprocessing code.

    enc = fit_encoding(columns, kinds, train_rows, impute="median")   # from the training split only
    x = enc.encode(raw)            # (rows, enc.width) float32: what the torch model sees
    enc.record()                   # the manifest's `encoding` (categories and statistics)

Per raw column, by kind:

- **number** (graph input float32, NaN = missing): the value, missing imputed with the training split's
  median (or mean); plus a missing indicator (1.0 where missing) when the column had a missing value in
  the training split (as scikit-learn's `SimpleImputer(add_indicator=True)`).
- **category** (text: graph input string; numeric codes: float32): one column per category seen in the
  training split, sorted; a value never seen in training, and a missing one, is all zeros (as
  scikit-learn's `OneHotEncoder(handle_unknown="ignore")`), so it lands on no weight training never moved.
  Booleans are categories `false` and `true` (any of pyarrow's spellings).
- **date** / **timestamp** (graph input string, ISO `YYYY-MM-DD` (or `YYYY/MM/DD`), timestamps
  `YYYY-MM-DD[T ]HH:MM[:SS[.f]][Z|+HH:MM|-HH:MM]`, read in UTC: an offset is taken away): year, month, day, day of week (Monday 0) and, for timestamps, the
  hour; a missing or unparseable value is imputed part by part with the training split's medians, with
  an indicator when the column had a missing value in training. A day past its month's end rolls over
  (2021-02-30 is read as 2021-03-02).

Torch-free.
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import CorruptArtifact

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np  # imported where arrays are made: not at import (`--help` needs none of it)

NUMBER, CATEGORY, DATE, TIMESTAMP = "number", "category", "date", "timestamp"
KINDS = (NUMBER, CATEGORY, DATE, TIMESTAMP)
IMPUTE = ("median", "mean")
FLOAT, STRING = "float32", "string"  # what a raw column's graph input holds
ENCODED = "xorship_encoded"  # the encoded tensor inside the graph (the network's input): no column may take it
MAX_CATEGORIES = 1000  # a categorical column with more distinct training values is refused
DATE_PARTS = ("year", "month", "day", "weekday")
TIMESTAMP_PARTS = (*DATE_PARTS, "hour")
BOOL_SPELLINGS = {  # what a boolean column's graph input may hold for each class (pyarrow's CSV spellings)
    "false": ("false", "False", "FALSE", "0"),
    "true": ("true", "True", "TRUE", "1"),
}

# One pattern for the numpy reference (Python `re`) and the graph (RE2's RegexFullMatch): ASCII digits
# only ([0-9], never \d, which is any Unicode digit in Python), a real month, day and time of day.
DATE_PATTERN = (
    r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"  # years 1 to 9999 (0000 is no year of the calendar)
    r"(-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])|/(0[1-9]|1[0-2])/(0[1-9]|[12][0-9]|3[01]))"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?"
)
SLASH_PATTERN = r"[0-9]{4}/.*"  # YYYY/MM/DD: read as YYYY-MM-DD
SPACE_PATTERN = r"[0-9-]{10} .*"  # YYYY-MM-DD HH:MM: read as YYYY-MM-DDTHH:MM
_DATE_RE = re.compile(DATE_PATTERN)


@dataclass(frozen=True)
class ColumnCode:
    """One raw column's rule. `impute` holds the fill values (number: one; date: one per part);
    `categories` the training split's categories (text, or numbers for numeric codes), sorted."""

    name: str
    kind: str
    dtype: str = FLOAT  # the graph input's element type: float32 or string
    impute: tuple[float, ...] = ()
    indicator: bool = False
    categories: tuple[Any, ...] = ()
    boolean: bool = False  # a true/false column: categories ("false", "true"), pyarrow's spellings taken

    @property
    def parts(self) -> tuple[str, ...]:
        return TIMESTAMP_PARTS if self.kind == TIMESTAMP else DATE_PARTS if self.kind == DATE else ()

    @property
    def names(self) -> tuple[str, ...]:
        """The encoded columns' names, in order."""
        if self.kind == CATEGORY:
            return tuple(f"{self.name}={_category_text(c)}" for c in self.categories)
        values = (self.name,) if self.kind == NUMBER else tuple(f"{self.name}.{p}" for p in self.parts)
        return values + ((f"{self.name} (missing)",) if self.indicator else ())

    @property
    def scaled(self) -> tuple[bool, ...]:
        """Which encoded columns are standardized: values and date parts, not 0/1 columns."""
        if self.kind == CATEGORY:
            return (False,) * len(self.categories)
        n = 1 if self.kind == NUMBER else len(self.parts)
        return (True,) * n + ((False,) if self.indicator else ())

    @property
    def width(self) -> int:
        return len(self.names)

    def keys(self) -> list[tuple[str, int]]:
        """A text category column's (string, category index) pairs: booleans take every spelling."""
        if self.boolean:
            return [(s, i) for i, c in enumerate(self.categories) for s in BOOL_SPELLINGS[str(c)]]
        return [(str(c), i) for i, c in enumerate(self.categories)]

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "dtype": self.dtype}
        if self.impute:
            out["impute"] = list(self.impute)
        if self.kind != CATEGORY:
            out["indicator"] = self.indicator
        if self.kind == CATEGORY:
            out["categories"] = list(self.categories)
            out["boolean"] = self.boolean
        return out

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> ColumnCode:
        kind, dtype = str(r["kind"]), str(r["dtype"])
        if kind not in KINDS or dtype not in (FLOAT, STRING):
            raise ValueError(f"column {r.get('name')!r}: kind {kind!r} / dtype {dtype!r}")
        cats = tuple(r.get("categories", ()))
        if dtype == FLOAT:
            cats = tuple(float(c) for c in cats)
        elif not all(isinstance(c, str) for c in cats):
            raise ValueError(f"column {r['name']!r}: text categories must be strings")
        code = cls(
            name=str(r["name"]), kind=kind, dtype=dtype, impute=tuple(float(v) for v in r.get("impute", ())),
            indicator=bool(r.get("indicator", False)), categories=cats, boolean=bool(r.get("boolean", False)),
        )  # fmt: skip
        want = 1 if kind == NUMBER else len(code.parts) if kind in (DATE, TIMESTAMP) else 0
        if len(code.impute) != want or (kind == CATEGORY and not cats):
            raise ValueError(f"column {code.name!r}: {len(code.impute)} fill values, {len(cats)} categories")
        return code


@dataclass(frozen=True)
class Encoding:
    """Every raw feature's rule, in feature order. `per_column`: the graph takes one input per column
    ([batch, 1], float32 or string); otherwise one `x` [batch, features] float32 (NaN = missing)."""

    columns: tuple[ColumnCode, ...]
    impute: str = "median"

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def per_column(self) -> bool:
        return any(c.dtype == STRING for c in self.columns)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for c in self.columns for n in c.names)

    @property
    def scaled(self) -> tuple[bool, ...]:
        return tuple(s for c in self.columns for s in c.scaled)

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    @property
    def has_dates(self) -> bool:
        return any(c.kind in (DATE, TIMESTAMP) for c in self.columns)

    @property
    def has_text(self) -> bool:
        return self.per_column

    def column(self, name: str) -> ColumnCode:
        return next(c for c in self.columns if c.name == name)

    def record(self) -> dict[str, Any]:
        return {"impute": self.impute, "columns": [c.record() for c in self.columns]}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], where: str) -> Encoding:
        try:
            impute = str(record.get("impute", "median"))
            if impute not in IMPUTE:
                raise ValueError(f"impute {impute!r}")
            cols = tuple(ColumnCode.from_record(r) for r in record["columns"])
            if not cols or len({c.name for c in cols}) != len(cols):
                raise ValueError("no columns, or a column named twice")
            return cls(cols, impute)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptArtifact(f"{where}: its encoding record is not valid ({exc})") from None

    # The numpy reference -------------------------------------------------------------------------

    def encode(self, raw: Raw) -> np.ndarray:
        """(rows, width) float32 from raw columns (see `Raw`): the rules above, in numpy and Python,
        written independently of the graph's operators."""
        import numpy as np

        cols = as_columns(raw, self)
        blocks = [_encode_column(c, cols[c.name]) for c in self.columns]
        out = np.concatenate(blocks, axis=1) if blocks else np.empty((0, 0), np.float32)
        return np.ascontiguousarray(out, dtype=np.float32)


# Raw rows: what the graph takes. A float32 matrix (rows, features) for an encoding that is not
# per_column, else a mapping name -> (rows, 1) array: float32 (NaN = missing) or object (str; "" =
# missing). `as_columns` turns either into name -> 1-D array.
Raw: TypeAlias = "np.ndarray | Mapping[str, np.ndarray]"  # an annotation only: every module here postpones them


def as_columns(raw: Raw, enc: Encoding) -> dict[str, np.ndarray]:
    import numpy as np

    if isinstance(raw, np.ndarray):
        if raw.ndim != 2 or raw.shape[1] != len(enc.columns):
            raise ValueError(f"raw rows of shape {raw.shape}; the encoding takes {len(enc.columns)} columns")
        return {c.name: raw[:, j] for j, c in enumerate(enc.columns)}
    return {c.name: np.asarray(raw[c.name]).reshape(-1) for c in enc.columns}


def feeds(raw: Raw, enc: Encoding | None, input_name: str = "x") -> dict[str, np.ndarray]:
    """onnxruntime's input feed for raw rows: {x: float32 matrix}, or one [rows, 1] array per column
    (float32, or object strings)."""
    import numpy as np

    if enc is None or not enc.per_column:
        return {input_name: np.ascontiguousarray(raw, dtype=np.float32)}
    assert not isinstance(raw, np.ndarray)
    out = {}
    for c in enc.columns:
        a = np.asarray(raw[c.name]).reshape(-1, 1)
        out[c.name] = a.astype(object) if c.dtype == STRING else np.ascontiguousarray(a, dtype=np.float32)
    return out


def raw_rows(raw: Raw, rows: Any) -> Raw:
    """Rows `rows` (an index array or slice) of raw rows."""
    import numpy as np

    if isinstance(raw, np.ndarray):
        return raw[rows]
    return {k: np.asarray(v)[rows] for k, v in raw.items()}


def raw_len(raw: Raw) -> int:
    import numpy as np

    if isinstance(raw, np.ndarray):
        return int(raw.shape[0])
    return int(len(next(iter(raw.values())))) if raw else 0


def _category_text(c: Any) -> str:
    return f"{c:g}" if isinstance(c, float) else str(c)


def _encode_column(c: ColumnCode, v: np.ndarray) -> np.ndarray:
    import numpy as np

    n = len(v)
    if c.kind == NUMBER:
        x = np.asarray(v, dtype=np.float32)
        miss = np.isnan(x)
        values = [np.where(miss, np.float32(c.impute[0]), x)]
        if c.indicator:
            values.append(miss.astype(np.float32))
        return np.stack(values, axis=1).astype(np.float32)
    if c.kind == CATEGORY:
        out = np.zeros((n, len(c.categories)), np.float32)
        if c.dtype == FLOAT:
            x = np.asarray(v, dtype=np.float32)
            for j, cat in enumerate(c.categories):
                out[:, j] = x == np.float32(cat)
        else:
            index = dict(c.keys())
            for i, s in enumerate(v):
                k = index.get(s) if isinstance(s, str) else None
                if k is not None:
                    out[i, k] = 1.0
        return out
    parts = np.empty((n, len(c.parts)), np.float32)
    miss = np.zeros(n, bool)
    for i, s in enumerate(v):
        p = date_parts(s, c.kind) if isinstance(s, str) else None
        if p is None:
            miss[i] = True
            parts[i] = c.impute
        else:
            parts[i] = p
    return np.concatenate([parts, miss[:, None].astype(np.float32)], axis=1) if c.indicator else parts


def date_parts(s: str, kind: str = DATE) -> tuple[int, ...] | None:
    """(year, month, day, weekday[, hour]) of a date or timestamp string, in UTC, or None when it is not
    one (missing). Python's datetime, not the graph's arithmetic: a UTC offset (`+02:00`) is taken
    away, and a day past its month's end rolls into the next month (2021-02-30 is 2021-03-02); an
    instant outside the years 1 to 9999 is missing."""
    if not _DATE_RE.fullmatch(s):
        return None
    y, m, d = int(s[0:4]), int(s[5:7]), int(s[8:10])
    hour = minute = offset = 0
    clock = s[11:]
    if clock:
        hour, minute = int(clock[0:2]), int(clock[3:5])
        sign = 1 if "+" in clock else -1 if "-" in clock else 0
        if sign:
            zone = clock.split("+" if sign == 1 else "-")[1]
            offset = sign * (int(zone[0:2]) * 60 + int(zone[3:5]))
    try:
        at = _dt.datetime(y, m, 1) + _dt.timedelta(days=d - 1, hours=hour, minutes=minute - offset)
    except (ValueError, OverflowError):  # before year 1 or after 9999 once in UTC
        return None
    out: tuple[int, ...] = (at.year, at.month, at.day, at.weekday())
    if kind == TIMESTAMP:
        out += (at.hour,)
    return out


# ---------------------------------------------------------------------------------------------
# Fitting


@dataclass(frozen=True)
class RawColumn:
    """One training column as the encoder takes it: `values` float64 (NaN = missing) for numbers and
    numeric codes, or an object array of str (None = missing) for text, booleans and dates."""

    name: str
    kind: str
    values: np.ndarray
    boolean: bool = False
    note: str = ""  # what reading it decided that a user should hear (stray values read as missing)

    @property
    def dtype(self) -> str:
        return STRING if self.values.dtype == object else FLOAT

    @functools.cached_property
    def graph(self) -> np.ndarray:
        """The values as the graph takes them: float32 (NaN = missing), or str ("" = missing)."""
        import numpy as np

        if self.values.dtype == object:
            return np.array(["" if v is None else v for v in self.values], dtype=object)
        return self.values.astype(np.float32)

    def graph_values(self) -> np.ndarray:
        return self.graph

    def missing(self) -> np.ndarray:
        import numpy as np

        if self.values.dtype == object:
            return np.array([v is None for v in self.values], dtype=bool)
        return np.isnan(self.values)


class EncodingProblem(ValueError):
    """A column the rules cannot encode (the caller turns it into a DataError naming the file)."""


def fit_encoding(columns: Sequence[RawColumn], train_rows: np.ndarray, impute: str = "median") -> Encoding:
    """The rules, fitted on the training rows only (categories, fill values, which columns get an
    indicator)."""
    if impute not in IMPUTE:
        raise ValueError(f"impute must be one of {IMPUTE}")
    return Encoding(tuple(_fit_column(c, train_rows, impute) for c in columns), impute)


def _fill(values: np.ndarray, how: str) -> float:
    import numpy as np

    v = values.astype(np.float64)
    return float(np.float32(np.median(v) if how == "median" else np.mean(v)))


def _fit_column(c: RawColumn, rows: np.ndarray, impute: str) -> ColumnCode:
    import numpy as np

    v = c.values[rows]
    miss = c.missing()[rows]
    if c.kind == NUMBER:
        present = v[~miss]
        if present.size == 0:
            raise EncodingProblem(f"column {c.name!r} is missing in every training row")
        return ColumnCode(c.name, NUMBER, FLOAT, (_fill(present, impute),), bool(miss.any()))
    if c.kind == CATEGORY:
        present = v[~miss]
        if c.dtype == FLOAT:
            inexact = present[present.astype(np.float32).astype(np.float64) != present]
            if inexact.size:  # the graph compares float32 values: 16777217 would be 16777216
                raise EncodingProblem(
                    f"column {c.name!r} has category code {float(inexact[0])!r}, which float32 (the model's input) does not"
                    " hold exactly; use smaller codes, or text"
                )
            cats: tuple[Any, ...] = tuple(float(x) for x in np.unique(present.astype(np.float32)))
        else:
            cats = tuple(sorted(set(present.tolist()), key=lambda s: s.encode("utf-8")))
        if c.boolean:
            cats = ("false", "true")
        if not cats:
            raise EncodingProblem(f"column {c.name!r} is missing in every training row")
        if len(cats) > MAX_CATEGORIES:
            raise EncodingProblem(
                f"column {c.name!r} has {len(cats)} distinct values in the training rows (at most {MAX_CATEGORIES}"
                " categories); it looks like an id or free text: leave it out of [data] features"
            )
        return ColumnCode(c.name, CATEGORY, c.dtype, (), False, cats, c.boolean)
    parsed = [date_parts(s, c.kind) if s is not None else None for s in v]
    good = np.array([p for p in parsed if p is not None], dtype=np.float64)
    if good.size == 0:
        raise EncodingProblem(f"column {c.name!r} has no ISO date (YYYY-MM-DD) in the training rows")
    fills = tuple(_fill(good[:, k], impute) for k in range(good.shape[1]))
    if impute == "median":  # a date part is an integer: the median of two middle values may not be
        fills = tuple(float(np.floor(f)) for f in fills)
    return ColumnCode(c.name, c.kind, STRING, fills, any(p is None for p in parsed))
