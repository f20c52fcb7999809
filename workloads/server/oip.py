"""The Open Inference Protocol (KServe V2, also Triton's HTTP API) beside `/v1/predict`.

Endpoints (spec: kserve/open-inference-protocol, specification/protocol/inference_rest.md;
KServe docs "Open Inference Protocol (V2 Inference Protocol)")
    GET  /v2/health/live             200 {"live": true} while the process runs
    GET  /v2/health/ready            200 {"ready": true} exactly when /readyz is 200 (so 503 while draining)
    GET  /v2                         server metadata: name, version, extensions
    GET  /v2/models/{name}           model metadata: tensors read from the ONNX file by ONNX Runtime
    GET  /v2/models/{name}/ready     200 {"name", "ready": true}, else 503 with "ready": false
    POST /v2/models/{name}/infer     typed tensors in, typed tensors out

One model, under the name MODEL_NAME (default: the model file's stem); any other name
gets 404. No model versions: `/versions/...` paths get 404, and responses carry no
`model_version` (the spec: servers without versioning should not send it).

Tensors come as JSON (`data`, nested or flat, row-major) or, with the binary tensor
data extension that tritonclient uses by default (Triton's docs/protocol/
extension_binary_data.md), as little-endian bytes after the JSON header, whose length
the `Inference-Header-Content-Length` header gives. Outputs are binary when the
request asks for it (`binary_data` on an output, else `binary_data_output` on the
request), JSON otherwise.

Inference goes through the same admission, batcher and metrics as `/v1/predict`: a
request is counted once in inference_requests_total by its status, timed when
answered, in flight (so a drain waits for it) from admission to answer. Errors are
the protocol's `{"error": message}`, with the same statuses as `/v1/predict`: 400
bad tensors, 404 unknown model, 408 body too slow (BODY_TIMEOUT_S), 413 body over
MAX_BODY_BYTES, 415 compressed body, 422 outputs not finite, 429 queue full, 503
loading or draining, 500 model failure. (tritonclient compresses requests only when
asked to, with `request_compression_algorithm`: leave it unset.)
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

from workloads.server.app import RETRY_AFTER_S, BadRequestError, dumps, error, run_batch

if TYPE_CHECKING:
    from workloads.model import Model
    from workloads.server.app import InferenceServer
    from workloads.server.batcher import MicroBatcher

log = logging.getLogger(__name__)

SERVER_NAME = "gpu-inference"
# Triton's platform name for ONNX Runtime models (what tritonclient users expect); the
# spec's own list says "onnx_onnxv1". The spec calls the platform information only.
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ("binary_tensor_data",)
HEADER_LENGTH = "Inference-Header-Content-Length"

# ONNX Runtime's element type names -> the protocol's datatypes, and their wire format
# (little-endian, native size: the binary extension's layout). BYTES and BF16 have no
# NumPy dtype here: such tensors are described but refused as inputs.
DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}
WIRE_DTYPES = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for a dimension of any size (the batch)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def tensor_spec(node: Any) -> TensorSpec:
    """An `onnxruntime.NodeArg` (name, type, shape; symbolic dimensions are names or None) as a TensorSpec."""
    datatype = DATATYPES.get(node.type, node.type)
    return TensorSpec(node.name, datatype, tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape))


@dataclass(frozen=True)
class InferRequest:
    inputs: np.ndarray  # the model's single input, in its datatype and shape
    outputs: dict[str, bool]  # output name -> binary, in response order
    id: str | None


# -- request parsing ---------------------------------------------------------------------


def parse_infer_request(
    body: bytes, header_length: str | None, inputs: list[TensorSpec], outputs: list[TensorSpec]
) -> InferRequest:
    """Validate an infer body against the model's tensors; BadRequestError says what is wrong."""
    header, binary = _split_body(body, header_length)
    try:
        payload = json.loads(header)
    except RecursionError:  # `[[[[...` deeper than the interpreter's recursion limit
        raise BadRequestError("the inference request is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # bad JSON or UTF-8, or an integer past sys.get_int_max_str_digits()
        raise BadRequestError(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequestError("the inference request must be a JSON object")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequestError(f'"id" must be a string (got {json.dumps(request_id)})')
    parameters = _parameters(payload, "the request")
    given = payload.get("inputs")
    if not isinstance(given, list) or not all(isinstance(t, dict) for t in given):
        raise BadRequestError('"inputs" must be a list of tensors {"name", "shape", "datatype", "data"}')
    # The model (workloads.model.Model) has exactly one input.
    (spec,) = inputs
    names = [t.get("name") for t in given]
    if names != [spec.name]:
        raise BadRequestError(f"expected exactly one input named {spec.name!r} (got {names})")
    array, used = _tensor(given[0], spec, binary)
    if used != len(binary):
        raise BadRequestError(f"{len(binary) - used} bytes of binary data after the header belong to no input")
    binary_default = parameters.get("binary_data_output", False) is True
    return InferRequest(array, _requested_outputs(payload, outputs, binary_default), request_id)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        size = int(header_length)
    except ValueError:
        size = -1
    if not 0 <= size <= len(body):
        raise BadRequestError(f"{HEADER_LENGTH} must be 0..{len(body)} (the body's length) (got {header_length!r})")
    return body[:size], body[size:]


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = obj.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequestError(f'"parameters" of {where} must be an object')
    unsupported = sorted(k for k in parameters if k.startswith("shared_memory") or k == "classification")
    if unsupported:
        raise BadRequestError(f"{where}: parameters {unsupported} are not supported by this server")
    return parameters


def _tensor(tensor: dict[str, Any], spec: TensorSpec, binary: bytes) -> tuple[np.ndarray, int]:
    """The input as an array, and how many bytes of `binary` it used."""
    where = f"input {spec.name!r}"
    datatype = tensor.get("datatype")
    if datatype != spec.datatype:
        raise BadRequestError(f"{where}: datatype {datatype!r} does not match the model's {spec.datatype}")
    dtype = WIRE_DTYPES.get(spec.datatype)
    if dtype is None:
        raise BadRequestError(f"{where}: datatype {spec.datatype} is not supported by this server")
    shape = tensor.get("shape")
    if not _shape_matches(shape, spec.shape):
        raise BadRequestError(f"{where}: shape {json.dumps(shape)} does not match the model's {list(spec.shape)}")
    if shape[0] < 1:
        raise BadRequestError(f"{where}: the batch dimension must be >= 1 (got shape {shape})")
    count = math.prod(shape)
    parameters = _parameters(tensor, where)
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise BadRequestError(f'{where}: give either "data" or the binary_data_size parameter, not both')
        if size != count * dtype.itemsize or size > len(binary):
            raise BadRequestError(
                f"{where}: binary_data_size must be {count * dtype.itemsize} bytes for shape {shape} of "
                f"{spec.datatype} ({len(binary)} bytes of binary data sent, got {json.dumps(size)})"
            )
        array, used = np.frombuffer(binary, dtype=dtype, count=count), size
    else:
        if "data" not in tensor:
            raise BadRequestError(f'{where}: "data" is missing (or give binary data with binary_data_size)')
        array, used = _json_data(tensor["data"], count, dtype, where), 0
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise BadRequestError(f"{where}: values must be finite numbers (no NaN or Infinity)")
    return array.reshape(shape), used


def _shape_matches(shape: Any, wanted: tuple[int, ...]) -> bool:
    if not isinstance(shape, list) or len(shape) != len(wanted):
        return False
    dims_ok = all(type(d) is int and d >= 0 for d in shape)
    return dims_ok and all(w in (-1, d) for w, d in zip(wanted, shape, strict=True))


def _json_data(data: Any, count: int, dtype: np.dtype, where: str) -> np.ndarray:
    values = list(_flatten(data))
    if len(values) != count:
        raise BadRequestError(f"{where}: {len(values)} values in data, the shape needs {count}")
    # bool is an int subclass: JSON true/false is a value only for BOOL tensors.
    allowed = (bool,) if dtype.kind == "b" else (int,) if dtype.kind in "iu" else (int, float)
    for i, value in enumerate(values):
        if type(value) not in allowed:
            raise BadRequestError(f"{where}: data[{i}] is not a {dtype.name} value (got {json.dumps(value)})")
    with np.errstate(over="ignore"):  # too large for FP32 becomes inf, refused by the caller
        try:
            return np.asarray(values, dtype=dtype)
        except OverflowError:
            raise BadRequestError(f"{where}: a value does not fit in {dtype.name}") from None


def _flatten(data: Any) -> Iterator[Any]:
    """Row-major elements of a nested (or flat) list; iterative, so nesting depth is no risk."""
    if not isinstance(data, list):
        raise BadRequestError(f'"data" must be a list of values (got {type(data).__name__})')
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            yield value
        else:
            stack.pop()


def _requested_outputs(payload: dict[str, Any], outputs: list[TensorSpec], binary_default: bool) -> dict[str, bool]:
    requested = payload.get("outputs")
    if requested is None:
        return {spec.name: binary_default for spec in outputs}
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise BadRequestError('"outputs" must be a list of {"name", "parameters"}')
    known = {spec.name for spec in outputs}
    chosen: dict[str, bool] = {}
    for output in requested:
        name = output.get("name")
        if name not in known:
            raise BadRequestError(f"unknown output {json.dumps(name)}; the model's outputs are {sorted(known)}")
        binary = _parameters(output, f"output {name!r}").get("binary_data", binary_default)
        chosen[name] = binary is True
    return chosen


# -- responses ---------------------------------------------------------------------------


def infer_response(
    model_name: str, request: InferRequest, tensors: dict[str, np.ndarray], specs: dict[str, TensorSpec]
) -> web.Response:
    """The inference response: JSON, or JSON then binary tensors when any output is binary."""
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in request.outputs.items():
        spec, array = specs[name], tensors[name]
        entry: dict[str, Any] = {"name": name, "datatype": spec.datatype, "shape": list(array.shape)}
        if binary:
            chunk = np.ascontiguousarray(array, dtype=WIRE_DTYPES[spec.datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = array.ravel().tolist()
        described.append(entry)
    payload: dict[str, Any] = {"model_name": model_name, "outputs": described}
    if request.id is not None:
        payload["id"] = request.id
    header = dumps(payload).encode()
    if not chunks:
        return web.Response(body=header, content_type="application/json")
    return web.Response(
        body=b"".join([header, *chunks]),
        content_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


# -- endpoints ---------------------------------------------------------------------------


def add_routes(app: web.Application, server: InferenceServer) -> None:
    """Register the protocol's endpoints for `server` on `app`."""
    endpoints = OipEndpoints(server)
    app.router.add_get("/v2", endpoints.server_metadata)
    app.router.add_get("/v2/health/live", endpoints.live)
    app.router.add_get("/v2/health/ready", endpoints.ready)
    app.router.add_get("/v2/models/{name}", endpoints.model_metadata)
    app.router.add_get("/v2/models/{name}/ready", endpoints.model_ready)
    app.router.add_post("/v2/models/{name}/infer", endpoints.infer)
    app.router.add_route("*", "/v2/models/{name}/versions/{tail:.*}", endpoints.versions)


class OipEndpoints:
    def __init__(self, server: InferenceServer) -> None:
        self._server = server

    @property
    def _name(self) -> str:
        return self._server.config.display_model_name

    def _unknown(self, request: web.Request) -> web.Response | None:
        name = request.match_info["name"]
        if name == self._name:
            return None
        return error(404, f"unknown model {name!r}: this server serves {self._name!r} only")

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        # The spec's schema shows {"live": ...} here, a copy-paste slip; KServe and Triton send "ready".
        ready = self._server.ready
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response({"name": SERVER_NAME, "version": _version(), "extensions": list(EXTENSIONS)})

    async def model_ready(self, request: web.Request) -> web.Response:
        if unknown := self._unknown(request):
            return unknown
        ready = self._server.ready
        return web.json_response({"name": self._name, "ready": ready}, status=200 if ready else 503)

    async def model_metadata(self, request: web.Request) -> web.Response:
        if unknown := self._unknown(request):
            return unknown
        model = self._server.model
        if model is None:
            return error(503, "model is not loaded yet", {"Retry-After": str(RETRY_AFTER_S)})
        return web.json_response(
            {
                "name": self._name,
                "platform": PLATFORM,
                "inputs": [tensor_spec(node).as_json() for node in model.inputs],
                "outputs": [tensor_spec(node).as_json() for node in model.outputs],
            }
        )

    async def versions(self, request: web.Request) -> web.Response:
        return error(404, f"model versions are not supported: use /v2/models/{self._name} without /versions/...")

    async def infer(self, request: web.Request) -> web.StreamResponse:
        # Not counted here: the app's middleware counts every POST in inference_requests_total
        # (and times the 200s, and closes connections while draining), so an OIP request, like
        # a /v1/predict one, is counted exactly once. Admission mirrors InferenceServer._predict.
        server = self._server
        if not server.accepting:
            await server.discard_body(request)  # no reset before the 503 (see _predict)
            return error(503, "server is shutting down; retry on another replica", {"Connection": "close"})
        if unknown := self._unknown(request):
            return unknown
        batcher, model = server._batcher, server.model
        if batcher is None or model is None:
            return error(503, "model is not loaded yet", {"Retry-After": str(RETRY_AFTER_S)})
        body = await server.receive(request)  # 415, 413, 408, as on /v1/predict
        if isinstance(body, web.StreamResponse):
            return body
        async with server.admitted():
            return await self._accepted(request, body, batcher, model)

    async def _accepted(
        self, request: web.Request, body: bytes, batcher: MicroBatcher, model: Model
    ) -> web.StreamResponse:
        config = self._server.config
        inputs = [tensor_spec(node) for node in model.inputs]
        outputs = {spec.name: spec for spec in (tensor_spec(node) for node in model.outputs)}
        try:
            parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH), inputs, list(outputs.values()))
        except BadRequestError as exc:
            return error(400, str(exc))
        result = await run_batch(batcher, parsed.inputs, config.max_queue)
        if isinstance(result, web.Response):
            return result
        # The model has one output (workloads.model.Model).
        (output_name,) = outputs
        return infer_response(self._name, parsed, {output_name: result.outputs}, outputs)


@functools.cache
def _version() -> str:
    # The project's version when it is installed (the dev environment); the image copies
    # the sources without installing the project.
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:
        return "unknown"
