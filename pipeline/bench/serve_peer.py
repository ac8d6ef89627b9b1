"""The minimal endpoints `bench --serve` races `serve` against (bench and test only: never a runtime
dependency of `serve`).

- REST: Starlette + orjson + onnxruntime, one route, the v2 JSON inference request, no checks beyond
  what numpy does: what a Python server on this machine can do with the least code;
- gRPC: a `grpcio` asyncio servicer on tritonclient's protobuf definitions, ModelInfer only
  (raw_input_contents or fp32_contents), same session.

A model with one input per column (text, dates: FP32 and BYTES inputs of shape [rows, 1]) gets the
same few lines once per input: JSON data (strings for BYTES), or gRPC's raw_input_contents
(little-endian FP32; BYTES in Triton's encoding, a 4-byte length then the UTF-8 bytes per string).

Run as `python -m pipeline.bench.serve_peer MODEL.onnx NAME HTTP_PORT GRPC_PORT`; it prints `ready` when
both listen and stops on SIGTERM.
"""

from __future__ import annotations

import sys
from typing import Any


def main(argv: list[str]) -> None:
    import asyncio
    import signal

    import numpy as np
    import onnxruntime as ort
    import orjson
    import uvicorn
    from grpc import aio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    model, name, http_port, grpc_port = argv[0], argv[1], int(argv[2]), int(argv[3])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    in_name, out_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    columns = len(sess.get_inputs()) > 1

    def json_feeds(inputs: list[dict]) -> dict[str, Any]:
        return {t["name"]: np.array(t["data"], dtype=object if t["datatype"] == "BYTES" else np.float32)
                .reshape(t["shape"]) for t in inputs}  # fmt: skip

    async def infer(request: Request) -> Response:
        doc = orjson.loads(await request.body())
        if columns:
            y = sess.run([out_name], json_feeds(doc["inputs"]))[0]
        else:
            t = doc["inputs"][0]
            x = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
            y = sess.run([out_name], {in_name: x})[0]
        out = {"model_name": name, "model_version": "1",
               "outputs": [{"name": out_name, "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}]}  # fmt: skip
        return Response(orjson.dumps(out), media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b'{"ready":true}', media_type="application/json")

    app = Starlette(routes=[Route("/v2/models/{m}/infer", infer, methods=["POST"]), Route("/v2/health/ready", ready)])

    def strings(raw: bytes) -> list[str]:  # Triton's BYTES encoding
        out, at = [], 0
        while at < len(raw):
            n = int.from_bytes(raw[at : at + 4], "little")
            out.append(raw[at + 4 : at + 4 + n].decode())
            at += 4 + n
        return out

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request: Any, context: Any) -> Any:
            t = request.inputs[0]
            if columns:
                feeds = {t.name: (np.array(strings(raw), dtype=object) if t.datatype == "BYTES" else
                                  np.frombuffer(raw, dtype="<f4")).reshape(list(t.shape))
                         for t, raw in zip(request.inputs, request.raw_input_contents)}  # fmt: skip
                y = sess.run([out_name], feeds)[0]
            elif request.raw_input_contents:
                x = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(list(t.shape))
                y = sess.run([out_name], {in_name: x})[0]
            else:
                x = np.asarray(t.contents.fp32_contents, dtype=np.float32).reshape(list(t.shape))
                y = sess.run([out_name], {in_name: x})[0]
            o = pb.ModelInferResponse.InferOutputTensor(name=out_name, datatype="FP32", shape=list(y.shape))
            return pb.ModelInferResponse(
                model_name=name, model_version="1", outputs=[o], raw_output_contents=[y.tobytes()]
            )

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=True)

    async def run() -> None:
        server = aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
        server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        await server.start()
        http = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning",
                                             access_log=False, lifespan="off"))  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(http._serve())
        while not http.started and not task.done():
            await asyncio.sleep(0.01)
        print("ready", flush=True)
        await stop.wait()
        http.should_exit = True
        await asyncio.gather(server.stop(1), task, return_exceptions=True)

    import uvloop

    uvloop.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])
