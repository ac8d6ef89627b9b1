"""The one reader of tabular files, for training (a whole file) and `predict` (streamed in bounded memory).

    f = open_table(Path("rows.parquet"))            # the format from the name (or `fmt`), the column names
    for batch in f.batches(numeric=("x1", "x2"), text=("id",)):
        batch.table                                  # a pyarrow Table: numeric columns float64, text as read
        batch.place(3)                               # "line 12" (CSV, JSON Lines) or "row 4" (Parquet, JSON)
    table = f.read_all(numeric=features, infer=(target,))   # training: every row, the target's type inferred

Formats, by the file's name unless given: `.parquet`/`.pq` (read by row group), `.jsonl`/`.ndjson` (one
JSON object per line), `.json` (one document, read whole: at most MAX_JSON_BYTES and MAX_JSON_ROWS),
`.npy` (`serving.inputs` reads it: it has no columns), anything else CSV.

One rule for each question, whichever the format and whoever reads:
- a number is ASCII decimal notation, trimmed (`spec.numbers`; pyarrow's float parser agrees with it on
  every case tested: `0x10`, `1_000` and non-ASCII digits are not numbers);
- a missing value is a field equal to one of the missing tokens (`DEFAULT_MISSING`, or the recipe's
  `[data] missing`), a JSON null or absent key, a Parquet null or a NaN;
- a CSV's first line is a header when none of its fields is a number (`spec.numbers.first_line_kind`);
- text columns are carried as they are written (CSV: the field's text; nothing in them is "missing").
Every problem is a one-line `DataError` naming the file, the line (CSV, JSON Lines) or row (Parquet,
JSON) and the column.

CSV is read in blocks of whole records (a block ends at a line break outside quotes), each parsed by
`pyarrow.csv.read_csv` on its threads, the next block parsed in a background thread while the caller
works on the current one; memory is a few blocks whatever the file's size. Torch-free.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import io
import json
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UsageError
from .formats import CSV, INPUT_FORMATS, JSON, JSONL, NPY, PARQUET
from .numbers import HEADER, first_line_kind, is_number

# jemalloc (pipeline/__init__.py picks it) hands freed pages back after 100 ms rather than its default
# second or more: the same speed, and a 10M-row Parquet file streams in 30 MB less (docs/performance.md).
if pa.default_memory_pool().backend_name == "jemalloc":
    pa.jemalloc_set_decay_ms(100)

DEFAULT_MISSING: tuple[str, ...] = ("", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None")
FORMATS = INPUT_FORMATS
SUFFIXES = {".csv": CSV, ".parquet": PARQUET, ".pq": PARQUET, ".jsonl": JSONL, ".ndjson": JSONL, ".json": JSON}
SUFFIXES[".npy"] = NPY

BLOCK_BYTES = 2 << 20  # CSV and JSON Lines are parsed this many bytes at a time
MAX_RECORD_BYTES = 64 << 20  # one CSV record (or JSON line) longer than this is refused, not buffered
MAX_HEADER_BYTES = 1 << 20
MAX_JSON_BYTES = 256 << 20  # a JSON document is read whole: larger ones are refused (use JSON Lines)
MAX_JSON_ROWS = 1_000_000
PARQUET_BATCH_ROWS = 8192
PARQUET_BUFFER_BYTES = 1 << 16  # Parquet is read through a buffer this size: page by page, whatever a row group's size

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # .npz, .xlsx
_PARQUET_MAGIC = b"PAR1"


class DataError(UsageError):
    """A data file that cannot be used as it is (exit 2)."""


def _err(message: str) -> DataError:
    return DataError(message.replace("\r", "\\r").replace("\n", "\\n"))


def display(path: Path | str) -> str:
    """How messages name a file: as given, or escaped when it holds unprintable characters."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def clip(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def file_format(path: Path | str, fmt: str | None = None) -> str:
    """The format a file is read as: `fmt` when given, else by its name's suffix (anything else: CSV)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise UsageError(f"format {fmt!r}: choose {', '.join(FORMATS)}")
        return fmt
    return SUFFIXES.get(Path(path).suffix.lower(), CSV)


def check_missing(tokens: Sequence[str] | None) -> tuple[str, ...]:
    """The missing tokens a reader uses (None: DEFAULT_MISSING); an empty field is always one."""
    return DEFAULT_MISSING if tokens is None else tuple(dict.fromkeys(("", *tokens)))


def tokens_text(tokens: Sequence[str], most: int = 6) -> str:
    """The missing-value tokens as messages list them ("'NA', 'N/A', ..."); the empty field, always
    missing, is said in words by the message itself."""
    shown = [m for m in tokens if m]
    return ", ".join(repr(m) for m in shown[:most]) + (", ..." if len(shown) > most else "")


# ---------------------------------------------------------------------------------------------
# What a reader yields


@dataclass(frozen=True, eq=False)
class Batch:
    """Rows of a file: `table` holds the columns asked for (numeric ones float64, nulls where missing);
    `first_row` is the 0-based data row of its first row; `place(i)` names row i of the batch as
    messages do ("line 12" for CSV and JSON Lines, "row 4" for Parquet and JSON)."""

    table: pa.Table
    first_row: int
    place: Callable[[int], str]
    position: int = 0  # how far the reader got, in `TableFile.total`'s unit (bytes, or rows)

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)


@dataclass(eq=False)
class TableFile:
    """A tabular file opened (its format and column names known), nothing parsed yet.

    `names`: the columns, in file order (CSV: the header, or `column 1`.. without one; Parquet: the
    schema; JSON Lines and JSON objects: the first row's keys; JSON lists: `column 1`..). `header`:
    the CSV's first line is a header (set by the caller when its rule differs, see `serving.inputs`)."""

    path: Path
    fmt: str
    where: str
    names: list[str]
    missing: tuple[str, ...] = DEFAULT_MISSING
    header: bool = True
    first_fields: list[str] = field(default_factory=list)  # CSV: the first record's fields
    _csv_start: tuple[int, int] = (0, 1)  # CSV: (byte offset, line) of the first record
    _json_rows: Any = None  # JSON: the document's rows, read whole
    total: int = 0  # the size progress is measured against: bytes (CSV, JSON Lines) or rows (Parquet, JSON)

    @property
    def named(self) -> bool:
        """Whether the columns have names of their own (a CSV header, a schema, JSON objects' keys), not
        `column 1`, `column 2`, ..."""
        if self.fmt == CSV:
            return self.header
        if self.fmt == JSON:
            return bool(self._json_rows and self._json_rows[1])
        return True

    def label(self, name: str) -> str:
        """How messages name a column: column 'income', or column 3 where the file has no names."""
        return f"column {name!r}" if self.named else name

    # Streaming ------------------------------------------------------------------------------------

    def batches(self, numeric: Sequence[str], text: Sequence[str] = (), prefetch: bool = True) -> Iterator[Batch]:
        """Batches of the `numeric` columns (float64; a field that is not a number is a DataError naming
        it; a missing one is null) and the `text` columns (as written), in file order. Names must be in
        `names`."""
        unknown = [n for n in (*numeric, *text) if n not in self.names]
        if unknown:
            raise ValueError(f"columns {unknown} are not in {self.where}")
        if self.fmt == CSV:
            it = _csv_batches(self, tuple(numeric), tuple(text))
        elif self.fmt == PARQUET:
            it = _parquet_batches(self, tuple(numeric), tuple(text))
        elif self.fmt == JSONL:
            it = _jsonl_batches(self, tuple(numeric), tuple(text))
        elif self.fmt == JSON:
            it = _json_batches(self, tuple(numeric), tuple(text))
        else:
            raise ValueError(f"{self.fmt} files have no columns")
        return _prefetched(it) if prefetch else it

    def read_all(self, numeric: Sequence[str], infer: Sequence[str] = ()) -> pa.Table:
        """Every row of the `numeric` columns (float64, nulls where missing) and the `infer` columns
        (their type inferred over the whole file: a training target), in one Table."""
        if self.fmt == CSV:
            return _csv_whole(self, tuple(numeric), tuple(infer))
        parts = []
        for b in self.batches(numeric, infer, prefetch=False):
            parts.append(b.table)
        if not parts:
            return pa.table({n: pa.array([], pa.float64()) for n in (*numeric, *infer)})
        try:
            return pa.concat_tables(parts, promote_options="permissive")
        except pa.ArrowException as exc:
            raise _err(f"{self.where}: a column changes type between rows ({_first_line(str(exc))})") from None


_READERS: set[tuple[threading.Thread, threading.Event]] = set()


def _stop_readers() -> None:
    """At exit, before the interpreter is torn down: stop and join every reader thread still running (one
    left inside pyarrow's C++ at teardown can abort the process)."""
    for worker, stop in list(_READERS):
        stop.set()
        worker.join(5)


_register_atexit = getattr(threading, "_register_atexit", None)  # runs before threads are abandoned
if _register_atexit is not None:
    _register_atexit(_stop_readers)


def _prefetched(it: Iterator[Batch], depth: int = 2) -> Iterator[Batch]:
    """`it` run in a background thread, `depth` batches ahead (pyarrow releases the GIL while parsing,
    so the next block parses while the caller predicts and writes); errors re-raised in order. The
    thread is always joined: when the batches end, when the caller stops early, and at exit."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for b in it:
                if not put(("batch", b)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=run, name="table-reader", daemon=True)
    entry = (worker, stop)
    _READERS.add(entry)
    worker.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "batch":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(0.05)
        _READERS.discard(entry)


# ---------------------------------------------------------------------------------------------
# Opening


def open_table(
    path: Path | str, fmt: str | None = None, missing: Sequence[str] | None = None, where: str | None = None
) -> TableFile:
    """`path` opened as `fmt` (None: by its name): its column names read (CSV: the first record; Parquet:
    the footer; JSON Lines: the first line; JSON: the whole document). A missing, unreadable or
    malformed file is a DataError. `where`: how messages name the file (default: its path)."""
    path = Path(path)
    where = where or display(path)
    fmt = file_format(path, fmt)
    try:
        if not path.exists():
            raise _err(f"{where} does not exist")
        if path.is_dir():
            raise _err(f"{where} is a folder")
        if not path.is_file():  # a FIFO or a device: it could not be read twice
            raise _err(f"{where} is not a regular file")
        with path.open("rb") as fh:
            magic = fh.read(8)
    except OSError as exc:
        raise _err(f"{where} is not readable ({exc.strerror or exc.__class__.__name__})") from None
    if not magic:
        raise _err(f"{where}: no input rows (the file is empty)")
    tokens = check_missing(missing)
    if fmt != NPY and magic.startswith(NPY_MAGIC):
        raise _err(f"{where}: this is a .npy array; give it a .npy name")
    if fmt != PARQUET and magic.startswith(_PARQUET_MAGIC):
        raise _err(f"{where}: this is a Parquet file; give it a .parquet name")
    if magic[:4] in ZIP_MAGIC:
        raise _err(f"{where}: this is a zip archive (.npz, .xlsx?), not a table")
    f = TableFile(path, fmt, where, [], tokens)
    f.total = path.stat().st_size
    if fmt == CSV:
        _open_csv(f)
    elif fmt == PARQUET:
        pf = _parquet_file(f)
        f.names = list(pf.schema_arrow.names)
        f.total = pf.metadata.num_rows
    elif fmt == JSONL:
        f.names = _jsonl_names(f)
    elif fmt == JSON:
        _open_json(f)
    return f


# ---------------------------------------------------------------------------------------------
# CSV


def _open_csv(f: TableFile) -> None:
    """The first non-blank record: its fields, where it starts; the header rule decides `names`."""
    with f.path.open("rb") as fh:
        head = fh.read(MAX_HEADER_BYTES)
    start = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    line = 1
    while True:  # blank lines before the first record
        end = head.find(b"\n", start)
        piece = head[start : end if end >= 0 else len(head)]
        if piece.strip():
            break
        if end < 0:
            raise _err(f"{f.where}: no input rows (only blank lines)")
        start, line = end + 1, line + 1
    cut = _record_end(head, start)
    if cut is None:
        if len(head) == MAX_HEADER_BYTES:
            raise _err(f"{f.where}: line {line} is longer than {MAX_HEADER_BYTES} bytes")
        cut = len(head)
    if re.search(rb"\r(?!\n)", head[start:cut].rstrip(b"\r\n")):
        raise _err(
            f"{f.where}: line {line} has a carriage return (\\r) without a line feed: lines must end with \\n or"
            " \\r\\n (old Mac line endings: convert the file)"
        )
    fields = _split_record(head[start:cut], f.where, line)
    f.first_fields = fields
    f._csv_start = (start, line)
    kind = first_line_kind([x.strip() for x in fields])
    set_header(f, kind == HEADER)


def set_header(f: TableFile, header: bool) -> None:
    """Whether the CSV's first record is its header (the caller's rule; by default: none of its fields
    is a number). Without one, the columns are `column 1`, `column 2`, ..."""
    f.header = header
    if header:
        f.names = [x.strip() for x in f.first_fields]
    else:
        f.names = [f"column {i + 1}" for i in range(len(f.first_fields))]


def _split_record(raw: bytes, where: str, line: int) -> list[str]:
    if csv.field_size_limit() < MAX_RECORD_BYTES:
        csv.field_size_limit(MAX_RECORD_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _err(f"{where}: line {line} is not UTF-8 text") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise _err(f"{where}: line {line} cannot be split into fields ({exc})") from None
    return rows[0] if rows else [""]


def _arrow_buffer(data: bytes | memoryview) -> pa.Buffer:
    """`data` copied into memory pyarrow owns (a memcpy of a block). pyarrow's threaded readers release
    their input on their own threads after returning; a buffer wrapping a Python object needs the GIL to
    be released, and at exit that aborts the process ("terminate called without an active exception")."""
    out = pa.allocate_buffer(len(data))
    if len(data):
        np.frombuffer(out, dtype=np.uint8)[:] = np.frombuffer(data, dtype=np.uint8)
    return out


def _quoted_spans(buf: bytes, start: int = 0) -> tuple[list[int], list[int], int | None]:
    """Where a buffer's quoted fields are, read as pyarrow and Python's csv module read them from a record
    start at `start`: a quote opens a quoted field only at a field's start (the buffer's start, or after
    a comma or line break); inside one, a doubled quote is a quote and a single one closes it; a quote
    anywhere else is an ordinary character. Returns the (open, close) positions of the closed fields and
    the position of an opening quote still open at the buffer's end (None: none)."""
    arr = np.frombuffer(buf, dtype=np.uint8)[start:]
    q = np.flatnonzero(arr == 34) + start
    if len(q) == 0:
        return [], [], None
    before = np.frombuffer(buf, dtype=np.uint8)[np.maximum(q - 1, 0)]
    at_field_start = ((before == 44) | (before == 10) | (q == start)).tolist()
    qs = q.tolist()
    opens: list[int] = []
    closes: list[int] = []
    inside = False
    k, n = 0, len(qs)
    while k < n:
        p = qs[k]
        if not inside:
            if at_field_start[k]:
                inside = True
                opens.append(p)
            k += 1
        elif k + 1 < n and qs[k + 1] == p + 1:
            k += 2  # a doubled quote inside the field
        else:
            inside = False
            closes.append(p)
            k += 1
    return opens[: len(closes)], closes, (opens[-1] if inside else None)


