"""`serve`: a real server in a subprocess (with torch blocked), real clients (tritonclient HTTP and
gRPC, plain JSON over urllib), every answer compared with `predict`'s bit for bit."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

# The server's libraries are looked for, not imported: the server runs in a subprocess.
if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("grpc") is None:
    pytest.skip("serve needs the [serve] extra (uvicorn, grpcio): pip install -e '.[serve]'", allow_module_level=True)
tritonhttp = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http]")
tritongrpc = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc]")
from tritonclient.utils import InferenceServerException  # noqa: E402

from pipeline.serving import predict as P  # noqa: E402
from pipeline.spec.archs import Arch  # noqa: E402
from tests.conftest import ROOT, run_cli  # noqa: E402
from tests.test_predict import _no_torch_env  # noqa: E402
from tests.test_ship_recipes import HOUSES, IRIS, published_model  # noqa: E402

pytestmark = pytest.mark.slow  # real servers in subprocesses: the whole suite runs them, `-m "not slow"` does not
MODELS = {"shallow": "xor_shallow", "wide-deep": "xor_wide_deep"}
XOR = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `serve` through the library (ServeConfig(names=...)): models named as in the artifacts folder.
SERVE_NAMES = """
import sys
from pathlib import Path
from pipeline.serving.serve import ServeConfig, serve
root, http, grpc, *names = sys.argv[1:]
serve(ServeConfig(Path(root), names=tuple(names), http_port=int(http), grpc_port=int(grpc), provider="cpu"))
"""


class Server:
    def __init__(self, root: Path, env: dict, *args: str, log: Path, names: tuple[str, ...] = ()):
        self.http, self.grpc = free_port(), free_port()
        self.log = log
        self.out = open(log, "w")  # noqa: SIM115 - closed in stop()
        if names:
            argv = [sys.executable, "-c", SERVE_NAMES, str(root), str(self.http), str(self.grpc), *names]
        else:
            argv = [sys.executable, str(ROOT / "cli.py"), "serve", "--artifacts-dir", str(root)]
            argv += ["--http-port", str(self.http), "--grpc-port", str(self.grpc), "--provider", "cpu", *args]
        self.proc = subprocess.Popen(
            argv,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        self.url = f"http://127.0.0.1:{self.http}"
        self.h = tritonhttp.InferenceServerClient(f"127.0.0.1:{self.http}")
        self.g = tritongrpc.InferenceServerClient(f"127.0.0.1:{self.grpc}")
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.text()}")
            try:
                if self.h.is_server_ready() and self.g.is_server_ready():
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"serve not ready in 60 s: {self.text()}")
            time.sleep(0.2)
        # serve prints its "serving ..." line just after it answers ready: tests read that line, so wait
        # for it (a loaded machine can be slower to write it than a client is to ask)
        while "serving " not in self.text() and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)

    def text(self) -> str:
        self.out.flush()
        return self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.out.close()
        return rc


def post(url: str, body: bytes, content_type: str | None = "application/json") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def body(rows: np.ndarray, name: str = "x", datatype: str = "FP32", shape: list | None = None) -> bytes:
    shape = list(rows.shape) if shape is None else shape
    return json.dumps(
        {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": rows.ravel().tolist()}]}
    ).encode()


def expected(root: Path, arch: str, x: np.ndarray, version: int | None = None) -> np.ndarray:
    """What `predict` computes: the same resolve_model + Predictor.probabilities."""
    served = P.resolve_model(root, arch, None, version)
    return P.Predictor(served, "cpu").probabilities(x)


@pytest.fixture(scope="module")
def root(shipped, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("serve") / "artifacts"
    shutil.copytree(shipped, dst)
    return dst


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    """One server for the module, both models, with torch blocked: serving never imports torch."""
    tmp = tmp_path_factory.mktemp("serve-env")
    env = _no_torch_env(tmp)
    s = Server(root, env, "--arch", "all", "--max-batch-size", "64", log=tmp / "serve.log")
    yield s
    rc = s.stop()
    assert rc == 0, s.text()


def rows_for_test() -> np.ndarray:
    rng = np.random.default_rng(7)
    wide = rng.uniform(-50, 50, size=(40, 2)).astype(np.float32)
    return np.concatenate([XOR, rng.uniform(0, 1, size=(20, 2)).astype(np.float32), wide])


@pytest.mark.parametrize("arch", list(MODELS))
def test_clients_get_predicts_numbers_bit_for_bit(server, root, arch):
    name = MODELS[arch]
    x = rows_for_test()
    want = expected(root, arch, x)
    assert server.h.is_server_live() and server.g.is_server_live()
    assert server.h.is_model_ready(name) and server.g.is_model_ready(name)
    for client, mod in ((server.h, tritonhttp), (server.g, tritongrpc)):
        inp = mod.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer(name, [inp], outputs=[mod.InferRequestedOutput("probability")]).as_numpy("probability")
        assert got.dtype == np.float32 and got.shape == (len(x), 1)
        np.testing.assert_array_equal(got.reshape(-1).astype(np.float64), want)  # bit for bit
        if mod is tritonhttp:  # the input as JSON data, not binary
            inp.set_data_from_numpy(x, binary_data=False)
            got = client.infer(name, [inp]).as_numpy("probability")
            np.testing.assert_array_equal(got.reshape(-1).astype(np.float64), want)
    status, doc = post(f"{server.url}/v2/models/{name}/infer", body(x))
    assert status == 200 and doc["model_version"] == "1"
    np.testing.assert_array_equal(np.array(doc["outputs"][0]["data"], dtype=np.float64), want)
    assert [int(p > 0.5) for p in want[:4]] == [0, 1, 1, 0]
    # curl -d (form content type) works as against Triton
    status, doc = post(f"{server.url}/v2/models/{name}/infer", body(XOR), content_type=None)
    assert status == 200, doc


def test_model_metadata_comes_from_the_model_description(server):
    for name in MODELS.values():
        meta = server.h.get_model_metadata(name)
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
        assert meta["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": [-1, 1]}]
        assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
        g = server.g.get_model_metadata(name)
        assert [(t.name, t.datatype, list(t.shape)) for t in g.inputs] == [("x", "FP32", [-1, 2])]
        assert [(t.name, t.datatype, list(t.shape)) for t in g.outputs] == [("probability", "FP32", [-1, 1])]
    text = server.text()
    assert "xor_shallow: shallow v1" in text and "runs on CPUExecutionProvider" in text


BAD = [
    ("wrong input name", body(XOR, name="y"), 400, "unknown input 'y'"),
    ("INT64", body(XOR.astype(np.int64), datatype="INT64"), 400, "must be FP32, got INT64"),
    (
        "BYTES",
        json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]}).encode(),
        400,
        "must be FP32, got BYTES",
    ),
    ("wrong width", body(np.zeros((2, 3), np.float32)), 400, "must have 2 columns"),
    ("NaN", b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[NaN,1]}]}', 400, "not finite"),
    ("Inf", b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,Infinity]}]}', 400, "not finite"),
    ("beyond float32", b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1e39,1]}]}', 400, "not finite"),
    ("empty batch", body(np.zeros((0, 2), np.float32)), 400, "empty batch"),
    ("shape vs data", body(XOR, shape=[3, 2]), 400, "does not match shape [3, 2]"),
    (
        "strings as FP32",
        b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":["a","b"]}]}',
        400,
        "does not match",
    ),
    ("not JSON", b"this is not json", 400, "not a v2 inference request"),
    ("no inputs", b"{}", 400, "not a v2 inference request"),
    ("over --max-batch-size", body(np.zeros((65, 2), np.float32)), 400, "over --max-batch-size 64"),
]


@pytest.mark.parametrize("case,payload,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_request_is_4xx_and_the_next_one_is_right(server, root, case, payload, status, message):
    got, doc = post(f"{server.url}/v2/models/xor_shallow/infer", payload)
    assert got == status and message in doc.get("error", ""), (got, doc)
    got, doc = post(f"{server.url}/v2/models/xor_shallow/infer", body(XOR))
    assert got == 200
    np.testing.assert_array_equal(np.array(doc["outputs"][0]["data"]), expected(root, "shallow", XOR))


def test_bad_requests_over_grpc_and_unknown_model(server):
    for client, mod, code in ((server.g, tritongrpc, "StatusCode.INVALID_ARGUMENT"), (server.h, tritonhttp, "400")):
        inp = mod.InferInput("x", [1, 2], "FP32")
        inp.set_data_from_numpy(np.array([[np.nan, 1]], np.float32))
        with pytest.raises(InferenceServerException, match="not finite") as e:
            client.infer("xor_shallow", [inp])
        assert str(e.value.status()) == code
        inp.set_data_from_numpy(np.array([[0, 1]], np.float32))
        with pytest.raises(InferenceServerException, match="nope"):
            client.infer("nope", [inp])
        assert client.infer("xor_shallow", [inp]).as_numpy("probability")[0, 0] > 0.5
    got, doc = post(f"{server.url}/v2/models/nope/infer", body(XOR))
    assert got == 404 and "nope" in doc["error"]


def test_triton_extensions_answer_404_with_a_message(server):
    for path in (
        "/v2/models/xor_shallow/config",
        "/v2/models/stats",
        "/v2/repository/index",
        "/v2/systemsharedmemory/status",
    ):
        got, doc = get(server.url + path)
        assert got == 404 and "not supported by xorship serve" in doc["error"], (path, doc)
    got, doc = post(f"{server.url}/v2/repository/models/xor_shallow/unload", b"{}")
    assert got == 404 and "model repository extension" in doc["error"]
    assert server.h.is_model_ready("xor_shallow")  # nothing was unloaded
    with pytest.raises(InferenceServerException, match="not supported") as e:
        server.g.get_model_config("xor_shallow")
    assert "UNIMPLEMENTED" in str(e.value.status())
    with pytest.raises(InferenceServerException, match="not supported"):
        server.g.unload_model("xor_shallow")
    with pytest.raises(InferenceServerException, match="not supported"):
        server.h.get_inference_statistics("xor_shallow")
    assert server.h.get_server_metadata()["extensions"] == []


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                found.append(addr)
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux's /proc/net/tcp")
def test_http_and_grpc_listen_on_loopback_only(server):
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    for port in (server.http, server.grpc):
        addrs = _listening(port)
        assert addrs and set(addrs) <= loopback, (port, addrs)


# ---------------------------------------------------------------------------------------------
# Integrity, round 3: what a client sends is read as strictly as `predict` reads a row; versions
# that are not served are not found over gRPC too; requests are bounded before they are read.


def _bad_binary(header: dict, header_len: str | None, tail: bytes) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    headers = {"Inference-Header-Content-Length": header_len if header_len is not None else str(len(head))}
    return head + tail, headers


def _post_raw(url: str, data: bytes, headers: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


ONE = {"name": "x", "shape": [1, 2], "datatype": "FP32"}
STRICT = [
    ("a JSON string body", b'"hello"', "must be a JSON object, not a str"),
    ("a JSON list body", b"[1, 2]", "must be a JSON object, not a list"),
    ("true in FP32 data", json.dumps({"inputs": [{**ONE, "data": [True, 1]}]}).encode(), "true/false"),
    ("a string number in FP32 data", json.dumps({"inputs": [{**ONE, "data": ["5.1", 1]}]}).encode(), "'5.1'"),
    ("null in FP32 data", json.dumps({"inputs": [{**ONE, "data": [None, 1]}]}).encode(), "null"),
    ("a shape of strings", json.dumps({"inputs": [{**ONE, "shape": ["1", "2"], "data": [0, 1]}]}).encode(), "shape"),
    ("a boolean shape", json.dumps({"inputs": [{**ONE, "shape": [True, 2], "data": [0, 1]}]}).encode(), "shape"),
    ("a huge integer", b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1' + b"0" * 400 + b',1]}]}', "not finite"),
    ("no data", json.dumps({"inputs": [ONE]}).encode(), "has no data"),
    ("an id that is not a string", json.dumps({"id": 5, "inputs": [{**ONE, "data": [0, 1]}]}).encode(), "id must be a string"),
    ("two inputs", json.dumps({"inputs": [{**ONE, "data": [0, 1]}] * 2}).encode(), "has 2 inputs"),
    ("an unknown output", json.dumps({"inputs": [{**ONE, "data": [0, 1]}], "outputs": [{"name": "p"}]}).encode(), "unknown output 'p'"),
    (
        "the classification extension",
        json.dumps({"inputs": [{**ONE, "data": [0, 1]}], "outputs": [{"name": "probability", "parameters": {"classification": 1}}]}).encode(),
        "classification extension",
    ),
]  # fmt: skip


@pytest.mark.parametrize("case,payload,message", STRICT, ids=[c[0] for c in STRICT])
def test_rest_requests_are_read_strictly_with_one_clear_message(server, root, case, payload, message):
    got, doc = post(f"{server.url}/v2/models/xor_shallow/infer", payload)
    assert got == 400 and message in doc.get("error", ""), (got, doc)
    assert "Inference-Header-Content-Length" not in doc["error"]  # not a message about another extension
    got, doc = post(f"{server.url}/v2/models/xor_shallow/infer", body(XOR))
    assert got == 200


def test_json_sent_as_text_plain_or_any_type_is_read_as_json(server, root):
    for content_type in ("text/plain", "application/octet-stream", "application/json; charset=utf-8"):
        got, doc = post(f"{server.url}/v2/models/xor_shallow/infer", body(XOR), content_type=content_type)
        assert got == 200, (content_type, doc)
        np.testing.assert_array_equal(np.array(doc["outputs"][0]["data"]), expected(root, "shallow", XOR))


BINARY_BAD = [
    ("a header length that is not a number", ONE | {"parameters": {"binary_data_size": 8}}, "x", b"\0" * 8, "not a byte count"),
    ("a header length past the body", ONE | {"parameters": {"binary_data_size": 8}}, "99999", b"\0" * 8, "larger than the request body"),
    ("a size that is not the bytes sent", ONE | {"parameters": {"binary_data_size": 16}}, None, b"\0" * 8, "binary_data_size 16, but 8 bytes"),
    ("a size that is not the shape's", ONE | {"parameters": {"binary_data_size": 4}}, None, b"\0" * 4, "needs 8"),
    ("a negative size", ONE | {"parameters": {"binary_data_size": -8}}, None, b"\0" * 8, "whole number of bytes"),
    ("bytes without a size", ONE, None, b"\0" * 8, "gives no binary_data_size"),
    ("data and a size", ONE | {"data": [0, 1], "parameters": {"binary_data_size": 8}}, None, b"\0" * 8, "both data and binary_data_size"),
    ("NaN as bytes", ONE | {"parameters": {"binary_data_size": 8}}, None, np.array([np.nan, 1], "<f4").tobytes(), "not finite"),
]  # fmt: skip


@pytest.mark.parametrize("case,tensor,header_len,tail,message", BINARY_BAD, ids=[c[0] for c in BINARY_BAD])
def test_bad_binary_extension_requests_name_what_is_wrong(server, case, tensor, header_len, tail, message):
    data, headers = _bad_binary({"inputs": [tensor]}, header_len, tail)
    got, doc = _post_raw(f"{server.url}/v2/models/xor_shallow/infer", data, headers)
    assert got == 400 and message in doc.get("error", ""), (got, doc)


def test_binary_data_in_and_out_is_exact(server, root):
    x = rows_for_test()
    head = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "probability", "parameters": {"binary_data": True}}]}  # fmt: skip
    data, headers = _bad_binary(head, None, x.astype("<f4").tobytes())
    req = urllib.request.Request(f"{server.url}/v2/models/xor_shallow/infer", data=data, method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        n = int(r.headers["Inference-Header-Content-Length"])
        raw = r.read()
    doc = json.loads(raw[:n])
    got = np.frombuffer(raw[n:], dtype="<f4")
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == got.nbytes == 4 * len(x)
    np.testing.assert_array_equal(got.astype(np.float64), expected(root, "shallow", x))


def test_a_version_that_is_not_served_is_not_found_over_grpc_as_over_rest(server):
    inp = tritongrpc.InferInput("x", [4, 2], "FP32")
    inp.set_data_from_numpy(XOR)
    with pytest.raises(InferenceServerException, match="version 9 is not served") as e:
        server.g.infer("xor_shallow", [inp], model_version="9")
    assert "NOT_FOUND" in str(e.value.status())
    with pytest.raises(InferenceServerException, match="version 9 is not served") as e:
        server.g.get_model_metadata("xor_shallow", model_version="9")
    assert "NOT_FOUND" in str(e.value.status())
    assert server.g.is_model_ready("xor_shallow", model_version="9") is False
    assert server.g.is_model_ready("xor_shallow", model_version="1") is True
    assert server.g.infer("xor_shallow", [inp], model_version="1").get_response().model_version == "1"
    with pytest.raises(InferenceServerException, match="unknown model") as e:
        server.g.infer("nope", [inp])
    assert "NOT_FOUND" in str(e.value.status())
    for path in ("versions/9/infer", "versions/9", "versions/9/ready"):
        method = post if path.endswith("infer") else None
        got = (
            method(f"{server.url}/v2/models/xor_shallow/{path}", body(XOR))[0]
            if method
            else get(f"{server.url}/v2/models/xor_shallow/{path}")[0]
        )
        assert got == 404, path


def test_grpc_requests_are_read_strictly_too(server):
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc}"))

    def infer(**fields):
        tensor = pb.ModelInferRequest.InferInputTensor(
            name="x", datatype="FP32", shape=[1, 2], **fields.pop("tensor", {})
        )
        return stub.ModelInfer(pb.ModelInferRequest(model_name="xor_shallow", inputs=[tensor], **fields))

    cases = [
        ({"tensor": {"contents": pb.InferTensorContents(int64_contents=[0, 1])}}, "must be fp32_contents"),
        ({"raw_input_contents": [b"\0" * 4]}, "needs 8"),
        ({"raw_input_contents": [b"\0" * 8, b"\0" * 8]}, "2 raw contents for 1 inputs"),
        ({"tensor": {"contents": pb.InferTensorContents(fp32_contents=[float("nan"), 1])}}, "not finite"),
        ({"tensor": {"contents": pb.InferTensorContents(fp32_contents=[1])}}, "does not match shape"),
        ({"tensor": {"contents": pb.InferTensorContents(fp32_contents=[0, 1])}, "raw_input_contents": [b"\0" * 8]},
         "both contents and raw_input_contents"),
        ({"tensor": {"contents": pb.InferTensorContents(fp32_contents=[0, 1])},
          "outputs": [pb.ModelInferRequest.InferRequestedOutputTensor(
              name="probability", parameters={"classification": pb.InferParameter(string_param="1")})]},
         "classification extension"),
    ]  # fmt: skip
    for fields, message in cases:
        with pytest.raises(grpc.RpcError) as e:
            infer(**fields)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in e.value.details(), (
            fields,
            e.value.details(),
        )
    ok = infer(tensor={"contents": pb.InferTensorContents(fp32_contents=[0, 1])})
    assert np.frombuffer(ok.raw_output_contents[0], "<f4")[0] > 0.5


def test_a_clients_error_is_one_log_line(server):
    before = server.text()
    got, _ = post(f"{server.url}/v2/models/xor_shallow/infer", b'{"inputs": [{"name": "y"}]}')
    assert got == 400
    assert _wait_for(lambda: len(server.text()) > len(before))
    new = server.text()[len(before) :]
    assert new.count("\n") == 1 and "client error: 400 POST /v2/models/xor_shallow/infer: unknown input 'y'" in new
    assert "Traceback" not in server.text() and "Warning" not in server.text()


def _raw_http(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, read the whole answer (the server closes or answers one response)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                joined = b"".join(chunks)
                head, _, rest = joined.partition(b"\r\n\r\n")
                length = [int(v) for k, v in (line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
                          if k.strip().lower() == b"content-length"]  # fmt: skip
                if length and len(rest) >= length[0]:
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)


def test_what_a_client_sends_never_becomes_more_than_one_log_line(server):
    before = server.text()
    get(f"{server.url}/v2/x%0Aerror:%20forged")
    post(f"{server.url}/v2/models/xor_shallow/infer", json.dumps({"inputs": [{"name": "x", "shape": [1, 2],
         "datatype": "FP\nerror: injected", "data": [0, 1]}]}).encode())  # fmt: skip
    assert _wait_for(lambda: server.text().count("client error") >= before.count("client error") + 2)
    new = server.text()[len(before) :]
    assert not [line for line in new.splitlines() if line.startswith("error:")], new
    assert "\\n" in new and len([line for line in new.splitlines() if line.strip()]) == 2


def test_odd_bytes_in_the_binary_header_length_are_a_400_not_a_500(server):
    for value in (b"\xb2", b"1\xb9", b"-5", b" "):
        answer = _raw_http(server.http, b"POST /v2/models/xor_shallow/infer HTTP/1.1\r\nHost: x\r\n"
                           b"Inference-Header-Content-Length: " + value + b"\r\nContent-Length: 2\r\n\r\n{}")  # fmt: skip
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert "Traceback" not in server.text() and "Exception in ASGI" not in server.text()


def test_headers_over_the_bound_get_431_and_http_1_0_gets_a_length(server):
    answer = _raw_http(
        server.http, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    answer = _raw_http(server.http, b"GET /v2/health/ready HTTP/1.0\r\n\r\n")
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert answer.startswith(b"HTTP/1.1 200") and b"content-length: " in head and b"chunked" not in head
    answer = _raw_http(server.http, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                       b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n\r\n")  # fmt: skip
    assert not answer.startswith(b"HTTP/1.1 500") and "handshake" not in server.text()
    assert server.h.is_server_ready()


def _read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer (its head and Content-Length bytes of body) from a socket."""
    got = b""
    while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < int(
        re.search(rb"(?i)content-length: *(\d+)", got.partition(b"\r\n\r\n")[0]).group(1)
    ):
        chunk = sock.recv(65536)
        assert chunk, got
        got += chunk
    return got


