"""`ship`: one published version of a model into an NVIDIA Triton model repository.

    <out>/<serving_name>/config.pbtxt          pins the version shipped last: specific { versions: [N] }
    <out>/<serving_name>/labels.txt            multiclass models: one class name per line, in output
                                               order (the config's `label_filename`), for Triton's
                                               classification extension; follows the pinned version
    <out>/<serving_name>/<N>/model.onnx        Triton version N = our version N, byte for byte
    <out>/<serving_name>/<N>/manifest.json     so `predict --model <out>/<name>/<N>/model.onnx` can check
    <out>/<serving_name>/<N>/verify.json       the copy against the manifest and report beside it
    <out>/<serving_name>/<N>/MODEL_CARD.md     when the version has one
    <out>/.lock                                held for the whole ship (a second ship gets FolderLocked), then
                                               removed: the repository Triton reads holds no stray file

`ship_version` takes the version's bytes (the caller has read and hash-checked them) and:

- validates the options and the files; rebuilds the network's description (`archs.Arch`) from the
  version's manifest (`artifacts.arch_of`); builds the config from it (input `x` [n_inputs] FP32, or,
  for a model whose graph takes one input per raw column (`Arch.per_column`), one input per column
  named exactly as the column, dims [1], `TYPE_FP32` for numbers and `TYPE_STRING` for text,
  booleans and dates; output `Arch.output_name` [n_outputs] FP32; the batch dimension as Triton's
  `max_batch_size`), checks that the ONNX graph has exactly that signature, and checks the config
  before anything is written: always with this module's own reader of the text it generates (so a
  base install refuses a bad config too), and also with Triton's model-config protobuf schema
  (`tritonclient.grpc.model_config_pb2`) when tritonclient is installed. Tensor names are protobuf
  text strings (`"` and backslash escaped), so a column named `lot size` or `kind/type` keeps its
  name; a name with a control character is refused. A model with string inputs gets comment lines
  in its config (and `ShipResult.notes`) saying which of its nodes onnxruntime runs on its CPU
  provider on a GPU instance: those that take or make strings (it has no CUDA kernels for strings);
- class names go into labels.txt as written in the data (a string as it is; a number or boolean
  as JSON writes it: 3, 1.5, true). A class name that cannot be one line of that file (a line
  break of any kind, a NUL, text that is not valid Unicode) or two classes with the same name is
  refused with a UsageError: escaping would make Triton answer names the data does not hold;
- never overwrites a version folder: version N already there holding the same files (model.onnx,
  manifest.json, verify.json, MODEL_CARD.md: each present or absent alike, with the same sha256)
  is a no-op; any difference is an IntegrityError naming the file and both hashes. The config and
  labels.txt, which follow the pinned version, are rewritten only when their content changes (so
  shipping an older N again is how a rollback is served, and shipping the same N with the same
  options writes nothing);
- builds a new version folder under a temporary name, fsyncs it, re-checks every copy's sha256,
  renames it into place, then writes labels.txt and the config atomically, each read back and
  checked; if anything fails, what this call created or changed is removed or restored;
- follows no symbolic link inside the repository: `<out>/<serving_name>`, its version folder, the
  version's files, config.pbtxt and labels.txt must be a real folder / regular file (`<out>` itself
  may be a link).

Tested against Triton's schema, not a live server: none can run here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ArtifactWriteError, CorruptArtifact, IntegrityError, MissingArtifact, UsageError
from ..graph.contract import check_served, parse_checked, read_metadata, signature
from ..spec.archs import INPUT_NAME, Arch
from ..spec.encoding import STRING
from ..spec.recipe import BUILTIN_NAMES
from ..store import artifacts as A
from ..store.card import class_label
from ..store.manifest import Manifest

INSTANCE_KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32", 8: "TYPE_STRING"}

CONFIG = "config.pbtxt"
LABELS = A.LABELS  # Triton's label file for a classification output: in the model folder, beside the config
PLATFORM = "onnxruntime_onnx"
QUEUE_DELAY_US = 100
MODEL_PARAMETER = "xorship_model"  # config parameter: the model (artifacts name) a Triton model folder serves
MAX_BATCH_SIZE = 2**31 - 1  # Triton's ModelConfig.max_batch_size is an int32
MAX_INSTANCES = 1024  # ModelInstanceGroup.count is an int32; more than this is a typo, not a plan
MAX_VERSION = 2**63 - 1  # Triton's version numbers are int64
REQUIRED_FILES = (A.ONNX, A.MANIFEST, A.VERIFY)
# What a Triton version folder holds; other entries of `files` (weights, loss curve) are not shipped.
# The seal (schema 4 on) lets `predict --model <repo>/<name>/<N>/model.onnx` check the copied manifest.
SHIPPED_FILES = (*REQUIRED_FILES, A.CARD, A.SEAL)
# A model name that needs no quoting and is one path component (a Triton model folder).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ShipResult:
    model_name: str
    version: int
    config_path: Path
    model_path: Path
    noop: bool  # the version folder was already there with these very files: nothing of it was written
    repository: Path  # `out`, the Triton model repository
    labels_path: Path | None = None  # multiclass: <out>/<name>/labels.txt
    written: tuple[str, ...] = ()  # what this call wrote, relative to `out` (empty: the repository was up to date)
    notes: tuple[str, ...] = ()  # what the config says beyond its fields (its comment lines: where nodes run)


# ---------------------------------------------------------------------------------------------
# The config


@dataclass(frozen=True)
class TritonTensor:
    name: str
    data_type: str  # Triton's, e.g. TYPE_FP32
    dims: tuple[int, ...]  # without the batch dimension; -1 for a variable one
    label_filename: str | None = None  # a classification output: the label file in the model folder


Tensors = tuple[tuple[TritonTensor, ...], tuple[TritonTensor, ...]]  # (inputs, outputs)


def triton_tensors(onnx_model: Any) -> Tensors:
    """(inputs, outputs) of the ONNX graph as Triton sees them with batching on: the first dim of
    every tensor is the batch (symbolic), the others fixed or -1. CorruptArtifact when the graph's
    signature cannot be expressed that way."""
    sig = signature(onnx_model)
    if not sig.inputs or not sig.outputs:
        raise CorruptArtifact(
            f"the ONNX graph has {len(sig.inputs)} inputs and {len(sig.outputs)} outputs; Triton needs at least one of each"
        )

    def convert(spec: Any, kind: str) -> TritonTensor:
        problem = tensor_name_problem(spec.name)
        if problem:
            raise CorruptArtifact(
                f"ONNX {kind} name {str(spec.name)[:60]!r} cannot be written in a Triton config: {problem}"
            )
        if spec.elem_type not in ONNX_TO_TRITON:
            raise CorruptArtifact(
                f"ONNX {kind} {spec.name!r} has element type {spec.type_name}, which ship does not map to a Triton type"
            )
        if len(spec.dims) < 2:
            raise CorruptArtifact(
                f"ONNX {kind} {spec.name!r} has shape {list(spec.dims)}: Triton batching needs a batch dim and at least one more"
            )
        if not isinstance(spec.dims[0], str):  # a fixed first dim (or 0: unknown, unnamed) is not a batch dim
            raise CorruptArtifact(
                f"ONNX {kind} {spec.name!r} has shape {list(spec.dims)}: its first dim is not a symbolic batch dimension"
            )
        dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in spec.dims[1:])
        return TritonTensor(spec.name, ONNX_TO_TRITON[spec.elem_type], dims)

    inputs = tuple(convert(s, "input") for s in sig.inputs)
    outputs = tuple(convert(s, "output") for s in sig.outputs)
    names = [t.name for t in (*inputs, *outputs)]
    if len(set(names)) != len(names):
        raise CorruptArtifact(f"ONNX tensor names repeat ({names}); Triton needs distinct names")
    return inputs, outputs


def tensor_name_problem(name: Any) -> str | None:
    """None when `name` can be a tensor name in a Triton config (a protobuf string: any text, with `"`
    and backslash escaped by `pbtxt_string`); else why not. A control character (a line break, a tab,
    a NUL) or a lone surrogate is refused: Triton's C API passes names as C strings, its config and
    logs are UTF-8 lines."""
    if not isinstance(name, str) or not name:
        return "an empty name"
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        return f"it holds {bad!r}; rename that column in the data and train again"
    return None


def pbtxt_string(text: str) -> str:
    """`text` as a protobuf text-format string literal: in double quotes, backslash and `"` escaped,
    everything else as is (UTF-8; control characters are refused before, by `tensor_name_problem`)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def arch_tensors(arch: Arch) -> Tensors:
    """What the model description says Triton serves: input `x` (batch, n_inputs) FP32, or, for a model
    whose graph takes one input per raw column, one (batch, 1) input per column named as the column,
    TYPE_FP32 for numbers and TYPE_STRING for text, booleans and dates; and the head's output (batch,
    n_outputs) FP32; a multiclass output names its label file."""
    labels = LABELS if arch.task == "multiclass" else None
    enc = arch.encoding
    if enc is not None and arch.per_column:
        inputs = tuple(
            TritonTensor(c.name, "TYPE_STRING" if c.dtype == STRING else "TYPE_FP32", (1,)) for c in enc.columns
        )
    else:
        inputs = (TritonTensor(INPUT_NAME, "TYPE_FP32", (arch.n_inputs,)),)
    return inputs, (TritonTensor(arch.output_name, "TYPE_FP32", (arch.n_outputs,), labels),)


