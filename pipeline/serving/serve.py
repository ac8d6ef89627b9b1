"""A live Open Inference Protocol (v2) server for the published, verified models: `serve`.

What is served: per model (named as in the artifacts folder: a built-in or a recipe name), the
published version (or `--version N`), resolved and checked exactly as `predict` does
(`predict.resolve_model`, `allow_unverified=False`: every file's sha256 on the bytes that are loaded)
and run through the same session call and checks as `Predictor.outputs` (`Loaded.run`), so a served
answer is `predict`'s answer bit for bit (float32, as the session computed it) with batching off, and
within verify's batch-consistency tolerance with it on (`serving.batching`). What a model takes and answers comes from its own manifest
(`artifacts.arch_of`): input `x` (rows, n_inputs) FP32 or, for a model whose graph takes one input per
raw column (a text, boolean or date feature: `Arch.per_column`), one input per column named as the
column, (rows, 1), FP32 for numbers and BYTES (UTF-8 text) for text, booleans and dates; output
`Arch.output_name` (rows, n_outputs) FP32: `probability` (rows, 1), `probabilities` (rows, classes),
`value` (rows, 1). A model with an encoding (`Arch.encoding`) imputes missing numbers inside its graph,
so NaN is a value it takes (REST JSON: `null` or the `NaN` token); a model without one (the built-ins)
refuses NaN as before. Models are served
under their Triton names (`Arch.serving_name`), so tritonclient code written against `ship`'s Triton
repository runs unchanged against `serve` (except Triton's extensions, which are answered "not
supported").

The protocol is spoken here, on two well-kept servers and nothing between them and the model: REST is
a plain ASGI application under uvicorn (httptools, uvloop), gRPC is `grpcio`'s asyncio server with the
service definitions tritonclient ships (`tritonclient.grpc.service_pb2`). Both parse the request
themselves, strictly, and answer bad input the way `predict` does (one clear message: a JSON `true` or
`"5.1"` is not an FP32 value, a shape `["1", "4"]` is not a shape, BYTES must be UTF-8 text, every
input gives one value per row). A request larger than
`--max-request-mb` is refused before its body is read (REST: 413 from its Content-Length, or as soon
as the streamed body passes the bound; gRPC: RESOURCE_EXHAUSTED from the message's length prefix).
A client's error is one log line; the access log is off unless `--access-log`.

Both listen on `--host` only; the ports are bound (or checked) before anything is served; SIGTERM /
Ctrl-C drain in-flight requests and return. The server libraries are imported only when the server
starts: importing this module stays light and torch-free.

Several models: those with a published version are served; each one without (never trained, never
published) is named on a line and skipped, and picked up when it is published (`--strict` refuses to
start instead). A published version that fails its checks (a changed file, an edited manifest) stops
the start: nothing unverified is served.

New publications: a thread polls each model's PUBLISHED pointer (every `POLL_SECONDS`, at once on
SIGHUP); a new version is resolved, checked and loaded into a new `Predictor` with its own network
description (a new version may take other features or answer other classes), completely, and only
then is the model's one reference (`Slot.current`) replaced. A request reads that reference once, so
it runs wholly on the old version or wholly on the new one (its width, its output). A version that
fails to load, or that would be served under another name, is reported and the old one keeps
serving. `--version N` pins: nothing is polled.

Workers (`--workers N`, `serving.workers`): this module's `serve` checks and binds, then supervises N
worker processes that each run `_run` with a `WorkerContext` (readiness for the whole server, a
version board so that all workers swap a new publication together). Speed (issue 25): one intra-op
thread per session, orjson, and a lean request path; docs/serving.md has the profile.
"""

from __future__ import annotations

import functools
import json
import math
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson  # a core dependency, light: the hot path's JSON

from ..errors import CorruptArtifact, MissingArtifact, PipelineError, UsageError
from ..spec.archs import INPUT_NAME, Arch
from ..spec.encoding import STRING, Raw, raw_len
from ..store import artifacts as A
from ..store import versions
from .batching import QueueFull

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ..checks.runtimes import ProviderReport
    from .predict import Predictor, ServedModel

POLL_SECONDS = 1.0  # how often PUBLISHED is read
MAX_WORKERS = 64
WORKERS_CAP = 8  # the default --workers: the cores, at most this many (see default_workers)
MAX_BATCH_WINDOW_US = 1_000_000
BATCH_WINDOW_US_ON = 100  # the window bench --serve measures batching with; the CLI's default is 0 (off)
SESSION_THREADS = 1  # onnxruntime intra-op threads per session (see `load`)
GRACE_SECONDS = 30  # in-flight requests get this long to finish after SIGTERM / Ctrl-C
MAX_BATCH_LIMIT = 2**31 - 1
DEFAULT_MAX_REQUEST_MB = (
    64  # one bound for REST bodies and gRPC messages (a 1024-row batch of 4096 FP32 features as JSON fits)
)
MAX_REQUEST_MB_LIMIT = 2047  # gRPC's message length is an int32
PLATFORM = "onnxruntime_onnx"  # what Triton reports for the same file
DATATYPE = "FP32"  # what every model of this tool answers, and takes for numbers
BYTES = "BYTES"  # what a model that takes one input per column takes for text, booleans and dates (UTF-8)
SERVER_NAME = "xorship"
HEADER_LENGTH = "inference-header-content-length"  # the binary tensor data extension's header
# A REST body over --max-request-mb is read through and dropped (never kept) up to this many times the
# bound, so a client that sends its whole body before reading the answer (urllib, requests) gets the
# 413; a larger one is answered at once and its connection closed.
DRAIN_FACTOR = 4
# Request bodies held at once, all connections together: this many times --max-request-mb; past it a
# request gets 503 (retry), so many large requests at once cannot exhaust memory.
BUDGET_FACTOR = 4
SMALL_VALUES = 4096  # a JSON input of at most this many values is checked value by value in Python
SMALL_FINITE = 64  # an array of at most this many values is checked for finite values in Python
F32_MAX = 3.4028234663852886e38  # the largest finite float32
OFF_LOOP_BYTES = 1 << 20  # a REST body at least this large is parsed and run in a worker thread
MAX_HEAD_BYTES = 64 * 1024  # a request line and headers larger than this: 431, the connection closed

# Triton endpoints beyond the v2 core that `serve` does not implement (REST answers 404 and says so).
UNSUPPORTED_REST = (
    ("/v2/repository", "the model repository extension"),
    ("/v2/models/stats", "the statistics extension"),
    ("/v2/trace", "the trace extension"),
    ("/v2/logging", "the logging extension"),
    ("/v2/systemsharedmemory", "the system shared memory extension"),
    ("/v2/cudasharedmemory", "the CUDA shared memory extension"),
)
MODEL_EXTENSION_NAMES = {p.split("/")[3] for p, _ in UNSUPPORTED_REST if p.startswith("/v2/models/")}  # stats
UNSUPPORTED_FIRST = {p.split("/")[2] for p, _ in UNSUPPORTED_REST}  # /v2/<this>...: checked against them
WANTED_HEADERS = {b"content-length": "content-length", b"content-encoding": "content-encoding",
                  HEADER_LENGTH.encode(): HEADER_LENGTH}  # fmt: skip
