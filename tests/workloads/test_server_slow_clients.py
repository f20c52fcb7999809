"""Clients that stall: headers sent slowly or not at all, bodies that trickle or never come.

They must not hold `inference_requests_in_flight` (the KEDA scale signal) up: a request
counts in it only once its body is whole, and in `inference_requests_receiving` before
that; the header and body timeouts cut stalled clients off. Loopback only; the waits bound
hangs, nothing is timed.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.workloads.helpers import (
    ThreadServer,
    closed_by_server,
    config,
    connect,
    read_response,
    row,
    run,
    sample,
    scrape,
    wait_until,
)
from workloads.model import Model, load_model
from workloads.server.app import PREDICT_PATH
from workloads.server.metric_names import IN_FLIGHT, RECEIVING, REQUESTS_TOTAL

OIP_INFER = "/v2/models/mlp-default/infer"
N = 20


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model()


def request_parts(i: int) -> tuple[bytes, bytes]:
    """(headers, body) of a valid prediction, on /v1/predict or the OIP infer route by parity."""
    if i % 2:
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": row(i)}]})
        path = OIP_INFER
    else:
        body, path = json.dumps({"inputs": [row(i)]}), PREDICT_PATH
    headers = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return headers.encode(), body.encode()


async def gauges(session: aiohttp.ClientSession, url: str) -> tuple[float | None, float | None]:
    text = await scrape(session, url)
    return sample(text, RECEIVING), sample(text, IN_FLIGHT)


def test_requests_receiving_their_body_are_not_in_flight(model: Model) -> None:
    """N clients send headers and part of the body (or none), then stall: they show in the
    receiving gauge, never in the in-flight one; once their bodies arrive they are answered."""
    with ThreadServer(config(max_queue=N), model=model) as srv:

        async def scenario(session: aiohttp.ClientSession):
            streams = [await connect(srv.url) for _ in range(N)]
            parts = [request_parts(i) for i in range(N)]
            for i, ((_, writer), (headers, body)) in enumerate(zip(streams, parts, strict=True)):
                writer.write(headers + (body[: len(body) // 2] if i % 3 else b""))

            async def all_receiving() -> bool:
                return (await gauges(session, srv.url))[0] == N

            await wait_until(all_receiving, f"{RECEIVING} == {N}")
            stalled = await gauges(session, srv.url)
            for i, ((_, writer), (_, body)) in enumerate(zip(streams, parts, strict=True)):
                writer.write(body[len(body) // 2 :] if i % 3 else body)
            answers = [await read_response(reader) for reader, _ in streams]
            for _, writer in streams:
                writer.close()
            return stalled, answers, await gauges(session, srv.url)

        stalled, answers, after = run(scenario)
    assert stalled == (N, 0), f"while stalled: expected ({RECEIVING}, {IN_FLIGHT}) == ({N}, 0), got {stalled}"
    assert [a and a[0] for a in answers] == [200] * N, answers
    assert after == (0, 0), f"after the answers: expected both gauges 0, got {after}"


def test_stalled_clients_are_cut_off_by_the_timeouts(model: Model) -> None:
    """Bodies that stop get 408 then a close; headers that stop get 408 then a close; a
    connection that sends nothing is closed. Nothing stays counted, and the server serves on."""
    with ThreadServer(config(header_timeout_s=0.2, body_timeout_s=0.2), model=model) as srv:

        async def scenario(session: aiohttp.ClientSession):
            body_stalls = [await connect(srv.url) for _ in range(N)]
            for i, (_, writer) in enumerate(body_stalls):
                headers, body = request_parts(i)
                writer.write(headers + body[:10])
            header_stalls = [await connect(srv.url) for _ in range(N)]
            for _, writer in header_stalls:
                writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Le")
            silent = [await connect(srv.url) for _ in range(N)]
            results = {
                "body": [(await read_response(r), await closed_by_server(r)) for r, _ in body_stalls],
                "headers": [(await read_response(r), await closed_by_server(r)) for r, _ in header_stalls],
                "silent": [(await read_response(r), await closed_by_server(r)) for r, _ in silent],
            }
            for _, writer in body_stalls + header_stalls + silent:
                writer.close()
            text = await scrape(session, srv.url)
            reader, writer = await connect(srv.url)
            headers, body = request_parts(0)
            writer.write(headers + body)
            served = await read_response(reader)
            writer.close()
            return results, text, served

        results, text, served = run(scenario)
    for kind in ("body", "headers"):
        for response, closed in results[kind]:
            assert response is not None and response[0] == 408, f"a stalled {kind}: expected 408, got {response}"
            assert "error" in json.loads(response[2]), response
            assert response[1].get("connection", "").lower() == "close", response[1]
            assert closed, f"a stalled {kind}: the connection must be closed after the 408"
    assert results["silent"] == [(None, True)] * N, f"silent connections must be closed: {results['silent']}"
    assert sample(text, REQUESTS_TOTAL, status="408") == N, "each body timeout is a counted 408"
    assert (sample(text, RECEIVING), sample(text, IN_FLIGHT)) == (0, 0)
    assert served is not None and served[0] == 200, served


def test_an_idle_keep_alive_connection_is_not_cut_by_the_header_timeout(model: Model) -> None:
    """The header deadline runs from a request's first byte, not between requests."""
    with ThreadServer(config(header_timeout_s=0.1), model=model) as srv:

        async def scenario(session: aiohttp.ClientSession):
            reader, writer = await connect(srv.url)
            headers, body = request_parts(0)
            writer.write(headers + body)
            first = await read_response(reader)
            await asyncio.sleep(0.5)  # idle for five header timeouts
            writer.write(headers + body)
            second = await read_response(reader)
            writer.close()
            return first, second

        first, second = run(scenario)
    assert first is not None and first[0] == 200, first
    assert second is not None and second[0] == 200, f"the second request on an idle connection: {second}"