def _outside(nl: int, opens: list[int], closes: list[int], still_open: int | None) -> bool:
    if still_open is not None and nl > still_open:
        return False
    i = bisect.bisect_right(opens, nl) - 1
    return i < 0 or closes[i] < nl


def _record_end(buf: bytes, start: int = 0) -> int | None:
    """The index just after the record that starts at `start` (its line break outside quotes), or None
    when the buffer ends first."""
    nl = buf.find(b"\n", start)
    if nl < 0 or buf.find(b'"', start, nl) < 0:
        return None if nl < 0 else nl + 1
    opens, closes, still_open = _quoted_spans(buf, start)
    while nl >= 0:
        if _outside(nl, opens, closes, still_open):
            return nl + 1
        nl = buf.find(b"\n", nl + 1)
    return None


def _last_record_end(buf: bytes) -> int:
    """The index just after the last whole record of a buffer that starts at a record's start (0: none)."""
    if b'"' not in buf:
        return buf.rfind(b"\n") + 1
    opens, closes, still_open = _quoted_spans(buf)
    nl = buf.rfind(b"\n")
    while nl >= 0:
        if _outside(nl, opens, closes, still_open):
            return nl + 1
        nl = buf.rfind(b"\n", 0, nl)
    return 0


def _csv_blocks(f: TableFile) -> Iterator[tuple[bytes | memoryview, int, int]]:
    """(bytes of whole records, the line its first record starts on, the file offset after it), past the
    header."""
    offset, line = f._csv_start
    with f.path.open("rb") as fh:
        fh.seek(offset)
        pending = b""
        if f.header:  # skip the header record
            head = fh.read(MAX_HEADER_BYTES)
            cut = _record_end(head) or len(head)
            line += head.count(b"\n", 0, cut)
            pending = head[cut:]
        too_long = "the record at line {line} is longer than {mb} MB (an unclosed quote?)"
        yield from _blocks(f, fh, pending, line, _last_record_end, too_long)


