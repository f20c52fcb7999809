"""`python -m workloads.server`: run the server until SIGTERM or SIGINT, then drain and exit.

Shutdown, and how it meets Kubernetes' pod termination:

1. Kubernetes marks the pod terminating. At the same moment, and independently,
   the endpoints controller starts removing the pod from the Service's
   EndpointSlices and the kubelet runs the preStop hook; SIGTERM comes only after
   preStop returns. kube-proxy, ingress controllers and load balancers learn
   about the removal a few seconds later, and keep sending new requests until then.
2. The pod's preStop hook should therefore sleep for that propagation time
   (e.g. `sleep: {seconds: 5}`): the server keeps serving normally meanwhile.
3. On SIGTERM the server turns /readyz to 503 at once, keeps accepting new
   requests for TERM_GRACE_S (default 0: the preStop sleep already covered the
   propagation delay; set it to a few seconds where no preStop hook exists),
   then answers new requests with 503 + `Connection: close` (after reading their
   body) while every request already accepted (queued or running) completes, for
   at most DRAIN_TIMEOUT_S. Every response from SIGTERM on says `Connection: close`.
4. Once nothing is in flight and no connection has been open or used for a
   moment, it closes the listener (taking the connections already in its backlog
   first, so that none is reset); keep-alive connections still open get
   KEEPALIVE_DRAIN_S (within DRAIN_TIMEOUT_S) for one more request, answered 503 +
   close, before the idle ones are closed. Then it exits 0. If the drain timed
   out, the requests still unanswered get 503 (retry on another replica) before
   the listener closes, and it exits 1; 1 too if the model failed to load.

terminationGracePeriodSeconds must exceed preStop sleep + TERM_GRACE_S +
DRAIN_TIMEOUT_S + a few seconds, or the kubelet's SIGKILL cuts the drain short.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import uvloop

from workloads.server.app import InferenceServer
from workloads.server.config import ServerConfig, parse_args

log = logging.getLogger("workloads.server")


async def serve(config: ServerConfig) -> int:
    """Run one server until a stop signal; returns the process exit code."""
    server = InferenceServer(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.info("%s received again; already draining", sig.name)
            return
        log.info("%s received: draining", sig.name)
        server.begin_drain()  # readiness false before anything else happens
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    await server.start()
    loaded = asyncio.ensure_future(server.wait_loaded())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({loaded, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if loaded.done() and loaded.exception() is not None:
        stopped.cancel()
        await server.close()
        return 1
    await stopped
    drained = await server.drain()
    await server.close()
    log.info("exiting (%s)", "drained" if drained else "drain timed out")
    return 0 if drained else 1


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv, os.environ)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # uvloop (libuv) instead of asyncio's own loop: the same asyncio API, with cheaper I/O
    # and callbacks, which is most of what the server does per request.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
