"""What `serve` serves and what a request must be, whatever the protocol: the server's settings
(`ServeConfig`), a model version loaded and checked (`Loaded`, by `load`) and the one reference its
requests read (`Slot`), the inputs a model takes (`Tensor`), the strict reading of a request's inputs
that REST and gRPC share (`check_inputs`, `tensor_from_json`, `tensor_from_bytes`, ...) and the refusal
it raises (`BadRequest`), a request run with batching off (`run_direct`), readiness (`Health`) and the
log of 503s (`OverloadLog`). `rest.py` and `grpc_service.py` speak the two protocols on it; `serve.py`
starts, reloads and stops the server."""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CorruptArtifact
from ..spec.archs import INPUT_NAME, Arch
from ..spec.encoding import STRING, Raw, raw_len
from ..store import artifacts as A

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ..checks.runtimes import ProviderReport
    from .predict import Predictor, ServedModel

SESSION_THREADS = 1  # onnxruntime intra-op threads per session (see `load`)
DEFAULT_MAX_REQUEST_MB = (
    64  # one bound for REST bodies and gRPC messages (a 1024-row batch of 4096 FP32 features as JSON fits)
)
DEFAULT_HEADER_TIMEOUT_S = 30.0
PLATFORM = "onnxruntime_onnx"  # what Triton reports for the same file
DATATYPE = "FP32"  # what every model of this tool answers, and takes for numbers
BYTES = "BYTES"  # what a model that takes one input per column takes for text, booleans and dates (UTF-8)
SERVER_NAME = "xorship"
SMALL_VALUES = 4096  # a JSON input of at most this many values is checked value by value in Python
SMALL_FINITE = 64  # an array of at most this many values is checked for finite values in Python
F32_MAX = 3.4028234663852886e38  # the largest finite float32
F32_MAX = 3.4028234663852886e38  # the largest finite float32
OVERLOAD_LOG_SECONDS = 1.0  # a 503's log line (the server over its load) at most this often


def one_line(text: str, limit: int = 400) -> str:
    """`text` safe to log as one line: control characters and line separators escaped (a client's
    bytes can end up in a message), cut at `limit` characters."""
    out = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text[: limit + 1])
    return out if len(out) <= limit else out[: limit - 3] + "..."


class OverloadLog:
    """Log lines about 503s (the batch queue full, the request-body budget spent: the server over its
    load, refusing at once so that clients retry) at most once per `seconds`: under overload every
    refused request would otherwise be a line, and writing them would take the time the server lacks.
    A line left out is not lost: the last of them is written once the `seconds` are over (on the event
    loop, or with the next 503 where there is no loop), saying how many others were left out. The
    event loop's thread only."""

    def __init__(self, on_line: Callable[[str], None], seconds: float = OVERLOAD_LOG_SECONDS,
                 clock: Callable[[], float] = time.monotonic, what: str = "503s"):  # fmt: skip
        self.on_line, self.seconds, self.clock, self.what = on_line, seconds, clock, what
        self.last = -math.inf
        self.left_out: list[str] = []  # the lines not written since the last one written (the latest kept)
        self.count = 0

    def __call__(self, line: str) -> None:
        now = self.clock()
        if now - self.last < self.seconds:
            if not self.count:
                self._later(self.last + self.seconds - now)
            self.left_out[:] = [line]
            self.count += 1
            return
        self._write(line, self.count, now)

    def _later(self, delay: float) -> None:
        import asyncio

        try:
            asyncio.get_running_loop().call_later(delay, self.flush)
        except RuntimeError:  # no event loop (a test): the next 503 writes it
            pass

    def flush(self) -> None:
        """Write the latest line left out, if any, with how many others were."""
        if self.count:
            self._write(self.left_out[0], self.count - 1, self.clock())

    def _write(self, line: str, others: int, now: float) -> None:
        if others:
            line += f" (and {others} more {self.what} like it since the last one shown, not logged)"
        self.last, self.count = now, 0
        self.left_out.clear()
        self.on_line(line)


