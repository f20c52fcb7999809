"""Every Helm value the program sets is one the pinned chart knows.

Helm ignores unknown keys silently: a misspelt `serviceMonitorSelectorNilUsesHelmValue`
installs fine and does nothing. The charts' own values.yaml files (the chart sources
vendored under charts/, see charts/SOURCES.md) are the contract: every key path we
set must exist there, except below a key the chart leaves as an open map (`{}`,
such as nodeSelector, resources or annotations). Subcharts are checked against their
own values merged with the parent's section for them.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import pytest
import yaml

from domain import versions
from tests.conftest import Plan
from tools.plan.render import CHARTS as VALUES

# release name -> (chart directory, {parent key: subchart directory})
CHARTS: dict[str, tuple[str, dict[str, str]]] = {
    "karpenter": (f"karpenter-{versions.KARPENTER.version}", {}),
    "nvidia-device-plugin": (f"nvidia-device-plugin-{versions.NVIDIA_DEVICE_PLUGIN.version}", {}),
    "keda": (f"keda-{versions.KEDA.version}", {}),
    "keda-add-ons-http": (f"keda-add-ons-http-{versions.KEDA_HTTP_ADD_ON.version}", {}),
    "kube-prometheus-stack": (
        f"kube-prometheus-stack-{versions.KUBE_PROMETHEUS_STACK.version}",
        {
            key: f"kube-prometheus-stack-{versions.KUBE_PROMETHEUS_STACK.version}/charts/{key}"
            for key in ("grafana", "kube-state-metrics", "prometheus-node-exporter")
        },
    ),
    "dcgm-exporter": (f"dcgm-exporter-{versions.DCGM_EXPORTER.version}", {}),
    "aws-load-balancer-controller": (
        f"aws-load-balancer-controller-{versions.AWS_LOAD_BALANCER_CONTROLLER.version}",
        {},
    ),
}

# Keys whose value is a free-form map even where the chart ships a default entry
# (Karpenter's nodeSelector has `kubernetes.io/os: linux`).
OPEN_MAPS = {
    "nodeSelector",
    "labels",
    "annotations",
    "podAnnotations",
    "podLabels",
    "resources",
    # Pod and container security contexts: charts pass them through with toYaml.
    "podSecurityContext",
    "securityContext",
}
# Paths a chart reads that its values.yaml does not list: dependency conditions in Chart.yaml.
CONDITIONS = {"nvidia-device-plugin": {"nfd.enabled"}}  # Chart.yaml: condition: nfd.enabled,gfd.enabled
# Keys a chart's templates read that its values.yaml only shows in a comment: dcgm-exporter 4.8.2's
# templates/metrics-configmap.yaml renders `.Values.customMetrics` (values.yaml: `# customMetrics: |`).
COMMENTED_KEYS = {"dcgm-exporter": {"customMetrics"}}


@cache
def chart_values(directory: str) -> dict[str, Any]:
    return yaml.safe_load((VALUES / directory / "values.yaml").read_text()) or {}


def merged(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = copy.deepcopy(base)
        for key, value in override.items():
            out[key] = merged(out.get(key), value)
        return out
    return copy.deepcopy(override if override is not None else base)


def upstream(release: str) -> dict[str, Any]:
    directory, subcharts = CHARTS[release]
    values = copy.deepcopy(chart_values(directory))
    for key, sub in subcharts.items():
        values[key] = merged(chart_values(sub), values.get(key) or {})
    return values


def unknown_paths(ours: Any, theirs: Any, path: str = "") -> list[str]:
    if not isinstance(ours, dict) or not isinstance(theirs, dict) or theirs == {}:
        return []  # a leaf, a list, or an open map the chart passes through
    found = []
    for key, value in ours.items():
        where = f"{path}.{key}" if path else key
        if key not in theirs:
            found.append(where)
        elif theirs[key] is not None and key not in OPEN_MAPS:
            found += unknown_paths(value, theirs[key], where)
    return found


def test_every_release_has_vendored_values(plan: Plan) -> None:
    assert set(plan.releases) <= {*CHARTS, "karpenter-crd"}
    for directory, subcharts in CHARTS.values():
        for d in (directory, *subcharts.values()):
            assert (VALUES / d / "values.yaml").is_file(), d


@pytest.mark.parametrize("release", sorted(CHARTS))
def test_values_we_set_exist_in_the_pinned_chart(plan: Plan, release: str) -> None:
    if release not in plan.releases:
        assert release == "keda-add-ons-http" and not plan.settings.needs_http_add_on
        pytest.skip(f"{plan.settings.environment} has no service that scales to zero through the HTTP add-on")
    ours = plan.releases[release]["values"]
    allowed = CONDITIONS.get(release, set()) | COMMENTED_KEYS.get(release, set())
    unknown = [p for p in unknown_paths(ours, upstream(release)) if p not in allowed]
    assert unknown == [], f"{release}: keys the chart does not define"


def test_a_misspelt_key_is_caught() -> None:
    values = {
        "prometheus": {"prometheusSpec": {"serviceMonitorSelectorNilUsesHelmValue": False, "nodeSelector": {"a": "b"}}}
    }
    assert unknown_paths(values, upstream("kube-prometheus-stack")) == [
        "prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValue"
    ]
