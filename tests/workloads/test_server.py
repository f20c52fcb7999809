"""The inference server in this process (its own event loop in a thread), over real HTTP.

Queueing, overload, batching and draining are driven by a model that blocks until
the test releases it, never by sleeps: nothing here depends on timing.
"""

from __future__ import annotations

import asyncio
import json
import threading

import aiohttp
import numpy as np
import pytest

from tests.workloads.helpers import (
    WAIT_S,
    GatedModel,
    ThreadServer,
    config,
    get,
    post,
    row,
    run,
    sample,
    samples,
    scrape,
    wait_for_metric,
    wait_until,
)
from workloads.model import Model, load_model
from workloads.server.app import LISTENER_QUIET_S, PREDICT_PATH, BadRequestError, parse_inputs
from workloads.server.metric_names import (
    BATCH_SIZE,
    IN_FLIGHT,
    QUEUE_DEPTH,
    RECEIVING,
    REQUEST_DURATION,
    REQUESTS_TOTAL,
)


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model()


@pytest.fixture(scope="module")
def server(model: Model):
    with ThreadServer(config(max_body_bytes=4096), model=model) as srv:
        yield srv


# -- predict -----------------------------------------------------------------------------


def test_predict_matches_the_model(server: ThreadServer, model: Model) -> None:
    inputs = [row(1), row(2), row(3)]
    status, _, body = run(lambda s: post(s, server.url + PREDICT_PATH, {"inputs": inputs}))
    assert status == 200, body
    assert body["model"] == "mlp-default"
    assert body["batch_size"] == 3
    np.testing.assert_allclose(body["outputs"], model.predict(inputs), rtol=1e-5, atol=1e-6)


