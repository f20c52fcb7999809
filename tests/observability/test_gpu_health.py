"""GPU health: the DCGM counters the alerts read are exported, and reach the rendered exporter.

The promtool cases of the alerts are in alerts_test.yaml (test_alerts.py runs them).
"""

from __future__ import annotations

import re

import promql_parser

from domain import contract
from infra import monitoring
from infra.observability import gpu_health
from tests.conftest import plan_of, stack_config
from tests.support.rendered import helm_or_skip
from tools.plan import render

CHART_CONFIGMAP = render.CHARTS / "dcgm-exporter-4.8.2" / "templates" / "metrics-configmap.yaml"


def _chart_counters() -> tuple[set[str], set[str]]:
    """(exported, commented out) field names of the chart's default counters ConfigMap."""
    text = CHART_CONFIGMAP.read_text().split("{{- else }}", 1)[1]
    exported = set(re.findall(r"^\s+(DCGM_[A-Z0-9_]+)\s*,", text, re.M))
    commented = set(re.findall(r"^\s+#\s*(DCGM_[A-Z0-9_]+)\s*,", text, re.M))
    return exported, commented


def test_our_counters_are_the_charts_defaults_plus_the_health_counters() -> None:
    exported, commented = _chart_counters()
    ours = [field for field, _, _ in gpu_health.COUNTERS]
    assert len(ours) == len(set(ours))
    assert {f for f, _, _ in gpu_health.DEFAULT_COUNTERS} == exported
    added = {f for f, _, _ in gpu_health.HEALTH_COUNTERS}
    assert added == {"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_THERMAL_VIOLATION"}
    assert added <= commented, "a health counter the exporter does not list by that name"
    assert all(kind in ("gauge", "counter") for _, kind, _ in gpu_health.COUNTERS)


def test_every_dcgm_metric_an_alert_reads_is_exported() -> None:
    exported = {field for field, _, _ in gpu_health.COUNTERS}
    for rule in gpu_health.rule_group()["rules"]:
        promql_parser.parse(rule["expr"])
        used = set(re.findall(r"DCGM_[A-Z0-9_]+", rule["expr"]))
        assert used and used <= exported, f"{rule['alert']} reads {used - exported}, which is not collected"


def test_the_gpu_count_label_reaches_kube_state_metrics() -> None:
    assert contract.INSTANCE_GPU_COUNT_LABEL in monitoring.KUBE_STATE_METRICS_NODE_LABELS
    plan = plan_of(stack_config("dev"))
    [release] = [r for r in plan.resources if r.type == render.HELM_RELEASE and r.inputs["name"] == monitoring.RELEASE]
    allow = release.inputs["values"]["kube-state-metrics"]["metricLabelsAllowlist"]
    assert allow == [f"nodes=[{','.join(monitoring.KUBE_STATE_METRICS_NODE_LABELS)}]"]
    assert contract.INSTANCE_GPU_COUNT_LABEL in allow[0]


def test_the_rendered_exporter_collects_the_health_counters() -> None:
    helm = helm_or_skip()
    plan = plan_of(stack_config("dev"))
    rendering = render.render(plan.resources, plan.settings.cluster.version, helm)
    objects = rendering.releases["dcgm-exporter"].objects
    [config_map] = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "exporter-metrics-config-map"
    ]
    csv = config_map["data"]["metrics"]
    assert csv.strip() == gpu_health.counters_csv().strip()
    for field in ("DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_THERMAL_VIOLATION"):
        assert re.search(rf"^{field}, ", csv, re.M), field
    [daemonset] = [o for o in objects if o["kind"] == "DaemonSet"]
    args = daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--collectors=/etc/dcgm-exporter/default-counters.csv" in args
    mounts = daemonset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {
        "name": "exporter-metrics-volume",
        "mountPath": "/etc/dcgm-exporter/default-counters.csv",
        "subPath": "default-counters.csv",
    } in mounts
