"""The reference server's metric names, for components, dashboards, alerts and policies.

The server owns them (`workloads/server/metric_names.py`, a module without
dependencies, so the container image builds from the `workloads` package
alone); this module is how everything above the apps layer reads them.
"""

from workloads.server.metric_names import (
    ALL,
    BATCH_SIZE,
    IN_FLIGHT,
    QUEUE_DEPTH,
    RECEIVING,
    REQUEST_DURATION,
    REQUESTS_TOTAL,
)

__all__ = ["ALL", "BATCH_SIZE", "IN_FLIGHT", "QUEUE_DEPTH", "RECEIVING", "REQUESTS_TOTAL", "REQUEST_DURATION"]
