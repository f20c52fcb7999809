"""What the speed work changed, and that it changed nothing a client can tell apart: the fast
body parser accepts and refuses exactly what the strict one does, the batcher dispatches at once
when nothing else is waiting (or a batch is full) and runs tiny model calls on the event loop,
and the server runs on uvloop."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import numpy as np
import pytest

from tests.workloads.helpers import (
    WAIT_S,
    GatedModel,
    ThreadServer,
    closed_by_server,
    config,
    connect,
    host_port,
    read_response,
    sample,
    wait_until,
)
from workloads.model import load_model
from workloads.server import batcher as batcher_module
from workloads.server import fast
from workloads.server.__main__ import main as server_main
from workloads.server.app import LISTENER_QUIET_S
from workloads.server.batcher import INLINE_AFTER_CALLS, MicroBatcher
from workloads.server.bodies import BadRequestError, _parse_fast, _parse_strict, parse_inputs
from workloads.server.metric_names import REQUESTS_TOTAL
from workloads.server.metrics import Metrics

ROW = [0.5] * 16
BODIES = [
    json.dumps({"inputs": [ROW]}).encode(),
    json.dumps({"inputs": [ROW, [1] * 16, [-3.25e-7] * 16]}).encode(),
    json.dumps({"inputs": [ROW], "id": "x"}).encode(),
    json.dumps({"inputs": [[True, *ROW[1:]]]}).encode(),
    json.dumps({"inputs": [[*ROW[1:], "1.0"]]}).encode(),
    json.dumps({"inputs": [[*ROW[1:], None]]}).encode(),
    json.dumps({"inputs": [[*ROW[1:], {"a": 1}]]}).encode(),
    json.dumps({"inputs": [[*ROW[1:], [1.0]]]}).encode(),
    json.dumps({"inputs": [ROW, ROW[1:]]}).encode(),
    json.dumps({"inputs": [[ROW]]}).encode(),
    json.dumps({"inputs": [5]}).encode(),
    json.dumps({"inputs": []}).encode(),
    json.dumps({"inputs": ROW}).encode(),
    json.dumps([ROW]).encode(),
    b'{"inputs": [[' + b"1e39, " * 15 + b"1]]}",
    b'{"inputs": [[' + b"1e400, " * 15 + b"1]]}",
    b'{"inputs": [[' + b"NaN, " * 15 + b"1]]}",
    b'{"inputs": [[' + b"123456789012345678901234567890, " * 15 + b"1]]}",
    b'{"inputs": [[' + b"9" * 5000 + b", " + b"1, " * 14 + b"1]]}",
    b'{"inputs": [[' + b"18446744073709551615, " * 15 + b"1]]}",
    b'{"inputs": [[' + b"-9223372036854775809, " * 15 + b"1]]}",
    b"[" * 100_000,
    b"{not json",
    b"\xff\xfe",
    json.dumps({"inputs": [ROW]}).encode("utf-16"),
    b'{"inputs": [[' + b"0.5, " * 15 + b'0.5]], "note": "\\ud800"}',
]


def outcome(parse, body: bytes) -> tuple[str, object]:
    try:
        return "ok", parse(body, 16).tolist()
    except BadRequestError as exc:
        return "400", str(exc)


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_fast_parser_answers_exactly_as_the_strict_one(body: bytes) -> None:
    assert outcome(parse_inputs, body) == outcome(_parse_strict, body)


def test_fast_parser_takes_the_well_formed_bodies() -> None:
    """The fast path is taken (not just falling back) for ordinary requests, and only for them."""
    taken = [i for i, body in enumerate(BODIES) if _parse_fast(body, 16) is not None]
    # 17, 19, 20: integers past 64 bits or at its edges, still well within float32.
    assert taken == [0, 1, 2, 17, 19, 20]
    array = _parse_fast(BODIES[1], 16)
    assert array is not None and array.dtype == np.float32 and array.shape == (3, 16)


class Recorder:
    """A model that records each batch's size and the thread it ran on."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append((len(batch), threading.get_ident()))
        return batch[:, :4] * 2


