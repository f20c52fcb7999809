"""Hostile and bursty traffic at the connection level: compressed-body bombs and a burst of
connections larger than aiohttp's default accept backlog. Loopback only; nothing is timed.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import resource
import signal
import threading
import zlib
from pathlib import Path

import aiohttp
import pytest

from tests.workloads.helpers import (
    WAIT_S,
    ServerProcess,
    ThreadServer,
    closed_by_server,
    config,
    connect,
    get,
    post,
    read_response,
    row,
    run,
    sample,
    scrape,
    wait_until,
)
from workloads.model import Model, load_model
from workloads.server import connections
from workloads.server.app import PREDICT_PATH
from workloads.server.metric_names import IN_FLIGHT, RECEIVING, REQUESTS_TOTAL

OIP_INFER = "/v2/models/mlp-default/infer"
MIB = 1 << 20


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model()


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """About 1 MiB of gzip that inflates to 1 GiB of zeros: 16 members of 64 MiB each
    (a gzip stream may hold several members; built this way in a fraction of a second)."""
    member = gzip.compress(bytes(64 * MIB), compresslevel=9)
    return member * 16


def deflate_bomb() -> bytes:
    return zlib.compress(bytes(64 * MIB), 9)  # HTTP's "deflate" is the zlib format


def test_compressed_bodies_get_415_before_inflating_while_the_server_keeps_serving(
    model: Model, gzip_bomb: bytes
) -> None:
    """Bombs on both prediction routes at once: every one 415 with a message, and /healthz
    answered between them (aiohttp inflated such bodies on the event loop: 413, and
    three at once stalled /healthz for seconds)."""
    assert len(gzip_bomb) <= 1.1 * MIB
    bombs = [("gzip", gzip_bomb)] * 3 + [("deflate", deflate_bomb()), ("br", b"\x0b" * 1000), ("x-custom", b"?")]
    with ThreadServer(config(max_queue=64), model=model) as srv:

        async def bomb(session: aiohttp.ClientSession, path: str, encoding: str, body: bytes):
            headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
            async with session.post(srv.url + path, data=body, headers=headers) as resp:
                return resp.status, dict(resp.headers), await resp.json()

        async def scenario(session: aiohttp.ClientSession):
            tasks = [
                asyncio.create_task(bomb(session, path, encoding, body))
                for path in (PREDICT_PATH, OIP_INFER)
                for encoding, body in bombs
            ]
            polls: list[int] = []
            while not all(t.done() for t in tasks) or not polls:
                polls.append((await get(session, srv.url + "/healthz"))[0])
            identity = await bomb(session, PREDICT_PATH, "identity", b'{"inputs": [%s]}' % str(row(1)).encode())
            text = await scrape(session, srv.url)
            return await asyncio.gather(*tasks), polls, identity, text

        answers, polls, identity, text = run(scenario)
    for status, headers, body in answers:
        assert status == 415, f"a compressed body must get 415, got {status}: {body}"
        assert "Content-Encoding" in body["error"] and "uncompressed" in body["error"], body
        assert headers.get("Accept-Encoding") == "identity", headers
    assert polls and set(polls) == {200}, f"/healthz between the bombs: expected only 200s, got {polls}"
    assert identity[0] == 200, f"Content-Encoding: identity is no compression and must be served: {identity}"
    assert sample(text, REQUESTS_TOTAL, status="415") == len(answers), "each 415 is counted once"
    assert sample(text, RECEIVING) == 0 and sample(text, IN_FLIGHT) == 0


def _raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_a_burst_of_1000_connections_is_queued_not_refused(model: Model) -> None:
    """1,000 clients connect while the server accepts nothing (its loop blocked): every one
    completes its handshake into the listen backlog, then is served. aiohttp's default
    backlog (128) completed only 129; the others were dropped (SYN retried, or reset)."""
    n = 1000
    _raise_open_files(2 * n + 256)  # both ends live in this process
    with ThreadServer(config(max_queue=n), model=model) as srv:
        gate = threading.Event()

        async def scenario(session: aiohttp.ClientSession):
            srv.loop.call_soon_threadsafe(gate.wait, 2 * WAIT_S)  # the server accepts nothing now
            try:
                pending = [asyncio.create_task(connect(srv.url)) for _ in range(n)]

                async def all_connected() -> bool:
                    return all(t.done() for t in pending)

                await wait_until(all_connected, f"{n} connections to complete while the server accepts none")
                streams = [t.result() for t in pending]
                for i, (_, writer) in enumerate(streams):
                    writer.write(request(i))
            finally:
                gate.set()
            answers = await asyncio.gather(*(read_response(reader) for reader, _ in streams), return_exceptions=True)
            for _, writer in streams:
                writer.close()
            return answers

        answers = run(scenario)
    statuses = [a if isinstance(a, BaseException) else (a and a[0]) for a in answers]
    failed = [s for s in statuses if s != 200]
    assert not failed, f"{len(failed)} of {n} connections not answered 200: {failed[:10]}"


def request(i: int) -> bytes:
    """A /healthz (odd i) or /v1/predict (even i) request that closes its connection."""
    if i % 2:
        return b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    body = b'{"inputs": [%s]}' % str(row(i)).encode()
    return (
        b"POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (PREDICT_PATH.encode(), len(body), body)
    )


def test_the_server_process_queues_a_burst_and_cuts_off_stalled_clients(tmp_path: Path) -> None:
    """`python -m workloads.server` (uvloop, the settings from the environment), stopped with
    SIGSTOP while 1,000 clients connect: all complete into its backlog and get 200 once it
    runs again. Then a compressed body gets 415, a stalled body and stalled headers 408."""
    n = 1000
    _raise_open_files(n + 256)
    env = {"MAX_QUEUE": str(n), "HEADER_TIMEOUT_S": "0.2", "BODY_TIMEOUT_S": "0.2"}
    server = ServerProcess(tmp_path / "server.log", env=env)
    try:
        url = server.wait_listening()

        async def scenario(session: aiohttp.ClientSession):
            await wait_until(lambda: _ready(session, url), "the model to load")
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                pending = [asyncio.create_task(connect(url)) for _ in range(n)]

                async def all_connected() -> bool:
                    return all(t.done() for t in pending)

                await wait_until(all_connected, f"{n} connections to complete while the server is stopped")
                streams = [t.result() for t in pending]
                for i, (_, writer) in enumerate(streams):
                    writer.write(request(i))
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            burst = await asyncio.gather(*(read_response(r) for r, _ in streams), return_exceptions=True)
            for _, writer in streams:
                writer.close()
            stalled = []
            for head in (request(0)[:-20], b"POST /v1/predict HTTP/1.1\r\nHost: test\r\n"):
                reader, writer = await connect(url)
                writer.write(head)
                stalled.append((await read_response(reader), await closed_by_server(reader)))
                writer.close()
            headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
            async with session.post(url + PREDICT_PATH, data=gzip.compress(b"{}"), headers=headers) as resp:
                compressed = resp.status
            return burst, stalled, compressed

        burst, stalled, compressed = run(scenario)
    finally:
        server.stop()
    failed = [a if isinstance(a, BaseException) else (a and a[0]) for a in burst]
    failed = [s for s in failed if s != 200]
    assert not failed, f"{len(failed)} of {n} connections not answered 200: {failed[:10]}\n{server.log()[-2000:]}"
    assert [(r and r[0], closed) for r, closed in stalled] == [(408, True), (408, True)], stalled
    assert compressed == 415


async def _ready(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        return (await get(session, url + "/readyz"))[0] == 200
    except aiohttp.ClientConnectionError:
        return False


def test_a_backlog_above_the_kernel_cap_is_logged(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr(connections, "kernel_backlog_cap", lambda: 64)
    with caplog.at_level(logging.WARNING, logger=connections.__name__):
        connections.listen("127.0.0.1", 0, 128).close()
    assert "BACKLOG=128 is above net.core.somaxconn=64" in caplog.text, caplog.text


def test_predictions_still_work_through_the_client_library(model: Model) -> None:
    """aiohttp's client sends no Content-Encoding: the 415 never meets ordinary clients."""
    with ThreadServer(config(), model=model) as srv:
        status, _, body = run(lambda s: post(s, srv.url + PREDICT_PATH, {"inputs": [row(3)]}))
    assert status == 200, body
