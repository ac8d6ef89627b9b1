"""A live Open Inference Protocol (v2) server for the published, verified models: `serve`.

What is served: per model (named as in the artifacts folder: a built-in or a recipe name), the
published version (or `--version N`), resolved and checked exactly as `predict` does
(`predict.resolve_model`, `allow_unverified=False`: every file's sha256 on the bytes that are loaded)
and run through the same `Predictor.outputs`, so a served answer is `predict`'s answer bit for bit
(float32, as the session computed it). What a model takes and answers comes from its own manifest
(`artifacts.arch_of`): input `x` (rows, n_inputs) FP32; output `Arch.output_name` (rows, n_outputs)
FP32: `probability` (rows, 1), `probabilities` (rows, classes), `value` (rows, 1). Models are served
under their Triton names (`Arch.serving_name`), so tritonclient code written against `ship`'s Triton
repository runs unchanged against `serve` (except Triton's extensions, which are answered "not
supported").

The protocol is spoken here, on two well-kept servers and nothing between them and the model: REST is
a plain ASGI application under uvicorn (httptools, uvloop), gRPC is `grpcio`'s asyncio server with the
service definitions tritonclient ships (`tritonclient.grpc.service_pb2`). Both parse the request
themselves, strictly, and answer bad input the way `predict` does (one clear message: a JSON `true` or
`"5.1"` is not an FP32 value, a shape `["1", "4"]` is not a shape). A request larger than
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
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CorruptArtifact, MissingArtifact, PipelineError, UsageError
from ..spec.archs import INPUT_NAME, Arch
from ..store import artifacts as A
from ..store import versions

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .predict import Predictor, ServedModel

POLL_SECONDS = 1.0  # how often PUBLISHED is read
GRACE_SECONDS = 30  # in-flight requests get this long to finish after SIGTERM / Ctrl-C
MAX_BATCH_LIMIT = 2**31 - 1
DEFAULT_MAX_REQUEST_MB = (
    64  # one bound for REST bodies and gRPC messages (a 1024-row batch of 4096 FP32 features as JSON fits)
)
MAX_REQUEST_MB_LIMIT = 2047  # gRPC's message length is an int32
PLATFORM = "onnxruntime_onnx"  # what Triton reports for the same file
DATATYPE = "FP32"  # what every model of this tool takes and answers
SERVER_NAME = "xorship"
HEADER_LENGTH = "inference-header-content-length"  # the binary tensor data extension's header
# A REST body over --max-request-mb is read through and dropped (never kept) up to this many times the
# bound, so a client that sends its whole body before reading the answer (urllib, requests) gets the
# 413; a larger one is answered at once and its connection closed.
DRAIN_FACTOR = 4
# Request bodies held at once, all connections together: this many times --max-request-mb; past it a
# request gets 503 (retry), so many large requests at once cannot exhaust memory.
BUDGET_FACTOR = 4
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
UNSUPPORTED_MODEL_REST = {  # /v2/models/NAME[/versions/N]/<this>
    "stats": "the statistics extension",
    "config": "the model configuration extension",
    "trace": "the trace extension",
}


def one_line(text: str, limit: int = 400) -> str:
    """`text` safe to log as one line: control characters and line separators escaped (a client's
    bytes can end up in a message), cut at `limit` characters."""
    out = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text[: limit + 1])
    return out if len(out) <= limit else out[: limit - 3] + "..."


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

    @property
    def models(self) -> tuple[str, ...]:
        """The model names to serve."""
        return self.names

    @property
    def max_request_bytes(self) -> int:
        return self.max_request_mb * 1024 * 1024


@dataclass(frozen=True)
class Loaded:
    """One model version, fully loaded: what a request runs on. `arch` is the version's own
    network description (from its manifest): its width, output name and shape."""

    arch: Arch
    served: ServedModel
    predictor: Predictor

    @property
    def version(self) -> int:
        return self.served.version or 1

    @property
    def name(self) -> str:
        return self.arch.serving_name

    @property
    def inputs(self) -> tuple[dict[str, Any], ...]:
        """v2 metadata: input `x`, (rows, n_inputs) FP32."""
        return ({"name": INPUT_NAME, "datatype": DATATYPE, "shape": [-1, self.arch.n_inputs]},)

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

    def run(self, x: np.ndarray) -> np.ndarray:
        """(rows, n_inputs) float32 -> (rows, n_outputs) float32 through `Predictor.outputs` (predict's
        own path: shape and finiteness checked). Exact: those are the session's float32 values. A row
        whose output is not finite is the client's BadRequest (400)."""
        import numpy as np

        from .predict import NonFiniteOutput

        try:
            return self.predictor.outputs(x).astype(np.float32)
        except NonFiniteOutput as exc:
            raise BadRequest(str(exc)) from None

    def describe(self) -> str:
        p = self.predictor.providers
        note = (
            f" ({p.cuda_note})" if p.cuda_note and p.requested == "cuda" else ""
        )  # auto without a GPU: the normal case
        sha = self.served.where.parent / A.MANIFEST
        return (
            f"{self.name}: {self.arch.name} v{self.version} ({self.served.where}, checked against {sha.name}) "
            f"takes {self.arch.n_inputs} features, answers {self.arch.output_name} [{self.arch.n_outputs}]; "
            f"runs on {p.primary}{note}"
        )