def make(recorder: Recorder, **kwargs: float) -> MicroBatcher:
    options = {"max_batch_size": 32, "max_wait_s": 30.0, "max_queue": 128, "metrics": Metrics(), **kwargs}
    return MicroBatcher(recorder, **options)  # type: ignore[arg-type]


def test_a_lone_request_is_dispatched_at_once_and_a_deep_queue_fills_batches() -> None:
    """MAX_WAIT_MS is 30 s here: a lone request must not wait for it (the old batcher did);
    40 requests queued at once go as 32 + 8 without waiting either."""
    recorder = Recorder()

    async def scenario() -> tuple[list[int], list[int]]:
        b = make(recorder)
        b.start()
        first = await asyncio.wait_for(b.submit(np.ones((1, 16), np.float32)), 10)
        many = [asyncio.ensure_future(b.submit(np.full((1, 16), i, np.float32))) for i in range(40)]
        results = await asyncio.wait_for(asyncio.gather(*many), 10)
        await b.stop()
        await b.join()
        return [first.batch_size], [r.batch_size for r in results]

    lone, many = asyncio.run(scenario())
    assert lone == [1]
    assert [size for size, _ in recorder.calls] == [1, 32, 8]
    assert many == [32] * 32 + [8] * 8


@pytest.mark.parametrize("extra_latency_s", [0.0, 0.001])
def test_tiny_model_calls_move_onto_the_event_loop(extra_latency_s: float) -> None:
    """After INLINE_AFTER_CALLS fast calls in the worker thread, calls run on the loop's thread;
    never with EXTRA_BATCH_LATENCY_MS (a stand-in for a device call that blocks)."""
    recorder = Recorder()

    async def scenario() -> tuple[int, bool]:
        b = make(recorder, max_batch_size=1, max_wait_s=0.0, extra_latency_s=extra_latency_s)
        b.start()
        for _ in range(INLINE_AFTER_CALLS + 3):
            await b.submit(np.ones((1, 16), np.float32))
        inline = b.inline
        await b.stop()
        await b.join()
        return threading.get_ident(), inline

    loop_thread, inline = asyncio.run(scenario())
    threads = [thread for _, thread in recorder.calls]
    if extra_latency_s:
        assert not inline and loop_thread not in threads
    else:
        assert inline
        assert loop_thread not in threads[:INLINE_AFTER_CALLS], "measured in the thread first"
        assert threads[INLINE_AFTER_CALLS:] == [loop_thread] * 3


def test_a_model_call_that_turns_slow_goes_back_to_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batcher_module, "INLINE_MAX_S", 0.002)
    slow = threading.Event()
    loop_thread: list[int] = []

    def model(batch: np.ndarray) -> np.ndarray:
        if slow.is_set() and threading.get_ident() in loop_thread:
            threading.Event().wait(0.05)  # one call far past INLINE_MAX_S, on the loop
        return batch[:, :4]

    async def scenario() -> tuple[bool, bool]:
        loop_thread.append(threading.get_ident())
        b = MicroBatcher(model, max_batch_size=1, max_wait_s=0.0, max_queue=8, metrics=Metrics())
        b.start()
        for _ in range(INLINE_AFTER_CALLS):
            await b.submit(np.ones((1, 16), np.float32))
        before = b.inline
        slow.set()
        await b.submit(np.ones((1, 16), np.float32))
        after = b.inline
        await b.stop()
        await b.join()
        return before, after

    assert asyncio.run(scenario()) == (True, False)


