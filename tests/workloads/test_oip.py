"""The Open Inference Protocol endpoints (/v2/...), driven by tritonclient: a real OIP client
that nobody here wrote, so that the protocol is what clients expect, not what we think it is.

The server runs in this process (its own event loop in a thread), as in test_server.py.
Queueing and draining use the gated model, never sleeps.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from importlib import metadata

import aiohttp
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.workloads.helpers import (
    GatedModel,
    ThreadServer,
    config,
    get,
    post,
    row,
    run,
    sample,
    scrape,
    wait_for_metric,
    wait_until,
)
from workloads.model import Model, load_model
from workloads.server.app import PREDICT_PATH
from workloads.server.metric_names import BATCH_SIZE, IN_FLIGHT, QUEUE_DEPTH, REQUEST_DURATION, REQUESTS_TOTAL
from workloads.server.oip import BadRequestError, TensorSpec, parse_infer_request

NAME = "mlp-default"  # the built-in model's name (no MODEL_PATH, no MODEL_NAME)
INFER = f"/v2/models/{NAME}/infer"
INPUT = [TensorSpec("input", "FP32", (-1, 16))]
OUTPUT = [TensorSpec("output", "FP32", (-1, 4))]


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model()


@pytest.fixture(scope="module")
def server(model: Model) -> Iterator[ThreadServer]:
    with ThreadServer(config(max_body_bytes=4096), model=model) as srv:
        yield srv


def client_for(srv: ThreadServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=srv.url.removeprefix("http://"), network_timeout=30)


@pytest.fixture
def client(server: ThreadServer) -> Iterator[httpclient.InferenceServerClient]:
    triton = client_for(server)
    yield triton
    triton.close()


def tensor(rows: list[list[float]], *, binary: bool = True, datatype: str = "FP32") -> httpclient.InferInput:
    array = np.asarray(rows, dtype=np.float64 if datatype == "FP64" else np.float32)
    return httpclient.InferInput("input", list(array.shape), datatype).set_data_from_numpy(array, binary_data=binary)


def gated(model: Model) -> GatedModel:
    """A gated model that also shows the tensor metadata the OIP endpoints read."""
    wrapped = GatedModel(model)
    wrapped.inputs, wrapped.outputs = model.inputs, model.outputs  # type: ignore[attr-defined]
    return wrapped


def oip_body(rows: list[list[float]]) -> dict:
    return {"inputs": [{"name": "input", "shape": [len(rows), 16], "datatype": "FP32", "data": rows}]}


# -- health and metadata -------------------------------------------------------------------


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(NAME)
    assert not client.is_model_ready("other-model"), "only the configured model name is served"
    assert client.get_server_metadata() == {
        "name": "gpu-inference",
        "version": metadata.version("gpu-inference"),  # the project, installed editable here
        "extensions": ["binary_tensor_data"],
    }


def test_model_metadata_is_read_from_the_onnx_file(client: httpclient.InferenceServerClient, model: Model) -> None:
    # Read the file again here, independently of the server, as the source of truth.
    session = ort.InferenceSession(model.path, providers=["CPUExecutionProvider"])
    (onnx_in,), (onnx_out,) = session.get_inputs(), session.get_outputs()
    assert (onnx_in.type, onnx_out.type) == ("tensor(float)", "tensor(float)")
    assert client.get_model_metadata(NAME) == {
        "name": NAME,
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": onnx_in.name, "datatype": "FP32", "shape": [-1, onnx_in.shape[1]]}],
        "outputs": [{"name": onnx_out.name, "datatype": "FP32", "shape": [-1, onnx_out.shape[1]]}],
    }, "a symbolic batch dimension is -1; the feature sizes are the file's"


def test_model_name_comes_from_config(model: Model) -> None:
    with ThreadServer(config(model_name="fraud-mlp"), model=model) as srv:
        triton = client_for(srv)
        try:
            assert triton.is_model_ready("fraud-mlp")
            assert triton.get_model_metadata("fraud-mlp")["name"] == "fraud-mlp"
            assert not triton.is_model_ready(NAME), "served under the configured name only"
            result = triton.infer("fraud-mlp", [tensor([row(1)])])
            assert result.get_response()["model_name"] == "fraud-mlp"
        finally:
            triton.close()


# -- inference -------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_infer_matches_v1_predict(server: ThreadServer, client: httpclient.InferenceServerClient, binary: bool) -> None:
    rows = [row(i) for i in range(5)]
    status, _, v1 = run(lambda s: post(s, server.url + PREDICT_PATH, {"inputs": rows}))
    assert status == 200, v1
    outputs = None if binary else [httpclient.InferRequestedOutput("output", binary_data=False)]
    result = client.infer(NAME, [tensor(rows, binary=binary)], request_id="req-42", outputs=outputs)
    response = result.get_response()
    assert response["model_name"] == NAME and response["id"] == "req-42"
    assert "model_version" not in response, "no versioning: the spec says to leave model_version out"
    (output,) = response["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("output", "FP32", [5, 4])
    # tritonclient's defaults (no outputs named) ask for binary outputs: honoured.
    assert ("parameters" in output) is binary and ("data" in output) is not binary, output
    got = result.as_numpy("output")
    assert got.dtype == np.float32 and got.shape == (5, 4)
    np.testing.assert_allclose(got, np.asarray(v1["outputs"], dtype=np.float32), rtol=1e-6, atol=1e-7)


def test_requested_outputs(client: httpclient.InferenceServerClient) -> None:
    rows = [row(7), row(8)]
    as_binary = client.infer(NAME, [tensor(rows, binary=False)], outputs=[httpclient.InferRequestedOutput("output")])
    as_json = client.infer(NAME, [tensor(rows)], outputs=[httpclient.InferRequestedOutput("output", binary_data=False)])
    assert as_binary.get_output("output")["parameters"] == {"binary_data_size": 2 * 4 * 4}
    assert "data" in as_json.get_output("output")
    np.testing.assert_array_equal(as_binary.as_numpy("output"), as_json.as_numpy("output"))
    with pytest.raises(InferenceServerException) as caught:
        client.infer(NAME, [tensor(rows)], outputs=[httpclient.InferRequestedOutput("probabilities")])
    assert caught.value.status() == "400"
    assert "unknown output \"probabilities\"; the model's outputs are ['output']" in caught.value.message()


@pytest.mark.parametrize(
    ("model_name", "inputs", "status", "message"),
    [
        pytest.param(
            NAME,
            lambda: [tensor([row(1), row(2)], datatype="FP64")],
            "400",
            "input 'input': datatype 'FP64' does not match the model's FP32",
            id="wrong-datatype",
        ),
        pytest.param(
            NAME,
            lambda: [tensor([row(1, size=8), row(2, size=8)])],
            "400",
            "input 'input': shape [2, 8] does not match the model's [-1, 16]",
            id="wrong-shape",
        ),
        pytest.param(
            NAME,
            lambda: [httpclient.InferInput("features", [1, 16], "FP32").set_data_from_numpy(np.zeros((1, 16), "f4"))],
            "400",
            "expected exactly one input named 'input' (got ['features'])",
            id="wrong-input-name",
        ),
        pytest.param(
            "other-model",
            lambda: [tensor([row(1)])],
            "404",
            "unknown model 'other-model': this server serves 'mlp-default' only",
            id="unknown-model",
        ),
    ],
)
def test_errors_reach_tritonclient(
    client: httpclient.InferenceServerClient, model_name: str, inputs, status: str, message: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model_name, inputs())
    assert caught.value.status() == status, caught.value
    assert caught.value.message() == message


def test_body_over_the_limit_gets_413(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(NAME, [tensor([row(i) for i in range(80)])])  # 80 * 16 * 4 bytes > 4096
    assert caught.value.status() == "413"
    assert "limit" in caught.value.message()


def test_versions_are_not_supported(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata(NAME, model_version="1")
    assert caught.value.status() == "404"
    assert "model versions are not supported" in caught.value.message()


# -- one batcher, one set of metrics -------------------------------------------------------------


def test_oip_and_v1_share_the_metrics_and_count_once(model: Model) -> None:
    with ThreadServer(config(), model=model) as srv:
        triton = client_for(srv)
        try:
            for i in range(3):
                triton.infer(NAME, [tensor([row(i), row(i + 10)])])
            with pytest.raises(InferenceServerException):
                triton.infer(NAME, [tensor([row(0)], datatype="FP64")])
            assert triton.is_server_ready() and triton.get_model_metadata(NAME)  # probes are not predictions
        finally:
            triton.close()

        async def scenario(session: aiohttp.ClientSession) -> str:
            status, _, body = await post(session, srv.url + PREDICT_PATH, {"inputs": [row(5)]})
            assert status == 200, body
            return await scrape(session, srv.url)

        text = run(scenario)
    assert sample(text, REQUESTS_TOTAL, status="200") == 4, "3 OIP + 1 /v1/predict, each counted once"
    assert sample(text, REQUESTS_TOTAL, status="400") == 1
    assert sample(text, f"{REQUEST_DURATION}_count") == 4
    assert sample(text, f"{BATCH_SIZE}_sum") == 3 * 2 + 1, "OIP rows go through the same batcher"
    assert (sample(text, IN_FLIGHT), sample(text, QUEUE_DEPTH)) == (0, 0)


def test_oip_and_v1_requests_share_a_batch(model: Model) -> None:
    wrapped = gated(model)
    with ThreadServer(config(max_batch_size=32, max_wait_ms=1), model=wrapped) as srv:

        async def scenario(session: aiohttp.ClientSession):
            first = asyncio.create_task(post(session, srv.url + PREDICT_PATH, {"inputs": [row(0)]}))
            await wait_until(_async(lambda: wrapped.calls == 1), "the first batch to reach the model")
            oip = asyncio.create_task(post(session, srv.url + INFER, oip_body([row(1), row(2)])))
            await wait_for_metric(session, srv.url, QUEUE_DEPTH, 1)
            v1 = asyncio.create_task(post(session, srv.url + PREDICT_PATH, {"inputs": [row(3)]}))
            await wait_for_metric(session, srv.url, QUEUE_DEPTH, 2)
            wrapped.release()
            return await first, await oip, await v1

        first, (oip_status, _, oip), (v1_status, _, v1) = run(scenario)
    assert (first[0], oip_status, v1_status) == (200, 200, 200), (oip, v1)
    assert wrapped.batch_sizes == [1, 3], f"the OIP request (2 rows) and the v1 one (1 row) share a batch: {wrapped}"
    np.testing.assert_allclose(np.reshape(oip["outputs"][0]["data"], (2, 4)), model.predict([row(1), row(2)]), 1e-5)
    np.testing.assert_allclose(v1["outputs"], model.predict([row(3)]), rtol=1e-5)


def test_queue_full_gets_429(model: Model) -> None:
    wrapped = gated(model)
    with ThreadServer(config(max_batch_size=1, max_wait_ms=0, max_queue=1), model=wrapped) as srv:

        async def scenario(session: aiohttp.ClientSession):
            running = asyncio.create_task(post(session, srv.url + INFER, oip_body([row(0)])))
            await wait_until(_async(lambda: wrapped.calls == 1), "the first request to reach the model")
            queued = asyncio.create_task(post(session, srv.url + INFER, oip_body([row(1)])))
            await wait_for_metric(session, srv.url, QUEUE_DEPTH, 1)
            rejected = await post(session, srv.url + INFER, oip_body([row(2)]))
            wrapped.release()
            return rejected, await asyncio.gather(running, queued)

        (status, headers, body), answered = run(scenario)
    assert status == 429 and headers.get("Retry-After") == "1", body
    assert "queue is full" in body["error"]
    assert [a[0] for a in answered] == [200, 200]


# -- lifecycle -----------------------------------------------------------------------------------


def test_not_ready_until_the_model_is_loaded(model: Model) -> None:
    loaded = threading.Event()

    def slow_loader(path: str | None) -> Model:
        assert loaded.wait(30), "the test never let the model load"
        return model

    srv = ThreadServer(config(), loader=slow_loader).start(wait_loaded=False)
    try:

        async def before(session: aiohttp.ClientSession):
            paths = ("/v2/health/live", "/v2/health/ready", f"/v2/models/{NAME}/ready", f"/v2/models/{NAME}")
            return [await get(session, srv.url + path) for path in paths], await post(
                session, srv.url + INFER, oip_body([row(0)])
            )

        (live, ready, model_ready, metadata), infer = run(before)
        assert live == (200, json.dumps({"live": True}))
        assert ready == (503, json.dumps({"ready": False}))
        assert model_ready == (503, json.dumps({"name": NAME, "ready": False}))
        assert metadata[0] == 503 and "not loaded" in metadata[1]
        assert infer[0] == 503 and "not loaded" in infer[2]["error"]
        loaded.set()
        srv.call(srv.server.wait_loaded())
        assert run(lambda s: get(s, srv.url + "/v2/health/ready")) == (200, json.dumps({"ready": True}))
    finally:
        loaded.set()
        srv.__exit__(None, None, None)


def test_drain_waits_for_oip_requests_and_refuses_new(model: Model) -> None:
    wrapped = gated(model)
    with ThreadServer(config(max_batch_size=1, max_wait_ms=0, term_grace_s=0), model=wrapped) as srv:

        async def scenario(session: aiohttp.ClientSession):
            accepted = [asyncio.create_task(post(session, srv.url + INFER, oip_body([row(i)]))) for i in range(2)]
            await wait_for_metric(session, srv.url, IN_FLIGHT, 2)
            drained = srv.spawn(srv.server.drain())
            ready = await get(session, srv.url + "/v2/health/ready")
            refused = await post(session, srv.url + INFER, oip_body([row(9)]))
            done_while_blocked = drained.done()
            wrapped.release()
            answers = await asyncio.gather(*accepted)
            return ready, refused, done_while_blocked, answers, await asyncio.wrap_future(drained)

        ready, refused, done_while_blocked, answers, drained = run(scenario)
    assert not done_while_blocked, "the drain finished while 2 accepted OIP requests were still in the model"
    assert ready == (503, json.dumps({"ready": False})), "ready follows /readyz: false while draining"
    assert refused[0] == 503 and "shutting down" in refused[2]["error"]
    assert refused[1].get("Connection", "").lower() == "close"
    assert [a[0] for a in answers] == [200, 200]
    assert drained is True


# -- request parsing (no server) -----------------------------------------------------------------


def test_nested_flat_and_binary_tensors_are_the_same() -> None:
    rows = [row(1), row(2)]
    flat = oip_body(rows)
    flat["inputs"][0]["data"] = [v for r in rows for v in r]
    raw = np.asarray(rows, dtype="<f4").tobytes()
    header = json.dumps(
        {"inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32", "parameters": {"binary_data_size": 128}}]}
    ).encode()
    parsed = [
        parse_infer_request(json.dumps(oip_body(rows)).encode(), None, INPUT, OUTPUT),
        parse_infer_request(json.dumps(flat).encode(), None, INPUT, OUTPUT),
        parse_infer_request(header + raw, str(len(header)), INPUT, OUTPUT),
    ]
    for request in parsed:
        np.testing.assert_array_equal(request.inputs, np.asarray(rows, dtype=np.float32))
        assert request.outputs == {"output": False} and request.id is None


def _binary(data: bytes, extra: bytes = b"") -> tuple[bytes, str]:
    """An infer body with `data` as the input's binary tensor, and its Inference-Header-Content-Length."""
    tensor = {"name": "input", "shape": [1, 16], "datatype": "FP32", "parameters": {"binary_data_size": len(data)}}
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + data + extra, str(len(header))


