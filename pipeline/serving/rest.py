"""`serve`'s REST side: the v2 endpoints as a plain ASGI application (`RestApp`, no framework between
the socket and the model, under uvicorn on httptools), each inference request read strictly
(`parse_rest`: the common request by a fast path, `_plain_request`; any other by `read_rest`) and
answered as JSON or with Triton's binary tensor data extension; bodies bounded (--max-request-mb, and
a budget across connections), request heads bounded (`bounded_protocol`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson  # a core dependency, light: the hot path's JSON

from ..errors import PipelineError
from ..spec.encoding import Raw
from .batching import QueueFull
from .protocol import (
    BYTES,
    DATATYPE,
    DEFAULT_HEADER_TIMEOUT_S,
    F32_MAX,
    SERVER_NAME,
    SMALL_VALUES,
    BadRequest,
    Execute,
    Health,
    Loaded,
    OverloadLog,
    ServeConfig,
    Slot,
    check_inputs,
    check_requested_outputs,
    check_version,
    is_int,
    lookup,
    one_line,
    raw_rows,
    run_direct,
    server_version,
    tensor_from_bytes,
    tensor_from_json,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

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
MODEL_EXTENSION_NAMES = {p.split("/")[3] for p, _ in UNSUPPORTED_REST if p.startswith("/v2/models/")}  # stats
UNSUPPORTED_FIRST = {p.split("/")[2] for p, _ in UNSUPPORTED_REST}  # /v2/<this>...: checked against them
WANTED_HEADERS = {b"content-length": "content-length", b"content-encoding": "content-encoding",
                  HEADER_LENGTH.encode(): HEADER_LENGTH}  # fmt: skip
UNSUPPORTED_MODEL_REST = {  # /v2/models/NAME[/versions/N]/<this>
    "stats": "the statistics extension",
    "config": "the model configuration extension",
    "trace": "the trace extension",
}


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
    if not is_int(size) or size < 0:
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
            requested.append((o.get("name"), classes if is_int(classes) else 1))
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
                {"name": SERVER_NAME, "version": server_version(), "extensions": []} if not rest else {rest[1]: True}
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


def bounded_protocol(on_line: Callable[[str], None], header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S) -> Any:
    """uvicorn's httptools protocol with two bounds on a request's line and headers: their size
    (MAX_HEAD_BYTES: past it the client gets 431 and its connection is closed, so one endless header
    cannot exhaust memory) and their time (`header_timeout_s`: past it 408 and the connection closed,
    so clients that send a byte now and then cannot hold connections; uvicorn itself times out only
    idle keep-alive connections between requests). A head's time runs from the connection for its
    first request, else from the first byte after the previous request (a blank line too), and
    only while no request of the connection is being answered: a pipelined head waiting behind an
    answer starts its time when that answer is done. A refusal never cuts into an answer being
    written: it waits for it. "auto" (uvicorn's own choice, h11 with its own size bound and no time
    bound) where httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "auto"
    slow = OverloadLog(on_line, what="timed-out request heads")  # many slow clients: a line a second
    period = min(1.0, header_timeout_s / 4)
    sweeping: list[bool] = [False]  # one sweep a `period` while connections are open (a worker: its own)

    def sweep(loop: Any, connections: set) -> None:
        """Refuse every connection whose request head has been arriving for longer than the bound:
        one timer for all of them, not one per request (a timer armed and cancelled per request would
        cost each request about a microsecond)."""
        now = loop.time()
        for conn in list(connections):
            since = getattr(conn, "_head_since", None)
            if since is not None and now - since > header_timeout_s and not conn._busy():
                conn._too_slow()
        sweeping[0] = bool(connections)
        if sweeping[0]:
            loop.call_later(period, sweep, loop, connections)

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _in_head = True  # between a message's first byte and its complete headers (and before the first)
        _in_message = False  # between a message's first byte and its complete body
        _head = 0
        _head_since: float | None = None  # since when a request head is awaited (loop time); None: it is not
        _pending: tuple[int, str, str, Callable[[str], None]] | None = None  # a refusal waiting for an answer

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._head_since = self.loop.time()  # the first request's head: from the connection
            if not sweeping[0]:
                sweeping[0] = True
                self.loop.call_later(period, sweep, self.loop, self.connections)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._in_message, self._head = True, True, 0
            if self._head_since is None:
                self._head_since = self.loop.time()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_since = None
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_message = False
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._busy() or self.transport.is_closing():
                return
            if self._pending is not None:
                self._refuse(*self._pending)
            elif self._head_since is not None:  # a head that began while an answer was written: from now
                self._head_since = self.loop.time()

        def data_received(self, data: bytes) -> None:
            if self._head_since is None and not self._in_message:  # bytes between requests, a blank line too
                self._head_since = self.loop.time()
            before = self._in_head
            super().data_received(data)
            if before and self._in_head and not self.transport.is_closing():
                self._head += len(data)
                if self._head > MAX_HEAD_BYTES:
                    self._refuse(431, "Request Header Fields Too Large",
                                 f"the request line and headers are over {MAX_HEAD_BYTES:,} bytes", on_line)  # fmt: skip

        def _busy(self) -> bool:
            """A request of this connection is being answered, or waits (pipelined) to be."""
            return (self.cycle is not None and not self.cycle.response_complete) or bool(self.pipeline)

        def _too_slow(self) -> None:
            if not self.transport.is_closing():
                msg = f"the request line and headers did not arrive within {header_timeout_s:g} s"
                self._refuse(408, "Request Timeout", msg, slow)

        def _refuse(self, status: int, reason: str, msg: str, log: Callable[[str], None]) -> None:
            self._head_since = None
            if self._busy():  # never into an answer being written: after it, reading nothing more meanwhile
                self._pending = (status, reason, msg, log)
                self.transport.pause_reading()
                return
            self._pending = None
            body = _error(msg)
            self.transport.write(
                f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
                f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            self.transport.close()
            log(f"client error: {status} {msg}")

    return BoundedHttpToolsProtocol