def string_notes(arch: Arch, onnx_model: Any) -> tuple[str, ...]:
    """What a config says about a model with string inputs beyond its fields: where its string nodes
    run when Triton gives it a GPU (onnxruntime's CUDA provider has no kernels for strings: the nodes
    that take or make them run on its CPU provider inside the same session). Empty for other models."""
    if not arch.per_column:
        return ()
    from ..graph.encoding_graph import nodes_on_strings

    count, ops = nodes_on_strings(onnx_model)
    if not count:
        return ()
    return (
        "inputs: one per raw column, [batch, 1]: TYPE_FP32 numbers (NaN: missing), TYPE_STRING text, booleans and "
        'dates (UTF-8; "" or a value never seen in training: missing or unknown)',
        f"on a GPU instance onnxruntime runs the {count} nodes that take or make strings ({', '.join(ops)}) on its "
        "CPU provider, in the same session (it has no CUDA kernels for strings); the network runs on CUDA",
    )


def model_tensors(arch: Arch, onnx_model: Any) -> Tensors:
    """The config's tensors: the Arch's, after checking that the ONNX graph has exactly those inputs
    (in order) and that first output (names, types, dims), as Triton would when it loads the model.
    CorruptArtifact naming both when they differ."""
    want_in, want_out = arch_tensors(arch)
    got_in, got_out = triton_tensors(onnx_model)

    def show(ts: tuple[TritonTensor, ...]) -> str:
        return ", ".join(f"{t.name} {t.data_type}{list(t.dims)}" for t in ts)[:300]

    plain = [(t.name, t.data_type, t.dims) for t in (*got_in, got_out[0])]
    if plain != [(t.name, t.data_type, t.dims) for t in (*want_in, *want_out)]:
        raise CorruptArtifact(
            f"the ONNX graph has input {show(got_in)} and output {show(got_out[:1])}; its model description "
            f"({arch.name}, {arch.task}) says input {show(want_in)} and output {show(want_out)}"
        )
    return want_in, want_out


