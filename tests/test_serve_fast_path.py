"""`serve`'s fast paths decide speed, never an answer: the common REST request (`_plain_request`), the
common gRPC request (`_plain_grpc`), the inference path (`_infer_target`) and the one-message body are
each held to the full reading (`read_rest`, `read_grpc`, `RestApp._route`'s own parse) over thousands of
generated requests, near misses included, without a server. Every request a fast path takes, the full
reading takes with the same rows, bit for bit; and the common request does take it (so the comparison
is never empty)."""

from __future__ import annotations

import asyncio
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc]")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402

from pipeline.serving import grpc_service as G  # noqa: E402
from pipeline.serving import protocol as P  # noqa: E402
from pipeline.serving import rest as R  # noqa: E402
from pipeline.spec.archs import Arch  # noqa: E402
from pipeline.spec.encoding import FLOAT, NUMBER, ColumnCode, Encoding  # noqa: E402
from tests.test_ship_recipes import HOUSES, IRIS, SALES, published_model  # noqa: E402

MAX_BATCH = 8
# A model whose one `x` input takes NaN as missing (numbers only, imputed in the graph).
GAPS_ENCODING = Encoding((ColumnCode("rooms", NUMBER, FLOAT, (3.0,), True), ColumnCode("age", NUMBER, FLOAT, (20.0,))))
GAPS = Arch(
    name="houses",  # the test helpers' manifest for this name; served under its own name
    widths=(GAPS_ENCODING.width, 4, 1),
    activation="tanh",
    task="regression",
    features=GAPS_ENCODING.features,
    classes=(),
    scale_input=True,
    scale_output=True,
    serving="gap_houses",
    encoding=GAPS_ENCODING,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, P.Loaded]:
    out = {}
    for arch in (IRIS, HOUSES, SALES, GAPS):
        root = tmp_path_factory.mktemp(arch.serving_name)
        published_model(root, arch)
        out[arch.serving_name] = P.load(root, arch.name, None, "cpu")
    return out


ODD_VALUES = [True, False, None, "1", "nan", float("nan"), float("inf"), -float("inf"), 1e39, -1e39, 10**400, 2**63,
              3.4028234663852886e38, -3.4028234663852886e38, 3.5e38, 1e-50, -0.0, [], {}, [1.0]]  # fmt: skip


def _value(rng: random.Random) -> object:
    if rng.random() < 0.8:
        return rng.choice([rng.uniform(-10, 10), rng.randint(-5, 5), 0, 0.0])
    return rng.choice(ODD_VALUES)


def _doc(rng: random.Random, name: str, width: int) -> dict:
    """A v2 REST request near the common one: each part right most of the time, else one of the
    ways it can be wrong or merely unusual."""
    rows = rng.choice([1, 1, 2, 3, MAX_BATCH]) if rng.random() < 0.9 else rng.choice([0, -1, MAX_BATCH + 1])
    values = [[_value(rng) if rng.random() < 0.1 else rng.uniform(-3, 3) for _ in range(width)] for _ in range(rows)]
    layout = rng.random()
    if layout < 0.45:
        data: object = values
    elif layout < 0.9:
        data = [v for r in values for v in r]
    else:
        data = rng.choice([values[:-1], [values], [v for r in values for v in r][:-1], "1,2", None, {}, [[]]])
    shape: object = [rows, width]
    if rng.random() < 0.1:
        shape = rng.choice([[rows, width + 1], [rows], [rows, width, 1], [True, width], [float(rows), width],
                            [rows, float(width)], "1,2", None, (rows, width)])  # fmt: skip
    tensor: dict = {"name": name, "shape": shape, "datatype": "FP32", "data": data}
    if rng.random() < 0.1:
        tensor["name"] = rng.choice([name.upper(), "y", None, 1, ""])
    if rng.random() < 0.1:
        tensor["datatype"] = rng.choice(["fp32", "FP64", "BYTES", None, 32])
    if rng.random() < 0.1:
        tensor[rng.choice(["parameters", "extra"])] = rng.choice([{}, {"binary_data_size": 8}, None, 1])
    if rng.random() < 0.05:
        del tensor[rng.choice(["name", "shape", "datatype", "data"])]
    doc: dict = {"inputs": [tensor]}
    if rng.random() < 0.2:
        doc["id"] = rng.choice(["req-1", "", "\u00e9", 5, None, ["a"]])
    if rng.random() < 0.1:
        doc[rng.choice(["parameters", "outputs", "extra"])] = rng.choice(
            [{}, {"binary_data_output": True}, [], [{"name": "probabilities"}], None]
        )
    if rng.random() < 0.05:
        doc["inputs"] = rng.choice([[tensor, tensor], [], tensor, None])
    return doc


