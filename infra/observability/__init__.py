"""Dashboards and alert rules as data, and the PromQL pieces they share.

`dashboards` builds the Grafana dashboards (grafana-foundation-sdk) that the
Grafana sidecar of kube-prometheus-stack loads from a labelled ConfigMap;
`alerts` builds the PrometheusRule groups. Both are pure functions of their
parameters: nothing here creates resources or reads config.

Metric names and labels come from their sources: our server's from
`domain.metric_names` (the server owns them); the others are spelled once below, each with
where it was checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from domain import contract, metric_names

# Karpenter v1.x controller (docs "Reference > Metrics" for v1.14; labels from
# kubernetes-sigs/karpenter pkg/controllers/metrics/nodepool/controller.go).
# Both gauges carry `nodepool` and `resource_type`; `limit` only exists for
# resources the NodePool limits.
KARPENTER_NODEPOOL_USAGE = "karpenter_nodepools_usage"
KARPENTER_NODEPOOL_LIMIT = "karpenter_nodepools_limit"


def karpenter_resource_type(resource: str) -> str:
    """The `resource_type` label Karpenter writes for a resource name: lower case, '-' as '_'."""
    return resource.lower().replace("-", "_")


GPU_RESOURCE_TYPE = karpenter_resource_type(contract.GPU_RESOURCE)  # "nvidia.com/gpu"

# NVIDIA dcgm-exporter, default counters (etc/default-counters.csv). Per-GPU
# series labelled `gpu`, `UUID`, `modelName`, `Hostname`; with pod mapping
# (`kubernetes.enablePodLabels`) also `namespace`, `pod`, `container` of the pod
# the GPU is allocated to.
DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # percent, 0-100
DCGM_FB_USED = "DCGM_FI_DEV_FB_USED"  # MiB
DCGM_FB_FREE = "DCGM_FI_DEV_FB_FREE"  # MiB
DCGM_NODE_LABEL = "Hostname"

# kube-state-metrics (bundled with kube-prometheus-stack).
KSM_POD_PHASE = "kube_pod_status_phase"
KSM_NODE_LABELS = "kube_node_labels"
KSM_HPA_INFO = "kube_horizontalpodautoscaler_info"  # labels scaletargetref_kind, scaletargetref_name
KSM_HPA_CURRENT = "kube_horizontalpodautoscaler_status_current_replicas"
KSM_HPA_DESIRED = "kube_horizontalpodautoscaler_status_desired_replicas"
KSM_HPA_MIN = "kube_horizontalpodautoscaler_spec_min_replicas"
KSM_DEPLOYMENT_READY = "kube_deployment_status_replicas_ready"

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def ksm_label(key: str) -> str:
    """The Prometheus label kube-state-metrics writes for a Kubernetes label key.

    `label_` + the key with every character outside [a-zA-Z0-9_] as '_', then
    camelCase as snake_case: `karpenter.sh/capacity-type` becomes
    `label_karpenter_sh_capacity_type`, `eks.amazonaws.com/capacityType`
    becomes `label_eks_amazonaws_com_capacity_type`.
    """
    sanitized = re.sub(r"[^a-zA-Z0-9_]", "_", key)
    return "label_" + re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", sanitized).lower()


def namespace_matcher(namespaces: Sequence[str]) -> str:
    """A label matcher for `namespaces` (`namespace=~"a|b"`), or "" for every namespace."""
    for ns in namespaces:
        if not _NAMESPACE.match(ns):
            raise ValueError(f"namespace {ns!r} is not a valid Kubernetes namespace name")
    if not namespaces:
        return ""
    return f'namespace=~"{"|".join(sorted(set(namespaces)))}"'


def selector(metric: str, *matchers: str) -> str:
    """`metric{m1, m2}` with the empty matchers left out."""
    used = [m for m in matchers if m]
    return f"{metric}{{{', '.join(used)}}}" if used else metric


def dcgm_workload(metric: str) -> str:
    """A DCGM series with `namespace` and `pod` of the pod that uses the GPU.

    dcgm-exporter writes those labels itself. Scraped through its chart's
    ServiceMonitor with `honorLabels: false` (the chart's default), Prometheus
    keeps the target's own `namespace`/`pod` (the exporter's) and renames the
    exporter's to `exported_namespace`/`exported_pod`. Copying them back when
    present makes the same query right under either setting.
    """
    inner = f'label_replace({metric}, "namespace", "$1", "exported_namespace", "(.+)")'
    return f'label_replace({inner}, "pod", "$1", "exported_pod", "(.+)")'


def gpu_by_service(metric: str, service_matcher: str = "") -> str:
    """Per-GPU `metric` of the GPUs that inference pods use, with the pod's `service` label.

    The inference server's series carry `namespace`, `pod` and `service` (from
    its ServiceMonitor); joining on (namespace, pod) keeps only GPUs of serving
    pods. `service_matcher` (e.g. a namespace matcher) filters the server side.
    """
    pods = f"group by (namespace, pod, service) ({selector(metric_names.IN_FLIGHT, service_matcher)})"
    return f"{dcgm_workload(metric)} * on (namespace, pod) group_left (service) {pods}"
