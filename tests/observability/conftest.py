"""Fixtures for the observability tests: promtool, and a real Prometheus scraping a
small fake cluster (kube-state-metrics, Karpenter, dcgm-exporter and two inference
servers) so dashboard and alert queries run against series shaped like the real ones.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.prometheus import (
    SKIP_REASON,
    PrometheusServer,
    Target,
    fail_required_skip,
    prometheus_binary,
    promtool_binary,
    running_prometheus,
)
from workloads.server.metrics import Metrics

HERE = Path(__file__).parent

# What the exporters of a small cluster would expose. Two inference services in
# namespace `inference`: svc-a scaled out (2 replicas, min 1) on idle GPUs, svc-b
# at its minimum on busy ones. One GPU is unallocated.
KUBE_STATE_METRICS = """\
kube_node_labels{node="ip-10-0-0-1",label_karpenter_sh_nodepool="gpu",label_karpenter_sh_capacity_type="spot",label_node_kubernetes_io_instance_type="g5.xlarge"} 1
kube_node_labels{node="ip-10-0-0-2",label_karpenter_sh_nodepool="gpu",label_karpenter_sh_capacity_type="on-demand",label_node_kubernetes_io_instance_type="g5.xlarge"} 1
kube_node_labels{node="ip-10-0-0-9",label_eks_amazonaws_com_capacity_type="ON_DEMAND",label_node_kubernetes_io_instance_type="m7i.large"} 1
kube_pod_status_phase{namespace="inference",pod="svc-a-3",phase="Pending"} 1
kube_pod_status_phase{namespace="inference",pod="svc-a-3",phase="Running"} 0
kube_pod_status_phase{namespace="inference",pod="svc-a-1",phase="Running"} 1
kube_horizontalpodautoscaler_info{namespace="inference",horizontalpodautoscaler="keda-hpa-svc-a",scaletargetref_api_version="apps/v1",scaletargetref_kind="Deployment",scaletargetref_name="svc-a"} 1
kube_horizontalpodautoscaler_info{namespace="inference",horizontalpodautoscaler="keda-hpa-svc-b",scaletargetref_api_version="apps/v1",scaletargetref_kind="Deployment",scaletargetref_name="svc-b"} 1
kube_horizontalpodautoscaler_status_current_replicas{namespace="inference",horizontalpodautoscaler="keda-hpa-svc-a"} 2
kube_horizontalpodautoscaler_status_desired_replicas{namespace="inference",horizontalpodautoscaler="keda-hpa-svc-a"} 3
kube_horizontalpodautoscaler_spec_min_replicas{namespace="inference",horizontalpodautoscaler="keda-hpa-svc-a"} 1
kube_horizontalpodautoscaler_status_current_replicas{namespace="inference",horizontalpodautoscaler="keda-hpa-svc-b"} 1
kube_horizontalpodautoscaler_status_desired_replicas{namespace="inference",horizontalpodautoscaler="keda-hpa-svc-b"} 1
kube_horizontalpodautoscaler_spec_min_replicas{namespace="inference",horizontalpodautoscaler="keda-hpa-svc-b"} 1
kube_deployment_status_replicas_ready{namespace="inference",deployment="svc-a"} 2
kube_deployment_status_replicas_ready{namespace="inference",deployment="svc-b"} 1
kube_deployment_status_replicas_ready{namespace="kube-system",deployment="coredns"} 2
"""

KARPENTER = """\
karpenter_nodepools_usage{nodepool="gpu",resource_type="nvidia.com/gpu"} 2
karpenter_nodepools_limit{nodepool="gpu",resource_type="nvidia.com/gpu"} 2
karpenter_nodepools_usage{nodepool="gpu",resource_type="cpu"} 8
karpenter_nodepools_limit{nodepool="gpu",resource_type="cpu"} 64
"""

# dcgm-exporter's own pod labels. Scraped with the target's namespace/pod (as
# the chart's ServiceMonitor does with honorLabels: false), Prometheus renames
# these to exported_namespace / exported_pod.
DCGM = """\
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a1",modelName="NVIDIA A10G",Hostname="ip-10-0-0-1",namespace="inference",pod="svc-a-1",container="server"} 3
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a2",modelName="NVIDIA A10G",Hostname="ip-10-0-0-2",namespace="inference",pod="svc-a-2",container="server"} 5
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-b1",modelName="NVIDIA A10G",Hostname="ip-10-0-0-3",namespace="inference",pod="svc-b-1",container="server"} 85
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-x",modelName="NVIDIA A10G",Hostname="ip-10-0-0-3"} 0
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-a1",modelName="NVIDIA A10G",Hostname="ip-10-0-0-1",namespace="inference",pod="svc-a-1",container="server"} 2048
DCGM_FI_DEV_FB_FREE{gpu="0",UUID="GPU-a1",modelName="NVIDIA A10G",Hostname="ip-10-0-0-1",namespace="inference",pod="svc-a-1",container="server"} 20480
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-b1",modelName="NVIDIA A10G",Hostname="ip-10-0-0-3",namespace="inference",pod="svc-b-1",container="server"} 8192
DCGM_FI_DEV_FB_FREE{gpu="0",UUID="GPU-b1",modelName="NVIDIA A10G",Hostname="ip-10-0-0-3",namespace="inference",pod="svc-b-1",container="server"} 14336
"""

INFERENCE_PODS = {"svc-a": ("svc-a-1", "svc-a-2"), "svc-b": ("svc-b-1",)}


def _inference_metrics(pod: str) -> bytes:
    """The real server's exposition (workloads/server/metrics.py), with some traffic recorded."""
    metrics = Metrics()
    metrics.requests.labels(status="200").inc(100)
    metrics.requests.labels(status="500").inc(1)
    metrics.duration.observe(0.02)
    metrics.batch_size.observe(4)
    metrics.in_flight.set(1 if pod.startswith("svc-b") else 0)
    body, _ = metrics.render(None)
    return body