def _blocks(
    f: TableFile, fh: Any, pending: bytes, line: int, last_end: Callable[[bytes], int], too_long: str
) -> Iterator[tuple[bytes | memoryview, int, int]]:
    """The rest of `fh` in blocks of about BLOCK_BYTES that end where `last_end` says a record ends, with
    the line each starts on and the file offset after it; a record over MAX_RECORD_BYTES is refused
    (`too_long`, formatted with its line and the limit in MB)."""
    while True:
        data = fh.read(BLOCK_BYTES)
        if not data:
            if pending.strip():
                yield pending, line, fh.tell()
            return
        buf = pending + data if pending else data
        cut = last_end(buf)
        if cut == 0:
            if len(buf) > MAX_RECORD_BYTES:
                raise _err(f"{f.where}: " + too_long.format(line=line, mb=MAX_RECORD_BYTES >> 20))
            pending = buf
            continue
        # The block is a view of `buf` (one allocation per block, not three: fewer, steadier pages).
        block, pending = memoryview(buf)[:cut], buf[cut:]
        yield block, line, fh.tell() - len(pending)
        line += buf.count(b"\n", 0, cut)


def _csv_options(f: TableFile, numeric: tuple[str, ...], text: tuple[str, ...], infer: tuple[str, ...] = ()):
    import pyarrow.csv as pacsv

    internal = [f"c{i}" for i in range(len(f.names))]  # duplicate or odd header names cannot clash
    index = {n: i for i, n in reversed(list(enumerate(f.names)))}
    wanted = [*numeric, *text, *infer]
    types = {internal[index[n]]: pa.float64() for n in numeric}
    types.update({internal[index[n]]: pa.string() for n in text})
    convert = pacsv.ConvertOptions(
        include_columns=[internal[index[n]] for n in wanted],
        column_types=types,
        null_values=list(f.missing),
        strings_can_be_null=False,
        quoted_strings_can_be_null=True,
    )
    return internal, index, wanted, convert