def test_the_server_runs_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m workloads.server` sets uvloop's event loop policy before it starts the loop."""
    seen: list[str] = []

    async def fake_serve(config: object) -> int:
        seen.append(type(asyncio.get_running_loop()).__module__)
        return 0

    monkeypatch.setattr("workloads.server.__main__.serve", fake_serve)
    try:
        assert server_main([]) == 0
    finally:
        asyncio.set_event_loop_policy(None)
    assert seen and seen[0].startswith("uvloop")


# -- the lean /v1/predict path (workloads/server/fast.py) -----------------------------------------

HEAD = b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 148\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (HEAD, (148, False)),
        (HEAD.replace(b"Content-Length", b"cOnTeNt-LeNgTh"), (148, False)),
        (HEAD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"), (148, True)),
        (HEAD.replace(b"\r\n\r\n", b"\r\nConnection: Keep-Alive\r\n\r\n"), (148, False)),
        (HEAD.replace(b"Host: t", b"Host:\tt \t"), (148, False)),
        (HEAD.replace(b"HTTP/1.1", b"HTTP/1.0"), None),
        (HEAD.replace(b"/v1/predict", b"/v1/predict?x=1"), None),
        (HEAD.replace(b"/v1/predict", b"/v1/predict/"), None),
        (HEAD.replace(b"POST", b"PUT"), None),
        (HEAD.replace(b"Content-Length: 148", b"Transfer-Encoding: chunked"), None),
        (HEAD.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n"), None),
        (HEAD.replace(b"\r\n\r\n", b"\r\nContent-Encoding: identity\r\n\r\n"), None),
        (HEAD.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"), None),
        (HEAD.replace(b"\r\n\r\n", b"\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"), None),
        (HEAD.replace(b"\r\n\r\n", b"\r\nContent-Length: 148\r\n\r\n"), None),
        (HEAD.replace(b"Content-Length: 148", b"Content-Length: +148"), None),
        (HEAD.replace(b"Content-Length: 148", b"Content-Length: 1 48"), None),
        (HEAD.replace(b"Content-Length: 148\r\n", b""), None),
        (HEAD.replace(b"Host: t", b"Host: t\r\n folded"), None),
        (HEAD.replace(b"Host: t", b"Host: t\x00"), None),
        (HEAD.replace(b"Host: t", b"Host: t\xc3\xa9"), None),
        (HEAD.replace(b"Host: t", b"Ho st: t"), None),
        (HEAD.replace(b"\r\n\r\n", b"\n\n"), None),
    ],
    ids=lambda v: None if isinstance(v, bytes) else repr(v),
)
def test_the_lean_path_takes_only_the_plainest_heads(head: bytes, expected: tuple[int, bool] | None) -> None:
    """What `recognise` does not take (None) goes to aiohttp, which parses it as it always did."""
    assert fast.recognise(head) == expected


LEAN_BODIES = {
    "ok": json.dumps({"inputs": [ROW]}).encode(),
    "two-rows": json.dumps({"inputs": [ROW, [1] * 16]}).encode(),
    "bad-json": b"{not json",
    "bool": json.dumps({"inputs": [[True, *ROW[1:]]]}).encode(),
    "short-row": json.dumps({"inputs": [ROW[1:]]}).encode(),
    "deep": b"[" * 100_000,
    "utf16": json.dumps({"inputs": [ROW]}).encode("utf-16"),  # json.loads detects UTF-16: a 200 on both paths
    "past-float32": b'{"inputs": [[' + b"1e39, " * 15 + b"1]]}",
    "outputs-overflow": json.dumps({"inputs": [[3e38] * 16]}).encode(),
}


async def _exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await connect(url)
    writer.write(request)
    answer = await read_response(reader)
    writer.close()
    assert answer is not None, request[:80]
    return answer


def _requests(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)
    )


def test_the_lean_path_answers_exactly_as_aiohttp_does() -> None:
    """Each body twice: plain (served by the lean path) and with `Content-Encoding: identity`
    (a head the lean path hands to aiohttp, whose handler accepts identity): the same status,
    headers (but Date) and body bytes, and both counted by status."""
    with ThreadServer(config(), model=load_model()) as srv:

        async def scenario() -> tuple[dict[str, tuple[object, object]], int, str]:
            pairs, lean_seen = {}, 0
            for name, body in LEAN_BODIES.items():
                reader, writer = await connect(srv.url)
                writer.write(_requests(body))
                lean = await read_response(reader)
                lean_seen += len(srv.server.lean_connections)  # this one, still open
                writer.close()
                pairs[name] = (lean, await _exchange(srv.url, _requests(body, b"Content-Encoding: identity\r\n")))
            reader, writer = await connect(srv.url)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            metrics = await read_response(reader)
            writer.close()
            assert metrics is not None
            return pairs, lean_seen, metrics[2].decode()

        pairs, lean_seen, text = srv.call(scenario())
    assert lean_seen == len(LEAN_BODIES), "every plain request was served by the lean path"
    statuses = {}
    for name, (lean, slow) in pairs.items():
        (status, headers, body), (slow_status, slow_headers, slow_body) = lean, slow  # type: ignore[misc]
        assert "date" in headers and "date" in slow_headers, name
        del headers["date"], slow_headers["date"]
        slow_headers.pop("server")  # aiohttp names itself; the lean path does not
        assert (status, headers, body) == (slow_status, slow_headers, slow_body), name
        statuses[name] = status
    assert statuses == {
        "ok": 200, "two-rows": 200, "bad-json": 400, "bool": 400, "short-row": 400, "deep": 400,
        "utf16": 200, "past-float32": 400, "outputs-overflow": 422,
    }  # fmt: skip
    assert sample(text, REQUESTS_TOTAL, status="200") == 6 and sample(text, REQUESTS_TOTAL, status="422") == 2
    assert sample(text, REQUESTS_TOTAL, status="400") == 10


def test_the_lean_path_serves_pipelined_and_trickled_requests_then_hands_over() -> None:
    """Two requests in one write are answered in order; a third, sent a byte at a time, counts
    as receiving until its body is whole; then a GET on the same connection is aiohttp's."""
    with ThreadServer(config(), model=load_model()) as srv:

        async def scenario() -> tuple[list[object], list[float | None], bool]:
            reader, writer = await connect(srv.url)
            writer.write(_requests(LEAN_BODIES["ok"]) + _requests(LEAN_BODIES["two-rows"]))
            answers: list[object] = [await read_response(reader), await read_response(reader)]
            receiving = []
            trickled = _requests(LEAN_BODIES["ok"])
            for i in range(len(trickled)):
                writer.write(trickled[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)
                if i == len(trickled) - 5:
                    receiving.append(srv.server.metrics.receiving._value.get())
            answers.append(await read_response(reader))
            receiving.append(srv.server.metrics.receiving._value.get())
            lean_before = len(srv.server.lean_connections)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            answers.append(await read_response(reader))
            handed_over = lean_before == 1 and not srv.server.lean_connections
            writer.close()
            return answers, receiving, handed_over

        answers, receiving, handed_over = srv.call(scenario())
    outputs = [json.loads(a[2])["outputs"] for a in answers[:3]]  # type: ignore[index]
    assert [len(o) for o in outputs] == [1, 2, 1] and outputs[0] == outputs[2], outputs
    assert receiving == [1.0, 0.0]
    assert answers[3][:1] == (200,) and json.loads(answers[3][2]) == {"status": "ok"}  # type: ignore[index]
    assert handed_over


def test_the_drain_waits_for_lean_connections_and_answers_them_503_close() -> None:
    """A request in flight on a lean connection when the drain starts is answered 200 with
    `Connection: close`; an idle lean keep-alive connection keeps the drain waiting until its
    next request, which aiohttp answers 503 + close; then the drain finishes."""
    gated = GatedModel(load_model())
    with ThreadServer(config(term_grace_s=0, keepalive_drain_s=WAIT_S), model=gated) as srv:

        async def scenario() -> tuple[object, ...]:
            busy_reader, busy_writer = await connect(srv.url)
            idle_reader, idle_writer = await connect(srv.url)
            gated.release()
            idle_writer.write(_requests(LEAN_BODIES["ok"]))
            first = await read_response(idle_reader)  # idle from now on, still lean
            gated.gate.clear()
            busy_writer.write(_requests(LEAN_BODIES["ok"]))
            await wait_until(_async(lambda: srv.server.in_flight == 1), "the busy request in flight")
            lean_open = len(srv.server.lean_connections)
            drained = asyncio.ensure_future(srv.server.drain())
            await asyncio.sleep(LISTENER_QUIET_S)
            gated.release()
            busy = await read_response(busy_reader)
            busy_closed = await closed_by_server(busy_reader)
            await asyncio.sleep(4 * LISTENER_QUIET_S)
            done_while_connected = drained.done()
            idle_writer.write(_requests(LEAN_BODIES["ok"]))
            refused = await read_response(idle_reader)
            idle_closed = await closed_by_server(idle_reader)
            return first, lean_open, busy, busy_closed, done_while_connected, refused, idle_closed, await drained

        first, lean_open, busy, busy_closed, done_early, refused, idle_closed, drained = srv.call(scenario())
    assert first is not None and first[0] == 200 and lean_open == 2  # type: ignore[index]
    assert busy is not None and busy[0] == 200 and busy[1]["connection"] == "close" and busy_closed  # type: ignore[index]
    assert not done_early, "the drain finished while a lean keep-alive connection was still open"
    assert refused is not None and refused[0] == 503 and refused[1]["connection"] == "close", refused  # type: ignore[index]
    assert b"shutting down" in refused[2] and idle_closed  # type: ignore[index]
    assert drained is True


def _async(check):  # type: ignore[no-untyped-def]
    async def wrapped() -> bool:
        return bool(check())

    return wrapped


def test_an_idle_lean_connection_is_closed_after_the_keep_alive_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """As aiohttp's RequestHandler closes a connection idle for its keepalive_timeout (3630 s),
    the lean path closes one idle for KEEPALIVE_TIMEOUT_S (shortened here), and no sooner."""
    monkeypatch.setattr(fast, "KEEPALIVE_TIMEOUT_S", 0.5)
    with ThreadServer(config(), model=load_model()) as srv:

        async def scenario() -> tuple[object, bool, bool]:
            reader, writer = await connect(srv.url)
            writer.write(_requests(LEAN_BODIES["ok"]))
            answer = await read_response(reader)
            await asyncio.sleep(0.1)
            open_before = len(srv.server.lean_connections) == 1
            closed = await closed_by_server(reader)
            writer.close()
            return answer, open_before, closed

        answer, open_before, closed = srv.call(scenario())
    assert answer is not None and answer[0] == 200  # type: ignore[index]
    assert open_before and closed


def test_a_client_that_does_not_read_its_answers_is_not_buffered_without_bound() -> None:
    """300 pipelined requests of 512 rows (answers of 40 kB each: 12 MB, past what the kernel's
    socket buffers take) from a client that reads nothing for a while: the lean path stops
    taking requests once the transport's write buffer is full (as aiohttp waits on its drain),
    so the server holds a bounded amount; once the client reads, every one is answered."""
    count = 300
    request = _requests(json.dumps({"inputs": [ROW] * 512}).encode())
    with ThreadServer(config(), model=load_model()) as srv:

        async def scenario() -> tuple[bool, int, int, list[int]]:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(host_port(srv.url))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(request * count)
            await asyncio.sleep(1.0)
            (conn,) = srv.server.lean_connections
            blocked = conn._blocked
            buffered = conn._transport.get_write_buffer_size()  # type: ignore[union-attr]
            answered = srv.server.metrics._by_status[200]._value.get()
            statuses = [(await read_response(reader))[0] for _ in range(count)]  # type: ignore[index]
            writer.close()
            return blocked, buffered, int(answered), statuses

        blocked, buffered, answered, statuses = srv.call(scenario())
    assert buffered < 1 << 20 and answered < count, (buffered, answered)  # 64 KiB + one answer
    assert blocked, "the connection stopped taking requests while its answers were not read"
    assert statuses == [200] * count
