"""The encoding inside the graph: raw columns in, the network's inputs out (`spec.encoding`'s rules as
ONNX operators), and the exported network attached behind it, so that one self-contained file takes
raw rows.

    proto = attach(network_proto, encoding)   # the exporter's model (input "x": encoded features)

Operators: plain ONNX (IsNaN, Where, Equal, Cast, Concat, Split) for numbers and numeric codes;
`ai.onnx.ml` LabelEncoder for text categories (string -> index, -1 for anything else); and, for dates,
opset 20's RegexFullMatch and StringSplit then integer arithmetic (days since 1970 -> day of week).
A model with a date column is exported at opset 20 (`opset_for`); every other model at the pinned
OPSET. onnxruntime runs the string operators on its CPU provider only. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..spec.encoding import (
    CATEGORY,
    ENCODED,
    FLOAT,
    NUMBER,
    SLASH_PATTERN,
    SPACE_PATTERN,
    TIMESTAMP,
    ColumnCode,
    Encoding,
)
from ..spec.encoding import DATE_PATTERN as _PATTERN
from .contract import BATCH_DIM, OPSET

if TYPE_CHECKING:  # pragma: no cover
    import onnx

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3  # LabelEncoder-2 (string keys, int64 values, default_int64)
DATE_OPSET = 20  # RegexFullMatch and StringSplit arrived in opset 20
# ENCODED (spec.encoding): the network's input, inside the merged graph
PREFIX = "enc/"  # every name the encoding adds starts with it (or with _enc/, ...: `free_prefix`)
NET_PREFIX = "net/"  # the network's own tensor and node names, once attached


def opset_for(enc: Encoding | None) -> int:
    """The default-domain opset a model with this encoding is exported at."""
    return DATE_OPSET if enc is not None and enc.has_dates else OPSET


@dataclass
class _Builder:
    nodes: list[Any] = field(default_factory=list)
    inits: list[Any] = field(default_factory=list)
    n: int = 0
    prefix: str = PREFIX  # no column name starts with it (`free_prefix`)

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{self.prefix}{hint}_{self.n}"

    def op(self, op: str, inputs: list[str], hint: str = "", n_out: int = 1, **attrs: Any) -> Any:
        from onnx import helper

        outs = [self.name(hint or op.lower()) for _ in range(n_out)]
        domain = ML_DOMAIN if op == "LabelEncoder" else ""
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        arr = np.asarray(value)
        if arr.dtype == object:
            from onnx import TensorProto, helper

            t = helper.make_tensor(name, TensorProto.STRING, arr.shape, [s.encode("utf-8") for s in arr.ravel()])
        else:
            t = numpy_helper.from_array(arr, name)
        self.inits.append(t)
        return name

    def floor_div(self, a: str, b: int) -> str:
        """a // b for int64 (floor, as Python): (a - a mod b) / b, with Mod's sign of the divisor."""
        bc = self.const(np.array(b, np.int64), "k")
        rem = self.op("Mod", [a, bc], "rem", fmod=0)
        return self.op("Div", [self.op("Sub", [a, rem]), bc], "fdiv")


def _number(b: _Builder, c: ColumnCode, x: str) -> list[str]:
    nan = b.op("IsNaN", [x], "nan")
    out = [b.op("Where", [nan, b.const(np.array([[c.impute[0]]], np.float32), "fill"), x], "imputed")]
    if c.indicator:
        out.append(b.op("Cast", [nan], "indicator", to=1))  # FLOAT
    return out


def _category(b: _Builder, c: ColumnCode, x: str) -> list[str]:
    k = len(c.categories)
    if c.dtype == FLOAT:  # numeric codes: NaN equals nothing, so missing is all zeros
        hit = b.op("Equal", [x, b.const(np.array([c.categories], np.float32), "cats")], "hit")
    else:
        keys = c.keys()
        index = b.op(
            "LabelEncoder", [x], "index",
            keys_strings=[s for s, _ in keys], values_int64s=[i for _, i in keys], default_int64=-1,
        )  # fmt: skip
        hit = b.op("Equal", [index, b.const(np.arange(k, dtype=np.int64)[None, :], "range")], "hit")
    return [b.op("Cast", [hit], "onehot", to=1)]


