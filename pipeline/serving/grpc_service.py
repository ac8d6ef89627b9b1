"""`serve`'s gRPC side: Triton's GRPCInferenceService on grpcio's asyncio server, from tritonclient's
own protobuf definitions (`grpc_server`); each ModelInfer read strictly (`grpc_rows`: the common
request, as tritonclient sends it, by a fast path, `_plain_grpc`; any other by `read_grpc`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import PipelineError, UsageError
from ..spec.encoding import Raw, raw_len
from .batching import QueueFull
from .protocol import (
    BYTES,
    DATATYPE,
    PLATFORM,
    SERVER_NAME,
    BadRequest,
    Execute,
    Health,
    Loaded,
    OverloadLog,
    ServeConfig,
    Slot,
    all_finite,
    batch_from_values,
    check_inputs,
    check_requested_outputs,
    check_version,
    describe_input,
    lookup,
    one_line,
    raw_rows,
    run_direct,
    server_version,
    split_triton_bytes,
    tensor_from_bytes,
    text_values,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


def grpc_server(
    config: ServeConfig,
    slots: dict[str, Slot],
    on_line: Callable[[str], None],
    execute: Execute | None = None,
    health: Health | None = None,
    reuse_port: bool = False,
) -> Any:
    import grpc
    from grpc import aio
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    codes = {
        503: grpc.StatusCode.UNAVAILABLE,
        400: grpc.StatusCode.INVALID_ARGUMENT,
        404: grpc.StatusCode.NOT_FOUND,
        413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    }

    run: Execute = execute or run_direct
    overload = OverloadLog(on_line)
    direct = run is run_direct  # batching off: the request's own call, on the loop (as REST's small ones)
    ready = (health or Health()).ready

    def lookup_model(name: str) -> Loaded:
        return lookup(slots, name)

    def refuse(context: Any, exc: BadRequest, method: str, empty: Any) -> Any:
        """The client's error as the call's status. Set, not raised (`context.abort`): an aborted call's
        exception keeps its request (megabytes of tensor data) alive until a later collection, and a
        server answering many bad requests would grow (measured: +150 MB over 30 requests of 7 MB)."""
        code = codes.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
        (overload if exc.status == 503 else on_line)(f"client error: {code.name} gRPC {method}: {one_line(str(exc))}")
        context.set_code(code)
        context.set_details(str(exc))
        return empty

    def metadata_response(loaded: Loaded) -> Any:
        def tensors(specs: tuple[dict[str, Any], ...]) -> list[Any]:
            return [
                pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                for t in specs
            ]

        return pb.ModelMetadataResponse(
            name=loaded.name, versions=[str(loaded.version)], platform=PLATFORM,
            inputs=tensors(loaded.inputs), outputs=tensors(loaded.outputs),
        )  # fmt: skip

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=ready())

        async def ServerMetadata(self, request: Any, context: Any) -> Any:
            return pb.ServerMetadataResponse(name=SERVER_NAME, version=server_version(), extensions=[])

        async def ModelReady(self, request: Any, context: Any) -> Any:
            slot = slots.get(request.name)
            now = slot.current if slot is not None else None
            ready = now is not None and (not request.version or request.version == str(now.version))
            return pb.ModelReadyResponse(ready=ready)  # an unknown model or another version: not ready

        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            try:
                loaded = lookup_model(request.name)
                check_version(loaded, request.version)
            except BadRequest as exc:
                return refuse(context, exc, "ModelMetadata", pb.ModelMetadataResponse())
            return metadata_response(loaded)

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            try:
                loaded = lookup_model(request.model_name)  # read once: the whole request runs on this version
                check_version(loaded, request.model_version)
                x = grpc_rows(request, loaded, config.max_batch_size)
                if request.outputs:
                    requested = [(o.name, _classification(o.parameters)) for o in request.outputs]
                    check_requested_outputs(requested, loaded)
            except BadRequest as exc:
                return refuse(context, exc, "ModelInfer", pb.ModelInferResponse())
            try:
                y = loaded.run(x) if direct else await run(loaded, x, False)
            except BadRequest as exc:  # a non-finite output (400)
                return refuse(context, exc, "ModelInfer", pb.ModelInferResponse())
            except QueueFull as exc:  # the batch queue is full: UNAVAILABLE, retry
                return refuse(context, BadRequest(str(exc), 503), "ModelInfer", pb.ModelInferResponse())
            except PipelineError as exc:
                on_line(f"error: gRPC ModelInfer: {one_line(str(exc))}")
                context.set_code(grpc.StatusCode.INTERNAL)
                context.set_details(str(exc))
                return pb.ModelInferResponse()
            if config.access_log:
                on_line(f"access: {one_line(context.peer(), 80)} gRPC ModelInfer {loaded.name} rows {raw_len(x)}")
            out = pb.ModelInferResponse.InferOutputTensor(
                name=loaded.arch.output_name, datatype=DATATYPE, shape=list(y.shape)
            )
            return pb.ModelInferResponse(
                model_name=loaded.name, model_version=str(loaded.version), id=request.id,
                outputs=[out], raw_output_contents=[y.astype("<f4", copy=False).tobytes()],
            )  # fmt: skip

    implemented = {"ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelInfer"}
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        if method.name not in implemented:
            setattr(Servicer, method.name, _unsupported(method.name, grpc))

    server = aio.server(
        options=[
            # a port in use is in use; with workers, each binds the port the parent checked and holds
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            ("grpc.max_send_message_length", -1),  # answers are bounded by --max-batch-size, not the request bound
            # refused from the message's length prefix, before the body is read or decoded
            ("grpc.max_receive_message_length", config.max_request_bytes),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    address = grpc_address(config.host, config.grpc_port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise UsageError(f"gRPC port {config.grpc_port} on {config.host} is in use")
    return server


def grpc_rows(request: Any, loaded: Loaded, max_batch_size: int) -> Raw:
    """A gRPC ModelInferRequest's rows, checked strictly: the common request by `_plain_grpc`, any
    other by `read_grpc`."""
    plain = _plain_grpc(request, loaded, max_batch_size)
    return plain if plain is not None else read_grpc(request, loaded, max_batch_size)


def read_grpc(request: Any, loaded: Loaded, max_batch_size: int) -> Raw:
    """Any ModelInferRequest's rows, from every input's typed contents (fp32_contents,
    bytes_contents) or from raw_input_contents (one per input, in the inputs' order: every input, or
    none), every field checked."""
    import numpy as np

    if not request.inputs:
        raise BadRequest(f"{loaded.name} takes {describe_input(loaded)}; the request has no inputs")
    given = [(t.name, t.datatype, list(t.shape)) for t in request.inputs]
    checked = check_inputs(loaded, given, max_batch_size)
    raw = request.raw_input_contents
    tensors: dict[str, np.ndarray] = {}
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"the request has {len(raw)} raw contents for {len(request.inputs)} inputs")
    for i, (tensor, (spec, rows)) in enumerate(zip(request.inputs, checked)):
        filled = [f.name for f, _ in tensor.contents.ListFields()]
        if raw:
            if filled:
                raise BadRequest(f"input {spec.name!r} gives both contents and raw_input_contents; send one")
            tensors[spec.name] = tensor_from_bytes(spec, raw[i], rows)
            continue
        field = "fp32_contents" if spec.datatype == DATATYPE else "bytes_contents"
        if filled != [field]:
            shown = ", ".join(filled) or "none"
            raise BadRequest(f"input {spec.name!r}: its contents must be {field} ({spec.datatype}), got {shown}")
        if spec.datatype == BYTES:
            tensors[spec.name] = text_values(list(tensor.contents.bytes_contents), rows, spec.name)
        else:
            values = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
            tensors[spec.name] = batch_from_values(values, rows, spec.width, spec.name, spec.missing)
    return raw_rows(loaded, tensors)


def _plain_grpc(request: Any, loaded: Loaded, max_batch_size: int) -> Raw | None:
    """The common gRPC request's rows, read without the general checks: every input of the model once,
    by its exact name, datatype and shape ([rows, width] for `x`, [rows, 1] per column) within
    --max-batch-size, no typed contents, one raw_input_contents each (tritonclient's way: FP32 values
    little-endian, every one finite; BYTES in Triton's encoding, UTF-8). None for anything else,
    which `read_grpc` then reads in full (a test holds the two to the same rows)."""

    inputs, raw = request.inputs, request.raw_input_contents
    if len(raw) != len(inputs) or not inputs:
        return None
    plain, columns = loaded.plain_input, loaded.plain_columns
    if plain is not None:
        if len(inputs) != 1:
            return None
        x = _plain_raw(inputs[0], raw[0], plain[0], DATATYPE, plain[1], max_batch_size, None)
        return x if x is None else x.reshape(-1, plain[1])
    if columns is None or len(inputs) != len(columns):
        return None
    got: dict[str, np.ndarray] = {}
    rows = None
    for t, data in zip(inputs, raw):
        name = t.name
        if name in got or name not in columns:
            return None
        x = _plain_raw(t, data, name, BYTES if columns[name] else DATATYPE, 1, max_batch_size, rows)
        if x is None:
            return None
        got[name], rows = x, len(x)
    return {name: got[name] for name in columns}  # the model's order, as `raw_rows` gives it


def _plain_raw(
    t: Any, data: bytes, name: str, datatype: str, width: int, max_batch_size: int, rows: int | None
) -> np.ndarray | None:
    """One plain gRPC input's values, flat (FP32 float32, every one finite; BYTES str), or None."""
    import numpy as np

    shape = t.shape
    if t.name != name or t.datatype != datatype or len(shape) != 2 or shape[1] != width:
        return None
    n = shape[0]
    if not 0 < n <= max_batch_size or (rows is not None and n != rows) or t.HasField("contents"):
        return None
    if datatype == BYTES:
        texts = _plain_strings(data, n)
        return None if texts is None else np.array(texts, dtype=object)
    if len(data) != 4 * n * width:
        return None
    x = np.frombuffer(data, dtype="<f4")
    return x if all_finite(x) else None


def _plain_strings(raw: bytes, rows: int) -> list[str] | None:
    """Exactly `rows` UTF-8 strings in Triton's BYTES encoding, or None (`read_grpc` then says what is
    wrong): the same parse as the full reading's (`split_triton_bytes`)."""
    try:
        return [b.decode("utf-8") for b in split_triton_bytes(memoryview(raw), rows, "")]
    except (BadRequest, UnicodeDecodeError):
        return None


def _classification(parameters: Any) -> int:
    """The class count a gRPC requested output asks Triton's classification extension for (any
    parameter type: a string "2" asks too); 0 when it asks for none."""
    if "classification" not in parameters:
        return 0
    p = parameters["classification"]
    which = p.WhichOneof("parameter_choice")
    value = getattr(p, which) if which else 0
    return 1 if value not in (0, "", "0", False) else 0


def _unsupported(method: str, grpc: Any) -> Callable:
    what = "(the model repository extension)" if method.startswith("Repository") else "(a Triton extension)"
    if method == "ModelStreamInfer":
        what = "(streaming inference)"

    async def handler(self: Any, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} {what} is not supported by xorship serve")

    return handler


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
