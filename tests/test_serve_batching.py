"""Server-side batching (`serve --batch-window-us`): the batcher in-process with a stand-in model (fast),
then a real server whose concurrent 1-row answers stay within verify's batch-consistency tolerance."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time

import numpy as np
import pytest

from pipeline.serving.batching import QUEUE_BATCHES, Batcher, QueueFull, concat
from pipeline.serving.protocol import BadRequest
from pipeline.spec.encoding import raw_len


class FakeLoaded:
    """A stand-in for `protocol.Loaded`: run(x) -> the row sums (rows, 1); records every call's rows."""

    def __init__(self, version: int = 1, gate: threading.Event | None = None):
        self.version = version
        self.calls: list[int] = []
        self.gate = gate

    def run(self, x):
        if self.gate is not None:
            self.gate.wait(10)
        self.calls.append(raw_len(x))
        if isinstance(x, dict):
            a = np.stack([np.asarray([len(str(v)) for v in x[k]], np.float32) for k in sorted(x)], axis=1)
            return a.sum(axis=1, keepdims=True)
        if (x < 0).any():  # a row the "model" cannot answer: the client's 400, as a non-finite output is
            raise BadRequest("row is negative")
        return (x.sum(axis=1, keepdims=True) + self.version * 1000).astype(np.float32)


def _gather(batcher: Batcher, jobs):
    async def main():
        return await asyncio.gather(*(batcher(m, x) for m, x in jobs), return_exceptions=True)

    try:
        return asyncio.run(main())
    finally:
        batcher.close()


def test_requests_within_the_window_run_as_one_call_and_are_split_back():
    m = FakeLoaded()
    xs = [np.full((r, 2), i, np.float32) for i, r in enumerate((1, 3, 2, 1), start=1)]
    out = _gather(Batcher(20_000, 1024), [(m, x) for x in xs])
    assert m.calls == [7]  # one onnxruntime call for the 7 rows
    for x, y in zip(xs, out):
        np.testing.assert_array_equal(y, x.sum(axis=1, keepdims=True) + 1000)


def test_a_batch_never_mixes_versions_and_respects_max_rows():
    v1, v2 = FakeLoaded(1), FakeLoaded(2)
    jobs = [(v1 if i % 2 else v2, np.full((1, 2), i, np.float32)) for i in range(10)]
    out = _gather(Batcher(20_000, 3), jobs)
    assert sum(v1.calls) == 5 and sum(v2.calls) == 5 and max(v1.calls + v2.calls) <= 3
    for (m, x), y in zip(jobs, out):
        assert y[0, 0] == x.sum() + 1000 * m.version


def test_a_bad_row_fails_only_its_own_request():
    m = FakeLoaded()
    jobs = [(m, np.ones((1, 2), np.float32)), (m, -np.ones((1, 2), np.float32)), (m, np.ones((2, 2), np.float32))]
    good, bad, two = _gather(Batcher(20_000, 1024), jobs)
    assert isinstance(bad, BadRequest) and bad.status == 400
    np.testing.assert_array_equal(good, [[1002]])
    np.testing.assert_array_equal(two, [[1002], [1002]])


def test_per_column_raw_rows_are_concatenated_column_by_column():
    a = {"n": np.array([1.0], np.float32), "t": np.array(["ab"], dtype=object)}
    b = {"n": np.array([2.0, 3.0], np.float32), "t": np.array(["c", ""], dtype=object)}
    both = concat([a, b])
    assert list(both["t"]) == ["ab", "c", ""] and both["n"].tolist() == [1.0, 2.0, 3.0]
    m = FakeLoaded()
    ya, yb = _gather(Batcher(20_000, 1024), [(m, a), (m, b)])
    assert m.calls == [3] and ya.shape == (1, 1) and yb.shape == (2, 1)


def test_a_model_never_waits_for_another_models_batches():
    """Every model's batch thread runs at once, each held inside its model call: with a fixed pool
    smaller than the models, the last model's requests would wait until another queue emptied."""
    gate = threading.Event()
    models = [FakeLoaded(version=v, gate=gate) for v in range(9)]
    batcher = Batcher(0, 4, models=len(models))
    entered = threading.Semaphore(0)
    for m in models:
        run = m.run

        def counted(x, run=run):
            entered.release()
            return run(x)

        m.run = counted

    async def main():
        jobs = [asyncio.ensure_future(batcher(m, np.ones((1, 2), np.float32))) for m in models]
        await asyncio.sleep(0)
        started = await asyncio.to_thread(lambda: sum(entered.acquire(timeout=5) for _ in models))
        gate.set()
        return started, await asyncio.gather(*jobs)

    try:
        started, answers = asyncio.run(main())
    finally:
        gate.set()
        batcher.close()
    assert started == len(models)  # all nine held in their model calls at the same time
    assert [float(a[0, 0]) for a in answers] == [2.0 + 1000 * v for v in range(9)]


