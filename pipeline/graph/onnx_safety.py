"""Refuse ONNX models that are not self-contained, wherever their tensors live.

An ONNX tensor can keep its bytes in an "external data" file named by a relative (or, maliciously,
absolute or `..`-escaping) path. A shipped model must never do that: the file would be read from
wherever the loader resolves it (onnx's checker and onnxruntime, given an in-memory model, resolve
it against the *current directory*). Tensors can live in many places besides the main graph's
initializers, so `external_references` walks every one of them:

    graph.initializer, graph.sparse_initializer (values and indices),
    every node attribute's t, tensors, sparse_tensor, sparse_tensors, g and graphs
    (subgraphs recursively, with their own initializers, sparse initializers and nodes),
    model.functions (their nodes' attributes, recursively, and attribute_proto defaults),
    model.training_info (initialization and algorithm graphs, recursively).

The walk uses an explicit stack, so no nesting depth can raise RecursionError.

`parse_self_contained` parses bytes (never a path), refuses any external reference, and only then
runs onnx's full checker on the in-memory proto. Every failure is a one-line `CorruptArtifact` (5)
or `IntegrityError` (6).

Importing this module is cheap: onnx is imported inside the functions, torch never.
"""

from __future__ import annotations

import ntpath
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import CorruptArtifact, IntegrityError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "ExternalRef",
    "external_references",
    "location_points_outside",
    "parse_self_contained",
]

DETAIL_LIMIT = 300  # characters of detail (a checker message, a tensor's place) in one error message
NAME_LIMIT = 60  # characters of one name (tensor, node, attribute, function) inside a place
LOCATION_LIMIT = 120  # characters of an external-data location shown in a message
# A place of more than PATH_HEAD + PATH_TAIL steps (3 per subgraph level; anything protobuf can parse
# fits) keeps only its first and last steps, so absurd nesting cannot make huge strings.
PATH_HEAD = 24
PATH_TAIL = 72
MAX_MODEL_BYTES = 2**31 - 1  # protobuf cannot represent a larger message

# A place is built as a linked list (parent, step) so that deep nesting costs memory linear in the
# depth; the readable string is only made for the tensors that are reported.
_Place: TypeAlias = "tuple[_Place, str] | None"


@dataclass(frozen=True)
class ExternalRef:
    """One tensor that keeps (or claims to keep) its data outside the ONNX file."""

    where: str  # e.g. "graph.node[3](Loop 'loop1').attribute['body'].graph.initializer['w']"
    location: str  # the external_data "location" value, or "" when there is none

    @property
    def points_outside(self) -> bool:
        """The location is absolute or climbs out of the model's folder."""
        return location_points_outside(self.location)


def location_points_outside(location: str) -> bool:
    """True when an external-data location is absolute (POSIX or Windows, drive or UNC) or contains `..`."""
    if not location:
        return False
    return (
        ".." in location
        or posixpath.isabs(location)
        or ntpath.isabs(location)
        or bool(ntpath.splitdrive(location)[0])
        or location.startswith("~")
    )


def external_references(model: onnx.ModelProto) -> list[ExternalRef]:
    """Every tensor in `model` (any graph, subgraph, function or training graph) that is external.

    A tensor counts as external when its data_location is EXTERNAL or when it has any external_data
    entry at all. The result is in document order (the order the tensors appear in the file).
    """
    import onnx

    external = onnx.TensorProto.EXTERNAL
    refs: list[ExternalRef] = []
    for place, tensor in _walk_tensors(model):
        if tensor.data_location == external or len(tensor.external_data) > 0:
            refs.append(ExternalRef(where=_render_place(place), location=_location_of(tensor)))
    return refs


def parse_self_contained(data: bytes | bytearray | memoryview, where: str) -> onnx.ModelProto:
    """Parse ONNX `data` (bytes, never a path), refuse it unless fully self-contained, then run the
    full ONNX checker on the in-memory proto.

    Raises CorruptArtifact when `data` is empty, not ONNX or fails the checker, and IntegrityError
    when any tensor anywhere references external data. `where` names the artifact in the messages.
    """
    import onnx

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_self_contained needs bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise CorruptArtifact(_one_line(f"{where} is not a valid ONNX file (it is empty)"))
    if len(raw) > MAX_MODEL_BYTES:
        raise CorruptArtifact(_one_line(f"{where} is not a valid ONNX file (larger than protobuf's 2 GiB limit)"))

    model = onnx.ModelProto()
    try:
        model.ParseFromString(raw)
    except Exception as exc:  # noqa: BLE001 - DecodeError, RecursionError (pure-python protobuf), ValueError...
        raise CorruptArtifact(_one_line(f"{where} is not a valid ONNX file ({_describe(exc)})")) from None

    try:
        refs = external_references(model)
    except Exception as exc:  # noqa: BLE001 - defensive: the walk only reads fields, but the proto is untrusted
        raise CorruptArtifact(_one_line(f"{where} is not a valid ONNX file ({_describe(exc)})")) from None
    if refs:
        raise IntegrityError(_external_message(where, refs))

    # Safe now: with no external reference left, the checker has nothing to resolve against the
    # current directory (which it would do for an in-memory model).
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - ValidationError, InferenceError, ValueError, ...
        raise CorruptArtifact(_one_line(f"{where} fails the ONNX checker: {_first_line(exc)}")) from None
    return model


# ---------------------------------------------------------------------------------------------
# The walk