def _pieces(b: _Builder, s: str, suffix: str, delimiter: str, maxsplit: int) -> list[str]:
    """The maxsplit + 1 pieces of `s + suffix` split on `delimiter`: the suffix holds `maxsplit`
    delimiters, so every row splits into exactly that many pieces (no row-dependent width to pad).
    Each piece is [rows, 1]."""
    text = b.op("StringConcat", [s, b.const(np.array([[suffix]], dtype=object), "suffix")], "suffixed") if suffix else s
    parts, _ = b.op("StringSplit", [text], "split", n_out=2, delimiter=delimiter, maxsplit=maxsplit)
    return [b.op("Gather", [parts, b.const(np.array(i, np.int64))], "piece", axis=2) for i in range(maxsplit + 1)]


def _date(b: _Builder, c: ColumnCode, x: str) -> list[str]:
    """year, month, day, weekday (Monday 0)[, hour] in UTC from a date string; a value that is not one
    (the pattern, checked first) is replaced by 1970-01-01, then its parts by the training medians.

    After the pattern, a value is YYYY(-|/)MM(-|/)DD, then optionally (T| )HH:MM[:SS[.f]][Z|+HH:MM|-HH:MM]:
    slashes become dashes and a space before the time a T; splits then give the date, the clock and the
    offset. The instant in minutes since 1970 (days from the civil date, H. Hinnant's algorithm), less
    the offset, gives the UTC day (back to a civil date) and hour. Every split gets a suffix that fixes
    its number of pieces; a piece that ends with that suffix is split once more to drop it."""
    i64 = 7  # INT64

    def num(t: str) -> str:
        return b.op("Cast", [t], "int", to=i64)

    def text(v: str) -> str:
        return b.const(np.array([[v]], dtype=object), "text")

    def k(v: int) -> str:
        return b.const(np.array(v, np.int64), "k")

    def concat(*parts: str) -> str:
        out = parts[0]
        for p in parts[1:]:
            out = b.op("StringConcat", [out, p], "joined")
        return out

    def before(t: str, sep: str) -> str:  # the text before the first `sep` (all of it when none)
        return _pieces(b, t, sep, sep, 1)[0]

    def after(t: str, sep: str) -> str:  # the text after the first `sep` ("" when none)
        return before(_pieces(b, t, sep, sep, 1)[1], sep)

    def either(cond: str, yes: str, no: str) -> str:
        return b.op("Where", [cond, yes, no], "either")

    def is_empty(t: str) -> str:
        return b.op("Equal", [t, text("")], "empty")

    def op(name: str, *args: str) -> str:
        return b.op(name, list(args))

    ok = b.op("RegexFullMatch", [x], "ok", pattern=_PATTERN)
    s = either(ok, x, text("1970-01-01"))
    slash = b.op("RegexFullMatch", [s], "slash", pattern=SLASH_PATTERN)
    y_, m_, rest_, _ = _pieces(b, s, "///", "/", 3)  # YYYY/MM/DD...: "YYYY", "MM", "DD...", "//"
    s = either(slash, concat(y_, text("-"), m_, text("-"), rest_), s)
    space = b.op("RegexFullMatch", [s], "space", pattern=SPACE_PATTERN)
    date_, time_ = _pieces(b, s, " ", " ", 1)  # "YYYY-MM-DD", "HH:MM... " (or "")
    s = either(space, concat(date_, text("T"), before(time_, " ")), s)
    date = before(s, "T")  # "YYYY-MM-DD"
    clock = before(after(s, "T"), "Z")  # "HH:MM[:SS[.f]][+HH:MM|-HH:MM]", or "" for a date
    ahead, behind = after(clock, "+"), after(clock, "-")  # the offset's "HH:MM", on its side
    main = before(before(clock, "+"), "-")
    hh, mi, _ = _pieces(b, either(is_empty(main), text("00:00"), main), ":", ":", 2)
    zone = concat(ahead, behind)
    oh, om, _ = _pieces(b, either(is_empty(zone), text("00:00"), zone), ":", ":", 2)
    sign = either(is_empty(behind), k(1), k(-1))
    offset = op("Mul", sign, op("Add", op("Mul", num(oh), k(60)), num(om)))
    year, month, day = (num(p) for p in _pieces(b, date, "", "-", 2))  # the pattern made sure of two dashes

    # days from civil (H. Hinnant's algorithm), int64, floor division throughout
    early = b.op("Cast", [b.op("LessOrEqual", [month, k(2)], "early")], "earlyint", to=i64)
    y = op("Sub", year, early)
    era = b.floor_div(y, 400)
    yoe = op("Sub", y, op("Mul", era, k(400)))
    mp = b.op("Mod", [op("Add", month, k(9)), k(12)], "mp", fmod=0)
    doy = op("Add", b.floor_div(op("Add", op("Mul", mp, k(153)), k(2)), 5), op("Sub", day, k(1)))
    doe = op("Add", op("Sub", op("Add", op("Mul", yoe, k(365)), b.floor_div(yoe, 4)), b.floor_div(yoe, 100)), doy)
    days = op("Sub", op("Add", op("Mul", era, k(146097)), doe), k(719468))
    # the UTC instant, in minutes; back to its day and hour
    minutes = op("Sub", op("Add", op("Mul", days, k(1440)), op("Add", op("Mul", num(hh), k(60)), num(mi))), offset)
    days = b.floor_div(minutes, 1440)
    hour = b.floor_div(op("Sub", minutes, op("Mul", days, k(1440))), 60)
    # civil from days (the same algorithm's inverse)
    z = op("Add", days, k(719468))
    era = b.floor_div(z, 146097)
    doe = op("Sub", z, op("Mul", era, k(146097)))
    yoe = b.floor_div(
        op("Sub", op("Add", op("Sub", doe, b.floor_div(doe, 1460)), b.floor_div(doe, 36524)), b.floor_div(doe, 146096)),
        365,
    )
    doy = op("Sub", doe, op("Sub", op("Add", op("Mul", yoe, k(365)), b.floor_div(yoe, 4)), b.floor_div(yoe, 100)))
    mp = b.floor_div(op("Add", op("Mul", doy, k(5)), k(2)), 153)
    day = op("Add", op("Sub", doy, b.floor_div(op("Add", op("Mul", mp, k(153)), k(2)), 5)), k(1))
    late = b.op("Cast", [b.op("GreaterOrEqual", [mp, k(10)], "late")], "lateint", to=i64)
    month = op("Sub", op("Add", mp, k(3)), op("Mul", late, k(12)))
    early = b.op("Cast", [b.op("LessOrEqual", [month, k(2)], "early")], "earlyint", to=i64)
    year = op("Add", op("Add", yoe, op("Mul", era, k(400))), early)
    weekday = b.op("Mod", [op("Add", days, k(3)), k(7)], "weekday", fmod=0)  # 1970-01-01: a Thursday
    inside = op("And", b.op("GreaterOrEqual", [year, k(1)], "ge"), b.op("LessOrEqual", [year, k(9999)], "le"))
    ok = op("And", ok, inside)  # an offset can take an instant out of the years 1 to 9999: missing
    ints = [year, month, day, weekday] + ([hour] if c.kind == TIMESTAMP else [])
    parts = b.op("Cast", [b.op("Concat", ints, "parts", axis=1)], "partsf", to=1)
    fill = b.const(np.array([c.impute], np.float32), "fill")
    out = [b.op("Where", [ok, parts, fill], "dateparts")]
    if c.indicator:
        out.append(b.op("Cast", [b.op("Not", [ok])], "indicator", to=1))
    return out


