"""The vLLM and Triton scale queries end to end, with a real Prometheus: a stub exporter serves
exactly the metric names and labels those servers emit (vLLM V1 `vllm/v1/metrics/loggers.py`:
gauges with `model_name` and `engine`; Triton `docs/user_guide/metrics.md`: the pending gauge and
the compute-duration counter with `model` and `version`), from a small engine with a fixed number
of execution slots, driven by a load step of concurrent clients. Prometheus scrapes it at the
ServiceMonitor's interval under the labels the ServiceMonitor's relabelling adds, and the exact
query of the rendered ScaledObject must cross its threshold under load and fall back after.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import plan_of, stack_config
from tests.support.prometheus import SKIP_REASON, PrometheusServer, Target, prometheus_binary

pytestmark = pytest.mark.skipif(prometheus_binary() is None, reason=SKIP_REASON)

SERVICES = {
    "chat": {"server": "vllm", "pool": "gpu", "model": {"uri": "s3://acme-models/models/qwen2.5-0.5b-instruct/"}},
    "resnet": {"server": "triton", "pool": "gpu", "model": {"uri": "s3://acme-models/triton/resnet50/"}},
}
SLOTS = 4  # requests the stub engine executes at once
SERVICE_S = 0.2  # execution time of one request
CLIENTS = 24  # the load step: concurrent clients, each sending back to back


class StubEngine:
    """Requests wait for one of SLOTS execution slots, run SERVICE_S, and are counted as servers count them."""

    def __init__(self) -> None:
        self._slots = threading.Semaphore(SLOTS)
        self._lock = threading.Lock()
        self.waiting = self.running = 0
        self.compute_us = 0  # Triton: cumulative compute time, summed over requests

    def infer(self) -> None:
        with self._lock:
            self.waiting += 1
        with self._slots:
            with self._lock:
                self.waiting -= 1
                self.running += 1
            start = time.monotonic()
            time.sleep(SERVICE_S)
            with self._lock:
                self.running -= 1
                self.compute_us += int((time.monotonic() - start) * 1e6)

    def exposition(self, server: str) -> str:
        with self._lock:
            waiting, running, compute = self.waiting, self.running, self.compute_us
        if server == "vllm":
            labels = 'engine="0",model_name="qwen2.5-0.5b-instruct"'
            return (
                "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
                "# TYPE vllm:num_requests_running gauge\n"
                f"vllm:num_requests_running{{{labels}}} {float(running)}\n"
                "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
                "# TYPE vllm:num_requests_waiting gauge\n"
                f"vllm:num_requests_waiting{{{labels}}} {float(waiting)}\n"
            )
        labels = 'model="resnet50",version="1"'
        return (
            "# HELP nv_inference_pending_request_count Instantaneous number of pending requests awaiting"
            " execution per-model.\n"
            "# TYPE nv_inference_pending_request_count gauge\n"
            f"nv_inference_pending_request_count{{{labels}}} {waiting}\n"
            "# HELP nv_inference_compute_infer_duration_us Cumulative compute inference duration in microseconds\n"
            "# TYPE nv_inference_compute_infer_duration_us counter\n"
            f"nv_inference_compute_infer_duration_us{{{labels}}} {compute}\n"
        )


def exporter(engine: StubEngine, server: str, path: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != path:
                self.send_error(404)
                return
            body = engine.exposition(server).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def load_step(engine: StubEngine, duration_s: float) -> threading.Thread:
    """CLIENTS clients sending back to back for `duration_s` (bounded in count and time)."""
    deadline = time.monotonic() + duration_s

    def client() -> None:
        for _ in range(int(duration_s / SERVICE_S) + 1):
            if time.monotonic() >= deadline:
                return
            engine.infer()

    clients = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    runner = threading.Thread(target=lambda: [t.start() for t in clients] and [t.join() for t in clients])
    runner.start()
    return runner


def value(prom: PrometheusServer, query: str) -> float:
    """As KEDA reads it: an empty result counts as 0 (ignoreNullValues)."""
    result = prom.query(query)
    return sum(s.value for s in result) if isinstance(result, list) else float(result)


def wait_value(prom: PrometheusServer, query: str, predicate, timeout_s: float) -> float:
    deadline, current = time.monotonic() + timeout_s, float("nan")
    while time.monotonic() < deadline:
        current = value(prom, query)
        if predicate(current):
            return current
        time.sleep(0.25)
    raise AssertionError(f"{query} never satisfied the condition within {timeout_s}s (last {current})")


@pytest.fixture(scope="module")
def plan():
    config = stack_config("dev")
    config["gpu-inference:inference"].update(SERVICES)
    return plan_of(config, stack="dev")


@pytest.mark.parametrize(("service", "server"), [("chat", "vllm"), ("resnet", "triton")])
def test_preset_query_crosses_its_threshold_under_load_and_falls_back(plan, service: str, server: str) -> None:
    scaled = plan.objects("ScaledObject")[service]
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["name"] == "in-flight"]
    query, threshold = trigger["metadata"]["query"], float(trigger["metadata"]["threshold"])
    (endpoint,) = plan.objects("ServiceMonitor")[service]["spec"]["endpoints"]
    interval = endpoint["interval"]
    interval_s = float(interval.rstrip("s"))
    engine = StubEngine()
    httpd = exporter(engine, server, endpoint["path"])
    try:
        address = f"127.0.0.1:{httpd.server_address[1]}"
        labels = {"namespace": scaled["metadata"]["namespace"], "service": service, "pod": f"{service}-0"}
        with PrometheusServer(
            [Target(address, labels, metrics_path=endpoint["path"])], scrape_interval=interval
        ) as prom:
            prom.wait_for("up", lambda r: bool(r) and r[0].value == 1, timeout_s=5 * interval_s)
            assert value(prom, query) < threshold
            duration_s = 3 * interval_s
            runner = load_step(engine, duration_s)
            try:
                # In flight under the load step: SLOTS running + the rest waiting, CLIENTS in all.
                peak = wait_value(prom, query, lambda v: v > threshold, timeout_s=duration_s)
            finally:
                runner.join(timeout=duration_s + 30)
            assert threshold < peak <= CLIENTS + 1
            after = wait_value(prom, query, lambda v: v < threshold, timeout_s=4 * interval_s + 10)
            assert after < threshold
    finally:
        httpd.shutdown()