UNSUPPORTED_MODEL_REST = {  # /v2/models/NAME[/versions/N]/<this>
    "stats": "the statistics extension",
    "config": "the model configuration extension",
    "trace": "the trace extension",
}


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
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.on_line, self.seconds, self.clock = on_line, seconds, clock
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
            line += f" (and {others} more 503s like it since the last one shown, not logged)"
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


def _is_int(v: Any) -> bool:
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
    if dims is None or len(dims) != 2 or not all(_is_int(d) for d in dims):
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
        return _strings(_flatten(data, spec.name, [rows, spec.width], BYTES), rows, spec.name)
    return batch_from_values(data, rows, spec.width, spec.name, spec.missing)


def tensor_from_bytes(spec: Tensor, raw: bytes | memoryview, rows: int) -> np.ndarray:
    """(rows, width) from an input's binary data (REST's binary extension, gRPC's raw_input_contents):
    little-endian FP32, or Triton's BYTES encoding; or BadRequest."""
    if spec.datatype == BYTES:
        return _strings(_split_bytes(memoryview(raw), rows, spec.name), rows, spec.name)
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


def _split_bytes(raw: memoryview, rows: int, want: str) -> list[bytes]:
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


def _strings(flat: Any, rows: int, want: str) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------
# REST (JSON, and Triton's binary tensor data extension)


@dataclass(frozen=True)
class RestRequest:
    x: Raw  # what `Loaded.run` takes
    request_id: str | None
    binary_output: bool


def _loads(text: bytes | memoryview) -> Any:
    """JSON from bytes: orjson (about 5x faster than `json`), and for what it refuses, `json` itself,
    which takes what v2 clients also send (the bare NaN token Python's json and tritonclient write,
    integers beyond 64 bits, UTF-16 bodies) and whose messages the answers quote."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(bytes(text))


def _dumps(doc: Any) -> bytes:
    """JSON bytes: orjson (floats as the shortest text that reads back as the same double, as `json`
    writes them), `json` for what orjson will not write (a string with a lone surrogate)."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return json.dumps(doc).encode()


def _json_object(text: bytes | memoryview, what: str) -> dict[str, Any]:
    try:
        doc = _loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not a v2 inference request: {what} is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BadRequest(
            f"the request body is not a v2 inference request: {what} must be a JSON object, not a {type(doc).__name__}"
        )
    return doc


def _binary_size(params: Any, name: str) -> int | None:
    if params is None:
        return None
    what = f"input {name!r}"
    if not isinstance(params, dict):
        raise BadRequest(f"{what}: parameters must be a JSON object")
    size = params.get("binary_data_size")
    if size is None:
        return None
    if not _is_int(size) or size < 0:
        raise BadRequest(f"{what}: binary_data_size must be a whole number of bytes, got {str(size)[:40]}")
    return int(size)


def parse_rest(body: bytes, header_length: str | None, loaded: Loaded, max_batch_size: int) -> RestRequest:
    """A v2 REST inference request (JSON, or a JSON header followed by binary tensor data when the
    Inference-Header-Content-Length header is given, the inputs' data in their order), checked
    strictly: the common request by `_plain_request`, any other by `read_rest`."""
    if header_length is None:
        doc = _json_object(body, "the body")
        plain = _plain_request(doc, loaded, max_batch_size)
        return plain if plain is not None else read_rest(doc, memoryview(b""), False, loaded, max_batch_size)
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise BadRequest(f"Inference-Header-Content-Length {header_length[:20]!r} is not a byte count")
    n = int(text)
    if n > len(body):
        raise BadRequest(f"Inference-Header-Content-Length {n} is larger than the request body ({len(body)} bytes)")
    view = memoryview(body)
    return read_rest(_json_object(view[:n], "its JSON header"), view[n:], True, loaded, max_batch_size)


def read_rest(
    doc: dict[str, Any], binary: memoryview, has_header_length: bool, loaded: Loaded, max_batch_size: int
) -> RestRequest:
    """Any v2 REST inference request, from its JSON document and the bytes after it (binary data;
    empty without the Inference-Header-Content-Length header), every field checked."""
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('the request body is not a v2 inference request: it has no "inputs" list')
    if not all(isinstance(i, dict) for i in inputs):
        raise BadRequest("the request body is not a v2 inference request: each input must be a JSON object")
    checked = check_inputs(loaded, [(i.get("name"), i.get("datatype"), i.get("shape")) for i in inputs], max_batch_size)
    sizes = [_binary_size(i.get("parameters"), spec.name) for i, (spec, _) in zip(inputs, checked)]
    given = [(spec.name, size) for (spec, _), size in zip(checked, sizes) if size is not None]
    if not given and len(binary):
        who = f"input {checked[0][0].name!r}" if len(inputs) == 1 else "no input"
        raise BadRequest(
            f"the request has {len(binary)} bytes after its JSON header but {who} gives no binary_data_size"
        )
    if given and not has_header_length:
        raise BadRequest(
            f"input {given[0][0]!r} gives binary_data_size but the request has no Inference-Header-Content-Length header"
        )
    total = sum(size for _, size in given)
    if total != len(binary):
        if len(given) == 1:
            raise BadRequest(
                f"input {given[0][0]!r} gives binary_data_size {total}, but {len(binary)} bytes follow the JSON header"
            )
        raise BadRequest(
            f"the inputs' binary_data_size add up to {total} bytes, but {len(binary)} bytes follow the JSON header"
        )
    tensors: dict[str, np.ndarray] = {}
    at = 0  # the inputs' binary data follow the JSON header in the inputs' order
    for tensor, (spec, rows), size in zip(inputs, checked, sizes):
        if size is None:
            if "data" not in tensor:
                raise BadRequest(f'input {spec.name!r} has no data (give "data", or binary data with binary_data_size)')
            tensors[spec.name] = tensor_from_json(spec, tensor["data"], rows)
        else:
            if "data" in tensor:
                raise BadRequest(f"input {spec.name!r} gives both data and binary_data_size; send one")
            tensors[spec.name] = tensor_from_bytes(spec, binary[at : at + size], rows)
            at += size
    x = raw_rows(loaded, tensors)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"the request id must be a string, got {str(request_id)[:40]}")
    params = doc.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise BadRequest("the request's parameters must be a JSON object")
    binary_output = bool(params and params.get("binary_data_output") is True)
    outputs = doc.get("outputs")
    requested: list[tuple[Any, int]] = []
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise BadRequest("the request's outputs must be a list of JSON objects")
        for o in outputs:
            p = o.get("parameters") or {}
            if not isinstance(p, dict):
                raise BadRequest(f"output {str(o.get('name'))[:60]!r}: parameters must be a JSON object")
            classes = p.get("classification", 0)
            requested.append((o.get("name"), classes if _is_int(classes) else 1))
            binary_output = binary_output or p.get("binary_data") is True
    check_requested_outputs(requested, loaded)
    return RestRequest(x, request_id, binary_output)


