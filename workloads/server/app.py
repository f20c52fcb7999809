"""HTTP endpoints, request validation, and the server's lifecycle (load -> ready -> drain -> stop).

Endpoints
    POST /v1/predict   {"inputs": [[f, ...], ...]} -> {"outputs": [[...]], "model": name, "batch_size": n}
                       (`batch_size`: rows in the model call that served the request)
    GET  /healthz      200 while the process runs (liveness)
    GET  /readyz       200 when the model is loaded and the server is not draining, else 503
    GET  /metrics      Prometheus exposition (see metrics.py for the names)

Errors are JSON, `{"error": message}`: 400 bad JSON or inputs (nesting too deep,
an integer too long, a value past float32 included), 408 body not received within
BODY_TIMEOUT_S (then the connection closes), 413 body over MAX_BODY_BYTES, 415 a
compressed body (any Content-Encoding but identity), 422 inputs whose outputs are
not finite (the model overflows float32 on them), 429 queue full (with Retry-After),
499 (counted, never sent: the client closed the connection mid-body), 503 model
still loading or server draining,
500 model failure (or a bug: answered as JSON, never a bare traceback). Bodies
are strict JSON: never NaN or Infinity. Every prediction response (any POST, and
anything on PREDICT_PATH, 405 included) is counted in inference_requests_total by
status, whoever produced it (handler, framework, or an unexpected error).

Plain `POST /v1/predict` requests are served by the lean path in fast.py, with the same
answers, counting, timeouts and drain; everything else by the aiohttp app built here.

Slow clients (see also connections.py): a request's headers must arrive within
HEADER_TIMEOUT_S, its body within BODY_TIMEOUT_S after them. While its body arrives a
request counts in inference_requests_receiving, and only once it is whole in
inference_requests_in_flight (the autoscaling signal, which a stalled upload must not
raise). Compressed bodies are refused before a byte is inflated: aiohttp's automatic
decompression is off (it would inflate on the event loop, as the bytes arrive, before any
size check: three 1 MiB gzip bodies of 1 GiB each stalled /healthz for seconds); inputs are
at most MAX_BODY_BYTES of JSON or tensors, not worth the CPU the model needs.

Draining (what SIGTERM starts, see __main__.py): readiness turns false at once;
new requests are still served for TERM_GRACE_S, then get 503 (with
`Connection: close`, after their body is read, so that closing never resets a
client still sending); everything accepted before that runs to completion, bounded
by DRAIN_TIMEOUT_S (what is left after it gets 503). Every response from the
start of the drain carries `Connection: close`. Then, within KEEPALIVE_DRAIN_S,
the listener stays open until no connection has been open or used for
LISTENER_QUIET_S, and closes (taking its backlog first: a later connection is
refused, never accepted and reset); a keep-alive connection still open may send
one more request (answered 503 + close) before the idle ones are closed:
connections are closed between requests, not under them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import Gauge

from workloads.model import Model, load_model
from workloads.server.batcher import MicroBatcher
from workloads.server.bodies import RETRY_AFTER_S, BadRequestError, batch_refusal, parse_inputs
from workloads.server.config import ServerConfig
from workloads.server.connections import HeaderDeadline, listen
from workloads.server.fast import PredictConnection
from workloads.server.metrics import Metrics

log = logging.getLogger(__name__)

PREDICT_PATH = "/v1/predict"
# After the drain, how long closing the listener may wait for handlers still writing responses.
# aiohttp waits up to twice this (for the handler, then again after cancelling its request)
# before it cancels the handler. Kept short on purpose: the drain is what waits for accepted
# work (bounded by DRAIN_TIMEOUT_S); a long close would both hide a drain that does not wait
# and stretch shutdown past the pod's terminationGracePeriodSeconds margin.
CLOSE_TIMEOUT_S = 1.0
# How often the drain looks whether the keep-alive connections have all closed.
CONNECTION_POLL_S = 0.01
# After the drain, how long no connection may be open or used before the listener closes.
LISTENER_QUIET_S = 0.25

# Strict JSON out: a NaN that slipped past the checks fails loudly here (a 500, counted)
# instead of reaching a client whose parser rejects it.
dumps = functools.partial(json.dumps, allow_nan=False)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers, dumps=dumps)


def is_prediction(request: web.Request) -> bool:
    """Whether a request counts in inference_requests_total: every POST (predictions are POSTs,
    on any route) and anything on PREDICT_PATH. Probes and scrapes (GETs) are not predictions."""
    return request.method == "POST" or request.path == PREDICT_PATH


async def run_batch(batcher: MicroBatcher, inputs: Any, max_queue: int) -> Any:
    """The batch result for `inputs`, or the error response that answers the request instead
    (the same for /v1/predict and the Open Inference Protocol's infer)."""
    try:
        result = await batcher.submit(inputs)
    except Exception as exc:
        refused = batch_refusal(exc, max_queue)
    else:
        refused = batch_refusal(None, max_queue, result)
    return result if refused is None else error(*refused)


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
        # Requests receiving their body or in flight: a drain waits for both.
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # When a request last started or ended (the drain closes the listener once it is quiet).
        self._last_activity = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._accepting: asyncio.Server | None = None  # accepts on _listener
        self._listener: socket.socket | None = None
        self.url = ""
        self.model_name = config.display_model_name  # a property that builds a Path: once, not per request
        # Connections served by the lean /v1/predict path (fast.py); aiohttp's are in its server's list.
        self.lean_connections: set[PredictConnection] = set()
        self.app = self._build_app()

    # -- lifecycle -------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        # client_max_size makes aiohttp refuse larger bodies while reading (chunked ones too).
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._every_response])
        app.router.add_post(PREDICT_PATH, self._predict)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        from workloads.server import oip  # imported here: oip builds on this module

        oip.add_routes(app, self)  # the Open Inference Protocol (/v2/...) beside PREDICT_PATH
        return app

    async def start(self) -> str:
        """Listen, then load the model in a thread (liveness answers meanwhile). Returns the base URL."""
        # access_log=None: one log line per request would dominate the CPU at load.
        # auto_decompress=False: compressed bodies are refused (415), never inflated.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=CLOSE_TIMEOUT_S, auto_decompress=False)
        await self._runner.setup()
        # Our own listening socket and accept loop (not aiohttp's sites), so that the drain can
        # take the connections the kernel already accepted before it closes the listener, the
        # backlog is ours, and every connection gets the header deadline.
        self._listener = listen(self.config.host, self.config.port, self.config.backlog)
        self._accepting = await asyncio.get_running_loop().create_server(
            self._protocol_factory(), sock=self._listener, backlog=self.config.backlog
        )
        host, port = self._listener.getsockname()[:2]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        log.info("listening on %s", self.url)
        self._load_task = asyncio.create_task(self._load(), name="model-load")
        return self.url

    def _protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        assert self._runner is not None and self._runner.server is not None
        aiohttp_protocol = self._runner.server
        return lambda: PredictConnection(self, aiohttp_protocol)

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

    @property
    def batcher(self) -> MicroBatcher | None:
        """The batcher, once the model is loaded (until close())."""
        return self._batcher

    def touch(self) -> None:
        """A request started or ended now (the drain closes the listener once it is quiet)."""
        self._last_activity = time.monotonic()

    def begin_drain(self) -> None:
        """Readiness false now; new requests are taken for TERM_GRACE_S more (none when it is 0)."""
        if self._drain_started is None:
            self._drain_started = time.monotonic()
            log.info("draining: readiness is now false (%d requests receiving or in flight)", self._active)

    async def drain(self) -> bool:
        """Stop taking work and wait for what was accepted. True when nothing was left unfinished."""
        self.begin_drain()
        assert self._drain_started is not None
        grace_left = self._drain_started + self.config.term_grace_s - time.monotonic()
        if grace_left > 0:
            log.info("draining: still accepting new requests for %.1fs (TERM_GRACE_S)", grace_left)
            await asyncio.sleep(grace_left)
        log.info("draining: refusing new requests; waiting for %d receiving or in flight", self._active)
        deadline = time.monotonic() + self.config.drain_timeout_s
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.drain_timeout_s)
        except TimeoutError:
            log.error(
                "draining: %d requests still receiving or in flight after DRAIN_TIMEOUT_S=%gs",
                self._active,
                self.config.drain_timeout_s,
            )
            return False
        log.info("draining: done, every accepted request was answered")
        await self._close_between_requests(min(self.config.keepalive_drain_s, deadline - time.monotonic()))
        return True

    async def _close_between_requests(self, timeout: float) -> None:
        """Close the listener and the keep-alive connections between requests, never under one.

        A connection closed while idle can meet a request its client is sending at that very
        moment (a reset: the request is lost); one closed after a response that said
        `Connection: close` cannot. So the listener stays open, and every request still gets
        its 503 + close, until no connection is open and none was used for LISTENER_QUIET_S
        (clients that reconnected after a `Connection: close` answer have come back by then;
        in a cluster the pod has left the endpoints, and nobody new comes). Then it closes,
        and connections idle for all of `timeout` are left to close(), which closes them.
        """
        if self._runner is None or self._runner.server is None:
            return
        server = self._runner.server
        end = time.monotonic() + max(timeout, 0.0)

        def quiet() -> bool:
            return (
                not server.connections
                and not self.lean_connections
                and time.monotonic() - self._last_activity >= LISTENER_QUIET_S
            )

        while not quiet() and time.monotonic() < end:
            await asyncio.sleep(CONNECTION_POLL_S)
        await self._stop_listening()
        # Sleep before looking: a connection accepted just before the listener closed joins
        # `server.connections` a few loop iterations later.
        await asyncio.sleep(CONNECTION_POLL_S)
        while (server.connections or self.lean_connections) and time.monotonic() < end:
            await asyncio.sleep(CONNECTION_POLL_S)
        if server.connections or self.lean_connections:
            open_now = len(server.connections) + len(self.lean_connections)
            log.info("draining: closing %d idle keep-alive connections", open_now)

    async def _stop_listening(self) -> None:
        """Close the listener without resetting a connection the kernel already completed.

        Connections in the listen backlog would be reset by the close (their clients may have
        sent a request already), so they are accepted first, in the same synchronous step as
        the close: nothing can join the backlog in between. They are then served like the
        others (503 + close). Connections attempted after this are refused: nothing was sent.
        """
        if self._accepting is None or self._listener is None or self._runner is None:
            return
        backlog: list[socket.socket] = []
        while True:
            try:
                backlog.append(self._listener.accept()[0])
            except OSError:  # BlockingIOError: the backlog is empty
                break
        # No await before the close: nothing runs in between.
        self._accepting.close()
        self._accepting = None
        loop = asyncio.get_running_loop()
        for conn in backlog:
            await loop.connect_accepted_socket(self._protocol_factory(), conn)
        log.info("draining: listener closed (%d connections taken from its backlog)", len(backlog))

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
        if self._accepting is not None:
            self._accepting.close()
            self._accepting = None
        for conn in list(self.lean_connections):
            conn.close_idle()
        await asyncio.sleep(0)  # lean requests the stopped batcher failed: their 503s are written
        for conn in list(self.lean_connections):
            conn.abort()
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

    @web.middleware
    async def _every_response(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Count every prediction response by status, turn unexpected errors into a JSON 500,
        and close keep-alive connections after each response once draining."""
        started = time.perf_counter()
        self._last_activity = time.monotonic()
        connection = request.transport.get_protocol() if request.transport is not None else None
        if isinstance(connection, HeaderDeadline):
            connection.request_started()  # its headers are in: the header deadline is met
        raised: web.HTTPException | None = None
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # the framework's own answers (404, 405, 413 ...)
            response = raised = exc
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            response = error(500, "internal server error")
        finally:
            if isinstance(connection, HeaderDeadline):
                connection.request_finished()
        if is_prediction(request):
            self.metrics.count(response.status)
            if response.status == 200:
                self.metrics.duration.observe(time.perf_counter() - started)
        if self.draining:
            # Keep-alive clients should reconnect, and so reach a pod that is not leaving.
            response.force_close()
        self._last_activity = time.monotonic()
        if raised is not None:
            raise raised
        return response

    async def _predict(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting:
            # Read the body first: closing a connection with unread bytes in it sends a reset,
            # which can reach the client before this 503 does. (aiohttp's own lingering read
            # does the same, but not once the runner has begun to shut down.)
            await self.discard_body(request)
            return error(503, "server is shutting down; retry on another replica", {"Connection": "close"})
        batcher, model = self._batcher, self.model
        if batcher is None or model is None:
            return error(503, "model is not loaded yet", {"Retry-After": str(RETRY_AFTER_S)})
        body = await self.receive(request)
        if isinstance(body, web.StreamResponse):
            return body
        async with self.admitted():
            return await self._accepted(body, batcher, model)

    async def receive(self, request: web.Request) -> bytes | web.StreamResponse:
        """The whole body of a prediction request, or the refusal to answer instead: 415 when it
        is compressed (before reading it), 413 past MAX_BODY_BYTES, 408 (then the connection
        closes) when it has not all arrived within BODY_TIMEOUT_S. Meanwhile the request counts
        as receiving (not in flight), and a drain waits for it. For every prediction endpoint."""
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            return error(
                415,
                f"Content-Encoding {encoding!r} is not accepted: send the body uncompressed",
                {"Accept-Encoding": "identity"},  # RFC 9110 15.5.16: the codings that would do
            )
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return error(413, f"request body is {request.content_length} bytes; the limit is {limit}")
        async with self._counted(self.metrics.receiving, in_flight=False):
            try:
                async with asyncio.timeout(self.config.body_timeout_s):
                    return await request.read()
            except web.HTTPRequestEntityTooLarge:
                return error(413, f"request body is larger than the limit of {limit} bytes")
            except TimeoutError:
                return await self._timed_out(request)
            except ConnectionError:
                # The client closed mid-body: nobody to answer, and no server error (a 500 would
                # fire the error-rate alert). Counted as 499, nginx's "client closed request".
                log.info("%s %s: client closed the connection before its body was whole", request.method, request.path)
                return error(499, "client closed the connection before sending its whole body")

    async def _timed_out(self, request: web.Request) -> web.StreamResponse:
        """408, written now, then the connection closed: aiohttp would otherwise wait for the
        rest of the body (lingering) for seconds more, holding the socket for a client that stalls."""
        log.info("%s %s: body not received within BODY_TIMEOUT_S", request.method, request.path)
        response = error(408, f"request body not received within {self.config.body_timeout_s:g}s (BODY_TIMEOUT_S)")
        response.force_close()
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            await response.write_eof()
        request.protocol.force_close()  # the transport sends what was written, then closes
        return response

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """An accepted request, its body whole: inside, it counts as in flight (the scale
        signal), and a drain waits for it. For every prediction endpoint."""
        async with self._counted(self.metrics.in_flight, in_flight=True):
            yield

    @contextlib.asynccontextmanager
    async def _counted(self, gauge: Gauge, *, in_flight: bool) -> AsyncIterator[None]:
        self.enter(gauge, in_flight=in_flight)
        try:
            yield
        finally:
            self.leave(gauge, in_flight=in_flight)

    def enter(self, gauge: Gauge, *, in_flight: bool) -> None:
        """A request starts receiving (gauge: receiving) or is in flight: a drain waits for it."""
        self._active += 1
        self._in_flight += in_flight
        gauge.inc()
        self._idle.clear()

    def leave(self, gauge: Gauge, *, in_flight: bool) -> None:
        self._active -= 1
        self._in_flight -= in_flight
        gauge.dec()
        if self._active == 0:
            self._idle.set()

    async def discard_body(self, request: web.Request) -> None:
        """Read and drop a body (bounded by BODY_TIMEOUT_S) before refusing its request."""
        # What is left unread past the body limit or the timeout is the client's to lose.
        with contextlib.suppress(web.HTTPRequestEntityTooLarge, TimeoutError):
            async with asyncio.timeout(self.config.body_timeout_s):
                await request.read()

    async def _accepted(self, body: bytes, batcher: MicroBatcher, model: Model) -> web.Response:
        try:
            inputs = parse_inputs(body, model.input_size)
        except BadRequestError as exc:
            return error(400, str(exc))
        result = await run_batch(batcher, inputs, self.config.max_queue)
        if isinstance(result, web.Response):
            return result
        payload: dict[str, Any] = {
            "outputs": result.outputs.tolist(),
            "model": self.model_name,
            "batch_size": result.batch_size,
        }
        # orjson: what json.dumps(allow_nan=False) writes, several times faster (outputs are
        # finite here, checked above; orjson would write a NaN as null, never as NaN).
        return web.Response(body=orjson.dumps(payload), content_type="application/json", charset="utf-8")
