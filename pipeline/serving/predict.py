"""Torch-free inference on a published (verified) model, through onnxruntime only.

Nothing here (or in what it imports) imports torch: a shipped model must serve without it. A test
runs `predict` in a process where importing torch fails.

What is served: the published version of a model (or `version=N`), or an ONNX file given directly
with the manifest beside it (a `ship`ped copy). Its bytes are read once, hashed, parsed and handed to
onnxruntime: the file that was checked is the file that runs. A model without a passing verify
record (or a file with no manifest beside it) is refused unless `allow_unverified`.

Which network it is (input width and feature names, head, classes) comes from the manifest's `model`
section (`artifacts.arch_of`), so any recipe's model is served, not only the built-ins. A loose file
with no manifest (`allow_unverified`) is described by its own `xorship.*` metadata_props when it has
them (features, task, classes and, for a model that encodes raw columns, `xorship.encoding`), else by its
signature alone (width from the input, a binary head with classes 0 and 1). Where a file has both, its
metadata must agree with its manifest.

Rows reach the model as its graph takes them (`inputs.py`): numbers only for a built-in (a missing value
refused); NaN for a missing number where the model's graph imputes it; one array per column (float32
numbers, text as written) for a model with text, true/false or date columns.

Inputs are streamed (`inputs.py`, on the one table reader `spec.tables`) and predictions written a
batch at a time (`outputs.py`: CSV, Parquet, JSON Lines, the JSON document, or a terminal's table). A
file destination is written to a temporary and renamed into place, so one pass suffices: a bad row
anywhere leaves nothing. A destination that cannot be taken back (stdout, a FIFO, a device) gets a
validating pass over the input first, so a bad row anywhere fails before any output.

Output, per input row (the JSON document's `predictions[i]`, and one table line):
- binary: `probability` (of `classes[-1]`) and `label` (`classes[-1]` when probability > THRESHOLD,
  else `classes[0]`);
- multiclass: `label` (the most probable class; the first of them on a tie) and `probabilities`
  (class -> probability, in class order; JSON keys are `str(class)`);
- regression: `value` (in the target's units); no label.
Labels keep the type the classes have in the data (JSON ints stay ints, strings strings, bools bools).
The table (`outputs.TableWriter`) shows at most six feature columns and, for a multi-class model, the
three most probable classes; data files and `--json` always have every value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..checks.runtimes import ProviderReport, Runner, ort_runner
from ..errors import CorruptArtifact, MissingArtifact, UsageError
from ..graph.contract import check_served, parse_checked, read_metadata, signature
from ..spec.archs import THRESHOLD, Arch, Label
from ..spec.archs import label_indices as _label_rule
from ..spec.encoding import Encoding, Raw, as_columns, raw_len
from ..spec.tables import DEFAULT_MISSING
from ..store import artifacts as A
from ..store.manifest import Manifest
from .inputs import InputSpec, RowSource
from .outputs import JSON as JSON_FORMAT
from .outputs import TABLE as TABLE_FORMAT
from .outputs import OutputHead, make_writer

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

FEATURES = ("x1", "x2")  # the XOR models' input names (a loose file's CSV header is matched to them)


class NonFiniteOutput(UsageError):
    """The model's output for a row is not finite (inf or NaN): the row is beyond what the model can
    compute in float32 (verify checks that its outputs are finite over ten times its data's range).
    The input's problem (exit 2), named by its row within the batch; `serve` answers it with a 400."""

    def __init__(self, row: int, output: str, where: str | None = None):
        place = where or f"row {row + 1} of the batch"
        super().__init__(
            f"{place} gives a non-finite {output} (inf or NaN): its values are beyond "
            "what the model computes in float32; check that row's values and units"
        )
        self.row = row
        self.output = output


def _placed_outputs(predictor: Predictor, source: RowSource, batch: Any) -> np.ndarray:
    """`predictor.outputs` of a batch; a non-finite output is named by the input's file and line (or row)."""
    try:
        return predictor.outputs(batch.x)
    except NonFiniteOutput as exc:
        where = f"{source.name}: {batch.place(exc.row)}" if batch.place is not None else None
        raise NonFiniteOutput(exc.row, exc.output, where) from None


@dataclass(frozen=True)
class ServedModel:
    """The bytes to serve and what vouches for them."""

    where: Path
    data: bytes  # the very bytes that were hashed (when sha256_checked)
    sha256_checked: bool
    verified: bool  # a passing verify record came with it
    arch: Arch | None  # from the manifest, or a loose file's metadata_props (None: a loose file that says nothing)
    version: int | None
    missing: tuple[str, ...] = DEFAULT_MISSING  # the tokens that mean "missing" in its data (its recipe's)

    @property
    def sha256(self) -> str:
        import hashlib

        return hashlib.sha256(self.data).hexdigest()

    @property
    def label(self) -> str:
        if self.arch is None or not self.sha256_checked:
            return str(self.where)
        return f"{self.arch.name} v{self.version}" if self.version else self.arch.name


def _check_name(name: str) -> str:
    from ..spec.recipe import NAME_RE

    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = repr(name)[:70]
        raise UsageError(
            f"model name {shown} must match {NAME_RE.pattern} (lower-case letters, digits, '_', '-'; 64 at most)"
        )
    return name


def resolve_model(
    root: Path,
    name: str | None,
    model: Path | None,
    version: int | None = None,
    allow_unverified: bool = False,
    hint: str | None = None,
) -> ServedModel:
    """The model to serve. `name`: a model's name (a built-in, or a recipe's `name`): its published
    version (or `version`) in `<root>/<name>/`, checked by `store.versions` (every file hashed, the
    manifest against its seal). `model`: an ONNX file, identified by the manifest beside it (its
    content, not its folder's name). The network is the manifest's (`artifacts.arch_of`). `hint`: how
    the command line names the model (`--recipe iris.toml`), for the messages' hints."""
    from ..spec.recipe import selector
    from ..store import versions

    if model is not None:
        if version is not None:
            raise UsageError("--version goes with --arch or --recipe (a --model file is one version already)")
        if not model.is_file():
            raise MissingArtifact(f"{model} does not exist" if not model.exists() else f"{model} is not a file")
        if not (model.parent / A.MANIFEST).exists():
            if not allow_unverified:
                raise UsageError(
                    f"{model} has no manifest.json beside it, so nothing vouches for it: pass --allow-unverified to serve it anyway"
                )
            try:
                data = model.read_bytes()
            except OSError as exc:
                raise CorruptArtifact(f"{model} is not readable ({exc.strerror or exc.__class__.__name__})") from None
            described = _arch_from_metadata(parse_checked(data, str(model)), str(model))
            return ServedModel(model, data, False, False, described, None)
        paths = A.ArtifactPaths.loose(model.parent)
        manifest = A.read_manifest(paths)
        data = A.read_verified(paths, manifest, model.name, "export")
        _check_files(paths, manifest, model.name)
        number = manifest.version
    else:
        if name is None:
            raise UsageError("give a model name or a --model file")
        name = _check_name(name)
        checked = versions.check_version(root, name, version, hint or selector(name), require_verified=False)
        paths, manifest = checked.paths, checked.manifest
        if A.ONNX not in checked.files:
            raise MissingArtifact(f"no {A.ONNX} in {paths.folder}: {paths.hint('all')}")
        data = checked.files[A.ONNX]
        model = paths.onnx
        number = checked.number
    served_arch = A.arch_of(manifest, str(paths.manifest))
    verified = manifest.verify is not None and manifest.verify.passed and A.VERIFY in manifest.files
    if verified and paths.at is not None:
        A.read_verified(paths, manifest, A.VERIFY, "verify")  # the report it refers to is there, unchanged
    elif not verified and not allow_unverified:
        why = "no verify report" if manifest.verify and manifest.verify.passed else "no passing verify record"
        fix = (paths if paths.name else A.ArtifactPaths(paths.root, manifest.name)).hint("verify")
        raise UsageError(f"{model} has {why}: {fix}, or pass --allow-unverified")
    return ServedModel(model, data, True, verified, served_arch, number, _missing_tokens(manifest))


def _missing_tokens(manifest: Manifest) -> tuple[str, ...]:
    """The missing-value tokens of the model's recipe (`[data] missing`), or the default."""
    data = (manifest.recipe or {}).get("data") or {}
    tokens = data.get("missing") if isinstance(data, dict) else None
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        return tuple(tokens)
    return DEFAULT_MISSING


def _check_files(paths: A.ArtifactPaths, manifest: Manifest, served: str) -> None:
    """Every file the manifest lists and the folder holds must be intact: a damaged copy is not served."""
    for name in manifest.files:
        if name != served and (paths.folder / name).exists():
            A.read_verified(paths, manifest, name, "verify")


# ---------------------------------------------------------------------------------------------
# What a file says about itself (metadata_props, contract.metadata_props)


def _meta_json(meta: dict[str, str], key: str, where: str) -> Any:
    try:
        return json.loads(meta[key])
    except (ValueError, RecursionError):
        raise CorruptArtifact(f"{where}: its metadata xorship.{key} is not valid JSON") from None


def _arch_from_metadata(proto: onnx.ModelProto, where: str) -> Arch | None:
    """A loose file's network from its xorship.* metadata_props (features, task, classes), or None when
    it names no features (a file of an older release: then its signature alone describes it)."""
    meta = read_metadata(proto)
    if "features" not in meta:
        return None
    features = _meta_json(meta, "features", where)
    task = meta.get("task", "binary")
    classes = _meta_json(meta, "classes", where) if "classes" in meta else ([] if task == "regression" else None)
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features) or not features:
        raise CorruptArtifact(f"{where}: its metadata xorship.features is not a list of feature names")
    if not isinstance(classes, list) or not all(isinstance(c, (bool, int, float, str)) for c in classes):
        raise CorruptArtifact(f"{where}: its metadata xorship.classes is not a list of class values")
    n_out = len(classes) if task == "multiclass" else 1
    name = meta.get("name", "")
    from ..spec.recipe import NAME_RE

    encoding = _encoding_of(meta, where)
    try:
        return Arch(
            name=name if NAME_RE.fullmatch(name) else "model",
            widths=(encoding.width if encoding is not None else len(features), n_out),
            task=task,
            features=tuple(features),
            classes=tuple(classes),
            encoding=encoding,
        )
    except ValueError as exc:
        raise CorruptArtifact(f"{where}: its xorship metadata does not describe a model ({exc})") from None


