"""The server's Prometheus metrics. Their names (metric_names.py) are a contract:
KEDA scales on `inference_requests_in_flight` and the dashboards and alerts read
the others, so a rename breaks them (tests pin every name).

Each server owns its registry (no process-global state), so several servers can
live in one process, as they do in the tests.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder

from workloads.server.metric_names import (
    BATCH_SIZE,
    IN_FLIGHT,
    QUEUE_DEPTH,
    RECEIVING,
    REQUEST_DURATION,
    REQUESTS_TOTAL,
)

# Millisecond-level latency: 1 ms .. 10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Rows per model call: powers of two up to well past the default MAX_BATCH_SIZE.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The client library adds `_total` to a counter's name.
        self.requests = Counter(
            REQUESTS_TOTAL.removesuffix("_total"),
            "Prediction requests answered, by HTTP status code.",
            ["status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            REQUEST_DURATION,
            "Time from receiving a prediction request to answering it, for answered predictions (status 200); "
            "rejections are counted in inference_requests_total only, so a burst of fast 429s cannot make latency "
            "look better.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            BATCH_SIZE,
            "Input rows per model call.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            IN_FLIGHT,
            "Prediction requests accepted and not yet answered (queued + running): the autoscaling signal. "
            "A request counts from the moment its whole body has arrived.",
            registry=self.registry,
        )
        self.receiving = Gauge(
            RECEIVING,
            "Prediction requests whose body is still arriving (at most BODY_TIMEOUT_S each). Not a scaling "
            "signal: a slow or stalled upload costs a socket, not model capacity.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            QUEUE_DEPTH,
            "Prediction requests waiting for a batch.",
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        # One labelled child per status, looked up once (labels() costs a lock and a dict per call).
        self._by_status: dict[int, Counter] = {}

    def count(self, status: int) -> None:
        """Count one prediction response with this HTTP status."""
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.requests.labels(str(status))
        child.inc()

    def render(self, accept_header: str | None) -> tuple[bytes, str]:
        """The exposition (body, content type), in the format the scraper's Accept header asks for."""
        encoder, content_type = choose_encoder(accept_header or "")
        return encoder(self.registry), content_type
