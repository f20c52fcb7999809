"""single-replica-disruption: a one-replica service where consolidation or Spot can evict it."""

from __future__ import annotations

import pytest

from tests.policy_rules import fixtures as fx
from tests.policy_rules.helpers import mutated, resource, stack_violations

RULE = "single-replica-disruption"
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
CAPACITY = "spec.template.spec.requirements[1].values"  # karpenter.sh/capacity-type in fx.gpu_nodepool


def pool(consolidation: str = "WhenEmpty", capacity: list[str] | None = None) -> object:
    props = mutated(fx.gpu_nodepool("gpu"), "spec.disruption.consolidationPolicy", consolidation)
    return resource(fx.NODEPOOL, mutated(props, CAPACITY, capacity or ["on-demand"]), "gpu")


def service(min_replicas: int = 1, do_not_disrupt: bool = False) -> list:
    dep = fx.gpu_deployment("gpu")
    if do_not_disrupt:
        dep = mutated(dep, "spec.template.metadata", {"annotations": {"karpenter.sh/do-not-disrupt": "true"}})
    scaled = {
        "metadata": {"name": "model", "namespace": "inference"},
        "spec": {"scaleTargetRef": {"name": "model"}, "minReplicaCount": min_replicas, "maxReplicaCount": 4},
    }
    return [resource(fx.DEPLOYMENT, dep, "model"), resource(SCALED_OBJECT, scaled, "model")]


def test_a_single_replica_on_a_pool_that_consolidates_underutilized_nodes() -> None:
    [(message, urn)] = stack_violations(RULE, [pool("WhenEmptyOrUnderutilized"), *service()])
    assert message == (
        "Deployment model runs a single replica at its minimum on NodePool gpu, which consolidates underutilized"
        " nodes (WhenEmptyOrUnderutilized): its PodDisruptionBudget (maxUnavailable 1) lets that one pod go, and"
        " the service is down for a full cold start (node, image pull, model load)"
    )
    assert urn is not None and urn.endswith("::model")


def test_a_single_replica_on_spot() -> None:
    [(message, _)] = stack_violations(RULE, [pool(capacity=["spot", "on-demand"]), *service()])
    assert "may launch Spot capacity, which EC2 reclaims at two minutes' notice" in message
    assert stack_violations(RULE, [pool(capacity=["spot", "on-demand"]), *service()], {"countSpot": False}) == []


def test_do_not_disrupt_covers_consolidation_but_not_spot() -> None:
    assert stack_violations(RULE, [pool("WhenEmptyOrUnderutilized"), *service(do_not_disrupt=True)]) == []
    [(message, _)] = stack_violations(RULE, [pool("WhenEmptyOrUnderutilized", ["spot"]), *service(do_not_disrupt=True)])
    assert "Spot" in message and "WhenEmptyOrUnderutilized" not in message


@pytest.mark.parametrize("min_replicas", [0, 2, 3])
def test_scale_to_zero_and_two_or_more_replicas_pass(min_replicas: int) -> None:
    assert stack_violations(RULE, [pool("WhenEmptyOrUnderutilized", ["spot"]), *service(min_replicas)]) == []


def test_a_safe_pool_passes() -> None:
    assert stack_violations(RULE, [pool("WhenEmpty", ["on-demand", "reserved"]), *service()]) == []