def _encoding_of(meta: dict[str, str], where: str) -> Encoding | None:
    """The raw-column rules a file records (xorship.encoding), or None (a built-in, an older file)."""
    if "encoding" not in meta:
        return None
    record = _meta_json(meta, "encoding", where)
    if not isinstance(record, dict):
        raise CorruptArtifact(f"{where}: its metadata xorship.encoding is not an object")
    return Encoding.from_record(record, f"{where}: its metadata xorship.encoding")


def _check_metadata(proto: onnx.ModelProto, arch: Arch, where: str) -> None:
    """Where the file describes itself (task, features, classes), it must agree with its manifest."""
    meta = read_metadata(proto)
    expected = {"task": arch.task, "features": list(arch.features), "classes": list(arch.classes)}
    for key, want in expected.items():
        if key not in meta:
            continue
        got = meta[key] if key == "task" else _meta_json(meta, key, where)
        if got != want or (isinstance(got, list) and [type(v) for v in got] != [type(v) for v in want]):
            raise CorruptArtifact(
                f"{where}: its metadata says {key} {str(got)[:80]}, its manifest {str(want)[:80]}; refusing to serve it"
            )
    if "encoding" in meta or arch.encoding is not None:
        if _encoding_of(meta, where) != arch.encoding:
            if "encoding" not in meta:
                said = "no encoding of raw columns, its manifest one"
            elif arch.encoding is None:
                said = "an encoding of raw columns, its manifest none"
            else:
                said = "another encoding of raw columns than its manifest"
            raise CorruptArtifact(f"{where}: its metadata records {said}; refusing to serve it")


