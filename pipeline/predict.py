"""Torch-free inference on a shipped artifact, through onnxruntime only.

Nothing here (or in what it imports) imports torch: a shipped model must serve without it. A test
runs `predict` in a process where importing torch fails.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import artifacts as A
from .archs import THRESHOLD, get_arch
from .contract import check_served, parse_checked
from .errors import CorruptArtifact, MissingArtifact, UsageError
from .runtimes import ProviderReport, ort_runner

MAX_ROWS = 10_000_000


@dataclass(frozen=True)
class Predictions:
    model: Path
    providers: ProviderReport
    rows: tuple[tuple[float, float], ...]
    probabilities: tuple[float, ...]
    labels: tuple[int, ...]
    sha256_checked: bool

    def as_dict(self) -> dict:
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


# ---------------------------------------------------------------------------------------------
# Input parsing: every path ends in a validated (rows, 2) float32 array, or a UsageError.


def _validated(values, source: str):
    import numpy as np

    try:
        arr = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise UsageError(f"{source}: inputs must be numbers") from None
    if arr.size == 0:
        raise UsageError(f"{source}: no input rows")
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr.reshape(1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise UsageError(f"{source}: each row needs exactly 2 numbers, got shape {list(arr.shape)}")
    if arr.shape[0] > MAX_ROWS:
        raise UsageError(f"{source}: {arr.shape[0]} rows is more than the {MAX_ROWS} this command takes at once")
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise UsageError(f"{source}: row {row + 1} is not finite ({arr[row].tolist()}); NaN and Inf are refused")
    if np.any(np.abs(arr) > np.finfo(np.float32).max):
        raise UsageError(f"{source}: values beyond float32's range ({np.finfo(np.float32).max:.3g}) are refused")
    return arr.astype(np.float32)


def parse_pairs(pairs: Sequence[str]):
    """`["0,1", "1,1"]` -> (2, 2) float32."""
    rows = []
    for i, pair in enumerate(pairs):
        parts = pair.split(",")
        if len(parts) != 2:
            raise UsageError(f"input {i + 1} ({pair!r}): write each row as two numbers joined by a comma, e.g. 0,1")
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            raise UsageError(f"input {i + 1} ({pair!r}): {pair!r} is not two numbers") from None
    return _validated(rows, "inputs")


def parse_json(text: str, source: str = "stdin"):
    """`[[0, 1], [1, 1]]`, `[0, 1]` or `{"x": [[0, 1]]}`."""
    try:
        data = json.loads(text, parse_constant=lambda c: float(c))
    except (json.JSONDecodeError, RecursionError):
        raise UsageError(f'{source}: not valid JSON (expected [[x1, x2], ...] or {{"x": [[x1, x2], ...]}})') from None
    if isinstance(data, dict):
        if "x" not in data:
            raise UsageError(f'{source}: a JSON object needs the key "x"')
        data = data["x"]
    if not isinstance(data, list) or any(isinstance(v, (bool, str, dict)) or v is None for v in _flatten(data)):
        raise UsageError(f"{source}: expected a list of [x1, x2] number pairs")
    return _validated(data, source)


def _flatten(data):
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def parse_file(path: Path):
    """A .npy array (loaded without pickle), a CSV of two numeric columns (an optional header
    line is skipped), or a .json file."""
    import numpy as np

    if not path.exists():
        raise UsageError(f"input file {path} does not exist")
    if path.is_dir():
        raise UsageError(f"input file {path} is a folder")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise UsageError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0][:200]})") from None
        if arr.dtype.kind not in "fiu":
            raise UsageError(f"{path}: array dtype {arr.dtype} is not numeric")
        return _validated(arr, str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it as text ({exc.__class__.__name__})") from None
    if suffix == ".json":
        return parse_json(text, str(path))
    return parse_csv(text, str(path))


def parse_csv(text: str, source: str):
    import csv
    import io

    rows = []
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            raise UsageError(f"{source}: line {n} has {len(row)} columns, expected 2")
        try:
            rows.append([float(c) for c in row])
        except ValueError:
            if n == 1 and not rows:
                continue  # a header line
            raise UsageError(f"{source}: line {n} is not two numbers ({','.join(row)[:80]!r})") from None
    return _validated(rows, source)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedModel:
    """The bytes to serve (hashed, when a manifest vouches for them: the very bytes that are used)."""

    where: Path
    data: bytes
    sha256_checked: bool


def resolve_model(root: Path, arch: str | None, model: Path | None) -> ServedModel:
    """The ONNX file to serve and whether its sha256 was checked against a manifest.

    With --arch the artifacts folder's manifest must vouch for the file. With --model, a manifest
    beside the file is used when present (and must then match); otherwise the file is loaded as is.
    """
    if model is not None:
        if not model.exists():
            raise MissingArtifact(f"{model} does not exist")
        if not (model.parent / A.MANIFEST).exists():
            try:
                return ServedModel(model, model.read_bytes(), False)
            except OSError as exc:
                raise CorruptArtifact(f"{model} is not readable ({exc.strerror or exc.__class__.__name__})") from None
        paths = A.ArtifactPaths(model.parent.parent, model.parent.name)
        return ServedModel(model, A.read_verified(paths, A.read_manifest(paths), model.name, "export"), True)
    assert arch is not None
    paths = A.ArtifactPaths(root, arch)
    manifest = A.read_manifest(paths)
    return ServedModel(paths.onnx, A.read_verified(paths, manifest, A.ONNX, "export"), True)


def predict(served: ServedModel, x: Any, provider: str = "auto") -> Predictions:
    """x: (rows, 2) float32 -> probabilities and labels, through onnxruntime."""
    import numpy as np

    arch = get_arch("shallow")  # every built-in XOR model: 2 inputs, 1 probability
    check_served(parse_checked(served.data, str(served.where)), str(served.where), arch.n_inputs, arch.n_outputs)
    runner = ort_runner(served.data, provider, where=str(served.where))
    assert runner.providers is not None
    probs = runner.run(x)
    probs = probs.reshape(-1).astype(np.float64)
    if probs.shape[0] != x.shape[0] or not np.all(np.isfinite(probs)):
        raise CorruptArtifact(
            f"{served.where} returned {probs.shape[0]} outputs for {x.shape[0]} rows, or non-finite values"
        )
    return Predictions(
        model=served.where,
        providers=runner.providers,
        rows=tuple((float(a), float(b)) for a, b in x.tolist()),
        probabilities=tuple(probs.tolist()),
        labels=tuple(int(p > THRESHOLD) for p in probs),
        sha256_checked=served.sha256_checked,
    )