def _one(**changes) -> dict:
    tensor = {"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16, **changes}
    return {"inputs": [tensor]}


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        pytest.param(b"{nope", None, "not valid JSON", id="bad-json"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, None, "not valid JSON", id="too-deep"),
        pytest.param(b'{"id": "x", "inputs": ' + b"9" * 5000 + b"}", None, "not valid JSON", id="huge-int"),
        pytest.param(b'{"inputs": []}', None, "expected exactly one input named 'input' (got [])", id="no-inputs"),
        pytest.param(json.dumps({**_one(), "id": 7}).encode(), None, '"id" must be a string (got 7)', id="int-id"),
        pytest.param(json.dumps(_one(data=[0.5] * 15)).encode(), None, "15 values in data, the shape needs 16"),
        pytest.param(json.dumps(_one(data=[True] * 16)).encode(), None, "data[0] is not a float32 value (got true)"),
        pytest.param(json.dumps(_one(data=[1e39] * 16)).encode(), None, "finite numbers", id="overflows-fp32"),
        pytest.param(json.dumps(_one(shape=[0, 16], data=[])).encode(), None, "batch dimension must be >= 1"),
        pytest.param(json.dumps(_one(shape=[1, -16])).encode(), None, "shape [1, -16] does not match"),
        pytest.param(json.dumps(_one(data=None)).encode(), None, '"data" must be a list of values (got NoneType)'),
        pytest.param(json.dumps(_one()).encode(), "9999", "Inference-Header-Content-Length must be 0..", id="hdr"),
        pytest.param(json.dumps(_one()).encode(), "0", "not valid JSON", id="empty-header"),
        pytest.param(
            json.dumps(_one(parameters={"binary_data_size": 64})).encode(),
            None,
            'give either "data" or the binary_data_size parameter, not both',
            id="data-and-binary",
        ),
        pytest.param(
            *_binary(bytes(60)),
            "binary_data_size must be 64 bytes for shape [1, 16] of FP32",
            id="binary-size",
        ),
        pytest.param(
            json.dumps(_one(parameters={"shared_memory_region": "r"})).encode(),
            None,
            "parameters ['shared_memory_region'] are not supported",
            id="shared-memory",
        ),
        pytest.param(
            json.dumps({**_one(), "outputs": [{"name": "output", "parameters": {"classification": 2}}]}).encode(),
            None,
            "parameters ['classification'] are not supported",
            id="classification",
        ),
    ],
)
def test_bad_infer_requests(body: bytes, header_length: str | None, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_infer_request(body, header_length, INPUT, OUTPUT)
    assert message in str(caught.value), f"expected {message!r} in {str(caught.value)!r}"


def test_binary_nan_and_trailing_bytes_are_refused() -> None:
    with pytest.raises(BadRequestError, match="finite numbers"):
        parse_infer_request(*_binary(np.full(16, np.nan, dtype="<f4").tobytes()), INPUT, OUTPUT)
    with pytest.raises(BadRequestError, match="4 bytes of binary data after the header belong to no input"):
        parse_infer_request(*_binary(bytes(64), extra=bytes(4)), INPUT, OUTPUT)


def _async(check):
    async def wrapped() -> bool:
        return check()

    return wrapped