def _plain_request(doc: dict[str, Any], loaded: Loaded, max_batch_size: int) -> RestRequest | None:
    """The common request, read without the general checks: every input of the model once, by its
    exact name, datatype and shape ([rows, width] for `x`, [rows, 1] per column), the rows within
    --max-batch-size; FP32 data JSON numbers well within float32 (flat, or for `x` one list per row),
    BYTES data JSON strings (flat); an optional string id and nothing else. None for anything else,
    which `read_rest` then reads in full: every request this accepts, the full reading accepts with
    the same rows (a test holds the two to that), so this decides speed, never an answer."""
    inputs, request_id = doc.get("inputs"), doc.get("id")
    if type(inputs) is not list or not inputs or len(doc) != 1 + ("id" in doc):
        return None
    if request_id is not None and type(request_id) is not str:
        return None
    x: Raw | None = None
    if loaded.plain_input is not None:
        x = _plain_matrix(inputs, loaded.plain_input, max_batch_size)
    elif loaded.plain_columns is not None:
        x = _plain_columns(inputs, loaded.plain_columns, max_batch_size)
    else:
        return None
    return None if x is None else RestRequest(x, request_id, False)


def _plain_header(t: Any, name: str, datatype: str, width: int, max_batch_size: int) -> int | None:
    """The rows of one plain JSON input (exactly name, datatype, shape [rows, width] within
    --max-batch-size, data), or None."""
    if type(t) is not dict or len(t) != 4 or t.get("name") != name or t.get("datatype") != datatype:
        return None
    shape = t.get("shape")
    if type(shape) is not list or len(shape) != 2 or type(shape[0]) is not int or type(shape[1]) is not int:
        return None
    rows = shape[0]
    if shape[1] != width or not 0 < rows <= max_batch_size or rows * width > SMALL_VALUES:
        return None
    return rows


def _plain_numbers(data: list[Any]) -> bool:
    return all((type(v) is float or type(v) is int) and -F32_MAX <= v <= F32_MAX for v in data)


def _plain_matrix(inputs: list[Any], plain: tuple[str, int], max_batch_size: int) -> np.ndarray | None:
    import numpy as np

    name, width = plain
    rows = _plain_header(inputs[0], name, DATATYPE, width, max_batch_size) if len(inputs) == 1 else None
    if rows is None:
        return None
    data = inputs[0].get("data")
    if type(data) is not list or not data:
        return None
    if type(data[0]) is list:  # one list per row
        if len(data) != rows or not all(type(r) is list and len(r) == width for r in data):
            return None
        data = [v for r in data for v in r]
    if len(data) != rows * width or not _plain_numbers(data):
        return None
    return np.asarray(data, dtype=np.float64).astype(np.float32).reshape(rows, width)


def _plain_columns(inputs: list[Any], columns: dict[str, bool], max_batch_size: int) -> Raw | None:
    import numpy as np

    if len(inputs) != len(columns):
        return None
    got: dict[str, np.ndarray] = {}
    rows = None
    for t in inputs:
        name = t.get("name") if type(t) is dict else None
        if type(name) is not str or name in got or name not in columns:
            return None
        text = columns[name]
        n = _plain_header(t, name, BYTES if text else DATATYPE, 1, max_batch_size)
        if n is None or (rows is not None and n != rows):
            return None
        data = t.get("data")
        if type(data) is not list or len(data) != n:
            return None
        rows = n
        if text:
            if not all(type(v) is str and (v.isascii() or _utf8(v)) for v in data):
                return None
            got[name] = np.array(data, dtype=object)
        else:
            if not _plain_numbers(data):
                return None
            got[name] = np.asarray(data, dtype=np.float64).astype(np.float32)
    return {name: got[name] for name in columns}  # the model's order, as `raw_rows` gives it


def _utf8(text: str) -> bool:
    """Whether `text` is valid Unicode (no lone surrogate), as BYTES inputs must be."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def rest_response(loaded: Loaded, y: np.ndarray, request: RestRequest) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(body, headers) of a v2 inference response: JSON, or a JSON header and the output's raw bytes."""
    out: dict[str, Any] = {"name": loaded.arch.output_name, "datatype": DATATYPE, "shape": list(y.shape)}
    doc: dict[str, Any] = {"model_name": loaded.name, "model_version": str(loaded.version)}
    if request.request_id is not None:
        doc["id"] = request.request_id
    doc["outputs"] = [out]
    if not request.binary_output:
        out["data"] = y.reshape(-1).tolist()  # float32 values, written exactly (shortest text of the double)
        return _dumps(doc), [(b"content-type", b"application/json")]
    raw = y.astype("<f4").tobytes()
    out["parameters"] = {"binary_data_size": len(raw)}
    head = _dumps(doc)
    return head + raw, [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(head)).encode()),
    ]


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