def _csv_batches(f: TableFile, numeric: tuple[str, ...], text: tuple[str, ...]) -> Iterator[Batch]:
    import pyarrow.csv as pacsv

    internal, index, wanted, convert = _csv_options(f, numeric, text)
    read = pacsv.ReadOptions(column_names=internal, use_threads=True)
    rows = 0
    for block, line, end in _csv_blocks(f):
        table = _parse_block(f, block, line, numeric, read, convert).rename_columns(wanted)
        yield Batch(table, rows, _csv_place(block, line), end)
        rows += table.num_rows


def _parse_block(
    f: TableFile, block: bytes | memoryview, line: int, numeric: Sequence[str], read: Any, convert: Any
) -> pa.Table:
    """One block of whole records parsed; a line of only spaces and tabs is a blank line (pyarrow skips
    only empty ones: such lines are emptied and the block parsed again, on errors only)."""
    import pyarrow.csv as pacsv

    def parse(data: bytes | memoryview) -> pa.Table:
        parse_options = pacsv.ParseOptions(newlines_in_values=_has_quote(data))
        return pacsv.read_csv(
            _arrow_buffer(data), read_options=read, parse_options=parse_options, convert_options=convert
        )

    try:
        return parse(block)
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        message = str(exc)
    if "straddling" in message:  # a record longer than pyarrow's parse block (1 MB): one block for all
        read = pacsv.ReadOptions(column_names=read.column_names, use_threads=True, block_size=len(block) + 1)
        try:
            return parse(block)
        except (pa.ArrowException, UnicodeDecodeError) as exc:
            message = str(exc)
    block = bytes(block)  # errors only: a copy to search
    cleaned = _blank_whitespace_lines(block)
    if cleaned is not None:
        try:
            return parse(cleaned)
        except (pa.ArrowException, UnicodeDecodeError) as exc:
            message = str(exc)
    raise _csv_problem(f, block, line, numeric, message)


def _has_quote(block: bytes | memoryview) -> bool:
    """Whether a block holds a quote (then a quoted field may hold a line break, and pyarrow must parse
    it serially). A memoryview is a prefix of the bytes it views (`_csv_blocks`)."""
    if isinstance(block, memoryview):
        whole: bytes = block.obj  # type: ignore[assignment]
        return whole.find(b'"', 0, len(block)) >= 0
    return b'"' in block


def _blank_whitespace_lines(block: bytes) -> bytes | None:
    """`block` with its records of only spaces and tabs emptied (their line breaks kept), or None when it
    has none. Quote-aware: a quoted field's lines are left alone."""
    parts: list[bytes] = []
    changed = False
    pos = 0
    while pos < len(block):
        end = _record_end(block, pos)
        end = len(block) if end is None else end
        raw = block[pos:end]
        if raw.strip(b"\r\n") and not raw.strip():
            raw = raw[len(raw.rstrip(b"\r\n")) :]
            changed = True
        parts.append(raw)
        pos = end
    return b"".join(parts) if changed else None