def test_health_and_readiness(server: ThreadServer) -> None:
    async def probe(session: aiohttp.ClientSession) -> list[tuple[int, str]]:
        return [await get(session, server.url + path) for path in ("/healthz", "/readyz")]

    (health, _), (ready, ready_body) = run(probe)
    assert (health, ready) == (200, 200), ready_body
    assert json.loads(ready_body) == {"status": "ready"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"{not json", "body is not valid JSON", id="bad-json"),
        pytest.param(b"\xff\xfe", "body is not valid JSON", id="not-utf8"),
        pytest.param(b"[]", 'a JSON object with an "inputs" key', id="not-an-object"),
        pytest.param(b'{"rows": []}', 'a JSON object with an "inputs" key', id="no-inputs"),
        pytest.param(b'{"inputs": []}', "non-empty list of rows of 16 numbers", id="empty"),
        pytest.param(b'{"inputs": [[1, 2, 3]]}', "inputs[0] must be a list of 16 numbers (got 3 items)", id="short"),
        pytest.param(b'{"inputs": [5]}', "inputs[0] must be a list of 16 numbers (got int)", id="not-a-row"),
    ],
)
def test_bad_requests_get_400_with_a_message(server: ThreadServer, body: bytes, message: str) -> None:
    status, headers, answer = run(lambda s: post(s, server.url + PREDICT_PATH, data=body))
    assert status == 400, answer
    assert headers["Content-Type"].startswith("application/json")
    assert message in answer["error"], f"expected {message!r} in {answer['error']!r}"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([[True, *[0.0] * 15]], "inputs[0][0] must be a number (got true)"),
        ([[0.0] * 16, [*[0.0] * 15, "x"]], 'inputs[1][15] must be a number (got "x")'),
        ([[0.0] * 15 + [None]], "inputs[0][15] must be a number (got null)"),
        ([[float("nan")] + [0.0] * 15], "finite numbers"),
        ([[1e300] + [0.0] * 15], "finite numbers"),  # overflows float32
    ],
)
def test_parse_inputs_rejects_values(inputs: list, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_inputs(json.dumps({"inputs": inputs}).encode(), 16)
    assert message in str(caught.value)


def test_parse_inputs_accepts_ints_and_floats() -> None:
    array = parse_inputs(b'{"inputs": [[1, 2.5, -3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1e-3]]}', 16)
    assert array.dtype == np.float32 and array.shape == (1, 16)


def test_body_over_the_limit_gets_413(server: ThreadServer) -> None:
    big = json.dumps({"inputs": [row(i) for i in range(80)]}).encode()
    assert len(big) > 4096

    async def chunked() -> object:  # no Content-Length: the limit applies while reading
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    async def send(session: aiohttp.ClientSession) -> list[tuple[int, dict[str, str], object]]:
        return [
            await post(session, server.url + PREDICT_PATH, data=big),
            await post(session, server.url + PREDICT_PATH, data=chunked()),
        ]

    for status, _, body in run(send):
        assert status == 413, body
        assert "limit" in body["error"]


def test_wrong_method_is_not_a_prediction(server: ThreadServer) -> None:
    status, _ = run(lambda s: get(s, server.url + PREDICT_PATH))
    assert status == 405


# -- metrics -----------------------------------------------------------------------------


def test_metric_names_and_types_are_the_contract(server: ThreadServer) -> None:
    text = run(lambda s: scrape(s, server.url))
    for name, kind in (
        (REQUESTS_TOTAL, "counter"),
        (REQUEST_DURATION, "histogram"),
        (BATCH_SIZE, "histogram"),
        (IN_FLIGHT, "gauge"),
        (QUEUE_DEPTH, "gauge"),
        (RECEIVING, "gauge"),
    ):
        assert f"# TYPE {name} {kind}" in text, f"expected a {kind} named {name} in /metrics"
    assert (REQUESTS_TOTAL, IN_FLIGHT, QUEUE_DEPTH, REQUEST_DURATION, BATCH_SIZE) == (
        "inference_requests_total",
        "inference_requests_in_flight",
        "inference_queue_depth",
        "inference_request_duration_seconds",
        "inference_batch_size",
    ), "these names are read by the KEDA ScaledObject and the dashboards"
    assert RECEIVING == "inference_requests_receiving", "documented as the gauge that is not a scale signal"
    buckets = {labels[0][1] for (name, labels) in samples(text) if name == f"{REQUEST_DURATION}_bucket"}
    assert {"0.001", "0.005", "0.01", "0.1"} <= buckets, f"millisecond buckets expected, got {sorted(buckets)}"


def test_metrics_count_requests_by_status(model: Model) -> None:
    with ThreadServer(config(), model=model) as srv:

        async def scenario(session: aiohttp.ClientSession) -> str:
            for i in range(5):
                status, _, body = await post(session, srv.url + PREDICT_PATH, {"inputs": [row(i)]})
                assert status == 200, body
            for _ in range(2):
                await post(session, srv.url + PREDICT_PATH, data=b"nope")
            return await scrape(session, srv.url)

        text = run(scenario)
    assert sample(text, REQUESTS_TOTAL, status="200") == 5
    assert sample(text, REQUESTS_TOTAL, status="400") == 2
    assert sample(text, f"{REQUEST_DURATION}_count") == 5, "only answered predictions are timed"
    assert sample(text, f"{BATCH_SIZE}_sum") == 5
    assert sample(text, IN_FLIGHT) == 0
    assert sample(text, QUEUE_DEPTH) == 0


# -- queueing, overload, batching ----------------------------------------------------------


def test_queue_full_gets_429_with_retry_after(model: Model) -> None:
    gated = GatedModel(model)
    with ThreadServer(config(max_batch_size=1, max_wait_ms=0, max_queue=2), model=gated) as srv:
        url = srv.url + PREDICT_PATH

        async def scenario(session: aiohttp.ClientSession):
            running = asyncio.create_task(post(session, url, {"inputs": [row(0)]}))
            await wait_until(_async(lambda: gated.calls == 1), "the first request to reach the model")
            queued = [asyncio.create_task(post(session, url, {"inputs": [row(i)]})) for i in (1, 2)]
            await wait_for_metric(session, srv.url, QUEUE_DEPTH, 2)
            text = await scrape(session, srv.url)
            rejected = await post(session, url, {"inputs": [row(3)]})
            gated.release()
            return text, rejected, await asyncio.gather(running, *queued), await scrape(session, srv.url)

        while_full, (status, headers, body), answered, after = run(scenario)
    assert sample(while_full, IN_FLIGHT) == 3, "in flight = queued (2) + running (1)"
    assert status == 429, body
    assert headers.get("Retry-After") == "1"
    assert "queue is full" in body["error"]
    assert [a[0] for a in answered] == [200, 200, 200], "everything accepted is answered"
    assert sample(after, REQUESTS_TOTAL, status="429") == 1
    assert sample(after, REQUESTS_TOTAL, status="200") == 3
    assert (sample(after, IN_FLIGHT), sample(after, QUEUE_DEPTH)) == (0, 0)


def test_concurrent_requests_are_batched_and_answered_with_their_own_rows(model: Model) -> None:
    gated = GatedModel(model)
    with ThreadServer(config(max_batch_size=32, max_wait_ms=1, max_queue=64), model=gated) as srv:
        url = srv.url + PREDICT_PATH

        async def scenario(session: aiohttp.ClientSession):
            first = asyncio.create_task(post(session, url, {"inputs": [row(100)]}))
            await wait_until(_async(lambda: gated.calls == 1), "the first batch to reach the model")
            # While the model is busy, 8 requests (10 rows) queue up and then go in one batch.
            inputs = [[row(i)] if i % 4 else [row(i), row(i + 50)] for i in range(8)]
            queued = [asyncio.create_task(post(session, url, {"inputs": rows})) for rows in inputs]
            await wait_for_metric(session, srv.url, QUEUE_DEPTH, 8)
            gated.release()
            return inputs, await first, await asyncio.gather(*queued), await scrape(session, srv.url)

        inputs, first, answers, text = run(scenario)
    assert first[0] == 200 and first[2]["batch_size"] == 1
    assert gated.batch_sizes == [1, 10], f"expected a batch of 1 then one of 10 rows, got {gated.batch_sizes}"
    for rows, (status, _, body) in zip(inputs, answers, strict=True):
        assert status == 200, body
        assert body["batch_size"] == 10
        np.testing.assert_allclose(body["outputs"], model.predict(rows), rtol=1e-5, atol=1e-6)
    assert sample(text, f"{BATCH_SIZE}_count") == 2
    assert sample(text, f"{BATCH_SIZE}_bucket", le="8.0") == 1, "one batch of <= 8 rows (the first)"
    assert sample(text, f"{BATCH_SIZE}_bucket", le="16.0") == 2, "and one of 9..16 rows"


def test_batch_never_exceeds_max_rows(model: Model) -> None:
    gated = GatedModel(model)
    with ThreadServer(config(max_batch_size=4, max_wait_ms=1), model=gated) as srv:
        url = srv.url + PREDICT_PATH

        async def scenario(session: aiohttp.ClientSession):
            first = asyncio.create_task(post(session, url, {"inputs": [row(0)]}))
            await wait_until(_async(lambda: gated.calls == 1), "the first batch")
            sizes = [3, 2, 1, 6]  # 3 fits; 2 would overflow -> next batch (2+1); 6 alone (too big to share)
            queued = []
            for n, size in enumerate(sizes):
                queued.append(asyncio.create_task(post(session, url, {"inputs": [row(i) for i in range(size)]})))
                await wait_for_metric(session, srv.url, QUEUE_DEPTH, n + 1)  # keep the queue order known
            gated.release()
            return await first, await asyncio.gather(*queued)

        first, answers = run(scenario)
    assert first[0] == 200
    assert [a[0] for a in answers] == [200] * 4
    assert gated.batch_sizes == [1, 3, 3, 6], f"got {gated.batch_sizes}"
    assert [a[2]["batch_size"] for a in answers] == [3, 3, 3, 6]


# -- lifecycle ----------------------------------------------------------------------------


def test_not_ready_until_the_model_is_loaded(model: Model) -> None:
    loaded = threading.Event()

    def slow_loader(path: str | None) -> Model:
        assert loaded.wait(30), "the test never let the model load"
        return model

    srv = ThreadServer(config(), loader=slow_loader).start(wait_loaded=False)
    try:

        async def before(session: aiohttp.ClientSession):
            return (
                await get(session, srv.url + "/healthz"),
                await get(session, srv.url + "/readyz"),
                await post(session, srv.url + PREDICT_PATH, {"inputs": [row(0)]}),
            )

        health, ready, predict = run(before)
        assert health[0] == 200
        assert ready == (503, json.dumps({"status": "loading model"}))
        assert predict[0] == 503 and "not loaded" in predict[2]["error"]
        loaded.set()
        srv.call(srv.server.wait_loaded())
        assert run(lambda s: get(s, srv.url + "/readyz"))[0] == 200
    finally:
        loaded.set()
        srv.__exit__(None, None, None)


def test_failed_model_load_is_reported_not_ready() -> None:
    def broken(path: str | None) -> Model:
        raise FileNotFoundError("no such model")

    srv = ThreadServer(config(), loader=broken).start(wait_loaded=False)
    try:
        with pytest.raises(FileNotFoundError):
            srv.call(srv.server.wait_loaded())
        assert run(lambda s: get(s, srv.url + "/readyz")) == (503, json.dumps({"status": "model load failed"}))
    finally:
        srv.__exit__(None, None, None)


def test_drain_finishes_accepted_work_and_refuses_new(model: Model) -> None:
    gated = GatedModel(model)
    with ThreadServer(config(max_batch_size=1, max_wait_ms=0, term_grace_s=0), model=gated) as srv:
        url = srv.url + PREDICT_PATH

        async def scenario(session: aiohttp.ClientSession):
            accepted = [asyncio.create_task(post(session, url, {"inputs": [row(i)]})) for i in range(3)]
            await wait_for_metric(session, srv.url, IN_FLIGHT, 3)
            drained = srv.spawn(srv.server.drain())
            ready = await get(session, srv.url + "/readyz")
            refused = await post(session, url, {"inputs": [row(9)]})
            # Two round trips through the server's loop: a drain that did not wait is done by now.
            done_while_blocked = drained.done()
            gated.release()
            answers = await asyncio.gather(*accepted)
            return ready, refused, done_while_blocked, answers, await asyncio.wrap_future(drained)

        ready, refused, done_while_blocked, answers, drained = run(scenario)
    assert not done_while_blocked, "the drain finished while 3 accepted requests were still in the model"
    assert ready == (503, json.dumps({"status": "draining"}))
    assert refused[0] == 503 and "shutting down" in refused[2]["error"]
    assert refused[1].get("Connection", "").lower() == "close"
    assert [a[0] for a in answers] == [200, 200, 200], "every request accepted before the drain is answered"
    assert drained is True


def test_a_timed_out_drain_answers_what_is_left_with_503(model: Model) -> None:
    """Past DRAIN_TIMEOUT_S the requests still unanswered get a 503 to retry elsewhere, not a dropped connection."""
    gated = GatedModel(model)
    with ThreadServer(config(max_batch_size=1, max_wait_ms=0, drain_timeout_s=0.05), model=gated) as srv:
        url = srv.url + PREDICT_PATH

        async def scenario(session: aiohttp.ClientSession):
            accepted = [asyncio.create_task(post(session, url, {"inputs": [row(i)]})) for i in range(3)]
            await wait_for_metric(session, srv.url, IN_FLIGHT, 3)
            drained = await asyncio.wrap_future(srv.spawn(srv.server.drain()))
            closing = srv.spawn(srv.server.close())
            answers = await asyncio.gather(*accepted)  # the model is still blocked
            gated.release()
            await asyncio.wrap_future(closing)
            return drained, answers

        drained, answers = run(scenario)
    assert drained is False, "the drain reports that it timed out"
    assert [a[0] for a in answers] == [503, 503, 503], answers
    for _, headers, body in answers:
        assert "retry on another replica" in body["error"] and headers.get("Connection", "").lower() == "close"


def test_drain_grace_still_accepts_new_requests(model: Model) -> None:
    with ThreadServer(config(term_grace_s=600), model=model) as srv:
        draining = srv.spawn(srv.server.drain())
        try:

            async def scenario(session: aiohttp.ClientSession):
                return await get(session, srv.url + "/readyz"), await post(
                    session, srv.url + PREDICT_PATH, {"inputs": [row(0)]}
                )

            ready, answer = run(scenario)
        finally:
            draining.cancel()
    assert ready[0] == 503, "readiness is false from the first moment of the drain"
    assert answer[0] == 200, "within TERM_GRACE_S new requests are still served"
    assert answer[1].get("Connection", "").lower() == "close", "keep-alive clients are told to reconnect elsewhere"


def _async(check):
    async def wrapped() -> bool:
        return check()

    return wrapped


def test_a_request_refused_while_draining_is_read_before_its_503(model: Model) -> None:
    """A body still arriving when the server refuses it: the client gets the 503 (read after its
    body), not a write error or a reset."""
    gated = GatedModel(model)
    with ThreadServer(config(max_batch_size=1, max_wait_ms=0, term_grace_s=0), model=gated) as srv:
        url = srv.url + PREDICT_PATH
        body = json.dumps({"inputs": [row(i) for i in range(200)]}).encode()

        async def slowly():  # chunked, each chunk its own write: the 503 could overtake them
            for start in range(0, len(body), 512):
                yield body[start : start + 512]
                await asyncio.sleep(0.001)

        async def scenario(session: aiohttp.ClientSession):
            held = asyncio.create_task(post(session, url, {"inputs": [row(0)]}))  # keeps the drain waiting
            await wait_for_metric(session, srv.url, IN_FLIGHT, 1)
            drained = srv.spawn(srv.server.drain())
            await wait_until(_not_ready(session, srv.url), "the drain to start")
            try:
                refused = await post(session, url, data=slowly())
            finally:
                gated.release()
            return refused, await held, await asyncio.wrap_future(drained)

        (status, headers, answer), held, drained = run(scenario)
    assert status == 503 and "shutting down" in answer["error"], (status, answer)
    assert headers.get("Connection", "").lower() == "close"
    assert held[0] == 200 and drained is True


def _not_ready(session: aiohttp.ClientSession, url: str):
    async def check() -> bool:
        return (await get(session, url + "/readyz"))[0] == 503

    return check


def test_the_drain_closes_keep_alive_connections_between_requests(model: Model) -> None:
    """An idle keep-alive connection is not closed under the client: the drain waits for its
    next request (KEEPALIVE_DRAIN_S), answers it 503 + close, and only then finishes."""
    with ThreadServer(config(term_grace_s=0, keepalive_drain_s=WAIT_S), model=model) as srv:

        async def scenario(session: aiohttp.ClientSession):
            assert (await get(session, srv.url + "/healthz"))[0] == 200  # opens the keep-alive connection
            drained = srv.spawn(srv.server.drain())
            await wait_until(_async(lambda: srv.server.draining), "the drain to start")
            # Long past the listener's quiet time: a drain that closed idle connections is done.
            srv.call(asyncio.sleep(4 * LISTENER_QUIET_S))
            done_while_connected = drained.done()
            answer = await post(session, srv.url + PREDICT_PATH, {"inputs": [row(0)]})
            return done_while_connected, answer, await asyncio.wrap_future(drained)

        async def one_connection(fn):
            connector = aiohttp.TCPConnector(limit=1)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(WAIT_S)) as s:
                return await fn(s)

        done_while_connected, (status, headers, body), drained = asyncio.run(one_connection(scenario))
    assert not done_while_connected, "the drain finished while a keep-alive connection was still open"
    assert status == 503 and "shutting down" in body["error"], (status, body)
    assert headers.get("Connection", "").lower() == "close"
    assert drained is True


def test_an_unexpected_error_is_a_counted_json_500(model: Model) -> None:
    class Broken:
        provider = "none"

        @property
        def input_size(self) -> int:
            raise RuntimeError("a bug")

        def predict_array(self, batch: np.ndarray) -> np.ndarray:
            raise AssertionError("never called")

    with ThreadServer(config(), model=Broken()) as srv:

        async def scenario(session: aiohttp.ClientSession):
            return await post(session, srv.url + PREDICT_PATH, {"inputs": [row(0)]}), await scrape(session, srv.url)

        (status, headers, body), text = run(scenario)
    assert status == 500 and body == {"error": "internal server error"}, (status, body)
    assert headers["Content-Type"].startswith("application/json")
    assert sample(text, REQUESTS_TOTAL, status="500") == 1