class RestApp:
    """The v2 REST endpoints as a plain ASGI application (no framework between the socket and the
    model): health, server and model metadata, model readiness, inference."""

    def __init__(
        self,
        config: ServeConfig,
        slots: dict[str, Slot],
        on_line: Callable[[str], None],
        execute: Execute | None = None,
        health: Health | None = None,
        budget: int | None = None,
    ):
        self.config = config
        self.slots = slots
        self.on_line = on_line
        self.limit = config.max_request_bytes
        # request bodies held at once, in bytes (all workers together: each worker holds its share)
        self.budget = BUDGET_FACTOR * config.max_request_bytes if budget is None else budget
        self.inflight = 0  # bytes of request bodies held now (the event loop's thread only)
        self.execute: Execute = execute or run_direct
        self.health = health or Health()
        self.overload = OverloadLog(on_line)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "websocket":  # not part of the protocol: refuse the handshake
            await send({"type": "websocket.close", "code": 1003})
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        try:
            status, body, headers = await self._route(scope, receive, method, path)
        except BadRequest as exc:
            status, body, headers = exc.status, _error(str(exc)), [(b"content-type", b"application/json")]
            if exc.close:
                headers.append((b"connection", b"close"))
            log = self.overload if status == 503 else self.on_line
            log(f"client error: {status} {one_line(method, 10)} {one_line(path, 120)}: {one_line(str(exc))}")
        except PipelineError as exc:  # the model failed at run time: the server's fault, said once
            status, body, headers = 500, _error(str(exc)), [(b"content-type", b"application/json")]
            self.on_line(f"error: 500 {one_line(method, 10)} {one_line(path, 120)}: {one_line(str(exc))}")
        except Exception as exc:  # a bug: one line, never a traceback in the log or the answer
            status, headers = 500, [(b"content-type", b"application/json")]
            body = _error(f"internal error ({exc.__class__.__name__}); the server goes on")
            self.on_line(f"error: 500 {one_line(method, 10)} {one_line(path, 120)}: internal error: "
                         f"{exc.__class__.__name__}: {one_line(str(exc), 200)}")  # fmt: skip
        if self.config.access_log:
            client = scope.get("client") or ("-", 0)
            self.on_line(f"access: {client[0]} {one_line(method, 10)} {one_line(path, 200)} {status} {len(body)}")
        headers.append((b"content-length", b"%d" % len(body)))  # HTTP/1.0 clients too
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _route(self, scope: dict, receive: Callable, method: str, path: str) -> tuple[int, bytes, list]:
        target = _infer_target(path) if method == "POST" else None
        if target is not None:  # the common request, routed as below without splitting the whole path
            loaded = self._model(target[0])
            check_version(loaded, target[1])
            return await self._infer(scope, receive, loaded)
        ok = [(b"content-type", b"application/json")]
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] != "v2":
            raise BadRequest(
                f"{path[:120]}: no such endpoint (serve answers the v2 core: health, metadata, ready, infer)", 404
            )
        if len(parts) > 1 and parts[1] in UNSUPPORTED_FIRST:
            for prefix, what in UNSUPPORTED_REST:
                if path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] in ("", "/", "?"):
                    raise BadRequest(
                        f"{path[:120]}: {what} is not supported by xorship serve (a Triton extension)", 404
                    )
        rest = parts[1:]
        if len(rest) >= 2 and rest[0] == "models":
            name, tail = rest[1], rest[2:]
            version = None
            if tail[:1] == ["versions"] and len(tail) >= 2:
                version, tail = tail[1], tail[2:]
            if tail and tail[0] in UNSUPPORTED_MODEL_REST:
                what = UNSUPPORTED_MODEL_REST[tail[0]]
                raise BadRequest(f"{path[:120]}: {what} is not supported by xorship serve (a Triton extension)", 404)
            if tail in ([], ["ready"], ["infer"]):
                loaded = self._model(name)
                if tail == ["infer"]:
                    _method(method, "POST", path)
                    check_version(loaded, version)
                    return await self._infer(scope, receive, loaded)
                _method(method, "GET", path)
                check_version(loaded, version)
                if tail == ["ready"]:
                    return 200, _dumps({"name": loaded.name, "ready": True}), ok
                return 200, _dumps(loaded.metadata()), ok
        if rest in ([], ["health", "live"], ["health", "ready"]):
            _method(method, "GET", path)
            if rest == ["health", "ready"] and not self.health.ready():  # not a client's error: no log line
                return 503, _error(f"not ready: {self.health.why()}"), ok
            doc: dict[str, Any] = (
                {"name": SERVER_NAME, "version": _version(), "extensions": []} if not rest else {rest[1]: True}
            )
            return 200, _dumps(doc), ok
        raise BadRequest(
            f"{path[:120]}: no such endpoint (serve answers the v2 core: health, metadata, ready, infer)", 404
        )

    async def _infer(self, scope: dict, receive: Callable, loaded: Loaded) -> tuple[int, bytes, list]:
        """One REST inference: the body (bounded), parsed strictly, run (through the batcher when
        batching is on), answered. A large body is parsed off the event loop, so health checks and
        small requests are answered meanwhile."""
        import asyncio

        head = _headers(scope)
        body = await self._body(head, receive)
        try:
            args = (body, head.get(HEADER_LENGTH), loaded, self.config.max_batch_size)
            large = len(body) >= OFF_LOOP_BYTES
            if large:
                request = await asyncio.get_running_loop().run_in_executor(None, parse_rest, *args)
            else:
                request = parse_rest(*args)
            if self.execute is run_direct and not large:
                y = loaded.run(request.x)  # batching off: the request's own call, no coroutine between
            else:
                try:
                    y = await self.execute(loaded, request.x, large)
                except QueueFull as exc:
                    raise BadRequest(str(exc), 503) from None
            out, headers = rest_response(loaded, y, request)
            return 200, out, headers
        finally:
            self.inflight -= len(body)

    def _model(self, name: str) -> Loaded:
        return lookup(self.slots, name)  # read once: the whole request runs on this version

    async def _body(self, head: dict[str, str], receive: Callable) -> bytes:
        """The request body, never more than --max-request-mb of it (413 before reading when the
        Content-Length says so, else as soon as the streamed body passes it), decompressed (gzip,
        deflate) within the same bound."""
        limit, mb = self.limit, self.config.max_request_mb
        drain = DRAIN_FACTOR * limit  # read through (and drop) up to this much, so the client sees the 413
        declared = head.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            size = int(declared)
            if size > drain:  # not worth reading: answer now and end the connection
                raise BadRequest(_too_large(size, mb), 413, close=True)
            await _discard(receive, drain)
            raise BadRequest(_too_large(size, mb), 413)
        message: dict[str, Any] | None = await receive()
        assert message is not None
        if not message.get("more_body", False) and message["type"] == "http.request" and "content-encoding" not in head:
            body = message.get("body", b"")  # the common request: one message, within every bound
            if len(body) <= limit and self.inflight + len(body) <= self.budget:
                self.inflight += len(body)
                return body
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                if message is None:
                    message = await receive()
                if message["type"] == "http.disconnect":
                    raise BadRequest("the client went away before sending the whole body")
                chunk = message.get("body", b"")
                size += len(chunk)
                self.inflight += len(chunk)
                more = message.get("more_body", False)
                if size > limit:
                    chunks.clear()  # nothing of it is kept while the rest is read through
                    whole = await _discard(receive, drain - size) if more else True
                    raise BadRequest(_too_large(size, mb, more=more), 413, close=not whole)
                if self.inflight > self.budget:
                    raise BadRequest(
                        f"the server holds {self.inflight:,} bytes of requests at once, over its budget "
                        f"({self.budget:,}: {BUDGET_FACTOR} x --max-request-mb); retry shortly",
                        503,
                        close=more,
                    )
                chunks.append(chunk)
                if not more:
                    break
                message = None
            body = b"".join(chunks)
            encoding = (head.get("content-encoding") or "identity").strip().lower()
            if encoding in ("", "identity"):
                self.inflight += len(body) - size  # the body is held until the request ends
                return body
            if encoding not in ("gzip", "deflate"):
                raise BadRequest(f"Content-Encoding {encoding[:20]!r} is not supported (gzip, deflate or none)", 415)
            inflated = _inflate(body, limit, self.config.max_request_mb)
            self.inflight += len(inflated) - size
            return inflated
        except BaseException:
            self.inflight -= size
            raise


async def _discard(receive: Callable, budget: int) -> bool:
    """Read the rest of a request body without keeping it, at most `budget` bytes: True when it ended
    within them (the connection stays usable), False otherwise."""
    while budget >= 0:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return budget >= 0
    return False


def _inflate(body: bytes, limit: int, mb: int) -> bytes:
    """A gzip or zlib body (several gzip members are one stream, as gzip writes them), never more than
    `limit` bytes of it; anything after the last member that is not one is refused."""
    import zlib

    parts: list[bytes] = []
    size = 0
    data = body
    while data:
        d = zlib.decompressobj(wbits=47)  # gzip or zlib, by their headers
        try:
            out = d.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise BadRequest(f"the compressed request body cannot be decompressed ({exc})") from None
        size += len(out)
        if size > limit or d.unconsumed_tail:
            raise BadRequest(f"the decompressed request body is over --max-request-mb {mb}", 413)
        if not d.eof:
            raise BadRequest("the compressed request body is truncated")
        parts.append(out)
        data = d.unused_data
    return b"".join(parts)


