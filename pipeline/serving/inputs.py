"""Input rows for a model, read from a file, stdin or the command line, validated and streamed.

Every reader ends in float32 arrays of shape (rows, width), or a `UsageError` whose message is one line naming
the source and the 1-based line (CSV) or row (JSON, .npy, command line) that is wrong.

    source = open_input(InputSpec(2, ("x1", "x2")), path=Path("rows.csv"))
    n = source.validate()              # full pass over the file: every row checked, nothing kept
    for x in source.chunks(65536):     # second pass: (<=65536, 2) float32 arrays, in order
        ...

Files are read twice, in bounded memory whatever their size: `validate()` checks every row before any output is
written, `chunks()` streams them. stdin (JSON) can be read only once, so it is read into memory on the first call,
at most `MAX_STDIN_ROWS` rows (checked while reading). Formats by suffix: `.npy`, `.json`, anything else is CSV.

Nothing here imports torch, pandas or pyarrow.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np

from ..errors import UsageError
from ..spec.limits import FLOAT32_MAX
from ..spec.numbers import DATA, HEADER, MIXED, first_line_kind
from ..spec.numbers import is_number as _is_number

MAX_STDIN_ROWS = 1_000_000  # stdin is kept in memory: more rows than this are refused (files have no cap)
MAX_LINE_BYTES = 1 << 20  # a longer CSV line is refused instead of buffered
MAX_JSON_ELEMENT_CHARS = 1 << 20  # one JSON row (with the whitespace before it) longer than this is refused
DEFAULT_CHUNK_ROWS = 65536

_CSV_BLOCK_BYTES = 1 << 20  # CSV is read and parsed this many bytes at a time
_JSON_BLOCK_CHARS = 1 << 16
_ARRAY_BLOCK_BYTES = 1 << 22
_JSON_ROWS_PER_BLOCK = 16384
_NOT_SPACE = re.compile(r"\S")
_JSON_WS = re.compile(r"[ \t\n\r]*")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: `width` numbers per row, optionally named (`features`, in model order)."""

    width: int
    features: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"InputSpec.width must be a positive int, not {self.width!r}")
        if self.features is not None:
            names = tuple(self.features)
            if len(names) != self.width or len(set(names)) != len(names) or not all(isinstance(f, str) for f in names):
                raise ValueError(f"InputSpec.features must be {self.width} distinct names, not {self.features!r}")
            object.__setattr__(self, "features", names)


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _err(message: str) -> UsageError:
    """A UsageError whose message is guaranteed to be one line."""
    return UsageError(message.replace("\r", "\\r").replace("\n", "\\n"))


def _display(path: Path) -> str:
    text = str(path)
    return text if text.isprintable() else ascii(text)