def encoding_graph(enc: Encoding, x_name: str = "x") -> tuple[list[Any], list[Any], list[Any], str]:
    """(nodes, initializers, graph inputs, encoded output name) for `enc`."""
    from onnx import TensorProto, helper

    b = _Builder(prefix=free_prefix(PREFIX, enc.features))
    if enc.per_column:
        inputs = [
            helper.make_tensor_value_info(
                c.name, TensorProto.FLOAT if c.dtype == FLOAT else TensorProto.STRING, [BATCH_DIM, 1]
            )
            for c in enc.columns
        ]
        cols = [c.name for c in enc.columns]
    else:
        inputs = [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, [BATCH_DIM, len(enc.columns)])]
        if len(enc.columns) == 1:
            cols = [b.op("Identity", [x_name], "col")]
        else:
            cols = b.op("Split", [x_name], "col", n_out=len(enc.columns), axis=1, num_outputs=len(enc.columns))
    blocks: list[str] = []
    for c, col in zip(enc.columns, cols):
        if c.kind == NUMBER:
            blocks += _number(b, c, col)
        elif c.kind == CATEGORY:
            blocks += _category(b, c, col)
        else:
            blocks += _date(b, c, col)
    out = b.op("Concat", blocks, "encoded", axis=1) if len(blocks) > 1 else b.op("Identity", blocks, "encoded")
    return b.nodes, b.inits, inputs, out


