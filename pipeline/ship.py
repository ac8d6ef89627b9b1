"""`ship`: a Triton model repository and a model card, from verified artifacts only.

    <out>/<model-name>/config.pbtxt
    <out>/<model-name>/<version>/model.onnx

Names, data types and dims come from the ONNX file itself. A new ship gets the next version number;
an existing version folder is never touched (it is built under a temporary name and renamed into
place, which fails rather than overwrite). Tested against Triton's model-config protobuf schema
(tritonclient), not against a live server: none can run here.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import artifacts as A
from .archs import Arch
from .contract import parse_checked, signature
from .errors import ArtifactWriteError, MissingArtifact, UsageError
from .manifest import Manifest

INSTANCE_KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32"}


@dataclass(frozen=True)
class ShipResult:
    model_name: str
    version: int
    config_path: Path
    model_path: Path
    card_path: Path


def config_pbtxt(name: str, onnx_model: Any, max_batch_size: int, instance_kind: str, instances: int) -> str:
    """Triton's config for the model: names, data types and dims read from the ONNX graph itself."""
    sig = signature(onnx_model)

    def tensors(specs: Any) -> str:
        items = []
        for spec in specs:
            dims = [d if isinstance(d, int) and d > 0 else -1 for d in spec.dims[1:]]  # batch: max_batch_size
            items.append(
                f'  {{\n    name: "{spec.name}"\n    data_type: {ONNX_TO_TRITON[spec.elem_type]}\n'
                f"    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}"
            )
        return ",\n".join(items)

    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{tensors(sig.inputs)}\n]\n"
        f"output [\n{tensors(sig.outputs)}\n]\n"
        "dynamic_batching {\n  max_queue_delay_microseconds: 100\n}\n"
        # KIND_AUTO: GPU where Triton sees one, else CPU. `--instance-kind cpu` pins the CPU.
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {INSTANCE_KINDS[instance_kind]}\n  }}\n]\n"
        "version_policy: { latest { num_versions: 1 } }\n"
    )


def require_verified(paths: A.ArtifactPaths) -> tuple[Manifest, bytes, bytes]:
    """(manifest, ONNX bytes, verify.json bytes) of a verified model, each file hash-checked."""
    manifest = A.read_manifest(paths)
    onnx_bytes = A.read_verified(paths, manifest, A.ONNX, "export")
    if manifest.verify is None or not manifest.verify.passed:
        raise MissingArtifact(
            f"{paths.arch} in {paths.root} is not verified: run verify first (ship takes verified artifacts only)"
        )
    return manifest, onnx_bytes, A.read_verified(paths, manifest, A.VERIFY, "verify")


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


def ship(
    root: Path, arch: Arch, out: Path, max_batch_size: int = 1024, instance_kind: str = "auto", instances: int = 1
) -> ShipResult:
    import json

    if instance_kind not in INSTANCE_KINDS:
        raise UsageError(f"unknown instance kind {instance_kind!r}: choose one of {', '.join(INSTANCE_KINDS)}")
    paths = A.ArtifactPaths(root, arch.name)
    manifest, onnx_bytes, report_bytes = require_verified(paths)
    report = json.loads(report_bytes)
    onnx_model = parse_checked(onnx_bytes, str(paths.onnx))
    card = A.stage_bytes(paths.folder, A.CARD, model_card(manifest, report).encode())
    A.commit(paths, "card", {A.CARD: card}, {})

    name = arch.serving_name
    model_dir = out / name
    A.ensure_folder(model_dir)
    existing = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    version = max(existing, default=0) + 1
    tmp = model_dir / f"{A.TMP_PREFIX}{version}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        (tmp / "model.onnx").write_bytes(onnx_bytes)
        with open(tmp / "model.onnx", "rb+") as f:
            os.fsync(f.fileno())
        if A.sha256_file(tmp / "model.onnx") != manifest.files[A.ONNX].sha256:
            raise ArtifactWriteError(f"copy of {paths.onnx} into {tmp} does not match its sha256")
        os.rename(tmp, model_dir / str(version))  # fails if that version exists (non-empty)
        config = config_pbtxt(name, onnx_model, max_batch_size, instance_kind, instances)
        A.write_atomic(model_dir / "config.pbtxt", config.encode())
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise A.write_error(model_dir, exc) from None
    return ShipResult(name, version, model_dir / "config.pbtxt", model_dir / str(version) / "model.onnx", paths.card)