def _signature_width(proto: onnx.ModelProto, where: str) -> int:
    sig = signature(proto)
    dim = sig.inputs[0].dims[1] if sig.inputs and len(sig.inputs[0].dims) == 2 else 0
    if not isinstance(dim, int) or dim < 1:
        raise CorruptArtifact(
            f"{where}: its input has no fixed width ({list(sig.inputs[0].dims) if sig.inputs else []})"
        )
    return dim


def _generic_arch(width: int) -> Arch:
    """A loose file that says nothing about itself: a binary head, classes 0 and 1, features x1..xN."""
    return Arch(name="model", widths=(width, 1), features=tuple(f"x{i + 1}" for i in range(width)))


# ---------------------------------------------------------------------------------------------
# Running it


class Predictor:
    """An onnxruntime session on a served model, checked once; `outputs(x)` per chunk.

    `arch` describes what is served (for a loose file that says nothing about itself: a generic binary
    model of the file's width); `spec` is what input rows must give (names matched in a CSV header and
    JSON objects)."""

    def __init__(self, served: ServedModel, provider: str = "auto", spin: bool = True):
        where = str(served.where)
        proto = parse_checked(served.data, where)
        features: tuple[str, ...] | None
        if served.arch is not None:
            arch = served.arch
            check_served(proto, where, arch.n_inputs, arch.n_outputs, arch)
            _check_metadata(proto, arch, where)
            features = arch.features
        else:
            width = _signature_width(proto, where)
            check_served(proto, where, width, 1)
            arch = _generic_arch(width)
            features = FEATURES if width == len(FEATURES) else None  # other widths: any header names
        try:
            spec = InputSpec(arch.n_inputs, features, served.missing, arch.encoding)
        except ValueError:
            raise CorruptArtifact(f"{where}: its feature names are not {arch.n_inputs} distinct names") from None
        self.served = served
        self.arch = arch
        self.spec = spec
        self.runner: Runner = ort_runner(served.data, provider, where=where, spin=spin)

    @property
    def providers(self) -> ProviderReport:
        assert self.runner.providers is not None
        return self.runner.providers

    @property
    def task(self) -> str:
        return self.arch.task

    @property
    def classes(self) -> tuple[Label, ...]:
        return self.arch.classes

    def outputs(self, x: Raw) -> np.ndarray:
        """Raw rows (`spec.encoding.Raw`: (rows, n_inputs) float32, NaN for missing; or, for a model that
        takes one input per column, a mapping column -> values) -> (rows, n_outputs) float64, the
        model's output as is (binary: the probability of classes[-1]; multiclass: one probability per
        class, in class order; regression: the value). Its shape and values are checked."""
        import numpy as np

        out = self.runner.run(x)
        rows, k = raw_len(x), self.arch.n_outputs
        if tuple(out.shape) != (rows, k):
            raise CorruptArtifact(
                f"{self.served.where} returned shape {list(out.shape)} for {rows} rows, expected [{rows}, {k}]"
            )
        values = out.astype(np.float64)
        finite = np.isfinite(values).all(axis=1)
        if not finite.all():
            raise NonFiniteOutput(int(np.argmin(finite)), self.arch.output_name)
        return values

    def probabilities(self, x: Raw) -> np.ndarray:
        """`outputs(x)`, flattened to (rows,) for a one-output model (binary, regression); (rows, K) for
        a multi-class one."""
        out = self.outputs(x)
        return out.reshape(-1) if out.shape[1] == 1 else out

    def label_indices(self, out: np.ndarray) -> np.ndarray:
        """Index into `classes` per row of `outputs()` (classifiers only)."""
        return label_indices(self.arch, out)