class BadRequest(Exception):
    """A request `serve` refuses; the message is the client's answer. `status`: the HTTP status (400
    unless said otherwise); gRPC maps it (400: INVALID_ARGUMENT, 404: NOT_FOUND, 413: RESOURCE_EXHAUSTED)."""

    def __init__(self, message: str, status: int = 400, close: bool = False):
        super().__init__(message)
        self.status = status
        self.close = close  # REST: end the connection after the answer (a body too large to read through)


@dataclass(frozen=True)
class ServeConfig:
    """What `serve` serves and how. `names`: the models, as named in `root` (a built-in such as
    `shallow`, or a recipe's name); each is described by its own published manifest. `hints`: per
    name, the command-line selection that names it (`--arch shallow`, `--recipe iris.toml`), for the
    messages that say how to publish a model that is not."""

    root: Path
    names: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    provider: str = "auto"
    max_batch_size: int = 1024
    version: int | None = None  # None: the published one, followed as it changes
    max_request_mb: int = DEFAULT_MAX_REQUEST_MB
    strict: bool = False  # refuse to start unless every named model is servable
    access_log: bool = False
    hints: dict[str, str] = field(default_factory=dict)
    workers: int = 1  # worker processes (serving.workers); 1: this process serves; 0: default_workers()
    batch_window_us: int = 0  # server-side batching window (serving.batching); 0: off
    # a REST request's line and headers must arrive within this many seconds of its first byte (or of
    # the connection): else 408 and the connection closed, so slow clients cannot hold connections
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S

    @property
    def models(self) -> tuple[str, ...]:
        """The model names to serve."""
        return self.names

    @property
    def max_request_bytes(self) -> int:
        return self.max_request_mb * 1024 * 1024


@dataclass(frozen=True)
class Tensor:
    """One input a served model takes: its v2 name, datatype (FP32 or BYTES) and width (values per
    row). `missing`: FP32 NaN is a value the model takes (its graph imputes it); else it is refused."""

    name: str
    datatype: str
    width: int
    missing: bool = False

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": [-1, self.width]}


def model_inputs(arch: Arch) -> tuple[Tensor, ...]:
    """What a model of `arch` takes over v2: one `x` (rows, n_inputs) FP32, or, when its graph takes one
    input per column, one (rows, 1) input per column named as the column, FP32 for numbers (and numeric
    category codes), BYTES for text, booleans and dates."""
    enc = arch.encoding
    if enc is not None and arch.per_column:
        return tuple(Tensor(c.name, BYTES if c.dtype == STRING else DATATYPE, 1, True) for c in enc.columns)
    return (Tensor(INPUT_NAME, DATATYPE, arch.n_inputs, enc is not None),)