def _csv_whole(f: TableFile, numeric: tuple[str, ...], infer: tuple[str, ...]) -> pa.Table:
    """The whole file in one `read_csv` (its type inference sees every row of the `infer` columns)."""
    import pyarrow.csv as pacsv

    internal, index, wanted, convert = _csv_options(f, numeric, (), infer)
    offset, line = f._csv_start
    skip = 1 if f.header else 0
    read = pacsv.ReadOptions(column_names=internal, use_threads=True, skip_rows=skip)
    with f.path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    for newlines in (False, True):  # quoted line breaks are rare: parse in parallel blocks first
        try:
            table = pacsv.read_csv(
                _arrow_buffer(data),
                read_options=read,
                parse_options=pacsv.ParseOptions(newlines_in_values=newlines),
                convert_options=convert,
            )
            return table.rename_columns(wanted)
        except (pa.ArrowException, UnicodeDecodeError) as exc:
            message = str(exc)
            if newlines or not ("Expected" in message and "columns" in message):
                break
    del data
    # Blank lines of spaces, or a problem to name: block by block (whitespace lines are blanked there).
    read = pacsv.ReadOptions(column_names=internal, use_threads=True)
    tables = [_parse_block(f, block, first, numeric, read, convert) for block, first, _ in _csv_blocks(f)]
    if not tables:
        raise _err(f"{f.where} cannot be read as CSV: {_first_line(message)}")
    return pa.concat_tables(tables, promote_options="permissive").rename_columns(wanted)


def _records(block: bytes, line: int) -> Iterator[tuple[int, list[str] | None, str]]:
    """(line, fields, raw text) per non-empty record of a block, as pyarrow counts them (empty lines
    skipped); fields None when the record is not UTF-8."""
    if csv.field_size_limit() < MAX_RECORD_BYTES:
        csv.field_size_limit(MAX_RECORD_BYTES)  # a record is bounded by MAX_RECORD_BYTES already
    pos = 0
    while pos < len(block):
        end = _record_end(block, pos)
        end = len(block) if end is None else end
        raw = block[pos:end]
        nl = raw.count(b"\n")
        if raw.strip():
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield line, None, raw.decode("utf-8", "replace")
            else:
                rows = list(csv.reader(io.StringIO(text, newline="")))
                yield line, rows[0] if rows else [""], text.rstrip("\r\n")
        line += nl
        pos = end


def _csv_place(block: bytes | memoryview, line: int) -> Callable[[int], str]:
    """Row i of a parsed block -> "line N" (found by reading the block's records, on errors only)."""

    def place(i: int) -> str:
        for k, (at, _, _) in enumerate(_records(bytes(block), line)):
            if k == i:
                return f"line {at}"
        return f"row {i + 1} of the block at line {line}"

    return place


def _csv_problem(f: TableFile, block: bytes, line: int, numeric: Sequence[str], message: str) -> DataError:
    """The first record of a block that pyarrow could not read, named: its line and what is wrong."""
    width = len(f.names)
    numeric_at = {f.names.index(n): n for n in numeric}
    for at, fields, raw in _records(block, line):
        if fields is None:
            return _err(f"{f.where}: line {at} is not UTF-8 text")
        if len(fields) != width:
            return _err(f"{f.where}: line {at} has {len(fields)} fields, expected {width} ({clip(raw, 60)})")
        for i, name in numeric_at.items():
            value = fields[i]
            if value not in f.missing and not is_number(value):
                return _err(f"{f.where}: line {at}, {f.label(name)}: {clip(value)} is not a number")
    return _err(f"{f.where} cannot be read as CSV near line {line}: {_first_line(message)}")


# ---------------------------------------------------------------------------------------------
# Parquet


_PARQUET_ERRORS = (pa.ArrowException, OSError, ValueError, KeyError, IndexError)  # a corrupt file raises any


def _parquet_file(f: TableFile) -> Any:
    """The file opened, its schema and metadata read (a corrupt footer is a DataError here)."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f.path)
        names = pf.schema_arrow.names
        pf.metadata.num_rows  # noqa: B018 - read now, so that a corrupt footer fails here
    except _PARQUET_ERRORS as exc:
        raise _err(f"{f.where} is not a readable Parquet file ({_first_line(str(exc))})") from None
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise _err(f"{f.where}: its schema names column {twice[0]!r} more than once")
    return pf


def _parquet_batches(f: TableFile, numeric: tuple[str, ...], text: tuple[str, ...]) -> Iterator[Batch]:
    pf = _parquet_file(f)
    wanted = list(dict.fromkeys((*numeric, *text)))
    schema = pf.schema_arrow
    for n in numeric:
        t = schema.field(n).type
        ok = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t)
        if not ok:  # a null column (every value missing, as pandas writes an all-None column) is numbers
            what = "true/false" if pa.types.is_boolean(t) else str(t)
            raise _err(f"{f.where}: column {n!r} holds {what} values; it must hold numbers")
    for n in text:
        t = schema.field(n).type
        if (
            pa.types.is_nested(t)
            or pa.types.is_binary(t)
            or pa.types.is_large_binary(t)
            or pa.types.is_dictionary(t)
            and pa.types.is_nested(t.value_type)
        ):
            raise _err(
                f"{f.where}: column {n!r} holds {t} values; only numbers, text, true/false and dates are read as they are"
            )
    import pyarrow.parquet as pq

    # pre_buffer=False: pre-buffering keeps what it read for the file's lifetime (memory grows with rows);
    # a buffered stream reads a row group page by page rather than a whole column chunk at once, at the
    # same speed here. (No column chunk's metadata is read from Python: on a corrupt footer pyarrow 26
    # throws there a C++ exception that aborts the process; its readers return errors.)
    pf = pq.ParquetFile(f.path, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
    rows = 0
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted, use_threads=True):
            table = pa.Table.from_batches([batch])
            start = rows
            table = _numeric_float64(table, numeric)
            rows += table.num_rows
            yield Batch(table, start, _row_place(start), rows)
    except _PARQUET_ERRORS as exc:
        raise _err(f"{f.where}: cannot read it near row {rows + 1} ({_first_line(str(exc))})") from None


def _row_place(start: int) -> Callable[[int], str]:
    return lambda i: f"row {start + i + 1}"


def _numeric_float64(table: pa.Table, numeric: Sequence[str]) -> pa.Table:
    """The numeric columns as float64, NaN as null (a missing value in a binary format)."""
    for n in numeric:
        i = table.schema.get_field_index(n)
        col = table.column(i)
        if col.type != pa.float64():
            col = pc.cast(col, pa.float64(), safe=False)
        nan = pc.is_nan(col)
        if pc.any(nan).as_py():
            col = pc.if_else(nan, pa.scalar(None, pa.float64()), col)
        table = table.set_column(i, n, col)
    return table


# ---------------------------------------------------------------------------------------------
# JSON Lines


def _jsonl_first_lines(f: TableFile, limit: int) -> Iterator[tuple[int, Any]]:
    """(line, row object) of the first non-blank lines (at most `limit` bytes read; a byte-order mark
    skipped); a line that is not a JSON object is a DataError."""
    with f.path.open("rb") as fh:
        head = fh.read(limit)
    lines = head.removeprefix(codecs.BOM_UTF8).split(b"\n")
    if len(head) == limit:
        lines = lines[:-1]  # the last one may be cut
    for line, raw in enumerate(lines, start=1):
        if raw.strip():
            yield line, _json_keys(f, line, raw)


def _jsonl_names(f: TableFile) -> list[str]:
    """The first row's keys (a row may lack some: absent is missing); reads no further than that row."""
    limit = MAX_HEADER_BYTES
    while True:
        for _, row in _jsonl_first_lines(f, limit):
            return list(row)
        if limit >= f.path.stat().st_size:
            raise _err(f"{f.where}: no input rows (only blank lines)")
        if limit >= MAX_RECORD_BYTES:
            raise _err(f"{f.where}: line 1 is longer than {MAX_RECORD_BYTES >> 20} MB")
        limit *= 8  # a first line longer than what was read: read more


