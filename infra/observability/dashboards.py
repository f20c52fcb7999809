"""Grafana dashboards, built with grafana-foundation-sdk (types for Grafana 11.6,
whose dashboard JSON Grafana 12 loads as is).

`dashboards()` returns the JSON models by file name; `config_map_data()` the
same as strings for a ConfigMap labelled `DASHBOARD_LABEL`, which the Grafana
sidecar of kube-prometheus-stack watches (`sidecar.dashboards.label` /
`labelValue` in its values, set from the same constant).

Panels query Prometheus through a datasource variable, never a fixed UID, so
the JSON works in any Grafana whatever its datasources are called. The node
panels read `kube_node_labels`, which carries a node label only when
kube-state-metrics' `metricLabelsAllowlist` names it: build that from
`KUBE_STATE_METRICS_NODE_LABELS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, VariableRefresh, VariableSort

from domain import contract, metric_names
from infra.observability import (
    DCGM_FB_FREE,
    DCGM_FB_USED,
    DCGM_GPU_UTIL,
    DCGM_NODE_LABEL,
    GPU_RESOURCE_TYPE,
    KARPENTER_NODEPOOL_LIMIT,
    KARPENTER_NODEPOOL_USAGE,
    KSM_DEPLOYMENT_READY,
    KSM_HPA_DESIRED,
    KSM_HPA_INFO,
    KSM_NODE_LABELS,
    KSM_POD_PHASE,
    gpu_by_service,
    ksm_label,
    selector,
)

# The Grafana sidecar's default in kube-prometheus-stack: ConfigMaps with this
# label (in any namespace the sidecar searches) are loaded as dashboards.
DASHBOARD_LABEL = ("grafana_dashboard", "1")

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
# Managed node groups mark capacity with EKS's label, not Karpenter's.
EKS_CAPACITY_TYPE_LABEL = "eks.amazonaws.com/capacityType"
# Node labels the dashboards read from kube_node_labels: kube-state-metrics'
# `metricLabelsAllowlist` must list them (`nodes=[a,b,...]`).
KUBE_STATE_METRICS_NODE_LABELS = (
    contract.NODEPOOL_LABEL,
    contract.CAPACITY_TYPE_LABEL,
    INSTANCE_TYPE_LABEL,
    EKS_CAPACITY_TYPE_LABEL,
)

OVERVIEW_FILE = "gpu-inference-overview.json"
OVERVIEW_UID = "gpu-inference-overview"
DATASOURCE_VARIABLE = "datasource"
NAMESPACE_VARIABLE = "namespace"
# Only in panel queries; a test substitutes real values before running them.
RATE_INTERVAL = "$__rate_interval"

_DATASOURCE = DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VARIABLE}}}")
_NS = f'namespace=~"${NAMESPACE_VARIABLE}"'
_PENDING = 'phase="Pending"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    stacked: bool = False
    width: int = 12


# Panel titles are part of the interface: tests and runbooks refer to them.
NODES_BY_TYPE = "Nodes by instance type and capacity type"
NODES_BY_POOL = "Nodes by NodePool"
PENDING_PODS = "Pending pods"
GPU_USAGE_VS_LIMIT = "GPUs per NodePool: usage vs limit"
REQUEST_RATE = "Requests/s by service and status"
LATENCY = "Latency p50 / p99 by service"
IN_FLIGHT = "Requests in flight and queued"
REPLICAS = "Replicas: desired (HPA) vs ready"
GPU_UTIL_BY_NODE = "GPU utilisation by node"
GPU_UTIL_BY_POD = "GPU utilisation by pod"
GPU_MEMORY_BY_NODE = "GPU memory used by node"
GPU_MEMORY_BY_POD = "GPU memory used by pod"


def _capacity_type(expr: str) -> str:
    """`expr` with one `capacity_type` label: Karpenter's node label, else EKS's (lower-cased by value match)."""
    karpenter = f'label_replace({expr}, "capacity_type", "$1", "{ksm_label(contract.CAPACITY_TYPE_LABEL)}", "(.+)")'
    # EKS spells it ON_DEMAND / SPOT; Karpenter on-demand / spot.
    eks = ksm_label(EKS_CAPACITY_TYPE_LABEL)
    on_demand = f'label_replace({karpenter}, "capacity_type", "on-demand", "{eks}", "ON_DEMAND")'
    return f'label_replace({on_demand}, "capacity_type", "spot", "{eks}", "SPOT")'


def _hpa_targets() -> str:
    """HPA info with the Deployment it scales as `deployment` (KEDA's HPAs included)."""
    info = selector(KSM_HPA_INFO, _NS, 'scaletargetref_kind="Deployment"')
    return f'label_replace({info}, "deployment", "$1", "scaletargetref_name", "(.+)")'


def _latency(quantile: float) -> str:
    buckets = selector(f"{metric_names.REQUEST_DURATION}_bucket", _NS)
    return f"histogram_quantile({quantile}, sum by (namespace, service, le) (rate({buckets}[{RATE_INTERVAL}])))"


def _capacity_panels() -> list[PanelSpec]:
    instance_type = ksm_label(INSTANCE_TYPE_LABEL)
    nodepool = ksm_label(contract.NODEPOOL_LABEL)
    gpu = f'resource_type="{GPU_RESOURCE_TYPE}"'
    return [
        PanelSpec(
            NODES_BY_TYPE,
            "Nodes in the cluster by EC2 instance type and capacity type (on-demand / spot), from kube_node_labels.",
            (
                Query(
                    f"count by ({instance_type}, capacity_type) ({_capacity_type(KSM_NODE_LABELS)})",
                    f"{{{{{instance_type}}}}} {{{{capacity_type}}}}",
                ),
            ),
            stacked=True,
        ),
        PanelSpec(
            NODES_BY_POOL,
            "Nodes per Karpenter NodePool; nodes of the managed system node group have no pool.",
            (Query(f"count by ({nodepool}) ({KSM_NODE_LABELS})", f"{{{{{nodepool}}}}}"),),
            stacked=True,
        ),
        PanelSpec(
            PENDING_PODS,
            "Pods in phase Pending by namespace: waiting for a node (Karpenter), an image pull or a volume.",
            (Query(f"sum by (namespace) ({selector(KSM_POD_PHASE, _NS, _PENDING)})", "{{namespace}}"),),
            stacked=True,
        ),
        PanelSpec(
            GPU_USAGE_VS_LIMIT,
            "nvidia.com/gpu provisioned by each Karpenter NodePool against its limit; at the limit Karpenter "
            "launches no more GPU nodes for that pool.",
            (
                Query(
                    f"max by (nodepool) ({selector(KARPENTER_NODEPOOL_USAGE, gpu)})",
                    "{{nodepool}} usage",
                ),
                Query(
                    f"max by (nodepool) ({selector(KARPENTER_NODEPOOL_LIMIT, gpu)})",
                    "{{nodepool}} limit",
                ),
            ),
        ),
    ]


def _traffic_panels() -> list[PanelSpec]:
    requests = selector(metric_names.REQUESTS_TOTAL, _NS)
    return [
        PanelSpec(
            REQUEST_RATE,
            "Answered prediction requests per second, by service and HTTP status.",
            (
                Query(
                    f"sum by (namespace, service, status) (rate({requests}[{RATE_INTERVAL}]))",
                    "{{service}} {{status}}",
                ),
            ),
            unit="reqps",
            stacked=True,
        ),
        PanelSpec(
            LATENCY,
            "Latency of answered predictions (status 200), from the server's histogram.",
            (
                Query(_latency(0.5), "{{service}} p50"),
                Query(_latency(0.99), "{{service}} p99"),
            ),
            unit="s",
        ),
        PanelSpec(
            IN_FLIGHT,
            "Requests accepted and not yet answered (the autoscaling signal) and those waiting for a batch.",
            (
                Query(
                    f"sum by (namespace, service) ({selector(metric_names.IN_FLIGHT, _NS)})",
                    "{{service}} in flight",
                ),
                Query(
                    f"sum by (namespace, service) ({selector(metric_names.QUEUE_DEPTH, _NS)})",
                    "{{service}} queued",
                ),
            ),
        ),
        PanelSpec(
            REPLICAS,
            "Replicas the HorizontalPodAutoscaler (made by KEDA from the ScaledObject) wants against the "
            "Deployment's ready replicas; a lasting gap is pods waiting for GPU nodes.",
            (
                Query(
                    f"{selector(KSM_HPA_DESIRED, _NS)} * on (namespace, horizontalpodautoscaler) "
                    f"group_left (deployment) {_hpa_targets()}",
                    "{{deployment}} desired",
                ),
                Query(
                    f"{selector(KSM_DEPLOYMENT_READY, _NS)} and on (namespace, deployment) {_hpa_targets()}",
                    "{{deployment}} ready",
                ),
            ),
        ),
    ]


def _gpu_panels() -> list[PanelSpec]:
    def memory_fraction(by: str, used: str, free: str) -> str:
        return f"sum by ({by}) ({used}) / (sum by ({by}) ({used}) + sum by ({by}) ({free}))"

    return [
        PanelSpec(
            GPU_UTIL_BY_NODE,
            "Mean GPU utilisation of each GPU node (DCGM).",
            (Query(f"avg by ({DCGM_NODE_LABEL}) ({DCGM_GPU_UTIL})", f"{{{{{DCGM_NODE_LABEL}}}}}"),),
            unit="percent",
        ),
        PanelSpec(
            GPU_UTIL_BY_POD,
            "GPU utilisation of the GPUs each inference pod uses (DCGM pod mapping).",
            (
                Query(
                    f"max by (namespace, service, pod) ({gpu_by_service(DCGM_GPU_UTIL, _NS)})",
                    "{{service}} {{pod}}",
                ),
            ),
            unit="percent",
        ),
        PanelSpec(
            GPU_MEMORY_BY_NODE,
            "Share of GPU framebuffer memory in use on each GPU node (DCGM).",
            (
                Query(
                    memory_fraction(DCGM_NODE_LABEL, DCGM_FB_USED, DCGM_FB_FREE),
                    f"{{{{{DCGM_NODE_LABEL}}}}}",
                ),
            ),
            unit="percentunit",
        ),
        PanelSpec(
            GPU_MEMORY_BY_POD,
            "GPU framebuffer memory used by each inference pod (DCGM pod mapping; MiB reported, shown in bytes).",
            (
                Query(
                    f"sum by (namespace, service, pod) ({gpu_by_service(DCGM_FB_USED, _NS)}) * 1024 * 1024",
                    "{{service}} {{pod}}",
                ),
            ),
            unit="bytes",
        ),
    ]


ROWS: tuple[tuple[str, Callable[[], list[PanelSpec]]], ...] = (
    ("Capacity", _capacity_panels),
    ("Traffic and scaling", _traffic_panels),
    ("GPUs", _gpu_panels),
)


def _panel(panel_id: int, spec: PanelSpec) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(_DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(8)
        .min(0)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    if spec.stacked:
        panel = panel.stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL)).fill_opacity(20)
    for ref_id, query in zip("ABCDEFGH", spec.queries, strict=False):
        panel = panel.with_target(
            prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref_id).datasource(_DATASOURCE)
        )
    return panel