@dataclass(frozen=True)
class Loaded:
    """One model version, fully loaded: what a request runs on. `arch` is the version's own
    network description (from its manifest): its inputs, output name and shape. `strings`: the
    graph's nodes that take or make a string tensor, as (count, operator types)."""

    arch: Arch
    served: ServedModel
    predictor: Predictor
    strings: tuple[int, tuple[str, ...]] = (0, ())

    @property
    def version(self) -> int:
        return self.served.version or 1

    @property
    def name(self) -> str:
        return self.arch.serving_name

    @functools.cached_property
    def tensors(self) -> tuple[Tensor, ...]:
        return model_inputs(self.arch)

    @functools.cached_property
    def by_name(self) -> dict[str, Tensor]:
        return {t.name: t for t in self.tensors}

    @functools.cached_property
    def plain_input(self) -> tuple[str, int] | None:
        """(name, width) of the model's one input when it is a FP32 matrix (`parse_rest`'s common
        request); None for a model with one input per column."""
        ts = self.tensors
        if len(ts) != 1 or ts[0].datatype != DATATYPE:
            return None
        return ts[0].name, ts[0].width

    @functools.cached_property
    def plain_columns(self) -> dict[str, bool] | None:
        """Input name -> whether it takes text (BYTES), in the model's order, for a model that takes
        one input per column (`parse_rest`'s common request for it); None for one that takes `x`."""
        if not self.arch.per_column:
            return None
        return {t.name: t.datatype == BYTES for t in self.tensors}

    @property
    def inputs(self) -> tuple[dict[str, Any], ...]:
        """v2 metadata: input `x` (rows, n_inputs) FP32, or one (rows, 1) input per column."""
        return tuple(t.metadata() for t in self.tensors)

    @property
    def outputs(self) -> tuple[dict[str, Any], ...]:
        """v2 metadata: the head's output, (rows, n_outputs) FP32."""
        return ({"name": self.arch.output_name, "datatype": DATATYPE, "shape": [-1, self.arch.n_outputs]},)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [str(self.version)],
            "platform": PLATFORM,
            "inputs": [dict(t) for t in self.inputs],
            "outputs": [dict(t) for t in self.outputs],
        }

    def run(self, x: Raw) -> np.ndarray:
        """Raw rows (the (rows, n_inputs) float32 matrix, or column -> (rows,) values) -> (rows,
        n_outputs) float32: `Predictor.outputs`'s session call and its checks (the output's shape, every
        value finite), kept on the float32 values the session computed (`outputs` widens them to
        float64, which the float32 answer narrowed back exactly: the same bits, a few microseconds
        less per request). A row whose output is not finite is the client's BadRequest (400)."""
        import numpy as np

        out = self.predictor.runner.run(x)
        rows = x.shape[0] if type(x) is np.ndarray else raw_len(x)
        if out.shape != (rows, self._n_outputs) or out.dtype != np.float32 or not all_finite(out):
            return self._checked(x)
        return out

    @functools.cached_property
    def _n_outputs(self) -> int:
        return self.arch.n_outputs

    def _checked(self, x: Raw) -> np.ndarray:
        """`Predictor.outputs` itself: its shape error (CorruptArtifact), its non-finite row (400)."""
        import numpy as np

        from .predict import NonFiniteOutput

        try:
            return self.predictor.outputs(x).astype(np.float32)
        except NonFiniteOutput as exc:
            raise BadRequest(str(exc)) from None

    def describe(self) -> str:
        sha = self.served.where.parent / A.MANIFEST
        ts = self.tensors
        if self.arch.per_column:
            kinds = ", ".join(f"{sum(t.datatype == d for t in ts)} {d}" for d in (DATATYPE, BYTES))
            takes = f"takes {len(ts)} columns, one input each ({kinds})"
        else:
            takes = f"takes {self.arch.n_inputs} features" + (" (NaN: missing)" if ts[0].missing else "")
        return (
            f"{self.name}: {self.arch.name} v{self.version} ({self.served.where}, checked against {sha.name}) "
            f"{takes}, answers {self.arch.output_name} [{self.arch.n_outputs}]; "
            f"{provider_line(self.predictor.providers, self.strings)}"
        )


def provider_line(p: ProviderReport, strings: tuple[int, tuple[str, ...]]) -> str:
    """Where the session runs, truthfully: the provider `session.get_providers()` puts first (with the
    reason when `--provider cuda` was asked and CUDA is not in use) and, on CUDA, the nodes that take
    or make strings, which onnxruntime's CUDA provider has no kernels for (its kernels take fixed-size
    types only): they run on the CPU provider inside the same session."""
    from ..checks.runtimes import CPU_EP

    text = f"runs on {p.primary}"
    count, ops = strings
    if p.on_cuda and count:
        text += (
            f", except its {count} nodes that take or make strings ({', '.join(ops)}), which run on {CPU_EP} "
            "in the same session (onnxruntime has no CUDA kernels for strings)"
        )
    if p.cuda_note and p.requested == "cuda":  # auto without a GPU: the normal case, not worth a note
        text += f" ({p.cuda_note})"
    return text


