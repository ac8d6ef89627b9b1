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
them, else by its signature alone (width from the input, a binary head with classes 0 and 1).

Inputs are streamed (`inputs.py`): a validating pass first, so a bad row anywhere fails before any
output, then a predicting pass in chunks; output is written per chunk.

Output, per input row (the JSON document's `predictions[i]`, and one table line):
- binary: `probability` (of `classes[-1]`) and `label` (`classes[-1]` when probability > THRESHOLD,
  else `classes[0]`);
- multiclass: `label` (the most probable class; the first of them on a tie) and `probabilities`
  (class -> probability, in class order; JSON keys are `str(class)`);
- regression: `value` (in the target's units); no label.
Labels keep the type the classes have in the data (JSON ints stay ints, strings strings, bools bools).
The table shows at most `TABLE_FEATURES` feature columns (a wider model: the first
`TABLE_FEATURES - 1` and a `...+N` column) and, for a multi-class model, the `TABLE_TOP` most probable
classes; `--json` always has every value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..checks.runtimes import ProviderReport, Runner, ort_runner
from ..errors import CorruptArtifact, MissingArtifact, UsageError
from ..graph.contract import check_served, parse_checked, read_metadata, signature
from ..spec.archs import THRESHOLD, Arch, Label
from ..spec.archs import label_indices as _label_rule
from ..store import artifacts as A
from ..store.manifest import Manifest
from .inputs import InputSpec, RowSource

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

FEATURES = ("x1", "x2")  # the XOR models' input names (a loose file's CSV header is matched to them)
TABLE_FEATURES = 6  # the table shows at most this many feature columns
TABLE_TOP = 3  # multiclass: the table shows this many most probable classes
_MAX_TABLE_NAME = 20  # a longer feature name or label is cut in the table


class NonFiniteOutput(UsageError):
    """The model's output for a row is not finite (inf or NaN): the row is beyond what the model can
    compute in float32 (verify checks that its outputs are finite over ten times its data's range).
    The input's problem (exit 2), named by its row within the batch; `serve` answers it with a 400."""

    def __init__(self, row: int, output: str):
        super().__init__(
            f"row {row + 1} of the batch gives a non-finite {output} (inf or NaN): its values are beyond "
            "what the model computes in float32; check that row's values and units"
        )
        self.row = row


@dataclass(frozen=True)
class ServedModel:
    """The bytes to serve and what vouches for them."""

    where: Path
    data: bytes  # the very bytes that were hashed (when sha256_checked)
    sha256_checked: bool
    verified: bool  # a passing verify record came with it
    arch: Arch | None  # from the manifest, or a loose file's metadata_props (None: a loose file that says nothing)
    version: int | None

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
    return ServedModel(model, data, True, verified, served_arch, number)


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

    try:
        return Arch(
            name=name if NAME_RE.fullmatch(name) else "model",
            widths=(len(features), n_out),
            task=task,
            features=tuple(features),
            classes=tuple(classes),
        )
    except ValueError as exc:
        raise CorruptArtifact(f"{where}: its xorship metadata does not describe a model ({exc})") from None


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

    def __init__(self, served: ServedModel, provider: str = "auto"):
        where = str(served.where)
        proto = parse_checked(served.data, where)
        features: tuple[str, ...] | None
        if served.arch is not None:
            arch = served.arch
            check_served(proto, where, arch.n_inputs, arch.n_outputs)
            _check_metadata(proto, arch, where)
            features = arch.features
        else:
            width = _signature_width(proto, where)
            check_served(proto, where, width, 1)
            arch = _generic_arch(width)
            features = FEATURES if width == len(FEATURES) else None  # other widths: any header names
        try:
            spec = InputSpec(arch.n_inputs, features)
        except ValueError:
            raise CorruptArtifact(f"{where}: its feature names are not {arch.n_inputs} distinct names") from None
        self.served = served
        self.arch = arch
        self.spec = spec
        self.runner: Runner = ort_runner(served.data, provider, where=where)

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

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """(rows, n_inputs) float32 -> (rows, n_outputs) float64, the model's output as is (binary: the
        probability of classes[-1]; multiclass: one probability per class, in class order; regression:
        the value). Its shape and values are checked."""
        import numpy as np

        out = self.runner.run(x)
        rows, k = x.shape[0], self.arch.n_outputs
        if tuple(out.shape) != (rows, k):
            raise CorruptArtifact(
                f"{self.served.where} returned shape {list(out.shape)} for {rows} rows, expected [{rows}, {k}]"
            )
        values = out.astype(np.float64)
        finite = np.isfinite(values).all(axis=1)
        if not finite.all():
            raise NonFiniteOutput(int(np.argmin(finite)), self.arch.output_name)
        return values

    def probabilities(self, x: np.ndarray) -> np.ndarray:
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


def _row_dict(arch: Arch, x: list[float], out: list[float], index: int) -> dict[str, Any]:
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
    rows: tuple[tuple[float, ...], ...]
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


def predict(served: ServedModel, x: np.ndarray, provider: str = "auto") -> Predictions:
    """x: (rows, n_inputs) float32 -> the model's outputs and labels."""
    p = Predictor(served, provider)
    out = p.outputs(x)
    return Predictions(
        model=served.where,
        providers=p.providers,
        arch=p.arch,
        rows=tuple(tuple(float(v) for v in row) for row in x.tolist()),
        outputs=tuple(tuple(row) for row in out.tolist()),
        indices=tuple(p.label_indices(out).tolist()) if p.arch.is_classifier else (),
        sha256_checked=served.sha256_checked,
    )


# ---------------------------------------------------------------------------------------------
# Streaming output: one chunk at a time, so memory does not grow with the input


def _chunks(predictor: Predictor, source: RowSource) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(inputs, outputs) per chunk: (rows, n_inputs) float32 and (rows, n_outputs) float64."""
    for chunk in source.chunks():
        yield chunk, predictor.outputs(chunk)


def write_json(out: IO[str], predictor: Predictor, source: RowSource) -> int:
    """One JSON document, written per chunk. Returns the number of rows.

    {"model", "version", "sha256_checked", "verified", "providers", "task", "features", "classes",
     ["threshold" (binary)], "predictions": [{"x": [...], ...per task, see the module's doc}, ...]}"""
    served, arch = predictor.served, predictor.arch
    head = {
        "model": str(served.where),
        "version": served.version,
        "sha256_checked": served.sha256_checked,
        "verified": served.verified,
        "providers": list(predictor.providers.used),
        **_document_head(arch),
    }
    out.write(json.dumps(head)[:-1] + ', "predictions": [')
    labels = [json.dumps(c) for c in arch.classes]  # each class as a JSON literal, with its type
    keys = [json.dumps(str(c)) for c in arch.classes]
    n = 0
    for chunk, values in _chunks(predictor, source):
        xs = chunk.tolist()
        parts = []
        if arch.task == "binary":
            index = label_indices(arch, values).tolist()
            for x, p, i in zip(xs, values[:, 0].tolist(), index):
                parts.append(
                    f'{"," if n else ""}\n  {{"x": [{", ".join(map(repr, x))}], "probability": {p!r}, "label": {labels[i]}}}'
                )
                n += 1
        elif arch.task == "multiclass":
            index = label_indices(arch, values).tolist()
            for x, ps, i in zip(xs, values.tolist(), index):
                probs = ", ".join(f"{k}: {p!r}" for k, p in zip(keys, ps))
                parts.append(
                    f'{"," if n else ""}\n  {{"x": [{", ".join(map(repr, x))}], "label": {labels[i]}, "probabilities": {{{probs}}}}}'
                )
                n += 1
        else:
            for x, v in zip(xs, values[:, 0].tolist()):
                parts.append(f'{"," if n else ""}\n  {{"x": [{", ".join(map(repr, x))}], "value": {v!r}}}')
                n += 1
        out.write("".join(parts))
    out.write("\n]}\n")
    return n


def write_to(
    path: Path,
    write: Callable[[IO[str], Predictor, RowSource], int],
    predictor: Predictor,
    source: RowSource,
    inputs: Sequence[Path | None] = (),
) -> int:
    """`write` (write_json or write_table) into the file `path` (`--output`): a regular file is written
    to a temporary and renamed into place; a FIFO or character device is written through; the input
    file, a folder, a block device or a socket is refused (`artifacts.write_output`). Returns the rows."""
    import io

    rows = 0

    def fill(f: IO[bytes]) -> None:
        nonlocal rows
        text = io.TextIOWrapper(f, encoding="utf-8", newline="\n")
        try:
            rows = write(text, predictor, source)
            text.flush()
        finally:
            text.detach()  # the caller owns (and closes) the binary file

    A.write_output(path, fill, "--output", inputs)
    return rows


@dataclass(frozen=True, eq=False)
class PredictJob:
    """`predict`, ready to write: the model resolved and checked, its session open, every input row
    validated (so a bad row anywhere fails before any output). `notes`: what the user should hear (the
    provider's CUDA note, an unverified model)."""

    served: ServedModel
    predictor: Predictor
    source: RowSource
    output: Path | None
    inputs: tuple[Path | None, ...]
    notes: tuple[str, ...]

    def write(self, as_json: bool, stdout: IO[str]) -> int:
        """The predictions, streamed per chunk: the JSON document (`as_json`) or the table, to `output`
        (`write_to`: a file whole, a FIFO or device written through) or `stdout`. Returns the rows."""
        write = write_json if as_json else write_table
        if self.output is None:
            rows = write(stdout, self.predictor, self.source)
            stdout.flush()
            return rows
        return write_to(self.output, write, self.predictor, self.source, self.inputs)


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
) -> PredictJob:
    """Everything `predict` does before its first output: the output destination checked (a folder, a
    block device, the input itself: refused), the model resolved (`resolve_model`), its session
    opened, the rows' source opened (`pairs`, a file, or `stdin` when `input_path` is `-`) and every
    row validated."""
    from .inputs import open_input

    inputs = (input_path if input_path is not None and str(input_path) != "-" else None, model)
    if output is not None:
        A.check_output(output, "--output", inputs)
    served = resolve_model(root, name, model, version, allow_unverified, hint)
    predictor = Predictor(served, provider)
    if input_path is not None and str(input_path) == "-":
        source = open_input(predictor.spec, stdin=stdin)
    elif input_path is not None:
        source = open_input(predictor.spec, path=input_path)
    else:
        source = open_input(predictor.spec, pairs=pairs or [])
    source.validate()  # every row, before any output
    notes = []
    if predictor.providers.cuda_note and provider != "cpu":
        notes.append(predictor.providers.cuda_note)
    if not served.verified:
        notes.append(f"{served.where} is not verified (--allow-unverified)")
    return PredictJob(served, predictor, source, output, inputs, tuple(notes))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _table_features(predictor: Predictor) -> tuple[list[str], list[int], int]:
    """(shown feature names, their column widths, how many are not shown)."""
    names = list(predictor.spec.features or predictor.arch.features)
    hidden = 0
    if len(names) > TABLE_FEATURES:
        hidden = len(names) - (TABLE_FEATURES - 1)
        names = names[: TABLE_FEATURES - 1]
    widths = [max(12, min(len(n), _MAX_TABLE_NAME)) for n in names]
    return [_cut(n, w) for n, w in zip(names, widths)], widths, hidden


def write_table(out: IO[str], predictor: Predictor, source: RowSource) -> int:
    """A header line, then one line per row: the feature values (at most TABLE_FEATURES columns), then
    binary: probability and label; multiclass: label and the TABLE_TOP most probable classes as
    class=probability; regression: value. Returns the number of rows."""
    arch = predictor.arch
    names, widths, hidden = _table_features(predictor)
    more = f"...+{hidden}" if hidden else ""
    shown = [_cut(str(c), _MAX_TABLE_NAME) for c in arch.classes]
    lw = max([5, *map(len, shown)])
    head = " ".join(f"{n:>{w}}" for n, w in zip(names, widths)) + (f" {more}" if more else "")
    if arch.task == "binary":
        head += f" {'probability':>12} {'label':>{lw}}"
    elif arch.task == "multiclass":
        top = min(TABLE_TOP, len(arch.classes))
        head += f" {'label':>{lw}}  " + ("probabilities" if top == len(arch.classes) else f"top {top} probabilities")
    else:
        head += f" {'value':>14}"
    out.write(f"{head}   ({predictor.served.label}, {predictor.providers.primary})\n")
    pad = " " + "." * 3 + " " * (len(more) - 3) if more else ""
    n = len(names)
    rows = 0
    for chunk, values in _chunks(predictor, source):
        xs = chunk[:, :n].tolist()  # only the columns shown
        feats = [" ".join(f"{v:>{w}.6g}" for v, w in zip(x, widths)) + pad for x in xs]
        if arch.task == "binary":
            index = label_indices(arch, values).tolist()
            lines = [f"{f} {p:>12.8f} {shown[i]:>{lw}}\n" for f, p, i in zip(feats, values[:, 0].tolist(), index)]
        elif arch.task == "multiclass":
            index = label_indices(arch, values).tolist()
            lines = []
            for f, ps, i in zip(feats, values.tolist(), index):
                order = sorted(range(len(ps)), key=lambda k: -ps[k])[:top]  # stable: ties in class order
                best = "  ".join(f"{shown[k]}={ps[k]:.4f}" for k in order)
                lines.append(f"{f} {shown[i]:>{lw}}  {best}\n")
        else:
            lines = [f"{f} {v:>14.8g}\n" for f, v in zip(feats, values[:, 0].tolist())]
        out.write("".join(lines))
        rows += len(lines)
    return rows
