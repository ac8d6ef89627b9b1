"""Input rows for a model, read from a file, stdin or the command line, checked and streamed.

Every reader ends in the rows as the model's graph takes them (`spec.encoding.Raw`: a float32 array of
shape (rows, width), or, for a model that takes one input per column, a mapping column -> (rows,) array)
and, with `carry`, the input columns to copy into the output; or a `UsageError` whose message is one
line naming the source, the line (CSV, JSON Lines) or row (Parquet, JSON, .npy, command line) and the
column that is wrong.

    source = open_input(InputSpec(2, ("x1", "x2")), path=Path("rows.csv"), carry=("id",))
    n = source.validate()              # a pass over the file: every row checked, nothing kept
    for batch in source.batches():     # the rows, in order: batch.x (n, 2) float32, batch.carried
        ...

Files are read with the one table reader (`spec.tables`: CSV, Parquet, JSON Lines, a JSON document) or
as `.npy`, in bounded memory whatever their size. `validate()` is a full pass (what a destination that
cannot be taken back needs before the first output); a file destination does without it (it is written
to a temporary and renamed, so a bad row leaves nothing). stdin (a JSON document, or JSON Lines) is
read once into a temporary file, then read like a file.

Which columns are the features: a header (CSV), a schema (Parquet) or the first row's keys (JSON Lines,
JSON objects) is matched to the features by name, in any order, other columns ignored; without names
(a CSV whose first line holds only numbers, JSON lists, .npy, the command line) a row is the features
in model order.

What a row may hold depends on the model (`InputSpec.encoding`):
- a built-in, or a version made before encodings: numbers only; a missing value is refused, naming the
  column and saying "missing";
- a model with an all-number encoding (one `x` input): a missing value (an empty field, a missing-value
  token, a JSON null or absent key, a Parquet null or NaN) is NaN in `x`, imputed inside the graph;
- a model with text, true/false or date columns (one input per column): the rows need names (a CSV
  header, Parquet, JSON objects); number columns are float32 (NaN where missing), the others the text
  as written (Parquet dates `YYYY-MM-DD`, timestamps `YYYY-MM-DDTHH:MM:SS`, booleans `true`/`false`), ""
  where missing (a null, nothing but spaces, a missing-value token). The graph reads the rest.
A value in a number column that is not a number is refused once per column, with how many there are
and where the first is. Nothing here imports torch or pandas (strings reach numpy through each batch's
dictionary or `to_pylist`, not pyarrow's `to_numpy`, which imports pandas).
"""

from __future__ import annotations

import os
import tempfile
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UsageError
from ..spec import tables as T
from ..spec.encoding import CATEGORY, FLOAT, ColumnCode, Encoding, Raw, raw_len, raw_rows
from ..spec.limits import FLOAT32_MAX
from ..spec.numbers import DATA, HEADER, MIXED, NUMBER, first_line_kind
from ..spec.numbers import is_number as _is_number

DEFAULT_CHUNK_ROWS = 65536
ALL = "*"  # carry every input column

_ARRAY_BLOCK_BYTES = 1 << 22
_STDIN_BLOCK = 1 << 20


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: `width` values per row, optionally named (`features`, in model order), the
    tokens that mean "missing" in its data (`spec.tables.DEFAULT_MISSING` unless its recipe says) and,
    for a model whose graph encodes raw columns, its `encoding` (then a missing value is taken, and
    text, true/false and date columns are read as text: see the module's docstring)."""

    width: int
    features: tuple[str, ...] | None = None
    missing: tuple[str, ...] = T.DEFAULT_MISSING
    encoding: Encoding | None = None

    def __post_init__(self) -> None:
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"InputSpec.width must be a positive int, not {self.width!r}")
        if self.features is not None:
            names = tuple(self.features)
            if len(names) != self.width or len(set(names)) != len(names) or not all(isinstance(f, str) for f in names):
                raise ValueError(f"InputSpec.features must be {self.width} distinct names, not {self.features!r}")
            object.__setattr__(self, "features", names)
        if self.encoding is not None and self.features != self.encoding.features:
            raise ValueError(f"InputSpec.features {self.features!r} are not the encoding's columns")

    @property
    def takes_missing(self) -> bool:
        """A missing value is NaN (or "") for the graph to impute, not an error."""
        return self.encoding is not None

    @property
    def per_column(self) -> bool:
        """The rows are a mapping column -> values (the graph takes one input per column)."""
        return self.encoding is not None and self.encoding.per_column


@dataclass(frozen=True, eq=False)
class RowBatch:
    """Rows in order: `x` the rows as the graph takes them (`Raw`: (rows, width) float32, or a mapping
    column -> (rows,) float32 or str array), checked; `carried` the input columns to copy into the
    output (a pyarrow Table, or None); `first_row` the 0-based index of its first row in the input."""

    x: Raw
    carried: Any
    first_row: int
    position: int = 0  # how far the reader got, in `RowSource.total`'s unit (bytes or rows)
    place: Callable[[int], str] | None = None  # row i of the batch as messages name it: "line 12", "row 4"

    @property
    def rows(self) -> int:
        return raw_len(self.x)


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _err(message: str) -> UsageError:
    """A UsageError whose message is guaranteed to be one line."""
    return UsageError(message.replace("\r", "\\r").replace("\n", "\\n"))


