"""gpu-demand-within-pool-limit: a pool's services, batch jobs and headroom together, at their maxima."""

from __future__ import annotations

import pytest

from tests.policy_rules import fixtures as fx
from tests.policy_rules.helpers import mutated, resource, stack_violations

SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
SCALED_JOB = "kubernetes:keda.sh/v1alpha1:ScaledJob"
RULE = "gpu-demand-within-pool-limit"


def pools() -> list:  # gpu: nvidia.com/gpu limit 4
    return [
        resource(fx.NODEPOOL, fx.cpu_nodepool(), "cpu"),
        resource(fx.NODEPOOL, fx.gpu_nodepool("gpu"), "gpu"),
        resource(fx.NODEPOOL, fx.gpu_nodepool("shared", config="time-sliced-shared"), "shared"),
    ]


def service(name: str = "model", max_replicas: int | None = 2, gpus: int = 1) -> list:
    dep = mutated(fx.gpu_deployment("gpu"), "metadata.name", name)
    dep = mutated(dep, "spec.template.spec.containers[0].resources.limits", {"nvidia.com/gpu": gpus})
    spec: dict = {"scaleTargetRef": {"name": name}, "triggers": []}
    if max_replicas is not None:
        spec["maxReplicaCount"] = max_replicas
    return [
        resource(fx.DEPLOYMENT, dep, name),
        resource(SCALED_OBJECT, {"metadata": {"name": name, "namespace": "inference"}, "spec": spec}, name),
    ]


def batch(name: str = "scoring", max_replicas: int = 1) -> list:
    pod = fx.gpu_deployment("gpu")["spec"]["template"]
    props = {
        "metadata": {"name": name, "namespace": "batch"},
        "spec": {"maxReplicaCount": max_replicas, "jobTargetRef": {"template": pod}},
    }
    return [resource(SCALED_JOB, props, name)]


def headroom(replicas: int = 1) -> list:
    dep = mutated(fx.gpu_deployment("gpu"), "metadata.name", "headroom-gpu")
    dep = mutated(dep, "spec.replicas", replicas)
    dep = mutated(dep, "spec.template.spec.priorityClassName", "gpu-headroom")
    low = {"metadata": {"name": "gpu-headroom"}, "value": -10, "preemptionPolicy": "Never"}
    return [resource(fx.DEPLOYMENT, dep, "headroom"), resource(fx.PRIORITY_CLASS, low, "gpu-headroom")]


def test_services_batch_and_headroom_that_add_up_to_the_limit_pass() -> None:
    stack = [*pools(), *service(max_replicas=2), *batch(max_replicas=1), *headroom(1)]  # 2 + 1 + 1 = 4
    assert stack_violations(RULE, stack) == []


def test_one_violation_per_pool_naming_every_contributor() -> None:
    stack = [*pools(), *service(max_replicas=2), *batch(max_replicas=2), *headroom(1)]  # 2 + 2 + 1 = 5 > 4
    [(message, urn)] = stack_violations(RULE, stack)
    assert message == (
        "NodePool gpu is limited to 4 nvidia.com/gpu, but its workloads at their maximum replicas ask for 5"
        " (Deployment model 2 x 1 = 2, ScaledJob scoring 2 x 1 = 2, headroom Deployment headroom-gpu 1 x 1 = 1):"
        " lower a maxReplicas or raise the pool's GPU limit"
    )
    assert urn is not None and urn.endswith("NodePool::gpu"), urn


def test_headroom_counts_against_the_limit() -> None:
    assert stack_violations(RULE, [*pools(), *service(max_replicas=4)]) == []
    [(message, _)] = stack_violations(RULE, [*pools(), *service(max_replicas=4), *headroom(1)])
    assert "ask for 5 (Deployment model 4 x 1 = 4, headroom Deployment headroom-gpu 1 x 1 = 1)" in message


@pytest.mark.parametrize(
    ("case", "parts", "expected"),
    [
        ("one service alone past the limit", service(max_replicas=5), "ask for 5 (Deployment model 5 x 1 = 5)"),
        ("KEDA's default maximum of 100", service(max_replicas=None), "ask for 100 (Deployment model 100 x 1"),
        ("big pods", service(max_replicas=2, gpus=4), "ask for 8 (Deployment model 2 x 4 = 8)"),
        ("two services", [*service("a", 3), *service("b", 2)], "(Deployment a 3 x 1 = 3, Deployment b 2 x 1 = 2)"),
    ],
)
def test_demand_past_the_limit(case: str, parts: list, expected: str) -> None:
    [(message, _)] = stack_violations(RULE, [*pools(), *parts])
    assert expected in message, case


def test_a_fixed_replica_deployment_counts_its_replicas() -> None:
    fixed = mutated(fx.gpu_deployment("gpu"), "spec.replicas", 6)
    [(message, _)] = stack_violations(RULE, [*pools(), resource(fx.DEPLOYMENT, fixed, "m")])
    assert "ask for 6 (Deployment model 6 x 1 = 6)" in message


def test_daemonsets_and_other_pools_do_not_count() -> None:
    daemon = resource("kubernetes:apps/v1:DaemonSet", fx.gpu_deployment(), "daemon")
    on_cpu = mutated(fx.gpu_deployment("cpu"), "spec.replicas", 50)
    stack = [*pools(), *service(max_replicas=4), daemon, resource(fx.DEPLOYMENT, on_cpu, "cpu-app")]
    assert stack_violations(RULE, stack) == []
