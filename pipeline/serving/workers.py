"""`serve --workers N`: N worker processes, each a whole `serve` (REST and gRPC, its own sessions,
its own reloader, its own batcher), supervised by the process the user started.

- **Sockets.** The supervisor binds the HTTP socket (so a port in use is one line, exit 2, before
  anything starts) and hands it to every worker (an inherited file descriptor): the kernel gives each
  new connection to one of the workers accepting on it. gRPC's server binds its own port, so each
  worker binds the gRPC port with SO_REUSEPORT (`grpc.so_reuseport`) and the kernel spreads
  connections across them; the supervisor checks the port first (without SO_REUSEPORT: a port another
  program holds is "in use") and then keeps it bound with SO_REUSEPORT (not listening), so no other
  program takes it between the check and the workers' binds, or while a worker is restarted.
- **Processes.** Workers are started fresh (`python -c`, not fork): onnxruntime's and gRPC's threads
  do not survive a fork. Each re-resolves and re-checks (sha256) the versions the supervisor checked.
- **One publication, swapped together.** Each worker polls PUBLISHED (and the supervisor forwards
  SIGHUP to every worker); a new version is loaded and checked in each worker and *prepared*, and
  posted on a shared board (an anonymous shared memory page). When every worker has prepared the same
  version, the supervisor commits it on the board, and each worker's next request reads the committed
  number and swaps: all workers change version within one board poll (`BOARD_SECONDS`) of each other,
  and a version one worker cannot load (a changed file) is committed by none: the old one keeps serving
  everywhere. Within a worker one reloader thread reads and swaps in order, so its versions follow the
  publications in their order and never go back to an earlier one.
- **Readiness.** /v2/health/ready and gRPC ServerReady answer for the whole server: ready once every
  worker is listening with its models, not while one is (re)starting, and not once stopping.
- **Stopping.** SIGTERM / SIGINT to the supervisor: it marks the board not ready, sends SIGTERM to every
  worker, each drains its in-flight requests (up to 30 s) and exits, and the supervisor exits 0.
- **A worker that dies** (killed, out of memory, a crash) is reported in one line and restarted on the
  versions committed at that moment; the server is not ready until it is up again. A worker that dies
  before it is ready twice in a row stops the server (exit 1): a worker that cannot start would
  otherwise be restarted forever.

Layering: this module sits below `serve.py` and imports nothing of it: `serve.serve` binds the HTTP
socket, holds the gRPC port and calls `supervise`; each worker process runs `serve.worker_main`.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import PipelineError

BOARD_SECONDS = 0.05  # how often the supervisor reads the board (commits, readiness, workers' exits)
STARTING, SERVING, STOPPING = 0, 1, 2
# The worker's first lines: the package this one was imported from comes first on sys.path; a worker
# dies with its supervisor (Linux: PR_SET_PDEATHSIG).
BOOT = """
import os, sys
sys.path.insert(0, sys.argv[1])
try:
    import ctypes, signal
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
except Exception:
    pass
if os.getppid() != int(sys.argv[3]):  # the supervisor died before the line above armed the signal
    sys.exit(1)
from pipeline.serving.serve import worker_main
worker_main(sys.argv[2])
"""


class Board:
    """The shared page: [state u32][ready u32 x workers][committed version u32 x models][prepared
    version u32 x workers x models]. Aligned 4-byte words, each written by one process only (state and
    committed: the supervisor; ready and prepared: their worker)."""

    def __init__(self, buf: Any, workers: int, models: int):
        self.buf, self.workers, self.models = buf, workers, models
        self._ready = 4
        self._committed = self._ready + 4 * workers
        self._prepared = self._committed + 4 * models

    @staticmethod
    def size(workers: int, models: int) -> int:
        return 4 * (1 + workers + models + workers * models)

    def _get(self, at: int) -> int:
        return int(struct.unpack_from("<I", self.buf, at)[0])

    def _set(self, at: int, value: int) -> None:
        struct.pack_into("<I", self.buf, at, value)

    @property
    def state(self) -> int:
        return self._get(0)

    @state.setter
    def state(self, value: int) -> None:
        self._set(0, value)

    def ready(self, worker: int) -> bool:
        return self._get(self._ready + 4 * worker) == 1

    def set_ready(self, worker: int, ready: bool) -> None:
        self._set(self._ready + 4 * worker, int(ready))

    def committed(self, model: int) -> int:
        return self._get(self._committed + 4 * model)

    def commit(self, model: int, version: int) -> None:
        self._set(self._committed + 4 * model, version)

    def prepared(self, worker: int, model: int) -> int:
        return self._get(self._prepared + 4 * (worker * self.models + model))

    def prepare(self, worker: int, model: int, version: int) -> None:
        self._set(self._prepared + 4 * (worker * self.models + model), version)


class WorkerBoard:
    """One worker's view of the board: what `Slot` and `Reloader` call."""

    def __init__(self, board: Board, worker: int):
        self.board, self.worker = board, worker

    def committed(self, model: int) -> int:
        return self.board.committed(model)

    def prepare(self, model: int, version: int) -> None:
        self.board.prepare(self.worker, model, version)