class Slot:
    """The one reference a model's requests read (`current`); replaced whole by the reloader. With
    workers, a new version is `prepared` in each worker and becomes current in all of them at once,
    when the supervisor commits it on the shared board (`serving.workers.Board`): while a version is
    prepared, `current` reads the board's committed number for the model (one integer read) and swaps
    to it then."""

    def __init__(self, loaded: Loaded | None, index: int = -1, board: Any = None):
        self._current = loaded
        self.prepared: dict[int, Loaded] = {}  # version -> loaded, in the order they were prepared
        self.index = index  # the model's position in ServeConfig.names (the board's column)
        self.board = board
        self._lock = threading.Lock()  # `prepared` is changed by the reloader's thread and the event loop's

    @property
    def current(self) -> Loaded | None:
        if self.prepared:  # the common case, no version waiting: one read, no lock
            committed = self.board.committed(self.index)
            with self._lock:
                new = self.prepared.get(committed)
                if new is not None:
                    self._current = new
                    order = list(self.prepared)
                    self.prepared = {v: self.prepared[v] for v in order[order.index(committed) + 1 :]}
        return self._current

    @current.setter
    def current(self, loaded: Loaded) -> None:
        self._current = loaded

    def prepare(self, loaded: Loaded) -> None:
        with self._lock:
            self.prepared.pop(loaded.version, None)
            self.prepared[loaded.version] = loaded
        self.board.prepare(self.index, loaded.version)

    @property
    def newest(self) -> Loaded | None:
        """The version this worker has loaded last (prepared, or current)."""
        if self.prepared:
            return self.prepared[list(self.prepared)[-1]]
        return self._current


def lookup(slots: dict[str, Slot], name: str) -> Loaded:
    """The version a request on model `name` runs on, or 404."""
    slot = slots.get(name)
    loaded = slot.current if slot is not None else None
    if loaded is None:
        served = ", ".join(sorted(n for n, s in slots.items() if s.current is not None)) or "none yet"
        raise BadRequest(f"unknown model {name[:60]!r}: this server serves {served}", 404)
    return loaded


def load(root: Path, name: str, version: int | None, provider: str, hint: str | None = None) -> Loaded:
    """Resolve as `predict` does (sha256-checked, verified only; the network from the version's own
    manifest), open its session, and check that the graph's tensor names are the description's
    (`Predictor` checks the types, shapes and the file's own metadata)."""
    from ..checks.runtimes import ort_runner
    from ..graph.contract import expected_inputs, parse_checked, signature
    from .predict import Predictor, resolve_model

    served = resolve_model(root, name, None, version, allow_unverified=False, hint=hint)
    predictor = Predictor(served, provider)
    # One intra-op thread per session: onnxruntime's default pool (one spinning thread per core) took
    # the cores from the event loop that parses and answers (measured: 6.9k -> 10.2k req/s at 16
    # clients on 2 cores); a server's parallelism is its requests and its workers (--workers), not one
    # small matrix product split across threads. Same file, same bytes, same provider choice.
    predictor.runner = ort_runner(served.data, provider, threads=SESSION_THREADS, where=str(served.where))
    arch = predictor.arch
    proto = parse_checked(served.data, str(served.where))
    sig = signature(proto)
    got = ([i.name for i in sig.inputs], sig.outputs[0].name)
    want = ([n for n, _, _ in expected_inputs(arch)], arch.output_name)
    if got != want:
        raise CorruptArtifact(
            f"{served.where}: its graph's inputs and output are {str(got[0])[:200]} and {got[1]!r}, its manifest "
            f"says {str(want[0])[:200]} and {want[1]!r}"
        )
    from ..graph.encoding_graph import nodes_on_strings  # numpy and onnx: once a model loads, not at start-up

    return Loaded(arch, served, predictor, nodes_on_strings(proto) if arch.per_column else (0, ()))


# ---------------------------------------------------------------------------------------------
# Requests, protocol-neutral: what one input must be, and the output


