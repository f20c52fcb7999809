"""Inference pods accept traffic only from what needs them, and the cluster enforces it.

Evaluated the way the NetworkPolicy API defines it (networking.k8s.io/v1: a pod
selected by a policy with `Ingress` in policyTypes accepts only what some
ingress rule's `from` peer and `ports` allow; a peer with both selectors needs
both to match; an empty selector matches all). The allowed peers are checked
against the pods that really send the traffic: Prometheus pods (the operator
labels them `app.kubernetes.io/name: prometheus`, prometheus-operator
pkg/prometheus/server/statefulset.go), the HTTP add-on's interceptor pods as
its chart renders them, and the load generator.
"""

from __future__ import annotations

import ipaddress

import pytest

from domain import contract
from infra import keda_http
from tests.conftest import STACKS, plan_of, stack_config
from tests.support.rendered import helm_or_skip
from tools.plan import render


def matches(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def admits(policy: dict, namespace: str, pod_labels: dict, port: str) -> bool:
    namespace_labels = {contract.NAMESPACE_NAME_LABEL: namespace}
    for rule in policy["spec"].get("ingress", []):
        if not any(p.get("port") == port for p in rule.get("ports", [])):
            continue
        for peer in rule.get("from", []):
            if "ipBlock" in peer:
                continue  # addresses, not pods: checked against the pods' subnets below
            if "namespaceSelector" in peer:
                ns_ok = matches(peer["namespaceSelector"], namespace_labels)
            else:  # a podSelector alone selects pods of the policy's own namespace
                ns_ok = namespace == policy["metadata"]["namespace"]
            pod_ok = matches(peer["podSelector"], pod_labels) if "podSelector" in peer else True
            if ns_ok and pod_ok:
                return True
    return False


@pytest.fixture(scope="module", params=STACKS)
def plan(request):
    return plan_of(stack_config(request.param))


def policies_for(plan, namespace: str, pod_labels: dict) -> list[dict]:
    return [
        p
        for p in plan.objects("NetworkPolicy").values()
        if p["metadata"]["namespace"] == namespace and matches(p["spec"]["podSelector"], pod_labels)
    ]


def test_the_vpc_cni_enforces_network_policies(plan):
    cluster = plan.one("eks:index:Cluster")
    assert cluster.inputs["vpcCniOptions"]["enableNetworkPolicy"] is True


def test_each_service_admits_prometheus_its_clients_and_nothing_else(plan):
    loadgen = plan.objects("Deployment").get("loadgen")
    for name, svc in plan.settings.inference.items():
        dep = plan.objects("Deployment")[name]
        namespace = dep["metadata"]["namespace"]
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        ports = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        (policy,) = policies_for(plan, namespace, pod_labels)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert {p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]} <= ports
        assert admits(policy, contract.MONITORING_NAMESPACE, contract.PROMETHEUS_POD_LABELS, "http")
        if loadgen is not None:
            assert admits(
                policy, loadgen["metadata"]["namespace"], loadgen["spec"]["template"]["metadata"]["labels"], "http"
            )
        # Anything else, even in the same namespace or in monitoring, is refused.
        assert not admits(policy, namespace, {"app.kubernetes.io/name": "something-else"}, "http")
        assert not admits(policy, contract.MONITORING_NAMESPACE, {"app.kubernetes.io/name": "grafana"}, "http")
        assert not admits(policy, "default", {}, "http")
        wakes = svc.scaling.wakes_through_interceptor
        assert admits(policy, keda_http.NAMESPACE, keda_http.INTERCEPTOR_POD_LABELS, "http") is wakes, name


def test_the_interceptor_the_policies_admit_is_the_one_the_chart_runs():
    helm = helm_or_skip()
    plan = plan_of(stack_config("dev"))
    assert plan.settings.needs_http_add_on
    rendered = render.render(plan.resources, plan.settings.cluster.version, helm)
    (interceptor,) = [
        o
        for o in rendered.releases[keda_http.CHART_NAME].objects
        if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-interceptor")
    ]
    labels = interceptor["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in keda_http.INTERCEPTOR_POD_LABELS.items()), labels
    assert rendered.releases[keda_http.CHART_NAME].release.namespace == keda_http.NAMESPACE


def ip_blocks(policy: dict) -> list[ipaddress.IPv4Network]:
    return [
        ipaddress.ip_network(peer["ipBlock"]["cidr"])
        for rule in policy["spec"].get("ingress", [])
        for peer in rule.get("from", [])
        if "ipBlock" in peer
    ]


def test_an_exposed_service_admits_the_load_balancer_subnets_and_no_pod_addresses(plan):
    """Target type ip: the load balancer connects from its own subnets (the public ones, for both
    schemes); with the VPC CNI every pod has an address of the private subnets, so a policy that
    admitted those would admit every pod of the cluster."""
    private, public = plan.settings.network.subnet_cidrs()
    pods = [ipaddress.ip_network(c) for c in private]
    for name, svc in plan.settings.inference.items():
        dep = plan.objects("Deployment")[name]
        (policy,) = policies_for(plan, dep["metadata"]["namespace"], dep["spec"]["template"]["metadata"]["labels"])
        blocks = ip_blocks(policy)
        direct = svc.expose is not None and not svc.scaling.wakes_through_interceptor
        assert sorted(map(str, blocks)) == (sorted(public) if direct else []), name
        assert not any(b.overlaps(p) for b in blocks for p in pods), f"{name} admits pod addresses: {blocks}"