TEXT = ["flat", "house", "villa", "", "caf\u00e9", "\u5317\u4eac", "2021-06-15", "true", "false", " 3 ", "x" * 300]


def _columns_doc(rng: random.Random, loaded: P.Loaded) -> dict:
    """A v2 REST request near the common one for a model that takes one input per column: every
    column once, [rows, 1], text for BYTES and numbers for FP32, most of the time; else one of the
    ways it can be wrong or merely unusual."""
    rows = rng.choice([1, 1, 2, 5, MAX_BATCH]) if rng.random() < 0.9 else rng.choice([0, MAX_BATCH + 1])
    inputs = []
    for t in loaded.tensors:
        text = t.datatype == P.BYTES
        if rng.random() < 0.9:
            data: object = [rng.choice(TEXT) if text else rng.uniform(-500, 500) for _ in range(rows)]
        else:
            data = [
                rng.choice(["\ud800", None, 1, 2.5, True, [], "flat"]) if text else _value(rng) for _ in range(rows)
            ]
        if rng.random() < 0.05:
            data = rng.choice([[[v] for v in data], data[:-1], data + data, "flat", None])  # type: ignore[operator]
        shape: object = [rows, 1] if rng.random() < 0.95 else rng.choice([[rows, 2], [rows], [rows + 1, 1], [True, 1]])
        datatype = t.datatype if rng.random() < 0.95 else rng.choice(["FP32", "BYTES", "bytes", "STRING"])
        inputs.append({"name": t.name, "shape": shape, "datatype": datatype, "data": data})
    if rng.random() < 0.3:
        rng.shuffle(inputs)  # any order
    if rng.random() < 0.05:
        inputs.pop(rng.randrange(len(inputs)))
    if rng.random() < 0.05:
        inputs.append(dict(rng.choice(inputs)))
    if rng.random() < 0.05:
        inputs[0]["parameters"] = {}
    if rng.random() < 0.03:
        inputs[-1]["name"] = "x"
    doc: dict = {"inputs": inputs}
    if rng.random() < 0.2:
        doc["id"] = rng.choice(["req-1", 5, None])
    if rng.random() < 0.05:
        doc["parameters"] = {"binary_data_output": True}
    return doc


def _rest_doc(rng: random.Random, loaded: P.Loaded) -> dict:
    if loaded.arch.per_column:
        return _columns_doc(rng, loaded)
    return _doc(rng, loaded.tensors[0].name, loaded.tensors[0].width)


def _full(read, *args):
    try:
        return read(*args)
    except P.BadRequest as exc:
        return exc


def _same_rows(fast: object, full: object) -> None:
    """The same raw rows: one matrix, or column -> values (text compared as the same str values)."""
    if isinstance(fast, dict):
        assert isinstance(full, dict) and list(fast) == list(full), (fast, full)
        for name in fast:
            _same_rows(fast[name], full[name])
        return
    assert isinstance(fast, np.ndarray) and isinstance(full, np.ndarray), (fast, full)
    assert (fast.dtype, fast.shape) == (full.dtype, full.shape)
    if fast.dtype == object:
        assert [(type(v), v) for v in fast.tolist()] == [(type(v), v) for v in full.tolist()]
    else:
        assert fast.tobytes() == full.tobytes()