class Slot:
    """The one reference a model's requests read; replaced whole by the reloader."""

    def __init__(self, loaded: Loaded):
        self.current = loaded


def load(root: Path, name: str, version: int | None, provider: str, hint: str | None = None) -> Loaded:
    """Resolve as `predict` does (sha256-checked, verified only; the network from the version's own
    manifest), open its session, and check that the graph's tensor names are the description's
    (`Predictor` checks the shapes and the file's own metadata)."""
    from ..graph.contract import parse_checked, signature
    from .predict import Predictor, resolve_model

    served = resolve_model(root, name, None, version, allow_unverified=False, hint=hint)
    predictor = Predictor(served, provider)
    arch = predictor.arch
    sig = signature(parse_checked(served.data, str(served.where)))
    names = (sig.inputs[0].name, sig.outputs[0].name)
    if names != (INPUT_NAME, arch.output_name):
        raise CorruptArtifact(
            f"{served.where}: its graph's input and output are {list(names)}, its manifest says "
            f"{[INPUT_NAME, arch.output_name]}"
        )
    return Loaded(arch, served, predictor)


# ---------------------------------------------------------------------------------------------
# Requests, protocol-neutral: what one input must be, and the output


def describe_input(loaded: Loaded) -> str:
    t = loaded.inputs[0]
    return f"one input {t['name']!r}, {t['datatype']}, shape {t['shape']}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_input(
    loaded: Loaded, count: int, name: Any, datatype: Any, shape: Any, max_batch_size: int
) -> tuple[int, int]:
    """(rows, columns) of the request's one input, or BadRequest saying what is wrong with its header
    (the data is checked by `batch_from_values` / `batch_from_bytes`)."""
    spec = loaded.inputs[0]
    want = spec["name"]
    width = loaded.arch.n_inputs
    if count != 1:
        raise BadRequest(f"{loaded.name} takes {describe_input(loaded)}; the request has {count} inputs")
    if not isinstance(name, str) or name != want:
        raise BadRequest(f"unknown input {str(name)[:60]!r}: {loaded.name} takes {describe_input(loaded)}")
    if not isinstance(datatype, str) or datatype.upper() != spec["datatype"]:
        raise BadRequest(f"input {want!r} must be {spec['datatype']}, got {str(datatype)[:20]}")
    dims = list(shape) if isinstance(shape, (list, tuple)) else None
    if dims is None or len(dims) != 2 or not all(_is_int(d) for d in dims):
        shown = shape[:8] if isinstance(shape, (list, tuple)) else shape
        raise BadRequest(f"input {want!r} must have shape [rows, {width}] (two integers), got {str(shown)[:80]}")
    rows, cols = dims
    if cols != width:
        features = ", ".join(loaded.arch.features)
        raise BadRequest(
            f"input {want!r} must have {width} columns ({features[:200]}; shape [rows, {width}]), got shape {dims}"
        )
    if rows < 1:
        raise BadRequest(f"input {want!r} is an empty batch (shape {dims}): send at least one row")
    if rows > max_batch_size:
        raise BadRequest(f"a batch of {rows} rows is over --max-batch-size {max_batch_size}")
    return rows, cols


