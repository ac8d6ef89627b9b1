"""Predictions out: data files that pandas and pyarrow read back, the JSON document, or a table for a terminal.

    fmt = output_format(Path("scores.parquet"))       # by the name's extension, or --format
    w = make_writer(fmt, stream, OutputHead(...), carried_schema)
    for batch, outputs in ...: w.write(batch, outputs)
    w.close()

Formats (`--format`, else the extension of `--output`, else `table` on a terminal):
- `csv` (and `csv.gz`): a header, one column per carried input column, then `label` (classifiers), then
  `probability` (binary: of the last class), one `p_<class>` per class (multi-class) or `value`
  (regression). Numbers are the exact values (the model's float32 outputs written as the shortest
  decimal that reads back to the same double, so float32(read) is the output bit for bit); text is
  quoted only where it must be (RFC 4180).
- `parquet`: the same columns, typed (the label with its type from the data, outputs float32), the
  model's name, version and ONNX sha256 in the schema's metadata (`xorship.*`); snappy, as pandas writes.
- `jsonl`: one object per row with the same keys; `json`: the document `--json` prints (the model, its
  head, then `predictions`: per row the carried columns, `x` and the outputs), streamed.
- `table`: fixed-width lines for a terminal (features past the sixth elided; a missing input value shown
  as NA): not a data file.

The JSON document and the table echo each row's inputs as the model took them: numbers as float32 (null
in JSON where missing), text columns as their text ("" where missing).

Rows are formatted a batch at a time with pyarrow's vectorized string kernels and written as one
buffer, so the cost per row is a few nanoseconds of C, not a Python format call. Torch-free.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UsageError
from ..spec.archs import THRESHOLD, Arch, Label, label_indices
from ..spec.encoding import Raw
from ..spec.formats import CSV, CSV_GZ, JSON, JSONL, OUTPUT_FORMATS, PARQUET, TABLE
from ..spec.tables import text_array

FORMATS = OUTPUT_FORMATS
_EXTENSIONS = {".csv": CSV, ".parquet": PARQUET, ".pq": PARQUET, ".jsonl": JSONL, ".ndjson": JSONL, ".json": JSON}
GZIP_LEVEL = 6  # zlib's default: most of level 9's size at a fraction of its time
TABLE_FEATURES = 6  # the table shows at most this many feature columns
TABLE_TOP = 3  # multiclass: the table shows this many most probable classes
_MAX_TABLE_NAME = 20


def output_format(path: Path | str | None, fmt: str | None = None, as_json: bool = False, stream: bool = False) -> str:
    """The format to write: `fmt` (--format), else `json` with --json, else by `path`'s extension
    (`.csv`, `.csv.gz`, `.parquet`, `.jsonl`, `.json`), else `table` for stdout and for a `stream` (a
    FIFO, a device) whose name has none of those extensions. A clash (--json with another --format) or
    a file whose extension names no format is a UsageError (exit 2)."""
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose {', '.join(FORMATS)}")
    if as_json and fmt not in (None, JSON):
        raise UsageError(f"--json is --format json; it does not go with --format {fmt}")
    if fmt is not None:
        return fmt
    if as_json:
        return JSON
    if path is None or str(path) == "-":
        return TABLE
    name = Path(path).name.lower()
    if name.endswith(".csv.gz"):
        return CSV_GZ
    suffix = Path(name).suffix
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if stream:
        return TABLE
    raise UsageError(
        f"--output {path}: its extension names no format; use .csv, .csv.gz, .parquet, .jsonl or .json, or give"
        " --format (table is for a terminal)"
    )


@dataclass(frozen=True)
class OutputHead:
    """What an output says about the model once (the JSON document's head, Parquet's metadata)."""

    arch: Arch
    model: str  # the served file's path
    name: str  # the model's name
    version: int | None
    sha256: str | None
    sha256_checked: bool
    verified: bool
    providers: tuple[str, ...]
    label: str  # how the table's header names the model


def output_columns(arch: Arch) -> list[str]:
    """The prediction columns of a data file: label (classifiers), then probability / p_<class> / value."""
    if arch.task == "binary":
        return ["label", "probability"]
    if arch.task == "multiclass":
        return ["label", *(f"p_{_class_text(c)}" for c in arch.classes)]
    return ["value"]


def check_carried(carry: Sequence[str], arch: Arch, fmt: str) -> None:
    """A carried column may not take the name of an output column (exit 2, naming both)."""
    taken = set(output_columns(arch))
    if fmt == JSON:
        taken = {"x", "label", "probability", "probabilities", "value"}
    for c in carry:
        if c in taken:
            raise UsageError(
                f"--carry: the input column {c!r} has the name of the output column {c!r}; rename it in the input,"
                " or carry other columns"
            )


def _class_text(c: Label) -> str:
    if isinstance(c, bool):
        return "true" if c else "false"
    return str(c)


# ---------------------------------------------------------------------------------------------
# Text kernels: pyarrow arrays -> pyarrow string arrays, vectorized


PLAIN_BELOW = 1e10  # pyarrow writes an integral float below this as plain digits ("12"), above it with an exponent


def _float_array(v: np.ndarray) -> pa.Array:
    """A pyarrow array viewing a float32 or float64 numpy array (no copy; `pa.array` would import pandas)."""
    v = np.ascontiguousarray(v)
    return pa.Array.from_buffers(pa.from_numpy_dtype(v.dtype), len(v), [None, pa.py_buffer(v)])


def _numbers(values: Any, finite: bool = False) -> pa.Array:
    """Floats as text, each the shortest decimal that reads back to the same value of its own type
    (float32 outputs: float32's shortest), with `.0` on an integral one (so readers see a float); NaN
    and nulls become null (skipped when the caller knows every value is `finite`)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        v = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
    else:
        v = np.asarray(values)
        arr = _float_array(v) if v.dtype in (np.float32, np.float64) else pa.array(v)
    text = pc.cast(arr, pa.string())
    with np.errstate(invalid="ignore"):
        # "12" -> "12.0"; from PLAIN_BELOW up pyarrow writes "1e+10", whose exponent says float already
        plain = (v == np.trunc(v)) & (np.abs(v) < PLAIN_BELOW)
    if plain.any():
        text = pc.if_else(_bool_array(plain), pc.binary_join_element_wise(text, ".0", ""), text)
    if not finite and not np.isfinite(v).all():
        text = pc.if_else(_bool_array(~np.isfinite(v)), pa.scalar(None, pa.string()), text)
    return text


def _bool_array(mask: np.ndarray) -> pa.Array:
    bits = np.packbits(mask, bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, pa.py_buffer(bits)])


