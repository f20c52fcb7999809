"""Dynamic micro-batching: many small requests, few model calls.

Requests wait in a bounded queue (`submit` refuses when it is full, never grows
it). One batcher task takes the first waiting request and every other one
already waiting, up to `max_batch_size` rows. If the batch is not full yet, it
waits for more (at most `max_wait_ms` after taking the first) only while the
batch can still fill in that time at the recent arrival rate; otherwise it
dispatches at once: waiting would add latency without filling the batch. (At a
low rate a request is thus served at once, as without batching; under load the
queue grows while a batch runs, so the next batch is large without any wait.)

It runs the model on the whole batch in a worker thread so that the event loop
keeps accepting and answering requests meanwhile, except when the model's calls
are measured to be tiny (the fastest of INLINE_AFTER_CALLS calls in the thread
under INLINE_MAX_S, without EXTRA_BATCH_LATENCY_MS): then the hand-off to the
thread and back would cost more than the call, which runs on the event loop
instead; it goes back to the thread (and measures again) as soon as the moving
average of the inline calls passes INLINE_MAX_S. (The fastest, not the average,
of the calls in the thread: their times include waiting for the GIL held by the
event loop, which is what running inline saves.) Each request's future gets its
own rows of the output.

Batch sizes count input rows (the model's batch dimension), not requests. A
request is never split: one that would overflow the batch being filled starts
the next batch, and one larger than `max_batch_size` on its own runs alone
(the request body limit bounds it).

Only one batch runs at a time: while it runs, the queue fills, so the next batch
is larger exactly when the load is higher.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from workloads.server.metrics import Metrics

log = logging.getLogger(__name__)

# A model call measured under this (the fastest of the first INLINE_AFTER_CALLS in the thread,
# then the moving average of the inline ones) runs on the event loop:
# the hop to the worker thread and back (a few hundred microseconds under load) would cost
# more than the call. Blocking the loop this long delays other requests by no more than that.
INLINE_MAX_S = 0.0005
# Calls made in the worker thread before any runs inline: the cost is measured first.
INLINE_AFTER_CALLS = 16
# Weight of the newest sample in the moving averages (call cost, arrival gap).
EWMA_WEIGHT = 0.1

# Runs one batch (float32, `[rows, input_size]`) -> `[rows, output_size]`. Called in a worker thread.
PredictFn = Callable[[np.ndarray], np.ndarray]


class QueueFullError(Exception):
    """The queue holds `max_queue` requests already."""


class BatcherStoppedError(Exception):
    """The batcher stopped before this request was answered (a drain that timed out)."""


@dataclass
class BatchResult:
    outputs: np.ndarray  # this request's rows only
    batch_size: int  # rows in the model call that served it


@dataclass
class _Pending:
    inputs: np.ndarray
    future: asyncio.Future[BatchResult]
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = int(self.inputs.shape[0])


class MicroBatcher:
    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        metrics: Metrics,
        extra_latency_s: float = 0.0,
    ) -> None:
        self._predict = predict
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._extra_latency_s = extra_latency_s
        self._metrics = metrics
        # The waiting requests, and the future the batcher task sleeps on while there are none
        # (a deque and one future, not an asyncio.Queue: its timed get() needs wait_for, a task
        # per wait; profiled at 7 % of the loop's thread at saturation).
        self._max_queue = max_queue
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        # A request taken from the queue that did not fit the last batch: first of the next.
        self._carry: _Pending | None = None
        # One worker: one batch at a time on the device.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task: asyncio.Task[None] | None = None
        self._running: list[_Pending] = []
        self._stopped = False
        # Moving average of the seconds between arrivals, per input row.
        self._last_arrival = 0.0
        self._gap_per_row = float("inf")
        # Model calls: the fastest in the thread (and how many), the moving average inline.
        self._inline = False
        self._fastest_s = float("inf")
        self._measured = 0
        self._inline_s = 0.0

    @property
    def waiting(self) -> int:
        """Requests accepted and not yet in a running batch."""
        return len(self._queue) + (self._carry is not None)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop batching; requests not answered yet get BatcherStoppedError (callers drain first).

        Returns without waiting for a model call still running in the worker thread, so
        that their callers can answer at once; `join()` waits for that call.
        """
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        leftovers = [*self._running, *([self._carry] if self._carry else [])]
        self._running, self._carry = [], None
        leftovers += self._queue
        self._queue.clear()
        for item in leftovers:
            if not item.future.done():
                item.future.set_exception(BatcherStoppedError("server stopped before this request was answered"))
        self._update_depth()

    async def join(self) -> None:
        """After `stop()`: wait for the model call still running, without blocking the event loop."""
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def submit(self, inputs: np.ndarray) -> BatchResult:
        """Queue `inputs` (`[rows, input_size]` float32) and wait for its outputs.

        Raises QueueFullError at once when the queue is full, BatcherStoppedError once stopped.
        """
        return await self.submit_nowait(inputs)

    def submit_nowait(self, inputs: np.ndarray) -> asyncio.Future[BatchResult]:
        """`submit` without the coroutine: the future of its outputs (what the lean HTTP path
        uses, from a protocol callback, with no task per request). Raises as `submit` does."""
        if self._stopped:
            raise BatcherStoppedError("server stopped before this request was answered")
        if len(self._queue) >= self._max_queue:
            raise QueueFullError
        loop = asyncio.get_running_loop()
        item = _Pending(inputs, loop.create_future())
        self._queue.append(item)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        now = loop.time()
        gap = min(now - self._last_arrival, 1.0) / item.rows
        self._last_arrival = now
        previous = self._gap_per_row
        self._gap_per_row = gap if previous == float("inf") else previous + EWMA_WEIGHT * (gap - previous)
        self._update_depth()
        return item.future

    def _update_depth(self) -> None:
        self._metrics.queue_depth.set(self.waiting)

    async def _run(self) -> None:
        while True:
            self._running = await self._collect()
            self._update_depth()
            await self._execute(self._running)
            self._running = []

    async def _collect(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        first, self._carry = self._carry, None
        while first is None:
            first = await self._get(None)
        batch, rows = [first], first.rows
        deadline = loop.time() + self._max_wait_s
        while rows < self._max_batch_size:
            if self._queue:
                item = self._queue.popleft()
            else:
                now = loop.time()
                remaining = deadline - now
                # Wait only while the rows still missing can arrive before the deadline, at the
                # recent rate; a quiet spell since the last arrival counts as the rate falling.
                gap = max(self._gap_per_row, now - self._last_arrival)
                if remaining <= 0 or (self._max_batch_size - rows) * gap > remaining:
                    break
                got = await self._get(min(remaining, 2 * gap))
                if got is None:
                    continue  # nothing within two gaps: look again, with the quiet counted
                item = got
            if rows + item.rows > self._max_batch_size:
                self._carry = item
                break
            batch.append(item)
            rows += item.rows
        return batch

    async def _get(self, timeout: float | None) -> _Pending | None:
        """The first waiting request, waiting for one at most `timeout` seconds (None: for ever)."""
        if not self._queue:
            loop = asyncio.get_running_loop()
            self._wakeup = wakeup = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, _wake, wakeup)
            try:
                await wakeup
            finally:
                self._wakeup = None
                if timer is not None:
                    timer.cancel()
        return self._queue.popleft() if self._queue else None

    async def _execute(self, batch: list[_Pending]) -> None:
        inputs = batch[0].inputs if len(batch) == 1 else np.concatenate([item.inputs for item in batch])
        size = int(inputs.shape[0])
        self._metrics.batch_size.observe(size)
        loop = asyncio.get_running_loop()
        inline = self._inline
        try:
            if inline:
                outputs, took = self._call_model(inputs)
            else:
                outputs, took = await loop.run_in_executor(self._executor, self._call_model, inputs)
        except Exception as exc:
            log.exception("model call failed for a batch of %d rows", size)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self._timed(took, inline)
        start = 0
        for item in batch:
            if not item.future.done():
                item.future.set_result(BatchResult(outputs[start : start + item.rows], size))
            start += item.rows

    @property
    def inline(self) -> bool:
        """Whether model calls run on the event loop now (measured tiny), not in the worker thread."""
        return self._inline

    def _timed(self, took: float, inline: bool) -> None:
        """Choose where the next call runs from how long this one took (on the event loop)."""
        if inline:
            self._inline_s += EWMA_WEIGHT * (took - self._inline_s)
            if self._inline_s >= INLINE_MAX_S:  # slower now: back to the thread, measure again
                self._inline, self._fastest_s, self._measured = False, float("inf"), 0
            return
        self._fastest_s = min(self._fastest_s, took)
        self._measured += 1
        if not self._extra_latency_s and self._measured >= INLINE_AFTER_CALLS and self._fastest_s < INLINE_MAX_S:
            self._inline, self._inline_s = True, self._fastest_s

    def _call_model(self, inputs: np.ndarray) -> tuple[np.ndarray, float]:
        """One model call and its wall time."""
        started = time.perf_counter()
        if self._extra_latency_s:
            time.sleep(self._extra_latency_s)
        outputs = self._predict(inputs)
        return outputs, time.perf_counter() - started


def _wake(wakeup: asyncio.Future[None]) -> None:
    if not wakeup.done():
        wakeup.set_result(None)
