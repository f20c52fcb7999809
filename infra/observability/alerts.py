"""Alert rules, as the `spec.groups` of a PrometheusRule (the same shape as the
`groups:` of a Prometheus rule file, see `rule_file()`).

Four alerts here, every threshold and wait a field of `AlertParams`, and the
GPU health group of `gpu_health` (XID, ECC, thermal throttling, silent GPU nodes):

- `GpuNodePoolAtLimit`: a NodePool has provisioned as many nvidia.com/gpu as
  its limit allows, so Karpenter launches no more GPU nodes for it.
- `PodsPendingTooLong`: a pod has been Pending longer than it takes to get a
  GPU node and pull an image.
- `InferenceErrorRateHigh`: the share of 5xx answers of a service is above the
  threshold.
- `GpuIdleWhileScaledOut`: the GPUs of a service are nearly idle while its HPA
  (made by KEDA from the ScaledObject) runs more replicas than its minimum:
  paid-for GPUs that the scale-in settings keep around.

The expressions are checked with `promtool check rules` and unit-tested with
`promtool test rules` (tests/observability/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from domain import metric_names
from infra.observability import (
    DCGM_GPU_UTIL,
    GPU_RESOURCE_TYPE,
    KARPENTER_NODEPOOL_LIMIT,
    KARPENTER_NODEPOOL_USAGE,
    KSM_HPA_CURRENT,
    KSM_HPA_INFO,
    KSM_HPA_MIN,
    KSM_POD_PHASE,
    gpu_by_service,
    gpu_health,
    namespace_matcher,
    selector,
)

GPU_NODEPOOL_AT_LIMIT = "GpuNodePoolAtLimit"
PODS_PENDING_TOO_LONG = "PodsPendingTooLong"
INFERENCE_ERROR_RATE_HIGH = "InferenceErrorRateHigh"
GPU_IDLE_WHILE_SCALED_OUT = "GpuIdleWhileScaledOut"
ALERT_NAMES = (
    GPU_NODEPOOL_AT_LIMIT,
    PODS_PENDING_TOO_LONG,
    INFERENCE_ERROR_RATE_HIGH,
    GPU_IDLE_WHILE_SCALED_OUT,
    *gpu_health.ALERT_NAMES,
)

GROUP_CAPACITY = "gpu-inference.capacity"
GROUP_SERVING = "gpu-inference.serving"

# A Prometheus duration, units in descending order (e.g. 5m, 1h30m): the pattern of the
# PrometheusRule CRD's `for`, less the empty string it also admits.
_DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
_SEVERITIES = ("critical", "warning", "info")
_DEPLOYMENT_TARGET = 'scaletargetref_kind="Deployment"'


@dataclass(frozen=True)
class AlertParams:
    """What the alerts watch and when they fire. Defaults suit every stack; override per stack if needed."""

    # Namespaces whose pods and services the pending / error / idle alerts watch; empty: every namespace.
    namespaces: tuple[str, ...] = ()
    # A NodePool must stay at its GPU limit this long (a scale-up that just filled it is not news).
    pool_at_limit_for: str = "5m"
    # A GPU node takes minutes to launch, join and pull a large image: 5m would fire on ordinary scale-ups.
    pending_for: str = "10m"
    # Share of answers with a 5xx status over `error_rate_window`, per service.
    error_rate_threshold: float = 0.05
    error_rate_window: str = "5m"
    error_rate_for: str = "5m"
    # Mean utilisation (percent) of a service's GPUs below which they count as idle.
    gpu_idle_percent: float = 10.0
    # Longer than KEDA's cooldown and the HPA's scale-down stabilisation, so a normal scale-in is not flagged.
    gpu_idle_for: str = "30m"
    severity_pool_at_limit: str = "warning"
    severity_pending: str = "warning"
    severity_error_rate: str = "critical"
    severity_gpu_idle: str = "info"
    # Base URL of the runbook; each alert links to `<base>#<alertname lower-cased>`. None: no link.
    runbook_url: str | None = None

    def __post_init__(self) -> None:
        for name in ("pool_at_limit_for", "pending_for", "error_rate_window", "error_rate_for", "gpu_idle_for"):
            value = getattr(self, name)
            if not value or not _DURATION.match(value):
                raise ValueError(f"{name} must be a Prometheus duration such as 5m or 1h30m (got {value!r})")
        if not 0 < self.error_rate_threshold <= 1:
            raise ValueError(f"error_rate_threshold must be in (0, 1] (got {self.error_rate_threshold})")
        if not 0 < self.gpu_idle_percent <= 100:
            raise ValueError(f"gpu_idle_percent must be in (0, 100] (got {self.gpu_idle_percent})")
        for name in ("severity_pool_at_limit", "severity_pending", "severity_error_rate", "severity_gpu_idle"):
            value = getattr(self, name)
            if value not in _SEVERITIES:
                raise ValueError(f"{name} must be one of {', '.join(_SEVERITIES)} (got {value!r})")
        namespace_matcher(self.namespaces)  # raises on an invalid name


def _rule(
    params: AlertParams, alert: str, expr: str, wait: str, severity: str, summary: str, description: str, action: str
) -> dict[str, Any]:
    annotations = {"summary": summary, "description": description, "runbook": action}
    if params.runbook_url:
        annotations["runbook_url"] = f"{params.runbook_url}#{alert.lower()}"
    return {
        "alert": alert,
        "expr": expr,
        "for": wait,
        "labels": {"severity": severity},
        "annotations": annotations,
    }


def gpu_nodepool_at_limit_expr() -> str:
    """NodePools whose nvidia.com/gpu usage has reached a (non-zero) limit; value: GPUs provisioned."""
    gpu = f'resource_type="{GPU_RESOURCE_TYPE}"'
    usage = f"max by (nodepool) ({selector(KARPENTER_NODEPOOL_USAGE, gpu)})"
    # A limit of 0 is a pool switched off on purpose, not one that ran out.
    limit = f"max by (nodepool) ({selector(KARPENTER_NODEPOOL_LIMIT, gpu)} > 0)"
    return f"{usage} >= on (nodepool) {limit}"


def pods_pending_expr(params: AlertParams) -> str:
    """Pods in phase Pending; value 1."""
    pending = selector(KSM_POD_PHASE, namespace_matcher(params.namespaces), 'phase="Pending"')
    return f"max by (namespace, pod) ({pending}) == 1"


def error_rate_expr(params: AlertParams) -> str:
    """Per service, the share of answers with a 5xx status; value: that share (0-1)."""
    ns = namespace_matcher(params.namespaces)
    window = params.error_rate_window
    errors = selector(metric_names.REQUESTS_TOTAL, ns, 'status=~"5.."')
    total = selector(metric_names.REQUESTS_TOTAL, ns)
    return (
        f"sum by (namespace, service) (rate({errors}[{window}]))\n"
        f"/\n"
        f"sum by (namespace, service) (rate({total}[{window}]))\n"
        f"> {params.error_rate_threshold:g}"
    )


def gpu_idle_expr(params: AlertParams) -> str:
    """Per service, mean GPU utilisation when below the idle threshold while the HPA is above its minimum.

    The HPA is tied to the service by its scale target: the InferenceService
    names its Deployment, Service and ScaledObject alike (infra/workloads/inference.py).
    """
    ns = namespace_matcher(params.namespaces)
    util = f"avg by (namespace, service) ({gpu_by_service(DCGM_GPU_UTIL, ns)})"
    scaled_out = (
        f"{selector(KSM_HPA_CURRENT, ns)} > on (namespace, horizontalpodautoscaler) {selector(KSM_HPA_MIN, ns)}"
    )
    targets = selector(KSM_HPA_INFO, ns, _DEPLOYMENT_TARGET)
    by_service = (
        f"label_replace(({scaled_out}) * on (namespace, horizontalpodautoscaler) group_left (scaletargetref_name) "
        f'{targets}, "service", "$1", "scaletargetref_name", "(.+)")'
    )
    return f"{util} < {params.gpu_idle_percent:g}\nand on (namespace, service)\n{by_service}"


def rule_groups(params: AlertParams | None = None) -> list[dict[str, Any]]:
    """PrometheusRule `spec.groups`: capacity (NodePool limit, pending pods) and serving (errors, idle GPUs)."""
    p = params or AlertParams()
    capacity = [
        _rule(
            p,
            GPU_NODEPOOL_AT_LIMIT,
            gpu_nodepool_at_limit_expr(),
            p.pool_at_limit_for,
            p.severity_pool_at_limit,
            "NodePool {{ $labels.nodepool }} is at its nvidia.com/gpu limit",
            "NodePool {{ $labels.nodepool }} has provisioned {{ $value }} GPUs, its limit: Karpenter launches no "
            "more GPU nodes for it, and GPU pods that need a new node stay Pending.",
            "Check pending GPU pods; raise the pool's maxGpus in the stack config if the demand is real, "
            "or lower the services' maxReplicas.",
        ),
        _rule(
            p,
            PODS_PENDING_TOO_LONG,
            pods_pending_expr(p),
            p.pending_for,
            p.severity_pending,
            "Pod {{ $labels.namespace }}/{{ $labels.pod }} has been Pending for more than " + p.pending_for,
            "Pod {{ $labels.namespace }}/{{ $labels.pod }} is still Pending: no node fits it, the NodePool is "
            "at its limit, or its image or volume cannot be pulled or attached.",
            "kubectl describe pod, then the Karpenter controller logs; see also GpuNodePoolAtLimit.",
        ),
    ]
    serving = [
        _rule(
            p,
            INFERENCE_ERROR_RATE_HIGH,
            error_rate_expr(p),
            p.error_rate_for,
            p.severity_error_rate,
            "Service {{ $labels.namespace }}/{{ $labels.service }} answers {{ $value | humanizePercentage }} with 5xx",
            f"More than {p.error_rate_threshold:.0%} of the requests to {{{{ $labels.namespace }}}}/"
            f"{{{{ $labels.service }}}} over {p.error_rate_window} failed with a server error.",
            "Check the server pods' logs and restarts, GPU health (DCGM) and recent rollouts.",
        ),
        _rule(
            p,
            GPU_IDLE_WHILE_SCALED_OUT,
            gpu_idle_expr(p),
            p.gpu_idle_for,
            p.severity_gpu_idle,
            "GPUs of {{ $labels.namespace }}/{{ $labels.service }} are idle while it runs above minReplicas",
            f"The GPUs of {{{{ $labels.namespace }}}}/{{{{ $labels.service }}}} averaged "
            f'{{{{ $value | printf "%.1f" }}}}% utilisation (below {p.gpu_idle_percent:g}%) for '
            f"{p.gpu_idle_for} while its HPA kept more replicas than its minimum.",
            "Check the ScaledObject's target (targetInFlight), cooldown and scale-down policy; idle GPU nodes "
            "cost money until they are consolidated.",
        ),
    ]
    return [
        {"name": GROUP_CAPACITY, "rules": capacity},
        {"name": GROUP_SERVING, "rules": serving},
        gpu_health.rule_group(),  # XID, ECC, thermal, silent GPU nodes (infra/observability/gpu_health.py)
    ]


def rule_file(params: AlertParams | None = None) -> dict[str, Any]:
    """The same groups as a Prometheus rule file (`groups:`), for promtool and plain Prometheus."""
    return {"groups": rule_groups(params)}