def _flatten_numbers(data: Any, want: str, shape: list[int]) -> list[Any]:
    """The JSON `data` of an FP32 input as one flat list of numbers (nested lists are read row-major),
    or BadRequest: a string ('5.1'), true/false or null is not an FP32 value, as `predict` says."""
    flat: list[Any] = []
    stack = [data] if isinstance(data, list) else None
    if stack is None:
        raise BadRequest(f"input {want!r}: its data must be a JSON list of numbers, got {type(data).__name__}")
    while stack:
        item = stack.pop()
        if type(item) is list:
            stack.extend(reversed(item))
            continue
        if type(item) is float or type(item) is int:
            flat.append(item)
            continue
        what = "true/false" if isinstance(item, bool) else "null" if item is None else repr(item)[:40]
        raise BadRequest(
            f"input {want!r}: its data does not match shape {shape} of FP32 values: {what} at position "
            f"{len(flat)} is not a number"
        )
    return flat


def batch_from_values(values: Any, rows: int, cols: int, want: str) -> np.ndarray:
    """(rows, cols) float32 from JSON numbers (or a gRPC fp32_contents list), finite, or BadRequest."""
    import numpy as np

    shape = [rows, cols]
    flat = _flatten_numbers(values, want, shape) if not hasattr(values, "__array__") else values
    if len(flat) != rows * cols:
        raise BadRequest(f"input {want!r}: its data does not match shape {shape} ({len(flat)} values)")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.asarray(flat, dtype=np.float64).astype(np.float32).reshape(rows, cols)
    except OverflowError:  # an integer beyond even float64
        raise BadRequest(f"input {want!r} has a value that is not finite (NaN, Inf, or beyond float32)") from None
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"input {want!r}: its data does not match shape {shape} of FP32 values ({exc})") from None
    return _finite(x, want)


def batch_from_bytes(raw: bytes | memoryview, rows: int, cols: int, want: str) -> np.ndarray:
    """(rows, cols) float32 from little-endian FP32 bytes (binary data), finite, or BadRequest."""
    import numpy as np

    if len(raw) != rows * cols * 4:
        raise BadRequest(
            f"input {want!r}: its binary data is {len(raw)} bytes; shape [{rows}, {cols}] of FP32 needs {rows * cols * 4}"
        )
    x = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(rows, cols)
    return _finite(x, want)


def _finite(x: np.ndarray, want: str) -> np.ndarray:
    import numpy as np

    finite = np.isfinite(x)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        raise BadRequest(f"input {want!r} has a value that is not finite (NaN, Inf, or beyond float32) in row {row}")
    return x


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
    x: np.ndarray
    request_id: str | None
    binary_output: bool


def _json_object(text: bytes | memoryview, what: str) -> dict[str, Any]:
    import json

    try:
        doc = json.loads(bytes(text))
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not a v2 inference request: {what} is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BadRequest(
            f"the request body is not a v2 inference request: {what} must be a JSON object, not a {type(doc).__name__}"
        )
    return doc


