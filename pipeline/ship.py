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

from . import artifacts as A
from .errors import ArtifactWriteError, MissingArtifact, UsageError

INSTANCE_KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32"}


@dataclass(frozen=True)
class ShipResult:
    model_name: str
    version: int
    config_path: Path
    model_path: Path
    card_path: Path


def model_name(arch: str) -> str:
    return "xor_" + arch.replace("-", "_")


def _io(model, initializers: set[str]):
    def one(vi):
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return vi.name, ONNX_TO_TRITON[t.elem_type], dims[1:]  # batch dim is Triton's max_batch_size

    ins = [one(i) for i in model.graph.input if i.name not in initializers]
    outs = [one(o) for o in model.graph.output]
    return ins, outs


def config_pbtxt(name: str, onnx_path: Path, max_batch_size: int, instance_kind: str, instances: int) -> str:
    import onnx

    model = onnx.load(str(onnx_path))
    ins, outs = _io(model, {t.name for t in model.graph.initializer})

    def tensors(items):
        return ",\n".join(
            f'  {{\n    name: "{n}"\n    data_type: {dt}\n    dims: [ {", ".join(str(d) for d in dims)} ]\n  }}'
            for n, dt, dims in items
        )

    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{tensors(ins)}\n]\n"
        f"output [\n{tensors(outs)}\n]\n"
        "dynamic_batching {\n  max_queue_delay_microseconds: 100\n}\n"
        # KIND_AUTO: GPU where Triton sees one, else CPU. `--instance-kind cpu` pins the CPU.
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {INSTANCE_KINDS[instance_kind]}\n  }}\n]\n"
        "version_policy: { latest { num_versions: 1 } }\n"
    )


def require_verified(paths: A.ArtifactPaths) -> dict:
    manifest = A.read_manifest(paths)
    A.require_file(paths, manifest, A.ONNX, "export")
    if not manifest.get("verify", {}).get("passed"):
        raise MissingArtifact(f"{paths.arch} in {paths.root} is not verified: run verify first (ship takes verified artifacts only)")
    A.require_file(paths, manifest, A.VERIFY, "verify")
    return manifest


def model_card(manifest: dict, verify_report: dict) -> str:
    cfg, train, val, exp = manifest["config"], manifest["train"], manifest["validation"], manifest["export"]
    files = manifest["files"]
    lines = [
        f"# Model card: {cfg['arch']} XOR MLP",
        "",
        "## What it is for",
        "A teaching-sized multilayer perceptron that computes XOR of two inputs near {0, 1}. It is a",
        "demonstration of a verified train-to-ONNX pipeline, not a model for real data.",
        "",
        "## Input and output",
        f"- input `{exp['input']['name']}`: float32 {exp['input']['shape']}",
        f"- output `{exp['output']['name']}`: float32 {exp['output']['shape']}, the probability that XOR is 1;"
        " label 1 when it is above 0.5",
        f"- ONNX opset {exp['opset']}, exporter {exp['exporter']}, one self-contained file",
        "",
        "## Training",
        f"- layers {cfg['widths']} (Linear + Sigmoid each), {cfg['n_params']} parameters",
        f"- {cfg['loss']} loss, {cfg['optimizer']} lr {cfg['lr']}, {cfg['steps']} steps, seed {cfg['seed']}",
        f"- trained on {train['device']} with the {train['trainer']} loop in {train['seconds']} s",
        "",
        "## Metrics",
        f"- final training loss {train['final_loss']:.6g}",
        f"- accuracy on the four XOR points {val['accuracy']:.2f} (gate {val['min_accuracy']:.2f});"
        f" probabilities {[round(p, 6) for p in val['probabilities']]}",
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
        "Input sets: " + "; ".join(f"{s['name']} ({s['rows']} rows{', seed ' + str(s['seed']) if s['seed'] is not None else ''})"
                                   for s in verify_report["input_sets"]),
        "",
        "## Hashes (sha256)",
        *[f"- `{name}`: `{entry['sha256']}`" for name, entry in files.items()],
        "",
        "## Versions",
        *[f"- {k} {v}" for k, v in manifest["versions"].items()],
        "",
        "## Known limits",
        "- Tiny model trained on four points: it knows XOR and nothing else; outputs for inputs far",
        "  from {0, 1} are extrapolation (verified for agreement between runtimes, not for meaning).",
        "- CUDA figures appear only where a GPU was present when `verify` ran.",
    ]
    return "\n".join(lines) + "\n"


def ship(root: Path, arch: str, out: Path, max_batch_size: int = 1024, instance_kind: str = "auto", instances: int = 1) -> ShipResult:
    import json

    if instance_kind not in INSTANCE_KINDS:
        raise UsageError(f"unknown instance kind {instance_kind!r}: choose one of {', '.join(INSTANCE_KINDS)}")
    paths = A.ArtifactPaths(root, arch)
    manifest = require_verified(paths)
    report = json.loads(paths.verify.read_text(encoding="utf-8"))
    card = A.stage_bytes(paths.folder, A.CARD, model_card(manifest, report).encode())
    A.commit(paths, "card", {A.CARD: card}, {})

    name = model_name(arch)
    model_dir = out / name
    A.ensure_folder(model_dir)
    existing = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    version = max(existing, default=0) + 1
    tmp = model_dir / f"{A.TMP_PREFIX}{version}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        shutil.copyfile(paths.onnx, tmp / "model.onnx")
        with open(tmp / "model.onnx", "rb+") as f:
            os.fsync(f.fileno())
        if A.sha256_file(tmp / "model.onnx") != manifest["files"][A.ONNX]["sha256"]:
            raise ArtifactWriteError(f"copy of {paths.onnx} into {tmp} does not match its sha256")
        os.rename(tmp, model_dir / str(version))  # fails if that version exists (non-empty)
        A.write_atomic(model_dir / "config.pbtxt", config_pbtxt(name, paths.onnx, max_batch_size, instance_kind, instances).encode())
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise A.write_error(model_dir, exc) from None
    return ShipResult(name, version, model_dir / "config.pbtxt", model_dir / str(version) / "model.onnx", paths.card)