def label_indices(arch: Arch, out: np.ndarray) -> np.ndarray:
    """Index into `arch.classes` per row of `out` (`spec.archs.label_indices`: the one label rule)."""
    return _label_rule(arch.task, out)


Echoed = float | str | None  # an input value as the JSON document echoes it (None: a missing number)


def echo_rows(arch: Arch, x: Raw) -> tuple[tuple[Echoed, ...], ...]:
    """The input rows as the JSON document's "x" echoes them, per row in feature order: numbers as their
    float32 value (None where missing), text as the model took it ("" where missing)."""
    import numpy as np

    def value(v: Any) -> Echoed:
        if isinstance(v, str):
            return v
        f = float(v)
        return None if np.isnan(f) else f

    if isinstance(x, np.ndarray):
        return tuple(tuple(value(v) for v in row) for row in x.tolist())
    assert arch.encoding is not None
    cols = as_columns(x, arch.encoding)
    return tuple(zip(*(tuple(value(v) for v in cols[c].tolist()) for c in arch.features)))


def _row_dict(arch: Arch, x: list[Echoed], out: list[float], index: int) -> dict[str, Any]:
    """One prediction as the JSON document has it (the streaming writer formats the same thing)."""
    if arch.task == "binary":
        return {"x": x, "probability": out[0], "label": arch.classes[index]}
    if arch.task == "multiclass":
        return {"x": x, "label": arch.classes[index], "probabilities": dict(zip(map(str, arch.classes), out))}
    return {"x": x, "value": out[0]}


def _document_head(arch: Arch) -> dict[str, Any]:
    """What the JSON document says once about the model's head."""
    head: dict[str, Any] = {"task": arch.task, "features": list(arch.features), "classes": list(arch.classes)}
    if arch.task == "binary":
        head["threshold"] = THRESHOLD
    return head


