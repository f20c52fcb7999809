"""What the speed work changed, and that it changed nothing a client can tell apart: the fast
body parser accepts and refuses exactly what the strict one does, the batcher dispatches at once
when nothing else is waiting (or a batch is full) and runs tiny model calls on the event loop,
and the server runs on uvloop."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

from workloads.server import batcher as batcher_module
from workloads.server.__main__ import main as server_main
from workloads.server.app import BadRequestError, _parse_fast, _parse_strict, parse_inputs
from workloads.server.batcher import INLINE_AFTER_CALLS, MicroBatcher
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