def test_request_heads_that_arrive_too_slowly_get_408_and_the_server_goes_on(shipped, tmp_path):
    """Slowloris: a client that sends a request head a byte at a time, or nothing at all, does not keep
    its connection past --header-timeout-s; a keep-alive client that waits between requests does."""
    import http.client
    import select

    s = Server(
        shipped,
        dict(os.environ),
        "--arch",
        "shallow",
        "--workers",
        "1",
        "--header-timeout-s",
        "1",
        "--batch-window-us",
        "400000",
        log=tmp_path / "serve.log",
    )  # fmt: skip  (each answer takes 0.4 s)
    try:
        drip = socket.create_connection(("127.0.0.1", s.http), timeout=10)
        silent = socket.create_connection(("127.0.0.1", s.http), timeout=10)
        start = time.monotonic()
        drip.sendall(b"POST /v2/models/xor_shallow/infer HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while not select.select([drip], [], [], 0.1)[0] and time.monotonic() - start < 8:
            drip.sendall(b"x")  # a header byte every 0.1 s: never done, never idle
        closed_after = time.monotonic() - start
        drip.settimeout(5)
        answer = drip.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"did not arrive within 1 s" in answer and 1.0 <= closed_after <= 3.0, closed_after
        silent.settimeout(5)
        assert silent.recv(65536).startswith(b"HTTP/1.1 408")  # a connection that sends nothing: the same
        assert silent.recv(65536) == b""  # and closed
        drip.close()
        silent.close()
        # blank lines between requests are no way around it: after an answer, they start the clock too
        crlf = socket.create_connection(("127.0.0.1", s.http), timeout=10)
        one = body(XOR[:1])
        request = (b"POST /v2/models/xor_shallow/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(one)) + one  # fmt: skip
        crlf.sendall(request)
        assert _read_answer(crlf).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        while not select.select([crlf], [], [], 0.1)[0] and time.monotonic() - start < 8:
            crlf.sendall(b"\r\n")
        assert crlf.recv(65536).startswith(b"HTTP/1.1 408") and time.monotonic() - start <= 3.0
        crlf.close()
        # three requests pipelined at once, answered one after another for longer than the bound: every
        # one answered, none cut by a 408 (a head waiting behind an answer starts its time after it)
        piped = socket.create_connection(("127.0.0.1", s.http), timeout=10)
        piped.sendall(request * 2 + request[:20])  # the third head's rest follows at once, read after answers
        time.sleep(0.05)
        piped.sendall(request[20:])
        answers = [_read_answer(piped) for _ in range(3)]
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers), answers
        piped.close()
        # a client that stalls mid-head behind a request it sent whole: that answer whole, then the 408
        stall = socket.create_connection(("127.0.0.1", s.http), timeout=10)
        stall.sendall(request + request[:20])
        first = _read_answer(stall)
        assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"}]}"), first
        stall.settimeout(5)
        assert stall.recv(65536).startswith(b"HTTP/1.1 408")
        stall.close()
        keep = http.client.HTTPConnection("127.0.0.1", s.http, timeout=10)  # waits between requests: served
        for _ in range(2):
            keep.request("POST", "/v2/models/xor_shallow/infer", body(XOR[:1]), {"Content-Type": "application/json"})
            reply = keep.getresponse()
            assert reply.status == 200, reply.read()
            reply.read()
            time.sleep(1.5)
        keep.close()
        assert s.h.is_server_ready()
        assert _wait_for(lambda: "client error: 408 the request line and headers did not arrive within 1 s" in s.text())
        assert "Traceback" not in s.text() and "Exception in ASGI" not in s.text()
    finally:
        assert s.stop() == 0


