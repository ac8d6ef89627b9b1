"""Torch-free inference on a published (verified) model, through onnxruntime only.

Nothing here (or in what it imports) imports torch: a shipped model must serve without it. A test
runs `predict` in a process where importing torch fails.

What is served: the published version of a model (or `version=N`), or an ONNX file given directly
with the manifest beside it (a `ship`ped copy). Its bytes are read once, hashed, parsed and handed to
onnxruntime: the file that was checked is the file that runs. A model without a passing verify
record (or a file with no manifest beside it) is refused unless `allow_unverified`.

Inputs are streamed (`inputs.py`): a validating pass first, so a bad row anywhere fails before any
output, then a predicting pass in chunks; output is written per chunk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import artifacts as A
from .archs import ARCHS, THRESHOLD, Arch
from .contract import check_served, parse_checked, signature
from .errors import CorruptArtifact, MissingArtifact, UsageError
from .inputs import InputSpec, RowSource
from .manifest import Manifest
from .runtimes import ProviderReport, Runner, ort_runner

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

FEATURES = ("x1", "x2")  # the XOR models' input names (a CSV header is matched to them)


@dataclass(frozen=True)
class ServedModel:
    """The bytes to serve and what vouches for them."""

    where: Path
    data: bytes  # the very bytes that were hashed (when sha256_checked)
    sha256_checked: bool
    verified: bool  # a passing verify record came with it
    arch: Arch | None  # from the manifest (None: a loose file)
    version: int | None

    @property
    def label(self) -> str:
        if self.arch is None:
            return str(self.where)
        return f"{self.arch.name} v{self.version}" if self.version else self.arch.name


def _arch_of(manifest: Manifest, where: Path) -> Arch:
    arch = ARCHS.get(manifest.arch)
    if arch is None:
        raise CorruptArtifact(f"{where} describes an unknown model {manifest.arch[:40]!r}")
    return arch


def resolve_model(
    root: Path, arch: str | None, model: Path | None, version: int | None = None, allow_unverified: bool = False
) -> ServedModel:
    """The model to serve. `arch`: its published version (or `version`) in `root`. `model`: an ONNX
    file, identified by the manifest beside it (its content, not its folder's name)."""
    from .flow import resolve_version

    if model is not None:
        if version is not None:
            raise UsageError("--version goes with --arch (a --model file is one version already)")
        if not model.is_file():
            raise MissingArtifact(f"{model} does not exist" if not model.exists() else f"{model} is not a file")
        if not (model.parent / A.MANIFEST).exists():
            if not allow_unverified:
                raise UsageError(
                    f"{model} has no manifest.json beside it, so nothing vouches for it: pass --allow-unverified to serve it anyway"
                )
            try:
                return ServedModel(model, model.read_bytes(), False, False, None, None)
            except OSError as exc:
                raise CorruptArtifact(f"{model} is not readable ({exc.strerror or exc.__class__.__name__})") from None
        paths = A.ArtifactPaths.loose(model.parent)
        manifest = A.read_manifest(paths)
        data = A.read_verified(paths, manifest, model.name, "export")
        served_arch = _arch_of(manifest, paths.manifest)
        number = manifest.version
    else:
        assert arch is not None
        from .archs import get_arch

        served_arch = get_arch(arch)
        paths = resolve_version(root, served_arch, version)
        manifest = A.read_manifest(paths)
        data = A.read_verified(paths, manifest, A.ONNX, "export")
        model = paths.onnx
        number = paths.number or manifest.version or 1
    # every file the manifest lists and the folder holds must be intact: a damaged version is not served
    for name in manifest.files:
        if name != model.name and (paths.folder / name).exists():
            A.read_verified(paths, manifest, name, "verify")
    verified = manifest.verify is not None and manifest.verify.passed and A.VERIFY in manifest.files
    if verified:
        A.read_verified(paths, manifest, A.VERIFY, "verify")  # the report it refers to is there, unchanged
    elif not allow_unverified:
        why = "no verify report" if manifest.verify and manifest.verify.passed else "no passing verify record"
        raise UsageError(f"{model} has {why}: run verify, or pass --allow-unverified")
    return ServedModel(model, data, True, verified, served_arch, number)


class Predictor:
    """An onnxruntime session on a served model, checked once; `probabilities(x)` per chunk."""

    def __init__(self, served: ServedModel, provider: str = "auto"):
        proto = parse_checked(served.data, str(served.where))
        if served.arch is not None:
            check_served(proto, str(served.where), served.arch.n_inputs, served.arch.n_outputs)
            width = served.arch.n_inputs
        else:
            sig = signature(proto)
            dim = sig.inputs[0].dims[1] if sig.inputs and len(sig.inputs[0].dims) == 2 else 0
            if not isinstance(dim, int) or dim < 1:
                raise CorruptArtifact(
                    f"{served.where}: its input has no fixed width ({list(sig.inputs[0].dims) if sig.inputs else []})"
                )
            width = dim
            check_served(proto, str(served.where), width, 1)
        self.served = served
        self.spec = InputSpec(width, FEATURES if width == len(FEATURES) else None)
        self.runner: Runner = ort_runner(served.data, provider, where=str(served.where))

    @property
    def providers(self) -> ProviderReport:
        assert self.runner.providers is not None
        return self.runner.providers

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(rows, width) float32 -> (rows,) float64; the output's shape and values are checked."""
        import numpy as np

        out = self.runner.run(x)
        if tuple(out.shape) != (x.shape[0], 1):
            raise CorruptArtifact(
                f"{self.served.where} returned shape {list(out.shape)} for {x.shape[0]} rows, expected [{x.shape[0]}, 1]"
            )
        probs = out.reshape(-1).astype(np.float64)
        if not np.all(np.isfinite(probs)):
            raise CorruptArtifact(f"{self.served.where} returned non-finite values")
        return probs


@dataclass(frozen=True)
class Predictions:
    """In-memory predictions for a small batch (the library's and serve's form)."""

    model: Path
    providers: ProviderReport
    rows: tuple[tuple[float, ...], ...]
    probabilities: tuple[float, ...]
    labels: tuple[int, ...]
    sha256_checked: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "sha256_checked": self.sha256_checked,
            "providers": list(self.providers.used),
            "threshold": THRESHOLD,
            "predictions": [
                {"x": list(r), "probability": p, "label": lab}
                for r, p, lab in zip(self.rows, self.probabilities, self.labels)
            ],
        }


