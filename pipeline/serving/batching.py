"""Server-side batching for `serve` (`--batch-window-us`), as Triton's dynamic batcher does it.

In one worker process, inference requests for the same model version (the same `Loaded`: a reload
makes a new one, so a batch never mixes versions, nor models) that arrive within the window are
concatenated into one onnxruntime call of at most `--max-batch-size` rows, run in a thread (the event
loop goes on accepting and parsing), and the output is split back, each request getting its own rows.
While a batch runs, the requests that arrive wait for it and go together into the next one: under load
the batches grow by themselves, with no more waiting than the model's own time.

Raw rows (`spec.encoding.Raw`) are concatenated as they come: the (rows, n_inputs) float32 matrix, or,
for a model that takes one input per column, each column's (rows,) values (numbers or text).

The queue is bounded (`QUEUE_BATCHES` x --max-batch-size rows waiting, all models together): past it
a request is refused at once with 503 (gRPC UNAVAILABLE), to be retried, instead of the worker holding
more than it can answer in a few batches.

Answers: the rows a request gets are the rows the session computed for them inside the batch. A row's
value may differ in its last bits from the same row run alone (onnxruntime's kernels block a larger
matrix product differently); `verify` bounds exactly that difference (its batch-consistency check,
per runtime), so batched answers are within verify's batch-consistency tolerance of `predict`'s. With
the window 0 (off) nothing here runs and answers are `predict`'s bit for bit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import PipelineError
from ..spec.encoding import Raw, raw_len

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

Loaded = Any  # protocol.Loaded (this module sits below it: it only calls .run(raw) -> (rows, k))

QUEUE_BATCHES = 4  # rows waiting, all models together, at most this many times --max-batch-size


class QueueFull(Exception):
    """The batch queue holds its most rows: the client's 503 (gRPC UNAVAILABLE), to retry."""

    status = 503


def concat(parts: list[Raw]) -> Raw:
    """One batch of raw rows from several requests' raw rows (all of one model: the same kind)."""
    import numpy as np

    first = parts[0]
    if isinstance(first, Mapping):
        return {name: np.concatenate([p[name] for p in parts]) for name in first}
    return np.concatenate(parts)  # type: ignore[arg-type]


@dataclass
class _Queue:
    """The requests waiting for one model version, in arrival order: (rows, their raw rows, future).
    Shared by the event loop (appends) and its batch thread (takes), under the batcher's lock."""

    loaded: Loaded
    items: list[tuple[int, Raw, asyncio.Future]] = field(default_factory=list)
    rows: int = 0
    running: bool = False  # its batch thread is waiting out the window or running a batch
    full: threading.Event = field(default_factory=threading.Event)  # max_rows waiting: stop waiting


class Batcher:
    """`execute` for `RestApp` and the gRPC servicer when batching is on: `await batcher(loaded, x)`
    returns that request's (rows, n_outputs) float32 rows of a batched run.

    The first request for an idle model version starts a batch thread for it, which waits out the
    window (timed in the thread: the event loop's timers count whole milliseconds under uvloop), or
    less if --max-batch-size rows arrive first, then runs batches until no request is left: requests
    that arrive while a batch runs make the next one, with no further wait."""

    def __init__(self, window_us: int, max_rows: int, models: int = 1):
        self.window = window_us / 1e6
        self.max_rows = max_rows
        self.max_waiting = QUEUE_BATCHES * max_rows
        self.lock = threading.Lock()
        self.waiting = 0  # rows queued, all models, not yet taken into a batch
        self.queues: dict[int, _Queue] = {}  # id(Loaded) -> its queue (the queue holds the Loaded)
        # A batch thread serves one model version's queue until it is empty, so a model's requests must
        # never wait for a thread that another model's queue holds under load: a thread per model, and
        # per model one more for the version a swap retires while its last batches run (plus two).
        self.pool = ThreadPoolExecutor(2 * models + 2, thread_name_prefix="xorship-batch")
        self.batches = 0  # batches run (for tests and the log)
        self.batched_rows = 0

    async def __call__(self, loaded: Loaded, x: Raw, large: bool = False) -> np.ndarray:
        rows = raw_len(x)
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        with self.lock:
            waiting = self.waiting
            if waiting + rows <= self.max_waiting:
                found = self.queues.get(id(loaded))
                q = found if found is not None else self.queues.setdefault(id(loaded), _Queue(loaded))
                q.items.append((rows, x, future))
                q.rows += rows
                self.waiting += rows
                start = not q.running
                q.running = True
                if q.rows >= self.max_rows:
                    q.full.set()
        if waiting + rows > self.max_waiting:
            raise QueueFull(
                f"the batch queue is full ({waiting:,} rows waiting, at most {self.max_waiting:,}: "
                f"{QUEUE_BATCHES} x --max-batch-size); retry shortly"
            )
        if start:
            self.pool.submit(self._serve_queue, q, loop)
        return await future

    def _take(self, q: _Queue) -> list[tuple[int, Raw, asyncio.Future]]:
        """(under the lock) Up to max_rows of the queue's requests, at least one; none: the thread ends."""
        taken: list[tuple[int, Raw, asyncio.Future]] = []
        rows = 0
        while q.items and (not taken or rows + q.items[0][0] <= self.max_rows):
            item = q.items.pop(0)
            taken.append(item)
            rows += item[0]
        q.rows -= rows
        self.waiting -= rows
        if q.rows < self.max_rows:
            q.full.clear()
        if not taken:
            q.running = False
            if self.queues.get(id(q.loaded)) is q:
                del self.queues[id(q.loaded)]
        return taken

    def _serve_queue(self, q: _Queue, loop: asyncio.AbstractEventLoop) -> None:
        """(a batch thread) Wait out the window, then run batches while requests are queued."""
        q.full.wait(self.window)
        while True:
            with self.lock:
                taken = self._take(q)
            if not taken:
                return
            try:
                results: list[Any] = _run_batch(q.loaded, [x for _, x, _ in taken])
            except BaseException as exc:  # the model failed (PipelineError), or a bug: every request's answer
                results = [exc] * len(taken)
            self.batches += 1
            self.batched_rows += sum(r for r, _, _ in taken)
            loop.call_soon_threadsafe(_answer, [f for _, _, f in taken], results)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _answer(futures: list[asyncio.Future], results: list[Any]) -> None:
    """(the event loop) Each request its rows, or its error; one whose client went away is skipped."""
    for future, item in zip(futures, results):
        if future.done():
            continue
        if isinstance(item, BaseException):
            future.set_exception(item)
        else:
            future.set_result(item)


def _run_batch(loaded: Loaded, parts: list[Raw]) -> list[Any]:
    """(in a batch thread) One onnxruntime call on the concatenated rows, split back per request. When
    the batch fails for a row's sake (a non-finite output: the client's 400, `protocol.BadRequest`), each
    request is run alone, so only the request that holds that row is refused; a failure of the model
    itself (PipelineError) is every request's."""
    if len(parts) == 1:
        return [loaded.run(parts[0])]
    try:
        y = loaded.run(concat(parts))
    except PipelineError:
        raise
    except Exception:
        out: list[Any] = []
        for p in parts:
            try:
                out.append(loaded.run(p))
            except Exception as exc:
                out.append(exc)
        return out
    answers, at = [], 0
    for p in parts:
        n = raw_len(p)
        answers.append(y[at : at + n])
        at += n
    return answers