def all_names(f: TableFile) -> list[str]:
    """Every column a JSON Lines file or JSON document of objects names on any row, in order of first
    appearance (their first row may lack some); other formats: `names`. Reads the whole file."""
    if f.fmt == JSON and f.named:
        rows = f._json_rows[0]
    elif f.fmt == JSONL:
        rows = (_json_keys(f, line, raw) for block, first, _ in _jsonl_blocks(f) for line, raw in _lines(block, first))
    else:
        return list(f.names)
    names: dict[str, None] = {}
    for row in rows:
        for k in row:
            names.setdefault(k, None)
    return list(names)


def _lines(block: bytes, first: int) -> Iterator[tuple[int, bytes]]:
    for i, raw in enumerate(block.split(b"\n")):
        if raw.strip():
            yield first + i, raw


def _json_keys(f: TableFile, line: int, raw: bytes) -> dict[str, Any]:
    """One JSON Lines row: an object (a duplicated key refused), or a DataError naming its line."""
    try:
        row = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_int=_parse_int)
    except (ValueError, RecursionError, _Duplicate) as exc:
        raise _err(f"{f.where}: line {line} is not a JSON object ({_json_reason(exc)})") from None
    if not isinstance(row, dict):
        raise _err(f"{f.where}: line {line} is {_describe(row)}, not a JSON object keyed by column")
    return row


def _jsonl_blocks(f: TableFile) -> Iterator[tuple[bytes, int, int]]:
    with f.path.open("rb") as fh:
        pending = b""
        if fh.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            fh.seek(0)
        find_end = lambda buf: buf.rfind(b"\n") + 1  # noqa: E731
        for block, line, end in _blocks(f, fh, pending, 1, find_end, "line {line} is longer than {mb} MB"):
            yield bytes(block), line, end


def _json_type(value: Any) -> pa.DataType | None:
    """The column type a JSON value asks for (None: null, no say); a list or an object has none."""
    if value is None:
        return None
    if value is True or value is False:
        return pa.bool_()
    if isinstance(value, str):
        return pa.string()
    if isinstance(value, int):
        return pa.int64() if -(2**63) <= value < 2**63 else pa.float64()
    if isinstance(value, float):
        return pa.float64()
    raise ValueError(_describe(value))


def _jsonl_text_types(f: TableFile, text: Sequence[str]) -> dict[str, pa.DataType]:
    """The types of the columns read as they are (carried columns, a training target), from their first
    non-null values in the first block: one type for the whole file, whatever its blocks hold (a number
    column with a fraction further down is float from the start when the first block shows one)."""
    types: dict[str, pa.DataType] = {}
    pending = set(text)
    for line, row in _jsonl_first_lines(f, BLOCK_BYTES) if pending else ():
        for n in list(pending):
            try:
                t = _json_type(row.get(n))
            except ValueError as exc:
                raise _err(
                    f"{f.where}: line {line}, column {n!r} holds {exc}; only numbers, text and true/false are read as they are"
                ) from None
            if t is not None and (n not in types or types[n] == pa.int64() and t == pa.float64()):
                types[n] = t
    for n in text:
        types.setdefault(n, pa.string())
    return types


def _jsonl_batches(f: TableFile, numeric: tuple[str, ...], text: tuple[str, ...]) -> Iterator[Batch]:
    import pyarrow.json as pajson

    others = [n for n in text if n not in numeric]
    kinds = _jsonl_text_types(f, others)
    schema = pa.schema([(n, pa.float64()) for n in numeric] + [(n, kinds[n]) for n in others])
    # Only the columns asked for are read: another column may hold anything on any row.
    parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    rows = 0
    for block, line, end in _jsonl_blocks(f):
        body = _nonblank(block) if b"\n\n" in block or block[:1].isspace() else block
        try:
            table = pajson.read_json(
                pa.BufferReader(_arrow_buffer(body)),
                read_options=pajson.ReadOptions(block_size=max(len(body), 1 << 16)),
                parse_options=parse,
            )
        except (pa.ArrowException, UnicodeDecodeError) as exc:
            problem = _jsonl_problem(f, block, line, numeric, str(exc), kinds)
            if problem is not None:
                raise problem from None
            # Nothing wrong in the columns asked for: a column nobody reads holds what pyarrow's parser
            # refuses (a number beyond a double, say). This block is read in Python instead.
            table = _jsonl_python(f, block, line, numeric, others, schema)
        for n in (*numeric, *others):
            if n not in table.column_names:  # absent from every row of the block: all missing
                table = table.append_column(n, pa.nulls(table.num_rows, schema.field(n).type))
        table = table.select([*numeric, *others])
        yield Batch(table, rows, _jsonl_place(block, line), end)
        rows += table.num_rows


