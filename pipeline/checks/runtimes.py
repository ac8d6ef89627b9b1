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

A graph that takes text (one input per column, `spec.encoding`) holds string operators, which
onnxruntime runs on its CPU provider only, inside the same session as the CUDA nodes. `node_placement`
reads where each node really ran from onnxruntime's session profile, so that a report names the split
(`Placement.summary`), never a plain "CUDA".
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
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
    # where the nodes ran, read from a profiled run (`Placement.summary`); None: not measured (verify
    # and serve-check measure it for models with an encoding, whose string operators run on the CPU)
    placement: str | None = None

    @property
    def primary(self) -> str:
        return self.used[0] if self.used else "none"

    @property
    def on_cuda(self) -> bool:
        return self.primary == CUDA_EP

    @property
    def label(self) -> str:
        """The provider as a summary names it: the primary one, and the CPU beside CUDA where the string
        operators ran there (never a plain "CUDA" for a split session)."""
        if self.on_cuda and self.placement and CPU_EP in self.placement:
            return f"{CUDA_EP}+CPU (strings)"
        return self.primary

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"requested": self.requested, "used": list(self.used), "cuda_note": self.cuda_note}
        if self.placement is not None:
            out["placement"] = self.placement
        return out


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
    onnx: bytes | Path,
    provider: str = "auto",
    threads: int | None = None,
    where: str = "model",
    spin: bool = True,
    profile_prefix: str | None = None,
) -> tuple[Any, ProviderReport]:
    """(session, ProviderReport) for the model's bytes (or a path, for tests and tools). Raises
    DeviceUnavailable when `provider == "cuda"` cannot be met. `spin=False`: onnxruntime's threads sleep
    between runs instead of spinning (for a caller whose other threads need the cores: a streamed
    `predict` parses the next block while the model runs). `profile_prefix`: the session profiles its
    runs into a JSON file named from it (`session.end_profiling()`; see `node_placement`)."""
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise UsageError(f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; the CUDA fallback is caught below, not printed
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
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


@dataclass(frozen=True)
class _Input:
    name: str
    type: str


RUNNER_NAMES = ("torch-cpu", "torch-cuda", "ort-cpu", "ort-cuda", "onnx-reference")


@dataclass(frozen=True)
class Runner:
    name: str  # what really ran: torch-cpu, torch-cuda, ort-cpu, ort-cuda, onnx-reference, ...
    detail: str  # versions, dtype, providers actually used, device
    # raw rows (spec.encoding.Raw: (rows, n_in) f32, or one array per column) -> (rows, n_out)
    run: Callable[[Any], np.ndarray] = field(repr=False)
    prepare: Callable[[Any], Callable[[], object]] = field(repr=False)  # bind x once: for timing
    deterministic: bool = True  # CPU runtimes repeat to the byte
    providers: ProviderReport | None = None  # onnxruntime only


def raw_feeds(x: Any, inputs: Sequence[Any]) -> dict[str, Any]:
    """onnxruntime's (or the reference evaluator's) feed for raw rows `x` (`spec.encoding.Raw`): a float32
    matrix for a graph with one input, or a mapping column -> values for a graph with one input per
    column (each as [rows, 1]: float32, or object strings for a string input). `inputs`: the graph's
    inputs, each with `.name` and `.type` ("tensor(string)", ...)."""
    import numpy as np

    if type(x) is np.ndarray or not isinstance(x, Mapping):  # the type first: Mapping's check is slower
        return {inputs[0].name: np.ascontiguousarray(x, dtype=np.float32)}
    out = {}
    for i in inputs:
        v = np.asarray(x[i.name])
        if i.type == "tensor(string)":
            out[i.name] = v.astype(object).reshape(-1, 1)
        else:
            out[i.name] = np.ascontiguousarray(v, dtype=np.float32).reshape(-1, 1)
    return out


def torch_runner(
    model: Any, device: str = "cpu", dtype: str = "float32", name: str | None = None, encoding: Any = None
) -> Runner:
    """The torch model on `device` in `dtype`, on a private copy (the caller's model is not moved).
    `encoding` (`spec.encoding.Encoding`): the runner takes raw rows and encodes them with the numpy
    reference first (the torch model sees the encoded features, as in training)."""
    import copy

    import numpy as np
    import torch

    torch_dtype = getattr(torch, dtype)
    m = copy.deepcopy(model).to(device=device, dtype=torch_dtype).eval()
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.allow_tf32 = False

    def prepare(x: Any) -> Callable[[], object]:
        if encoding is not None:
            x = encoding.encode(x)
        t = torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=torch_dtype)

        def call() -> object:
            with torch.no_grad():
                out = m(t)
            if device == "cuda":
                torch.cuda.synchronize()
            return out

        return call

    def run(x: Any) -> np.ndarray:
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
    inputs = session.get_inputs()
    input_name = inputs[0].name
    output_names = [o.name for o in session.get_outputs()]

    def run(x: Any) -> np.ndarray:
        try:
            out: np.ndarray = session.run(output_names[:1], raw_feeds(x, inputs))[0]
        except Exception as exc:  # onnxruntime's own Fail/RuntimeException types: the model cannot run
            first = (str(exc).splitlines() or [exc.__class__.__name__])[0][:300]
            raise CorruptArtifact(f"onnxruntime failed running {where}: {first}") from None
        return out

    def prepare(x: Any) -> Callable[[], object]:
        if isinstance(x, Mapping) or not on_cuda:
            feed = raw_feeds(x, inputs)
            return lambda: session.run(output_names[:1], feed)
        x = np.ascontiguousarray(x, dtype=np.float32)
        import onnxruntime as ort

        x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        binding = session.io_binding()
        binding.bind_ortvalue_input(input_name, x_dev)
        binding.bind_output(output_names[0], "cuda")
        return lambda: (session.run_with_iobinding(binding), binding.synchronize_outputs())

    name = "ort-cuda" if on_cuda else "ort-cpu"
    detail = f"onnxruntime, providers {list(report.used)}"
    return Runner(name, detail, run, prepare, deterministic=not on_cuda, providers=report)


