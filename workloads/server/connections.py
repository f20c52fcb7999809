"""The TCP side of the server: the listening socket (its accept backlog) and a deadline on
each request's headers, which aiohttp does not have.

Backlog: how many connections the kernel completes and queues before the server accepts
them. aiohttp's default (128) overflowed under a burst of 1,000 connections (resets, or
SYNs dropped and retried a second later); BACKLOG sets it. The kernel silently caps it at
net.core.somaxconn (4096 by default since Linux 5.4, per network namespace, so per pod).

Header deadline: a client that opens a connection and sends its headers slowly (or not
at all) holds a socket for as long as it likes; aiohttp only closes connections idle for
its keep-alive timeout (an hour). Like Go's ReadHeaderTimeout, the first request's headers
must arrive within HEADER_TIMEOUT_S of the connection being accepted, and a later
request's within HEADER_TIMEOUT_S of its first byte (between requests, an idle keep-alive
connection is left alone). Past it the connection is closed, after a 408 when the client
had begun a first request (a later one may be meeting a response in flight: closed only).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import cast

log = logging.getLogger(__name__)

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
_BODY = json.dumps({"error": "request headers were not received in time (HEADER_TIMEOUT_S)"}).encode()
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BODY), _BODY)
)


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv4 or IPv6, as the host is written)."""
    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.setblocking(False)
    cap = kernel_backlog_cap()
    if cap is not None and backlog > cap:
        log.warning("BACKLOG=%d is above net.core.somaxconn=%d: the kernel uses %d", backlog, cap, cap)
    return sock


def kernel_backlog_cap() -> int | None:
    """net.core.somaxconn, where the kernel says (Linux); None elsewhere."""
    try:
        return int(SOMAXCONN.read_text())
    except (OSError, ValueError):
        return None


class HeaderDeadline(asyncio.Protocol):
    """One connection: aiohttp's protocol for it, behind a deadline on each request's headers.

    The app tells it when a request's headers have been parsed (`request_started`, from the
    middleware: aiohttp calls the handler only then) and when the handler is done.
    """

    def __init__(self, inner: asyncio.Protocol, timeout: float) -> None:
        self._inner = inner
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_request = False
        self._answered = False  # a request on this connection has reached the app
        self._bytes_waiting = False  # bytes of a request not yet dispatched have arrived

    @classmethod
    def factory(cls, inner: Callable[[], asyncio.Protocol], timeout: float) -> Callable[[], asyncio.Protocol]:
        return lambda: cls(inner(), timeout)

    # -- what the app reports ------------------------------------------------------------

    def request_started(self) -> None:
        self._in_request, self._answered, self._bytes_waiting = True, True, False
        self._cancel()

    def request_finished(self) -> None:
        self._in_request = False

    # -- asyncio.Protocol, forwarded ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (asyncio's, or uvloop's, which does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self._inner.connection_made(transport)
        self._arm()  # the first request: from the moment the connection was accepted

    def data_received(self, data: bytes) -> None:
        if not self._in_request:
            self._bytes_waiting = True
            if self._timer is None:
                self._arm()  # the first byte of a later request
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._transport = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- the deadline ------------------------------------------------------------------

    def _arm(self) -> None:
        if self._timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expired)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or self._in_request or transport.is_closing():
            return
        if self._bytes_waiting and not self._answered:
            transport.write(TIMEOUT_RESPONSE)
        log.debug("closing a connection whose request headers took over %gs", self._timeout)
        transport.close()  # sends what was written first
