"""Stage 3: export a trained model (in memory) to one self-contained ONNX file, and check it.

The seam is `export_model(model, ...)`: it takes a model already in memory, so `all` exports what it
just trained and the `export` command exports what it loaded from disk, through the same function.
"""
from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from . import artifacts as A
from .errors import ExportFailed

OPSET = 18  # pinned: the first opset the dynamo exporter emits; Gemm + Sigmoid are stable there
INPUT_NAME = "x"  # (batch, 2) float32
OUTPUT_NAME = "probability"  # (batch, 1) float32
BATCH_DIM = "batch"


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    opset: int
    sha256: str
    input_name: str
    output_name: str
    batch_dim: str
    seconds: float

    def as_dict(self) -> dict:
        return {
            "exporter": "torch.onnx.export(dynamo=True)",
            "opset": self.opset,
            "input": {"name": self.input_name, "shape": [self.batch_dim, 2], "dtype": "float32"},
            "output": {"name": self.output_name, "shape": [self.batch_dim, 1], "dtype": "float32"},
            "seconds": round(self.seconds, 3),
        }


@contextlib.contextmanager
def _quiet():
    """The exporter logs progress and 'torchvision is not installed' warnings: keep them off the console."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript", "torch")]
    levels = [lg.level for lg in loggers]
    sink = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _to_onnx(model, path: Path) -> None:
    import torch

    example = torch.zeros(4, 2, dtype=torch.float32)  # (batch, 2); batch is symbolic below
    with _quiet():
        try:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=True,  # the modern exporter, stated explicitly
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},),
                external_data=False,
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many types; all mean the same to the user
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise ExportFailed(f"torch.onnx.export failed: {detail}") from None


def check_exported(path: Path) -> None:
    """Post-export checks on the file as saved: checker (full), opset, names, symbolic batch."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportFailed(f"onnx checker rejected {path.name}: {str(exc).splitlines()[0]}") from None
    model = onnx.load(str(path), load_external_data=False)
    opset = {o.domain: o.version for o in model.opset_import}.get("", None)
    if opset != OPSET:
        raise ExportFailed(f"{path.name} has opset {opset}, expected {OPSET}")
    problems = signature_problems(model)
    if problems:
        raise ExportFailed(f"{path.name}: {problems}")


def signature_problems(model) -> str | None:
    """None when the graph has input x (batch, 2) float32 and first output (batch, 1) float32."""
    from onnx import TensorProto

    def describe(vi) -> tuple[int, list]:
        t = vi.type.tensor_type
        return t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim]

    ins = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(ins) != 1 or not model.graph.output:
        return f"expected one input and at least one output, found {len(ins)} and {len(model.graph.output)}"
    in_type, in_shape = describe(ins[0])
    out_type, out_shape = describe(model.graph.output[0])
    if in_type != TensorProto.FLOAT or len(in_shape) != 2 or in_shape[1] != 2 or isinstance(in_shape[0], int) and in_shape[0] != 0:
        return f"input {ins[0].name!r} is {TensorProto.DataType.Name(in_type)}{in_shape}, expected FLOAT[{BATCH_DIM}, 2]"
    if out_type != TensorProto.FLOAT or len(out_shape) != 2 or out_shape[1] != 1:
        return f"output {model.graph.output[0].name!r} is {TensorProto.DataType.Name(out_type)}{out_shape}, expected FLOAT[{BATCH_DIM}, 1]"
    if not isinstance(in_shape[0], str) or in_shape[0] != out_shape[0]:
        return f"batch dimension is not symbolic and shared: input {in_shape}, output {out_shape}"
    return None


def export_model(model, paths: A.ArtifactPaths, facts: dict[str, str]) -> tuple[ExportResult, Path]:
    """Export `model` to a staged (not yet committed) file. Returns the result and the staged path.

    `facts` (arch, seed, steps, final loss, accuracy...) go into the model's metadata_props.
    """
    import onnx

    start = time.perf_counter()
    model = model.cpu().eval()  # the exporter warns on training mode; export what is served

    def write(tmp: Path) -> None:
        _to_onnx(model, tmp)
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]  # exporter internals; ours replace them
        for key, value in facts.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = f"xorship.{key}", str(value)
        proto.doc_string = f"XOR MLP '{facts.get('arch')}' exported by xorship; output > 0.5 means label 1"
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        check_exported(tmp)

    staged = A.stage_file(paths.folder, A.ONNX, write)
    result = ExportResult(
        onnx_path=paths.onnx,
        opset=OPSET,
        sha256=A.sha256_file(staged),
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        batch_dim=BATCH_DIM,
        seconds=time.perf_counter() - start,
    )
    return result, staged


def facts_from_manifest(manifest: dict) -> dict[str, str]:
    cfg, train, val = manifest["config"], manifest["train"], manifest["validation"]
    return {
        "arch": cfg["arch"],
        "seed": cfg["seed"],
        "steps": cfg["steps"],
        "lr": cfg["lr"],
        "final_loss": repr(train["final_loss"]),
        "accuracy": val["accuracy"],
        "trained_on": train["device"],
        "weights_sha256": manifest["files"][A.WEIGHTS]["sha256"],
    }


def export(model, paths: A.ArtifactPaths, manifest: dict) -> ExportResult:
    """Export and commit: model.onnx replaces the old one only once it passed every check."""
    result, staged = export_model(model, paths, facts_from_manifest(manifest))
    A.commit(paths, "export", {A.ONNX: staged}, {"export": result.as_dict()})
    return result


def run_stage(paths: A.ArtifactPaths, arch) -> ExportResult:
    """Export the saved weights (sha256-checked) of a model that passed the gate."""
    from .errors import GateFailed
    from .train import load_trained

    manifest, model = load_trained(paths, arch)
    validation = manifest.get("validation", {})
    if not validation.get("passed"):
        raise GateFailed(f"{arch.name} in {paths.root} has not passed the accuracy gate: run train or validate first")
    return export(model, paths, manifest)
