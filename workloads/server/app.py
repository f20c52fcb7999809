"""HTTP endpoints, request validation, and the server's lifecycle (load -> ready -> drain -> stop).

Endpoints
    POST /v1/predict   {"inputs": [[f, ...], ...]} -> {"outputs": [[...]], "model": name, "batch_size": n}
                       (`batch_size`: rows in the model call that served the request)
    GET  /healthz      200 while the process runs (liveness)
    GET  /readyz       200 when the model is loaded and the server is not draining, else 503
    GET  /metrics      Prometheus exposition (see metrics.py for the names)

Errors are JSON, `{"error": message}`: 400 bad JSON or inputs, 413 body over
MAX_BODY_BYTES, 429 queue full (with Retry-After), 503 model still loading or
server draining, 500 model failure.

Draining (what SIGTERM starts, see __main__.py): readiness turns false at once;
new requests are still served for TERM_GRACE_S, then get 503 (with
`Connection: close`); everything accepted before that runs to completion, bounded
by DRAIN_TIMEOUT_S (what is left after it gets 503); then the listener closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp import web

from workloads.model import Model, load_model
from workloads.server.batcher import BatcherStoppedError, MicroBatcher, QueueFullError
from workloads.server.config import ServerConfig
from workloads.server.metrics import Metrics

log = logging.getLogger(__name__)

PREDICT_PATH = "/v1/predict"
RETRY_AFTER_S = 1
# After the drain, how long closing the listener may wait for handlers still writing responses.
# aiohttp waits up to twice this (for the handler, then again after cancelling its request)
# before it cancels the handler. Kept short on purpose: the drain is what waits for accepted
# work (bounded by DRAIN_TIMEOUT_S); a long close would both hide a drain that does not wait
# and stretch shutdown past the pod's terminationGracePeriodSeconds margin.
CLOSE_TIMEOUT_S = 1.0


class BadRequestError(ValueError):
    """The request body is not a valid prediction request; the message is shown to the client."""


def parse_inputs(body: bytes, input_size: int) -> np.ndarray:
    """Validate a request body and return its inputs as a float32 `[rows, input_size]` array."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequestError('body must be a JSON object with an "inputs" key')
    rows = payload["inputs"]
    if not isinstance(rows, list) or not rows:
        raise BadRequestError(f'"inputs" must be a non-empty list of rows of {input_size} numbers')
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != input_size:
            got = f"{len(row)} items" if isinstance(row, list) else type(row).__name__
            raise BadRequestError(f"inputs[{i}] must be a list of {input_size} numbers (got {got})")
        for j, value in enumerate(row):
            # bool is an int subclass; JSON true/false is not a feature value.
            if type(value) not in (int, float):
                raise BadRequestError(f"inputs[{i}][{j}] must be a number (got {json.dumps(value)})")
    with np.errstate(over="ignore"):  # too large for float32 becomes inf, refused just below
        array = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(array).all():
        raise BadRequestError("inputs must be finite numbers that fit in float32 (no NaN or Infinity)")
    return array


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class InferenceServer:
    """One server: its aiohttp app, its model, its batcher and its metrics."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        model: Model | None = None,
        loader: Callable[[str | None], Model] = load_model,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self.model: Model | None = None
        self._preloaded = model
        self._loader = loader
        self._batcher: MicroBatcher | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._load_error: BaseException | None = None
        # Set by the first moment of a drain: readiness is false from then on, and new
        # prediction requests are taken only until TERM_GRACE_S after it.
        self._drain_started: float | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.app = self._build_app()

    # -- lifecycle -------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        # client_max_size makes aiohttp refuse larger bodies while reading (chunked ones too).
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_post(PREDICT_PATH, self._predict)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> str:
        """Listen, then load the model in a thread (liveness answers meanwhile). Returns the base URL."""
        # access_log=None: one log line per request would dominate the CPU at load.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=CLOSE_TIMEOUT_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        log.info("listening on %s", self.url)
        self._load_task = asyncio.create_task(self._load(), name="model-load")
        return self.url

    async def _load(self) -> None:
        try:
            if self._preloaded is not None:
                model = self._preloaded
            else:
                model = await asyncio.to_thread(self._loader, self.config.model_path or None)
        except Exception as exc:
            self._load_error = exc
            log.exception("model load failed (MODEL_PATH=%r)", self.config.model_path)
            raise
        self.model = model
        self._batcher = MicroBatcher(
            model.predict_array,
            max_batch_size=self.config.max_batch_size,
            max_wait_s=self.config.max_wait_ms / 1000,
            max_queue=self.config.max_queue,
            metrics=self.metrics,
            extra_latency_s=self.config.extra_batch_latency_ms / 1000,
        )
        self._batcher.start()
        log.info(
            "model %s loaded: %s (max_batch_size=%d max_wait_ms=%g max_queue=%d)",
            self.config.display_model_name,
            model,
            self.config.max_batch_size,
            self.config.max_wait_ms,
            self.config.max_queue,
        )

    async def wait_loaded(self) -> None:
        """Return once the model is loaded; raise what the load raised."""
        assert self._load_task is not None, "start() first"
        await asyncio.shield(self._load_task)

    @property
    def ready(self) -> bool:
        return self._batcher is not None and self._drain_started is None

    @property
    def draining(self) -> bool:
        return self._drain_started is not None

    @property
    def accepting(self) -> bool:
        """Whether a new prediction request is taken now (false once the drain's grace is over)."""
        if self._drain_started is None:
            return True
        return time.monotonic() < self._drain_started + self.config.term_grace_s

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def begin_drain(self) -> None:
        """Readiness false now; new requests are taken for TERM_GRACE_S more (none when it is 0)."""
        if self._drain_started is None:
            self._drain_started = time.monotonic()
            log.info("draining: readiness is now false (%d requests in flight)", self._in_flight)

    async def drain(self) -> bool:
        """Stop taking work and wait for what was accepted. True when nothing was left unfinished."""
        self.begin_drain()
        assert self._drain_started is not None
        grace_left = self._drain_started + self.config.term_grace_s - time.monotonic()
        if grace_left > 0:
            log.info("draining: still accepting new requests for %.1fs (TERM_GRACE_S)", grace_left)
            await asyncio.sleep(grace_left)
        log.info("draining: refusing new requests; waiting for %d in flight", self._in_flight)
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.drain_timeout_s)
        except TimeoutError:
            log.error(
                "draining: %d requests still in flight after DRAIN_TIMEOUT_S=%gs",
                self._in_flight,
                self.config.drain_timeout_s,
            )
            return False
        log.info("draining: done, every accepted request was answered")
        return True

    async def close(self) -> None:
        """Stop the batcher, then close the listener (waiting briefly for responses being written).

        In this order, requests still unanswered (only after a drain that timed out) get a
        503 they can retry elsewhere, instead of a connection the listener drops.
        """
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            await batcher.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if batcher is not None:
            await batcher.join()

    # -- handlers -------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.json_response({"status": "ready"})
        if self.draining:
            status = "draining"
        elif self._load_error is not None:
            status = "model load failed"
        else:
            status = "loading model"
        return web.json_response({"status": status}, status=503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _predict(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await self._answer(request)
        self.metrics.requests.labels(str(response.status)).inc()
        if response.status == 200:
            self.metrics.duration.observe(time.perf_counter() - started)
        if self.draining:
            # Keep-alive clients should reconnect, and so reach a pod that is not leaving.
            response.force_close()
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        if not self.accepting:
            return error(503, "server is shutting down; retry on another replica", {"Connection": "close"})
        batcher, model = self._batcher, self.model
        if batcher is None or model is None:
            return error(503, "model is not loaded yet", {"Retry-After": str(RETRY_AFTER_S)})
        # Accepted: from here until the answer, the request counts as in flight, and a
        # drain waits for it (even while its body is still being read).
        self._in_flight += 1
        self.metrics.in_flight.inc()
        self._idle.clear()
        try:
            return await self._accepted(request, batcher, model)
        finally:
            self._in_flight -= 1
            self.metrics.in_flight.dec()
            if self._in_flight == 0:
                self._idle.set()

    async def _accepted(self, request: web.Request, batcher: MicroBatcher, model: Model) -> web.Response:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return error(413, f"request body is {request.content_length} bytes; the limit is {limit}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"request body is larger than the limit of {limit} bytes")
        try:
            inputs = parse_inputs(body, model.input_size)
        except BadRequestError as exc:
            return error(400, str(exc))
        try:
            result = await batcher.submit(inputs)
        except QueueFullError:
            return error(
                429,
                f"queue is full ({self.config.max_queue} requests waiting); retry later",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        except BatcherStoppedError as exc:  # the drain timed out
            return error(503, f"{exc}; retry on another replica", {"Connection": "close"})
        except Exception:
            log.exception("prediction failed")
            return error(500, "model failed on this batch")
        payload: dict[str, Any] = {
            "outputs": result.outputs.tolist(),
            "model": self.config.display_model_name,
            "batch_size": result.batch_size,
        }
        return web.json_response(payload)