def _rows_of_numbers(x: np.ndarray) -> pa.Array:
    """Per row of a (rows, k) float32 array, its values as a JSON list, "[0.1,2.0]" (the JSON document's
    "x"): each float32's shortest decimal, an integral one with ".0". orjson writes the whole batch in one
    call (about 20 ns a number, a third of pyarrow's cast to string); the rows are cut out of its output
    at their "[" (numbers hold none), the commas between them dropped."""
    import orjson

    n = x.shape[0]
    raw = orjson.dumps(np.ascontiguousarray(x, dtype=np.float32), option=orjson.OPT_SERIALIZE_NUMPY)
    body = np.frombuffer(raw, dtype=np.uint8)[1:-1]  # [a,b],[c,d]
    starts = np.flatnonzero(body == ord("["))
    keep = np.ones(len(body), dtype=bool)
    keep[starts[1:] - 1] = False  # the comma before each row but the first
    data = body[keep]
    offsets = np.append(starts - np.arange(n), len(data)).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _rows_of_values(x: Raw, features: Sequence[str]) -> pa.Array:
    """Per row of raw rows, its values as a JSON list in feature order (the JSON document's "x"): numbers
    as float32's shortest decimal (null where missing, NaN), text as JSON strings. A float32 matrix goes
    through `_rows_of_numbers`; a mapping column -> values is joined column by column."""
    if isinstance(x, np.ndarray):
        return _rows_of_numbers(x)
    parts: list[Any] = ["["]
    for j, name in enumerate(features):
        v = np.asarray(x[name]).reshape(-1)
        if v.dtype == object:
            text = _json_strings(text_array([str(s) for s in v.tolist()]))
        else:
            text = _fill(_numbers(v.astype(np.float32)), "null")
        parts += [("" if j == 0 else ","), text]
    parts.append("]")
    return pc.binary_join_element_wise(*parts, "")