def predict(served: ServedModel, x: np.ndarray, provider: str = "auto") -> Predictions:
    """x: (rows, width) float32 -> probabilities and labels."""
    p = Predictor(served, provider)
    probs = p.probabilities(x)
    return Predictions(
        model=served.where,
        providers=p.providers,
        rows=tuple(tuple(float(v) for v in row) for row in x.tolist()),
        probabilities=tuple(probs.tolist()),
        labels=tuple(int(v > THRESHOLD) for v in probs),
        sha256_checked=served.sha256_checked,
    )


# ---------------------------------------------------------------------------------------------
# Streaming output: one chunk at a time, so memory does not grow with the input


def _rows(predictor: Predictor, source: RowSource) -> Iterator[tuple[list[list[float]], list[float]]]:
    for chunk in source.chunks():
        yield chunk.tolist(), predictor.probabilities(chunk).tolist()


def write_json(out: IO[str], predictor: Predictor, source: RowSource) -> int:
    """One JSON document, written per chunk. Returns the number of rows."""
    served = predictor.served
    head = {
        "model": str(served.where),
        "version": served.version,
        "sha256_checked": served.sha256_checked,
        "verified": served.verified,
        "providers": list(predictor.providers.used),
        "threshold": THRESHOLD,
    }
    out.write(json.dumps(head)[:-1] + ', "predictions": [')
    n = 0
    for xs, ps in _rows(predictor, source):
        parts = []
        for x, p in zip(xs, ps):
            parts.append(
                f'{"," if n else ""}\n  {{"x": [{", ".join(map(repr, x))}], "probability": {p!r}, "label": {int(p > THRESHOLD)}}}'
            )
            n += 1
        out.write("".join(parts))
    out.write("\n]}\n")
    return n


def write_table(out: IO[str], predictor: Predictor, source: RowSource) -> int:
    """A header line, then one line per row. Returns the number of rows."""
    names = predictor.spec.features or tuple(f"x{i + 1}" for i in range(predictor.spec.width))
    head = " ".join(f"{n:>12}" for n in names)
    out.write(f"{head} {'probability':>12} label   ({predictor.served.label}, {predictor.providers.primary})\n")
    n = 0
    for xs, ps in _rows(predictor, source):
        out.write(
            "".join(
                f"{' '.join(f'{v:>12.6g}' for v in x)} {p:>12.8f} {int(p > THRESHOLD):>5}\n" for x, p in zip(xs, ps)
            )
        )
        n += len(ps)
    return n
