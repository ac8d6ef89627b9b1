"""`ship`: one published version of a model into an NVIDIA Triton model repository.

    <out>/<serving_name>/config.pbtxt          pins the version shipped last: specific { versions: [N] }
    <out>/<serving_name>/<N>/model.onnx        Triton version N = our version N, byte for byte
    <out>/<serving_name>/<N>/manifest.json     so `predict --model <out>/<name>/<N>/model.onnx` can check
    <out>/<serving_name>/<N>/verify.json       the copy against the manifest and report beside it
    <out>/<serving_name>/<N>/MODEL_CARD.md     when the version has one
    <out>/.lock                                held for the whole ship (a second ship gets FolderLocked)

`ship_version` takes the version's bytes (the caller has read and hash-checked them) and:

- validates the options and the files, derives the config from the ONNX graph (names, data types,
  dims; the batch dimension is Triton's `max_batch_size`) and checks that config before anything
  is written: always with this module's own reader of the text it generates (so a base install
  refuses a bad config too), and also with Triton's model-config protobuf schema
  (`tritonclient.grpc.model_config_pb2`) when tritonclient is installed;
- never overwrites a version folder: version N already there with the same model.onnx is a no-op
  (only the config is rewritten, so shipping an older N again is how a rollback is served); with a
  different model.onnx it is an IntegrityError naming both hashes;
- builds a new version folder under a temporary name, fsyncs it, re-checks every copy's sha256,
  renames it into place, then writes the config atomically; if anything fails, what this call
  created is removed again;
- follows no symbolic link inside the repository: `<out>/<serving_name>`, its version folder, the
  version's model.onnx and config.pbtxt must be a real folder / regular file (`<out>` itself may be
  a link).

Tested against Triton's schema, not a live server: none can run here.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from . import artifacts as A
from .archs import Arch
from .contract import check_served, parse_checked, signature
from .errors import ArtifactWriteError, CorruptArtifact, IntegrityError, MissingArtifact, UsageError
from .manifest import Manifest

INSTANCE_KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32"}

CONFIG = "config.pbtxt"
PLATFORM = "onnxruntime_onnx"
QUEUE_DELAY_US = 100
MAX_BATCH_SIZE = 2**31 - 1  # Triton's ModelConfig.max_batch_size is an int32
MAX_INSTANCES = 1024  # ModelInstanceGroup.count is an int32; more than this is a typo, not a plan
MAX_VERSION = 2**63 - 1  # Triton's version numbers are int64
REQUIRED_FILES = (A.ONNX, A.MANIFEST, A.VERIFY)
# What a Triton version folder holds; other entries of `files` (weights, loss curve) are not shipped.
SHIPPED_FILES = (*REQUIRED_FILES, A.CARD)
# A model or tensor name that needs no quoting and is one path component.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ShipResult:
    model_name: str
    version: int
    config_path: Path
    model_path: Path
    noop: bool  # the version folder was already there with this model.onnx: only the config was written
    repository: Path  # `out`, the Triton model repository


# ---------------------------------------------------------------------------------------------
# The config


@dataclass(frozen=True)
class TritonTensor:
    name: str
    data_type: str  # Triton's, e.g. TYPE_FP32
    dims: tuple[int, ...]  # without the batch dimension; -1 for a variable one


def triton_tensors(onnx_model: Any) -> tuple[tuple[TritonTensor, ...], tuple[TritonTensor, ...]]:
    """(inputs, outputs) of the ONNX graph as Triton sees them with batching on: the first dim of
    every tensor is the batch (symbolic), the others fixed or -1. CorruptArtifact when the graph's
    signature cannot be expressed that way."""
    sig = signature(onnx_model)
    if not sig.inputs or not sig.outputs:
        raise CorruptArtifact(
            f"the ONNX graph has {len(sig.inputs)} inputs and {len(sig.outputs)} outputs; Triton needs at least one of each"
        )

    def convert(spec: Any, kind: str) -> TritonTensor:
        if not isinstance(spec.name, str) or not _NAME.fullmatch(spec.name):
            raise CorruptArtifact(f"ONNX {kind} name {str(spec.name)[:60]!r} cannot be written in a Triton config")
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


def config_pbtxt(
    name: str, onnx_model: Any, max_batch_size: int, instance_kind: str, instances: int, *, version: int
) -> str:
    """Triton's config for the model: names, data types and dims read from the ONNX graph itself;
    Triton serves exactly `version` (so shipping an older version again rolls back to it)."""
    inputs, outputs = triton_tensors(onnx_model)

    def tensors(specs: tuple[TritonTensor, ...]) -> str:
        return ",\n".join(
            f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n    dims: [ {", ".join(map(str, t.dims))} ]\n  }}'
            for t in specs
        )

    return (
        f'name: "{name}"\n'
        f'platform: "{PLATFORM}"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{tensors(inputs)}\n]\n"
        f"output [\n{tensors(outputs)}\n]\n"
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {QUEUE_DELAY_US}\n}}\n"
        # KIND_AUTO: GPU where Triton sees one, else CPU. `--instance-kind cpu` pins the CPU.
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {INSTANCE_KINDS[instance_kind]}\n  }}\n]\n"
        f"version_policy: {{ specific {{ versions: [ {version} ] }} }}\n"
    )


def _expected(
    name: str, onnx_model: Any, max_batch_size: int, instance_kind: str, instances: int, version: int
) -> dict[str, list[Any]]:
    """What the config must say, as the reader below returns it: every field a list of values."""
    inputs, outputs = triton_tensors(onnx_model)

    def tensors(specs: tuple[TritonTensor, ...]) -> list[Any]:
        return [{"name": [t.name], "data_type": [t.data_type], "dims": list(t.dims)} for t in specs]

    return {
        "name": [name],
        "platform": [PLATFORM],
        "max_batch_size": [max_batch_size],
        "input": tensors(inputs),
        "output": tensors(outputs),
        "dynamic_batching": [{"max_queue_delay_microseconds": [QUEUE_DELAY_US]}],
        "instance_group": [{"count": [instances], "kind": [INSTANCE_KINDS[instance_kind]]}],
        "version_policy": [{"specific": [{"versions": [version]}]}],
    }


_TOKEN = re.compile(r'\s+|#[^\n]*|(?P<tok>"[^"\\\n]*"|-?\d+|[A-Za-z_][A-Za-z0-9_]*|[{}\[\]:,])')


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
            return tok[1:-1]
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
        return [{"name": [t.name], "data_type": [pb.DataType.Name(t.data_type)], "dims": list(t.dims)} for t in items]

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
    }


def _first_difference(got: dict[str, list[Any]], want: dict[str, list[Any]]) -> str | None:
    for key in sorted(set(got) | set(want)):
        if got.get(key) != want.get(key):
            return f"{key} is {str(got.get(key, 'absent'))[:200]}, expected {str(want.get(key, 'absent'))[:200]}"
    return None


def check_config(
    text: str, name: str, onnx_model: Any, max_batch_size: int, instance_kind: str, instances: int, version: int
) -> None:
    """The config says exactly what the ONNX graph and the options say, and Triton can read it.
    Read back with this module's reader (always) and Triton's schema (when tritonclient is
    installed). CorruptArtifact on any difference: the options were validated before, so what is
    left to blame is the ONNX file."""
    want = _expected(name, onnx_model, max_batch_size, instance_kind, instances, version)
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


def _check_files(arch: Arch, number: int, files: Mapping[str, bytes]) -> tuple[Manifest, Any]:
    """The version's manifest (its arch, number, verify record and hashes agree with the bytes
    given) and its parsed ONNX model (the arch's signature)."""
    missing = [n for n in REQUIRED_FILES if n not in files]
    if missing:
        raise MissingArtifact(f"version {number} of {arch.name} has no {', '.join(missing)}: nothing to ship")
    where = f"version {number} of {arch.name}"
    manifest = Manifest.from_json(files[A.MANIFEST], f"{where}: {A.MANIFEST}")
    if manifest.arch != arch.name:
        raise CorruptArtifact(f"{where}: its manifest describes arch {manifest.arch!r}, not {arch.name!r}")
    if manifest.version is not None and manifest.version != number:
        raise IntegrityError(f"{where}: its manifest says it is version {manifest.version}")
    if manifest.verify is None or not manifest.verify.passed:
        raise MissingArtifact(f"{where} has no passing verify record (ship takes verified models only)")
    for name in SHIPPED_FILES:
        if name not in files or name == A.MANIFEST:
            continue
        entry = manifest.file(name)
        if entry is None:
            raise IntegrityError(f"{where}: {name} is not recorded in its manifest, so nothing vouches for it")
        actual = hashlib.sha256(files[name]).hexdigest()
        if actual != entry.sha256:
            raise IntegrityError(f"{where}: {name} has sha256 {actual}, its manifest says {entry.sha256}")
    model = parse_checked(files[A.ONNX], f"{where}: {A.ONNX}")
    check_served(model, f"{where}: {A.ONNX}", arch.n_inputs, arch.n_outputs)
    return manifest, model


def _kind(path: Path) -> str | None:
    """'dir', 'file', 'link' or 'other' for what is at `path` (not following a link); None if nothing."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise A.write_error(path, exc) from None
    if stat.S_ISLNK(mode):
        return "link"
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _refuse_unless(path: Path, allowed: tuple[str | None, ...]) -> str | None:
    kind = _kind(path)
    if kind not in allowed:
        what = {"link": "a symbolic link", "dir": "a folder", "file": "a file", "other": "not a regular file or folder"}
        raise IntegrityError(
            f"{path} is {what[kind or 'other']}; ship refuses to follow or replace it (remove it, or ship to another --out)"
        )
    return kind


def _read_nofollow(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IntegrityError(f"{path} is a symbolic link; refusing to follow it") from None
        raise CorruptArtifact(f"{path} is not readable ({exc.strerror or exc.__class__.__name__})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise IntegrityError(f"{path} is not a regular file")
        return f.read()


# ---------------------------------------------------------------------------------------------
# Writing


def _write_file(path: Path, data: bytes) -> None:
    """Create `path` (never an existing one, never through a link) with `data`, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _remove_tree(path: Path, parent: Path) -> None:
    """Remove a folder this call created: renamed out of the way first, so no reader (Triton) ever
    sees a half-removed version."""
    doomed = parent / f"{A.TMP_PREFIX}removed-{path.name}.{os.getpid()}"
    with contextlib.suppress(OSError):
        os.rename(path, doomed)
        path = doomed
    shutil.rmtree(path, ignore_errors=True)


def _clean_temporaries(model_dir: Path) -> None:
    """Temporaries a killed ship left (called while holding the lock): version folders being built,
    config files being written. Links are unlinked, never followed."""
    for p in model_dir.iterdir():
        if p.name.startswith(A.TMP_PREFIX):
            if _kind(p) == "dir":
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()


def _build_version(model_dir: Path, number: int, files: Mapping[str, bytes]) -> Path:
    """Version folder `number`, built under a temporary name, each copy fsynced and its sha256
    re-checked, then renamed into place. Whole or absent."""
    final = model_dir / str(number)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{A.TMP_PREFIX}{number}.", dir=model_dir))
    except OSError as exc:
        raise A.write_error(final, exc) from None
    try:
        for name in SHIPPED_FILES:
            if name in files:
                _write_file(tmp / name, files[name])
        for name in SHIPPED_FILES:
            if name in files and A.sha256_file(tmp / name) != hashlib.sha256(files[name]).hexdigest():
                raise ArtifactWriteError(f"the copy of {name} written to {tmp} does not read back with its sha256")
        os.chmod(tmp, 0o777 & ~A._UMASK)  # mkdtemp makes 0700; the server may run as another user
        A.fsync_dir(tmp)
        if _kind(final) is not None:  # checked under the lock already; rename would replace an empty folder
            raise IntegrityError(f"{final} appeared while ship was running; refusing to replace it")
        os.rename(tmp, final)
        A.fsync_dir(model_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise A.write_error(final, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def ship_version(
    arch: Arch,
    number: int,
    files: Mapping[str, bytes],
    out: Path,
    *,
    max_batch_size: int = 1024,
    instance_kind: str = "auto",
    instances: int = 1,
) -> ShipResult:
    """Ship version `number` of `arch` (its files' bytes: model.onnx, manifest.json, verify.json and
    optionally MODEL_CARD.md) as Triton version `number` in repository `out`, and pin the config
    to it. See the module docstring for what is guaranteed."""
    # 1. Everything that can be checked without writing: options, files, the config.
    _check_options(number, max_batch_size, instance_kind, instances)
    name = arch.serving_name
    if not _NAME.fullmatch(name):
        raise UsageError(f"model name {name!r} cannot be a Triton model folder")
    _, onnx_model = _check_files(arch, number, files)
    config = config_pbtxt(name, onnx_model, max_batch_size, instance_kind, instances, version=number)
    check_config(config, name, onnx_model, max_batch_size, instance_kind, instances, number)
    given = hashlib.sha256(files[A.ONNX]).hexdigest()

    out = Path(out)
    model_dir = out / name
    version_dir = model_dir / str(number)
    config_path = model_dir / CONFIG
    with A.run_lock(out):
        # 2. What is there, checked before anything is touched: real folders and files only, and
        #    version N only if it holds this very model.onnx.
        model_kind = _refuse_unless(model_dir, (None, "dir"))
        noop = False
        if model_kind is not None:
            _refuse_unless(config_path, (None, "file"))
            if _refuse_unless(version_dir, (None, "dir")) is not None:
                if _refuse_unless(version_dir / A.ONNX, ("file", None)) is None:
                    raise IntegrityError(f"{version_dir} exists without {A.ONNX}; refusing to replace it")
                present = hashlib.sha256(_read_nofollow(version_dir / A.ONNX)).hexdigest()
                if present != given:
                    raise IntegrityError(
                        f"{version_dir} already holds a different model: sha256 {present} there, {given} in version "
                        f"{number} of {arch.name}; a shipped version is never overwritten"
                    )
                noop = True
            _clean_temporaries(model_dir)
        result = ShipResult(name, number, config_path, version_dir / A.ONNX, noop, out)
        if noop:  # the version is there: only the config, so that it pins this version
            A.write_atomic(config_path, config.encode())
            return result

        # 3. Write: the version folder, then the config; undo what this call made if either fails.
        created_model_dir = created_version = False
        try:
            if model_kind is None:
                try:
                    os.mkdir(model_dir)
                except OSError as exc:
                    raise A.write_error(model_dir, exc) from None
                created_model_dir = True
            _build_version(model_dir, number, files)
            created_version = True
            A.write_atomic(config_path, config.encode())
        except BaseException:
            if created_version:
                _remove_tree(version_dir, model_dir)
            if created_model_dir:
                with contextlib.suppress(OSError):
                    model_dir.rmdir()  # empty again: the steps above remove their own temporaries
            raise
    return result


def model_card(manifest: Manifest, verify_report: dict[str, Any]) -> str:
    cfg, train, val, exp = manifest.config, manifest.train, manifest.validation, manifest.export
    assert cfg is not None and train is not None and val is not None and exp is not None  # a verified model has them
    files = manifest.files
    lines = [
        f"# Model card: {cfg.arch} XOR MLP",
        "",
        "## What it is for",
        "A teaching-sized multilayer perceptron that computes XOR of two inputs near {0, 1}. It is a",
        "demonstration of a verified train-to-ONNX pipeline, not a model for real data.",
        "",
        "## Input and output",
        f"- input `{exp.input.name}`: float32 {list(exp.input.shape)}",
        f"- output `{exp.output.name}`: float32 {list(exp.output.shape)}, the probability that XOR is 1;"
        " label 1 when it is above 0.5",
        f"- ONNX opset {exp.opset}, exporter {exp.exporter}, one self-contained file",
        "",
        "## Training",
        f"- layers {list(cfg.widths)} (Linear + Sigmoid each), {cfg.n_params} parameters",
        f"- {cfg.loss} loss, {cfg.optimizer} lr {cfg.lr}, {cfg.steps} steps, seed {cfg.seed}",
        f"- trained on {train.device} with the {train.trainer} loop in {train.seconds} s",
        "",
        "## Metrics",
        f"- final training loss {train.final_loss:.6g}",
        f"- accuracy on the four XOR points {val.accuracy:.2f} (gate {val.min_accuracy:.2f});"
        f" probabilities {[round(p, 6) for p in val.probabilities]}",
        "",
        "## Equivalence across runtimes",
        f"Reference: {verify_report['reference']}. Verdict: {'PASS' if verify_report['passed'] else 'FAIL'}.",
        "",
        "| runtime | what ran | max abs error | tolerance (atol × input scale, rtol) |",
        "| --- | --- | --- | --- |",
    ]
    for rt, detail in verify_report["ran"].items():
        worst = max((c["max_abs"] for c in verify_report["comparisons"] if c["runtime"] == rt), default=float("nan"))
        tol = verify_report["tolerances"][rt]
        lines.append(f"| {rt} | {detail} | {worst:.2e} | {tol['atol']:.0e}, {tol['rtol']:.0e} |")
    for rt, why in verify_report["skipped"].items():
        lines.append(f"| {rt} | not run: {why} | - | - |")
    lines += [
        "",
        "Input sets: "
        + "; ".join(
            f"{s['name']} ({s['rows']} rows{', seed ' + str(s['seed']) if s['seed'] is not None else ''})"
            for s in verify_report["input_sets"]
        ),
        "",
        "## Hashes (sha256)",
        *[f"- `{name}`: `{entry.sha256}`" for name, entry in files.items()],
        "",
        "## Versions",
        *[f"- {k} {v}" for k, v in (manifest.versions or {}).items()],
        "",
        "## Known limits",
        "- Tiny model trained on four points: it knows XOR and nothing else; outputs for inputs far",
        "  from {0, 1} are extrapolation (verified for agreement between runtimes, not for meaning).",
        "- CUDA figures appear only where a GPU was present when `verify` ran.",
    ]
    return "\n".join(lines) + "\n"