@dataclass(frozen=True)
class Predictions:
    """In-memory predictions for a small batch (the library's form); `as_dict()` is `--json`'s document
    without the streaming."""

    model: Path
    providers: ProviderReport
    arch: Arch
    rows: tuple[tuple[Echoed, ...], ...]  # per row, the input values (`echo_rows`)
    outputs: tuple[tuple[float, ...], ...]  # per row, the model's n_outputs values
    indices: tuple[int, ...]  # per row, the label's index in arch.classes (() for regression)
    sha256_checked: bool

    @property
    def labels(self) -> tuple[Label, ...]:
        return tuple(self.arch.classes[i] for i in self.indices)

    @property
    def probabilities(self) -> tuple[float, ...]:
        """binary: P(classes[-1]) per row; multiclass: the label's probability per row."""
        if self.arch.task == "binary":
            return tuple(o[0] for o in self.outputs)
        return tuple(o[i] for o, i in zip(self.outputs, self.indices))

    @property
    def values(self) -> tuple[float, ...]:
        """regression: the value per row."""
        return tuple(o[0] for o in self.outputs)

    def as_dict(self) -> dict[str, Any]:
        indices = self.indices or (0,) * len(self.rows)
        return {
            "model": str(self.model),
            "sha256_checked": self.sha256_checked,
            "providers": list(self.providers.used),
            **_document_head(self.arch),
            "predictions": [
                _row_dict(self.arch, list(r), list(o), i) for r, o, i in zip(self.rows, self.outputs, indices)
            ],
        }


def predict(served: ServedModel, x: Raw, provider: str = "auto") -> Predictions:
    """x: raw rows (`Predictor.outputs`) -> the model's outputs and labels."""
    p = Predictor(served, provider)
    out = p.outputs(x)
    return Predictions(
        model=served.where,
        providers=p.providers,
        arch=p.arch,
        rows=echo_rows(p.arch, x),
        outputs=tuple(tuple(row) for row in out.tolist()),
        indices=tuple(p.label_indices(out).tolist()) if p.arch.is_classifier else (),
        sha256_checked=served.sha256_checked,
    )


# ---------------------------------------------------------------------------------------------
# Streaming output: one batch at a time, so memory does not grow with the input

ProgressFn = Callable[[int, int, int | None], None]  # (rows done, input position, its total: bytes or rows; None)


def _head(predictor: Predictor) -> OutputHead:
    served = predictor.served
    return OutputHead(
        arch=predictor.arch,
        model=str(served.where),
        name=predictor.arch.name,
        version=served.version,
        sha256=served.sha256,
        sha256_checked=served.sha256_checked,
        verified=served.verified,
        providers=tuple(predictor.providers.used),
        label=served.label,
    )


def write_predictions(
    out: IO[bytes],
    fmt: str,
    predictor: Predictor,
    source: RowSource,
    on_progress: ProgressFn | None = None,
    phases: dict[str, float] | None = None,
) -> int:
    """The predictions of every row of `source` in format `fmt` (`outputs.FORMATS`) on the binary stream
    `out`, a batch at a time. Returns the number of rows. `phases`, when given, receives the seconds
    spent waiting for parsed rows ("read"), in onnxruntime ("inference") and formatting and writing
    ("write"): `bench --scoring`'s breakdown."""
    from time import perf_counter

    writer = make_writer(fmt, out, _head(predictor), source.carry, predictor.spec.features or predictor.arch.features)
    done = 0
    read = infer = write = 0.0
    batches = source.batches()
    try:
        while True:
            t0 = perf_counter()
            batch = next(batches, None)
            t1 = perf_counter()
            if batch is None:
                break
            outputs = _placed_outputs(predictor, source, batch)
            t2 = perf_counter()
            writer.write(batch.x, batch.carried, outputs)
            t3 = perf_counter()
            read, infer, write = read + t1 - t0, infer + t2 - t1, write + t3 - t2
            done += batch.rows
            if on_progress is not None:
                on_progress(done, batch.position, source.total)
    except BaseException:
        writer.abort()
        raise
    t0 = perf_counter()
    writer.close()
    if phases is not None:
        phases.update(read=read, inference=infer, write=write + perf_counter() - t0)
    return writer.rows


