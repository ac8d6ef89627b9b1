"""onnxruntime sessions that tell the truth about their provider, and safe loading of ONNX files.

Torch-free by design: `predict` serves through this module without torch installed.

Provider policy. onnxruntime-gpu lists CUDAExecutionProvider as available whether or not a GPU and
its libraries exist; asked for it without them, it prints red errors from C++ and silently runs on
the CPU. So we (1) probe the CUDA driver for a device before asking (no device -> do not ask, say
why in one line), (2) capture onnxruntime's own stderr while the session is created, and (3) trust
only `session.get_providers()` afterwards. `--provider cuda` fails unless CUDA really came up.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import CorruptArtifact, DeviceUnavailable, IntegrityError, UsageError

PROVIDERS = ("auto", "cuda", "cpu")
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


@dataclass(frozen=True)
class ProviderReport:
    requested: str  # auto | cuda | cpu
    used: tuple[str, ...]  # session.get_providers(), the truth
    cuda_note: str | None  # why CUDA is not in use, when it is not

    @property
    def primary(self) -> str:
        return self.used[0] if self.used else "none"

    @property
    def on_cuda(self) -> bool:
        return self.primary == CUDA_EP

    def as_dict(self) -> dict:
        return {"requested": self.requested, "used": list(self.used), "cuda_note": self.cuda_note}


def cuda_device_problem() -> str | None:
    """None when the CUDA driver reports at least one device; otherwise the reason, in one line."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no CUDA driver on this machine (libcuda.so.1 not found), so onnxruntime runs on the CPU"
    try:
        rc = lib.cuInit(0)
        if rc != 0:
            return f"the CUDA driver did not initialise (cuInit error {rc}), so onnxruntime runs on the CPU"
        count = ctypes.c_int(0)
        rc = lib.cuDeviceGetCount(ctypes.byref(count))
        if rc != 0 or count.value < 1:
            return "the CUDA driver sees no GPU, so onnxruntime runs on the CPU"
    except AttributeError:
        return "libcuda.so.1 is not a usable CUDA driver, so onnxruntime runs on the CPU"
    return None


@contextlib.contextmanager
def _captured_stderr():
    """Capture file descriptor 2 (onnxruntime logs from C++, beneath Python's sys.stderr)."""
    import sys

    with tempfile.TemporaryFile(mode="w+b") as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        box: list[str] = []
        try:
            yield box
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            box.append(sink.read().decode(errors="replace"))


def _first_error_line(log: str) -> str | None:
    for line in log.splitlines():
        low = line.lower()
        if "error" in low or "fail" in low or "cannot" in low:
            # strip onnxruntime's timestamp/location prefix, keep the message
            return line.split("] ", 1)[-1].strip()[:300]
    return None


def open_session(onnx_path: Path, provider: str = "auto", threads: int | None = None):
    """(session, ProviderReport). Raises DeviceUnavailable when `provider == "cuda"` cannot be met."""
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise UsageError(f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; the CUDA fallback is caught below, not printed
    if threads:
        options.intra_op_num_threads = threads
    note: str | None = None
    want_cuda = provider in ("auto", "cuda")
    if want_cuda and CUDA_EP not in ort.get_available_providers():
        note = f"this onnxruntime build ({ort.__version__}) has no CUDA provider"
        want_cuda = False
    if want_cuda:
        note = cuda_device_problem()
        want_cuda = note is None
    if provider == "cuda" and not want_cuda:
        raise DeviceUnavailable(f"--provider cuda: {note}")
    providers: list = [CPU_EP]
    if want_cuda:
        with contextlib.suppress(Exception):
            ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels that a CUDA torch brings
        # use_tf32=0: TF32 matmuls differ from fp32 at 1e-3; we compare at fp32 precision
        providers = [(CUDA_EP, {"device_id": "0", "use_tf32": "0"}), CPU_EP]
    try:
        with _captured_stderr() as log:
            session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise CorruptArtifact(f"onnxruntime cannot load {onnx_path}: {str(exc).splitlines()[0][:300]}") from None
    used = tuple(session.get_providers())
    if want_cuda and CUDA_EP not in used:
        reason = _first_error_line(log[0] if log else "") or "reason not reported"
        note = f"onnxruntime could not start its CUDA provider ({reason}); it fell back to the CPU"
        if provider == "cuda":
            raise DeviceUnavailable(f"--provider cuda: {note}")
    return session, ProviderReport(provider, used, None if CUDA_EP in used else note)


# ---------------------------------------------------------------------------------------------
# Loading ONNX files safely


@dataclass(frozen=True)
class OnnxInfo:
    path: Path
    opset: int | None
    input_name: str
    output_name: str
    metadata: dict[str, str]


def inspect_onnx(path: Path) -> OnnxInfo:
    """Parse and check an ONNX file we are about to serve: readable, self-contained (no external
    data, and never any pointing outside its folder), valid, and of the XOR model's signature."""
    import onnx

    from .export import signature_problems

    if not path.exists():
        raise CorruptArtifact(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise CorruptArtifact(f"{path} is empty")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise CorruptArtifact(f"{path} is not a valid ONNX file ({exc.__class__.__name__})") from None
    folder = path.parent.resolve()
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = {e.key: e.value for e in tensor.external_data}.get("location", "")
            target = (folder / location).resolve()
            if os.path.isabs(location) or not target.is_relative_to(folder):
                raise IntegrityError(
                    f"{path}: tensor {tensor.name!r} points at external data outside its folder ({location!r}); refused"
                )
            raise IntegrityError(
                f"{path}: tensor {tensor.name!r} keeps its data in an external file ({location!r}); "
                "shipped models must be self-contained"
            )
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise CorruptArtifact(f"{path} fails the ONNX checker: {str(exc).splitlines()[0][:300]}") from None
    problem = signature_problems(model)
    if problem:
        raise CorruptArtifact(f"{path} is not an XOR model of this tool: {problem}")
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    return OnnxInfo(
        path=path,
        opset={o.domain: o.version for o in model.opset_import}.get(""),
        input_name=inputs[0],
        output_name=model.graph.output[0].name,
        metadata={p.key: p.value for p in model.metadata_props},
    )


def _all_tensors(model):
    yield from model.graph.initializer
    stack = list(model.graph.node)
    while stack:
        node = stack.pop()
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for g in [attr.g] if attr.HasField("g") else []:
                yield from g.initializer
                stack.extend(g.node)
            for g in attr.graphs:
                yield from g.initializer
                stack.extend(g.node)