def _held_to_the_full_reading(models, seed: int, make, fast_read, full_read, parts, n: int = 3000) -> dict[str, int]:
    """`n` requests from `make` over the models: every one `fast_read` takes, `full_read` takes, with
    the same rows bit for bit and the same other `parts`. How many each model's fast path took."""
    rng = random.Random(seed)
    taken = {name: 0 for name in models}
    for _ in range(n):
        name = rng.choice(list(models))
        loaded = models[name]
        request = make(rng, loaded)
        fast = fast_read(request, loaded, MAX_BATCH)
        if fast is None:
            continue
        taken[name] += 1
        full = _full(full_read, request, loaded, MAX_BATCH)
        assert not isinstance(full, Exception), (request, full)
        (x, *rest), (y, *other) = parts(fast), parts(full)
        _same_rows(x, y)
        assert rest == other
        if taken[name] % 10 == 1:  # and the model answers both alike, bit for bit (or refuses both alike)
            a, b = _full(loaded.run, x), _full(loaded.run, y)
            assert (str(a) if isinstance(a, Exception) else a.tobytes()) == (
                str(b) if isinstance(b, Exception) else b.tobytes()
            )
    return taken


def test_the_plain_rest_request_is_read_as_the_full_reading_reads_it(models):
    def full(doc, loaded, max_batch):
        return R.read_rest(doc, memoryview(b""), False, loaded, max_batch)

    def parts(r):
        return r.x, r.request_id, r.binary_output

    taken = _held_to_the_full_reading(models, 11, _rest_doc, R._plain_request, full, parts)
    # the common request takes the fast path on every model: one FP32 input, or one input per column
    assert min(taken.values()) > 100, taken


def test_the_common_request_takes_the_fast_path_and_its_near_misses_do_not(models):
    iris = models["iris"]
    base = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [[1, 2, 3, 4], [5.5, 6, 7, 8]]}]}
    assert R._plain_request(base, iris, MAX_BATCH) is not None
    flat = json.loads(json.dumps(base))
    flat["inputs"][0]["data"] = [1, 2, 3, 4, 5.5, 6, 7, 8]
    flat["id"] = "a"
    got = R._plain_request(flat, iris, MAX_BATCH)
    assert got is not None and got.request_id == "a"
    assert got.x.tobytes() == np.array([[1, 2, 3, 4], [5.5, 6, 7, 8]], dtype=np.float32).tobytes()
    for change in (
        lambda d: d["inputs"][0]["data"][0].__setitem__(0, True),  # true is not a number
        lambda d: d["inputs"][0]["data"][0].__setitem__(0, None),  # null: missing, read in full
        lambda d: d["inputs"][0]["data"][0].__setitem__(0, float("nan")),
        lambda d: d["inputs"][0]["data"][0].__setitem__(0, 1e39),  # beyond float32
        lambda d: d["inputs"][0].__setitem__("datatype", "fp32"),
        lambda d: d.__setitem__("outputs", [{"name": "probabilities"}]),
        lambda d: d.__setitem__("id", 7),
        lambda d: d["inputs"][0].__setitem__("shape", [2, 4, 1]),
    ):
        doc = json.loads(json.dumps(base))
        change(doc)
        assert R._plain_request(doc, iris, MAX_BATCH) is None, doc
    assert R._plain_request(base, iris, 1) is None  # over --max-batch-size: the full reading's 400


def test_a_plain_request_for_a_model_that_takes_one_input_per_column_takes_the_fast_path(models):
    sales = models["sales"]
    assert sales.plain_input is None and list(sales.plain_columns) == [t.name for t in sales.tensors]
    row = {"lot size": 310.5, "kind/type": "villa", "has pool": "true", "sold on": "2022-02-01", "rooms": 2}
    base = {"inputs": [{"name": t.name, "shape": [1, 1], "datatype": t.datatype, "data": [row[t.name]]}
                       for t in reversed(sales.tensors)]}  # fmt: skip
    got = R._plain_request(base, sales, MAX_BATCH)
    assert got is not None and list(got.x) == [t.name for t in sales.tensors]  # the model's order
    assert got.x["kind/type"].tolist() == ["villa"] and got.x["lot size"].dtype == np.float32
    for change in (
        lambda d: d["inputs"][0].__setitem__("data", [None]),  # null: missing, read in full
        lambda d: d["inputs"][1].__setitem__("data", ["\ud800"]),  # a lone surrogate: the full reading's 400
        lambda d: d["inputs"][1].__setitem__("data", [3]),
        lambda d: d["inputs"].pop(),
        lambda d: d["inputs"].append(d["inputs"][0]),
        lambda d: d["inputs"][2].__setitem__("shape", [2, 1]),
    ):
        doc = json.loads(json.dumps(base))
        change(doc)
        assert R._plain_request(doc, sales, MAX_BATCH) is None, doc


