"""Dashboards: the panels we promise, a datasource variable instead of fixed UIDs, ConfigMap data,
the kube-state-metrics label allowlist, and every query run by a real Prometheus against a scraped
fake cluster (see conftest.py), where the joins must find the series they are written for.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import promql_parser
import pytest

from domain.settings import MonitoringSettings
from infra.mapping import monitoring_args
from infra.monitoring import KUBE_STATE_METRICS_NODE_LABELS, stack_values
from infra.observability import alerts, dashboards, ksm_label
from infra.observability.dashboards import (
    DASHBOARD_LABEL,
    DATASOURCE_VARIABLE,
    OVERVIEW_FILE,
    panel_queries,
)
from tests.support.prometheus import PrometheusServer, Sample

REQUIRED_PANELS = (
    dashboards.NODES_BY_TYPE,
    dashboards.REQUEST_RATE,
    dashboards.LATENCY,
    dashboards.REPLICAS,
    dashboards.PENDING_PODS,
    dashboards.GPU_UTIL_BY_NODE,
    dashboards.GPU_UTIL_BY_POD,
    dashboards.GPU_MEMORY_BY_NODE,
    dashboards.GPU_MEMORY_BY_POD,
    dashboards.GPU_USAGE_VS_LIMIT,
)
# What Grafana would put in place of the template variables.
SUBSTITUTIONS = {"$__rate_interval": "30s", f"${dashboards.NAMESPACE_VARIABLE}": ".*"}


def overview() -> dict[str, Any]:
    return dashboards.dashboards()[OVERVIEW_FILE]


def concrete(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr.replace("$1", ""), f"unsubstituted variable in {expr}"
    return expr


def all_exprs() -> list[tuple[str, str]]:
    return [(title, expr) for title, exprs in panel_queries(overview()).items() for expr in exprs]


def walk(node: Any, key: str) -> list[Any]:
    """Every value stored under `key` anywhere in a JSON tree."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found.extend(walk(v, key))
    elif isinstance(node, list):
        for item in node:
            found.extend(walk(item, key))
    return found


def test_overview_has_the_promised_panels_each_with_queries() -> None:
    queries = panel_queries(overview())
    missing = [title for title in REQUIRED_PANELS if title not in queries]
    assert missing == [], f"panels missing from {OVERVIEW_FILE}: {missing}; found {sorted(queries)}"
    empty = [title for title, exprs in queries.items() if not exprs]
    assert empty == [], f"panels without a query: {empty}"
    assert len(queries[dashboards.LATENCY]) == 2
    assert all("histogram_quantile" in expr for expr in queries[dashboards.LATENCY])
    assert [e.split("(")[1] for e in queries[dashboards.LATENCY]] == ["0.5, sum by ", "0.99, sum by "]


def test_datasource_is_a_variable_and_no_uid_is_hard_coded() -> None:
    model = overview()
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables[DATASOURCE_VARIABLE]["type"] == "datasource"
    assert variables[DATASOURCE_VARIABLE]["query"] == "prometheus"
    refs = walk(model["panels"], "datasource")
    assert refs, "no panel names a datasource"
    wrong = [ref for ref in refs if ref != {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}]
    assert wrong == [], f"datasource references that are not the variable: {wrong}"


def test_panel_ids_and_positions_are_unique() -> None:
    panels = overview()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    positions = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels]
    assert len(positions) == len(set(positions)), f"overlapping panels: {positions}"
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)


def test_config_map_data_is_the_dashboards_as_json() -> None:
    data = dashboards.config_map_data()
    assert sorted(data) == sorted(dashboards.dashboards())
    for name, text in data.items():
        assert name.endswith(".json")
        assert json.loads(text) == dashboards.dashboards()[name]
        # A ConfigMap holds at most 1 MiB in all.
        assert len(text.encode()) < 512 * 1024, f"{name} is {len(text)} bytes"
    assert json.loads(data[OVERVIEW_FILE])["uid"] == dashboards.OVERVIEW_UID


def test_helm_values_use_the_dashboard_label_and_node_label_allowlist() -> None:
    values = stack_values(monitoring_args(MonitoringSettings(), storage_class="gp3", depends_on=[]), "gp3")
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    assert (sidecar["label"], sidecar["labelValue"]) == DASHBOARD_LABEL == ("grafana_dashboard", "1")
    allowlist = values["kube-state-metrics"]["metricLabelsAllowlist"]
    assert allowlist == [f"nodes=[{','.join(KUBE_STATE_METRICS_NODE_LABELS)}]"]


def test_every_node_label_a_query_reads_is_allowlisted() -> None:
    """kube_node_labels only has allowlisted labels: a query reading any other finds nothing."""
    allowed = {ksm_label(key) for key in KUBE_STATE_METRICS_NODE_LABELS}
    exprs = [expr for _, expr in all_exprs()] + [r["expr"] for g in alerts.rule_groups() for r in g["rules"]]
    used = {label for expr in exprs for label in re.findall(r"\blabel_[a-z0-9_]+", expr)} - {"label_replace"}
    assert used, "no query reads a node label"
    assert used <= allowed, f"node labels read but not in KUBE_STATE_METRICS_NODE_LABELS: {used - allowed}"