def _binary_size(params: Any, what: str) -> int | None:
    if params is None:
        return None
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
    Inference-Header-Content-Length header is given), checked strictly."""
    if header_length is not None:
        text = header_length.strip()
        if not (text.isascii() and text.isdigit()):
            raise BadRequest(f"Inference-Header-Content-Length {header_length[:20]!r} is not a byte count")
        n = int(text)
        if n > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {n} is larger than the request body ({len(body)} bytes)")
        view = memoryview(body)
        doc, binary = _json_object(view[:n], "its JSON header"), view[n:]
    else:
        doc, binary = _json_object(body, "the body"), memoryview(b"")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('the request body is not a v2 inference request: it has no "inputs" list')
    first = inputs[0]
    if not isinstance(first, dict):
        raise BadRequest("the request body is not a v2 inference request: each input must be a JSON object")
    rows, cols = check_input(
        loaded, len(inputs), first.get("name"), first.get("datatype"), first.get("shape"), max_batch_size
    )
    want = loaded.inputs[0]["name"]
    size = _binary_size(first.get("parameters"), f"input {want!r}")
    if size is None:
        if len(binary):
            raise BadRequest(
                f"the request has {len(binary)} bytes after its JSON header but input {want!r} gives no binary_data_size"
            )
        if "data" not in first:
            raise BadRequest(f'input {want!r} has no data (give "data", or binary data with binary_data_size)')
        x = batch_from_values(first["data"], rows, cols, want)
    else:
        if header_length is None:
            raise BadRequest(
                f"input {want!r} gives binary_data_size but the request has no Inference-Header-Content-Length header"
            )
        if "data" in first:
            raise BadRequest(f"input {want!r} gives both data and binary_data_size; send one")
        if size != len(binary):
            raise BadRequest(
                f"input {want!r} gives binary_data_size {size}, but {len(binary)} bytes follow the JSON header"
            )
        x = batch_from_bytes(binary, rows, cols, want)
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


def rest_response(loaded: Loaded, y: np.ndarray, request: RestRequest) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(body, headers) of a v2 inference response: JSON, or a JSON header and the output's raw bytes."""
    import json

    out: dict[str, Any] = {"name": loaded.arch.output_name, "datatype": DATATYPE, "shape": list(y.shape)}
    doc: dict[str, Any] = {"model_name": loaded.name, "model_version": str(loaded.version)}
    if request.request_id is not None:
        doc["id"] = request.request_id
    doc["outputs"] = [out]
    if not request.binary_output:
        out["data"] = y.reshape(-1).tolist()  # float32 values, written exactly (repr of the double)
        return json.dumps(doc).encode(), [(b"content-type", b"application/json")]
    raw = y.astype("<f4").tobytes()
    out["parameters"] = {"binary_data_size": len(raw)}
    head = json.dumps(doc).encode()
    return head + raw, [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(head)).encode()),
    ]