def _triton_bytes(texts: list[bytes]) -> bytes:
    return b"".join(len(b).to_bytes(4, "little") + b for b in texts)


def _grpc_columns_request(rng: random.Random, loaded: P.Loaded) -> pb.ModelInferRequest:
    """A ModelInferRequest near tritonclient's for a model that takes one input per column: each
    column once, [rows, 1], raw_input_contents (little-endian FP32; Triton's BYTES encoding), most of
    the time; else one of the ways it can be wrong or merely unusual."""
    rows = rng.choice([1, 2, 5, MAX_BATCH]) if rng.random() < 0.9 else rng.choice([0, MAX_BATCH + 1])
    request = pb.ModelInferRequest(model_name="m")
    raws = []
    for t in loaded.tensors:
        shape = [rows, 1] if rng.random() < 0.95 else rng.choice([[rows, 2], [rows], [rows + 1, 1], [-1, 1]])
        datatype = t.datatype if rng.random() < 0.95 else rng.choice(["FP32", "BYTES", "bytes", ""])
        tensor = pb.ModelInferRequest.InferInputTensor(name=t.name, datatype=datatype, shape=shape)
        if t.datatype == P.BYTES:
            texts = [rng.choice(TEXT).encode() for _ in range(rows)]
            if rng.random() < 0.1 and rows:
                texts[rng.randrange(rows)] = rng.choice([b"\xff\xfe", b"\xed\xa0\x80", b"caf\xc3"])  # not UTF-8
            raw = _triton_bytes(texts)
            if rng.random() < 0.1:
                raw = rng.choice([raw[:-1], raw + b"\0", raw[:2], raw + b"\1\0\0\0", _triton_bytes(texts[:-1])])
        else:
            values = np.array([rng.uniform(-500, 500) for _ in range(rows)], dtype=np.float32)
            if rng.random() < 0.1 and rows:
                values[rng.randrange(rows)] = rng.choice([np.nan, np.inf, -np.inf])
            raw = values.astype("<f4").tobytes()
            if rng.random() < 0.05:
                raw = raw[:-1]
        if rng.random() < 0.05:  # typed contents instead, or as well
            if t.datatype == P.BYTES:
                tensor.contents.bytes_contents.extend([b"flat"] * rows)
            else:
                tensor.contents.fp32_contents.extend([1.0] * rows)
            if rng.random() < 0.5:
                raw = b""
        request.inputs.append(tensor)
        raws.append(raw)
    order = list(range(len(raws)))
    if rng.random() < 0.3:
        rng.shuffle(order)  # any order
    if rng.random() < 0.05:
        order.pop()
    if rng.random() < 0.05:
        order.append(order[0])
    inputs = [request.inputs[i] for i in order]
    del request.inputs[:]
    request.inputs.extend(inputs)
    if all(raws[i] for i in order) or rng.random() < 0.5:
        request.raw_input_contents.extend(raws[i] for i in order)
    if rng.random() < 0.05:
        request.raw_input_contents.append(b"")
    return request