def _format_tensor(t: TritonTensor) -> str:
    label = f'\n    label_filename: "{t.label_filename}"' if t.label_filename else ""
    dims = ", ".join(map(str, t.dims))
    return f"  {{\n    name: {pbtxt_string(t.name)}\n    data_type: {t.data_type}\n    dims: [ {dims} ]{label}\n  }}"


def config_pbtxt(
    name: str,
    tensors: Tensors,
    max_batch_size: int,
    instance_kind: str,
    instances: int,
    *,
    version: int,
    model: str | None = None,
    notes: tuple[str, ...] = (),
) -> str:
    """Triton's config for the model: its tensors (`model_tensors`: the Arch's, checked against the
    ONNX graph); Triton serves exactly `version` (so shipping an older version again rolls back to it).
    `model`: the name of the model (our artifacts folder) the folder serves, recorded as the parameter
    MODEL_PARAMETER, so that another model is never shipped into it (`ship_version`). `notes`: comment
    lines at the top (`string_notes`: what the fields cannot say)."""
    inputs, outputs = (",\n".join(map(_format_tensor, specs)) for specs in tensors)
    owner = f'parameters {{\n  key: "{MODEL_PARAMETER}"\n  value {{ string_value: "{model}" }}\n}}\n' if model else ""
    comments = "".join(f"# {' '.join(n.split())}\n" for n in notes)
    return (
        f"{comments}"
        f'name: "{name}"\n'
        f'platform: "{PLATFORM}"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {QUEUE_DELAY_US}\n}}\n"
        # KIND_AUTO: GPU where Triton sees one, else CPU. `--instance-kind cpu` pins the CPU.
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {INSTANCE_KINDS[instance_kind]}\n  }}\n]\n"
        f"version_policy: {{ specific {{ versions: [ {version} ] }} }}\n"
        f"{owner}"
    )