def describe_input(loaded: Loaded) -> str:
    ts = loaded.tensors
    if not loaded.arch.per_column:
        t = ts[0]
        return f"one input {t.name!r}, {t.datatype}, shape [-1, {t.width}]"
    cols = ", ".join(f"{t.name!r} {t.datatype}" for t in ts)
    return f"{len(ts)} inputs, one per column, each of shape [-1, 1]: {one_line(cols, 300)}"


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_inputs(
    loaded: Loaded, given: Sequence[tuple[Any, Any, Any]], max_batch_size: int
) -> list[tuple[Tensor, int]]:
    """The request's inputs, as (name, datatype, shape) in request order, matched to the model's:
    each known and given once, every one of the model's given, each with its datatype and shape
    [rows, width], one row count for all. [(the model's tensor, rows)] in request order, or
    BadRequest saying what is wrong (the data is checked by `tensor_from_json` /
    `tensor_from_bytes`)."""
    specs = loaded.by_name
    if not given or len(given) > len(specs):
        raise BadRequest(f"{loaded.name} takes {describe_input(loaded)}; the request has {len(given)} inputs")
    out: list[tuple[Tensor, int]] = []
    for name, datatype, shape in given:
        spec = specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise BadRequest(f"unknown input {str(name)[:60]!r}: {loaded.name} takes {describe_input(loaded)}")
        if out and any(t.name == name for t, _ in out):
            raise BadRequest(f"input {name!r} is given twice")
        rows = _check_header(loaded, spec, datatype, shape, max_batch_size)
        if out and rows != out[0][1]:
            raise BadRequest(
                f"input {name!r} has {rows} rows and input {out[0][0].name!r} has {out[0][1]}: every input gives "
                "one value per row"
            )
        out.append((spec, rows))
    if len(out) == len(specs):  # each known, none twice: all given
        return out
    seen = {s.name for s, _ in out}
    missing = [t.name for t in loaded.tensors if t.name not in seen]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise BadRequest(f"the request has no input {missing[0]!r}{more}: {loaded.name} takes {describe_input(loaded)}")
    return out


def _check_header(loaded: Loaded, spec: Tensor, datatype: Any, shape: Any, max_batch_size: int) -> int:
    """The rows of one input whose name is `spec`'s, or BadRequest for its datatype or shape."""
    want, width = spec.name, spec.width
    if not isinstance(datatype, str) or datatype.upper() != spec.datatype:
        raise BadRequest(f"input {want!r} must be {spec.datatype}, got {str(datatype)[:20]}")
    dims = list(shape) if isinstance(shape, (list, tuple)) else None
    if dims is None or len(dims) != 2 or not all(is_int(d) for d in dims):
        shown = shape[:8] if isinstance(shape, (list, tuple)) else shape
        raise BadRequest(f"input {want!r} must have shape [rows, {width}] (two integers), got {str(shown)[:80]}")
    rows, cols = dims
    if cols != width:
        if loaded.arch.per_column:
            raise BadRequest(f"input {want!r} must have shape [rows, 1] (one value per row), got shape {dims}")
        features = ", ".join(loaded.arch.features)
        raise BadRequest(
            f"input {want!r} must have {width} columns ({features[:200]}; shape [rows, {width}]), got shape {dims}"
        )
    if rows < 1:
        raise BadRequest(f"input {want!r} is an empty batch (shape {dims}): send at least one row")
    if rows > max_batch_size:
        raise BadRequest(f"a batch of {rows} rows is over --max-batch-size {max_batch_size}")
    return rows


def _flatten(data: Any, want: str, shape: list[int], datatype: str) -> list[Any]:
    """The JSON `data` of an input as one flat list (nested lists are read row-major)."""
    flat: list[Any] = []
    stack = [data] if isinstance(data, list) else None
    if stack is None:
        what = "numbers" if datatype == DATATYPE else "strings"
        raise BadRequest(f"input {want!r}: its data must be a JSON list of {what}, got {type(data).__name__}")
    while stack:
        item = stack.pop()
        if type(item) is list:
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def _what(item: Any) -> str:
    return "true/false" if isinstance(item, bool) else "null" if item is None else repr(item)[:40]


def _numbers(flat: list[Any], want: str, shape: list[int], missing: bool) -> list[Any]:
    """FP32 values from JSON: numbers only (a string ('5.1'), true/false are not FP32 values, as
    `predict` says); null is NaN (missing) where the model takes missing values, else refused."""
    for i, item in enumerate(flat):
        kind = type(item)
        if kind is float or kind is int:
            continue
        if item is None and missing:
            flat[i] = float("nan")
            continue
        hint = " (a missing value is null)" if missing and isinstance(item, str) else ""
        raise BadRequest(
            f"input {want!r}: its data does not match shape {shape} of FP32 values: {_what(item)} at position "
            f"{i} is not a number{hint}"
        )
    return flat