def _too_large(size: int, mb: int, more: bool = False) -> str:
    return (
        f"the request body is {'over ' if more else ''}{size:,} bytes, over --max-request-mb {mb} "
        f"({mb * 1024 * 1024:,} bytes); send smaller batches"
    )


def _infer_target(path: str) -> tuple[str, str | None] | None:
    """(model, version or None) of an inference path as `RestApp._route` reads it
    (/v2/models/NAME[/versions/N]/infer, no empty segment, NAME not one of the extensions'
    /v2/models/<this>/ paths); None for any other path, which `_route` then reads in full."""
    if not (path.startswith("/v2/models/") and path.endswith("/infer")):
        return None
    parts = path[11:-6].split("/")
    name = parts[0]
    if not name or name.split("?", 1)[0] in MODEL_EXTENSION_NAMES:  # `_route`: "stats", "stats?..." too
        return None
    if len(parts) == 1:
        return name, None
    if len(parts) == 3 and parts[1] == "versions" and parts[2]:
        return name, parts[2]
    return None


def _headers(scope: dict) -> dict[str, str]:
    """The request headers `serve` reads (Content-Length, Content-Encoding, the binary extension's
    header length), by lower-case name, in one pass; the first of a repeated one."""
    out: dict[str, str] = {}
    for k, v in scope.get("headers") or ():
        name = WANTED_HEADERS.get(k.lower())
        if name is not None and name not in out:
            out[name] = v.decode("latin-1")
    return out


def _method(got: str, want: str, path: str) -> None:
    if got != want:
        raise BadRequest(f"{path[:120]} takes {want}, not {got[:10]}", 405)


def _error(message: str) -> bytes:
    import json

    return json.dumps({"error": message}).encode()


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("xorship")
    except metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------------------------
# gRPC (Triton's GRPCInferenceService, from tritonclient's own definitions)


