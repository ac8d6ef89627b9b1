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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExportFailed, GateFailed, raise_if_stopped, stop_exception_in
from ..spec.archs import INPUT_NAME, Arch
from ..store import artifacts as A
from ..store.manifest import ExportRecord, Manifest, TensorRecord
from ..training.model import load_trained
from .contract import (
    BATCH_DIM,
    EXPORTER,
    META_PREFIX,
    OPSET,
    OUTPUT_NAME,
    expected_inputs,
    metadata_props,
    opset_of,
    parse_checked,
    signature_problems,
)
from .encoding_graph import attach, opset_for

if TYPE_CHECKING:  # pragma: no cover
    import onnx


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    opset: int
    sha256: str
    input_name: str
    output_name: str
    batch_dim: str
    n_inputs: int
    n_outputs: int
    seconds: float
    inputs: tuple[tuple[str, str, int], ...] = ()  # (name, dtype, width) per input, where one per column

    def record(self) -> ExportRecord:
        return ExportRecord(
            exporter=EXPORTER,
            opset=self.opset,
            input=TensorRecord(self.input_name, (self.batch_dim, self.n_inputs), "float32"),
            output=TensorRecord(self.output_name, (self.batch_dim, self.n_outputs), "float32"),
            seconds=round(self.seconds, 3),
            inputs=tuple(TensorRecord(n, (self.batch_dim, w), t) for n, t, w in self.inputs),
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
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


def _to_proto(model: Any, n_inputs: int, output_name: str = OUTPUT_NAME, opset: int = OPSET) -> onnx.ModelProto:
    """The exporter's model, in memory: torch.onnx.export(dynamo=True) with no file, so that the
    caller serializes it once (instead of the exporter writing a file that is read back, changed and
    written again). The same bytes as the exporter's own file (external_data=False)."""
    import torch

    example = torch.zeros(4, n_inputs, dtype=torch.float32)  # (batch, n_inputs); batch is symbolic below
    with _quiet():
        try:
            program = torch.onnx.export(
                model,
                (example,),
                None,  # no file: the ONNXProgram is returned
                dynamo=True,  # the modern exporter, stated explicitly
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[output_name],
                dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},),
                external_data=False,
                verbose=False,
            )
            assert program is not None
            return program.model_proto
        except Exception as exc:  # the exporter raises many types; all mean the same to the user
            stop = stop_exception_in(exc)
            if stop is not None:  # Ctrl-C / SIGTERM wrapped by torch.export: still an interruption
                raise stop.__class__() from None
            raise_if_stopped()
            import re

            text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # the exporter colours its messages
            detail = text.splitlines()[0] if text else exc.__class__.__name__
            raise ExportFailed(f"torch.onnx.export failed: {detail[:300]}") from None


def model_proto(model: Any, arch: Arch) -> onnx.ModelProto:
    """The file's graph without our metadata: the network exported, behind its encoding (when the arch
    has one), so that it takes raw rows (tools and `bench`)."""
    proto = _to_proto(model.cpu().eval(), arch.n_encoded, arch.output_name, opset_for(arch.encoding))
    return attach(proto, arch.encoding) if arch.encoding is not None else proto


def _to_onnx(model: Any, n_inputs: int, path: Path, output_name: str = OUTPUT_NAME) -> None:
    """The exporter's model written to `path` as it stands (no metadata of ours): for tools and tests."""
    path.write_bytes(_to_proto(model, n_inputs, output_name).SerializeToString())


def check_exported(data: bytes, where: str, arch: Arch) -> None:
    """Post-export checks on the file's bytes: self-contained, checker (full), opset, names,
    symbolic batch."""
    from ..errors import PipelineError

    try:
        model = parse_checked(data, where)
    except PipelineError as exc:
        raise ExportFailed(f"the exported file failed its checks: {exc}") from None
    opset = opset_of(model)
    if opset != opset_for(arch.encoding):
        raise ExportFailed(f"{where} has opset {opset}, expected {opset_for(arch.encoding)}")
    problems = signature_problems(model, arch.n_inputs, arch.n_outputs, arch)
    if problems:
        raise ExportFailed(f"{where}: {problems}")