def _tensor_fields(name: str, data_type: str, dims: list[int], label_filename: str | None) -> dict[str, list[Any]]:
    fields: dict[str, list[Any]] = {"name": [name], "data_type": [data_type], "dims": dims}
    if label_filename:
        fields["label_filename"] = [label_filename]
    return fields


def _expected(
    name: str,
    tensors: Tensors,
    max_batch_size: int,
    instance_kind: str,
    instances: int,
    version: int,
    model: str | None = None,
) -> dict[str, list[Any]]:
    """What the config must say, as the reader below returns it: every field a list of values."""
    inputs, outputs = tensors

    def fields(specs: tuple[TritonTensor, ...]) -> list[Any]:
        return [_tensor_fields(t.name, t.data_type, list(t.dims), t.label_filename) for t in specs]

    owner = {"parameters": [{"key": [MODEL_PARAMETER], "value": [{"string_value": [model]}]}]} if model else {}
    return {
        **owner,
        "name": [name],
        "platform": [PLATFORM],
        "max_batch_size": [max_batch_size],
        "input": fields(inputs),
        "output": fields(outputs),
        "dynamic_batching": [{"max_queue_delay_microseconds": [QUEUE_DELAY_US]}],
        "instance_group": [{"count": [instances], "kind": [INSTANCE_KINDS[instance_kind]]}],
        "version_policy": [{"specific": [{"versions": [version]}]}],
    }


_TOKEN = re.compile(r'\s+|#[^\n]*|(?P<tok>"(?:[^"\\\n]|\\["\\])*"|-?\d+|[A-Za-z_][A-Za-z0-9_]*|[{}\[\]:,])')


def read_pbtxt(text: str) -> dict[str, list[Any]]:
    """A small reader for the protobuf text format this module writes: {field: [values]}, where a
    message is such a dict and `f: [a, b]` means the repeated values a, b (as protobuf reads it).
    ValueError on anything else. It checks the config without tritonclient."""
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"unexpected character {text[pos]!r} at offset {pos}")
        if m.group("tok") is not None:
            tokens.append(m.group("tok"))
        pos = m.end()
    at = 0

    def peek() -> str | None:
        return tokens[at] if at < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal at
        tok = peek()
        if tok is None or (expected is not None and tok != expected):
            raise ValueError(f"expected {expected or 'a token'}, found {tok!r}")
        at += 1
        return tok

    def scalar() -> Any:
        tok = take()
        if tok.startswith('"'):
            return re.sub(r'\\(["\\])', r"\1", tok[1:-1])  # the two escapes `pbtxt_string` writes
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tok):
            return tok  # an enum value
        raise ValueError(f"expected a value, found {tok!r}")

    def value() -> Any:
        if peek() == "{":
            take("{")
            msg = message("}")
            take("}")
            return msg
        return scalar()

    def message(end: str | None) -> dict[str, list[Any]]:
        fields: dict[str, list[Any]] = {}
        while peek() != end:
            key = take()
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"expected a field name, found {key!r}")
            values = fields.setdefault(key, [])
            if peek() == ":":
                take(":")
            elif peek() not in ("{", "["):
                raise ValueError(f"expected ':' after {key}, found {peek()!r}")
            if peek() == "[":
                take("[")
                while peek() != "]":
                    values.append(value())
                    if peek() != "]":
                        take(",")
                take("]")
            else:
                values.append(value())
        return fields

    return message(None)


def _triton_schema() -> ModuleType | None:
    """Triton's model-config protobuf module, when tritonclient is installed."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return None
    return model_config_pb2


def _from_triton_proto(cfg: Any, pb: ModuleType) -> dict[str, list[Any]]:
    """The fields `_expected` describes, read from Triton's parsed ModelConfig."""

    def tensors(items: Any) -> list[Any]:
        return [
            _tensor_fields(
                t.name, pb.DataType.Name(t.data_type), list(t.dims), getattr(t, "label_filename", None) or None
            )
            for t in items
        ]

    policy: list[Any] = []
    if cfg.HasField("version_policy"):
        which = cfg.version_policy.WhichOneof("policy_choice")
        policy = [{which: [{"versions": list(cfg.version_policy.specific.versions)}] if which == "specific" else []}]
    return {
        "name": [cfg.name],
        "platform": [cfg.platform],
        "max_batch_size": [cfg.max_batch_size],
        "input": tensors(cfg.input),
        "output": tensors(cfg.output),
        "dynamic_batching": (
            [{"max_queue_delay_microseconds": [cfg.dynamic_batching.max_queue_delay_microseconds]}]
            if cfg.HasField("dynamic_batching")
            else []
        ),
        "instance_group": [
            {"count": [g.count], "kind": [pb.ModelInstanceGroup.Kind.Name(g.kind)]} for g in cfg.instance_group
        ],
        "version_policy": policy,
        **(
            {
                "parameters": [
                    {"key": [k], "value": [{"string_value": [v.string_value]}]}
                    for k, v in sorted(cfg.parameters.items())
                ]
            }
            if cfg.parameters
            else {}
        ),
    }