def _grpc_server(
    config: ServeConfig,
    slots: dict[str, Slot],
    on_line: Callable[[str], None],
    execute: Execute | None = None,
    health: Health | None = None,
    reuse_port: bool = False,
) -> Any:
    import grpc
    from grpc import aio
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    codes = {
        503: grpc.StatusCode.UNAVAILABLE,
        400: grpc.StatusCode.INVALID_ARGUMENT,
        404: grpc.StatusCode.NOT_FOUND,
        413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    }

    run: Execute = execute or run_direct
    overload = OverloadLog(on_line)
    direct = run is run_direct  # batching off: the request's own call, on the loop (as REST's small ones)
    ready = (health or Health()).ready

    def lookup_model(name: str) -> Loaded:
        return lookup(slots, name)

    def refuse(context: Any, exc: BadRequest, method: str, empty: Any) -> Any:
        """The client's error as the call's status. Set, not raised (`context.abort`): an aborted call's
        exception keeps its request (megabytes of tensor data) alive until a later collection, and a
        server answering many bad requests would grow (measured: +150 MB over 30 requests of 7 MB)."""
        code = codes.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
        (overload if exc.status == 503 else on_line)(f"client error: {code.name} gRPC {method}: {one_line(str(exc))}")
        context.set_code(code)
        context.set_details(str(exc))
        return empty

    def metadata_response(loaded: Loaded) -> Any:
        def tensors(specs: tuple[dict[str, Any], ...]) -> list[Any]:
            return [
                pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                for t in specs
            ]

        return pb.ModelMetadataResponse(
            name=loaded.name, versions=[str(loaded.version)], platform=PLATFORM,
            inputs=tensors(loaded.inputs), outputs=tensors(loaded.outputs),
        )  # fmt: skip

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=ready())

        async def ServerMetadata(self, request: Any, context: Any) -> Any:
            return pb.ServerMetadataResponse(name=SERVER_NAME, version=_version(), extensions=[])

        async def ModelReady(self, request: Any, context: Any) -> Any:
            slot = slots.get(request.name)
            now = slot.current if slot is not None else None
            ready = now is not None and (not request.version or request.version == str(now.version))
            return pb.ModelReadyResponse(ready=ready)  # an unknown model or another version: not ready

        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            try:
                loaded = lookup_model(request.name)
                check_version(loaded, request.version)
            except BadRequest as exc:
                return refuse(context, exc, "ModelMetadata", pb.ModelMetadataResponse())
            return metadata_response(loaded)

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            try:
                loaded = lookup_model(request.model_name)  # read once: the whole request runs on this version
                check_version(loaded, request.model_version)
                x = grpc_rows(request, loaded, config.max_batch_size)
                if request.outputs:
                    requested = [(o.name, _classification(o.parameters)) for o in request.outputs]
                    check_requested_outputs(requested, loaded)
            except BadRequest as exc:
                return refuse(context, exc, "ModelInfer", pb.ModelInferResponse())
            try:
                y = loaded.run(x) if direct else await run(loaded, x, False)
            except BadRequest as exc:  # a non-finite output (400)
                return refuse(context, exc, "ModelInfer", pb.ModelInferResponse())
            except QueueFull as exc:  # the batch queue is full: UNAVAILABLE, retry
                return refuse(context, BadRequest(str(exc), 503), "ModelInfer", pb.ModelInferResponse())
            except PipelineError as exc:
                on_line(f"error: gRPC ModelInfer: {one_line(str(exc))}")
                context.set_code(grpc.StatusCode.INTERNAL)
                context.set_details(str(exc))
                return pb.ModelInferResponse()
            if config.access_log:
                on_line(f"access: {one_line(context.peer(), 80)} gRPC ModelInfer {loaded.name} rows {raw_len(x)}")
            out = pb.ModelInferResponse.InferOutputTensor(
                name=loaded.arch.output_name, datatype=DATATYPE, shape=list(y.shape)
            )
            return pb.ModelInferResponse(
                model_name=loaded.name, model_version=str(loaded.version), id=request.id,
                outputs=[out], raw_output_contents=[y.astype("<f4", copy=False).tobytes()],
            )  # fmt: skip

    implemented = {"ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelInfer"}
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        if method.name not in implemented:
            setattr(Servicer, method.name, _unsupported(method.name, grpc))

    server = aio.server(
        options=[
            # a port in use is in use; with workers, each binds the port the parent checked and holds
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            ("grpc.max_send_message_length", -1),  # answers are bounded by --max-batch-size, not the request bound
            # refused from the message's length prefix, before the body is read or decoded
            ("grpc.max_receive_message_length", config.max_request_bytes),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    address = _grpc_address(config.host, config.grpc_port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise UsageError(f"gRPC port {config.grpc_port} on {config.host} is in use")
    return server


def grpc_rows(request: Any, loaded: Loaded, max_batch_size: int) -> Raw:
    """A gRPC ModelInferRequest's rows, checked strictly: the common request by `_plain_grpc`, any
    other by `read_grpc`."""
    plain = _plain_grpc(request, loaded, max_batch_size)
    return plain if plain is not None else read_grpc(request, loaded, max_batch_size)


def read_grpc(request: Any, loaded: Loaded, max_batch_size: int) -> Raw:
    """Any ModelInferRequest's rows, from every input's typed contents (fp32_contents,
    bytes_contents) or from raw_input_contents (one per input, in the inputs' order: every input, or
    none), every field checked."""
    import numpy as np

    if not request.inputs:
        raise BadRequest(f"{loaded.name} takes {describe_input(loaded)}; the request has no inputs")
    given = [(t.name, t.datatype, list(t.shape)) for t in request.inputs]
    checked = check_inputs(loaded, given, max_batch_size)
    raw = request.raw_input_contents
    tensors: dict[str, np.ndarray] = {}
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"the request has {len(raw)} raw contents for {len(request.inputs)} inputs")
    for i, (tensor, (spec, rows)) in enumerate(zip(request.inputs, checked)):
        filled = [f.name for f, _ in tensor.contents.ListFields()]
        if raw:
            if filled:
                raise BadRequest(f"input {spec.name!r} gives both contents and raw_input_contents; send one")
            tensors[spec.name] = tensor_from_bytes(spec, raw[i], rows)
            continue
        field = "fp32_contents" if spec.datatype == DATATYPE else "bytes_contents"
        if filled != [field]:
            shown = ", ".join(filled) or "none"
            raise BadRequest(f"input {spec.name!r}: its contents must be {field} ({spec.datatype}), got {shown}")
        if spec.datatype == BYTES:
            tensors[spec.name] = _strings(list(tensor.contents.bytes_contents), rows, spec.name)
        else:
            values = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
            tensors[spec.name] = batch_from_values(values, rows, spec.width, spec.name, spec.missing)
    return raw_rows(loaded, tensors)


def _plain_grpc(request: Any, loaded: Loaded, max_batch_size: int) -> Raw | None:
    """The common gRPC request's rows, read without the general checks: every input of the model once,
    by its exact name, datatype and shape ([rows, width] for `x`, [rows, 1] per column) within
    --max-batch-size, no typed contents, one raw_input_contents each (tritonclient's way: FP32 values
    little-endian, every one finite; BYTES in Triton's encoding, UTF-8). None for anything else,
    which `read_grpc` then reads in full (a test holds the two to the same rows)."""

    inputs, raw = request.inputs, request.raw_input_contents
    if len(raw) != len(inputs) or not inputs:
        return None
    plain, columns = loaded.plain_input, loaded.plain_columns
    if plain is not None:
        if len(inputs) != 1:
            return None
        x = _plain_raw(inputs[0], raw[0], plain[0], DATATYPE, plain[1], max_batch_size, None)
        return x if x is None else x.reshape(-1, plain[1])
    if columns is None or len(inputs) != len(columns):
        return None
    got: dict[str, np.ndarray] = {}
    rows = None
    for t, data in zip(inputs, raw):
        name = t.name
        if name in got or name not in columns:
            return None
        x = _plain_raw(t, data, name, BYTES if columns[name] else DATATYPE, 1, max_batch_size, rows)
        if x is None:
            return None
        got[name], rows = x, len(x)
    return {name: got[name] for name in columns}  # the model's order, as `raw_rows` gives it


def _plain_raw(
    t: Any, data: bytes, name: str, datatype: str, width: int, max_batch_size: int, rows: int | None
) -> np.ndarray | None:
    """One plain gRPC input's values, flat (FP32 float32, every one finite; BYTES str), or None."""
    import numpy as np

    shape = t.shape
    if t.name != name or t.datatype != datatype or len(shape) != 2 or shape[1] != width:
        return None
    n = shape[0]
    if not 0 < n <= max_batch_size or (rows is not None and n != rows) or t.HasField("contents"):
        return None
    if datatype == BYTES:
        texts = _plain_strings(data, n)
        return None if texts is None else np.array(texts, dtype=object)
    if len(data) != 4 * n * width:
        return None
    x = np.frombuffer(data, dtype="<f4")
    return x if all_finite(x) else None


def _plain_strings(raw: bytes, rows: int) -> list[str] | None:
    """Exactly `rows` UTF-8 strings in Triton's BYTES encoding (a 4-byte little-endian length, then the
    bytes, per string), or None (`_split_bytes` and `_strings` say what is wrong)."""
    out: list[str] = []
    pos, end = 0, len(raw)
    while pos < end and len(out) < rows:
        if pos + 4 > end:
            return None
        size = int.from_bytes(raw[pos : pos + 4], "little")
        pos += 4
        if size > end - pos:
            return None
        try:
            out.append(raw[pos : pos + size].decode("utf-8"))
        except UnicodeDecodeError:
            return None
        pos += size
    return out if len(out) == rows and pos == end else None


def _classification(parameters: Any) -> int:
    """The class count a gRPC requested output asks Triton's classification extension for (any
    parameter type: a string "2" asks too); 0 when it asks for none."""
    if "classification" not in parameters:
        return 0
    p = parameters["classification"]
    which = p.WhichOneof("parameter_choice")
    value = getattr(p, which) if which else 0
    return 1 if value not in (0, "", "0", False) else 0


def _unsupported(method: str, grpc: Any) -> Callable:
    what = "(the model repository extension)" if method.startswith("Repository") else "(a Triton extension)"
    if method == "ModelStreamInfer":
        what = "(streaming inference)"

    async def handler(self: Any, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} {what} is not supported by xorship serve")

    return handler


# ---------------------------------------------------------------------------------------------
# Reloading


class Reloader(threading.Thread):
    """Polls every model's PUBLISHED pointer; loads a new version fully, then swaps the reference.
    Models that had no published version at start (`pending`) are loaded once they have one. In a
    worker (`board` given), a loaded version is prepared and posted on the board; it becomes current
    when the supervisor commits it, once every worker has prepared it (so all swap together)."""

    def __init__(
        self,
        config: ServeConfig,
        slots: dict[str, Slot],
        on_line: Callable[[str], None],
        pending: Sequence[str] = (),
        board: Any = None,
    ):
        super().__init__(name="xorship-reloader", daemon=True)
        self.config = config
        self.slots = slots
        self.on_line = on_line
        self.pending = list(pending)
        self.board = board  # serving.workers.WorkerBoard, or None (one process: swap at once)
        self.wake = threading.Event()  # set: check now (SIGHUP)
        self.stopping = threading.Event()
        self._reported: dict[str, str] = {}  # model -> last problem reported (each said once)

    def run(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(POLL_SECONDS)
            self.wake.clear()
            if self.stopping.is_set():
                return
            self.check()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def _problem(self, name: str, text: str) -> None:
        if self._reported.get(name) != text:
            self._reported[name] = text
            self.on_line(text)

    def _install(self, slot: Slot, new: Loaded) -> None:
        if self.board is None:
            slot.current = new  # one reference, replaced whole (with its own width and output)
        else:
            slot.prepare(new)  # current once every worker has it (Slot.current reads the board)

    def check(self) -> None:
        for slot in list(self.slots.values()):
            old = slot.newest
            assert old is not None
            try:
                number = versions.read_published(self.config.root, old.arch.name)
            except PipelineError as exc:
                self._problem(old.name, f"warning: {old.name}: {exc}; still serving v{old.version}")
                continue
            if number is None or number == old.version:
                continue
            try:
                new = load(self.config.root, old.arch.name, None, self.config.provider)
            except PipelineError as exc:
                self._problem(
                    old.name, f"warning: {old.name}: v{number} not loaded ({exc}); still serving v{old.version}"
                )
                continue
            except Exception as exc:  # never let the thread die: the old version keeps serving
                self._problem(old.name, f"warning: {old.name}: v{number} not loaded ({exc.__class__.__name__}: {exc})")
                continue
            if new.name != old.name:  # clients know the model under its old name
                self._problem(
                    old.name,
                    f"warning: {old.name}: v{number} is served as {new.name!r}, not {old.name!r} (its serving name "
                    f"changed): restart serve to serve it; still serving v{old.version}",
                )
                continue
            self._install(slot, new)
            self._reported.pop(old.name, None)
            self.on_line(f"reloaded: {new.describe()} (was v{old.version})")
        for name in list(self.pending):
            try:
                if versions.read_published(self.config.root, name) is None and self.config.version is None:
                    continue
                new = load(self.config.root, name, self.config.version, self.config.provider)
            except MissingArtifact:
                continue  # still not published: said at start
            except Exception as exc:
                self._problem(name, f"warning: {name}: not loaded ({exc})")
                continue
            if new.name in self.slots:
                self._problem(name, f"warning: {name}: served as {new.name!r}, which another model is served as")
                continue
            index = self.config.models.index(name)
            if self.board is None:
                self.slots[new.name] = Slot(new, index)
            else:
                slot = Slot(None, index, self.board)
                self._install(slot, new)
                self.slots[new.name] = slot
            self.pending.remove(name)
            self.on_line(f"now serving: {new.describe()}")


# ---------------------------------------------------------------------------------------------
# Start-up checks


def _address(host: str, port: int) -> tuple[int, Any]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    return family, addr


def bind_socket(host: str, port: int, what: str) -> socket.socket:
    """A listening-ready socket on host:port, or UsageError when the port is taken."""
    family, addr = _address(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is not "in use"
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48, 10048):  # EADDRINUSE (Linux, macOS, Windows)
            raise UsageError(f"{what} port {port} on {host} is in use") from None
        raise UsageError(f"{what} port {port} on {host} cannot be used ({exc.strerror})") from None
    return sock


def _grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_config(config: ServeConfig) -> None:
    if not config.models:
        raise UsageError("no model to serve")
    if len(set(config.models)) != len(config.models):
        raise UsageError(f"a model is named twice: {', '.join(config.models)}")
    from ..spec.recipe import NAME_RE

    for name in config.models:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise UsageError(f"{str(name)[:60]!r} is not a model name (a built-in or a recipe's name)")
    if not (1 <= config.max_batch_size <= MAX_BATCH_LIMIT):
        raise UsageError(f"--max-batch-size must be 1..{MAX_BATCH_LIMIT}, got {config.max_batch_size}")
    if not (1 <= config.workers <= MAX_WORKERS):
        raise UsageError(f"--workers must be 1..{MAX_WORKERS}, got {config.workers}")
    if not (0 <= config.batch_window_us <= MAX_BATCH_WINDOW_US):
        raise UsageError(f"--batch-window-us must be 0..{MAX_BATCH_WINDOW_US}, got {config.batch_window_us}")
    if not (1 <= config.max_request_mb <= MAX_REQUEST_MB_LIMIT):
        raise UsageError(f"--max-request-mb must be 1..{MAX_REQUEST_MB_LIMIT}, got {config.max_request_mb}")
    for port, what in ((config.http_port, "--http-port"), (config.grpc_port, "--grpc-port")):
        if not (1 <= port <= 65535):
            raise UsageError(f"{what} must be 1..65535, got {port}")
    if config.http_port == config.grpc_port:
        raise UsageError(f"--http-port and --grpc-port are both {config.http_port}: give two different ports")


def _import_server_libraries() -> None:
    """uvicorn (REST), grpcio and tritonclient's service definitions (gRPC): the [serve] extra."""
    try:
        import grpc  # noqa: F401
        import uvicorn  # noqa: F401
        from tritonclient.grpc import service_pb2  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f'serve needs the [serve] extra: pip install -e ".[serve]" in the repository, or "./runtime[serve]" for the'
            f" runtime install ({exc.name or exc} is missing)"
        ) from None


def load_models(config: ServeConfig, on_line: Callable[[str], None]) -> tuple[list[Loaded], list[str]]:
    """(the models loaded, the names skipped because nothing of them is published yet). A model that
    is published but fails its checks stops the start (nothing unverified is served); one with nothing
    published is skipped with a line saying why and how to publish it, unless `strict` or unless no
    model at all can be served (then its error is the error)."""
    loaded: list[Loaded] = []
    missing: list[tuple[str, MissingArtifact]] = []
    for name in config.models:
        try:
            loaded.append(load(config.root, name, config.version, config.provider, config.hints.get(name)))
        except MissingArtifact as exc:
            missing.append((name, exc))
    if missing and (config.strict or not loaded):
        raise missing[0][1]
    for name, why in missing:
        on_line(f"warning: skipped {name}: {why}; serve picks it up once it is published")
    serving = [m.name for m in loaded]
    for m in loaded:
        if serving.count(m.name) > 1:
            others = ", ".join(o.arch.name for o in loaded if o.name == m.name)
            raise UsageError(f"models {others} are all served as {m.name!r}: serve them separately")
    return loaded, [name for name, _ in missing]


# ---------------------------------------------------------------------------------------------
# The server


def serve(config: ServeConfig, on_line: Callable[[str], None] = print) -> None:
    """Load, check, bind, serve until SIGTERM / SIGINT, drain, return. Raises PipelineError before
    anything is served (bad options, port in use, no verified version, a changed file...). With
    `config.workers` > 1 this process checks and binds, then supervises that many worker processes
    (`serving.workers`)."""
    if config.workers == 0:
        from dataclasses import replace

        config = replace(config, workers=default_workers())
    check_config(config)
    _import_server_libraries()
    loaded, pending = load_models(config, on_line)
    http_sock = bind_socket(config.host, config.http_port, "HTTP")
    try:
        if config.workers > 1:
            from dataclasses import asdict

            from .workers import supervise

            for m in loaded:
                on_line(m.describe())
            numbers = {m.arch.name: m.version for m in loaded}
            line = serving_line(config, [m.name for m in loaded])
            loaded.clear()  # each worker opens its own sessions: these are not kept
            del m
            grpc_hold = _hold_grpc_port(config)
            try:
                doc = asdict(config)
                doc["root"] = str(config.root)
                supervise(doc, numbers, http_sock, on_line, line, GRACE_SECONDS)
            finally:
                if grpc_hold is not None:
                    grpc_hold.close()
            return
        bind_socket(config.host, config.grpc_port, "gRPC").close()  # gRPC binds it itself, below
        slots = {m.name: Slot(m) for m in loaded}
        for m in loaded:
            on_line(m.describe())
        _run(config, slots, pending, http_sock, on_line)
    finally:
        http_sock.close()


def default_workers() -> int:
    """`--workers`'s default: the cores this process may use, at most WORKERS_CAP (past a few workers
    the load is rarely the request path's, and each worker holds every model's sessions in memory)."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, WORKERS_CAP))


def serving_line(config: ServeConfig, names: Sequence[str]) -> str:
    how = (
        f"following PUBLISHED (polled every {POLL_SECONDS:g} s; SIGHUP: now)"
        if config.version is None
        else f"pinned to --version {config.version}"
    )
    extra = []
    if config.workers > 1:
        extra.append(f"{config.workers} workers")
    if config.batch_window_us:
        extra.append(f"batching within {config.batch_window_us} us up to {config.max_batch_size} rows")
    return (
        f"serving {', '.join(names)} on http://{_grpc_address(config.host, config.http_port)} (REST) "
        f"and {_grpc_address(config.host, config.grpc_port)} (gRPC), {how}"
        + "".join(f", {e}" for e in extra)
        + "; SIGTERM or Ctrl-C stops"
    )


@dataclass
class WorkerContext:
    """What a worker process of `serve --workers N` runs with (`serving.workers`): its number, the
    server-wide health and version board, its share of the request-body budget."""

    index: int
    health: Health
    budget: int
    on_ready: Callable[[], None]
    reloader_hook: Any = None  # the worker's board, for Reloader (prepare, not swap)


def _run(
    config: ServeConfig,
    slots: dict[str, Slot],
    pending: list[str],
    http_sock: socket.socket,
    on_line: Callable,
    worker: WorkerContext | None = None,
) -> None:
    import asyncio
    import signal

    execute: Execute = run_direct
    batcher = None
    if config.batch_window_us:
        from .batching import Batcher

        batcher = Batcher(config.batch_window_us, config.max_batch_size, len(config.models))
        execute = batcher
    health = worker.health if worker is not None else Health()
    app = RestApp(config, slots, on_line, execute, health, worker.budget if worker is not None else None)
    follow = config.version is None or bool(pending)
    board = worker.reloader_hook if worker is not None else None
    reloader = Reloader(config, slots, on_line, pending, board) if follow else None

    async def main() -> None:
        import uvicorn

        http_protocol: Any = _bounded_protocol(on_line)

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if reloader is not None and hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, reloader.wake.set)
        elif hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, lambda: None)  # pinned: nothing to reload
        grpc_server = _grpc_server(config, slots, on_line, execute, health, reuse_port=worker is not None)
        await grpc_server.start()
        http = uvicorn.Server(
            uvicorn.Config(
                app, log_config=None, lifespan="off", timeout_graceful_shutdown=GRACE_SECONDS, access_log=False,
                server_header=False, date_header=False, http=http_protocol, h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                proxy_headers=False,  # no X-Forwarded-For rewriting: the peer is who connected (and one layer less)
            )
        )  # fmt: skip
        http_sock.listen(2048)
        # _serve, not serve: uvicorn's serve() installs its own signal handlers and re-raises the
        # signal after shutdown (the process would die of SIGTERM instead of exiting 0)
        http_task = asyncio.create_task(http._serve(sockets=[http_sock]))
        while not http.started and not http_task.done():
            await asyncio.sleep(0.01)
        if reloader is not None:
            reloader.start()
        if worker is None:
            on_line(serving_line(config, list(slots)))
        else:
            worker.on_ready()
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({http_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if worker is None:
            on_line("stopping: finishing in-flight requests")
        if reloader is not None:
            reloader.stop()
        http.should_exit = True
        await asyncio.gather(grpc_server.stop(grace=GRACE_SECONDS), http_task, return_exceptions=True)
        stopper.cancel()

    try:  # uvicorn's own choice ("auto"): uvloop where installed
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(main())
    if batcher is not None:
        batcher.close()
    if reloader is not None:
        reloader.join(timeout=5)
    if worker is None:
        on_line("stopped")


def _hold_grpc_port(config: ServeConfig) -> socket.socket | None:
    """With workers: check the gRPC port (in use: exit 2), then keep it bound with SO_REUSEPORT, not
    listening, for the workers' gRPC servers to bind beside (and nothing else to take meanwhile)."""
    bind_socket(config.host, config.grpc_port, "gRPC").close()
    if not hasattr(socket, "SO_REUSEPORT"):
        return None
    family, addr = _address(config.host, config.grpc_port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise UsageError(f"gRPC port {config.grpc_port} on {config.host} is in use") from None
    return sock


def worker_main(text: str) -> None:
    """A worker process of `serve --workers N` (started by `serving.workers.supervise`): load the
    versions the supervisor checked, serve on the inherited HTTP socket and the shared gRPC port, post
    readiness and prepared versions on the board, until SIGTERM."""
    import json
    import mmap
    import sys

    from .workers import Board, BoardHealth, WorkerBoard

    payload = json.loads(text)
    doc = payload["config"]
    doc["root"] = Path(doc["root"])
    doc["names"] = tuple(doc["names"])
    config = ServeConfig(**doc)
    index, n = payload["index"], config.workers
    tag = f" [worker {index + 1}/{n}]"

    def on_line(msg: str) -> None:
        problem = msg.startswith(("warning:", "client error:", "error:"))
        if msg.startswith(("reloaded:", "now serving:", "warning:")):
            msg += tag
        stream = sys.stderr if problem else sys.stdout
        stream.write(msg + "\n")
        stream.flush()

    names = config.models
    board = Board(mmap.mmap(payload["board_fd"], 0), n, len(names))
    mine = WorkerBoard(board, index)
    slots: dict[str, Slot] = {}
    pending: list[str] = []
    try:
        for i, name in enumerate(names):
            version = payload["versions"].get(name, 0)
            if not version:
                pending.append(name)
                continue
            loaded = load(config.root, name, version, config.provider, config.hints.get(name))
            slots[loaded.name] = Slot(loaded, i, mine)
            mine.prepare(i, loaded.version)  # what this worker serves: the committed version
    except PipelineError as exc:
        on_line(f"error: worker {index + 1} of {n}: {exc}")
        sys.exit(exc.exit_code)
    http_sock = socket.socket(fileno=payload["http_fd"])
    budget = max(config.max_request_bytes, BUDGET_FACTOR * config.max_request_bytes // n)
    health: Any = BoardHealth(board)
    ctx = WorkerContext(index, health, budget, lambda: board.set_ready(index, True), mine)
    try:
        _run(config, slots, pending, http_sock, on_line, ctx)
    finally:
        board.set_ready(index, False)


def _bounded_protocol(on_line: Callable[[str], None]) -> Any:
    """uvicorn's httptools protocol with a bound on a request's line and headers (MAX_HEAD_BYTES):
    past it the client gets 431 and its connection is closed, so one endless header cannot exhaust
    memory. "auto" (uvicorn's own choice, h11 with its own bound) where httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "auto"

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _in_head = True
        _head = 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head = True, 0

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            before = self._in_head
            super().data_received(data)
            if before and self._in_head and not self.transport.is_closing():
                self._head += len(data)
                if self._head > MAX_HEAD_BYTES:
                    msg = f"the request line and headers are over {MAX_HEAD_BYTES:,} bytes"
                    body = _error(msg)
                    self.transport.write(
                        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                        b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                    )
                    self.transport.close()
                    on_line(f"client error: 431 {msg}")

    return BoundedHttpToolsProtocol
