"""What Prometheus really scrapes and alerts on, read from the charts as helm renders them.

Two defects only a real render shows: Karpenter's chart creates its ServiceMonitor
only when `serviceMonitor.enabled` and only when the ServiceMonitor API already
exists at install time (`.Capabilities`), so on a fresh cluster its metrics (pool
limits, NodeClaims) were never scraped; and kube-prometheus-stack scrapes and
alerts on control-plane components EKS never exposes, whose `*Down` alerts fire
forever.
"""

from __future__ import annotations

import pytest

from infra import monitoring
from tests.conftest import STACKS, plan_of, stack_config
from tests.support.rendered import helm_or_skip
from tools.plan import render


@pytest.fixture(scope="module", params=STACKS)
def rendered(request):
    helm = helm_or_skip()
    plan = plan_of(stack_config(request.param))
    return render.render(plan.resources, plan.settings.cluster.version, helm)


def objects(rendering, release: str, kind: str) -> list[dict]:
    return [o for o in rendering.releases[release].objects if o.get("kind") == kind]


def selected(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def test_karpenter_metrics_are_scraped_on_a_fresh_cluster(rendered):
    karpenter = rendered.releases["karpenter"]
    # The release is installed after the ServiceMonitor CRD exists (it depends on monitoring).
    assert "monitoring.coreos.com/v1" in karpenter.api_versions
    (service,) = [s for s in objects(rendered, "karpenter", "Service") if s["metadata"]["name"] == "karpenter"]
    monitors = [
        m
        for m in objects(rendered, "karpenter", "ServiceMonitor")
        if selected(m["spec"]["selector"], service["metadata"]["labels"])
    ]
    assert monitors, "no ServiceMonitor selects the Karpenter controller's Service"
    ports = {p["name"] for p in service["spec"]["ports"]}
    endpoints = [e for m in monitors for e in m["spec"]["endpoints"]]
    assert endpoints and all(e.get("port") in ports for e in endpoints), (endpoints, ports)


HIDDEN_JOBS = ("kube-controller-manager", "kube-scheduler", "kube-etcd", "kube-proxy")
# Alerts of the chart's default rules that can only ever fire on EKS.
HIDDEN_ALERTS = ("KubeControllerManagerDown", "KubeSchedulerDown", "KubeProxyDown", "etcd")


def test_nothing_scrapes_what_eks_does_not_expose(rendered):
    kps = objects(rendered, monitoring.RELEASE, "ServiceMonitor")
    assert kps, "expected kube-prometheus-stack's own ServiceMonitors"
    scraping = [m["metadata"]["name"] for m in kps if any(job in m["metadata"]["name"] for job in HIDDEN_JOBS)]
    assert scraping == []
    alerts = [
        rule["alert"]
        for obj in objects(rendered, monitoring.RELEASE, "PrometheusRule")
        for group in obj["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert "KubeletDown" in alerts, "expected the chart's default alerts (sanity)"
    assert [a for a in alerts if a.startswith(HIDDEN_ALERTS)] == []