def _clip(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def _example(width: int) -> str:
    return ",".join(str(i % 2) for i in range(width))


def _as_float32(arr: np.ndarray, nan: bool = False) -> tuple[np.ndarray, tuple[int, str] | None]:
    """(arr as float32, None), or (_, (row index, reason)) for the first row that is not finite or does not fit in
    float32 (whatever rounds to float32's largest value, such as its shortest repr 3.4028235e+38, fits). `nan`:
    NaN is taken (a missing value, imputed by the model's graph); Inf and overflow are still refused."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float32)
    good = np.isfinite(out)
    if nan:
        good |= np.isnan(arr)
    ok = good.all(axis=1)
    if ok.all():
        return out, None
    row = int(np.argmin(ok))
    refused = "Inf and overflowing numbers are refused" if nan else "NaN, Inf and overflowing numbers are refused"
    if not (np.isfinite(arr[row]) | (nan & np.isnan(arr[row]))).all():
        return out, (row, f"is not finite ({arr[row].tolist()}); {refused}")
    return out, (row, f"has a value beyond float32's range (+-{FLOAT32_MAX:.4g}): {arr[row].tolist()}")


def _concat(parts: list[Raw]) -> Raw:
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)  # type: ignore[arg-type]
    return {k: np.concatenate([p[k] for p in parts]) for k in first}


def _rechunk(blocks: Iterable[Raw], rows: int) -> Iterator[Raw]:
    """Regroup raw rows (arrays of n rows, or mappings of columns) into `rows` rows each (the last may be
    shorter), in order."""
    pending: list[Raw] = []
    count = 0
    for block in blocks:
        start, n = 0, raw_len(block)
        while start < n:
            take = min(rows - count, n - start)
            pending.append(raw_rows(block, slice(start, start + take)))
            count += take
            start += take
            if count == rows:
                yield _concat(pending)
                pending, count = [], 0
    if count:
        yield _concat(pending)


# ---------------------------------------------------------------------------------------------
# Sources


class RowSource(ABC):
    """Checked input rows. `name` is what messages call the source (a path, "stdin", "command line");
    `columns` the input's column names (None: it has none, so nothing can be carried); `carry` the
    columns copied into the output; `size` the bytes to read (for progress; None when unknown)."""

    name: str
    spec: InputSpec
    columns: list[str] | None = None
    carry: tuple[str, ...] = ()
    size: int | None = None
    total: int | None = None  # what `RowBatch.position` counts up to (bytes or rows), for progress

    def validate(self, check: Callable[[RowBatch], Any] | None = None) -> int:
        """Check every row (a full pass for files); return the row count, or raise UsageError naming the
        first bad line or row. Keeps nothing but the count. `check`: run on every batch too (predict
        runs the model there, so that a row whose output is not finite fails before any output)."""
        total = 0
        for batch in self._batches(carry=True):  # carried columns too: they can be unreadable as well
            if check is not None:
                check(batch)
            total += batch.rows
        if total == 0:
            raise _err(f"{self.name}: no input rows")
        return total

    def batches(self) -> Iterator[RowBatch]:
        """The rows with their carried columns, in order, checked as they stream."""
        total = 0
        for batch in self._batches(carry=True):
            total += batch.rows
            yield batch
        if total == 0:
            raise _err(f"{self.name}: no input rows")

    def chunks(self, rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Raw]:
        """The rows (the features only) `rows` at a time, in order: (n <= rows, width) float32 arrays, or
        mappings column -> (n,) array for a model that takes one input per column."""
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"chunks(rows=...) must be a positive int, not {rows!r}")
        return _rechunk((b.x for b in self.batches()), rows)

    def close(self) -> None:  # noqa: B027 - most sources leave nothing behind
        """Remove what reading left (stdin's temporary copy)."""

    @abstractmethod
    def _batches(self, carry: bool) -> Iterator[RowBatch]:
        """Checked batches in order; with `carry`, the carried columns too."""


def _carry_error(name: str, carry: Sequence[str] | str) -> UsageError:
    what = "--carry-all" if carry == ALL else "--carry"
    return _err(
        f"{what}: {name} has no column names to carry (give a CSV with a header, Parquet, JSON Lines or JSON objects)"
    )


class _MemorySource(RowSource):
    """Rows given on the command line: parsed on first use and kept."""

    def __init__(self, spec: InputSpec, name: str, load: Callable[[], np.ndarray]) -> None:
        self.spec = spec
        self.name = name
        self._load = load
        self._array: np.ndarray | None = None

    def array(self) -> np.ndarray:
        if self._array is None:
            arr = self._load()
            if arr.shape[0] == 0:
                raise _err(f"{self.name}: no input rows")
            self._array = arr
        return self._array

    def _batches(self, carry: bool) -> Iterator[RowBatch]:
        yield RowBatch(self.array(), None, 0, place=lambda i: f"input {i + 1}")


def open_input(
    spec: InputSpec,
    path: Path | None = None,
    stdin: TextIO | BinaryIO | None = None,
    pairs: Sequence[str] | None = None,
    carry: Sequence[str] | str = (),
    fmt: str | None = None,
) -> RowSource:
    """The rows from exactly one of: a file (`path`; its format from its name or `fmt`: CSV, Parquet,
    JSON Lines, JSON, .npy), stdin (a JSON document or JSON Lines, text or binary stream), or
    command-line `pairs` ("0,1" = one row of `spec.width` numbers joined by commas). `carry`: input
    columns to copy into the output (names, or `ALL`).

    Opening reads only what names the columns (a CSV's first line, a Parquet footer); rows are read by
    `validate()` and `batches()`. Raises UsageError for a missing or unreadable file, a column to carry
    that is not there, or when zero or several sources are given."""
    given = [
        what
        for what, present in (
            ("a file", path is not None),
            ("stdin", stdin is not None),
            ("rows as arguments", bool(pairs)),
        )
        if present
    ]
    if len(given) > 1:
        raise _err(f"give input rows one way only, not {' and '.join(given)}")
    if path is not None:
        path = Path(path)
        if T.file_format(path, fmt) == T.NPY:
            if spec.per_column:
                raise _by_name_error(spec, f"{T.display(path)}: a .npy array")
            source: RowSource = _NpySource(spec, path, T.display(path))
            if carry:
                raise _carry_error(source.name, carry)
            return source
        return _TableSource(spec, T.open_table(path, fmt, spec.missing), carry)
    if stdin is not None:
        return _stdin_source(spec, stdin, carry, fmt)
    if pairs:
        if spec.per_column:
            raise _by_name_error(spec, "rows as arguments")
        if carry:
            raise _carry_error("the command line", carry)
        rows = list(pairs)
        return _MemorySource(spec, "command line", lambda: _parse_pairs(spec, rows))
    if spec.per_column:
        raise _by_name_error(spec, "no input rows")
    raise _err(f"no input rows: give rows as arguments (e.g. {_example(spec.width)}), a file, or JSON on stdin")


def _by_name_error(spec: InputSpec, what: str) -> UsageError:
    """A model that takes one input per column reads rows by column name: a source without names cannot
    give them."""
    assert spec.encoding is not None
    text = next(c for c in spec.encoding.columns if c.dtype != FLOAT)
    return _err(
        f"{what}: this model takes its columns by name (column {text.name!r} is {_kind_text(text)}); give a CSV"
        " with a header line, Parquet, JSON Lines or a JSON list of row objects (--input, or - for stdin)"
    )


def _kind_text(code: ColumnCode) -> str:
    if code.boolean:
        return "true/false"
    return "text" if code.kind == CATEGORY else f"a {code.kind}"


# ---------------------------------------------------------------------------------------------
# Tables: CSV, Parquet, JSON Lines, JSON documents (spec.tables)


class _TableSource(RowSource):
    def __init__(self, spec: InputSpec, file: T.TableFile, carry: Sequence[str] | str, name: str | None = None) -> None:
        self.spec = spec
        self.file = file
        self.name = name or file.where
        try:
            self.size = file.path.stat().st_size
        except OSError:
            self.size = None
        self.total = file.total or None
        self.features = self._features()
        self.columns = list(file.names) if self._named else None
        self.carry = self._carry(carry)

    @property
    def _named(self) -> bool:
        return self.file.named

    def _features(self) -> list[str]:
        """The input column that holds each feature, in model order."""
        f, width, features = self.file, self.spec.width, self.spec.features
        if f.fmt == T.CSV:
            self._csv_header_rule()
        names = f.names
        if self.spec.per_column and not self._named:
            raise _by_name_error(self.spec, f"{self.name}: rows without column names (lists)")
        if not self._named or features is None:
            if len(names) != width:
                return self._wrong_width(len(names))
            again = next((n for i, n in enumerate(names) if n in names[:i]), None)
            if again is not None:  # the columns are the features in order, and need names of their own
                raise _err(f"{self.name}: its header names column {again!r} more than once")
            return list(names)
        seen: set[str] = set()
        twice = {n for n in names if n in seen or seen.add(n)}  # type: ignore[func-returns-value]
        missing = [x for x in features if x not in names]
        if missing and f.fmt in (T.JSONL, T.JSON) and len(missing) < len(features):
            f.names = names = [*names, *missing]  # JSON rows name their own keys: absent on row 1 is missing there
            missing = []
        if missing:
            raise self._missing(missing, names)
        for x in features:
            if x in twice:
                raise _err(f"{self.name}: the header names column {x!r} more than once")
        return list(features)

    def _csv_header_rule(self) -> None:
        """Line 1 (the first non-blank line) is a header if none of its fields is a number, data if all
        are (or a header when it names every feature, where some feature names look like numbers). For a
        model that takes missing values, a field that is a missing-value token counts for neither (a gap
        on a first data line); a model that takes one input per column needs the header (one line
        otherwise, saying so)."""
        f, features = self.file, self.spec.features
        fields = [x.strip() for x in f.first_fields]
        if self.spec.takes_missing:  # a missing value on a first data line is neither a number nor a name
            fields_kind = [x for x in fields if x not in f.missing]
            kind = first_line_kind(fields_kind) if fields_kind else DATA
        else:
            kind = first_line_kind(fields)
        names_all = features is not None and set(features) <= set(fields)
        header = kind == HEADER
        if kind == DATA and features is not None and any(map(_is_number, features)) and names_all:
            header = True
        elif kind == MIXED and names_all:
            header = True  # it names every feature
        line = f._csv_start[1]
        if not header and self.spec.per_column:
            listed = _clip(", ".join(features or ()), 120)
            raise _err(
                f"{self.name}: line {line} ({_clip(','.join(f.first_fields))}) is not a header line: this model takes"
                f" its columns by name ({listed[1:-1]}); give the CSV a header line naming them"
            )
        if kind == MIXED and not header:
            raise _err(
                f"{self.name}: line {line} ({_clip(','.join(f.first_fields))}) mixes numbers and text: a header"
                " line must have no numbers, a data line only numbers"
            )
        T.set_header(f, header)

    def _wrong_width(self, got: int) -> list[str]:
        width, features, f = self.spec.width, self.spec.features, self.file
        if f.fmt == T.CSV and f.header:
            raise _err(f"{self.name}: the header (line {f._csv_start[1]}) has {got} columns, expected {width}")
        if f.fmt == T.CSV:
            listed = ", ".join(features) if features is not None else ""
            named = f" ({listed if len(listed) <= 120 else listed[:117] + '...'})" if features is not None else ""
            raise _err(
                f"{self.name}: line {f._csv_start[1]} has {got} columns, expected {width}: without a header line, a"
                f" row is the model's {width} features in order{named}"
                + ("; or give a header line naming the columns" if features is not None else "")
            )
        raise _err(f"{self.name}: rows have {got} values, expected {width}")

    def _missing(self, missing: list[str], names: list[str]) -> UsageError:
        """The input lacks features: name the first (and the closest column), and how many more."""
        first = missing[0]
        close = _closest(first, [n for n in names if n], 0.6)
        hint = f" (closest: {close!r})" if close is not None else ""
        others = ""
        if len(missing) > 1:
            listed = ", ".join(repr(m) for m in missing[1:4]) + (", ..." if len(missing) > 4 else "")
            others = f" nor {len(missing) - 1} other feature{'s' if len(missing) > 2 else ''} ({listed})"
        columns = _clip(",".join(names), 200)
        what = f"the header (line {self.file._csv_start[1]})" if self.file.fmt == T.CSV else "it"
        return _err(f"{self.name}: {what} has no column {first!r}{hint}{others}; its columns: {columns}")

    def _carry(self, carry: Sequence[str] | str) -> tuple[str, ...]:
        if not carry:
            return ()
        if self.columns is None:
            raise _carry_error(self.name, carry)
        wanted = tuple(dict.fromkeys(self.columns)) if carry == ALL else tuple(dict.fromkeys(carry))
        for c in wanted:
            if c not in self.columns:
                raise _err(f"--carry {c!r}: {self.name} has no such column{_suggest(c, self.columns)}")
            if self.columns.count(c) > 1:
                what = "--carry-all" if carry == ALL else f"--carry {c!r}"
                raise _err(f"{what}: {self.name} names column {c!r} more than once; which to copy is ambiguous")
        return wanted

    def _shown(self) -> list[str]:
        """How messages name each feature's column: column 'income', or column 2 ('x2') without names."""
        f, features = self.file, self.features
        return [
            f.label(c) if f.named or self.spec.features is None else f"{c} ({x!r})"
            for c, x in zip(features, self.spec.features or features)
        ]

    def _batches(self, carry: bool) -> Iterator[RowBatch]:
        if self.spec.encoding is not None:
            yield from self._encoded_batches(carry, self.spec.encoding)
            return
        features = self.features
        text = [c for c in self.carry if c not in features] if carry else []
        batches = self.file.batches(numeric=features, text=text)
        try:
            yield from self._checked(batches, features, self._shown(), carry)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # the reader's thread joined now, not when collected

    def _encoded_batches(self, carry: bool, enc: Encoding) -> Iterator[RowBatch]:
        """Batches for a model whose graph encodes raw columns: numbers float32 with NaN where missing
        (one matrix, or one array per column), text as written ("" where missing)."""
        features = self.features  # the input's column for each of the encoding's columns, in order
        codes = dict(zip(features, enc.columns))
        shown = dict(zip(features, self._shown()))
        numbers = [c for c in features if codes[c].dtype == FLOAT]
        texts = [c for c in features if codes[c].dtype != FLOAT]
        extra = [c for c in self.carry if c not in features] if carry else []
        batches = self.file.batches(numeric=numbers, text=[*texts, *extra])
        keyed = self.file.fmt in (T.JSONL, T.JSON)  # rows name their own keys: a misspelt one is absent
        given = dict.fromkeys(features, False)
        try:
            for b in batches:
                t = b.table
                if keyed:
                    for c in features:
                        given[c] = given[c] or t.column(c).null_count < t.num_rows
                values = {c: self._numbers(t.column(c), shown[c], b) for c in numbers}
                x: Raw
                if enc.per_column:
                    missing = self.spec.missing
                    values.update({c: _text_values(t.column(c), codes[c], missing, self.name) for c in texts})
                    x = {code.name: values[c] for c, code in codes.items()}
                else:
                    x = np.stack([values[c] for c in features], axis=1)  # (rows, width), NaN where missing
                carried = t.select(list(self.carry)) if carry and self.carry else None
                yield RowBatch(x, carried, b.first_row, b.position, b.place)
            never = [c for c in features if not given[c] and not _names_key(self.file.path, c)] if keyed else []
            if never:  # no row names it (a null in every row is a missing value in every row): a key spelt otherwise
                others = [n for n in self.file.names if n not in features]
                raise _err(
                    f"{self.name}: no row names feature {never[0]!r}"
                    f"{f' (nor {len(never) - 1} more)' if len(never) > 1 else ''}{_suggest(never[0], others)}; "
                    "its rows name the columns they give, and a model does not guess a whole column"
                )
        except T.DataError as exc:
            counted = self._counted(numbers, shown)
            if counted is None:
                raise
            raise counted from exc
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def _numbers(self, col: Any, shown: str, b: T.Batch) -> np.ndarray:
        """A number column of a batch as float32, NaN where missing; a value that is infinite or beyond
        float32's range is refused, with how many the batch holds and where the first is."""
        v64 = _float64(col)
        with np.errstate(over="ignore", invalid="ignore"):
            v = v64.astype(np.float32)
        bad = np.isinf(v)
        if bad.any():
            k, row = int(bad.sum()), int(np.argmax(bad))
            raise _err(
                f"{self.name}: {shown} has {_count(k, 'value')} infinite or beyond float32's range"
                f" (+-{FLOAT32_MAX:.4g}) from {b.place(0)} to {b.place(b.rows - 1)} (the first, {float(v64[row])!r},"
                f" at {b.place(row)}); fix them, or give them as missing values (imputed by the model)"
            )
        return v

    def _counted(self, numbers: list[str], shown: dict[str, str]) -> UsageError | None:
        """After the reader refused a value in a number column: every such value of the file counted,
        once per column (None when the problem is another one, or when counting meets another problem)."""
        try:
            found = _not_numbers(self.file, numbers)
        except UsageError:
            return None
        if not found:
            return None
        parts = [
            f"{shown[c]} has {_count(k, 'value')} that {'is not a number' if k == 1 else 'are not numbers'}"
            f" (the first, {value}, at {place})"
            for c, (k, place, value) in found.items()
        ]
        which = "it" if len(found) == 1 else "them"
        return _err(
            f"{self.name}: {'; '.join(parts)}; the model reads {which} as numbers: fix those values, or give them"
            " as missing (an empty field, a missing-value token or null: a missing number is imputed)"
        )

    def _checked(
        self, batches: Iterator[T.Batch], features: list[str], shown: list[str], carry: bool
    ) -> Iterator[RowBatch]:
        for b in batches:
            t = b.table
            for j, col in enumerate(features):
                row = T.first_null(t.column(col))
                if row is not None:
                    raise _err(f"{self.name}: {b.place(row)}, {shown[j]} is missing{self._tokens()}")
            out = T.float_matrix(t, features, np.float32)
            finite = np.isfinite(out)
            if not finite.all():
                row = int(np.argmin(finite.all(axis=1)))
                _, bad = _as_float32(T.float_matrix(t.slice(row, 1), features))
                assert bad is not None
                raise _err(f"{self.name}: {b.place(row)} {bad[1]}")
            carried = t.select(list(self.carry)) if carry and self.carry else None
            yield RowBatch(out, carried, b.first_row, b.position, b.place)

    def _tokens(self) -> str:
        """What "missing" means here, for the message: this model takes none."""
        if self.file.fmt != T.CSV:
            return "; this model takes no missing values"
        tokens = T.tokens_text(self.spec.missing)
        return f" (an empty field or a missing-value token: {tokens}); this model takes no missing values"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _float64(col: Any) -> np.ndarray:
    """A float64 column (nulls where missing) as numpy float64, NaN where missing (from its buffers:
    pyarrow's `to_numpy` imports pandas)."""
    if col.null_count:
        col = pc.fill_null(col, np.nan)
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    parts = [
        np.frombuffer(c.buffers()[1], dtype=np.float64, count=c.offset + len(c))[c.offset :] for c in chunks if len(c)
    ]
    if not parts:
        return np.empty(0, np.float64)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _mask(arr: Any) -> np.ndarray:
    """A boolean pyarrow array (nulls as False) as numpy bool."""
    arr = pc.fill_null(arr, False)
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    parts = []
    for c in chunks:
        if len(c):
            i8 = pc.cast(c, pa.int8())
            parts.append(np.frombuffer(i8.buffers()[1], dtype=np.int8, count=i8.offset + len(i8))[i8.offset :] == 1)
    if not parts:
        return np.zeros(0, bool)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _text_values(col: Any, code: ColumnCode, missing: Sequence[str], where: str) -> np.ndarray:
    """A text, true/false or date column of a batch as the graph takes it: an object array of str, ""
    where missing (null, nothing but spaces, a missing-value token: training's rule). Text is kept as
    written; Parquet's and JSON's typed values become the text the graph reads (true/false, ISO dates,
    timestamps to the second, in the column's time zone as in training). Converted by pyarrow's kernels
    once per batch: a category column through its dictionary (a few distinct values), a date column
    through `to_pylist`."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.dictionary_decode(), t.value_type
    if pa.types.is_null(t) or n == 0:
        return np.full(n, "", dtype=object)
    if pa.types.is_string(t):
        text = col
    elif pa.types.is_large_string(t):
        text = pc.cast(col, pa.string())
    elif pa.types.is_boolean(t):
        text = pc.if_else(col, "true", "false")
    elif pa.types.is_date(t):
        text = pc.cast(pc.cast(col, pa.date32()), pa.string())  # YYYY-MM-DD
    elif pa.types.is_timestamp(t):
        # training's strftime("%Y-%m-%dT%H:%M:%S") in UTC (a zone's values are UTC instants: dropping the
        # zone keeps them), to the second; the cast to text is twenty times faster than strftime and the
        # same text (YYYY-MM-DD HH:MM:SS[.f], a space for the T)
        clock = pc.cast(col, pa.timestamp(t.unit)) if t.tz else col
        text = pc.utf8_slice_codeunits(pc.cast(clock, pa.string()), 0, 19)
        text = pc.replace_substring(text, " ", "T", max_replacements=1)
    else:
        try:
            text = pc.cast(col, pa.string())  # numbers in a text column: their text ("2", "1.5")
        except pa.ArrowException:
            raise _err(f"{where}: column {code.name!r} holds {t} values; this model reads it as text") from None
    text = pc.fill_null(text, "")
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0)
    tokens = [m for m in missing if m.strip()]
    if tokens:
        blank = pc.or_(blank, pc.is_in(text, value_set=T.text_array(tokens)))
    if pc.any(blank).as_py():
        text = pc.if_else(blank, "", text)
    if code.kind == CATEGORY:  # few distinct values: each decoded once
        coded = pc.dictionary_encode(text)
        names = np.empty(len(coded.dictionary), dtype=object)
        names[:] = coded.dictionary.to_pylist()
        idx = coded.indices
        return names[np.frombuffer(idx.buffers()[1], dtype=np.int32, count=idx.offset + n)[idx.offset :]]
    out = np.empty(n, dtype=object)
    out[:] = text.to_pylist()
    return out


_NUMBER_TEXT = f"^(?:{NUMBER.pattern})$"


def _not_numbers(f: T.TableFile, numbers: Sequence[str]) -> dict[str, tuple[int, str, str]]:
    """Per number column, the values in the whole file that are neither a number nor missing: (how many,
    where the first is, the first as shown). CSV, JSON Lines and JSON documents (Parquet's columns are
    typed: the reader names a column of another type itself)."""
    found: dict[str, tuple[int, str, str]] = {}

    def add(name: str, k: int, place: str, value: str) -> None:
        count, first, shown = found.get(name, (0, place, value))
        found[name] = (count + k, first, shown)

    if f.fmt == T.CSV:
        tokens = T.text_array(list(f.missing))
        for b in f.batches(numeric=(), text=numbers, prefetch=False):
            for name in numbers:
                col = pc.fill_null(b.table.column(name), "")
                ok = pc.or_(
                    pc.is_in(col, value_set=tokens),
                    pc.match_substring_regex(pc.utf8_trim_whitespace(col), _NUMBER_TEXT, ignore_case=True),
                )
                bad = ~_mask(ok)
                if bad.any():
                    row = int(np.argmax(bad))
                    add(name, int(bad.sum()), b.place(row), _clip(str(col[row].as_py()), 40))
    elif f.fmt in (T.JSONL, T.JSON):
        import json

        for place, row_obj in _json_rows(f):
            for name in numbers:
                v = row_obj.get(name)
                if v is not None and type(v) not in (int, float):
                    add(name, 1, place, _clip(json.dumps(v), 40))
    return found


def _json_rows(f: T.TableFile) -> Iterator[tuple[str, dict[str, Any]]]:
    """("line N" or "row N", row object) of a JSON Lines file or a JSON document of row objects; stops
    (UsageError) at a line that is not a row object."""
    import json

    if f.fmt == T.JSON:
        rows, keyed = f._json_rows
        if keyed:
            for i, row in enumerate(rows):
                yield f"row {i + 1}", row
        return
    with f.path.open("rb") as fh:
        for line, raw in enumerate(fh, start=1):
            if line == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (ValueError, RecursionError):
                raise _err(f"{f.where}: line {line} is not JSON") from None
            if not isinstance(row, dict):
                raise _err(f"{f.where}: line {line} is not a row object")
            yield f"line {line}", row


def _rows_from(start: int) -> Callable[[int], str]:
    return lambda i: f"row {start + i + 1}"


def _closest(name: str, names: Sequence[str], cutoff: float) -> str | None:
    """The column a user most likely meant: the same name in another case, else difflib's closest."""
    import difflib

    folded = {n.casefold(): n for n in reversed(names)}
    return folded.get(name.casefold()) or next(
        iter(difflib.get_close_matches(name, list(names), n=1, cutoff=cutoff)), None
    )


def _names_key(path: Path, key: str, block: int = 8 << 20) -> bool:
    """Whether a JSON file holds `key` as a key anywhere (its JSON text, with or without \\u escapes,
    followed by a colon): read in blocks, only for a feature whose every value came back null."""
    import json
    import re

    pattern = re.compile(
        b"(?:" + b"|".join(re.escape(json.dumps(key, ensure_ascii=a).encode()) for a in (False, True)) + rb")\s*:"
    )
    tail = b""
    keep = 4 * len(key.encode()) + 64  # a key's text and the spaces before its colon, across blocks
    try:
        with open(path, "rb") as f:
            while chunk := f.read(block):
                data = tail + chunk
                if pattern.search(data):
                    return True
                tail = data[-keep:]
    except OSError:
        return True  # unreadable now: the reader has said what it read; do not guess
    return False


def _suggest(name: str, names: Sequence[str]) -> str:
    hint = _closest(name, names, 0.5)
    return f" (closest: {hint!r})" if hint else f"; its columns: {_clip(','.join(names), 120)}"


# ---------------------------------------------------------------------------------------------
# stdin: a JSON document or JSON Lines, copied to a temporary file first


def _stdin_source(
    spec: InputSpec, stdin: TextIO | BinaryIO, carry: Sequence[str] | str, fmt: str | None = None
) -> RowSource:
    """stdin read once into a temporary file (bounded memory; a JSON document at most
    `spec.tables.MAX_JSON_BYTES`), then read as `fmt` (--input-format), else as a JSON document or as
    JSON Lines: JSON Lines when its first line alone is a row object (and not {"x": ...})."""
    fd, tmp = tempfile.mkstemp(prefix="xorship-stdin-")
    try:
        with os.fdopen(fd, "wb") as out:
            found = _spool(stdin, out, fmt)
        if found is None:
            raise _err("stdin: no input rows (empty input)")
        source: RowSource
        if found == T.NPY:
            source = _NpySource(spec, Path(tmp), "stdin")
            if carry:
                raise _carry_error("stdin", carry)
        else:
            source = _TableSource(spec, T.open_table(Path(tmp), found, spec.missing, where="stdin"), carry)
    except BaseException:
        _unlink(tmp)
        raise
    source.close = weakref.finalize(source, _unlink, tmp)  # type: ignore[method-assign]
    return source


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _spool(stdin: TextIO | BinaryIO, out: BinaryIO, given: str | None = None) -> str | None:
    """Copy stdin into `out`; the format it holds (`given`, else found from its first line; None: nothing
    but whitespace). A JSON document over MAX_JSON_BYTES is refused while it is read."""
    import json

    read = getattr(stdin, "buffer", stdin).read
    first_line = b""
    fmt: str | None = given
    size = 0
    started = False
    while True:
        try:
            data = read(_STDIN_BLOCK)
        except OSError as exc:
            raise _err(f"stdin: cannot read it ({exc.strerror or exc.__class__.__name__})") from None
        if data is None:
            data = b""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        if not data:
            break
        if not started:
            data = data.removeprefix(b"\xef\xbb\xbf")
            started = True
        out.write(data)
        size += len(data)
        if fmt is None:
            first_line += data
            stripped = first_line.lstrip()
            if not stripped:
                first_line = b""
                continue
            if stripped[:1] != b"{":
                fmt = T.JSON
            elif b"\n" in stripped:
                line = stripped[: stripped.index(b"\n")]
                try:
                    row = json.loads(line.decode("utf-8"))
                except (ValueError, RecursionError):
                    fmt = T.JSON  # an object over several lines: one document
                else:
                    x = row.get("x") if isinstance(row, dict) else None
                    fmt = T.JSON if isinstance(x, list) else T.JSONL
            elif len(first_line) > min(T.MAX_RECORD_BYTES, T.MAX_JSON_BYTES):
                fmt = T.JSON  # a first line too long for JSON Lines: a document
        if fmt in (T.JSON, None) and size > T.MAX_JSON_BYTES:
            raise _err(
                f"stdin: more than {T.MAX_JSON_BYTES >> 20} MB of JSON, the most read whole; give JSON Lines"
                " (one row object per line), which is streamed"
            )
    if given is not None:
        return given if size else None
    if fmt is None:
        if not first_line.strip():
            return None
        fmt = T.JSON  # one line without a line break: a document, or one row object (JSON Lines)
        try:
            row = json.loads(first_line.decode("utf-8"))
        except (ValueError, RecursionError):
            row = None
        if isinstance(row, dict) and not isinstance(row.get("x"), list):
            fmt = T.JSONL
    return fmt


# ---------------------------------------------------------------------------------------------
# Command-line rows


def _parse_pairs(spec: InputSpec, pairs: Sequence[str]) -> np.ndarray:
    """Rows given as arguments: `width` numbers joined by commas; for a model that takes missing values,
    an empty value or a missing-value token is one (NaN)."""
    width = spec.width
    values = np.empty((len(pairs), width), dtype=np.float64)
    missing = set(T.check_missing(spec.missing)) if spec.takes_missing else set()
    for i, pair in enumerate(pairs):
        parts = [p.strip() if p.strip() in missing else p for p in str(pair).split(",")]
        if len(parts) != width or not all(p in missing or _is_number(p) for p in parts):
            gaps = " (an empty value or a missing-value token is a missing one)" if missing else ""
            raise _err(
                f"command line: input {i + 1} ({_clip(str(pair))}) is not {width} numbers joined by commas"
                f" (e.g. {_example(width)}){gaps}"
            )
        values[i] = [np.nan if p in missing else float(p) for p in parts]
    out, bad = _as_float32(values, nan=spec.takes_missing)
    if bad is not None:
        raise _err(f"command line: input {bad[0] + 1} ({_clip(str(pairs[bad[0]]))}) {bad[1]}")
    return out


# ---------------------------------------------------------------------------------------------
# .npy


@dataclass(frozen=True)
class _NpyHeader:
    dtype: np.dtype
    rows: int
    fortran: bool
    offset: int


class _NpySource(RowSource):
    def __init__(self, spec: InputSpec, path: Path, name: str) -> None:
        self.spec = spec
        self.path = path
        self.name = name
        if not path.exists():
            raise _err(f"input file {name} does not exist")
        if path.is_dir():
            raise _err(f"input file {name} is a folder")
        if not path.is_file():  # a FIFO or a device cannot be read twice (a validating pass, then a predicting one)
            raise _err(f"input file {name} is not a regular file")
        self.size = path.stat().st_size

    def _header(self, f: BinaryIO) -> _NpyHeader:
        from numpy.lib import format as npy_format

        start = f.read(len(T.NPY_MAGIC))
        if start[:4] in T.ZIP_MAGIC:
            raise _err(f"{self.name}: this is a zip archive (.npz?), not a .npy array")
        if start != T.NPY_MAGIC:
            raise _err(f"{self.name}: not a .npy array (it does not start with the .npy magic bytes)")
        f.seek(0)
        try:
            version = npy_format.read_magic(f)
            read_header = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get(
                version
            )
            if read_header is None:
                raise ValueError(f"format version {version} is not supported (only 1.0 and 2.0)")
            shape, fortran, dtype = read_header(f)
        except Exception as exc:  # noqa: BLE001 - numpy's parser of an untrusted header raises many kinds
            reason = str(exc).splitlines()[0][:120] if str(exc).strip() else exc.__class__.__name__
            raise _err(f"{self.name}: not a readable .npy array ({reason})") from None
        dtype = np.dtype(dtype)
        if dtype.kind not in "fiu" or dtype.fields is not None or dtype.subdtype is not None or dtype.hasobject:
            raise _err(f"{self.name}: array dtype {dtype} is not numeric (int, uint or float)")
        width = self.spec.width
        if not all(isinstance(n, int) and n >= 0 for n in shape):
            raise _err(f"{self.name}: invalid shape {shape} in its header")
        if len(shape) == 1 and shape[0] == width:
            rows = 1
        elif len(shape) == 2 and shape[1] == width:
            rows = shape[0]
        else:
            raise _err(f"{self.name}: array shape {list(shape)} is not (rows, {width}) nor ({width},) for a single row")
        offset = f.tell()
        needed = rows * width * dtype.itemsize
        size = self.path.stat().st_size - offset
        if size < needed:
            raise _err(
                f"{self.name}: its header declares {needed} bytes of data ({list(shape)} {dtype}) but the file"
                f" holds only {size}: truncated or corrupt"
            )
        if size > needed:
            raise _err(f"{self.name}: {size - needed} unexpected bytes after the {list(shape)} {dtype} data")
        return _NpyHeader(dtype, rows, bool(fortran), offset)

    def _batches(self, carry: bool) -> Iterator[RowBatch]:
        for start, x in self._arrays():
            yield RowBatch(x, None, start, start + x.shape[0], _rows_from(start))

    def _arrays(self) -> Iterator[tuple[int, np.ndarray]]:
        width = self.spec.width
        try:
            with open(self.path, "rb") as f:
                head = self._header(f)
                self.total = head.rows
                item = head.dtype.itemsize
                step = max(1, _ARRAY_BLOCK_BYTES // (width * max(item, 8)))
                for start in range(0, head.rows, step):
                    n = min(step, head.rows - start)
                    if head.fortran and width > 1:
                        cols = []
                        for j in range(width):
                            f.seek(head.offset + (j * head.rows + start) * item)
                            cols.append(np.frombuffer(self._read(f, n * item), dtype=head.dtype))
                        raw = np.stack(cols, axis=1)
                    else:
                        f.seek(head.offset + start * width * item)
                        raw = np.frombuffer(self._read(f, n * width * item), dtype=head.dtype).reshape(n, width)
                    arr = raw.astype(np.float64)
                    out, bad = _as_float32(arr, nan=self.spec.takes_missing)  # NaN: missing, where the model takes it
                    if bad is not None:
                        raise _err(f"{self.name}: row {start + bad[0] + 1} {bad[1]}")
                    yield start, out
        except OSError as exc:
            raise _err(f"{self.name}: cannot read it ({exc.strerror or exc.__class__.__name__})") from None

    def _read(self, f: BinaryIO, n: int) -> bytes:
        data = f.read(n)
        if len(data) != n:
            raise _err(f"{self.name}: the file ended early (it changed while being read?)")
        return data