def _csv_strings(arr: Any) -> pa.Array:
    """Text quoted where RFC 4180 needs it (a comma, a quote, a line break), quotes doubled."""
    need = pc.match_substring_regex(arr, '[",\r\n]')
    if not pc.any(need).as_py():
        return arr
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(arr, '"', '""'), '"', "")
    return pc.if_else(need, quoted, arr)


def _json_strings(arr: Any) -> pa.Array:
    """Text as JSON string literals."""
    if len(arr) == 0:
        return pa.array([], pa.string())
    control = pc.match_substring_regex(arr, "[\\x00-\\x1f\\x7f]")
    if pc.any(control).as_py():  # rare: control characters need \u escapes; Python writes those rows
        return pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in arr.to_pylist()])
    escaped = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise('"', escaped, '"', "")


def _column_text(col: Any, json_out: bool) -> pa.Array:
    """Any carried column as CSV or JSON text (null: an empty CSV field, JSON null)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        col = pc.cast(col, pa.string()) if pa.types.is_large_string(t) else col
        return _json_strings(col) if json_out else _csv_strings(col)
    if pa.types.is_floating(t):
        return _numbers(col)
    if pa.types.is_integer(t):
        return pc.cast(col, pa.string())
    if pa.types.is_boolean(t):
        return pc.if_else(col, "true", "false")
    if pa.types.is_null(t):
        return pa.nulls(len(col), pa.string())
    try:
        text = pc.cast(col, pa.string())  # dates, times, timestamps, decimals: their ISO / decimal text
    except pa.ArrowException:
        text = pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())
    return _json_strings(text) if json_out else _csv_strings(text)


def _fill(text: pa.Array, null: str) -> pa.Array:
    return pc.fill_null(text, null) if text.null_count else text


def _buffer(rows: pa.Array) -> memoryview:
    """The bytes of a null-free string array's values, back to back (zero-copy)."""
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    if len(rows) == 0:
        return memoryview(b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=rows.offset + len(rows) + 1)
    data = rows.buffers()[2]
    return memoryview(data)[int(offsets[rows.offset]) : int(offsets[rows.offset + len(rows)])]


# ---------------------------------------------------------------------------------------------
# Writers