def free_prefix(prefix: str, names: Sequence[str]) -> str:
    """`prefix`, with "_" in front until no name in `names` starts with it: the names the graph adds
    can never be a column's (a column may be called anything, `enc/nan_6` included)."""
    while any(n.startswith(prefix) for n in names):
        prefix = "_" + prefix
    return prefix


def attach(network: onnx.ModelProto, enc: Encoding) -> onnx.ModelProto:
    """The network (exported with one input, the encoded features) behind the encoding: one graph whose
    inputs are the raw columns. The network's input is renamed to ENCODED wherever it is read, and every
    other tensor and node of the network but its outputs gets a prefix no column name starts with (a
    column may be called `linear`, `relu` or `sub`, as the exporter calls its tensors)."""
    from onnx import helper

    g = network.graph
    (net_in,) = [i for i in g.input if i.name not in {t.name for t in g.initializer}]
    nodes, inits, inputs, encoded = encoding_graph(enc, x_name=net_in.name if not enc.per_column else "x")
    kept_names = {o.name for o in g.output}
    net = free_prefix(NET_PREFIX, enc.features)
    renamed = {net_in.name: ENCODED}
    for t in g.initializer:
        renamed[t.name] = net + t.name
    for node in g.node:
        for out in node.output:
            if out and out not in kept_names:
                renamed[out] = net + out
        node.name = net + node.name
    for node in g.node:
        node.input[:] = [renamed.get(v, v) for v in node.input]
        node.output[:] = [renamed.get(v, v) for v in node.output]
    for t in g.initializer:
        t.name = renamed[t.name]
    for v in g.value_info:
        v.name = renamed.get(v.name, v.name)
    nodes.append(helper.make_node("Identity", [encoded], [ENCODED], name=f"{net}to_network"))
    kept = [n for n in g.node]
    del g.node[:]
    g.node.extend(nodes + kept)
    g.initializer.extend(inits)
    del g.input[:]
    g.input.extend(inputs)
    domains = {o.domain for o in network.opset_import}
    if any(n.domain == ML_DOMAIN for n in nodes) and ML_DOMAIN not in domains:
        network.opset_import.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))
    return network


def nodes_on_strings(model: onnx.ModelProto) -> tuple[int, tuple[str, ...]]:
    """(count, sorted operator types) of the graph's nodes that take or make a string tensor, by onnx's
    type inference: the encoding's string operators and the Shape, Gather, Concat... that carry strings
    between them. onnxruntime has no CUDA kernels for strings: these run on its CPU provider."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.value_info, *g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    hits = [n.op_type for n in g.node if any(types.get(v) == onnx.TensorProto.STRING for v in (*n.input, *n.output))]
    return len(hits), tuple(sorted(set(hits)))


def string_nodes(model: onnx.ModelProto) -> list[str]:
    """The operator types of a graph's nodes that take or make strings (`nodes_on_strings`)."""
    return list(nodes_on_strings(model)[1])
