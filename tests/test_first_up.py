"""The first `pulumi up` on a fresh cluster: it must neither wait for GPU capacity nor fight KEDA later.

Pulumi's Kubernetes provider awaits a Deployment's readiness (10 minutes by default)
unless it carries `pulumi.com/skipAwait`. On a fresh cluster a pod on a Karpenter
pool is ready only after a node launch (plus, for a GPU pod, image pull and model
load), so an awaited GPU Deployment blocks `up` and then fails it.
"""

from __future__ import annotations

import pytest

from domain import contract
from tests.conftest import STACKS, plan_of, stack_config

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
WORKLOADS = (DEPLOYMENT, "kubernetes:apps/v1:StatefulSet")


def on_karpenter_pool(resource) -> bool:
    pod = resource.inputs["spec"]["template"]["spec"]
    return contract.NODEPOOL_LABEL in (pod.get("nodeSelector") or {})


@pytest.mark.parametrize("stack", STACKS)
def test_no_workload_on_a_karpenter_pool_is_awaited(stack):
    plan = plan_of(stack_config(stack))
    on_pools = [r for typ in WORKLOADS for r in plan.of_type(typ) if on_karpenter_pool(r)]
    assert len(on_pools) >= len(plan.settings.inference), "expected the services' Deployments at least"
    awaited = [
        r.name
        for r in on_pools
        if (r.inputs["metadata"].get("annotations") or {}).get("pulumi.com/skipAwait") != "true"
    ]
    assert awaited == [], f"`pulumi up` would wait for node capacity on: {awaited}"


@pytest.mark.parametrize("stack", STACKS)
def test_services_start_at_min_replicas_and_leave_replicas_to_the_hpa(stack):
    plan = plan_of(stack_config(stack))
    for name, svc in plan.settings.inference.items():
        dep = plan.one(DEPLOYMENT, f"{name}-deployment")
        # Without `replicas` the API defaults to 1: a scale-to-zero service would buy a GPU node.
        assert dep.inputs["spec"]["replicas"] == svc.scaling.min_replicas, name
        # Later `up`s must not reset what KEDA's HPA scaled to.
        assert "spec.replicas" in dep.options.get("ignoreChanges", []), f"{name}: {dep.options}"


def test_a_scale_to_zero_service_is_created_with_no_pod():
    config = stack_config("dev")
    config["gpu-inference:inference"]["llm"]["scaling"]["minReplicas"] = 0
    plan = plan_of(config)
    assert plan.one(DEPLOYMENT, "llm-deployment").inputs["spec"]["replicas"] == 0