def tensor_from_json(spec: Tensor, data: Any, rows: int) -> np.ndarray:
    """(rows, width) from an input's JSON `data`, checked: FP32 numbers, finite (null or NaN allowed
    where `spec.missing`); BYTES strings (null: missing); or BadRequest."""
    if spec.datatype == BYTES:
        return text_values(_flatten(data, spec.name, [rows, spec.width], BYTES), rows, spec.name)
    return batch_from_values(data, rows, spec.width, spec.name, spec.missing)


def tensor_from_bytes(spec: Tensor, raw: bytes | memoryview, rows: int) -> np.ndarray:
    """(rows, width) from an input's binary data (REST's binary extension, gRPC's raw_input_contents):
    little-endian FP32, or Triton's BYTES encoding; or BadRequest."""
    if spec.datatype == BYTES:
        return text_values(split_triton_bytes(memoryview(raw), rows, spec.name), rows, spec.name)
    return batch_from_bytes(raw, rows, spec.width, spec.name, spec.missing)


def batch_from_values(values: Any, rows: int, cols: int, want: str, missing: bool = False) -> np.ndarray:
    """(rows, cols) float32 from JSON numbers (or a gRPC fp32_contents array), finite (NaN allowed
    when `missing`), or BadRequest."""
    import numpy as np

    shape = [rows, cols]
    flat = (
        _numbers(_flatten(values, want, shape, DATATYPE), want, shape, missing)
        if not hasattr(values, "__array__")
        else values
    )
    if len(flat) != rows * cols:
        raise BadRequest(f"input {want!r}: its data does not match shape {shape} ({len(flat)} values)")
    if type(flat) is list and len(flat) <= SMALL_VALUES and all(-F32_MAX <= v <= F32_MAX for v in flat):
        # the common small request, every value a number well within float32: finite after the
        # cast, so numpy's error state and finiteness pass (microseconds each) are not needed
        return np.asarray(flat, dtype=np.float64).astype(np.float32).reshape(rows, cols)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.asarray(flat, dtype=np.float64).astype(np.float32).reshape(rows, cols)
    except OverflowError:  # an integer beyond even float64
        raise BadRequest(f"input {want!r} has a value that is not finite (NaN, Inf, or beyond float32)") from None
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"input {want!r}: its data does not match shape {shape} of FP32 values ({exc})") from None
    return _finite(x, want, missing)


def batch_from_bytes(raw: bytes | memoryview, rows: int, cols: int, want: str, missing: bool = False) -> np.ndarray:
    """(rows, cols) float32 from little-endian FP32 bytes (binary data), finite (NaN allowed when
    `missing`), or BadRequest."""
    import numpy as np

    if len(raw) != rows * cols * 4:
        raise BadRequest(
            f"input {want!r}: its binary data is {len(raw)} bytes; shape [{rows}, {cols}] of FP32 needs {rows * cols * 4}"
        )
    x = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(rows, cols)
    return _finite(x, want, missing)


def _finite(x: np.ndarray, want: str, missing: bool = False) -> np.ndarray:
    """`x`, or BadRequest naming the first row with a value that is not finite (Inf, beyond float32;
    NaN too unless `missing`: a model with an encoding imputes it)."""
    import numpy as np

    bad = np.isinf(x) if missing else ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        if missing:
            raise BadRequest(
                f"input {want!r} has a value that is infinite (Inf, or beyond float32) in row {row}; a missing value "
                "is NaN (REST JSON: null)"
            )
        raise BadRequest(f"input {want!r} has a value that is not finite (NaN, Inf, or beyond float32) in row {row}")
    return x


def all_finite(a: np.ndarray) -> bool:
    """Whether every value of the float array `a` is finite: in Python for a small one (a request's
    few values: a fifth of numpy's two calls), numpy's otherwise."""
    import numpy as np

    if a.size <= SMALL_FINITE:
        return all(map(math.isfinite, a.reshape(-1).tolist()))
    return bool(np.isfinite(a).all())