class RestApp:
    """The v2 REST endpoints as a plain ASGI application (no framework between the socket and the
    model): health, server and model metadata, model readiness, inference."""

    def __init__(self, config: ServeConfig, slots: dict[str, Slot], on_line: Callable[[str], None]):
        self.config = config
        self.slots = slots
        self.on_line = on_line
        self.limit = config.max_request_bytes
        self.budget = BUDGET_FACTOR * config.max_request_bytes  # request bodies held at once, in bytes
        self.inflight = 0  # bytes of request bodies held now (the event loop's thread only)

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
            self.on_line(f"client error: {status} {one_line(method, 10)} {one_line(path, 120)}: {one_line(str(exc))}")
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
        headers.append((b"content-length", str(len(body)).encode()))  # HTTP/1.0 clients too
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _route(self, scope: dict, receive: Callable, method: str, path: str) -> tuple[int, bytes, list]:
        import json

        ok = [(b"content-type", b"application/json")]
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["v2"]:
            raise BadRequest(
                f"{path[:120]}: no such endpoint (serve answers the v2 core: health, metadata, ready, infer)", 404
            )
        for prefix, what in UNSUPPORTED_REST:
            if path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + "?"):
                raise BadRequest(f"{path[:120]}: {what} is not supported by xorship serve (a Triton extension)", 404)
        rest = parts[1:]
        if rest in ([], ["health", "live"], ["health", "ready"]):
            _method(method, "GET", path)
            doc: dict[str, Any] = (
                {"name": SERVER_NAME, "version": _version(), "extensions": []} if not rest else {rest[1]: True}
            )
            return 200, json.dumps(doc).encode(), ok
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
                    body = await self._body(scope, receive)
                    try:
                        args = (body, _header(scope, HEADER_LENGTH), loaded, self.config.max_batch_size)
                        if len(body) < OFF_LOOP_BYTES:
                            return _infer(*args)
                        # a large body is parsed and run off the event loop: health checks and small
                        # requests are answered meanwhile
                        import asyncio

                        return await asyncio.get_running_loop().run_in_executor(None, _infer, *args)
                    finally:
                        self.inflight -= len(body)
                _method(method, "GET", path)
                check_version(loaded, version)
                if tail == ["ready"]:
                    return 200, json.dumps({"name": loaded.name, "ready": True}).encode(), ok
                return 200, json.dumps(loaded.metadata()).encode(), ok
        raise BadRequest(
            f"{path[:120]}: no such endpoint (serve answers the v2 core: health, metadata, ready, infer)", 404
        )

    def _model(self, name: str) -> Loaded:
        slot = self.slots.get(name)
        if slot is None:
            served = ", ".join(sorted(self.slots)) or "none yet"
            raise BadRequest(f"unknown model {name[:60]!r}: this server serves {served}", 404)
        return slot.current  # read once: the whole request runs on this version

    async def _body(self, scope: dict, receive: Callable) -> bytes:
        """The request body, never more than --max-request-mb of it (413 before reading when the
        Content-Length says so, else as soon as the streamed body passes it), decompressed (gzip,
        deflate) within the same bound."""
        limit, mb = self.limit, self.config.max_request_mb
        drain = DRAIN_FACTOR * limit  # read through (and drop) up to this much, so the client sees the 413
        declared = _header(scope, "content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            size = int(declared)
            if size > drain:  # not worth reading: answer now and end the connection
                raise BadRequest(_too_large(size, mb), 413, close=True)
            await _discard(receive, drain)
            raise BadRequest(_too_large(size, mb), 413)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
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
            body = b"".join(chunks)
            encoding = (_header(scope, "content-encoding") or "identity").strip().lower()
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


def _infer(body: bytes, header_length: str | None, loaded: Loaded, max_batch_size: int) -> tuple[int, bytes, list]:
    """One REST inference: parse, run, answer (on the event loop, or in a worker thread for a large body)."""
    request = parse_rest(body, header_length, loaded, max_batch_size)
    y = loaded.run(request.x)  # (rows, n_outputs) float32: predict's session, its values unchanged
    out, headers = rest_response(loaded, y, request)
    return 200, out, headers


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


def _header(scope: dict, name: str) -> str | None:
    key = name.encode()
    for k, v in scope.get("headers") or ():
        if k.lower() == key:
            return v.decode("latin-1")
    return None


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


def _grpc_server(config: ServeConfig, slots: dict[str, Slot], on_line: Callable[[str], None]) -> Any:
    import grpc
    from grpc import aio
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    codes = {
        400: grpc.StatusCode.INVALID_ARGUMENT,
        404: grpc.StatusCode.NOT_FOUND,
        413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    }

    def lookup(name: str) -> Loaded:
        slot = slots.get(name)
        if slot is None:
            served = ", ".join(sorted(slots)) or "none yet"
            raise BadRequest(f"unknown model {name[:60]!r}: this server serves {served}", 404)
        return slot.current

    def refuse(context: Any, exc: BadRequest, method: str, empty: Any) -> Any:
        """The client's error as the call's status. Set, not raised (`context.abort`): an aborted call's
        exception keeps its request (megabytes of tensor data) alive until a later collection, and a
        server answering many bad requests would grow (measured: +150 MB over 30 requests of 7 MB)."""
        code = codes.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
        on_line(f"client error: {code.name} gRPC {method}: {one_line(str(exc))}")
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

    def batch(request: Any, loaded: Loaded) -> np.ndarray:
        if not request.inputs:
            raise BadRequest(f"{loaded.name} takes {describe_input(loaded)}; the request has no inputs")
        first = request.inputs[0]
        rows, cols = check_input(
            loaded, len(request.inputs), first.name, first.datatype, list(first.shape), config.max_batch_size
        )
        want = loaded.inputs[0]["name"]
        raw = request.raw_input_contents
        contents = first.contents
        filled = [f.name for f, _ in contents.ListFields()]
        if raw:
            if len(raw) != len(request.inputs):
                raise BadRequest(f"the request has {len(raw)} raw contents for {len(request.inputs)} inputs")
            if filled:
                raise BadRequest(f"input {want!r} gives both contents and raw_input_contents; send one")
            return batch_from_bytes(raw[0], rows, cols, want)
        if filled != ["fp32_contents"]:
            shown = ", ".join(filled) or "none"
            raise BadRequest(f"input {want!r}: its contents must be fp32_contents (FP32), got {shown}")
        import numpy as np

        return batch_from_values(np.asarray(contents.fp32_contents, dtype=np.float32), rows, cols, want)

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=True)

        async def ServerMetadata(self, request: Any, context: Any) -> Any:
            return pb.ServerMetadataResponse(name=SERVER_NAME, version=_version(), extensions=[])

        async def ModelReady(self, request: Any, context: Any) -> Any:
            slot = slots.get(request.name)
            ready = slot is not None and (not request.version or request.version == str(slot.current.version))
            return pb.ModelReadyResponse(ready=ready)  # an unknown model or another version: not ready

        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            try:
                loaded = lookup(request.name)
                check_version(loaded, request.version)
            except BadRequest as exc:
                return refuse(context, exc, "ModelMetadata", pb.ModelMetadataResponse())
            return metadata_response(loaded)

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            try:
                loaded = lookup(request.model_name)  # read once: the whole request runs on this version
                check_version(loaded, request.model_version)
                x = batch(request, loaded)
                check_requested_outputs([(o.name, _classification(o.parameters)) for o in request.outputs], loaded)
            except BadRequest as exc:
                return refuse(context, exc, "ModelInfer", pb.ModelInferResponse())
            try:
                y = loaded.run(x)
            except PipelineError as exc:
                on_line(f"error: gRPC ModelInfer: {one_line(str(exc))}")
                context.set_code(grpc.StatusCode.INTERNAL)
                context.set_details(str(exc))
                return pb.ModelInferResponse()
            if config.access_log:
                on_line(f"access: {one_line(context.peer(), 80)} gRPC ModelInfer {loaded.name} rows {x.shape[0]}")
            out = pb.ModelInferResponse.InferOutputTensor(
                name=loaded.arch.output_name, datatype=DATATYPE, shape=list(y.shape)
            )
            return pb.ModelInferResponse(
                model_name=loaded.name, model_version=str(loaded.version), id=request.id,
                outputs=[out], raw_output_contents=[y.astype("<f4").tobytes()],
            )  # fmt: skip

    implemented = {"ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelInfer"}
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        if method.name not in implemented:
            setattr(Servicer, method.name, _unsupported(method.name, grpc))

    server = aio.server(
        options=[
            ("grpc.so_reuseport", 0),  # a port in use is in use
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
    Models that had no published version at start (`pending`) are loaded once they have one."""

    def __init__(
        self,
        config: ServeConfig,
        slots: dict[str, Slot],
        on_line: Callable[[str], None],
        pending: Sequence[str] = (),
    ):
        super().__init__(name="xorship-reloader", daemon=True)
        self.config = config
        self.slots = slots
        self.on_line = on_line
        self.pending = list(pending)
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

    def check(self) -> None:
        for slot in list(self.slots.values()):
            old = slot.current
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
            slot.current = new  # one reference, replaced whole (with its own width and output)
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
            self.slots[new.name] = Slot(new)
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
    anything is served (bad options, port in use, no verified version, a changed file...)."""
    check_config(config)
    _import_server_libraries()
    loaded, pending = load_models(config, on_line)
    http_sock = bind_socket(config.host, config.http_port, "HTTP")
    try:
        bind_socket(config.host, config.grpc_port, "gRPC").close()  # gRPC binds it itself, below
        slots = {m.name: Slot(m) for m in loaded}
        for m in loaded:
            on_line(m.describe())
        _run(config, slots, pending, http_sock, on_line)
    finally:
        http_sock.close()


def _run(
    config: ServeConfig, slots: dict[str, Slot], pending: list[str], http_sock: socket.socket, on_line: Callable
) -> None:
    import asyncio
    import signal

    app = RestApp(config, slots, on_line)
    follow = config.version is None or bool(pending)
    reloader = Reloader(config, slots, on_line, pending) if follow else None

    async def main() -> None:
        import uvicorn

        http_protocol: Any = _bounded_protocol(on_line)

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if reloader is not None and hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, reloader.wake.set)
        grpc_server = _grpc_server(config, slots, on_line)
        await grpc_server.start()
        http = uvicorn.Server(
            uvicorn.Config(
                app, log_config=None, lifespan="off", timeout_graceful_shutdown=GRACE_SECONDS, access_log=False,
                server_header=False, date_header=False, http=http_protocol, h11_max_incomplete_event_size=MAX_HEAD_BYTES,
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
        how = (
            "following PUBLISHED (polled every 1 s; SIGHUP: now)"
            if config.version is None
            else f"pinned to --version {config.version}"
        )
        on_line(
            f"serving {', '.join(slots)} on http://{_grpc_address(config.host, config.http_port)} (REST) "
            f"and {_grpc_address(config.host, config.grpc_port)} (gRPC), {how}; SIGTERM or Ctrl-C stops"
        )
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({http_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
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
    if reloader is not None:
        reloader.join(timeout=5)
    on_line("stopped")


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
