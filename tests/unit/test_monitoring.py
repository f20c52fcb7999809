"""Monitoring and KEDA built alone: values as passed to Helm, the Grafana secret, dashboards and rules."""

from __future__ import annotations

import json

import pytest

from domain import contract, versions
from infra import keda, monitoring
from infra.mapping import monitoring_args
from infra.observability import alerts, dashboards
from tests.unit.helpers import assert_parented, build, named, settings_of


@pytest.fixture(scope="module")
def prod():
    return settings_of("prod")


@pytest.fixture(scope="module")
def resources(prod):
    args = monitoring_args(
        prod.monitoring, storage_class="gp3", depends_on=[], cluster_name=prod.cluster.name, region=prod.region
    )
    return build(lambda: monitoring.Monitoring("mon", args), region="us-east-1")


def test_parented(resources):
    assert_parented(resources, "gpuinf:monitoring:Monitoring")


def test_prometheus_selects_every_namespace_with_config_retention_and_storage(resources, prod):
    release = named(resources, "mon-release").inputs
    assert (release["chart"], release["version"]) == ("kube-prometheus-stack", versions.KUBE_PROMETHEUS_STACK.version)
    spec = release["values"]["prometheus"]["prometheusSpec"]
    for key in ("serviceMonitor", "podMonitor", "rule", "probe"):
        assert spec[f"{key}SelectorNilUsesHelmValues"] is False, key
    prom = prod.monitoring.prometheus
    assert (spec["retention"], spec["scrapeInterval"]) == (prom.retention, prom.scrape_interval)
    assert spec["resources"]["requests"] == {"cpu": prom.requests.cpu, "memory": prom.requests.memory}
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "gp3" and claim["resources"]["requests"]["storage"] == f"{prom.storage_gib}Gi"
    assert spec["nodeSelector"] == {contract.OS_LABEL: "linux", **contract.SYSTEM_LABELS}


def test_prometheus_url_follows_the_fullname_override(resources):
    values = named(resources, "mon-release").inputs["values"]
    assert monitoring.PROMETHEUS_URL.startswith(
        f"http://{values['fullnameOverride']}-prometheus.{monitoring.NAMESPACE}.svc"
    )


def test_grafana_password_is_generated_secret_and_never_in_helm_values(resources):
    release = named(resources, "mon-release").inputs
    grafana = release["values"]["grafana"]
    assert grafana["admin"]["existingSecret"] == monitoring.GRAFANA_SECRET
    assert "adminPassword" not in grafana
    secret = named(resources, "mon-grafana-admin").inputs
    assert secret["stringData"] == {"admin-password": "[secret]", "admin-user": "[secret]"}
    password = named(resources, "mon-grafana-password")
    assert password.type == "random:index/randomPassword:RandomPassword" and password.inputs["length"] >= 24
    assert "offline-" not in json.dumps([r.inputs for r in resources]), "the generated password leaked into inputs"


def test_dashboards_and_rules_are_shipped(resources):
    cm = named(resources, "mon-dashboards").inputs
    label, value = dashboards.DASHBOARD_LABEL
    assert cm["metadata"]["labels"] == {label: value}
    assert cm["data"] == dashboards.config_map_data()
    rules = named(resources, "mon-rules").inputs
    assert rules["kind"] == "PrometheusRule" and rules["spec"]["groups"] == alerts.rule_groups()
    ksm = named(resources, "mon-release").inputs["values"]["kube-state-metrics"]
    # The dashboards' node labels and the GPU health alerts' (GpuNodeSilent reads the GPU count).
    assert ksm["metricLabelsAllowlist"] == [f"nodes=[{','.join(monitoring.KUBE_STATE_METRICS_NODE_LABELS)}]"]
    assert set(dashboards.KUBE_STATE_METRICS_NODE_LABELS) | {contract.INSTANCE_GPU_COUNT_LABEL} == set(
        monitoring.KUBE_STATE_METRICS_NODE_LABELS
    )


def test_dcgm_exporter_runs_on_gpu_nodes_only_with_pod_labels(resources, prod):
    dcgm = named(resources, "mon-dcgm-exporter").inputs
    assert (dcgm["chart"], dcgm["version"]) == ("dcgm-exporter", versions.DCGM_EXPORTER.version)
    values = dcgm["values"]
    assert values["affinity"] == contract.gpu_node_affinity()
    assert values["tolerations"] == contract.gpu_daemon_tolerations()
    assert values["serviceMonitor"]["honorLabels"] is True  # the chart enables its ServiceMonitor by default
    # One string per flag: the chart renders arguments unquoted, so a bare number would
    # become a YAML integer in `args` and the API server would reject the DaemonSet.
    assert values["arguments"] == [
        "--collectors=/etc/dcgm-exporter/default-counters.csv",
        f"--collect-interval={prod.monitoring.dcgm_interval_ms}",
    ]
    assert all(isinstance(arg, str) and arg.startswith("--") for arg in values["arguments"])
    monitor = values["serviceMonitor"]
    assert monitor["scrapeTimeout"] == monitor["interval"] == f"{prod.monitoring.dcgm_interval_ms // 1000}s"
    assert f"{values['image']['repository']}:{values['image']['tag']}" == versions.IMAGES["dcgm-exporter"]


def test_keda_runs_on_system_nodes_with_a_permissionless_pod_identity_role():
    resources = build(lambda: keda.Keda("keda", keda.KedaArgs(cluster_name="gpuinf-dev", depends_on=[])))
    assert_parented(resources, "gpuinf:keda:Keda")
    release = named(resources, "keda-release").inputs
    assert (release["chart"], release["version"], release["namespace"]) == ("keda", versions.KEDA_VERSION, "keda")
    values = release["values"]
    assert values["nodeSelector"] == {contract.OS_LABEL: "linux", **contract.SYSTEM_LABELS}
    assert values["tolerations"] == contract.system_tolerations()
    assert values["image"]["keda"]["tag"] == versions.KEDA_VERSION
    association = named(resources, "keda-operator-pod-identity").inputs
    assert (association["namespace"], association["serviceAccount"]) == ("keda", keda.OPERATOR_SERVICE_ACCOUNT)
    assert named(resources, "keda-operator-role").inputs["name"] == "gpuinf-dev-keda-operator"
    assert not [r for r in resources if r.type == "aws:iam/rolePolicy:RolePolicy"], "batch jobs grant queue access"
