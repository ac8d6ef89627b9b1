"""`serve --workers N`: several worker processes behind one pair of ports, one publication swapped by
all of them together, readiness for the whole server, a dead worker reported and restarted, SIGTERM
drains them all (exit 0)."""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("tritonclient") is None:
    pytest.skip("serve needs the [serve] extra (uvicorn, grpcio, tritonclient)", allow_module_level=True)
if not Path("/proc/self/stat").exists():
    pytest.skip("reads the workers' process ids from Linux's /proc", allow_module_level=True)

import tritonclient.grpc as tritongrpc  # noqa: E402
import tritonclient.http as tritonhttp  # noqa: E402

from tests.test_serve import XOR, Server, _publish_copy, _wait_for, body, expected, get, post  # noqa: E402

pytestmark = pytest.mark.slow  # real servers in subprocesses


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return sorted(out)


def test_workers_serve_one_publication_swapped_together_and_survive_a_dead_worker(shipped_copy, tmp_path):
    root = shipped_copy
    s = Server(root, dict(os.environ), "--arch", "shallow", "--workers", "3", log=tmp_path / "serve.log")
    try:
        assert "3 workers" in s.text()
        workers = children(s.proc.pid)
        assert len(workers) == 3, workers
        # every worker answers (new connections are spread by the kernel): predict's numbers, bit for bit
        want = expected(root, "shallow", XOR)
        for _ in range(12):
            status, doc = post(f"{s.url}/v2/models/xor_shallow/infer", body(XOR))
            assert status == 200 and doc["model_version"] == "1"
            np.testing.assert_array_equal(np.array(doc["outputs"][0]["data"], np.float32), want)

        # a new publication, SIGHUP to the server: every worker swaps, and once one answer says v2 no
        # later answer (any worker, REST or gRPC) says v1
        _publish_copy(root, "shallow", 1, 2)
        s.proc.send_signal(signal.SIGHUP)
        seen, t = [], time.monotonic()
        inp = tritongrpc.InferInput("x", [4, 2], "FP32")
        inp.set_data_from_numpy(XOR)
        while time.monotonic() - t < 5 and seen[-20:] != ["2"] * 20:
            if len(seen) % 2:
                g = tritongrpc.InferenceServerClient(f"127.0.0.1:{s.grpc}")  # a new connection each time
                seen.append(g.infer("xor_shallow", [inp]).get_response().model_version)
            else:
                seen.append(post(f"{s.url}/v2/models/xor_shallow/infer", body(XOR))[1]["model_version"])
        assert seen[-20:] == ["2"] * 20, seen
        first = seen.index("2")
        assert "1" not in seen[first:], seen  # never back
        assert s.text().count("reloaded: xor_shallow: shallow v2") == 3, s.text()

        # a worker killed: one line, not ready until it is back, then ready and serving v2
        victim = children(s.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        assert _wait_for(lambda: get(f"{s.url}/v2/health/ready")[0] == 503, 5), s.text()
        assert _wait_for(lambda: not s.g.is_server_ready(), 5), s.text()  # gRPC ServerReady agrees
        assert _wait_for(lambda: s.h.is_server_ready() and s.g.is_server_ready(), 60), s.text()
        lines = [line for line in s.text().splitlines() if f"pid {victim}" in line]
        assert len(lines) == 1 and "was killed by SIGKILL; restarting it" in lines[0], lines
        assert len(children(s.proc.pid)) == 3
        for _ in range(6):
            assert post(f"{s.url}/v2/models/xor_shallow/infer", body(XOR))[1]["model_version"] == "2"
    finally:
        rc = s.stop()
    assert rc == 0, s.text()
    assert s.log.read_text().count("stopped") == 1
    assert all(not Path(f"/proc/{w}").exists() for w in workers)
    assert "Traceback" not in s.log.read_text()


def test_sigterm_drains_every_worker_and_readiness_is_the_whole_servers(shipped, tmp_path):
    s = Server(shipped, dict(os.environ), "--arch", "shallow", "--workers", "2", log=tmp_path / "serve.log")
    workers = children(s.proc.pid)
    try:
        assert len(workers) == 2 and s.h.is_server_ready() and s.g.is_server_ready()
        h = tritonhttp.InferenceServerClient(f"127.0.0.1:{s.http}")
        inp = tritonhttp.InferInput("x", [4, 2], "FP32")
        inp.set_data_from_numpy(XOR)
        pending = h.async_infer("xor_shallow", [inp])
    finally:
        rc = s.stop(signal.SIGTERM)
    assert rc == 0, s.text()
    assert pending.get_result().as_numpy("probability").shape == (4, 1)  # in flight at SIGTERM: answered
    text = s.log.read_text()
    assert "stopping: finishing in-flight requests" in text and text.rstrip().endswith("stopped")
    assert all(not Path(f"/proc/{w}").exists() for w in workers)