def test_gzip_members_are_one_stream_and_trailing_bytes_are_refused(server, root):
    import gzip

    whole = body(XOR)
    two = gzip.compress(whole[:10]) + gzip.compress(whole[10:])
    got, doc = _post_raw(f"{server.url}/v2/models/xor_shallow/infer", two, {"Content-Encoding": "gzip"})
    assert got == 200, doc
    np.testing.assert_array_equal(np.array(doc["outputs"][0]["data"]), expected(root, "shallow", XOR))
    got, doc = _post_raw(f"{server.url}/v2/models/xor_shallow/infer", gzip.compress(whole) + b"junk",
                         {"Content-Encoding": "gzip"})  # fmt: skip
    assert got == 400 and "decompressed" in doc["error"]


def _wait_for(predicate, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _publish_copy(root: Path, arch: str, src: int, dst: int, tamper: bool = False) -> None:
    """A new version N, built as publish does: folder renamed into place whole, pointer last."""
    tmp = root / arch / f".tmp-v{dst}"
    shutil.copytree(root / arch / f"v{src}", tmp)
    if tamper:
        onnx = tmp / "model.onnx"
        onnx.write_bytes(onnx.read_bytes() + b"\x00")
    tmp.rename(root / arch / f"v{dst}")
    pointer = root / arch / ".PUBLISHED.tmp"
    pointer.write_text(f"{dst}\n")
    os.replace(pointer, root / arch / "PUBLISHED")


def test_new_publication_is_picked_up_and_a_bad_one_is_not(server, root):
    """Runs last but one: it changes the module's artifacts."""
    name = MODELS["shallow"]
    _publish_copy(root, "shallow", 1, 2)
    assert _wait_for(lambda: server.h.get_model_metadata(name)["versions"] == ["2"]), server.text()
    inp = tritongrpc.InferInput("x", [4, 2], "FP32")
    inp.set_data_from_numpy(XOR)
    result = server.g.infer(name, [inp])
    assert result.get_response().model_version == "2"
    np.testing.assert_array_equal(result.as_numpy("probability").reshape(-1), expected(root, "shallow", XOR, 2))
    assert "reloaded: xor_shallow: shallow v2" in server.text()
    # a tampered v3 is refused; v2 keeps serving
    _publish_copy(root, "shallow", 2, 3, tamper=True)
    assert _wait_for(lambda: "v3 not loaded" in server.text()), server.text()
    assert "changed after it was written" in server.text()
    assert server.h.get_model_metadata(name)["versions"] == ["2"]
    got, doc = post(f"{server.url}/v2/models/{name}/versions/2/infer", body(XOR))
    assert got == 200 and doc["model_version"] == "2"
    got, doc = post(f"{server.url}/v2/models/{name}/versions/1/infer", body(XOR))
    assert got == 404 and "serving version 2" in doc["error"]


def test_start_up_failures_are_one_line_and_nonzero(shipped, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        r = run_cli(
            "serve",
            "--artifacts-dir",
            str(shipped),
            "--http-port",
            str(port),
            "--grpc-port",
            str(free_port()),
            timeout=60,
        )
        assert r.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in r.stderr, r.stderr
        r = run_cli(
            "serve",
            "--artifacts-dir",
            str(shipped),
            "--http-port",
            str(free_port()),
            "--grpc-port",
            str(port),
            timeout=60,
        )
        assert r.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    finally:
        busy.close()
    r = run_cli("serve", "--artifacts-dir", str(tmp_path / "empty"), "--http-port", str(free_port()), timeout=60)
    assert r.returncode == 4 and "no published version" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad"
    shutil.copytree(shipped, bad)
    onnx = bad / "wide-deep" / "v1" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\x00")
    r = run_cli(
        "serve",
        "--artifacts-dir",
        str(bad),
        "--http-port",
        str(free_port()),
        "--grpc-port",
        str(free_port()),
        timeout=60,
    )
    assert r.returncode == 6 and "changed after it was written" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_pinned_version_and_sigterm_finishes_and_exits_0(shipped, tmp_path):
    s = Server(shipped, dict(os.environ), "--arch", "wide-deep", "--version", "1", log=tmp_path / "serve.log")
    try:
        inp = tritonhttp.InferInput("x", [4, 2], "FP32")
        inp.set_data_from_numpy(XOR)
        got = s.h.infer("xor_wide_deep", [inp]).as_numpy("probability").reshape(-1)
        np.testing.assert_array_equal(got, expected(shipped, "wide-deep", XOR))
        assert "pinned to --version 1" in s.text()
        assert not s.h.is_model_ready("xor_shallow")  # --arch wide-deep serves only that one
    finally:
        rc = s.stop(signal.SIGTERM)
    assert rc == 0, s.text()
    assert "stopped" in s.log.read_text()


# ---------------------------------------------------------------------------------------------
# Recipe models: what each takes and answers comes from its own manifest


ROWS4 = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [-40, 0, 1e3, 7]], dtype=np.float32)