class Writer:
    """Writes predictions a batch at a time: `write(x, carried, outputs, indices)`, then `close()`."""

    def __init__(self, out: IO[bytes], head: OutputHead, carry: Sequence[str]) -> None:
        self.out = out
        self.head = head
        self.arch = head.arch
        self.carry = list(carry)
        self.rows = 0

    def write(self, x: Raw, carried: pa.Table | None, outputs: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Whatever ends the output (the JSON document's closing bracket, Parquet's footer)."""

    def abort(self) -> None:
        """The output is abandoned (a bad row): write nothing more, now or when collected."""

    def _outputs(self, outputs: np.ndarray) -> tuple[np.ndarray | None, list[np.ndarray]]:
        """(label index per row or None, the output columns in order), from (rows, n_outputs) values."""
        arch = self.arch
        index = label_indices(arch.task, outputs) if arch.is_classifier else None
        return index, [outputs[:, k] for k in range(outputs.shape[1])]


class _TextRows(Writer):
    """CSV and JSON Lines: each row one string, built column by column."""

    json_out = False

    def __init__(self, out: IO[bytes], head: OutputHead, carry: Sequence[str]) -> None:
        super().__init__(out, head, carry)
        classes = self.arch.classes
        if self.json_out:
            self.labels = pa.array([json.dumps(c) for c in classes], pa.string())
        else:
            self.labels = _csv_strings(pa.array([_class_text(c) for c in classes], pa.string()))
        self.names = [*self.carry, *output_columns(self.arch)]

    def _pieces(self, carried: pa.Table | None, outputs: np.ndarray) -> list[pa.Array]:
        index, values = self._outputs(outputs)
        null = "null" if self.json_out else ""
        cols = [_fill(_column_text(carried.column(c), self.json_out), null) for c in self.carry] if carried else []
        if index is not None:
            cols.append(pc.take(self.labels, pa.array(index)))
        cols += [_numbers(v.astype(np.float32), finite=True) for v in values]
        return cols


class CsvWriter(_TextRows):
    def __init__(self, out: IO[bytes], head: OutputHead, carry: Sequence[str]) -> None:
        super().__init__(out, head, carry)
        header = _csv_strings(pa.array(self.names, pa.string())).to_pylist()
        self.out.write((",".join(header) + "\n").encode())

    def write(self, x: Raw, carried: pa.Table | None, outputs: np.ndarray) -> None:
        cols = self._pieces(carried, outputs)
        rows = pc.binary_join_element_wise(*cols, ",")
        rows = pc.binary_join_element_wise(rows, "\n", "")
        self.out.write(_buffer(rows))
        self.rows += len(rows)


class JsonlWriter(_TextRows):
    json_out = True

    def write(self, x: Raw, carried: pa.Table | None, outputs: np.ndarray) -> None:
        cols = self._pieces(carried, outputs)
        parts: list[Any] = []
        for i, (name, col) in enumerate(zip(self.names, cols)):
            parts += [("{" if i == 0 else ", ") + json.dumps(name) + ": ", col]
        rows = pc.binary_join_element_wise(*parts, "}\n", "")
        self.out.write(_buffer(rows))
        self.rows += len(rows)


class JsonWriter(Writer):
    """The JSON document: the head, then "predictions": [{carried..., "x": [...], outputs...}, ...]."""

    def __init__(self, out: IO[bytes], head: OutputHead, carry: Sequence[str]) -> None:
        super().__init__(out, head, carry)
        arch = self.arch
        doc: dict[str, Any] = {
            "model": head.model,
            "version": head.version,
            "sha256_checked": head.sha256_checked,
            "verified": head.verified,
            "providers": list(head.providers),
            "task": arch.task,
            "features": list(arch.features),
            "classes": list(arch.classes),
        }
        if arch.task == "binary":
            doc["threshold"] = THRESHOLD
        self.out.write((json.dumps(doc)[:-1] + ', "predictions": [').encode())
        self.labels = pa.array([json.dumps(c) for c in arch.classes], pa.string())
        self.keys = [json.dumps(str(c)) for c in arch.classes]

    def write(self, x: Raw, carried: pa.Table | None, outputs: np.ndarray) -> None:
        arch = self.arch
        index, values = self._outputs(outputs)
        parts: list[Any] = []
        for i, c in enumerate(self.carry if carried is not None else ()):
            text = _fill(_column_text(carried.column(c), True), "null")  # type: ignore[union-attr]
            parts += [("{" if i == 0 else ", ") + json.dumps(c) + ": ", text]
        x_text = _rows_of_values(x, arch.features)  # the model's inputs: float32's shortest decimal, null, text
        parts += [('{"x": ' if not parts else ', "x": '), x_text]
        if arch.task == "binary":
            assert index is not None
            parts += [
                ', "probability": ',
                _numbers(values[0], True),
                ', "label": ',
                pc.take(self.labels, pa.array(index)),
            ]
        elif arch.task == "multiclass":
            assert index is not None
            parts += [', "label": ', pc.take(self.labels, pa.array(index)), ', "probabilities": {']
            for k, key in enumerate(self.keys):
                parts += [("" if k == 0 else ", ") + key + ": ", _numbers(values[k], True)]
            parts.append("}")
        else:
            parts += [', "value": ', _numbers(values[0], True)]
        rows = pc.binary_join_element_wise(",\n  ", *parts, "}", "")
        data = _buffer(rows)
        if self.rows == 0:
            data = data[1:]  # the first row has no comma before it
        self.out.write(data)
        self.rows += len(rows)

    def close(self) -> None:
        self.out.write(b"\n]}\n")


class ParquetWriter(Writer):
    def __init__(self, out: IO[bytes], head: OutputHead, carry: Sequence[str]) -> None:
        super().__init__(out, head, carry)
        self._writer: Any = None
        self.classes = pa.array(list(self.arch.classes)) if self.arch.is_classifier else None

    def write(self, x: Raw, carried: pa.Table | None, outputs: np.ndarray) -> None:
        import pyarrow.parquet as pq

        index, values = self._outputs(outputs)
        cols: dict[str, Any] = {}
        for c in self.carry:
            cols[c] = carried.column(c) if carried is not None else pa.nulls(len(outputs))
        if index is not None and self.classes is not None:
            cols["label"] = pc.take(self.classes, pa.array(index))
        for name, v in zip(output_columns(self.arch)[1 if index is not None else 0 :], values):
            cols[name] = pa.array(v.astype(np.float32))
        table = pa.table(cols)
        if self._writer is None:
            h = self.head
            meta = {
                "xorship.model": h.name,
                "xorship.version": "" if h.version is None else str(h.version),
                "xorship.sha256": h.sha256 or "",
                "xorship.verified": "true" if h.verified else "false",
                "xorship.task": self.arch.task,
            }
            self.schema = table.schema.with_metadata(meta)
            self._writer = pq.ParquetWriter(self.out, self.schema, compression="snappy")
        elif table.schema.remove_metadata() != self.schema.remove_metadata():
            try:
                table = table.cast(self.schema.remove_metadata())
            except (pa.ArrowException, ValueError):
                changed = next(
                    (f.name for f, g in zip(table.schema, self.schema) if f.type != g.type), "a carried column"
                )
                raise UsageError(
                    f"--carry: column {changed!r} changes type at input row {self.rows + 1}; carry it from a file that"
                    " types it one way (Parquet), or write CSV or JSON Lines"
                ) from None
        self._writer.write_table(table.replace_schema_metadata(self.schema.metadata))
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.is_open = False  # no footer written into the abandoned temporary by its __del__


class GzipCsvWriter(CsvWriter):
    """CSV through gzip (level GZIP_LEVEL), as pandas reads `.csv.gz`."""

    def __init__(self, out: IO[bytes], head: OutputHead, carry: Sequence[str]) -> None:
        self._raw = out
        self._gz = gzip.GzipFile(
            filename="", fileobj=out, mode="wb", compresslevel=GZIP_LEVEL, mtime=0
        )  # no temporary name
        super().__init__(self._gz, head, carry)  # type: ignore[arg-type]

    def close(self) -> None:
        self._gz.close()


def _printable(value: Any) -> str:
    """A carried value for a terminal: control characters (line breaks, escape sequences) shown escaped."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class TableWriter(Writer):
    """Fixed-width lines for a terminal: carried columns, features (at most TABLE_FEATURES), then the
    probability and label (binary), the label and TABLE_TOP most probable classes (multi-class), or the
    value. Not a data file."""

    def __init__(self, out: IO[bytes], head: OutputHead, carry: Sequence[str], feature_names: Sequence[str]) -> None:
        super().__init__(out, head, carry)
        names = list(feature_names)
        self.hidden = 0
        if len(names) > TABLE_FEATURES:
            self.hidden = len(names) - (TABLE_FEATURES - 1)
            names = names[: TABLE_FEATURES - 1]
        self.names = names  # the features shown
        self.widths = [max(12, min(len(n), _MAX_TABLE_NAME)) for n in names]
        self.carry_widths = [max(8, min(len(c), _MAX_TABLE_NAME)) for c in self.carry]
        self.n = len(names)
        arch = self.arch
        self.shown = [_cut(_class_text(c), _MAX_TABLE_NAME) for c in arch.classes]
        self.lw = max([5, *map(len, self.shown)])
        more = f"...+{self.hidden}" if self.hidden else ""
        head_line = " ".join(f"{_cut(c, w):>{w}}" for c, w in zip(self.carry, self.carry_widths))
        head_line += (" " if head_line else "") + " ".join(f"{_cut(n, w):>{w}}" for n, w in zip(names, self.widths))
        head_line += f" {more}" if more else ""
        self.top = min(TABLE_TOP, len(arch.classes))
        if arch.task == "binary":
            head_line += f" {'probability':>12} {'label':>{self.lw}}"
        elif arch.task == "multiclass":
            probs = "probabilities" if self.top == len(arch.classes) else f"top {self.top} probabilities"
            head_line += f" {'label':>{self.lw}}  " + probs
        else:
            head_line += f" {'value':>14}"
        self.pad = " " + "." * 3 + " " * (len(more) - 3) if more else ""
        self.out.write(f"{head_line}   ({head.label}, {head.providers[0] if head.providers else '?'})\n".encode())

    def write(self, x: Raw, carried: pa.Table | None, outputs: np.ndarray) -> None:
        arch = self.arch
        rows = len(outputs)
        carried_text = [
            [_cut(_printable(v), w) for v in carried.column(c).to_pylist()] for c, w in zip(self.carry, self.carry_widths)
        ] if carried is not None else []  # fmt: skip
        if isinstance(x, np.ndarray):
            xs = x[:, : self.n].tolist()
        else:
            xs = [list(r) for r in zip(*(np.asarray(x[n]).reshape(-1).tolist() for n in self.names))]
        feats = []
        for r, row in enumerate(xs):
            left = " ".join(f"{col[r]:>{w}}" for col, w in zip(carried_text, self.carry_widths))
            vals = " ".join(_cell(v, w) for v, w in zip(row, self.widths))
            feats.append((left + " " if left else "") + vals + self.pad)
        if arch.task == "binary":
            index = label_indices(arch.task, outputs).tolist()
            lines = [
                f"{f} {p:>12.8f} {self.shown[i]:>{self.lw}}\n" for f, p, i in zip(feats, outputs[:, 0].tolist(), index)
            ]
        elif arch.task == "multiclass":
            index = label_indices(arch.task, outputs).tolist()
            lines = []
            for f, ps, i in zip(feats, outputs.tolist(), index):
                order = sorted(range(len(ps)), key=lambda k: -ps[k])[: self.top]  # stable: ties in class order
                best = "  ".join(f"{self.shown[k]}={ps[k]:.4f}" for k in order)
                lines.append(f"{f} {self.shown[i]:>{self.lw}}  {best}\n")
        else:
            lines = [f"{f} {v:>14.8g}\n" for f, v in zip(feats, outputs[:, 0].tolist())]
        self.out.write("".join(lines).encode())
        self.rows += rows


def _cell(value: float | str, width: int) -> str:
    """One input value in the table: a number to 6 significant digits, text as written (escaped, cut to
    the column), a missing one (NaN, "") as NA."""
    if isinstance(value, str):
        return f"{_cut(_printable(value), width) if value else 'NA':>{width}}"
    if value != value:  # NaN
        return f"{'NA':>{width}}"
    return f"{value:>{width}.6g}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def make_writer(
    fmt: str, out: IO[bytes], head: OutputHead, carry: Sequence[str], feature_names: Sequence[str] = ()
) -> Writer:
    """The writer of `fmt` on the binary stream `out`."""
    if fmt == CSV:
        return CsvWriter(out, head, carry)
    if fmt == CSV_GZ:
        return GzipCsvWriter(out, head, carry)
    if fmt == JSONL:
        return JsonlWriter(out, head, carry)
    if fmt == JSON:
        return JsonWriter(out, head, carry)
    if fmt == PARQUET:
        return ParquetWriter(out, head, carry)
    return TableWriter(out, head, carry, feature_names)