def _first_difference(got: dict[str, list[Any]], want: dict[str, list[Any]]) -> str | None:
    for key in sorted(set(got) | set(want)):
        if got.get(key) != want.get(key):
            return f"{key} is {str(got.get(key, 'absent'))[:200]}, expected {str(want.get(key, 'absent'))[:200]}"
    return None


def check_config(
    text: str,
    name: str,
    tensors: Tensors,
    max_batch_size: int,
    instance_kind: str,
    instances: int,
    version: int,
    model: str | None = None,
) -> None:
    """The config says exactly what the model's tensors and the options say, and Triton can read it.
    Read back with this module's reader (always) and Triton's schema (when tritonclient is
    installed). CorruptArtifact on any difference: the options were validated before, so what is
    left to blame is the model."""
    want = _expected(name, tensors, max_batch_size, instance_kind, instances, version, model)
    for field, value, top in (
        ("max_batch_size", max_batch_size, MAX_BATCH_SIZE),
        ("instance_group.count", instances, MAX_INSTANCES),
        ("version", version, MAX_VERSION),
    ):
        if not 1 <= value <= top:  # ship_version checked its options already: this guards other callers
            raise CorruptArtifact(f"Triton config for {name}: {field} {value} is not in 1..{top}")
    for tensor in (*want["input"], *want["output"]):
        if not tensor["dims"] or any(d != -1 and not 1 <= d <= 2**63 - 1 for d in tensor["dims"]):
            raise CorruptArtifact(f"Triton config for {name}: tensor {tensor['name'][0]} has dims {tensor['dims']}")
    _check_own_reading(text, name, want)
    _check_triton_reading(text, name, want)


def _check_own_reading(text: str, name: str, want: dict[str, list[Any]]) -> None:
    try:
        ours = read_pbtxt(text)
    except ValueError as exc:
        raise CorruptArtifact(f"the Triton config generated for {name} does not read back: {exc}") from None
    problem = _first_difference(ours, want)
    if problem:
        raise CorruptArtifact(f"the Triton config generated for {name} does not match its ONNX file: {problem}")


def _check_triton_reading(text: str, name: str, want: dict[str, list[Any]]) -> None:
    pb = _triton_schema()
    if pb is None:
        return  # the base install: `_check_own_reading` is the check
    from google.protobuf import text_format

    try:
        cfg = text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as exc:
        raise CorruptArtifact(f"the Triton config generated for {name} fails Triton's schema: {exc}") from None
    problem = _first_difference(_from_triton_proto(cfg, pb), want)
    if problem:
        raise CorruptArtifact(f"the Triton config generated for {name}, as Triton reads it: {problem}")


# ---------------------------------------------------------------------------------------------
# Checks before anything is written


def _check_options(number: int, max_batch_size: int, instance_kind: str, instances: int) -> None:
    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not whole(number) or not 1 <= number <= MAX_VERSION:
        raise UsageError(f"version {number!r} is not a version number (1 to {MAX_VERSION})")
    if not whole(max_batch_size) or not 1 <= max_batch_size <= MAX_BATCH_SIZE:
        raise UsageError(f"--max-batch-size {max_batch_size!r} is out of range: 1 to {MAX_BATCH_SIZE} (Triton's int32)")
    if not whole(instances) or not 1 <= instances <= MAX_INSTANCES:
        raise UsageError(f"--instances {instances!r} is out of range: 1 to {MAX_INSTANCES}")
    if instance_kind not in INSTANCE_KINDS:
        raise UsageError(f"unknown instance kind {instance_kind!r}: choose one of {', '.join(INSTANCE_KINDS)}")