def split_triton_bytes(raw: memoryview, rows: int, want: str) -> list[bytes]:
    """The elements of Triton's BYTES encoding (per element a 4-byte little-endian length, then that
    many bytes), exactly `rows` of them, or BadRequest."""
    out: list[bytes] = []
    pos, end = 0, len(raw)
    while pos < end:
        if len(out) == rows:
            raise BadRequest(
                f"input {want!r}: its binary data has {end - pos} bytes after the {rows} strings of shape [{rows}, 1]"
            )
        if pos + 4 > end:
            raise BadRequest(
                f"input {want!r}: its binary data is not Triton's BYTES encoding (a 4-byte length, then the bytes, "
                f"per string): {end - pos} bytes are left at byte {pos}"
            )
        size = int.from_bytes(raw[pos : pos + 4], "little")
        pos += 4
        if size > end - pos:
            raise BadRequest(
                f"input {want!r}: string {len(out)} of its binary data says {size} bytes, {end - pos} are left "
                "(Triton's BYTES encoding: a 4-byte little-endian length, then the bytes, per string)"
            )
        out.append(bytes(raw[pos : pos + size]))
        pos += size
    if len(out) != rows:
        raise BadRequest(f"input {want!r}: its binary data holds {len(out)} strings; shape [{rows}, 1] needs {rows}")
    return out


def text_values(flat: Any, rows: int, want: str) -> np.ndarray:
    """(rows, 1) object array of str from JSON strings (null: "", missing) or bytes (UTF-8), or
    BadRequest: a number or true/false is not text, bytes must be UTF-8, a string valid Unicode."""
    import numpy as np

    if len(flat) != rows:
        raise BadRequest(f"input {want!r}: its data does not match shape [{rows}, 1] ({len(flat)} values)")
    out = np.empty((rows, 1), dtype=object)
    for i, item in enumerate(flat):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRequest(
                    f"input {want!r}: string {i} is not UTF-8 text ({exc.reason} at byte {exc.start}); BYTES inputs "
                    "take UTF-8"
                ) from None
        elif item is None:
            item = ""  # missing text: the graph's "" (unknown category, missing date)
        elif not isinstance(item, str):
            raise BadRequest(
                f"input {want!r}: its data does not match shape [{rows}, 1] of BYTES values: {_what(item)} at "
                f'position {i} is not a string (send text: "true", "3", "2024-01-31")'
            )
        else:
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest(
                    f"input {want!r}: the string at position {i} is not valid Unicode (a lone surrogate)"
                ) from None
        out[i, 0] = item
    return out


def raw_rows(loaded: Loaded, tensors: dict[str, np.ndarray]) -> Raw:
    """What `Predictor.outputs` takes, from the request's tensors by name: the `x` matrix, or column ->
    (rows,) values."""
    if loaded.arch.per_column:
        return {t.name: tensors[t.name].reshape(-1) for t in loaded.tensors}
    return tensors[loaded.tensors[0].name]


def check_version(loaded: Loaded, version: str | None) -> None:
    """A request naming a version (`/versions/N`, gRPC's model_version) must name the one served."""
    if version and version != str(loaded.version):
        raise BadRequest(
            f"{loaded.name} version {version[:20]} is not served (serving version {loaded.version})", status=404
        )


def check_requested_outputs(requested: Sequence[tuple[Any, int]], loaded: Loaded) -> None:
    """Each requested output (name, classification count) must be the model's output, without
    Triton's classification extension."""
    names = {t["name"] for t in loaded.outputs}
    for name, classes in requested:
        if name not in names:
            raise BadRequest(f"unknown output {str(name)[:60]!r}: {loaded.name} has output {sorted(names)}")
        if classes:
            raise BadRequest(
                f"output {name!r}: the classification extension (class_count) is not supported by xorship serve; "
                "ask for the probabilities"
            )


Execute = Callable[["Loaded", Raw, bool], Awaitable["np.ndarray"]]


async def run_direct(loaded: Loaded, x: Raw, large: bool = False) -> np.ndarray:
    """Batching off: the request's own onnxruntime call, on the event loop (a small one: a thread
    hand-off would cost more than the model), or in a thread for a large one."""
    if not large:
        return loaded.run(x)
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, loaded.run, x)


class Health:
    """Whether the server is ready (REST /v2/health/ready, gRPC ServerReady). One process: ready while
    it serves. With workers, `serving.workers` gives one that reads every worker's state."""

    def ready(self) -> bool:
        return True

    def why(self) -> str:
        return ""


def server_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("xorship")
    except metadata.PackageNotFoundError:
        return "unknown"