class CannotRun(Exception):
    """A runtime that cannot run this graph's operators (the reference evaluator on a text operator):
    verify reports it as skipped, with this message as the reason, never as passed. Caught by the
    comparison engine; it never reaches the command line."""


def reference_runner(model: Any) -> Runner:
    """onnx's pure-numpy ReferenceEvaluator on an (already checked) ModelProto. On a graph with string
    operators (`graph.encoding_graph.string_nodes`) or string inputs, a failure to build or run raises
    CannotRun naming the operators, so that the caller skips this runtime with the reason."""
    import numpy as np
    import onnx
    from onnx.reference import ReferenceEvaluator

    from ..graph.contract import graph_inputs
    from ..graph.encoding_graph import string_nodes

    inputs = [_Input(i.name, "tensor(string)" if i.type.tensor_type.elem_type == 8 else "tensor(float)")
              for i in graph_inputs(model)]  # fmt: skip
    text_ops = string_nodes(model)
    texty = bool(text_ops) or any(i.type == "tensor(string)" for i in inputs)
    version = f"onnx {onnx.__version__} ReferenceEvaluator"

    def cannot(exc: Exception) -> CannotRun:
        first = (str(exc).splitlines() or [exc.__class__.__name__])[0][:200]
        ops = ", ".join(text_ops) or "string inputs"
        return CannotRun(f"{version} cannot run this graph's text operators ({ops}): {first}")

    try:
        evaluator = ReferenceEvaluator(model)
    except Exception as exc:  # onnx raises NotImplementedError, RuntimeError, ... for an operator it lacks
        if texty:
            raise cannot(exc) from None
        raise

    def run(x: Any) -> np.ndarray:
        # its sigmoid computes both branches; the unused one may overflow
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            try:
                outputs: Any = evaluator.run(None, raw_feeds(x, inputs))
            except Exception as exc:
                if texty:
                    raise cannot(exc) from None
                raise
            return outputs[0]

    def prepare(x: Any) -> Callable[[], object]:
        return lambda: run(x)

    return Runner("onnx-reference", f"{version} (numpy)", run, prepare)


# ---------------------------------------------------------------------------------------------
# Where onnxruntime ran each node


@dataclass(frozen=True)
class Placement:
    """Where onnxruntime ran each node of one profiled run: (node name, op type, provider, whether
    the node takes or makes strings), in the order they ran."""

    nodes: tuple[tuple[str, str, str, bool], ...]

    def providers(self) -> dict[str, int]:
        """provider -> how many nodes ran on it."""
        out: dict[str, int] = {}
        for _, _, provider, _ in self.nodes:
            out[provider] = out.get(provider, 0) + 1
        return out

    def string_ops(self) -> dict[str, tuple[str, ...]]:
        """provider -> the sorted op types of the nodes on strings that ran on it."""
        out: dict[str, set[str]] = {}
        for _, op, provider, text in self.nodes:
            if text:
                out.setdefault(provider, set()).add(op)
        return {p: tuple(sorted(ops)) for p, ops in out.items()}

    @property
    def summary(self) -> str:
        """One line: where the string operators ran, and how many of the other nodes ran where."""
        text = self.string_ops()
        others: dict[str, int] = {}
        for _, _, provider, is_text in self.nodes:
            if not is_text:
                others[provider] = others.get(provider, 0) + 1
        parts = [f"string operators ({', '.join(ops)}) ran on {p}" for p, ops in sorted(text.items())]
        rest = ", ".join(f"{n} on {p}" for p, n in sorted(others.items(), key=lambda kv: -kv[1]))
        if rest:
            parts.append(f"{'the other nodes' if text else 'nodes'}: {rest}")
        return "; ".join(parts) + " (onnxruntime session profile)" if parts else "no node ran (empty profile)"


def node_placement(onnx: bytes | Path, provider: str, x: Any, where: str = "model") -> Placement:
    """Run raw rows `x` once in a profiled onnxruntime session with `provider` and read, from the
    session profile, the provider each node ran on. A second session: the caller's own session is not
    slowed by profiling."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        session, _ = open_session(onnx, provider, where=where, profile_prefix=str(Path(tmp) / "ort"))
        try:
            session.run(None, raw_feeds(x, session.get_inputs()))
        except Exception as exc:  # onnxruntime's own types: the model cannot run
            first = (str(exc).splitlines() or [exc.__class__.__name__])[0][:300]
            raise CorruptArtifact(f"onnxruntime failed running {where}: {first}") from None
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes = []
    seen: set[str] = set()
    for e in events:
        args = e.get("args") or {}
        if e.get("cat") != "Node" or "provider" not in args or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(e["name"]).removesuffix("_kernel_time")
        if name in seen:
            continue
        seen.add(name)
        shapes = [*args.get("input_type_shape", []), *args.get("output_type_shape", [])]
        text = any("string" in s for s in shapes if isinstance(s, dict))
        nodes.append((name, str(args.get("op_name", "?")), str(args["provider"]), text))
    return Placement(tuple(nodes))