def _check_files(name: str, number: int, files: Mapping[str, bytes]) -> tuple[Manifest, Arch, Any]:
    """The version's manifest (its model name, number, verify record and hashes agree with the
    bytes given), the network it describes (its `model` section; a built-in for older manifests)
    and its parsed ONNX model (that network's signature)."""
    missing = [n for n in REQUIRED_FILES if n not in files]
    if missing:
        raise MissingArtifact(f"version {number} of {name} has no {', '.join(missing)}: nothing to ship")
    where = f"version {number} of {name}"
    manifest = Manifest.from_json(files[A.MANIFEST], f"{where}: {A.MANIFEST}")
    if manifest.name != name:
        raise CorruptArtifact(f"{where}: its manifest describes arch {manifest.name!r}, not {name!r}")
    if manifest.version is not None and manifest.version != number:
        raise IntegrityError(f"{where}: its manifest says it is version {manifest.version}")
    if manifest.verify is None or not manifest.verify.passed:
        raise MissingArtifact(f"{where} has no passing verify record (ship takes verified models only)")
    for file in SHIPPED_FILES:
        if file not in files or file in (A.MANIFEST, A.SEAL):
            continue
        entry = manifest.file(file)
        if entry is None:
            raise IntegrityError(f"{where}: {file} is not recorded in its manifest, so nothing vouches for it")
        actual = hashlib.sha256(files[file]).hexdigest()
        if actual != entry.sha256:
            raise IntegrityError(f"{where}: {file} has sha256 {actual}, its manifest says {entry.sha256}")
    arch = A.arch_of(manifest, f"{where}: {A.MANIFEST}")
    model = parse_checked(files[A.ONNX], f"{where}: {A.ONNX}")
    check_served(model, f"{where}: {A.ONNX}", arch.n_inputs, arch.n_outputs, arch)
    _check_metadata(model, arch, f"{where}: {A.ONNX}")
    return manifest, arch, model


def _check_metadata(model: Any, arch: Arch, where: str) -> None:
    """What the ONNX file says about itself (xorship.* metadata_props, when it has them) must be what
    its manifest says: the labels Triton will answer with are the classes the file was trained on."""
    meta = read_metadata(model)
    told: dict[str, Any] = {
        "task": arch.task,
        "output": arch.output_name,
        "features": list(arch.features),
        "classes": list(arch.classes),
    }
    for key, want in told.items():
        if key not in meta:
            continue
        got: Any = meta[key]
        if isinstance(want, list):
            try:
                got = json.loads(got)
            except (ValueError, RecursionError):
                raise CorruptArtifact(f"{where}: its metadata xorship.{key} is not valid JSON") from None
        same = got == want and (not isinstance(got, list) or [type(v) for v in got] == [type(v) for v in want])
        if not same:
            raise CorruptArtifact(
                f"{where} says its {key} is {str(got)[:120]}, its manifest says {str(want)[:120]}; refusing to ship it"
            )


