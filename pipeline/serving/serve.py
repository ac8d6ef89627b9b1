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

The protocol is spoken by this package, on two well-kept servers and nothing between them and the
model: REST is a plain ASGI application under uvicorn (httptools, uvloop: `rest.py`), gRPC is
`grpcio`'s asyncio server with the service definitions tritonclient ships
(`tritonclient.grpc.service_pb2`: `grpc_service.py`); what a request must be, whatever the protocol,
and the loaded model versions are `protocol.py`'s; this module starts, reloads and stops them. Both parse the request
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
thread per session, orjson, a lean request path and a fast path for the common request, held to the
full reading by tests/test_serve_fast_path.py; docs/serving.md has the profile.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MissingArtifact, PipelineError, UsageError
from ..store import versions
from .grpc_service import grpc_address, grpc_server
from .protocol import Execute, Health, Loaded, ServeConfig, Slot, load, run_direct
from .rest import BUDGET_FACTOR, MAX_HEAD_BYTES, RestApp, bounded_protocol

POLL_SECONDS = 1.0  # how often PUBLISHED is read
MAX_WORKERS = 64
WORKERS_CAP = 8  # the default --workers: the cores, at most this many (see default_workers)
MAX_BATCH_WINDOW_US = 1_000_000
BATCH_WINDOW_US_ON = 100  # the window bench --serve measures batching with; the CLI's default is 0 (off)
GRACE_SECONDS = 30  # in-flight requests get this long to finish after SIGTERM / Ctrl-C
MAX_BATCH_LIMIT = 2**31 - 1
MIN_HEADER_TIMEOUT_S, MAX_HEADER_TIMEOUT_S = 0.1, 3600.0
MAX_REQUEST_MB_LIMIT = 2047  # gRPC's message length is an int32


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
    if not (MIN_HEADER_TIMEOUT_S <= config.header_timeout_s <= MAX_HEADER_TIMEOUT_S):
        raise UsageError(
            f"--header-timeout-s must be {MIN_HEADER_TIMEOUT_S:g}..{MAX_HEADER_TIMEOUT_S:g}, got {config.header_timeout_s:g}"
        )
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
        f"serving {', '.join(names)} on http://{grpc_address(config.host, config.http_port)} (REST) "
        f"and {grpc_address(config.host, config.grpc_port)} (gRPC), {how}"
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

        http_protocol: Any = bounded_protocol(on_line, config.header_timeout_s)

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if reloader is not None and hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, reloader.wake.set)
        elif hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, lambda: None)  # pinned: nothing to reload
        grpc = grpc_server(config, slots, on_line, execute, health, reuse_port=worker is not None)
        await grpc.start()
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
        await asyncio.gather(grpc.stop(grace=GRACE_SECONDS), http_task, return_exceptions=True)
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