def _grpc_request(rng: random.Random, loaded: P.Loaded) -> pb.ModelInferRequest:
    if loaded.arch.per_column:
        return _grpc_columns_request(rng, loaded)
    name, width = loaded.tensors[0].name, loaded.tensors[0].width
    rows = rng.choice([1, 2, MAX_BATCH]) if rng.random() < 0.9 else rng.choice([0, MAX_BATCH + 1])
    x = rng.choice([np.float32(rng.uniform(-3, 3)), np.nan, np.inf, -np.inf]) if rng.random() < 0.1 else None
    values = np.array([[rng.uniform(-3, 3) for _ in range(width)] for _ in range(rows)], dtype=np.float32)
    if x is not None and rows:
        values[rng.randrange(rows), rng.randrange(width)] = x
    shape = (
        [rows, width] if rng.random() < 0.85 else rng.choice([[rows, width + 1], [rows], [rows, width, 1], [-1, width]])
    )
    t = pb.ModelInferRequest.InferInputTensor(
        name=name if rng.random() < 0.9 else rng.choice(["y", name.upper(), ""]),
        datatype="FP32" if rng.random() < 0.9 else rng.choice(["fp32", "FP64", "BYTES", ""]),
        shape=shape,
    )
    request = pb.ModelInferRequest(model_name="m", inputs=[t])
    raw = values.astype("<f4").tobytes()
    form = rng.random()
    if form < 0.75:
        request.raw_input_contents.append(raw)
    elif form < 0.85:
        request.inputs[0].contents.fp32_contents.extend(values.reshape(-1).tolist())
    elif form < 0.9:
        request.raw_input_contents.append(raw[: rng.randrange(len(raw) + 1)] + rng.choice([b"", b"\0" * 4]))
    elif form < 0.95:
        request.raw_input_contents.append(raw)
        request.inputs[0].contents.fp32_contents.append(1.0)
    else:
        request.raw_input_contents.extend([raw, raw])
    if rng.random() < 0.05:
        request.inputs.append(t)
    if rng.random() < 0.05:
        request.outputs.add(name="probabilities")
    return request


def test_the_plain_grpc_request_is_read_as_the_full_reading_reads_it(models):
    taken = _held_to_the_full_reading(models, 5, _grpc_request, G._plain_grpc, G.read_grpc, lambda x: (x,))
    assert min(taken.values()) > 100, taken


PATHS = [
    "/v2/models/iris/infer", "/v2/models/iris/versions/1/infer", "/v2/models/iris/versions/2/infer",
    "/v2/models/nope/infer", "/v2/models/stats/infer", "/v2/models/statsx/infer", "/v2/models/config/infer",
    "/v2/models/versions/infer", "/v2/models/infer", "/v2/models//infer", "/v2/models/iris//infer",
    "/v2//models/iris/infer", "/v2/models//iris/infer", "/v2/models/iris/versions//infer",
    "/v2/models/iris/versions/1/2/infer", "/v2/models/iris/versions/infer", "/v2/models/iris/ready/infer",
    "/v2/models/iris/config/infer", "/v2/models/iris/stats/infer", "/v2/models/iris/infer/infer",
    "/v2/models/iris/versions/1//infer", "/v2/models/iris", "/v2/models/iris/ready", "/v2/models/iris/versions/1",
    "/v2/repository/models/iris/infer", "/v2/models/stats/versions/1/infer", "/v1/models/iris/infer",
    "/v2/models/stats?/infer", "/v2/models/stats?x/infer", "/v2/models/stats?/versions/1/infer",
    "/v2/models/iris?/infer", "/v2/models/iris/versions/1?/infer",
]  # fmt: skip