def _nonblank(block: bytes) -> bytes:
    return b"\n".join(x for x in block.split(b"\n") if x.strip()) + b"\n"


def _jsonl_place(block: bytes, line: int) -> Callable[[int], str]:
    def place(i: int) -> str:
        k = -1
        for offset, raw in enumerate(block.split(b"\n")):
            if raw.strip():
                k += 1
                if k == i:
                    return f"line {line + offset}"
        return f"row {i + 1} of the block at line {line}"

    return place


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(f"the key {k!r} appears twice")
        out[k] = v
    return out


def _parse_int(text: str) -> int | float:
    """A JSON integer; one too long for Python's int parser (over 4300 digits) is the float it overflows to."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _json_reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    return str(exc).split("\n")[0][:100]


def _json_number(value: Any) -> bool:
    return type(value) is float or type(value) is int


def _describe(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {clip(value)}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return repr(value)[:40]


def _jsonl_python(
    f: TableFile, block: bytes, line: int, numeric: Sequence[str], others: Sequence[str], schema: pa.Schema
) -> pa.Table:
    """A block of JSON Lines read with Python's json (the columns asked for, typed by `schema`), for a
    block pyarrow's parser refuses for a column nobody reads."""
    rows = [_json_keys(f, at, raw) for at, raw in _lines(block.removeprefix(codecs.BOM_UTF8), line)]
    cols: dict[str, Any] = {}
    for n in numeric:
        cols[n] = pa.array([None if (v := row.get(n)) is None else float(v) for row in rows], pa.float64())
    for n in others:
        cols[n] = pa.array([row.get(n) for row in rows], schema.field(n).type)
    return pa.table(cols) if cols else pa.table({"_": pa.nulls(len(rows))}).drop(["_"])


def _jsonl_problem(
    f: TableFile,
    block: bytes,
    line: int,
    numeric: Sequence[str],
    message: str,
    kinds: dict[str, pa.DataType] | None = None,
) -> DataError | None:
    for offset, raw in enumerate(block.split(b"\n")):
        if not raw.strip():
            continue
        at = line + offset
        try:
            row = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_no_duplicates, parse_int=_parse_int)
        except (ValueError, RecursionError, _Duplicate) as exc:
            return _err(f"{f.where}: line {at} is not a JSON object ({_json_reason(exc)})")
        if not isinstance(row, dict):
            return _err(f"{f.where}: line {at} is {_describe(row)}, not a JSON object keyed by column")
        for n in numeric:
            v = row.get(n)
            if v is not None and not _json_number(v):
                return _err(f"{f.where}: line {at}, column {n!r}: {_describe(v)} is not a number")
            if v is not None and not np.isfinite(float(v)):
                return _err(
                    f"{f.where}: line {at}, column {n!r} is not finite ({v}); NaN, Inf and overflowing numbers are refused"
                )
        for n, kind in (kinds or {}).items():
            v = row.get(n)
            try:
                t = _json_type(v)
            except ValueError:
                t = None
                return _err(
                    f"{f.where}: line {at}, column {n!r} holds {_describe(v)}; only numbers, text and true/false are read as they are"
                )
            if t is not None and t != kind and not (kind == pa.float64() and t == pa.int64()):
                return _err(
                    f"{f.where}: line {at}, column {n!r}: {_describe(v)} is not {kind} as on the first rows; a column"
                    " read as it is must hold one type (for an id: always text, or always whole numbers)"
                )
    if "Number too big" in message:
        return None  # in a column nobody reads (the columns asked for were checked above)
    return _err(f"{f.where} cannot be read as JSON Lines near line {line}: {_first_line(message)}")


# ---------------------------------------------------------------------------------------------
# A JSON document, read whole


JSON_FORMS = '[[x1, x2, ...], ...], [{"x1": ..., ...}, ...], a single row [x1, x2, ...] or {"x": <rows>}'


def read_json_document(raw: bytes, where: str, width: int | None = None) -> tuple[list[Any], bool]:
    """(rows, keyed): the rows of a JSON document (each a list, or an object when `keyed`). Forms: a list
    of rows, one row (a list of numbers: `width` when given), or {"x": <rows>}. A duplicated key in any
    object is refused."""
    if len(raw) > MAX_JSON_BYTES:
        raise _err(
            f"{where}: more than {MAX_JSON_BYTES >> 20} MB of JSON, the most read whole; give JSON Lines (.jsonl),"
            " one row object per line, which is streamed"
        )
    if not raw.strip():
        raise _err(f"{where}: no input rows (empty JSON)")
    try:
        doc = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_no_duplicates, parse_int=_parse_int)
    except (ValueError, RecursionError, _Duplicate) as exc:
        where_at = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise _err(f"{where}: invalid JSON{where_at}: {_json_reason(exc)}") from None
    if isinstance(doc, dict):
        if "x" not in doc:
            raise _err(f'{where}: a JSON object needs the key "x": {JSON_FORMS}')
        doc = doc["x"]
    if not isinstance(doc, list):
        raise _err(f"{where}: expected JSON {JSON_FORMS}")
    if doc and all(_json_number(v) for v in doc):
        doc = [doc]  # one row
    if len(doc) > MAX_JSON_ROWS:
        raise _err(
            f"{where}: more than {MAX_JSON_ROWS} rows, the most read whole; give JSON Lines (.jsonl), which is streamed"
        )
    keyed = bool(doc) and isinstance(doc[0], dict)
    for i, row in enumerate(doc):
        if keyed and not isinstance(row, dict):
            raise _err(f"{where}: row {i + 1} is {_describe(row)}, but row 1 is an object: give every row alike")
        if not keyed and not isinstance(row, list):
            raise _err(f"{where}: row {i + 1} is {_describe(row)}, not a list of numbers")
    return doc, keyed