def _walk_tensors(model: onnx.ModelProto) -> Iterator[tuple[_Place, onnx.TensorProto]]:
    """Yield (place, tensor) for every TensorProto reachable from `model`, in document order.

    Stack items are (kind, proto, place). Children are pushed in reverse so they pop in order.
    """
    stack: list[tuple[str, Any, _Place]] = []
    push = stack.append

    # model-level roots, reversed
    for i in range(len(model.training_info) - 1, -1, -1):
        info = model.training_info[i]
        base: _Place = (None, f"training_info[{i}]")
        push(("graph", info.algorithm, (base, ".algorithm")))
        push(("graph", info.initialization, (base, ".initialization")))
    for i in range(len(model.functions) - 1, -1, -1):
        fn = model.functions[i]
        push(("function", fn, (None, f"functions[{i}]({_q(fn.name)} domain {_q(fn.domain)})")))
    push(("graph", model.graph, (None, "graph")))

    while stack:
        kind, proto, place = stack.pop()
        if kind == "tensor":
            yield place, proto
        elif kind == "graph":
            _push_nodes(push, proto.node, place)
            for i in range(len(proto.sparse_initializer) - 1, -1, -1):
                sparse = proto.sparse_initializer[i]
                push(("sparse", sparse, (place, f".sparse_initializer{_key(sparse.values.name, i)}")))
            for i in range(len(proto.initializer) - 1, -1, -1):
                tensor = proto.initializer[i]
                push(("tensor", tensor, (place, f".initializer{_key(tensor.name, i)}")))
        elif kind == "sparse":
            push(("tensor", proto.indices, (place, ".indices")))
            push(("tensor", proto.values, (place, ".values")))
        elif kind == "function":
            _push_nodes(push, proto.node, place)
            for i in range(len(proto.attribute_proto) - 1, -1, -1):
                attr = proto.attribute_proto[i]
                push(("attribute", attr, (place, f".attribute_proto{_key(attr.name, i)}")))
        elif kind == "node":
            for i in range(len(proto.attribute) - 1, -1, -1):
                attr = proto.attribute[i]
                push(("attribute", attr, (place, f".attribute{_key(attr.name, i)}")))
        elif kind == "attribute":
            # Every field is looked at whatever the declared `type` says: a lying type must not hide a tensor.
            for i in range(len(proto.graphs) - 1, -1, -1):
                push(("graph", proto.graphs[i], (place, f".graphs[{i}]")))
            if proto.HasField("g"):
                push(("graph", proto.g, (place, ".graph")))
            for i in range(len(proto.sparse_tensors) - 1, -1, -1):
                push(("sparse", proto.sparse_tensors[i], (place, f".sparse_tensors[{i}]")))
            if proto.HasField("sparse_tensor"):
                push(("sparse", proto.sparse_tensor, (place, ".sparse_tensor")))
            for i in range(len(proto.tensors) - 1, -1, -1):
                push(("tensor", proto.tensors[i], (place, f".tensors[{i}]")))
            if proto.HasField("t"):
                push(("tensor", proto.t, (place, ".t")))


def _push_nodes(push: Any, nodes: Any, place: _Place) -> None:
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        op_type = _text(node.op_type)
        label = op_type if op_type.isidentifier() and len(op_type) <= NAME_LIMIT else _q(op_type)
        name = f" {_q(node.name)}" if node.name else ""
        push(("node", node, (place, f".node[{i}]({label}{name})")))


def _location_of(tensor: onnx.TensorProto) -> str:
    """The "location" entry (the last one, as onnx reads it), or the first suspicious one if any."""
    locations = [_text(entry.value) for entry in tensor.external_data if _text(entry.key) == "location"]
    for location in locations:
        if location_points_outside(location):
            return location
    return locations[-1] if locations else ""


def _render_place(place: _Place) -> str:
    steps: list[str] = []
    while place is not None:
        place, step = place
        steps.append(step)
    steps.reverse()
    if len(steps) > PATH_HEAD + PATH_TAIL:
        hidden = len(steps) - PATH_HEAD - PATH_TAIL
        steps = [*steps[:PATH_HEAD], f"...({hidden} steps)...", *steps[-PATH_TAIL:]]
    return "".join(steps)


# ---------------------------------------------------------------------------------------------
# Messages: always one line, bounded detail


def _external_message(where: str, refs: list[ExternalRef]) -> str:
    first = refs[0]
    place = _clip_middle(first.where, DETAIL_LIMIT)
    location = repr(_clip(first.location, LOCATION_LIMIT))
    more = f" (and {len(refs) - 1} more external tensor{'s' if len(refs) > 2 else ''})" if len(refs) > 1 else ""
    if any(ref.points_outside for ref in refs):
        outside = first if first.points_outside else next(ref for ref in refs if ref.points_outside)
        place = _clip_middle(outside.where, DETAIL_LIMIT)
        location = repr(_clip(outside.location, LOCATION_LIMIT))
        text = (
            f"{where}: tensor at {place} keeps its data in an external file that points outside its folder "
            f"({location}){more}; refused"
        )
    else:
        text = (
            f"{where}: tensor at {place} keeps its data in an external file ({location}){more}; "
            "shipped models must be self-contained"
        )
    return _one_line(text)


def _text(value: object) -> str:
    """A proto string field as str: upb hands back bytes for proto2 strings that are not valid UTF-8."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def _q(value: object) -> str:
    """A name, quoted and escaped (repr) and shortened."""
    return repr(_clip(_text(value), NAME_LIMIT))


def _key(name: object, index: int) -> str:
    text = _text(name)
    return f"[{_q(text)}]" if text else f"[{index}]"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clip_middle(text: str, limit: int) -> str:
    """Keep both ends of a long place: its root and the tensor itself are the useful parts."""
    if len(text) <= limit:
        return text
    head = limit // 3
    return text[:head] + "..." + text[len(text) - (limit - head - 3) :]


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or "?"


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            return _clip(line.strip(), DETAIL_LIMIT)
    return exc.__class__.__name__


def _describe(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {_first_line(exc)}" if str(exc).strip() else exc.__class__.__name__
