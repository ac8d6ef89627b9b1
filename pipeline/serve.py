"""A live Open Inference Protocol (v2) server for the published, verified models: `serve`.

What is served: per model (named as in the artifacts folder: a built-in or a recipe name), the
published version (or `--version N`), resolved and checked exactly as `predict` does
(`predict.resolve_model`, `allow_unverified=False`: every file's sha256 on the bytes that are loaded)
and run through the same `Predictor.outputs`, so a served answer is `predict`'s answer bit for bit
(float32, as the session computed it). What a model takes and
answers comes from its own manifest (`artifacts.arch_of`), never from the built-in table: input `x`
(rows, n_inputs) FP32; output `Arch.output_name` (rows, n_outputs) FP32: `probability` (rows, 1),
`probabilities` (rows, classes), `value` (rows, 1). Models are served under their Triton names
(`Arch.serving_name`), so tritonclient code written against `ship`'s Triton repository runs unchanged
against `serve` (except Triton's classification extension: `serve` answers the raw output).

The transport is KServe's (`pip install "xorship[serve]"`): its FastAPI app (REST) and its gRPC
servicer, which speak the v2 protocol. We start them ourselves rather than through
`kserve.ModelServer`, because it binds HTTP to 0.0.0.0 and gRPC to [::] and installs signal handlers
that end the process with the signal: here both listen on `--host` only, the ports are bound (or
checked) before anything is served, and SIGTERM / Ctrl-C drain in-flight requests and return.
kserve is imported only when the server starts: importing this module stays light and torch-free.

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
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import artifacts as A
from .archs import Arch
from .contract import INPUT_NAME
from .errors import CorruptArtifact, PipelineError, UsageError
from .predict import Predictor, ServedModel, resolve_model

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

POLL_SECONDS = 1.0  # how often PUBLISHED is read
GRACE_SECONDS = 30  # in-flight requests get this long to finish after SIGTERM / Ctrl-C
GRPC_THREADS = 4
MAX_BATCH_LIMIT = 2**31 - 1
PLATFORM = "onnxruntime_onnx"  # what Triton reports for the same file
# onnx elem_type -> v2 protocol datatype (Triton's names without TYPE_)
DATATYPE = "FP32"  # what every model of this tool takes and answers

# Triton endpoints beyond the v2 core that `serve` does not implement (REST answers 404 and says so).
UNSUPPORTED_REST = (
    ("/v2/repository/{rest:path}", "the model repository extension"),
    ("/v2/models/stats", "the statistics extension"),
    ("/v2/models/{name}/stats", "the statistics extension"),
    ("/v2/models/{name}/versions/{version}/stats", "the statistics extension"),
    ("/v2/models/{name}/config", "the model configuration extension"),
    ("/v2/models/{name}/versions/{version}/config", "the model configuration extension"),
    ("/v2/models/{name}/trace/setting", "the trace extension"),
    ("/v2/trace/setting", "the trace extension"),
    ("/v2/logging", "the logging extension"),
    ("/v2/systemsharedmemory{rest:path}", "the system shared memory extension"),
    ("/v2/cudasharedmemory{rest:path}", "the CUDA shared memory extension"),
)


class BadRequest(Exception):
    """A request `serve` refuses (a 4xx / INVALID_ARGUMENT); the message is the client's answer."""


@dataclass(frozen=True)
class ServeConfig:
    """What `serve` serves and how. `names`: the models, as named in `root` (a built-in such as
    `shallow`, or a recipe's name); each is described by its own published manifest."""

    root: Path
    names: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    provider: str = "auto"
    max_batch_size: int = 1024
    version: int | None = None  # None: the published one, followed as it changes

    @property
    def models(self) -> tuple[str, ...]:
        """The model names to serve."""
        return self.names


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

    def run(self, x: np.ndarray) -> np.ndarray:
        """(rows, n_inputs) float32 -> (rows, n_outputs) float32 through `Predictor.outputs` (predict's
        own path: shape and finiteness checked). Exact: those are the session's float32 values."""
        import numpy as np

        return self.predictor.outputs(x).astype(np.float32)

    def describe(self) -> str:
        p = self.predictor.providers
        note = f" ({p.cuda_note})" if p.cuda_note and p.requested != "cpu" else ""
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