def _open_json(f: TableFile) -> None:
    try:
        raw = f.path.read_bytes() if f.path.stat().st_size <= MAX_JSON_BYTES else b" " * (MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise _err(f"{f.where} is not readable ({exc.strerror or exc.__class__.__name__})") from None
    rows, keyed = read_json_document(raw, f.where)
    if not rows:
        raise _err(f"{f.where}: no input rows")
    f._json_rows = (rows, keyed)
    f.total = len(rows)
    if keyed:
        f.names = list(rows[0]) if rows else []
    else:
        f.names = [f"column {i + 1}" for i in range(len(rows[0]) if rows else 0)]


def json_rows_table(
    rows: list[Any], keyed: bool, names: Sequence[str], numeric: Sequence[str], text: Sequence[str], where: str
) -> pa.Table:
    """The rows of a JSON document as a Table of the `numeric` (float64; null or absent: missing) and
    `text` columns (their values as given)."""
    cols: dict[str, Any] = {}
    position = {n: i for i, n in enumerate(names)}
    for n in numeric:
        values = np.empty(len(rows), dtype=np.float64)
        valid = np.ones(len(rows), dtype=bool)
        for r, row in enumerate(rows):
            if keyed:
                v = row.get(n)
            else:
                if len(row) != len(names):
                    raise _err(f"{where}: row {r + 1} has {len(row)} values, expected {len(names)}")
                v = row[position[n]]
            if v is None:
                valid[r] = False
                values[r] = 0.0
            elif _json_number(v):
                try:
                    values[r] = float(v)
                except OverflowError:
                    values[r] = np.inf
            else:
                raise _err(
                    f"{where}: row {r + 1}, {'column ' + repr(n) if keyed else n}: {_describe(v)} is not a number"
                )
        cols[n] = pa.array(values, mask=~valid)
    for n in text:
        if n in cols:
            continue
        values_t = [row.get(n) if keyed else row[position[n]] for row in rows]
        kinds = {type(v) for v in values_t if v is not None}
        if kinds & {list, dict}:
            raise _err(
                f"{where}: column {n!r} holds lists or objects; only numbers, text and true/false are read as they are"
            )
        try:
            if kinds == {int, float}:  # 18 and 14.5 in one column: numbers (as float64), not text
                cols[n] = pa.array([None if v is None else float(v) for v in values_t], pa.float64())
                continue
            if len(kinds) > 1:
                raise pa.ArrowInvalid("mixed")
            cols[n] = pa.array(values_t)
        except (pa.ArrowException, OverflowError):  # mixed: each value as its JSON text (a string as itself)
            cols[n] = pa.array([v if isinstance(v, str) or v is None else json.dumps(v) for v in values_t], pa.string())
    return pa.table(cols) if cols else pa.table({"_": pa.nulls(len(rows))}).drop(["_"])


def _json_batches(f: TableFile, numeric: tuple[str, ...], text: tuple[str, ...]) -> Iterator[Batch]:
    rows, keyed = f._json_rows
    table = json_rows_table(rows, keyed, f.names, numeric, text, f.where)
    yield Batch(table, 0, lambda i: f"row {i + 1}", table.num_rows)


# ---------------------------------------------------------------------------------------------
# Small helpers


def _first_line(message: str) -> str:
    lines = message.strip().splitlines()
    return (lines[0] if lines else message)[:200]


def text_array(values: Sequence[str]) -> pa.Array:
    """A pyarrow string array built from its buffers (`pa.array` on Python objects imports pandas, half a
    second of a command's start)."""
    data = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int32)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(), len(data), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(data))]
    )


def first_null(col: pa.ChunkedArray | pa.Array) -> int | None:
    """The index of the first null, or None."""
    if col.null_count == 0:
        return None
    mask = pc.is_null(col)
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return int(np.argmax(np.asarray(mask.to_numpy(zero_copy_only=False))))


def float_matrix(table: pa.Table, names: Sequence[str], dtype: Any = np.float64) -> np.ndarray:
    """(rows, len(names)) in `dtype`, C order, from null-free float64 columns: each column converted into
    a row of a (features, rows) array (contiguous writes), then transposed once. Beyond float32's range
    is inf in float32 (the caller refuses it)."""
    out = np.empty((len(names), table.num_rows), dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for j, n in enumerate(names):
            start = 0
            for chunk in table.column(n).chunks:
                k = len(chunk)
                if k:
                    buf = np.frombuffer(chunk.buffers()[1], dtype=np.float64, count=chunk.offset + k)[chunk.offset :]
                    out[j, start : start + k] = buf
                start += k
    return np.ascontiguousarray(out.T)


__all__ = [
    "CSV",
    "DEFAULT_MISSING",
    "FORMATS",
    "HEADER",
    "JSON",
    "JSONL",
    "NPY",
    "PARQUET",
    "Batch",
    "DataError",
    "TableFile",
    "all_names",
    "file_format",
    "first_null",
    "float_matrix",
    "open_table",
    "read_json_document",
    "set_header",
    "text_array",
    "tokens_text",
]
