"""The lean path for the one request that carries the load: `POST /v1/predict` in its plainest form.

Profiled at saturation on one core (py-spy, the server as of 4c961b6), aiohttp's request and
response machinery took about a third of the event loop's thread and the loop itself another
third; the JSON and the model a tenth. So each connection starts on `PredictConnection`, an
`asyncio.Protocol` that recognises, byte for byte, a request head of the form

    POST /v1/predict HTTP/1.1\\r\\n  (header lines: token ":" printable value)  \\r\\n\\r\\n

with exactly one `Content-Length` (digits, at most MAX_BODY_BYTES), no `Transfer-Encoding`,
`Content-Encoding`, `Expect` or `Upgrade`, at most `Connection: close` or `keep-alive`, and
whole within MAX_HEAD_BYTES, while the model is loaded and the server is not draining. Such a
request is answered here: its body read (or 408 past BODY_TIMEOUT_S, then closed; 499 counted
when the client leaves mid-body), parsed by the same functions as the aiohttp handler
(bodies.py: the same 400s), batched through `MicroBatcher.submit_nowait` with a callback (no
task per request), answered with one write of pre-built header bytes plus the body, and counted
by status and timed as the middleware does. The header and body deadlines use timers only when
a head or body does not arrive whole in one read (the common case needs none).

Anything else (another path or method, HTTP/1.0, chunked or compressed bodies, a body over the
limit, odd or oversized headers, OIP, probes, metrics, a draining or loading server) hands the
connection to aiohttp for good, from that request's first byte: aiohttp then parses it exactly
as it would have, and answers it with every behaviour app.py documents (413, 415, 503 + close,
the drain). A head that is not recognised is thus never answered here, so it cannot be answered
differently from before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING

import orjson
from aiohttp.tcp_helpers import tcp_keepalive

from workloads.server.batcher import BatchResult
from workloads.server.bodies import BadRequestError, batch_refusal, parse_inputs
from workloads.server.connections import HeaderDeadline

if TYPE_CHECKING:
    from workloads.server.app import InferenceServer

log = logging.getLogger(__name__)

# An idle keep-alive connection is closed after this, as aiohttp's RequestHandler does (its
# keepalive_timeout default); one timer per connection, re-armed only when it fires.
KEEPALIVE_TIMEOUT_S = 3630.0
# aiohttp's own limit on a header line (max_field_size, max_line_size): a longer head goes to it.
MAX_HEAD_BYTES = 8190
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# The head as a whole: request line, then field lines of a token, a colon and printable ASCII
# (no obs-fold, no control bytes but tab, no obs-text). Linear: no nested repetition.
_HEAD = re.compile(rb"POST /v1/predict HTTP/1\.1\r\n(?:" + _TOKEN + rb":[\t\x20-\x7e]*\r\n)*\r\n")
_FIELD = re.compile(rb"(" + _TOKEN + rb"):[\t ]*([\t\x20-\x7e]*?)[\t ]*\r\n")
_PASS = frozenset((b"content-length", b"connection", b"host"))
_REFUSE = frozenset((b"transfer-encoding", b"content-encoding", b"expect", b"upgrade"))
_DIGITS = re.compile(rb"[0-9]{1,18}")
_REASONS = {200: "OK", 400: "Bad Request", 408: "Request Timeout", 422: "Unprocessable Entity"}
_REASONS |= {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
# Strict JSON out, as app.dumps (the errors are worded and spaced exactly as aiohttp's path writes them).
_dumps_error = json.JSONEncoder(allow_nan=False).encode


def recognise(head: bytes) -> tuple[int, bool] | None:
    """(Content-Length, close after the answer) of a head this path serves, else None (aiohttp's)."""
    if not _HEAD.fullmatch(head):
        return None
    length: int | None = None
    close = False
    for name, value in _FIELD.findall(head, head.index(b"\r\n") + 2):
        name = name.lower()
        if name in _PASS:
            if name == b"content-length":
                if length is not None or not _DIGITS.fullmatch(value):
                    return None
                length = int(value)
            elif name == b"connection":
                token = value.lower()
                if token == b"close":
                    close = True
                elif token != b"keep-alive":
                    return None
        elif name in _REFUSE:
            return None
    return None if length is None else (length, close)


class _Date:
    """The Date header (RFC 9110 6.6.1), formatted once a second."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True).encode()
        return cls.value


def response(status: int, body: bytes, headers: dict[str, str] | None, close: bool) -> bytes:
    """One whole HTTP/1.1 response: status line, headers, body."""
    lines = [
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\nDate: %s\r\n"
        % (status, _REASONS[status].encode(), len(body), _Date.now())
    ]
    for name, value in (headers or {}).items():
        if name.lower() != "connection":
            lines.append(f"{name}: {value}\r\n".encode())
    if close:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


class PredictConnection(HeaderDeadline):
    """One connection: plain /v1/predict requests served here, the rest handed to aiohttp (see above)."""

    def __init__(self, server: InferenceServer, aiohttp_protocol: Callable[[], asyncio.Protocol]) -> None:
        super().__init__(None, server.config.header_timeout_s)  # type: ignore[arg-type] # aiohttp's is made on hand-over
        self._server = server
        self._aiohttp_protocol = aiohttp_protocol
        self._buffer = bytearray()
        self._busy = False  # a request is being received or answered: later bytes wait
        self._want = 0  # receiving a body: the buffer's length once it is whole
        self._close = False  # close once this answer is written
        self._started = 0.0
        self._body_timer: asyncio.TimerHandle | None = None
        self._paused = False  # reading paused: a client pipelining far ahead
        self._blocked = False  # writing paused by the transport: a client not reading its answers
        self._scanned = 0  # how far the buffer was searched for the head's end
        self._last_used = 0.0
        self._keepalive: asyncio.TimerHandle | None = None

    @property
    def lean(self) -> bool:
        """Whether this connection is still served here (not handed to aiohttp)."""
        return self._inner is None

    @property
    def idle(self) -> bool:
        return self._inner is None and not self._busy

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server.lean_connections.add(self)
        tcp_keepalive(transport)  # type: ignore[arg-type] # SO_KEEPALIVE, as aiohttp sets it
        self._arm()  # the first request's headers: from the moment the connection was accepted
        loop = asyncio.get_running_loop()
        self._last_used = loop.time()
        self._keepalive = loop.call_later(KEEPALIVE_TIMEOUT_S, self._keepalive_check)

    def _keepalive_check(self) -> None:
        self._keepalive = None
        if self._transport is None or self._inner is not None:
            return
        left = self._last_used + KEEPALIVE_TIMEOUT_S - asyncio.get_running_loop().time()
        if self.idle and not self._buffer and left <= 0:
            self._transport.close()
        else:
            self._keepalive = asyncio.get_running_loop().call_later(max(left, 1.0), self._keepalive_check)

    def close_idle(self) -> None:
        """Close the connection if it is between requests (the server's close())."""
        if self.idle and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close it whatever it is doing (the server's close(), after the answers it could give)."""
        if self._inner is None and self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            super().data_received(data)
            return
        self._buffer += data
        if self._want:
            if len(self._buffer) >= self._want:
                self._body_whole()
        elif not self._busy:
            if not self._blocked:
                self._next()
        elif not self._paused and len(self._buffer) > 2 * self._server.config.max_body_bytes:
            self._paused = True  # a client pipelining far ahead: stop reading until this is answered
            if not self._blocked:
                self._transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return super().eof_received()
        if self._busy and not self._want:
            self._close = True  # half-closed after a whole request: answer it, then close
            return True
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.lean_connections.discard(self)
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self._inner is not None:
            super().connection_lost(exc)
            return
        self._cancel()
        self._transport = None
        if self._want:  # the client left mid-body: nobody to answer, counted as 499 (see app.receive)
            self._end_body()
            log.info("POST /v1/predict: client closed the connection before its body was whole")
            self._server.metrics.count(499)
            self._done()

    def pause_writing(self) -> None:
        if self._inner is not None:
            super().pause_writing()
            return
        # The client does not read its answers: take no new request (nor bytes) until it does.
        self._blocked = True
        if self._transport is not None and not self._paused:
            self._transport.pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        if self._inner is not None:
            super().resume_writing()
            return
        self._blocked = False
        if self._transport is not None and not self._paused:
            self._transport.resume_reading()  # type: ignore[attr-defined]
        if not self._busy:
            self._next()

    # -- one request -------------------------------------------------------------------------

    def _next(self) -> None:
        """Start on the next request in the buffer (if its head is whole), or wait for more bytes."""
        buffer = self._buffer
        if not buffer:
            return
        end = buffer.find(b"\r\n\r\n", self._scanned, MAX_HEAD_BYTES + 4)
        if end < 0:
            self._scanned = max(len(buffer) - 3, 0)  # a head that trickles in is searched once
            if len(buffer) > MAX_HEAD_BYTES:
                self._hand_over()
                return
            self._bytes_waiting = True
            if self._timer is None:
                self._arm()  # the first byte of a later request
            return
        self._scanned = 0
        head = bytes(buffer[: end + 4])
        found = recognise(head)
        server = self._server
        if found is None or server.draining or server.batcher is None:
            self._hand_over()
            return
        length, close = found
        if length > server.config.max_body_bytes:
            self._hand_over()  # aiohttp's 413
            return
        self._cancel()  # the header deadline is met
        self._in_request, self._answered, self._bytes_waiting = True, True, False
        self._busy, self._close = True, close
        self._started = time.perf_counter()
        server.touch()
        del buffer[: end + 4]
        if len(buffer) >= length:
            self._accepted(length)
            return
        self._want = length  # the body is still arriving: receiving, bounded by BODY_TIMEOUT_S
        server.enter(server.metrics.receiving, in_flight=False)
        self._body_timer = asyncio.get_running_loop().call_later(server.config.body_timeout_s, self._body_late)

    def _body_whole(self) -> None:
        length, self._want = self._want, 0
        self._end_body()
        self._accepted(length)

    def _end_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._server.leave(self._server.metrics.receiving, in_flight=False)

    def _body_late(self) -> None:
        self._body_timer = None
        self._want = 0
        self._end_body()
        timeout = self._server.config.body_timeout_s
        log.info("POST /v1/predict: body not received within BODY_TIMEOUT_S")
        self._close = True
        self._write(408, {"error": f"request body not received within {timeout:g}s (BODY_TIMEOUT_S)"}, None)

    def _accepted(self, length: int) -> None:
        buffer = self._buffer
        body = bytes(buffer[:length])
        del buffer[:length]
        server = self._server
        batcher, model = server.batcher, server.model
        if batcher is None or model is None:  # the batcher stopped meanwhile (close())
            self._write(503, {"error": "model is not loaded yet"}, {"Retry-After": "1"})
            return
        server.enter(server.metrics.in_flight, in_flight=True)
        try:
            inputs = parse_inputs(body, model.input_size)
        except BadRequestError as exc:
            self._answer(400, {"error": str(exc)}, None)
            return
        except Exception:
            self._bug()
            return
        try:
            future = batcher.submit_nowait(inputs)
        except Exception as exc:  # queue full, batcher stopped
            self._refused(exc)
            return
        future.add_done_callback(self._batched)

    def _batched(self, future: asyncio.Future[BatchResult]) -> None:
        try:
            if future.cancelled():
                self._refused(RuntimeError("the batch was cancelled"))
                return
            exc = future.exception()
            if exc is not None:
                self._refused(exc)
                return
            result = future.result()
            refused = batch_refusal(None, self._server.config.max_queue, result)
            if refused is not None:
                self._answer(refused[0], {"error": refused[1]}, refused[2])
                return
            outputs = result.outputs.tolist()
            body = orjson.dumps({"outputs": outputs, "model": self._server.model_name, "batch_size": result.batch_size})
        except Exception:
            self._bug()
            return
        self._server.leave(self._server.metrics.in_flight, in_flight=True)
        self._write(200, body, None)

    def _bug(self) -> None:
        """What the middleware does with an unexpected error: logged, a JSON 500 (counted)."""
        log.exception("unexpected error answering POST /v1/predict")
        self._answer(500, {"error": "internal server error"}, None)

    def _refused(self, exc: BaseException) -> None:
        status, message, headers = batch_refusal(exc, self._server.config.max_queue)  # type: ignore[misc]
        self._answer(status, {"error": message}, headers)

    def _answer(self, status: int, error: dict[str, str], headers: dict[str, str] | None) -> None:
        """An error answer to an admitted request (in flight until now)."""
        self._server.leave(self._server.metrics.in_flight, in_flight=True)
        self._write(status, error, headers)

    def _write(self, status: int, body: dict[str, str] | bytes, headers: dict[str, str] | None) -> None:
        """Answer, count and time it, then close or go on to the next request."""
        server = self._server
        if headers and headers.get("Connection") == "close":
            self._close = True
        if server.draining:
            self._close = True  # keep-alive clients should reconnect, and so reach a pod that stays
        data = body if isinstance(body, bytes) else _dumps_error(body).encode()
        server.metrics.count(status)
        if status == 200:
            server.metrics.duration.observe(time.perf_counter() - self._started)
        transport = self._transport
        if transport is not None:
            transport.write(response(status, data, headers, self._close))
            if self._close:
                transport.close()  # after what was written
        self._done()

    def _done(self) -> None:
        self._server.touch()
        self._last_used = asyncio.get_running_loop().time()
        self._busy = self._in_request = False
        if self._transport is None or self._close:
            return
        if self._paused:
            self._paused = False
            if not self._blocked:
                self._transport.resume_reading()  # type: ignore[attr-defined]
        if not self._blocked:
            self._next()

    # -- everything else: aiohttp ----------------------------------------------------------------

    def _hand_over(self) -> None:
        """aiohttp's protocol takes this connection, from the first byte of the request in the buffer."""
        self._server.lean_connections.discard(self)
        if self._keepalive is not None:  # aiohttp's own keep-alive timer takes over
            self._keepalive.cancel()
            self._keepalive = None
        self._inner = self._aiohttp_protocol()
        self._inner.connection_made(self._transport)  # type: ignore[arg-type]
        pending, self._buffer = bytes(self._buffer), bytearray()
        if self._paused:
            self._paused = False
            self._transport.resume_reading()  # type: ignore[union-attr]
        if pending:
            super().data_received(pending)