def _clip(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def _example(width: int) -> str:
    return ",".join(str(i % 2) for i in range(width))


def _as_float32(arr: np.ndarray) -> tuple[np.ndarray, tuple[int, str] | None]:
    """(arr as float32, None), or (_, (row index, reason)) for the first row that is not finite or does not fit in
    float32 (whatever rounds to float32's largest value, such as its shortest repr 3.4028235e+38, fits)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float32)
    ok = np.isfinite(out).all(axis=1)
    if ok.all():
        return out, None
    row = int(np.argmin(ok))
    if not np.isfinite(arr[row]).all():
        return out, (row, f"is not finite ({arr[row].tolist()}); NaN, Inf and overflowing numbers are refused")
    return out, (row, f"has a value beyond float32's range (+-{FLOAT32_MAX:.4g}): {arr[row].tolist()}")


def _rechunk(blocks: Iterable[np.ndarray], rows: int, width: int) -> Iterator[np.ndarray]:
    """Regroup (n, width) arrays into (rows, width) ones (the last may be shorter), in order."""
    pending: list[np.ndarray] = []
    count = 0
    for block in blocks:
        start = 0
        while start < block.shape[0]:
            take = min(rows - count, block.shape[0] - start)
            pending.append(block[start : start + take])
            count += take
            start += take
            if count == rows:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, count = [], 0
    if count:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


# ---------------------------------------------------------------------------------------------
# Sources


class RowSource(ABC):
    """Validated input rows. `name` is what messages call the source (a path, "stdin", "command line")."""

    name: str
    spec: InputSpec

    def validate(self) -> int:
        """Check every row (a full pass for files); return the row count, or raise UsageError naming the first bad
        line/row. Keeps nothing but the count for files."""
        total = 0
        for block in self._blocks():
            total += block.shape[0]
        if total == 0:
            raise _err(f"{self.name}: no input rows")
        return total

    def chunks(self, rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[np.ndarray]:
        """(n <= rows, width) float32 arrays, in order. Rows are checked again as they stream: a file that changed
        since `validate()` can still raise UsageError part-way."""
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"chunks(rows=...) must be a positive int, not {rows!r}")
        return self._chunks(rows)

    def _chunks(self, rows: int) -> Iterator[np.ndarray]:
        total = 0
        for chunk in _rechunk(self._blocks(), rows, self.spec.width):
            total += chunk.shape[0]
            yield chunk
        if total == 0:
            raise _err(f"{self.name}: no input rows")

    @abstractmethod
    def _blocks(self) -> Iterator[np.ndarray]:
        """Validated float32 (n, width) blocks of any size, in order."""


class _MemorySource(RowSource):
    """Rows that can be read only once (stdin) or are tiny (command line): loaded on first use and kept."""

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

    def _blocks(self) -> Iterator[np.ndarray]:
        yield self.array()


def open_input(
    spec: InputSpec,
    path: Path | None = None,
    stdin: TextIO | BinaryIO | None = None,
    pairs: Sequence[str] | None = None,
) -> RowSource:
    """The rows from exactly one of: a file (`path`; .npy, .json, anything else CSV), JSON on `stdin` (text or
    binary stream), or command-line `pairs` ("0,1" = one row of `spec.width` numbers joined by commas).

    Cheap: nothing is parsed until `validate()` or `chunks()`. Raises UsageError for a missing/unreadable path or
    when zero or several sources are given."""
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
        name = _display(path)
        if not path.exists():
            raise _err(f"input file {name} does not exist")
        if path.is_dir():
            raise _err(f"input file {name} is a folder")
        if not path.is_file():  # a FIFO or a device cannot be read twice (a validating pass, then a predicting one)
            raise _err(f"input file {name} is not a regular file")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            return _NpySource(spec, path, name)
        if suffix == ".json":
            return _JsonFileSource(spec, path, name)
        return _CsvSource(spec, path, name)
    if stdin is not None:
        stream = stdin
        return _MemorySource(spec, "stdin", lambda: _read_json_stream(spec, stream, "stdin"))
    if pairs:
        rows = list(pairs)
        return _MemorySource(spec, "command line", lambda: _parse_pairs(spec, rows))
    raise _err(f"no input rows: give rows as arguments (e.g. {_example(spec.width)}), a file, or JSON on stdin")


# ---------------------------------------------------------------------------------------------
# Command-line rows


def _parse_pairs(spec: InputSpec, pairs: Sequence[str]) -> np.ndarray:
    width = spec.width
    values = np.empty((len(pairs), width), dtype=np.float64)
    for i, pair in enumerate(pairs):
        parts = str(pair).split(",")
        if len(parts) != width or not all(_is_number(p) for p in parts):
            raise _err(
                f"command line: input {i + 1} ({_clip(str(pair))}) is not {width} numbers joined by commas"
                f" (e.g. {_example(width)})"
            )
        values[i] = [float(p) for p in parts]
    out, bad = _as_float32(values)
    if bad is not None:
        raise _err(f"command line: input {bad[0] + 1} ({_clip(str(pairs[bad[0]]))}) {bad[1]}")
    return out


# ---------------------------------------------------------------------------------------------
# CSV


@dataclass(frozen=True)
class _Layout:
    header: bool
    ncols: int  # fields every data line must have
    usecols: tuple[int, ...] | None  # columns to parse, in model order (None: all ncols, see order)
    order: tuple[int, ...] | None  # permutation applied after parsing all columns (None: as is)


class _CsvSource(RowSource):
    def __init__(self, spec: InputSpec, path: Path, name: str) -> None:
        self.spec = spec
        self.path = path
        self.name = name

    # Reading: decoded blocks of whole lines ----------------------------------------------------

    def _texts(self) -> Iterator[tuple[int, str]]:
        """(line number of its first line, text) per block of whole lines (each ends in "\\n" but maybe the last)."""
        line_no = 1
        pending = b""
        first = True
        try:
            with open(self.path, "rb") as f:
                while True:
                    data = f.read(_CSV_BLOCK_BYTES)
                    if first:
                        first = False
                        self._check_not_binary(data)
                        data = data.removeprefix(codecs.BOM_UTF8)
                    if not data:
                        if pending:
                            yield line_no, self._decode(pending, line_no)
                        return
                    data = pending + data if pending else data
                    cut = data.rfind(b"\n") + 1
                    block, pending = data[:cut], data[cut:]
                    if len(pending) > MAX_LINE_BYTES:
                        long_line = line_no + block.count(b"\n")
                        raise _err(f"{self.name}: line {long_line} is longer than {MAX_LINE_BYTES} bytes")
                    if block:
                        yield line_no, self._decode(block, line_no)
                        line_no += block.count(b"\n")
        except OSError as exc:
            raise _err(f"{self.name}: cannot read it ({exc.strerror or exc.__class__.__name__})") from None

    def _check_not_binary(self, data: bytes) -> None:
        if data.startswith(_NPY_MAGIC):
            raise _err(f"{self.name}: this is a .npy array, not CSV text; give it a .npy name")
        if data.startswith(_ZIP_MAGIC):
            raise _err(f"{self.name}: this is a zip archive (.npz?), not CSV text")

    def _decode(self, block: bytes, line_no: int) -> str:
        try:
            return block.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_line = line_no + block.count(b"\n", 0, exc.start)
            raise _err(f"{self.name}: line {bad_line} is not UTF-8 text (byte {block[exc.start]:#04x})") from None

    # Header and columns -------------------------------------------------------------------------

    def _split(self, line: str, line_no: int, header: bool) -> list[str]:
        try:
            rows = list(csv.reader([line], skipinitialspace=header))
        except csv.Error as exc:
            raise _err(f"{self.name}: line {line_no} cannot be split into fields ({exc})") from None
        return rows[0] if rows else []

    def _layout(self, line: str, line_no: int) -> _Layout:
        """Line 1 (the first non-blank line) is a header if none of its fields is a number, data if all are (or a
        header when it names every feature, where some feature names look like numbers).

        A header is matched to the features by name: any column order, other columns ignored (never parsed, so
        they may hold anything); every feature must be there, once. Without feature names (or without a header)
        a line has exactly `width` columns, in model order."""
        width, features = self.spec.width, self.spec.features
        names = [f.strip() for f in self._split(line, line_no, header=True)]
        kind = first_line_kind(names)  # the one rule (`spec.numbers`): none a number, all, or mixed
        header = kind == HEADER
        if kind == DATA and features is not None and any(map(_is_number, features)) and set(features) <= set(names):
            header = True  # feature names that look like numbers: a first line naming every feature is the header
        elif kind == MIXED:
            if features is None or not set(features) <= set(names):
                raise _err(
                    f"{self.name}: line {line_no} ({_clip(line)}) mixes numbers and text: a header line must have no"
                    " numbers, a data line only numbers"
                )
            header = True  # it names every feature
        if header and features is not None:
            index: dict[str, int] = {}
            seen_twice = set()
            for i, n in enumerate(names):
                if n in index:
                    seen_twice.add(n)
                index.setdefault(n, i)
            missing = [f for f in features if f not in index]
            if missing:
                raise self._missing(missing, names, line_no)
            for f in features:
                if f in seen_twice:
                    raise _err(f"{self.name}: the header (line {line_no}) names column {f!r} more than once")
            cols = tuple(index[f] for f in features)
            if len(names) == width:
                return _Layout(True, width, None, None if cols == tuple(range(width)) else cols)
            return _Layout(True, len(names), cols, None)
        if len(names) != width:
            if header:
                raise _err(f"{self.name}: the header (line {line_no}) has {len(names)} columns, expected {width}")
            listed = ", ".join(features) if features is not None else ""
            named = f" ({listed if len(listed) <= 120 else listed[:117] + '...'})" if features is not None else ""
            raise _err(
                f"{self.name}: line {line_no} has {len(names)} columns, expected {width}: without a header line, a row"
                f" is the model's {width} features in order{named}"
                + ("; or give a header line naming the columns" if features is not None else "")
            )
        return _Layout(header, width, None, None)

    def _missing(self, missing: list[str], names: list[str], line_no: int) -> UsageError:
        """The header lacks features: name the first (and the header's closest name), and how many more."""
        import difflib

        first = missing[0]
        folded = {n.casefold(): n for n in reversed(names) if n}
        close = folded.get(first.casefold()) or next(
            iter(difflib.get_close_matches(first, names, n=1, cutoff=0.6)), None
        )
        hint = f" (closest: {close!r})" if close is not None else ""
        others = ""
        if len(missing) > 1:
            listed = ", ".join(repr(m) for m in missing[1:4]) + (", ..." if len(missing) > 4 else "")
            others = f" nor {len(missing) - 1} other feature{'s' if len(missing) > 2 else ''} ({listed})"
        columns = _clip(",".join(names), 200)
        return _err(
            f"{self.name}: the header (line {line_no}) has no column {first!r}{hint}{others}; its columns: {columns}"
        )

    # Parsing --------------------------------------------------------------------------------------

    def _loadtxt(self, lines: list[str], layout: _Layout) -> np.ndarray | None:
        """The lines parsed, or None when some non-blank line is not `ncols` fields with numbers where used. Empty
        lines are skipped; lines of whitespace are not (they make it fail)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                arr = np.loadtxt(
                    lines,
                    delimiter=",",
                    dtype=np.float64,
                    comments=None,
                    quotechar='"',
                    ndmin=2,
                    usecols=layout.usecols,
                )
            except ValueError:
                return None
        if arr.shape[0] == 0:
            return np.empty((0, self.spec.width))
        if layout.usecols is None:
            if arr.shape[1] != layout.ncols:
                return None
        elif not self._counts_ok(lines, layout.ncols):
            return None  # with usecols numpy does not check the other columns' count
        return arr if layout.order is None else arr[:, layout.order]

    def _counts_ok(self, lines: list[str], ncols: int) -> bool:
        commas = ncols - 1
        for line in lines:
            if line.count(",") != commas and line.strip():
                if '"' not in line:
                    return False
                try:
                    fields = next(csv.reader([line]), [])
                except csv.Error:
                    return False
                if len(fields) != ncols:
                    return False
        return True

    def _parse_block(self, text: str, line_no: int, layout: _Layout) -> np.ndarray:
        lines = text.split("\n")  # (a list is parsed faster by numpy than a StringIO of the text)
        if text.endswith("\n"):
            lines.pop()
        arr = self._loadtxt(lines, layout)
        if arr is not None:
            out, bad = _as_float32(arr)
            if bad is None:
                return out
            if arr.shape[0] == len(lines):  # no blank lines: row i is line i
                raise _err(f"{self.name}: line {line_no + bad[0]} {bad[1]}")
        # Slow path (blank lines, or a bad line somewhere): find the first bad line exactly.
        keep = [i for i, line in enumerate(lines) if line.strip()]
        rows = [lines[i] for i in keep]
        bad_parse = self._first_unparsable(rows, layout)
        good = rows if bad_parse is None else rows[:bad_parse]
        arr = self._loadtxt(good, layout) if good else np.empty((0, self.spec.width))
        assert arr is not None
        out, bad = _as_float32(arr)
        if bad is not None:
            raise _err(f"{self.name}: line {line_no + keep[bad[0]]} {bad[1]}")
        if bad_parse is not None:
            raise self._diagnose(rows[bad_parse], line_no + keep[bad_parse], layout)
        return out

    def _first_unparsable(self, rows: list[str], layout: _Layout) -> int | None:
        """Index of the first row that does not parse, by bisection with the same parser (so it agrees with it)."""
        if self._loadtxt(rows, layout) is not None:
            return None
        lo, hi = 0, len(rows)  # rows[lo:hi] holds a bad row
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._loadtxt(rows[lo:mid], layout) is None:
                hi = mid
            else:
                lo = mid
        return lo

    def _diagnose(self, line: str, line_no: int, layout: _Layout) -> UsageError:
        fields = self._split(line, line_no, header=False)
        if len(fields) != layout.ncols:
            return _err(f"{self.name}: line {line_no} has {len(fields)} columns, expected {layout.ncols}")
        for c in layout.usecols or range(layout.ncols):
            if not _is_number(fields[c]):
                return _err(f"{self.name}: line {line_no}, column {c + 1} ({_clip(fields[c])}) is not a number")
        if layout.usecols is None:
            return _err(f"{self.name}: line {line_no} ({_clip(line)}) is not {layout.ncols} numbers")
        columns = ", ".join(str(c + 1) for c in layout.usecols)
        return _err(
            f"{self.name}: line {line_no} ({_clip(line)}) is not {layout.ncols} fields with numbers in columns {columns}"
        )

    def _blocks(self) -> Iterator[np.ndarray]:
        layout: _Layout | None = None
        for line_no, text in self._texts():
            if layout is None:
                found = _NOT_SPACE.search(text)
                if found is None:
                    continue  # blank so far
                start = text.rfind("\n", 0, found.start()) + 1
                end = text.find("\n", found.start())
                end = len(text) if end < 0 else end
                first_no = line_no + text.count("\n", 0, start)
                layout = self._layout(text[start:end], first_no)
                if layout.header:
                    text, line_no = text[end + 1 :], first_no + 1
                    if not text:
                        continue
            arr = self._parse_block(text, line_no, layout)
            if arr.shape[0]:
                yield arr


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

    def _header(self, f: BinaryIO) -> _NpyHeader:
        from numpy.lib import format as npy_format

        start = f.read(len(_NPY_MAGIC))
        if start[:4] in _ZIP_MAGIC:
            raise _err(f"{self.name}: this is a zip archive (.npz?), not a .npy array")
        if start != _NPY_MAGIC:
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

    def _blocks(self) -> Iterator[np.ndarray]:
        width = self.spec.width
        try:
            with open(self.path, "rb") as f:
                head = self._header(f)
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
                    out, bad = _as_float32(arr)
                    if bad is not None:
                        raise _err(f"{self.name}: row {start + bad[0] + 1} {bad[1]}")
                    yield out
        except OSError as exc:
            raise _err(f"{self.name}: cannot read it ({exc.strerror or exc.__class__.__name__})") from None

    def _read(self, f: BinaryIO, n: int) -> bytes:
        data = f.read(n)
        if len(data) != n:
            raise _err(f"{self.name}: the file ended early (it changed while being read?)")
        return data


# ---------------------------------------------------------------------------------------------
# JSON (files and stdin)


class _TextBlocks:
    """Blocks of text from a text or binary stream (binary is decoded as UTF-8); a leading BOM is dropped."""

    def __init__(self, read: Callable[[int], Any], name: str) -> None:
        self._read = read
        self._name = name
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._offset = 0  # bytes read so far (binary streams), for messages
        self._started = False
        self._eof = False

    def next(self) -> str:
        """The next block of text, "" at the end of input."""
        while not self._eof:
            try:
                data = self._read(_JSON_BLOCK_CHARS)
                if isinstance(data, (bytes, bytearray, memoryview)):
                    self._offset += len(data)
                    text = self._decoder.decode(bytes(data), final=not data)
                elif isinstance(data, str):
                    text = data
                elif data is None:
                    text = ""
                else:
                    raise _err(f"{self._name}: the stream gave {type(data).__name__}, not text or bytes")
            except UnicodeDecodeError:
                raise _err(f"{self._name}: not UTF-8 text (a bad byte within its first {self._offset} bytes)") from None
            except OSError as exc:
                raise _err(f"{self._name}: cannot read it ({exc.strerror or exc.__class__.__name__})") from None
            if not data:
                self._eof = True
            if not self._started and text:
                self._started = True
                text = text.removeprefix("\ufeff")
            if text:
                return text
        return ""


def _json_kind(value: Any) -> str:
    """A short, one-line description of a JSON value for messages (never recursive)."""
    if value is True or value is False:
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {_clip(value, 40)}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return repr(value)[:40]  # a number


def _is_json_number(value: Any) -> bool:
    return type(value) is float or type(value) is int  # not bool, str, None, list, dict


class _JsonRows:
    """Rows from `[[x1, x2], ...]`, `[x1, x2]` (one row) or `{"x": <either>}`, where a row may also be an object
    keyed by feature name. Parsed incrementally: the outer structure here, each row with `raw_decode`, so memory is
    bounded by one row (`MAX_JSON_ELEMENT_CHARS`) whatever the input's size, and nesting cannot recurse deeply."""

    _FORMS = '[[x1, x2, ...], ...], a single row [x1, x2, ...] or {"x": [[x1, x2, ...], ...]}'

    def __init__(self, blocks: _TextBlocks, spec: InputSpec, name: str) -> None:
        self._blocks = blocks
        self._spec = spec
        self._name = name
        self._decoder = json.JSONDecoder()
        self._buf = ""
        self._pos = 0
        self._base = 0  # absolute offset of self._buf[0]
        self._mark = 0  # absolute offset where the current element (with the whitespace before it) began
        self._row = 0  # the row being read (1-based), 0 outside the rows
        self._no_batch_until = -1  # absolute offset: no batch decoding until the buffer reaches past it

    # Low level --------------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"row {self._row}" if self._row else f"character {self._base + self._pos + 1}"

    def _fill(self) -> bool:
        """More text into the buffer; False at the end of input."""
        if self._base + len(self._buf) - self._mark > MAX_JSON_ELEMENT_CHARS:
            raise _err(
                f"{self._name}: {self._where()} is more than {MAX_JSON_ELEMENT_CHARS} characters of JSON"
                " (or is not valid JSON)"
            )
        text = self._blocks.next()
        if not text:
            return False
        self._base += self._pos
        self._buf = self._buf[self._pos :] + text
        self._pos = 0
        return True

    def _peek(self) -> str:
        """The next non-whitespace character ("" at the end of input), not consumed."""
        while True:
            m = _JSON_WS.match(self._buf, self._pos)
            assert m is not None
            self._pos = m.end()
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return ""

    def _expect(self, chars: str, what: str) -> str:
        c = self._peek()
        if c == "" or c not in chars:
            found = "the end of input" if c == "" else repr(c)
            raise _err(f"{self._name}: invalid JSON at {self._where()}: expected {what}, found {found}")
        self._pos += 1
        return c

    def _value(self) -> Any:
        """One JSON value at the current position (whitespace first skipped)."""
        self._peek()
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                # Text cut at the buffer's end fails near the end, or in a string still open: read more and retry.
                maybe_cut = exc.pos >= len(self._buf) - 16 or exc.msg.startswith("Unterminated string")
                if maybe_cut and self._fill():
                    continue
                raise _err(f"{self._name}: invalid JSON at {self._where()} ({exc.msg})") from None
            except RecursionError:
                raise _err(f"{self._name}: JSON nested too deeply at {self._where()}") from None
            except ValueError as exc:  # e.g. an integer with more digits than Python converts
                raise _err(f"{self._name}: invalid JSON at {self._where()} ({str(exc).split(':')[0][:100]})") from None
            if end < len(self._buf) or not self._fill():  # a number at the buffer's end may go on in the next block
                self._pos = end
                self._mark = self._base + end
                return value

    # Structure ----------------------------------------------------------------------------------------

    def rows(self) -> Iterator[list[list[Any]]]:
        """Batches of rows, in order: each row's `width` values in model order (not yet checked to be finite)."""
        c = self._peek()
        if c == "":
            raise _err(f"{self._name}: no input rows (empty input)")
        if c == "[":
            yield from self._list()
        elif c == "{":
            yield from self._object()
        else:
            raise _err(f"{self._name}: expected JSON {self._FORMS}")
        self._row = 0
        c = self._peek()
        if c != "":
            raise _err(f"{self._name}: invalid JSON: unexpected {c!r} at {self._where()}, after the rows")

    def _object(self) -> Iterator[list[list[Any]]]:
        self._pos += 1  # "{"
        seen_x = False
        if self._peek() == "}":
            self._pos += 1
        else:
            while True:
                self._row = 0
                if self._peek() != '"':
                    raise _err(f"{self._name}: invalid JSON at {self._where()}: expected a key in double quotes")
                key = self._value()
                self._expect(":", "':' after a key")
                if key == "x":
                    if seen_x:
                        raise _err(f'{self._name}: the key "x" is given more than once')
                    seen_x = True
                    if self._peek() != "[":
                        raise _err(f'{self._name}: "x" must be a list of rows: {self._FORMS}')
                    yield from self._list()
                    self._row = 0
                else:
                    self._value()  # other keys are ignored
                if self._expect(",}", "',' or '}' in the top-level object") == "}":
                    break
        if not seen_x:
            raise _err(f'{self._name}: a JSON object needs the key "x": {self._FORMS}')

    def _list(self) -> Iterator[list[list[Any]]]:
        self._pos += 1  # "["
        if self._peek() == "]":
            self._pos += 1
            return
        self._row = 1
        first = self._value()
        if _is_json_number(first):
            yield [self._single_row(first)]
            return
        yield [self._row_values(first)]
        while self._expect(",]", "',' or ']' after a row") == ",":
            batch = self._batch()
            if batch is None:
                self._row += 1
                batch = [self._row_values(self._value())]
            yield batch

    def _batch(self) -> list[list[Any]] | None:
        """The next rows up to the last complete one in the buffer, decoded at once (the fast path), or None (then
        the caller reads one row). Only an exact decode of whole rows is taken; anything else goes row by row."""
        buf, pos = self._buf, self._pos
        if self._base + len(buf) <= self._no_batch_until:
            return None
        cut = max(buf.rfind("]"), buf.rfind("}")) + 1
        for _ in range(3):  # the last bracket may close the rows' list (or the top-level object): try earlier ones
            if cut <= pos:
                break
            text = "[" + buf[pos:cut] + "]"
            try:
                rows, end = self._decoder.raw_decode(text)
            except (ValueError, RecursionError):
                rows, end = None, -1
            if end == len(text) and rows:
                self._pos = cut
                self._mark = self._base + cut
                width = self._spec.width
                if (
                    set(map(type, rows)) == {list}
                    and set(map(len, rows)) == {width}
                    and set(map(type, chain.from_iterable(rows))) <= {float, int}
                ):
                    self._row += len(rows)
                    return rows
                checked = []
                for row in rows:
                    self._row += 1
                    checked.append(self._row_values(row))
                return checked
            cut = max(buf.rfind("]", pos, cut - 1), buf.rfind("}", pos, cut - 1)) + 1
        self._no_batch_until = self._base + len(buf)  # do not retry before more text is read
        return None

    def _single_row(self, first: Any) -> list[Any]:
        """The top-level list is one row: [x1, x2, ...]."""
        width = self._spec.width
        row = [first]
        while self._expect(",]", "',' or ']' in the row") == ",":
            if len(row) == width:
                raise _err(f"{self._name}: row 1 has more than {width} values, expected {width}")
            row.append(self._value())
        return self._row_values(row)

    def _row_values(self, value: Any) -> list[Any]:
        width, features, n = self._spec.width, self._spec.features, self._row
        if type(value) is list:
            if len(value) != width:
                raise _err(f"{self._name}: row {n} has {len(value)} values, expected {width}")
            values = value
        elif type(value) is dict:
            if features is None:
                raise _err(f"{self._name}: row {n} is an object, but this model has no feature names; give a list")
            missing = [f for f in features if f not in value]
            if missing:
                raise _err(f"{self._name}: row {n} has no key {missing[0]!r} (rows need {', '.join(features)})")
            values = [value[f] for f in features]
        else:
            raise _err(f"{self._name}: row {n} is {_json_kind(value)}, not a list of {width} numbers")
        for v in values:
            if not _is_json_number(v):
                raise _err(f"{self._name}: row {n}: {_json_kind(v)} is not a number")
        return values


def _to_array(block: list[list[Any]], start: int, name: str) -> np.ndarray:
    """Rows (start+1, ...) as checked float32: finite and within float32's range."""
    try:
        arr = np.array(block, dtype=np.float64)
    except OverflowError:  # an integer too large for float64
        for i, row in enumerate(block):
            try:
                np.array(row, dtype=np.float64)
            except OverflowError:
                raise _err(f"{name}: row {start + i + 1} has a value beyond float32's range") from None
        raise
    out, bad = _as_float32(arr)
    if bad is not None:
        raise _err(f"{name}: row {start + bad[0] + 1} {bad[1]}")
    return out


def _json_arrays(batches: Iterator[list[list[Any]]], name: str, max_rows: int | None) -> Iterator[np.ndarray]:
    """float32 blocks from batches of rows; more than max_rows rows (when given) fails as soon as it is read."""
    block: list[list[Any]] = []
    start = 0  # rows before this block
    for batch in batches:
        block.extend(batch)
        if max_rows is not None and start + len(block) > max_rows:
            raise _err(f"{name}: more than {max_rows} rows; pass larger inputs as a file (files are streamed)")
        if len(block) >= _JSON_ROWS_PER_BLOCK:
            yield _to_array(block, start, name)
            start += len(block)
            block = []
    if block:
        yield _to_array(block, start, name)


def _read_json_stream(spec: InputSpec, stream: TextIO | BinaryIO, name: str) -> np.ndarray:
    """All rows of JSON from a stream, read once; more than MAX_STDIN_ROWS fails while reading."""
    reader = _JsonRows(_TextBlocks(stream.read, name), spec, name)
    parts = list(_json_arrays(reader.rows(), name, MAX_STDIN_ROWS))
    if not parts:
        return np.empty((0, spec.width), dtype=np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class _JsonFileSource(RowSource):
    def __init__(self, spec: InputSpec, path: Path, name: str) -> None:
        self.spec = spec
        self.path = path
        self.name = name

    def _blocks(self) -> Iterator[np.ndarray]:
        try:
            with open(self.path, "rb") as f:
                reader = _JsonRows(_TextBlocks(f.read, self.name), self.spec, self.name)
                yield from _json_arrays(reader.rows(), self.name, None)
        except OSError as exc:
            raise _err(f"{self.name}: cannot read it ({exc.strerror or exc.__class__.__name__})") from None