def load(root: Path, name: str, version: int | None, provider: str) -> Loaded:
    """Resolve as `predict` does (sha256-checked, verified only; the network from the version's own
    manifest), open its session, and check that the graph's tensor names are the description's
    (`Predictor` checks the shapes and the file's own metadata)."""
    from .contract import parse_checked, signature

    served = resolve_model(root, name, None, version, allow_unverified=False)
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
# Requests (no kserve here: `BadRequest` becomes kserve's InvalidInput at the edge)


def describe_input(loaded: Loaded) -> str:
    t = loaded.inputs[0]
    return f"one input {t['name']!r}, {t['datatype']}, shape {t['shape']}"


def decode_batch(inputs: Sequence[Any], loaded: Loaded, max_batch_size: int) -> np.ndarray:
    """The request's (rows, width) float32 batch, or BadRequest saying what is wrong with it.
    `inputs`: kserve InferInput objects (name, datatype, shape, as_numpy())."""
    import numpy as np

    spec = loaded.inputs[0]
    want = spec["name"]
    width = loaded.arch.n_inputs
    if len(inputs) != 1:
        raise BadRequest(f"{loaded.name} takes {describe_input(loaded)}; the request has {len(inputs)} inputs")
    inp = inputs[0]
    if inp.name != want:
        raise BadRequest(f"unknown input {str(inp.name)[:60]!r}: {loaded.name} takes {describe_input(loaded)}")
    if str(inp.datatype).upper() != spec["datatype"]:
        raise BadRequest(f"input {want!r} must be {spec['datatype']}, got {str(inp.datatype)[:20]}")
    shape = list(inp.shape or [])
    if len(shape) != 2 or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"input {want!r} must have shape [rows, {width}], got {shape[:8]}")
    rows, cols = shape
    if cols != width:
        features = ", ".join(loaded.arch.features)
        raise BadRequest(
            f"input {want!r} must have {width} columns ({features[:200]}; shape [rows, {width}]), got shape {shape}"
        )
    if rows < 1:
        raise BadRequest(f"input {want!r} is an empty batch (shape {shape}): send at least one row")
    if rows > max_batch_size:
        raise BadRequest(f"a batch of {rows} rows is over --max-batch-size {max_batch_size}")
    try:
        x = inp.as_numpy()
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"input {want!r}: its data does not match shape {shape} of FP32 values ({exc})") from None
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape != (rows, cols):
        raise BadRequest(f"input {want!r}: its data does not match shape {shape}")
    finite = np.isfinite(x)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        raise BadRequest(f"input {want!r} has a value that is not finite (NaN, Inf, or beyond float32) in row {row}")
    return x


def check_requested_outputs(requested: Sequence[Any] | None, loaded: Loaded) -> None:
    names = {t["name"] for t in loaded.outputs}
    for r in requested or ():
        if r.name not in names:
            raise BadRequest(f"unknown output {str(r.name)[:60]!r}: {loaded.name} has output {sorted(names)}")


# ---------------------------------------------------------------------------------------------
# Reloading


class Reloader(threading.Thread):
    """Polls every model's PUBLISHED pointer; loads a new version fully, then swaps the reference."""

    def __init__(self, config: ServeConfig, slots: dict[str, Slot], on_line: Callable[[str], None]):
        super().__init__(name="xorship-reloader", daemon=True)
        self.config = config
        self.slots = slots
        self.on_line = on_line
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
        for slot in self.slots.values():
            old = slot.current
            try:
                number = A.read_published(self.config.root, old.arch.name)
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
            if new.name != old.name:  # the server registered the model under its old name
                self._problem(
                    old.name,
                    f"warning: {old.name}: v{number} is served as {new.name!r}, not {old.name!r} (its serving name "
                    f"changed): restart serve to serve it; still serving v{old.version}",
                )
                continue
            slot.current = new  # one reference, replaced whole (with its own width and output)
            self._reported.pop(old.name, None)
            self.on_line(f"reloaded: {new.describe()} (was v{old.version})")


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
    from .recipe import NAME_RE

    for name in config.models:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise UsageError(f"{str(name)[:60]!r} is not a model name (a built-in or a recipe's name)")
    if not (1 <= config.max_batch_size <= MAX_BATCH_LIMIT):
        raise UsageError(f"--max-batch-size must be 1..{MAX_BATCH_LIMIT}, got {config.max_batch_size}")
    for port, what in ((config.http_port, "--http-port"), (config.grpc_port, "--grpc-port")):
        if not (1 <= port <= 65535):
            raise UsageError(f"{what} must be 1..65535, got {port}")
    if config.http_port == config.grpc_port:
        raise UsageError(f"--http-port and --grpc-port are both {config.http_port}: give two different ports")