def _one_line(text: str) -> bool:
    """`text` is one line of a UTF-8 text file for every reader: no line break of any kind (Triton
    splits on \\n; Python and editors on \\r, \\v, \\f, \\x1c-\\x1e, \\x85, \\u2028/9 too), no NUL,
    no lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\0" not in text and len(f"<{text}>".splitlines()) == 1


def labels_txt(arch: Arch) -> bytes | None:
    """Triton's label file for a multiclass model: one class name per line, in output order (the
    order of `Arch.classes`, which is the order of the output's columns); None for other tasks.
    UsageError for class names that cannot be written one per line, or that repeat as text."""
    if arch.task != "multiclass":
        return None
    names = [class_label(c) for c in arch.classes]
    for label in names:
        if not _one_line(label):
            raise UsageError(
                f"{arch.name}: class {label[:60]!r} cannot be one line of Triton's {LABELS} (it holds a line break, "
                "a NUL or text that is not Unicode); rename that class in the data and train again"
            )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(
            f"{arch.name}: classes {repeated[:5]} are written the same in {LABELS} (values of different types); "
            "make the target's classes distinct as text and train again"
        )
    return "".join(f"{n}\n" for n in names).encode("utf-8")


def _refuse_unless(path: Path, allowed: tuple[str | None, ...]) -> str | None:
    kind = A.kind(path)
    if kind not in allowed:
        what = {"link": "a symbolic link", "dir": "a folder", "file": "a file", "other": "not a regular file or folder"}
        raise IntegrityError(
            f"{path} is {what[kind or 'other']}; ship refuses to follow or replace it (remove it, or ship to another --out)"
        )
    return kind


# ---------------------------------------------------------------------------------------------
# Writing


def _build_version(model_dir: Path, number: int, files: Mapping[str, bytes]) -> Path:
    """Version folder `number` with the shipped files, whole or absent (`artifacts.build_folder`)."""
    final = model_dir / str(number)
    A.build_folder(final, {name: files[name] for name in SHIPPED_FILES if name in files})
    return final


def _same_version(version_dir: Path, files: Mapping[str, bytes], number: int, name: str) -> None:
    """Version folder `version_dir` (already there) must hold exactly the files given: each shipped
    file present or absent alike, with the same sha256. IntegrityError naming the first difference."""
    if _refuse_unless(version_dir / A.ONNX, ("file", None)) is None:
        raise IntegrityError(f"{version_dir} exists without {A.ONNX}; refusing to replace it")
    for file in SHIPPED_FILES:
        present = A.read_regular(version_dir / file) if _refuse_unless(version_dir / file, ("file", None)) else None
        given = files.get(file)
        if present == given or (file == A.SEAL and present is None):  # shipped before versions were sealed
            continue
        there = hashlib.sha256(present).hexdigest() if present is not None else "absent"
        here = hashlib.sha256(given).hexdigest() if given is not None else "absent"
        raise IntegrityError(
            f"{version_dir} already holds a different model: {file} sha256 {there} there, {here} in version "
            f"{number} of {name}; a shipped version is never overwritten"
        )


_OWNER = re.compile(r'key\s*:\s*"' + MODEL_PARAMETER + r'"\s*value\s*\{\s*string_value\s*:\s*"([^"\\\n]*)"')


def _check_owner(model_dir: Path, config: bytes | None, model: str, number: int) -> None:
    """A Triton model folder serves one model: every version folder in it must hold a manifest of
    `model` (what identifies a model is its name, our artifacts folder; a new contract under the same
    name is a new version), and the config must have been written by `ship` for `model` (its
    MODEL_PARAMETER; a config of an older release, which has none, is accepted beside versions of
    `model`). IntegrityError (exit 6) naming both models otherwise: shipping an iris model into the
    folder of `xor_shallow` would make Triton answer `xor_shallow` requests with iris. Version `number`
    itself is compared file by file afterwards (`_same_version`)."""
    ours = 0
    fix = (
        f"ship it to another --out, or give {model} another serving_name"
        if model not in BUILTIN_NAMES
        else "ship it to another --out"
    )
    for entry in sorted(model_dir.iterdir(), key=lambda p: p.name):
        if not entry.name.isdigit():
            continue
        where = f"{model_dir} version {entry.name}"
        if A.kind(entry) != "dir":
            raise IntegrityError(
                f"{where} is {'a symbolic link' if A.kind(entry) == 'link' else 'not a folder'}; ship refuses to "
                f"follow or replace it: {fix}"
            )
        if entry.name == str(number):
            owner = None
            with contextlib.suppress(CorruptArtifact, IntegrityError, OSError):
                owner = Manifest.from_json(A.read_regular(entry / A.MANIFEST), where).name
            if owner is not None and owner != model:
                raise IntegrityError(
                    f"{model_dir} serves model {owner!r} (version {entry.name}), not {model!r}; a Triton model "
                    f"folder serves one model: {fix}"
                )
            ours += owner == model
            continue
        if A.kind(entry / A.MANIFEST) != "file":
            raise IntegrityError(
                f"{where} was not shipped by xorship (it has no {A.MANIFEST}); a Triton model folder serves one "
                f"model: {fix}"
            )
        try:
            owner = Manifest.from_json(A.read_regular(entry / A.MANIFEST), where).name
        except CorruptArtifact as exc:
            raise IntegrityError(f"{where} cannot be identified ({exc}); refusing to ship {model} beside it") from None
        if owner != model:
            raise IntegrityError(
                f"{model_dir} serves model {owner!r} (version {entry.name}), not {model!r}; a Triton model folder "
                f"serves one model: {fix}"
            )
        ours += 1
    if config is None:
        return
    found = _OWNER.search(config.decode("utf-8", errors="replace"))
    if found is None and not ours:
        raise IntegrityError(
            f"{model_dir / CONFIG} was not written by ship (no {MODEL_PARAMETER} parameter) and no version there is "
            f"{model!r}'s; refusing to replace it: remove it, or ship to another --out"
        )
    if found is not None and found.group(1) != model:
        raise IntegrityError(
            f"{model_dir / CONFIG} serves model {found.group(1)!r}, not {model!r}; a Triton model folder serves one "
            f"model: {fix}"
        )


def _write_checked(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, then read it back (not through a link) and compare."""
    A.write_atomic(path, data)
    if hashlib.sha256(A.read_regular(path)).digest() != hashlib.sha256(data).digest():
        raise ArtifactWriteError(f"{path} does not read back with the sha256 of what was written")


