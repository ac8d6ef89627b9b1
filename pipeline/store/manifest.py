"""The manifest, typed: what a model folder holds, how it was made and what it passed.

Every section is a frozen dataclass. `Manifest.from_json` checks the whole document against these
types (a wrong type, a missing field, absurd nesting, an unknown schema) and raises CorruptArtifact
with one line: a malformed manifest is exit 5, never an internal error.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from ..errors import CorruptArtifact

SCHEMA = 5
# 1: the layout before versions (files directly in <root>/<name>/); 3: + model, recipe, data;
# 4: + `sealed`: a version's manifest has its sha256 in manifest.sha256 beside it (`artifacts.read_manifest`);
# 5: + the encoding (model.encoding, data.encoding: categories, fill values, indicators) and export.inputs
READABLE_SCHEMAS = (1, 2, 3, 4, 5)
T = TypeVar("T")


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ConfigRecord:
    """How the model was trained (the training configuration, after defaults)."""

    name: str = field(metadata={"key": "arch"})  # the model's name (on disk: "arch", as schema 1 wrote it)
    widths: tuple[int, ...]
    n_params: int
    steps: int
    lr: float
    seed: int
    loss: str
    optimizer: str
    tutorial_init: bool
    log_every: int
    batch_size: int = 0  # 0: full batch


@dataclass(frozen=True)
class TrainRecord:
    device: str
    trainer: str
    seconds: float
    final_loss: float
    loss_log: tuple[tuple[int, float], ...]  # (step, loss) at every log step and the last


@dataclass(frozen=True)
class ValidationRecord:
    probabilities: tuple[float, ...]  # per validation row, when there are at most MAX_SHOWN of them
    labels: tuple[Any, ...]
    accuracy: float | None  # classification
    min_accuracy: float | None
    passed: bool
    rmse: float | None = None  # regression, in the target's units
    r2: float | None = None
    max_rmse: float | None = None
    rows: int | None = None  # validation rows
    on: str | None = None  # "validation rows" or "training rows" (validation_fraction 0)


@dataclass(frozen=True)
class TensorRecord:
    name: str
    shape: tuple[str | int, ...]
    dtype: str


@dataclass(frozen=True)
class ExportRecord:
    exporter: str
    opset: int
    input: TensorRecord
    output: TensorRecord
    seconds: float
    inputs: tuple[TensorRecord, ...] = ()  # every graph input where the graph takes one per column


@dataclass(frozen=True)
class ProvidersRecord:
    requested: str
    used: tuple[str, ...]
    cuda_note: str | None
    placement: str | None = None  # where onnxruntime ran the nodes, when not all on one provider (strings on CPU)


@dataclass(frozen=True)
class ServeCheckRecord:
    passed: bool
    providers: ProvidersRecord
    reference: str
    tolerance: dict[str, dict[str, Any]]
    max_abs_diff: float | None
    max_rel_diff: float | None
    input_sets: tuple[dict[str, Any], ...]
    failures: tuple[str, ...]


@dataclass(frozen=True)
class VerifyRecord:
    passed: bool
    runtimes: dict[str, str]
    skipped: dict[str, str]
    max_abs_vs_oracle: dict[str, float | None]  # None: not finite (a runtime answered inf or NaN)
    failures: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    name: str = field(metadata={"key": "arch"})  # the model's name, its folder (on disk: "arch")
    schema: int = SCHEMA
    files: dict[str, FileRecord] = field(default_factory=dict)
    versions: dict[str, str] | None = None
    config: ConfigRecord | None = None
    model: dict[str, Any] | None = None  # archs.Arch.record(): rebuilds the network (absent: schema 1/2 built-ins)
    recipe: dict[str, Any] | None = None  # the resolved recipe (after command-line overrides)
    data: dict[str, Any] | None = None  # data.Dataset.record(): source, sha256, rows, split, statistics
    train: TrainRecord | None = None
    validation: ValidationRecord | None = None
    export: ExportRecord | None = None
    serve_check: ServeCheckRecord | None = None
    verify: VerifyRecord | None = None
    updated: str | None = None
    version: int | None = None  # set in a version folder's copy: the version number
    published_at: str | None = None  # when the version was created
    sealed: bool = False  # a version's copy: its sha256 is in manifest.sha256 beside it (schema 4 on)

    # Sections a stage writes, by field name.
    SECTIONS: typing.ClassVar[tuple[str, ...]] = (
        "versions",
        "config",
        "model",
        "recipe",
        "data",
        "train",
        "validation",
        "export",
        "serve_check",
        "verify",
    )

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> Manifest:
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise CorruptArtifact(
                f"{where} is not readable JSON ({exc.__class__.__name__}: {str(exc)[:200]})"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            raise CorruptArtifact(f"{where} is not a manifest of this tool (no 'files' table)")
        if data.get("schema") not in READABLE_SCHEMAS:
            raise CorruptArtifact(
                f"{where} has schema {str(data.get('schema'))[:40]!r}; this tool reads {', '.join(map(str, READABLE_SCHEMAS))}"
            )
        manifest = decode(cls, data, where)
        for name in manifest.files:
            if not _plain_name(name):
                raise CorruptArtifact(f"{where}: file name {name[:60]!r} is not a plain file name in its folder")
        return manifest

    def to_json(self) -> bytes:
        from .jsonout import dumps_bytes

        return dumps_bytes(encode(self))  # strict JSON: a non-finite figure is null, and said so

    def file(self, name: str) -> FileRecord | None:
        return self.files.get(name)

    def replace(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# A small typed decoder: JSON values checked against dataclass field annotations.


def encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_key(f): encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def _key(f: dataclasses.Field) -> str:
    """A field's key in the JSON document: its name, or the key it kept on disk when it was renamed
    (`field(metadata={"key": ...})`: a model's name is `name` here and `arch` in the file)."""
    return str(f.metadata.get("key", f.name))


def _fail(where: str, path: str, expected: str, value: Any) -> CorruptArtifact:
    shown = json.dumps(value)[:60] if not isinstance(value, (dict, list)) else type(value).__name__
    return CorruptArtifact(f"{where}: {path or 'the document'} should be {expected}, found {shown}")


def decode(tp: Any, value: Any, where: str, path: str = "") -> Any:
    """`value` (parsed JSON) as an instance of `tp`, or CorruptArtifact naming the field."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return decode(arg, value, where, path)
            except CorruptArtifact as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else _fail(where, path, " or ".join(map(_name, args)), value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _fail(where, path, "an object", value)
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if not f.init:
                continue
            key = _key(f)
            sub = f"{path}.{key}" if path else key
            if key in value:
                kwargs[f.name] = decode(hints[f.name], value[key], where, sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise CorruptArtifact(f"{where}: {sub} is missing")
        return typing.cast(Any, tp)(**kwargs)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise _fail(where, path, "a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], v, where, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _fail(where, path, f"a list of {len(args)}", value)
        return tuple(decode(a, v, where, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        key_t, val_t = typing.get_args(tp)
        if not isinstance(value, dict):
            raise _fail(where, path, "an object", value)
        return {k: decode(val_t, v, where, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(where, path, "true or false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(where, path, "an integer", value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, path, "a number", value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(where, path, "a string", value)
        return value
    raise TypeError(f"manifest decoder: unsupported type {tp!r}")  # a bug in this module, not the file


def _plain_name(name: str) -> bool:
    """A file directly in the model's folder: no separators, no `..`, no hidden or odd characters."""
    return 0 < len(name) <= 128 and not name.startswith(".") and all(c.isalnum() or c in "._-" for c in name)


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))