def served_numbers(root: Path, name: str, x: np.ndarray, version: int | None = None) -> np.ndarray:
    """What `predict` computes for model `name`: (rows, n_outputs), as float32 (exact: the session's values)."""
    return P.Predictor(P.resolve_model(root, name, None, version), "cpu").outputs(x).astype(np.float32)


@pytest.fixture(scope="module")
def recipe_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve-recipes") / "artifacts"
    root.mkdir()
    for arch in (IRIS, HOUSES):
        published_model(root, arch)
    return root


@pytest.fixture(scope="module")
def recipe_server(recipe_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-recipes-env")
    s = Server(recipe_root, _no_torch_env(tmp), log=tmp / "serve.log", names=("iris", "houses"))
    yield s
    rc = s.stop()
    assert rc == 0, s.text()


def test_a_multiclass_model_answers_one_probability_per_class(recipe_server, recipe_root):
    want = served_numbers(recipe_root, "iris", ROWS4[:1])
    assert want.shape == (1, 3) and abs(float(want.sum()) - 1) < 1e-5
    status, doc = post(f"{recipe_server.url}/v2/models/iris/infer", body(ROWS4[:1]))
    assert status == 200, doc
    (out,) = doc["outputs"]
    assert (out["name"], out["shape"], out["datatype"]) == ("probabilities", [1, 3], "FP32")
    np.testing.assert_array_equal(np.array(out["data"], dtype=np.float32).reshape(1, 3), want)  # bit for bit
    for client, mod in ((recipe_server.h, tritonhttp), (recipe_server.g, tritongrpc)):
        inp = mod.InferInput("x", list(ROWS4.shape), "FP32")
        inp.set_data_from_numpy(ROWS4)
        got = client.infer("iris", [inp], outputs=[mod.InferRequestedOutput("probabilities")])
        np.testing.assert_array_equal(got.as_numpy("probabilities"), served_numbers(recipe_root, "iris", ROWS4))
    meta = recipe_server.h.get_model_metadata("iris")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    g = recipe_server.g.get_model_metadata("iris")
    assert [(t.name, list(t.shape)) for t in g.outputs] == [("probabilities", [-1, 3])]
    assert "iris: iris v1" in recipe_server.text() and "answers probabilities [3]" in recipe_server.text()


def test_a_multiclass_model_refuses_a_row_of_the_wrong_width(recipe_server):
    got, doc = post(f"{recipe_server.url}/v2/models/iris/infer", body(XOR))
    assert got == 400 and "must have 4 columns (sepal_length, sepal_width" in doc["error"], doc
    got, doc = post(f"{recipe_server.url}/v2/models/iris/infer", body(ROWS4[:, :2].astype(np.int64), datatype="INT64"))
    assert got == 400 and "must be FP32" in doc["error"]
    got, doc = post(f"{recipe_server.url}/v2/models/iris/infer", body(ROWS4[:1]))
    assert got == 200


def test_a_regression_model_answers_its_value_under_its_serving_name(recipe_server, recipe_root):
    x = np.array([[3, 20, 1.5], [5, 2, 30]], dtype=np.float32)
    inp = tritongrpc.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = recipe_server.g.infer("house_prices", [inp]).as_numpy("value")
    assert got.shape == (2, 1)
    np.testing.assert_array_equal(got, served_numbers(recipe_root, "houses", x))
    assert not recipe_server.h.is_model_ready("houses")  # served under its serving name only
    meta = recipe_server.h.get_model_metadata("house_prices")
    assert meta["outputs"] == [{"name": "value", "datatype": "FP32", "shape": [-1, 1]}]


def test_a_new_version_with_another_network_is_served_with_its_own_shapes(recipe_server, recipe_root):
    """Runs last in the module: it publishes iris v2, which takes 3 features and answers 4 classes."""
    wider = Arch(
        name="iris",
        widths=(3, 5, 4),
        activation="gelu",
        task="multiclass",
        features=("a", "b", "c"),
        classes=("p", "q", "r", "s"),
        scale_input=True,
    )
    assert published_model(recipe_root, wider) == 2
    assert _wait_for(lambda: recipe_server.h.get_model_metadata("iris")["versions"] == ["2"]), recipe_server.text()
    meta = recipe_server.h.get_model_metadata("iris")
    assert meta["inputs"][0]["shape"] == [-1, 3] and meta["outputs"][0]["shape"] == [-1, 4]
    x = ROWS4[:, :3].copy()
    status, doc = post(f"{recipe_server.url}/v2/models/iris/infer", body(x))
    assert status == 200 and doc["outputs"][0]["shape"] == [3, 4] and doc["model_version"] == "2"
    np.testing.assert_array_equal(
        np.array(doc["outputs"][0]["data"], dtype=np.float32).reshape(3, 4), served_numbers(recipe_root, "iris", x, 2)
    )
    got, doc = post(f"{recipe_server.url}/v2/models/iris/infer", body(ROWS4))
    assert got == 400 and "must have 3 columns" in doc["error"]
    assert "reloaded: iris: iris v2" in recipe_server.text()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _one_worker(shipped: Path, tmp_path: Path, max_request_mb: int) -> Server:
    """The shallow model served by one worker: the requests land in the process whose memory is read."""
    args = ("--arch", "shallow", "--max-request-mb", str(max_request_mb), "--workers", "1")
    return Server(shipped, dict(os.environ), *args, log=tmp_path / "serve.log")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc to read the server's RSS")
def test_requests_over_max_request_mb_are_refused_before_they_are_read(shipped, tmp_path):
    import http.client

    s = _one_worker(shipped, tmp_path, 1)
    try:
        inp = tritongrpc.InferInput("x", [4, 2], "FP32")
        inp.set_data_from_numpy(XOR)
        for _ in range(5):  # warm: sessions, buffers, first allocations
            s.g.infer("xor_shallow", [inp])
            post(f"{s.url}/v2/models/xor_shallow/infer", body(XOR))
        start = _rss_mb(s.proc.pid)
        big = np.zeros((131072, 2), np.float32)  # 1 MiB of FP32: 2 MiB and more as a request
        payload = body(np.full((200_000, 2), 0.5, np.float32))
        assert len(payload) > 2 * 10**6
        two = np.concatenate([big, big])  # 2 MiB
        g_big = tritongrpc.InferInput("x", list(two.shape), "FP32")
        g_big.set_data_from_numpy(two)
        for i in range(50):
            if i % 3 == 0:
                with pytest.raises(InferenceServerException) as e:
                    s.g.infer("xor_shallow", [g_big])
                assert "RESOURCE_EXHAUSTED" in str(e.value.status())
            elif i % 3 == 1:
                got, doc = post(f"{s.url}/v2/models/xor_shallow/infer", payload)
                assert got == 413 and "--max-request-mb 1" in doc["error"]
            else:  # no Content-Length: refused as the streamed body passes the bound
                conn = http.client.HTTPConnection("127.0.0.1", s.http, timeout=30)
                chunks = (payload[k : k + 65536] for k in range(0, len(payload), 65536))
                try:
                    conn.request("POST", "/v2/models/xor_shallow/infer", body=chunks, encode_chunked=True)
                    r = conn.getresponse()
                    assert r.status == 413 and b"--max-request-mb 1" in r.read()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server answered and closed while the body was still being sent
                finally:
                    conn.close()
        end = _rss_mb(s.proc.pid)
        assert end - start < 50, (start, end)
        assert s.g.infer("xor_shallow", [inp]).as_numpy("probability").shape == (4, 1)  # still serving
    finally:
        assert s.stop() == 0, s.text()
    assert "Traceback" not in s.log.read_text()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc to read the server's RSS")
def test_malformed_requests_within_the_bound_do_not_pile_up_memory(shipped, tmp_path):
    s = _one_worker(shipped, tmp_path, 8)
    try:
        wrong = np.zeros((600_000, 3), np.float32)  # 7.2 MB of the wrong width
        bad = tritongrpc.InferInput("x", list(wrong.shape), "FP32")
        bad.set_data_from_numpy(wrong)
        for _ in range(10):  # warm: gRPC's buffers and the allocator's arenas reach their working size
            with pytest.raises(InferenceServerException):
                s.g.infer("xor_shallow", [bad])
        start = _rss_mb(s.proc.pid)
        for _ in range(30):
            with pytest.raises(InferenceServerException, match="must have 2 columns"):
                s.g.infer("xor_shallow", [bad])
        end = _rss_mb(s.proc.pid)
        assert end - start < 50, (start, end)  # kserve kept ~300 MB per such request until a later collection
    finally:
        assert s.stop() == 0, s.text()


# ---------------------------------------------------------------------------------------------
# Several models: the published ones are served, each other one named with the command that fixes it


def test_serve_all_serves_what_is_published_and_names_what_it_skips(shipped, tmp_path):
    root = tmp_path / "artifacts"
    root.mkdir()
    shutil.copytree(shipped / "shallow", root / "shallow")  # as after the README's `all --arch shallow`
    s = Server(root, dict(os.environ), "--arch", "all", log=tmp_path / "serve.log")
    try:
        assert s.h.is_model_ready("xor_shallow") and not s.h.is_model_ready("xor_wide_deep")
        skipped = [line for line in s.text().splitlines() if "wide-deep" in line]
        assert len(skipped) == 1 and "no published version of wide-deep" in skipped[0]
        assert f"python cli.py all --arch wide-deep --artifacts-dir {root}" in skipped[0]
        shutil.copytree(shipped / "wide-deep", root / "wide-deep")  # published meanwhile: picked up
        assert _wait_for(lambda: s.h.is_model_ready("xor_wide_deep")), s.text()
        inp = tritonhttp.InferInput("x", [4, 2], "FP32")
        inp.set_data_from_numpy(XOR)
        got = s.h.infer("xor_wide_deep", [inp]).as_numpy("probability").reshape(-1)
        np.testing.assert_array_equal(got, expected(root, "wide-deep", XOR))
        assert "now serving: xor_wide_deep" in s.text()
    finally:
        assert s.stop() == 0, s.text()
    (root / "wide-deep" / "PUBLISHED").unlink()
    r = run_cli("serve", "--artifacts-dir", str(root), "--strict", "--http-port", str(free_port()),
                "--grpc-port", str(free_port()), timeout=60)  # fmt: skip
    assert r.returncode == 4 and len(r.stderr.strip().splitlines()) == 1
    assert "python cli.py all --arch wide-deep" in r.stderr


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc to read the server's RSS")
def test_many_large_requests_at_once_are_bounded_by_a_budget(shipped, tmp_path):
    """Bodies held at once, all connections together, stay within 4 x --max-request-mb: past that a
    request gets 503 (retry) instead of the server holding them all."""
    s = _one_worker(shipped, tmp_path, 1)
    socks = []
    try:
        start = _rss_mb(s.proc.pid)
        declared = 1_000_000
        for _ in range(6):
            sock = socket.create_connection(("127.0.0.1", s.http), timeout=10)
            sock.sendall(b"POST /v2/models/xor_shallow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: "
                         + str(declared).encode() + b"\r\n\r\n" + b" " * 900_000)  # fmt: skip
            socks.append(sock)
        time.sleep(1.0)
        answers = []
        for sock in socks:
            sock.settimeout(0.5)
            try:
                answers.append(sock.recv(200))
            except TimeoutError:
                answers.append(b"")
        assert any(a.startswith(b"HTTP/1.1 503") for a in answers), answers
        assert _rss_mb(s.proc.pid) - start < 50
        assert s.h.is_server_ready()
    finally:
        for sock in socks:
            sock.close()
        assert s.stop() == 0, s.text()


def test_several_recipes_are_all_served(recipe_root, tmp_path):
    recipes = []
    for name, target, gate in (("iris", "species", "min_accuracy = 0.5"), ("houses", "price", "max_rmse = 50.0")):
        f = tmp_path / f"{name}.toml"
        f.write_text(f'name = "{name}"\n[data]\npath = "x.csv"\ntarget = "{target}"\n[gate]\n{gate}\n')
        recipes += ["--recipe", str(f)]
    s = Server(recipe_root, dict(os.environ), *recipes, log=tmp_path / "serve.log")
    try:
        assert s.h.is_model_ready("iris") and s.h.is_model_ready("house_prices")
    finally:
        assert s.stop() == 0, s.text()


# ---------------------------------------------------------------------------------------------
# Raw tables (issue 23): a model that takes one input per column (a number with gaps, a text
# category, a boolean, a date; names with spaces and slashes) and an all-numeric one with gaps (one
# `x`, NaN imputed in its graph), both built by the real pipeline (`all`), shipped by `ship`, served
# together. Every answer is compared bit for bit with a plain onnxruntime session on the shipped file
# (fed by the names and types of ship's config.pbtxt) and with `predict`.

LISTINGS = ("lot size", "kind/type", "has pool", "sold on")


def _listings_csv(path: Path) -> None:
    import datetime as dt

    rng = np.random.default_rng(5)
    lines = ["price,lot size,kind/type,has pool,sold on"]
    for i in range(150):
        kind = ("flat", "house", "villa")[i % 3]
        lot = round(float(rng.uniform(50, 500)), 1)
        pool = bool(rng.integers(0, 2))
        day = dt.date(2020, 1, 1) + dt.timedelta(days=int(rng.integers(0, 900)))
        price = lot * 2 + {"flat": 10, "house": 100, "villa": 300}[kind] + 50 * pool + float(rng.normal(0, 10))
        lot_text = "" if i % 9 == 0 else str(lot)  # gaps: imputed, with an indicator
        day_text = "" if i % 13 == 0 else day.isoformat()
        lines.append(f"{price:.1f},{lot_text},{kind},{str(pool).lower()},{day_text}")
    path.write_text("\n".join(lines) + "\n")


def _gaps_csv(path: Path) -> None:
    rng = np.random.default_rng(6)
    lines = ["y,a,b"]
    for i in range(120):
        a, b = float(rng.uniform(0, 10)), float(rng.uniform(-5, 5))
        lines.append(f"{2 * a - b + float(rng.normal(0, 0.5)):.3f},{'' if i % 7 == 0 else round(a, 3)},{round(b, 3)}")
    path.write_text("\n".join(lines) + "\n")


RECIPE = 'name = "{name}"\n[model]\nhidden = [8]\n[data]\npath = "{path}"\ntarget = "{target}"\n[train]\nsteps = 60\nlr = 0.01\n[gate]\nmax_rmse = 1e9\n'


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict:
    """`all` on two raw tables, then `ship` of both: {folder, root, repo, recipes}."""
    tmp = tmp_path_factory.mktemp("raw-tables")
    _listings_csv(tmp / "listings.csv")
    _gaps_csv(tmp / "gaps.csv")
    recipes = {}
    for name, target in (("listings", "price"), ("gaps", "y")):
        recipes[name] = tmp / f"{name}.toml"
        recipes[name].write_text(RECIPE.format(name=name, path=f"{name}.csv", target=target))
    root, repo = tmp / "artifacts", tmp / "repo"
    for recipe in recipes.values():
        r = run_cli("all", "--recipe", str(recipe), "--artifacts-dir", str(root), cwd=tmp, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        r = run_cli("ship", "--recipe", str(recipe), "--artifacts-dir", str(root), "--out", str(repo), cwd=tmp)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return {"folder": tmp, "root": root, "repo": repo, "recipes": recipes}


@pytest.fixture(scope="module")
def tables_server(tables, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("raw-tables-env")
    args = [a for r in tables["recipes"].values() for a in ("--recipe", str(r))]
    s = Server(tables["root"], _no_torch_env(tmp), *args, log=tmp / "serve.log")
    yield s
    rc = s.stop()
    assert rc == 0, s.text()


def _config(repo: Path, name: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _shipped_session_run(repo: Path, name: str, columns: dict) -> np.ndarray:
    """A plain onnxruntime session on the shipped file, fed by the names and types ship's config says."""
    import onnxruntime as ort
    from tritonclient.grpc import model_config_pb2

    cfg = _config(repo, name)
    sess = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {}
    for i in cfg.input:
        string = i.data_type == model_config_pb2.TYPE_STRING
        feeds[i.name] = np.asarray(columns[i.name], dtype=object if string else np.float32).reshape(
            -1, list(i.dims)[-1]
        )
    return sess.run([cfg.output[0].name], feeds)[0]


# A gap, a category never seen in training, missing text, an impossible day (rolls over), text that is
# not a date, a boolean spelled TRUE, and an ordinary row.
RAW = {
    "lot size": np.array([120.5, np.nan, 300.0, np.nan, 88.0], np.float32),
    "kind/type": np.array(["flat", "castle", "", "villa", "house"], object),
    "has pool": np.array(["true", "TRUE", "false", "", "false"], object),
    "sold on": np.array(["2021-03-04", "2021-02-30", "", "not a date", "2022-12-31"], object),
}


def _inputs(mod, columns: dict, binary: bool = True) -> list:
    out = []
    for name, values in columns.items():
        v = values.reshape(-1, 1)
        inp = mod.InferInput(name, list(v.shape), "BYTES" if v.dtype == object else "FP32")
        if mod is tritonhttp:
            inp.set_data_from_numpy(v, binary_data=binary)
        else:
            inp.set_data_from_numpy(v)
        out.append(inp)
    return out


def _predict_values(tables: dict, name: str, csv_text: str) -> np.ndarray:
    rows = tables["folder"] / f"{name}-rows.csv"
    rows.write_text(csv_text)
    r = run_cli("predict", "--recipe", str(tables["recipes"][name]), "--artifacts-dir", str(tables["root"]),
                "--input", str(rows), "--json", cwd=tables["folder"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    return np.array([p["value"] for p in json.loads(r.stdout)["predictions"]], dtype=np.float64)


def test_per_column_metadata_and_config_name_every_column(tables, tables_server):
    from tritonclient.grpc import model_config_pb2

    want = [{"name": n, "datatype": "FP32" if n == "lot size" else "BYTES", "shape": [-1, 1]} for n in LISTINGS]
    assert tables_server.h.get_model_metadata("listings")["inputs"] == want
    g = tables_server.g.get_model_metadata("listings")
    assert [(t.name, t.datatype, list(t.shape)) for t in g.inputs] == [
        (w["name"], w["datatype"], [-1, 1]) for w in want
    ]
    cfg = _config(tables["repo"], "listings")
    string, fp32 = model_config_pb2.TYPE_STRING, model_config_pb2.TYPE_FP32
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        ("lot size", fp32, [1]), ("kind/type", string, [1]), ("has pool", string, [1]), ("sold on", string, [1])
    ]  # fmt: skip
    assert cfg.max_batch_size == 1024 and [o.name for o in cfg.output] == ["value"]
    assert "CPU provider" in (tables["repo"] / "listings" / "config.pbtxt").read_text()
    # the all-numeric model keeps its one `x`, NaN imputed in its graph
    assert tables_server.h.get_model_metadata("gaps")["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
    assert [(i.name, list(i.dims)) for i in _config(tables["repo"], "gaps").input] == [("x", [2])]
    text = tables_server.text()
    assert "listings: listings v1" in text and "takes 4 columns, one input each (1 FP32, 3 BYTES)" in text
    assert "takes 2 features (NaN: missing)" in text
    assert "runs on CPUExecutionProvider" in text and "CUDA" not in text


def test_a_raw_row_with_gaps_and_an_unseen_category_is_bit_identical_everywhere(tables, tables_server):
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    want = _shipped_session_run(tables["repo"], "listings", RAW)
    assert want.shape == (5, 1) and np.isfinite(want).all()
    csv_text = '"lot size","kind/type","has pool","sold on"\n' + "".join(
        f"{'' if np.isnan(a) else a},{b},{c},{d}\n" for a, b, c, d in zip(*RAW.values())
    )
    np.testing.assert_array_equal(_predict_values(tables, "listings", csv_text), want.reshape(-1).astype(np.float64))
    h, g = tables_server.h, tables_server.g
    for client, mod, binary in ((h, tritonhttp, True), (h, tritonhttp, False), (g, tritongrpc, True)):
        got = client.infer("listings", _inputs(mod, RAW, binary)).as_numpy("value")
        assert got.dtype == np.float32 and got.tobytes() == want.tobytes(), (mod.__name__, binary)
    # plain JSON over REST: null is a missing number
    inputs = [{"name": n, "shape": [5, 1], "datatype": "FP32" if v.dtype != object else "BYTES",
               "data": [None if isinstance(x, float) and np.isnan(x) else (float(x) if v.dtype != object else x) for x in v]}
              for n, v in RAW.items()]  # fmt: skip
    status, doc = post(f"{tables_server.url}/v2/models/listings/infer", json.dumps({"inputs": inputs}).encode())
    assert status == 200, doc
    assert np.array(doc["outputs"][0]["data"], dtype=np.float32).tobytes() == want.tobytes()
    # gRPC with typed contents (bytes_contents, fp32_contents), not raw
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{tables_server.grpc}"))
    tensors = [
        pb.ModelInferRequest.InferInputTensor(
            name=n, datatype="BYTES" if v.dtype == object else "FP32", shape=[5, 1],
            contents=pb.InferTensorContents(bytes_contents=[s.encode() for s in v]) if v.dtype == object
            else pb.InferTensorContents(fp32_contents=v.tolist()),
        )
        for n, v in RAW.items()
    ]  # fmt: skip
    answer = stub.ModelInfer(pb.ModelInferRequest(model_name="listings", inputs=tensors))
    assert answer.raw_output_contents[0] == want.astype("<f4").tobytes()


def test_an_all_numeric_model_takes_nan_as_missing(tables, tables_server):
    x = np.array([[1.5, 2.0], [np.nan, -1.0], [np.nan, 0.0], [7.25, 4.5]], np.float32)
    want = _shipped_session_run(tables["repo"], "gaps", {"x": x})
    csv_text = "a,b\n" + "".join(f"{'' if np.isnan(a) else a},{b}\n" for a, b in x)
    np.testing.assert_array_equal(_predict_values(tables, "gaps", csv_text), want.reshape(-1).astype(np.float64))
    for client, mod in ((tables_server.h, tritonhttp), (tables_server.g, tritongrpc)):
        inp = mod.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        assert client.infer("gaps", [inp]).as_numpy("value").tobytes() == want.tobytes()
    status, doc = post(f"{tables_server.url}/v2/models/gaps/infer",
                       json.dumps({"inputs": [{"name": "x", "shape": [4, 2], "datatype": "FP32",
                                               "data": [None if np.isnan(v) else float(v) for v in x.ravel()]}]}).encode())  # fmt: skip
    assert status == 200 and np.array(doc["outputs"][0]["data"], np.float32).tobytes() == want.tobytes()
    got, doc = post(
        f"{tables_server.url}/v2/models/gaps/infer",
        b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[Infinity,1]}]}',
    )
    assert got == 400 and "infinite" in doc["error"]


def _good_grpc_inputs(mod) -> list:
    return _inputs(mod, {k: v[:1] for k, v in RAW.items()})


PER_COLUMN_REST_BAD = [
    ("a missing input", [n for n in LISTINGS if n != "sold on"], {}, "the request has no input 'sold on'"),
    ("FP32 for text", list(LISTINGS), {"kind/type": {"datatype": "FP32", "data": [1.0]}}, "input 'kind/type' must be BYTES, got FP32"),
    ("rows that differ", list(LISTINGS), {"has pool": {"shape": [2, 1], "data": ["true", "false"]}}, "has 2 rows and input 'lot size' has 1"),
    ("a number as text", list(LISTINGS), {"kind/type": {"data": [3]}}, "is not a string"),
    ("the string NaN", list(LISTINGS), {"lot size": {"data": ["NaN"]}}, "a missing value is null"),
    ("an unknown input", [*LISTINGS, "extra"], {}, "has 5 inputs"),
]  # fmt: skip


@pytest.mark.parametrize("case,names,changes,message", PER_COLUMN_REST_BAD, ids=[c[0] for c in PER_COLUMN_REST_BAD])
def test_a_bad_per_column_request_is_a_400_and_the_next_one_is_right(tables_server, case, names, changes, message):
    base = {n: {"name": n, "shape": [1, 1], "datatype": "FP32" if n == "lot size" else "BYTES",
                "data": [1.0] if n == "lot size" else [str(RAW[n][0]) if n in RAW else "x"]} for n in names}  # fmt: skip
    for n, change in changes.items():
        base[n] = {**base[n], **change}
    got, doc = post(
        f"{tables_server.url}/v2/models/listings/infer", json.dumps({"inputs": list(base.values())}).encode()
    )
    assert got == 400 and message in doc.get("error", ""), (got, doc)
    assert tables_server.h.infer("listings", _good_grpc_inputs(tritonhttp)).as_numpy("value").shape == (1, 1)


def test_bytes_that_are_not_utf8_are_refused_over_http_and_grpc(tables_server):
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    for client, mod, code in (
        (tables_server.h, tritonhttp, "400"),
        (tables_server.g, tritongrpc, "StatusCode.INVALID_ARGUMENT"),
    ):
        inputs = _good_grpc_inputs(mod)
        bad = mod.InferInput("kind/type", [1, 1], "BYTES")
        bad.set_data_from_numpy(np.array([[b"fl\xffat"]], dtype=object))  # binary over HTTP, raw over gRPC
        inputs[1] = bad
        with pytest.raises(InferenceServerException, match="not UTF-8 text") as e:
            client.infer("listings", inputs)
        assert str(e.value.status()) == code
        short = mod.InferInput("has pool", [2, 1], "BYTES")  # rows that differ, through the clients
        short.set_data_from_numpy(np.array([["true"], ["false"]], dtype=object))
        with pytest.raises(InferenceServerException, match="every input gives one value per row"):
            client.infer("listings", [*inputs[:2], short, inputs[3]])
        missing = [i for i in _good_grpc_inputs(mod) if i.name() != "lot size"]
        with pytest.raises(InferenceServerException, match="no input 'lot size'"):
            client.infer("listings", missing)
        assert client.infer("listings", _good_grpc_inputs(mod)).as_numpy("value").shape == (1, 1)
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{tables_server.grpc}"))
    tensors = [
        pb.ModelInferRequest.InferInputTensor(
            name=n, datatype="FP32" if n == "lot size" else "BYTES", shape=[1, 1],
            contents=pb.InferTensorContents(fp32_contents=[1.0]) if n == "lot size"
            else pb.InferTensorContents(bytes_contents=[b"\xc3" if n == "sold on" else b"x"]),
        )
        for n in LISTINGS
    ]  # fmt: skip
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(pb.ModelInferRequest(model_name="listings", inputs=tensors))
    assert (
        e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "input 'sold on': string 0 is not UTF-8" in e.value.details()
    )
    text = tables_server.text()
    assert "Traceback" not in text


def test_the_model_cards_client_example_runs_against_serve(tables, tables_server):
    import contextlib
    import io

    card = (tables["root"] / "listings" / "v1" / "MODEL_CARD.md").read_text()
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    assert '"lot size": np.array(' in code and '"kind/type": np.array(' in code
    code = code.replace("localhost:8000", f"127.0.0.1:{tables_server.http}")
    scope: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, scope)  # noqa: S102 - the card's own example, run as a user would
    got = scope["result"].as_numpy("value")
    columns = scope["columns"]
    assert got.tobytes() == _shipped_session_run(tables["repo"], "listings", columns).tobytes()
    assert out.getvalue().strip().startswith("[[")