def _import_kserve() -> Any:
    """kserve parses sys.argv when imported (its own flags); it must not see ours."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve
        import kserve.model_server
    except ImportError as exc:
        raise UsageError(
            f'serve needs the [serve] extra: pip install "xorship[serve]" ({exc.name or exc} is missing)'
        ) from None
    finally:
        sys.argv = saved
    return kserve


# ---------------------------------------------------------------------------------------------
# The server


def serve(config: ServeConfig, on_line: Callable[[str], None] = print) -> None:
    """Load, check, bind, serve until SIGTERM / SIGINT, drain, return. Raises PipelineError before
    anything is served (bad options, port in use, no verified version, a changed file...)."""
    check_config(config)
    kserve = _import_kserve()
    loaded = [load(config.root, name, config.version, config.provider) for name in config.models]
    serving = [m.name for m in loaded]
    for m in loaded:
        if serving.count(m.name) > 1:
            others = ", ".join(o.arch.name for o in loaded if o.name == m.name)
            raise UsageError(f"models {others} are all served as {m.name!r}: serve them separately")
    http_sock = bind_socket(config.host, config.http_port, "HTTP")
    try:
        bind_socket(config.host, config.grpc_port, "gRPC").close()  # gRPC binds it itself, below
        slots = {m.name: Slot(m) for m in loaded}
        for m in loaded:
            on_line(m.describe())
        _run(kserve, config, slots, http_sock, on_line)
    finally:
        http_sock.close()


def _run(kserve: Any, config: ServeConfig, slots: dict[str, Slot], http_sock: socket.socket, on_line: Callable) -> None:
    import asyncio
    import signal

    app, dataplane, repo_ext = _build_app(kserve, config, slots)
    reloader = None if config.version is not None else Reloader(config, slots, on_line)

    async def main() -> None:
        import uvicorn

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if reloader is not None and hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, reloader.wake.set)
        grpc_server = _grpc_server(dataplane, repo_ext, config)
        await grpc_server.start()
        http = uvicorn.Server(
            uvicorn.Config(
                app, log_config=None, lifespan="off", timeout_graceful_shutdown=GRACE_SECONDS, access_log=False
            )
        )
        http_sock.listen(2048)
        # _serve, not serve: uvicorn's serve() installs its own signal handlers and re-raises the
        # signal after shutdown (the process would die of SIGTERM instead of exiting 0)
        http_task = asyncio.create_task(http._serve(sockets=[http_sock]))
        while not http.started and not http_task.done():
            await asyncio.sleep(0.01)
        if reloader is not None:
            reloader.start()
        follow = (
            "following PUBLISHED (polled every 1 s; SIGHUP: now)"
            if reloader
            else f"pinned to --version {config.version}"
        )
        on_line(
            f"serving {', '.join(slots)} on http://{_grpc_address(config.host, config.http_port)} (REST) "
            f"and {_grpc_address(config.host, config.grpc_port)} (gRPC), {follow}; SIGTERM or Ctrl-C stops"
        )
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({http_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        on_line("stopping: finishing in-flight requests")
        if reloader is not None:
            reloader.stop()
        http.should_exit = True
        await asyncio.gather(grpc_server.stop(grace=GRACE_SECONDS), http_task, return_exceptions=True)
        stopper.cancel()

    try:  # uvicorn's own choice ("auto"): uvloop where installed (kserve brings it)
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(main())
    if reloader is not None:
        reloader.join(timeout=5)
    on_line("stopped")


def _build_app(kserve: Any, config: ServeConfig, slots: dict[str, Slot]) -> tuple[Any, Any, Any]:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from kserve.model_repository import ModelRepository
    from kserve.model_server import app
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer
    from starlette.exceptions import HTTPException

    model_cls = _model_class(kserve)
    repo = ModelRepository()
    for name, slot in slots.items():
        model = model_cls(name, slot, config.max_batch_size)
        repo.update(model, name)

    class XorDataPlane(DataPlane):
        async def model_metadata(self, model_name: str) -> dict:
            metadata = await super().model_metadata(model_name)
            model = self.get_model_from_registry(model_name)
            metadata["platform"] = PLATFORM
            metadata["versions"] = [str(model.slot.current.version)]
            return metadata

        def metadata(self) -> dict:
            metadata = dict(super().metadata())
            metadata["name"] = "xorship serve (kserve)"
            metadata["extensions"] = []  # none of Triton's (nor kserve's model repository)
            return metadata

    dataplane = XorDataPlane(model_registry=repo)
    repo_ext = ModelRepositoryExtension(model_registry=repo)

    def unsupported(what: str) -> Callable:
        async def handler(request: Any) -> JSONResponse:  # a plain Starlette endpoint
            return JSONResponse(
                status_code=404,
                content={"error": f"{request.url.path}: {what} is not supported by xorship serve (a Triton extension)"},
            )

        return handler

    # registered before kserve's routes, so these win (kserve would load/unload models on request)
    for path, what in UNSUPPORTED_REST:
        app.router.add_route(path, unsupported(what), methods=["GET", "POST"], include_in_schema=False)
    app.add_middleware(_RequestMiddleware, slots=slots)

    rest = RESTServer("kserve.model_server:app", dataplane, repo_ext, config.http_port)
    rest.create_application()

    async def bad_body(request: Any, exc: Exception) -> JSONResponse:
        errors: list = getattr(exc, "errors", list)()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = first.get("msg", str(exc))
        return JSONResponse(
            status_code=400, content={"error": f"the request body is not a v2 inference request: {msg} {where}".strip()}
        )

    async def not_found(request: Any, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "")
        if status == 404:
            detail = f"{request.url.path}: no such endpoint (serve answers the v2 core: health, metadata, ready, infer)"
        return JSONResponse(status_code=status, content={"error": str(detail)})

    app.add_exception_handler(RequestValidationError, bad_body)
    app.add_exception_handler(HTTPException, not_found)
    return app, dataplane, repo_ext


class _RequestMiddleware:
    """`/v2/models/NAME/versions/N/...` is `/v2/models/NAME/...` when N is the version being served,
    and a 404 saying which version is served otherwise (kserve itself answers 501 to any version).
    A JSON body sent as a form (`curl -d`, urllib's default) or with no type is read as JSON, as Triton does."""

    def __init__(self, app: Any, slots: dict[str, Slot]):
        self.app = app
        self.slots = slots

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            parts = scope["path"].split("/")
            # ['', 'v2', 'models', NAME, 'versions', N, ...]
            if len(parts) >= 6 and parts[1:3] == ["v2", "models"] and parts[4] == "versions":
                slot = self.slots.get(parts[3])
                rest = parts[6:]
                if slot is not None and rest in ([], ["ready"], ["infer"]):
                    serving = slot.current.version
                    if parts[5] != str(serving):
                        from fastapi.responses import JSONResponse

                        msg = f"{parts[3]} version {parts[5][:20]} is not served (serving version {serving})"
                        await JSONResponse(status_code=404, content={"error": msg})(scope, receive, send)
                        return
                    path = "/".join(parts[:4] + rest)
                    scope = dict(scope, path=path, raw_path=path.encode())
            headers = scope.get("headers") or []
            types = [v for k, v in headers if k == b"content-type"]
            plain = not any(k == b"inference-header-content-length" for k, _ in headers)
            if plain and (not types or types[0].startswith(b"application/x-www-form-urlencoded")):
                # no type (tritonclient with binary_data=False) or a form (curl -d): JSON, as Triton reads it
                kept = [(k, v) for k, v in headers if k != b"content-type"]
                scope = dict(scope, headers=[*kept, (b"content-type", b"application/json")])
        await self.app(scope, receive, send)


def _model_class(kserve: Any) -> type:
    import uuid

    from kserve.errors import InferenceError, InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferResponse

    class XorModel(kserve.Model):
        def __init__(self, name: str, slot: Slot, max_batch_size: int):
            super().__init__(name)
            self.slot = slot
            self.max_batch_size = max_batch_size
            self.ready = True

        def load(self) -> bool:
            self.ready = True
            return True

        def get_input_types(self) -> list[dict]:
            return [dict(t) for t in self.slot.current.inputs]

        def get_output_types(self) -> list[dict]:
            return [dict(t) for t in self.slot.current.outputs]

        def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
            loaded = self.slot.current  # read once: the whole request runs on this version
            if not hasattr(payload, "inputs"):
                raise InvalidInput("the request body is not a v2 inference request")
            try:
                x = decode_batch(payload.inputs, loaded, self.max_batch_size)
                check_requested_outputs(payload.request_outputs, loaded)
            except BadRequest as exc:
                raise InvalidInput(str(exc)) from None
            try:
                y = loaded.run(x)  # (rows, n_outputs) float32: predict's session, its values unchanged
            except PipelineError as exc:
                raise InferenceError(str(exc)) from None
            out = InferOutput(name=loaded.arch.output_name, shape=list(y.shape), datatype=DATATYPE)
            out.set_data_from_numpy(y, binary_data=bool(payload.use_binary_outputs))
            return InferResponse(
                response_id=str(payload.id) if payload.id else str(uuid.uuid4()),
                model_name=self.name,
                model_version=str(loaded.version),
                infer_outputs=[out],
                use_binary_outputs=bool(payload.use_binary_outputs),
                requested_outputs=payload.request_outputs,
            )

    return XorModel


def _grpc_server(dataplane: Any, repo_ext: Any, config: ServeConfig) -> Any:
    from concurrent import futures

    import grpc
    from grpc import aio
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
    from kserve.protocol.grpc.servicer import InferenceServicer

    def refuse(what: str) -> Callable:
        async def behaviour(request: Any, context: Any) -> Any:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{what} is not supported by xorship serve")

        return behaviour

    class XorServicer(InferenceServicer):
        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            metadata = await self._data_plane.model_metadata(model_name=request.name)
            return pb.ModelMetadataResponse(
                name=metadata["name"],
                versions=metadata["versions"],
                platform=metadata["platform"],
                inputs=metadata["inputs"],
                outputs=metadata["outputs"],
            )

        async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
            await refuse("RepositoryModelLoad (the model repository extension)")(request, context)

        async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
            await refuse("RepositoryModelUnload (the model repository extension)")(request, context)

    class Unsupported(grpc.GenericRpcHandler):
        """Every other method of Triton's GRPCInferenceService (config, statistics, repository index,
        shared memory, trace, logging): UNIMPLEMENTED with a message naming it."""

        def service(self, handler_call_details: Any) -> Any:
            method = str(handler_call_details.method).rsplit("/", 1)[-1][:60]
            return grpc.unary_unary_rpc_method_handler(refuse(f"{method} (a Triton extension)"))

    server = aio.server(
        futures.ThreadPoolExecutor(max_workers=GRPC_THREADS),
        interceptors=(ExceptionToStatusInterceptor(),),
        options=[
            ("grpc.so_reuseport", 0),  # a port in use is in use
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ],
    )
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(XorServicer(dataplane, repo_ext), server)
    server.add_generic_rpc_handlers((Unsupported(),))
    address = _grpc_address(config.host, config.grpc_port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise UsageError(f"gRPC port {config.grpc_port} on {config.host} is in use")
    return server