def write_json(out: IO[str], predictor: Predictor, source: RowSource) -> int:
    """The JSON document (`--json`) on a text stream. Returns the number of rows."""
    return _on_text(out, JSON_FORMAT, predictor, source)


def write_table(out: IO[str], predictor: Predictor, source: RowSource) -> int:
    """The terminal's table on a text stream. Returns the number of rows."""
    return _on_text(out, TABLE_FORMAT, predictor, source)


def _on_text(out: IO[str], fmt: str, predictor: Predictor, source: RowSource) -> int:
    import io

    buf = io.BytesIO()
    rows = write_predictions(buf, fmt, predictor, source)
    out.write(buf.getvalue().decode("utf-8"))
    return rows


@dataclass(frozen=True, eq=False)
class PredictJob:
    """`predict`, ready to write: the model resolved and checked, its session open, the input opened and,
    where the destination cannot be taken back (stdout, a FIFO, a device, a link), every row already
    validated. `notes`: what the user should hear (an unverified model)."""

    served: ServedModel
    predictor: Predictor
    source: RowSource
    output: Path | None
    inputs: tuple[Path | None, ...]
    notes: tuple[str, ...]
    fmt: str = TABLE_FORMAT
    validated: bool = False

    def write(self, stdout: IO[bytes] | None = None, on_progress: ProgressFn | None = None) -> int:
        """The predictions, streamed per batch, to `output` (a file: written to a temporary and renamed
        into place, so a bad row leaves nothing; a FIFO or device: written through) or `stdout` (a
        binary stream). Returns the rows."""
        import sys

        try:
            if self.output is None or str(self.output) == "-":
                stream = stdout if stdout is not None else sys.stdout.buffer
                rows = write_predictions(stream, self.fmt, self.predictor, self.source, on_progress)
                stream.flush()
                return rows
            rows = 0

            def fill(f: IO[bytes]) -> None:
                nonlocal rows
                rows = write_predictions(f, self.fmt, self.predictor, self.source, on_progress)

            A.write_output(self.output, fill, "--output", self.inputs)
            return rows
        finally:
            self.source.close()


def prepare(
    root: Path,
    *,
    name: str | None = None,
    hint: str | None = None,
    model: Path | None = None,
    version: int | None = None,
    allow_unverified: bool = False,
    provider: str = "auto",
    pairs: Sequence[str] | None = None,
    input_path: Path | None = None,
    stdin: Any = None,
    output: Path | None = None,
    fmt: str | None = None,
    as_json: bool = False,
    input_format: str | None = None,
    carry: Sequence[str] | str = (),
) -> PredictJob:
    """Everything `predict` does before its first output: the format chosen (`outputs.output_format`:
    `fmt`, `as_json`, the output's extension), the destination checked (a folder, a block device, the
    input itself: refused), the model resolved (`resolve_model`), its session opened, the rows' source
    opened (`pairs`, a file, or `stdin` when `input_path` is `-`) with the columns to `carry`, and, for a
    destination that cannot be taken back, every row validated."""
    from .inputs import open_input
    from .outputs import check_carried, output_format

    inputs = (input_path if input_path is not None and str(input_path) != "-" else None, model)
    kind = A.OUTPUT_STDOUT if output is None else A.check_output(output, "--output", inputs)
    chosen = output_format(output, fmt, as_json, stream=kind != A.OUTPUT_FILE)
    served = resolve_model(root, name, model, version, allow_unverified, hint)
    predictor = Predictor(served, provider, spin=False)  # the reader's thread needs the cores between runs
    if input_path is not None and str(input_path) == "-":
        source = open_input(predictor.spec, stdin=stdin, carry=carry, fmt=input_format)
    elif input_path is not None:
        source = open_input(predictor.spec, path=input_path, carry=carry, fmt=input_format)
    else:
        source = open_input(predictor.spec, pairs=pairs or [], carry=carry)
    try:
        check_carried(source.carry, predictor.arch, chosen)
        validated = kind != A.OUTPUT_FILE
        if validated:
            # every row, and the model's output for it, before any output that cannot be taken back
            source.validate(check=lambda batch: _placed_outputs(predictor, source, batch))
    except BaseException:
        source.close()
        raise
    notes = []
    if predictor.providers.cuda_note and provider == "cuda":
        notes.append(predictor.providers.cuda_note)
    if not served.verified:
        notes.append(f"{served.where} is not verified (--allow-unverified)")
    return PredictJob(served, predictor, source, output, inputs, tuple(notes), chosen, validated)