def _call(app: R.RestApp, method: str, path: str, body: bytes, chunks: int = 1, headers: tuple = ()) -> tuple:
    parts = [body[i * len(body) // chunks : (i + 1) * len(body) // chunks] for i in range(chunks)]
    messages = [{"type": "http.request", "body": p, "more_body": i < chunks - 1} for i, p in enumerate(parts)]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [(b"content-length", b"%d" % len(body)),
                                                                          *headers]}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


def _app(loaded: P.Loaded, budget: int | None = None, max_request_mb: int = 1) -> R.RestApp:
    config = P.ServeConfig(Path("."), names=(loaded.name,), max_request_mb=max_request_mb)
    return R.RestApp(config, {loaded.name: P.Slot(loaded)}, lambda line: None, budget=budget)


def test_the_inference_path_is_routed_as_the_full_route_routes_it(models, monkeypatch):
    app = _app(models["iris"])
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode()
    fast = {(m, p): _call(app, m, p, body) for m in ("POST", "GET") for p in PATHS}
    assert R._infer_target("/v2/models/iris/infer") == ("iris", None)
    assert R._infer_target("/v2/models/iris/versions/1/infer") == ("iris", "1")
    assert sum(R._infer_target(p) is not None for p in PATHS) == 9
    monkeypatch.setattr(R, "_infer_target", lambda path: None)
    full = {(m, p): _call(app, m, p, body) for m in ("POST", "GET") for p in PATHS}
    assert fast == full
    assert fast[("POST", "/v2/models/iris/infer")][0] == 200
    assert app.inflight == 0


def test_one_message_bodies_keep_every_bound(models):
    iris = models["iris"]
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode()
    app = _app(iris)
    want = _call(app, "POST", "/v2/models/iris/infer", body)
    assert want[0] == 200
    assert _call(app, "POST", "/v2/models/iris/infer", body, chunks=3) == want  # streamed: the same answer
    tight = _app(iris, budget=len(body) - 1)  # one body at a time is over the budget: 503, never held
    status, answer = _call(tight, "POST", "/v2/models/iris/infer", body)
    assert status == 503 and b"budget" in answer and tight.inflight == 0
    import gzip

    status, answer = _call(app, "POST", "/v2/models/iris/infer", gzip.compress(body),
                           headers=((b"content-encoding", b"gzip"),))  # fmt: skip
    assert (status, answer) == want
    big = b" " * (1024 * 1024) + body  # over --max-request-mb 1 in one message, Content-Length given
    assert _call(app, "POST", "/v2/models/iris/infer", big)[0] == 413
    for _ in range(20):  # bad and good requests alike give their bytes back
        _call(app, "POST", "/v2/models/iris/infer", b"{" + body)
        _call(app, "POST", "/v2/models/iris/infer", body)
    assert app.inflight == 0


def test_outputs_are_checked_on_the_fast_path_too(models):
    gaps = models["gap_houses"]
    x = np.array([[1.0, 2.0]], dtype=np.float32)
    y = gaps.run(x)
    assert y.dtype == np.float32 and P.all_finite(y)
    assert not P.all_finite(np.array([1.0, math.nan], dtype=np.float32))
    assert not P.all_finite(np.full(P.SMALL_FINITE + 1, np.inf, dtype=np.float32))
    assert P.all_finite(np.zeros((P.SMALL_FINITE + 1, 2), dtype=np.float32))


def test_503s_are_logged_at_most_once_a_second_with_a_count_of_the_rest(models):
    now = [100.0]
    lines: list[str] = []
    log = P.OverloadLog(lines.append, 1.0, clock=lambda: now[0])
    for i in range(5):
        log(f"client error: 503 {i}")
    now[0] += 0.5
    log("client error: 503 later")
    now[0] += 0.6
    log("client error: 503 next")
    assert lines == ["client error: 503 0", "client error: 503 next (and 5 more 503s like it since the last one shown, "
                     "not logged)"]  # fmt: skip

    async def burst() -> list[str]:  # on the event loop, the last line left out is written once the second is over
        shown: list[str] = []
        log = P.OverloadLog(shown.append, 0.05)
        for i in range(5):
            log(f"503 {i}")
        await asyncio.sleep(0.2)
        log("503 after")  # a second later: written at once
        return shown

    assert asyncio.run(burst()) == ["503 0", "503 4 (and 3 more 503s like it since the last one shown, not logged)",
                                    "503 after"]  # fmt: skip
    # a server over its request-body budget: every request refused, one line; a 400 is always its line
    iris = models["iris"]
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode()
    shown: list[str] = []
    config = P.ServeConfig(Path("."), names=(iris.name,), max_request_mb=1)
    app = R.RestApp(config, {iris.name: P.Slot(iris)}, shown.append, budget=len(body) - 1)
    assert {_call(app, "POST", "/v2/models/iris/infer", body)[0] for _ in range(50)} == {503}
    for _ in range(3):
        assert _call(app, "POST", "/v2/models/iris/infer", b"{")[0] == 400
    assert len(shown) == 4 and shown[0].startswith("client error: 503") and "budget" in shown[0]