def export_model(model: Any, arch: Arch, paths: A.ArtifactPaths, facts: dict[str, Any]) -> tuple[ExportResult, Path]:
    """Export `model` to a staged (not yet committed) file. Returns the result and the staged path.

    `facts` (arch, seed, steps, final loss, accuracy...) go into the model's metadata_props. The
    model is serialized once; those bytes are checked, hashed and written.
    """
    import hashlib

    start = time.perf_counter()
    proto = model_proto(model, arch)  # eval mode (the exporter warns on training mode); raw columns in
    del proto.metadata_props[:]  # exporter internals; ours replace them
    props = {f"{META_PREFIX}{key}": str(value) for key, value in facts.items()} | metadata_props(arch)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = _doc(arch)
    data = proto.SerializeToString()
    check_exported(data, paths.onnx.name, arch)
    staged = A.stage_bytes(paths.folder, A.ONNX, data)
    result = ExportResult(
        onnx_path=paths.onnx,
        opset=opset_for(arch.encoding),
        sha256=hashlib.sha256(data).hexdigest(),
        input_name=INPUT_NAME,
        output_name=arch.output_name,
        batch_dim=BATCH_DIM,
        n_inputs=arch.n_inputs,
        n_outputs=arch.n_outputs,
        seconds=time.perf_counter() - start,
        inputs=_input_records(arch),
    )
    return result, staged


def _input_records(arch: Arch) -> tuple[tuple[str, str, int], ...]:
    if not arch.per_column:
        return ()
    from onnx import TensorProto

    return tuple((name, "float32" if t == TensorProto.FLOAT else "string", w) for name, t, w in expected_inputs(arch))


def _doc(arch: Arch) -> str:
    head = {
        "binary": f"output {arch.output_name!r} is the probability of class {arch.classes[-1]!r} (> 0.5: that class)"
        if arch.classes
        else "",
        "multiclass": f"output {arch.output_name!r} holds the probabilities of classes {list(arch.classes)!r}",
        "regression": f"output {arch.output_name!r} is the prediction in the target's units",
    }[arch.task]
    what = "XOR MLP" if arch.features == ("x1", "x2") and arch.is_tutorial_stack else f"{arch.task} MLP"
    takes = (
        f"inputs {list(arch.features)} take one raw column each ([batch, 1]: float32 numbers, NaN for missing; strings)"
        if arch.per_column
        else f"input 'x' takes raw features {list(arch.features)}" + (" (NaN: missing)" if arch.encoding else "")
    )
    return f"{what} '{arch.name}' exported by xorship; {takes}; {head}"


def facts_from_manifest(manifest: Manifest) -> dict[str, Any]:
    cfg, train, val = manifest.config, manifest.train, manifest.validation
    weights = manifest.file(A.WEIGHTS)
    assert cfg is not None and train is not None and val is not None and weights is not None  # checked by callers
    return {
        "arch": cfg.name,  # on-disk key (xorship.arch): the model's name
        "seed": cfg.seed,
        "steps": cfg.steps,
        "lr": cfg.lr,
        "final_loss": repr(train.final_loss),
        "accuracy": val.accuracy if val.accuracy is not None else "",
        "rmse": val.rmse if val.rmse is not None else "",
        "trained_on": train.device,
        "weights_sha256": weights.sha256,
    }


def export(model: Any, arch: Arch, paths: A.ArtifactPaths, manifest: Manifest) -> ExportResult:
    """Export and commit: model.onnx replaces the old one only once it passed every check."""
    result, staged = export_model(model, arch, paths, facts_from_manifest(manifest))
    A.commit(paths, "export", {A.ONNX: staged}, {"export": result.record()}, manifest)
    return result


def run_stage(paths: A.ArtifactPaths, arch: Arch, manifest: Manifest | None = None) -> ExportResult:
    """Export the saved weights (sha256-checked) of a model that passed the gate. `manifest`: the
    folder's, already read under the same lock."""
    manifest, model = load_trained(paths, arch, manifest)
    if (
        manifest.validation is None
        or not manifest.validation.passed
        or manifest.config is None
        or manifest.train is None
    ):
        raise GateFailed(f"{arch.name} in {paths.root} has not passed the accuracy gate: {paths.hint('train')}")
    return export(model, arch, paths, manifest)