class BoardHealth:
    """Ready: the supervisor serving (not starting, not stopping) and every worker up with its models."""

    def __init__(self, board: Board):
        self.board = board

    def ready(self) -> bool:
        b = self.board
        return b.state == SERVING and all(b.ready(w) for w in range(b.workers))

    def why(self) -> str:
        b = self.board
        if b.state == STOPPING:
            return "the server is stopping"
        down = [str(w + 1) for w in range(b.workers) if not b.ready(w)]
        if down:
            return f"worker {', '.join(down)} of {b.workers} is not up"
        return "the server is starting"


# ---------------------------------------------------------------------------------------------
# The supervisor


def supervise(
    config: dict[str, Any],
    versions: dict[str, int],
    http_sock: socket.socket,
    on_line: Callable[[str], None],
    serving_line: str,
    grace: float,
) -> None:
    """Start `config["workers"]` workers (`config`: serve's ServeConfig as JSON) on `http_sock` and the
    gRPC port (serve.py binds and holds both), commit what they all prepare, forward SIGHUP, restart a
    worker that dies, and on SIGTERM / SIGINT stop them all (each drains) and return."""
    n, names = int(config["workers"]), list(config["names"])
    page = tempfile.TemporaryFile()  # noqa: SIM115 - closed below; an anonymous shared page
    page.truncate(max(mmap.PAGESIZE, Board.size(n, len(names))))
    buf = mmap.mmap(page.fileno(), 0)
    board = Board(buf, n, len(names))
    for i, name in enumerate(names):
        board.commit(i, versions.get(name, 0))
    http_sock.listen(2048)
    flags = {"stop": False, "hup": False}
    old = {
        sig: signal.signal(sig, lambda s, f: flags.__setitem__("hup" if s == signal.SIGHUP else "stop", True))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    procs: list[subprocess.Popen | None] = [None] * n
    early = [0] * n  # deaths before ready, in a row
    failure: str | None = None
    try:
        for w in range(n):
            procs[w] = _spawn(config, w, board, names, http_sock, page)
        announced = False
        while not flags["stop"]:
            time.sleep(BOARD_SECONDS)
            if flags["hup"]:
                flags["hup"] = False
                for p in procs:
                    if p is not None and p.poll() is None:
                        p.send_signal(signal.SIGHUP)
            for w, p in enumerate(procs):
                if p is None or p.poll() is None:
                    continue
                was_ready = board.ready(w)
                board.set_ready(w, False)
                for m in range(len(names)):
                    board.prepare(w, m, 0)
                early[w] = 0 if was_ready else early[w] + 1
                how = _exit_text(p.returncode)
                if early[w] >= 2 or (not announced and not was_ready):
                    failure = f"worker {w + 1} of {n} (pid {p.pid}) {how} before it was ready; stopping serve"
                    break
                on_line(f"error: worker {w + 1} of {n} (pid {p.pid}) {how}; restarting it")
                procs[w] = _spawn(config, w, board, names, http_sock, page)
            if failure:
                break
            _commit(board, procs)
            if not announced and all(board.ready(w) for w in range(n)):
                on_line(serving_line)
                board.state = SERVING
                announced = True
    finally:
        board.state = STOPPING
        # The supervisor's copy of the listening socket goes first: once the workers close theirs, new
        # clients are refused, not queued to a socket no one accepts on (and reset at the end).
        http_sock.close()
        if failure is None:
            on_line("stopping: finishing in-flight requests")
        for p in procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace + 10
        for w, p in enumerate(procs):
            if p is None:
                continue
            try:
                rc = p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            if rc not in (0, -signal.SIGTERM) and failure is None:
                on_line(f"warning: worker {w + 1} of {n} (pid {p.pid}) {_exit_text(rc)} while stopping")
        for sig, handler in old.items():
            signal.signal(sig, handler)
        buf.close()
        page.close()
    if failure is not None:
        raise PipelineError(failure)
    on_line("stopped")


def _commit(board: Board, procs: Sequence[subprocess.Popen | None]) -> None:
    """A version every live, ready worker has prepared becomes the committed one (all swap)."""
    live = [w for w, p in enumerate(procs) if p is not None and p.poll() is None and board.ready(w)]
    if len(live) != board.workers:
        return  # a worker is (re)starting: it loads the committed versions; commit once it is up
    for m in range(board.models):
        got = {board.prepared(w, m) for w in live}
        if len(got) == 1:
            (v,) = got
            if v and v != board.committed(m):
                board.commit(m, v)


def _exit_text(rc: int | None) -> str:
    if rc is not None and rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


def _spawn(
    config: dict[str, Any], index: int, board: Board, names: Sequence[str], http_sock: socket.socket, page: Any
) -> subprocess.Popen:
    payload = {
        "config": config,
        "index": index,
        "versions": {name: board.committed(i) for i, name in enumerate(names)},
        "http_fd": http_sock.fileno(),
        "board_fd": page.fileno(),
    }
    package_root = str(Path(__file__).resolve().parents[2])
    return subprocess.Popen(
        [sys.executable, "-c", BOOT, package_root, json.dumps(payload), str(os.getpid())],
        pass_fds=(http_sock.fileno(), page.fileno()),
    )