@pytest.mark.parametrize(
    ("key", "label"),
    [
        ("karpenter.sh/nodepool", "label_karpenter_sh_nodepool"),
        ("karpenter.sh/capacity-type", "label_karpenter_sh_capacity_type"),
        ("node.kubernetes.io/instance-type", "label_node_kubernetes_io_instance_type"),
        ("eks.amazonaws.com/capacityType", "label_eks_amazonaws_com_capacity_type"),
    ],
)
def test_ksm_label_names(key: str, label: str) -> None:
    assert ksm_label(key) == label


def test_every_query_parses() -> None:
    for title, expr in all_exprs():
        try:
            promql_parser.parse(concrete(expr))
        except ValueError as error:
            pytest.fail(f"{title}: {error}\n{expr}")


# Against a real Prometheus that scraped the fake cluster.


def test_every_query_runs_and_finds_series(cluster_prometheus: PrometheusServer) -> None:
    empty = []
    for title, expr in all_exprs():
        result = cluster_prometheus.query(concrete(expr))  # raises on a query Prometheus refuses
        assert isinstance(result, list), f"{title}: expected a vector, got {result!r}"
        if not result:
            empty.append(f"{title}: {expr}")
    assert empty == [], "queries that found nothing in the fake cluster:\n" + "\n".join(empty)


def _by(result: Any, *labels: str) -> dict[tuple[str, ...], float]:
    assert isinstance(result, list)
    return {tuple(s.labels.get(label, "") for label in labels): s.value for s in result if isinstance(s, Sample)}


def test_node_query_merges_karpenter_and_eks_capacity_types(cluster_prometheus: PrometheusServer) -> None:
    (expr,) = panel_queries(overview())[dashboards.NODES_BY_TYPE]
    found = _by(cluster_prometheus.query(concrete(expr)), ksm_label(dashboards.INSTANCE_TYPE_LABEL), "capacity_type")
    assert found == {("g5.xlarge", "spot"): 1, ("g5.xlarge", "on-demand"): 1, ("m7i.large", "on-demand"): 1}


def test_gpu_by_pod_query_joins_renamed_dcgm_labels(cluster_prometheus: PrometheusServer) -> None:
    """The fake dcgm target is scraped like the chart's ServiceMonitor (honorLabels false)."""
    raw = cluster_prometheus.query('DCGM_FI_DEV_GPU_UTIL{exported_pod="svc-a-1"}')
    assert isinstance(raw, list) and raw and raw[0].labels["pod"] == "dcgm-exporter-x1", raw
    (expr,) = panel_queries(overview())[dashboards.GPU_UTIL_BY_POD]
    found = _by(cluster_prometheus.query(concrete(expr)), "service", "pod")
    assert found == {("svc-a", "svc-a-1"): 3, ("svc-a", "svc-a-2"): 5, ("svc-b", "svc-b-1"): 85}


def test_replica_queries_cover_only_autoscaled_deployments(cluster_prometheus: PrometheusServer) -> None:
    desired, ready = panel_queries(overview())[dashboards.REPLICAS]
    assert _by(cluster_prometheus.query(concrete(desired)), "deployment") == {("svc-a",): 3, ("svc-b",): 1}
    assert _by(cluster_prometheus.query(concrete(ready)), "deployment") == {("svc-a",): 2, ("svc-b",): 1}


def test_latency_query_is_a_number_per_service_once_traffic_is_seen(cluster_prometheus: PrometheusServer) -> None:
    # The fake servers' counters are constant, so rates are 0 and quantiles NaN; over all time they are not.
    expr = panel_queries(overview())[dashboards.LATENCY][1].replace("rate(", "increase(")
    found = _by(cluster_prometheus.query(concrete(expr).replace("[30s]", "[1h]")), "service")
    assert sorted(found) == [("svc-a",), ("svc-b",)]
    assert all(math.isnan(v) or 0 < v <= 0.025 for v in found.values()), found


def test_alert_expressions_on_scraped_series(cluster_prometheus: PrometheusServer) -> None:
    exprs = {r["alert"]: r["expr"] for g in alerts.rule_groups() for r in g["rules"]}
    assert _by(cluster_prometheus.query(exprs[alerts.GPU_NODEPOOL_AT_LIMIT]), "nodepool") == {("gpu",): 2}
    assert _by(cluster_prometheus.query(exprs[alerts.PODS_PENDING_TOO_LONG]), "pod") == {("svc-a-3",): 1}
    idle = _by(cluster_prometheus.query(exprs[alerts.GPU_IDLE_WHILE_SCALED_OUT]), "namespace", "service")
    assert idle == {("inference", "svc-a"): 4}