class _FakeCluster(BaseHTTPRequestHandler):
    static = {"/ksm": KUBE_STATE_METRICS, "/karpenter": KARPENTER, "/dcgm": DCGM}

    def do_GET(self) -> None:
        if self.path in self.static:
            body = self.static[self.path].encode()
        elif self.path.startswith("/inference/"):
            body = _inference_metrics(self.path.rsplit("/", 1)[1])
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # Prometheus may give up on a slow scrape (a loaded machine): nothing to tell, and a
        # traceback printed from this thread would land in another test's captured stderr.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    # Skips for SKIP_REASON (the modules' skipif markers, the fixtures below) fail under GPUINF_REQUIRE_TOOLS=1.
    report = yield
    fail_required_skip(report)
    return report


@pytest.fixture(scope="session")
def promtool() -> str:
    path = promtool_binary()
    if path is None:
        pytest.skip(SKIP_REASON)
    return path


@pytest.fixture(scope="session")
def fake_cluster() -> Iterator[str]:
    """`host:port` of an HTTP server exposing the fake cluster's metrics, one path per exporter."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeCluster)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def cluster_targets(address: str) -> list[Target]:
    """Scrape targets labelled as kube-prometheus-stack's monitors would label them."""
    targets = [
        Target(address, {"namespace": "monitoring"}, "kube-state-metrics", "/ksm", honor_labels=True),
        Target(address, {"namespace": "kube-system", "service": "karpenter"}, "karpenter", "/karpenter"),
        Target(address, {"namespace": "monitoring", "pod": "dcgm-exporter-x1"}, "dcgm-exporter", "/dcgm"),
    ]
    for service, pods in INFERENCE_PODS.items():
        for pod in pods:
            labels = {"namespace": "inference", "service": service, "pod": pod}
            targets.append(Target(address, labels, service, f"/inference/{pod}"))
    return targets


@pytest.fixture(scope="session")
def cluster_prometheus(fake_cluster: str) -> Iterator[PrometheusServer]:
    """A real Prometheus that has scraped the fake cluster at least twice (so rate() has two points)."""
    if prometheus_binary() is None:
        pytest.skip(SKIP_REASON)
    with running_prometheus(cluster_targets(fake_cluster), scrape_interval="1s") as prom:
        expected = len(cluster_targets(fake_cluster))
        prom.wait_for("count(up == 1)", lambda r: bool(r) and r[0].value == expected)  # type: ignore[index,union-attr]
        # Two scrapes of every target: rate() over a short window then has data.
        prom.wait_for(
            "min(count_over_time(up[1m]))",
            lambda r: bool(r) and r[0].value >= 2,  # type: ignore[index,union-attr]
        )
        yield prom
