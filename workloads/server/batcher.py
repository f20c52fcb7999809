"""Dynamic micro-batching: many small requests, few model calls.

Requests wait in a bounded queue (`submit` refuses when it is full, never grows
it). One batcher task takes the first waiting request, then keeps taking more
until the batch holds `max_batch_size` rows or `max_wait_ms` have passed since
it took the first, whichever comes first, and runs the model on the whole batch
in a worker thread so that the event loop keeps accepting and answering
requests meanwhile. Each request's future gets its own rows of the output.

Batch sizes count input rows (the model's batch dimension), not requests. A
request is never split: one that would overflow the batch being filled starts
the next batch, and one larger than `max_batch_size` on its own runs alone
(the request body limit bounds it).

Only one batch runs at a time: while it runs, the queue fills, so the next batch
is larger exactly when the load is higher.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from workloads.server.metrics import Metrics

log = logging.getLogger(__name__)

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
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        # A request taken from the queue that did not fit the last batch: first of the next.
        self._carry: _Pending | None = None
        # One worker: one batch at a time on the device.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task: asyncio.Task[None] | None = None
        self._running: list[_Pending] = []
        self._stopped = False

    @property
    def waiting(self) -> int:
        """Requests accepted and not yet in a running batch."""
        return self._queue.qsize() + (self._carry is not None)

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
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
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
        if self._stopped:
            raise BatcherStoppedError("server stopped before this request was answered")
        item = _Pending(inputs, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            raise QueueFullError from None
        self._update_depth()
        return await item.future

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
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, rows = [first], first.rows
        deadline = loop.time() + self._max_wait_s
        while rows < self._max_batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    # A timed-out get() leaves the queue untouched: nothing is lost.
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if rows + item.rows > self._max_batch_size:
                self._carry = item
                break
            batch.append(item)
            rows += item.rows
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        inputs = batch[0].inputs if len(batch) == 1 else np.concatenate([item.inputs for item in batch])
        size = int(inputs.shape[0])
        self._metrics.batch_size.observe(size)
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self._call_model, inputs)
        except Exception as exc:
            log.exception("model call failed for a batch of %d rows", size)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        start = 0
        for item in batch:
            if not item.future.done():
                item.future.set_result(BatchResult(outputs[start : start + item.rows], size))
            start += item.rows

    def _call_model(self, inputs: np.ndarray) -> np.ndarray:
        if self._extra_latency_s:
            time.sleep(self._extra_latency_s)
        return self._predict(inputs)
