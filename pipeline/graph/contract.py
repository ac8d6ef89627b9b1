"""The ONNX contract: what a shipped file must look like, and reading it back safely.

One home for: the opset, input/output names and the symbolic batch dimension; "graph inputs minus
initializers"; the opset read-back; the signature check; and parsing a file's bytes into a checked,
self-contained model (no external data anywhere: see `onnx_safety`). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import CorruptArtifact

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from ..spec.archs import Arch

OPSET = 18  # pinned: the first opset the dynamo exporter emits; Gemm + Sigmoid are stable there
# the input's name is the network's (spec.archs.INPUT_NAME, beside the heads' output names)
OUTPUT_NAME = "probability"  # the built-ins' output, (batch, 1) float32; recipes: archs.OUTPUT_NAMES[task]
META_PREFIX = "xorship."  # metadata_props keys: xorship.task, .features, .classes, .name (JSON values)
BATCH_DIM = "batch"
EXPORTER = "torch.onnx.export(dynamo=True)"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type name (onnx's, e.g. FLOAT) and dims
    (a str for a symbolic dimension, an int for a fixed one)."""

    name: str
    elem_type: int
    dims: tuple[str | int, ...]

    @property
    def type_name(self) -> str:
        from onnx import TensorProto

        return str(TensorProto.DataType.Name(self.elem_type))


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def _spec(value_info: Any) -> TensorSpec:
    t = value_info.type.tensor_type
    dims = tuple(d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim)
    return TensorSpec(value_info.name, t.elem_type, dims)


def graph_inputs(model: onnx.ModelProto) -> list[Any]:
    """The graph's real inputs: those that are not initializers (older exporters list both)."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def signature(model: onnx.ModelProto) -> Signature:
    return Signature(tuple(_spec(i) for i in graph_inputs(model)), tuple(_spec(o) for o in model.graph.output))


def opset_of(model: onnx.ModelProto) -> int | None:
    """The default-domain opset the file declares."""
    return {o.domain: o.version for o in model.opset_import}.get("")


def expected_inputs(arch: Arch) -> tuple[tuple[str, int, int], ...]:
    """The graph inputs a model of `arch` takes, as (name, onnx element type, width): one `x`
    (batch, features) FLOAT, or, where the encoding takes text or dates, one (batch, 1) input per
    column named as the column, FLOAT for numbers and STRING for text and dates."""
    from onnx import TensorProto

    from ..spec.archs import INPUT_NAME
    from ..spec.encoding import FLOAT

    enc = arch.encoding
    if enc is None or not enc.per_column:
        return ((INPUT_NAME, TensorProto.FLOAT, arch.n_inputs),)
    return tuple((c.name, TensorProto.FLOAT if c.dtype == FLOAT else TensorProto.STRING, 1) for c in enc.columns)


def signature_problems(
    model: onnx.ModelProto, n_inputs: int = 2, n_outputs: int = 1, arch: Arch | None = None
) -> str | None:
    """None when the graph has one float input (batch, n_inputs) (or, given `arch`, the inputs
    `expected_inputs(arch)` names) and a first float output (batch, n_outputs) sharing one symbolic
    batch dimension; else what is wrong, in one line."""
    from onnx import TensorProto

    sig = signature(model)
    if arch is not None and arch.per_column:
        want = expected_inputs(arch)
        got = [(i.name, i.elem_type, i.dims) for i in sig.inputs]
        if [w[0] for w in want] != [g[0] for g in got]:
            return f"inputs {[g[0] for g in got][:8]}, expected {[w[0] for w in want][:8]}"
        for (name, elem, width), spec in zip(want, sig.inputs):
            if spec.elem_type != elem or len(spec.dims) != 2 or spec.dims[1] != width:
                return f"input {name!r} is {spec.type_name}{list(spec.dims)}, expected [{BATCH_DIM}, {width}]"
        if not sig.outputs:
            return "the graph has no output"
        out = sig.outputs[0]
        if out.elem_type != TensorProto.FLOAT or len(out.dims) != 2 or out.dims[1] != n_outputs:
            return f"output {out.name!r} is {out.type_name}{list(out.dims)}, expected FLOAT[{BATCH_DIM}, {n_outputs}]"
        if any(s.dims[0] != out.dims[0] or not isinstance(s.dims[0], str) for s in sig.inputs):
            return "batch dimension is not symbolic and shared by every input and the output"
        return None
    if len(sig.inputs) != 1 or not sig.outputs:
        return f"expected one input and at least one output, found {len(sig.inputs)} and {len(sig.outputs)}"
    inp, out = sig.inputs[0], sig.outputs[0]
    if inp.elem_type != TensorProto.FLOAT or len(inp.dims) != 2 or inp.dims[1] != n_inputs:
        return f"input {inp.name!r} is {inp.type_name}{list(inp.dims)}, expected FLOAT[{BATCH_DIM}, {n_inputs}]"
    if out.elem_type != TensorProto.FLOAT or len(out.dims) != 2 or out.dims[1] != n_outputs:
        return f"output {out.name!r} is {out.type_name}{list(out.dims)}, expected FLOAT[{BATCH_DIM}, {n_outputs}]"
    if not isinstance(inp.dims[0], str) or inp.dims[0] != out.dims[0]:
        return f"batch dimension is not symbolic and shared: input {list(inp.dims)}, output {list(out.dims)}"
    return None


def parse_checked(data: bytes, where: str) -> onnx.ModelProto:
    """Parse an ONNX file's bytes (the very bytes that were hashed), refuse any external data
    reference wherever a tensor can live, and run the full checker on the in-memory model."""
    from .onnx_safety import parse_self_contained

    return parse_self_contained(data, where)


def check_served(model: onnx.ModelProto, where: str, n_inputs: int, n_outputs: int, arch: Arch | None = None) -> None:
    """A file we serve must have the model's signature."""
    problem = signature_problems(model, n_inputs, n_outputs, arch)
    if problem:
        raise CorruptArtifact(f"{where} is not a model of this tool: {problem}")


def metadata_props(arch: Arch) -> dict[str, str]:
    """What the ONNX file says about itself (`metadata_props`): task, feature and class names, as JSON."""
    import json

    return {
        META_PREFIX + "name": arch.name,
        META_PREFIX + "task": arch.task,
        META_PREFIX + "features": json.dumps(list(arch.features)),
        META_PREFIX + "classes": json.dumps(list(arch.classes)),
        META_PREFIX + "output": arch.output_name,
    } | ({META_PREFIX + "encoding": json.dumps(arch.encoding.record())} if arch.encoding is not None else {})


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The file's xorship.* metadata_props, without the prefix (empty for files of older releases)."""
    return {p.key[len(META_PREFIX) :]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}