def test_a_full_queue_answers_503_at_once():
    gate = threading.Event()
    m = FakeLoaded(gate=gate)
    batcher = Batcher(0, 2)  # a batch of at most 2 rows; at most QUEUE_BATCHES x 2 rows waiting

    async def main():
        first = asyncio.ensure_future(batcher(m, np.ones((2, 2), np.float32)))  # taken, held at the gate
        await asyncio.sleep(0.2)
        waiting = [asyncio.ensure_future(batcher(m, np.ones((2, 2), np.float32))) for _ in range(QUEUE_BATCHES)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull) as e:
            await batcher(m, np.ones((1, 2), np.float32))
        gate.set()
        await asyncio.gather(first, *waiting)
        return e.value

    try:
        refused = asyncio.run(main())
    finally:
        gate.set()
        batcher.close()
    assert refused.status == 503 and "queue is full" in str(refused) and "retry" in str(refused)


# ---------------------------------------------------------------------------------------------
# A real server


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("tritonclient") is None,
    reason="serve needs the [serve] extra (uvicorn, grpcio, tritonclient): pip install -e '.[serve]'",
)
def test_concurrent_one_row_requests_are_batched_within_verifys_tolerance(shipped, tmp_path):
    import os

    import tritonclient.grpc as tritongrpc

    from pipeline.checks.verify import TOLERANCES
    from tests.test_serve import Server, body, expected, post

    s = Server(shipped, dict(os.environ), "--arch", "shallow", "--workers", "1", "--batch-window-us", "20000",
               log=tmp_path / "serve.log")  # fmt: skip
    rng = np.random.default_rng(3)
    rows = rng.uniform(-3, 3, size=(48, 2)).astype(np.float32)
    got: dict[int, float] = {}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            if i % 2:
                inp = tritongrpc.InferInput("x", [1, 2], "FP32")
                inp.set_data_from_numpy(rows[i : i + 1])
                g = tritongrpc.InferenceServerClient(f"127.0.0.1:{s.grpc}")
                got[i] = float(g.infer("xor_shallow", [inp]).as_numpy("probability")[0, 0])
            else:
                status, doc = post(f"{s.url}/v2/models/xor_shallow/infer", body(rows[i : i + 1]))
                assert status == 200, doc
                got[i] = doc["outputs"][0]["data"][0]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        assert "batching within 20000 us up to 1024 rows" in s.text()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(rows))]
        t = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        want = expected(shipped, "shallow", rows)
        values = np.array([got[i] for i in range(len(rows))], np.float32)
        bound = TOLERANCES["ort-cpu"].bound(want.reshape(-1, 1).astype(np.float64), rows)
        assert np.all(np.abs(values.astype(np.float64) - want).reshape(-1, 1) <= bound)
        assert time.monotonic() - t < 30
    finally:
        assert s.stop() == 0, s.text()


# ---------------------------------------------------------------------------------------------
# bench --serve's load tools (hey, h2load) against serve and the minimal peer


def _need_load_tools() -> None:
    import os

    from pipeline.bench.bench import missing_load_tools

    missing = missing_load_tools()
    if missing:
        why = f"bench --serve's load tools are not installed: {', '.join(missing)} (apt-get install hey nghttp2-client)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)  # CI installs them (.ci/run): missing there is a failure, not a skip
        pytest.skip(why)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("starlette") is None,
    reason="needs the [serve] extra and starlette (the [test] extra)",
)
def test_the_load_tools_drive_serve_and_the_peer_with_no_errors(shipped, tmp_path):
    from pathlib import Path

    from pipeline.bench import bench as B

    _need_load_tools()
    cli = Path(__file__).resolve().parents[1] / "cli.py"
    onnx = next((shipped / "shallow").glob("v*/model.onnx"))
    x = np.array([[0.0, 1.0]], np.float32)
    files = {"http": B._body_file(tmp_path / "b.json", x), "grpc": tmp_path / "b.grpc"}
    files["grpc"].write_bytes(B._grpc_frame("xor_shallow", x))
    logs = tmp_path / "logs"
    logs.mkdir()
    servers = [B._serve_server(cli, shipped, ["--arch", "shallow"], 1, 0), B._peer_server(cli, onnx, "xor_shallow")]
    try:
        for s in servers:
            s.start(logs)
            B._check_frame(s.grpc, files["grpc"].read_bytes(), 1)
            for protocol in ("http", "grpc"):
                r = B._measure(s, protocol, "xor_shallow", files, 1, 2, 1.0, "protocol", 1, tmp_path, "shallow")
                assert r.requests > 0 and r.errors == 0 and r.p99_ms >= r.p50_ms > 0, r
    finally:
        assert [s.stop() for s in servers if s.proc is not None] == [0, 0]
