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
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import PipelineError
from ..spec.encoding import Raw, raw_len

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .serve import Loaded

QUEUE_BATCHES = 4  # rows waiting, all models together, at most this many times --max-batch-size


def concat(parts: list[Raw]) -> Raw:
    """One batch of raw rows from several requests' raw rows (all of one model: the same kind)."""
    import numpy as np

    first = parts[0]
    if isinstance(first, Mapping):
        return {name: np.concatenate([p[name] for p in parts]) for name in first}
    return np.concatenate(parts)  # type: ignore[arg-type]


@dataclass
class _Queue:
    """The requests waiting for one model version, in arrival order: (rows, their raw rows, future)."""

    loaded: Loaded
    items: list[tuple[int, Raw, asyncio.Future]] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None
    running: bool = False  # a batch of this version is in onnxruntime now


class Batcher:
    """`execute` for `RestApp` and the gRPC servicer when batching is on: `await batcher(loaded, x)`
    returns that request's (rows, n_outputs) float32 rows of a batched run. Event loop thread only
    (the thread pool runs onnxruntime and nothing else)."""

    def __init__(self, window_us: int, max_rows: int, threads: int = 1):
        self.window = window_us / 1e6
        self.max_rows = max_rows
        self.max_waiting = QUEUE_BATCHES * max_rows
        self.waiting = 0  # rows queued, all models, not yet in a running batch
        self.queues: dict[int, _Queue] = {}  # id(Loaded) -> its queue (the queue holds the Loaded)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="xorship-batch")
        self.batches = 0  # batches run (for tests and the log)
        self.batched_rows = 0

    async def __call__(self, loaded: Loaded, x: Raw, large: bool = False) -> np.ndarray:
        from .serve import BadRequest

        rows = raw_len(x)
        if self.waiting + rows > self.max_waiting:
            raise BadRequest(
                f"the batch queue is full ({self.waiting:,} rows waiting, at most {self.max_waiting:,}: "
                f"{QUEUE_BATCHES} x --max-batch-size); retry shortly",
                503,
            )
        loop = asyncio.get_running_loop()
        q = self.queues.get(id(loaded))
        if q is None:
            q = self.queues[id(loaded)] = _Queue(loaded)
        future: asyncio.Future = loop.create_future()
        q.items.append((rows, x, future))
        q.rows += rows
        self.waiting += rows
        if not q.running:
            if q.rows >= self.max_rows:
                self._start(q)
            elif q.timer is None:
                q.timer = loop.call_later(self.window, self._start, q)
        return await future

    def _start(self, q: _Queue) -> None:
        """Take up to max_rows of the queue's requests (at least one) into one run in the pool."""
        if q.timer is not None:
            q.timer.cancel()
            q.timer = None
        if q.running or not q.items:
            return
        taken: list[tuple[int, Raw, asyncio.Future]] = []
        rows = 0
        while q.items and (not taken or rows + q.items[0][0] <= self.max_rows):
            item = q.items.pop(0)
            taken.append(item)
            rows += item[0]
        q.rows -= rows
        self.waiting -= rows
        q.running = True
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self.pool, _run_batch, q.loaded, [x for _, x, _ in taken])
        work.add_done_callback(lambda done: self._finish(q, taken, done))

    def _finish(self, q: _Queue, taken: list[tuple[int, Raw, asyncio.Future]], done: asyncio.Future) -> None:
        q.running = False
        self.batches += 1
        self.batched_rows += sum(r for r, _, _ in taken)
        exc = done.exception()
        results = None if exc is not None else done.result()
        for i, (_, _, future) in enumerate(taken):
            if future.done():  # the client went away (cancelled)
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                item = results[i]  # type: ignore[index]
                if isinstance(item, BaseException):
                    future.set_exception(item)
                else:
                    future.set_result(item)
        if q.items:  # they waited while this batch ran: the next batch starts now
            self._start(q)
        elif self.queues.get(id(q.loaded)) is q:
            del self.queues[id(q.loaded)]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _run_batch(loaded: Loaded, parts: list[Raw]) -> list[Any]:
    """(in the pool) One onnxruntime call on the concatenated rows, split back per request. When the
    batch fails for a row's sake (a non-finite output: the client's 400), each request is run alone, so
    only the request that holds that row is refused; a failure of the model itself (PipelineError) is
    every request's."""
    from .serve import BadRequest

    if len(parts) == 1:
        return [loaded.run(parts[0])]
    try:
        y = loaded.run(concat(parts))
    except BadRequest:
        out: list[Any] = []
        for p in parts:
            try:
                out.append(loaded.run(p))
            except (BadRequest, PipelineError) as exc:
                out.append(exc)
        return out
    answers, at = [], 0
    for p in parts:
        n = raw_len(p)
        answers.append(y[at : at + n])
        at += n
    return answers