def ship_version(
    arch: Arch | str,
    number: int,
    files: Mapping[str, bytes],
    out: Path,
    *,
    max_batch_size: int = 1024,
    instance_kind: str = "auto",
    instances: int = 1,
) -> ShipResult:
    """Ship version `number` of model `arch` (its files' bytes: model.onnx, manifest.json,
    verify.json and optionally MODEL_CARD.md) as Triton version `number` in repository `out`, and pin
    the config to it. Only `arch`'s name is used: the network (tensors, classes, serving name) is
    the one the version's own manifest describes. See the module docstring for what is guaranteed."""
    # 1. Everything that can be checked without writing: options, files, the config, the labels.
    _check_options(number, max_batch_size, instance_kind, instances)
    _, model, onnx_model = _check_files(arch if isinstance(arch, str) else arch.name, number, files)
    if A.SEAL in files and files[A.SEAL] != A.seal_of(files[A.MANIFEST]):
        # the caller vouches for the manifest it gives (`flow.ship_models` read it against its seal);
        # a seal of other bytes is not shipped beside it (predict --model would refuse the copy)
        files = {k: v for k, v in files.items() if k != A.SEAL}
    name = model.serving_name
    if not _NAME.fullmatch(name):
        raise CorruptArtifact(
            f"version {number} of {model.name}: serving name {name[:60]!r} cannot be a Triton model folder"
        )
    tensors = model_tensors(model, onnx_model)
    notes = string_notes(model, onnx_model)
    config = config_pbtxt(
        name, tensors, max_batch_size, instance_kind, instances, version=number, model=model.name, notes=notes
    ).encode()
    check_config(config.decode(), name, tensors, max_batch_size, instance_kind, instances, number, model.name)
    labels = labels_txt(model)

    out = Path(out)
    model_dir = out / name
    version_dir = model_dir / str(number)
    config_path = model_dir / CONFIG
    labels_path = model_dir / LABELS
    A.check_output_folder(out, "--out")
    with A.run_lock(out, remove=True):  # no lock file is left in the repository Triton serves
        # 2. What is there, checked before anything is touched: real folders and files only, and
        #    version N only if it holds these very files.
        model_kind = _refuse_unless(model_dir, (None, "dir"))
        noop = False
        old_config = old_labels = None
        if model_kind is not None:
            if _refuse_unless(config_path, (None, "file")):
                old_config = A.read_regular(config_path)
            _check_owner(model_dir, old_config, model.name, number)  # one folder, one model
            if _refuse_unless(labels_path, (None, "file")):
                old_labels = A.read_regular(labels_path)
            if _refuse_unless(version_dir, (None, "dir")) is not None:
                _same_version(version_dir, files, number, model.name)
                noop = True
            A.clean_stale_temporaries(model_dir)  # what a killed ship left

        # 3. Write: the version folder, then the labels, then the config (each only when it changes);
        #    undo what this call made or changed if any step fails.
        written: list[str] = []
        created_model_dir = created_version = False
        try:
            if model_kind is None:
                try:
                    os.mkdir(model_dir)
                except OSError as exc:
                    raise A.write_error(model_dir, exc) from None
                created_model_dir = True
            if not noop:
                _build_version(model_dir, number, files)
                created_version = True
                written.append(f"{name}/{number}")
            if labels is not None and labels != old_labels:
                _write_checked(labels_path, labels)
                written.append(f"{name}/{LABELS}")
            if config != old_config:
                _write_checked(config_path, config)
                written.append(f"{name}/{CONFIG}")
        except BaseException:
            if f"{name}/{LABELS}" in written:  # the config still names the old labels: put them back
                with contextlib.suppress(OSError, ArtifactWriteError):
                    if old_labels is None:
                        labels_path.unlink()
                    else:
                        A.write_atomic(labels_path, old_labels)
            if created_version:
                A.remove_folder(version_dir)
            if created_model_dir:
                with contextlib.suppress(OSError):
                    model_dir.rmdir()  # empty again: the steps above remove their own temporaries
            raise
        if labels is None and old_labels is not None:  # the config no longer names a label file
            with contextlib.suppress(OSError):
                labels_path.unlink()
                written.append(f"{name}/{LABELS} (removed)")
    return ShipResult(
        name,
        number,
        config_path,
        version_dir / A.ONNX,
        noop,
        out,
        labels_path if labels is not None else None,
        tuple(written),
        notes,
    )
