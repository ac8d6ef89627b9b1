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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..spec.encoding import CATEGORY, FLOAT, NUMBER, SLASH_PATTERN, TIMESTAMP, ColumnCode, Encoding
from ..spec.encoding import DATE_PATTERN as _PATTERN
from .contract import BATCH_DIM, OPSET

if TYPE_CHECKING:  # pragma: no cover
    import onnx

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3  # LabelEncoder-2 (string keys, int64 values, default_int64)
DATE_OPSET = 20  # RegexFullMatch and StringSplit arrived in opset 20
ENCODED = "xorship_encoded"  # the network's input, inside the merged graph
PREFIX = "enc/"  # every name the encoding adds (the exporter's names never start with it)


def opset_for(enc: Encoding | None) -> int:
    """The default-domain opset a model with this encoding is exported at."""
    return DATE_OPSET if enc is not None and enc.has_dates else OPSET


@dataclass
class _Builder:
    nodes: list[Any] = field(default_factory=list)
    inits: list[Any] = field(default_factory=list)
    n: int = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{PREFIX}{hint}_{self.n}"

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


def _part(b: _Builder, parts: str, i: int) -> str:
    """Piece i of StringSplit's output [rows, 1, k], "" where a row has fewer pieces: the output padded
    with one "" column first (k may be i)."""
    shape = b.op("Shape", [parts], "shape")
    lead = b.op("Slice", [shape, b.const(np.array([0], np.int64)), b.const(np.array([2], np.int64))], "lead")
    pad_shape = b.op("Concat", [lead, b.const(np.array([i + 1], np.int64))], "padshape", axis=0)
    pad = b.op("Expand", [b.const(np.array([[[""]]], dtype=object), "empty"), pad_shape], "pad")
    padded = b.op("Concat", [parts, pad], "padded", axis=2)
    return b.op("Gather", [padded, b.const(np.array(i, np.int64))], "piece", axis=2)


def _split(b: _Builder, s: str, delimiter: str, maxsplit: int) -> str:
    parts, _ = b.op("StringSplit", [s], "split", n_out=2, delimiter=delimiter, maxsplit=maxsplit)
    return str(parts)


def _date(b: _Builder, c: ColumnCode, x: str) -> list[str]:
    """year, month, day, weekday (Monday 0)[, hour] from an ISO string; a value that is not one (the
    pattern, checked first) is replaced by 1970-01-01, then its parts by the training medians."""
    i64 = 7  # INT64

    def num(s: str) -> str:
        return b.op("Cast", [s], "int", to=i64)

    ok = b.op("RegexFullMatch", [x], "ok", pattern=_PATTERN)
    s = b.op("Where", [ok, x, b.const(np.array([["1970-01-01"]], dtype=object), "epoch")], "valid")
    slash = b.op("RegexFullMatch", [s], "slash", pattern=SLASH_PATTERN)  # YYYY/MM/DD...: rebuilt with '-'
    ps = _split(b, s, "/", 2)
    dash = b.const(np.array([["-"]], dtype=object), "dash")
    joined = b.op("StringConcat", [_part(b, ps, 0), dash], "j")
    joined = b.op("StringConcat", [b.op("StringConcat", [joined, _part(b, ps, 1)], "j"), dash], "j")
    joined = b.op("StringConcat", [joined, _part(b, ps, 2)], "j")
    s = b.op("Where", [slash, joined, s], "dashed")
    ymd = _split(b, s, "-", 2)  # "YYYY", "MM", "DD..." (the rest: a time may follow the day)
    year, month = num(_part(b, ymd, 0)), num(_part(b, ymd, 1))
    rest = _split(b, _part(b, ymd, 2), ":", 1)  # "DD", "DDTHH" or "DD HH", then the minutes
    head = _part(b, rest, 0)
    by_t = _split(b, head, "T", 1)  # "DD" + "HH", or "DD HH" alone
    by_space = _split(b, _part(b, by_t, 0), " ", 1)
    day = num(_part(b, by_space, 0))
    hour_text = b.op("StringConcat", [_part(b, by_t, 1), _part(b, by_space, 1)], "hourtext")
    no_hour = b.op("Equal", [hour_text, b.const(np.array([[""]], dtype=object), "none")], "nohour")
    hour = num(b.op("Where", [no_hour, b.const(np.array([["0"]], dtype=object), "zero"), hour_text], "hourstr"))

    def k(v: int) -> str:
        return b.const(np.array(v, np.int64), "k")

    # days from civil (H. Hinnant's algorithm), int64, floor division throughout
    early = b.op("Cast", [b.op("LessOrEqual", [month, k(2)], "early")], "earlyint", to=i64)
    y = b.op("Sub", [year, early], "y")
    era = b.floor_div(y, 400)
    yoe = b.op("Sub", [y, b.op("Mul", [era, k(400)])], "yoe")
    mp = b.op("Mod", [b.op("Add", [month, k(9)]), k(12)], "mp", fmod=0)
    doy = b.op("Add", [b.floor_div(b.op("Add", [b.op("Mul", [mp, k(153)]), k(2)]), 5), b.op("Sub", [day, k(1)])])
    doe = b.op(
        "Add",
        [b.op("Sub", [b.op("Add", [b.op("Mul", [yoe, k(365)]), b.floor_div(yoe, 4)]), b.floor_div(yoe, 100)]), doy],
        "doe",
    )
    days = b.op("Sub", [b.op("Add", [b.op("Mul", [era, k(146097)]), doe]), k(719468)], "days")
    weekday = b.op("Mod", [b.op("Add", [days, k(3)]), k(7)], "weekday", fmod=0)  # 1970-01-01: a Thursday
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

    b = _Builder()
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


def attach(network: onnx.ModelProto, enc: Encoding) -> onnx.ModelProto:
    """The network (exported with one input, the encoded features) behind the encoding: one graph whose
    inputs are the raw columns. The network's input is renamed to ENCODED wherever it is read."""
    from onnx import helper

    g = network.graph
    (net_in,) = [i for i in g.input if i.name not in {t.name for t in g.initializer}]
    nodes, inits, inputs, encoded = encoding_graph(enc, x_name=net_in.name if not enc.per_column else "x")
    old = net_in.name
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = ENCODED
    nodes.append(helper.make_node("Identity", [encoded], [ENCODED], name=f"{PREFIX}to_network"))
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
