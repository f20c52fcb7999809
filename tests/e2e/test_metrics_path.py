"""The scale signal end to end, with a real Prometheus: the reference server under a load
step, scraped at the interval the stack's ServiceMonitor sets, and the exact query of the
rendered KEDA ScaledObject evaluated through Prometheus' HTTP API.

The server adds a fixed per-batch delay (EXTRA_BATCH_LATENCY_MS) standing in for a model
that is slow on this CPU-only machine, so a modest offered load queues up the way a busy
GPU would; everything else (batching, queue bound, metrics, scrape, query) is the real path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import plan_of, stack_config
from tests.support.prometheus import SKIP_REASON, PrometheusServer, Target, prometheus_binary
from tests.workloads.helpers import ROOT, ServerProcess

pytestmark = pytest.mark.skipif(prometheus_binary() is None, reason=SKIP_REASON)

SERVICE = "llm"


def rendered(service: str) -> tuple[dict, dict, dict]:
    plan = plan_of(stack_config("dev"), stack="dev")
    svc = plan.settings.inference[service]
    scaled = plan.objects("ScaledObject")[service]
    monitor = plan.objects("ServiceMonitor")[service]
    deployment = plan.objects("Deployment")[service]
    return scaled, monitor, {"settings": svc, "deployment": deployment}


def value(prom: PrometheusServer, query: str) -> float:
    """The trigger's value as KEDA reads it: an empty result counts as 0 (ignoreNullValues)."""
    result = prom.query(query)
    return sum(s.value for s in result) if isinstance(result, list) else float(result)


def wait_value(prom: PrometheusServer, query: str, predicate, timeout_s: float) -> tuple[float, float]:
    """(value, seconds waited) once `predicate(value)` holds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        current = value(prom, query)
        if predicate(current):
            return current, time.monotonic() - start
        time.sleep(0.25)
    raise AssertionError(f"{query} never satisfied the condition within {timeout_s}s (last {current})")


def test_scaled_object_query_crosses_its_threshold_under_load_and_falls_back(tmp_path) -> None:
    scaled, monitor, extra = rendered(SERVICE)
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["name"] == "in-flight"]
    query, threshold = trigger["metadata"]["query"], float(trigger["metadata"]["threshold"])
    interval = monitor["spec"]["endpoints"][0]["interval"]  # what the stack config sets, e.g. "5s"
    interval_s = float(interval.rstrip("s"))
    container = extra["deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}  # the server settings the Deployment passes
    env.update({"PORT": "0", "EXTRA_BATCH_LATENCY_MS": "200"})

    server = ServerProcess(tmp_path / "server.log", env=env)
    try:
        url = server.wait_listening()
        address = url.split("//", 1)[1].rstrip("/")
        # The labels a ServiceMonitor's relabelling gives every series of the Service's pods.
        labels = {"namespace": scaled["metadata"]["namespace"], "service": SERVICE, "pod": f"{SERVICE}-0"}
        with PrometheusServer([Target(address, labels)], scrape_interval=interval) as prom:
            prom.wait_for("up", lambda r: bool(r) and r[0].value == 1, timeout_s=5 * interval_s)
            idle = value(prom, query)
            assert idle < threshold, f"idle value {idle} already above the threshold {threshold}"

            # Load step: capacity is about MAX_BATCH_SIZE / 0.2 s; offer twice that.
            rps = 2 * int(env["MAX_BATCH_SIZE"]) / 0.2
            duration_s = 3 * interval_s
            load = subprocess.Popen(
                [sys.executable, "-m", "workloads.loadgen", "--url", url, "--rps", f"{rps:g}", "--duration", f"{duration_s:g}"],
                cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                peak, rise_s = wait_value(prom, query, lambda v: v > threshold, timeout_s=duration_s + 2 * interval_s)
            finally:
                _out, err = load.communicate(timeout=duration_s + 60)
            assert load.returncode == 0, err
            assert peak > threshold and rise_s <= duration_s + 2 * interval_s

            after, fall_s = wait_value(prom, query, lambda v: v < threshold, timeout_s=4 * interval_s + 10)
            assert after < threshold
            # The signal is a gauge: it falls within a couple of scrapes once the queue has drained.
            assert fall_s <= 4 * interval_s + 10
    finally:
        server.stop()