def _variables() -> list[Any]:
    datasource = dash.DatasourceVariable(DATASOURCE_VARIABLE).label("Prometheus").type("prometheus")
    namespace = (
        dash.QueryVariable(NAMESPACE_VARIABLE)
        .label("Namespace")
        .datasource(_DATASOURCE)
        .query(f"label_values({KSM_POD_PHASE}, namespace)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    return [datasource, namespace]


def overview() -> dict[str, Any]:
    """The one-page view of the platform: capacity, traffic and scaling, GPUs."""
    builder = (
        dash.Dashboard("GPU inference: overview")
        .uid(OVERVIEW_UID)
        .description("Karpenter capacity, inference traffic and autoscaling, and GPU use (gpu-inference).")
        .tags(["gpu-inference"])
        .time("now-3h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .readonly()
    )
    for variable in _variables():
        builder = builder.with_variable(variable)
    panel_id = 0
    for title, panels in ROWS:
        panel_id += 1
        builder = builder.with_row(dash.Row(title).id(panel_id))
        for spec in panels():
            panel_id += 1
            builder = builder.with_panel(_panel(panel_id, spec))
    # Round-trip through the SDK's encoder so the result is plain JSON data.
    return json.loads(json.dumps(builder.build(), cls=JSONEncoder))


def dashboards() -> dict[str, dict[str, Any]]:
    """Dashboard JSON models by file name."""
    return {OVERVIEW_FILE: overview()}


def config_map_data() -> dict[str, str]:
    """`data` of the ConfigMap the Grafana sidecar loads: file name -> dashboard JSON."""
    return {name: json.dumps(model, indent=2, sort_keys=True) for name, model in sorted(dashboards().items())}


def panel_queries(model: dict[str, Any]) -> dict[str, list[str]]:
    """Every panel's query expressions by panel title (rows included, collapsed or not)."""
    found: dict[str, list[str]] = {}

    def visit(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            if panel.get("type") == "row":
                visit(panel.get("panels") or [])
                continue
            found[panel["title"]] = [t["expr"] for t in panel.get("targets") or [] if "expr" in t]

    visit(model.get("panels") or [])
    return found