def test_the_drain_waits_for_a_request_still_receiving_its_body(model: Model) -> None:
    """A request admitted before the drain whose body is still arriving is answered, not lost."""
    with ThreadServer(config(term_grace_s=0, keepalive_drain_s=0), model=model) as srv:

        async def scenario(session: aiohttp.ClientSession):
            reader, writer = await connect(srv.url)
            headers, body = request_parts(0)
            writer.write(headers + body[:10])

            async def receiving() -> bool:
                return (await gauges(session, srv.url))[0] == 1

            await wait_until(receiving, f"{RECEIVING} == 1")
            drained = srv.spawn(srv.server.drain())
            await asyncio.sleep(0.1)
            waited = not drained.done()
            writer.write(body[10:])
            answer = await read_response(reader)
            writer.close()
            return waited, answer, await asyncio.wrap_future(drained)

        waited, answer, drained = run(scenario)
    assert waited, "the drain must wait for a request whose body is still arriving"
    assert answer is not None and answer[0] == 200, answer
    assert drained, "nothing may be left unfinished"


def test_a_client_that_gives_up_mid_body_is_a_499_not_a_server_error(model: Model) -> None:
    """A client closing its connection before its body is whole is no server error: counted as
    499 (nginx's "client closed request"), never as a 500 that fires the error-rate alert."""
    with ThreadServer(config(), model=model) as srv:

        async def scenario(session: aiohttp.ClientSession):
            for i in range(N):
                _, writer = await connect(srv.url)
                headers, body = request_parts(i)
                writer.write(headers + body[:10])
                await writer.drain()
                writer.close()

            async def all_counted() -> bool:
                return sample(await scrape(session, srv.url), REQUESTS_TOTAL, status="499") == N

            await wait_until(all_counted, f"{N} requests counted as 499")
            text = await scrape(session, srv.url)
            return sample(text, REQUESTS_TOTAL, status="500"), await gauges(session, srv.url)

        errors, after = run(scenario)
    assert errors is None, f"a client giving up must not count as a server error ({errors} 500s)"
    assert after == (0, 0), after


def test_a_request_slower_than_the_header_timeout_is_not_cut(model: Model) -> None:
    """The header deadline ends when the headers are in: a slow model call runs past it."""
    with ThreadServer(config(header_timeout_s=0.05, extra_batch_latency_ms=300), model=model) as srv:

        async def scenario(session: aiohttp.ClientSession):
            reader, writer = await connect(srv.url)
            headers, body = request_parts(0)
            writer.write(headers + body)
            answer = await read_response(reader)
            writer.close()
            return answer

        answer = run(scenario)
    assert answer is not None and answer[0] == 200, answer
