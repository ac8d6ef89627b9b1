"""One runner type for every runtime we compare or serve with, and onnxruntime sessions that tell
the truth about their provider.

A `Runner` (as in Polygraphy) has a name that says what really ran (`torch-cpu`, `torch-cuda`,
`ort-cpu`, `ort-cuda`, `onnx-reference`), a one-line detail, and `run(x) -> y` on numpy arrays;
`prepare(x)` binds an input once and returns a no-argument call, for timing. `verify`, `bench`,
`predict` and `serve` all build their runners here.

Torch-free at import: `predict` serves through this module without torch installed; torch is
imported only by `torch_runner`.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CorruptArtifact, DeviceUnavailable, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

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


def open_session(
    onnx: bytes | Path, provider: str = "auto", threads: int | None = None, where: str = "model", spin: bool = True
) -> tuple[Any, ProviderReport]:
    """(session, ProviderReport) for the model's bytes (or a path, for tests and tools). Raises
    DeviceUnavailable when `provider == "cuda"` cannot be met. `spin=False`: onnxruntime's threads sleep
    between runs instead of spinning (for a caller whose other threads need the cores: a streamed
    `predict` parses the next block while the model runs)."""
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise UsageError(f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; the CUDA fallback is caught below, not printed
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # a streamed caller's batches are all about one size: no arena growing to the largest, kept
        options.enable_cpu_mem_arena = False
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
            source = onnx if isinstance(onnx, bytes) else str(onnx)
            session = ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = (str(exc).splitlines() or [exc.__class__.__name__])[0][:300]
        raise CorruptArtifact(f"onnxruntime cannot load {where}: {first}") from None
    used = tuple(session.get_providers())
    if want_cuda and CUDA_EP not in used:
        reason = _first_error_line(log[0] if log else "") or "reason not reported"
        note = f"onnxruntime could not start its CUDA provider ({reason}); it fell back to the CPU"
        if provider == "cuda":
            raise DeviceUnavailable(f"--provider cuda: {note}")
    return session, ProviderReport(provider, used, None if CUDA_EP in used else note)


# ---------------------------------------------------------------------------------------------
# Runners

RUNNER_NAMES = ("torch-cpu", "torch-cuda", "ort-cpu", "ort-cuda", "onnx-reference")


@dataclass(frozen=True)
class Runner:
    name: str  # what really ran: torch-cpu, torch-cuda, ort-cpu, ort-cuda, onnx-reference, ...
    detail: str  # versions, dtype, providers actually used, device
    run: Callable[[np.ndarray], np.ndarray] = field(repr=False)  # (rows, n_in) f32 -> (rows, n_out)
    prepare: Callable[[np.ndarray], Callable[[], object]] = field(repr=False)  # bind x once: for timing
    deterministic: bool = True  # CPU runtimes repeat to the byte
    providers: ProviderReport | None = None  # onnxruntime only


def torch_runner(model: Any, device: str = "cpu", dtype: str = "float32", name: str | None = None) -> Runner:
    """The torch model on `device` in `dtype`, on a private copy (the caller's model is not moved)."""
    import copy

    import numpy as np
    import torch

    torch_dtype = getattr(torch, dtype)
    m = copy.deepcopy(model).to(device=device, dtype=torch_dtype).eval()
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.allow_tf32 = False

    def prepare(x: np.ndarray) -> Callable[[], object]:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=torch_dtype)

        def call() -> object:
            with torch.no_grad():
                out = m(t)
            if device == "cuda":
                torch.cuda.synchronize()
            return out

        return call

    def run(x: np.ndarray) -> np.ndarray:
        return prepare(x)().cpu().numpy()  # type: ignore[attr-defined]

    detail = f"torch {torch.__version__}, {dtype}, {device}"
    if device == "cuda":
        detail += f" ({torch.cuda.get_device_name()})"
    return Runner(name or f"torch-{device}", detail, run, prepare, deterministic=(device == "cpu"))


def ort_runner(
    onnx: bytes | Path, provider: str = "auto", threads: int | None = None, where: str = "model", spin: bool = True
) -> Runner:
    """onnxruntime with `provider`; the runner's name says what really ran, not what was asked.
    On CUDA, `prepare` binds the input on the device once (IO binding). `spin`: see `open_session`."""
    import numpy as np

    session, report = open_session(onnx, provider, threads, where, spin)
    on_cuda = report.primary == CUDA_EP
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]

    def run(x: np.ndarray) -> np.ndarray:
        try:
            out: np.ndarray = session.run(output_names[:1], {input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        except Exception as exc:  # onnxruntime's own Fail/RuntimeException types: the model cannot run
            first = (str(exc).splitlines() or [exc.__class__.__name__])[0][:300]
            raise CorruptArtifact(f"onnxruntime failed running {where}: {first}") from None
        return out

    def prepare(x: np.ndarray) -> Callable[[], object]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not on_cuda:
            return lambda: session.run(output_names[:1], {input_name: x})
        import onnxruntime as ort

        x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        binding = session.io_binding()
        binding.bind_ortvalue_input(input_name, x_dev)
        binding.bind_output(output_names[0], "cuda")
        return lambda: (session.run_with_iobinding(binding), binding.synchronize_outputs())

    name = "ort-cuda" if on_cuda else "ort-cpu"
    detail = f"onnxruntime, providers {list(report.used)}"
    return Runner(name, detail, run, prepare, deterministic=not on_cuda, providers=report)


def reference_runner(model: Any) -> Runner:
    """onnx's pure-numpy ReferenceEvaluator on an (already checked) ModelProto."""
    import numpy as np
    import onnx
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model)
    input_name = evaluator.input_names[0]

    def run(x: np.ndarray) -> np.ndarray:
        # its sigmoid computes both branches; the unused one may overflow
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            outputs: Any = evaluator.run(None, {input_name: np.ascontiguousarray(x, dtype=np.float32)})
            return outputs[0]

    def prepare(x: np.ndarray) -> Callable[[], object]:
        return lambda: run(x)

    return Runner("onnx-reference", f"onnx {onnx.__version__} ReferenceEvaluator (numpy)", run, prepare)
