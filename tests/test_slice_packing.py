"""N one-slice pods on a time-sliced pool buy ceil(N / replicas) GPUs.

Karpenter's provisioning is simulated (`tests/support/karpenter_sim.py`, modelled on
kubernetes-sigs/karpenter v1.14.1) over what the plan renders: the service's Deployment
pod template, its NodePool and the NodeOverlays that give a shared node's sliced
`nvidia.com/gpu` capacity, and the Karpenter release's settings (feature gate,
`preferencePolicy`). One batch of N pending pods, the pool empty.

Why it can fail: under the default `preferencePolicy: Respect` a `ScheduleAnyway`
spread is required until a pod fits nowhere, so a hostname spread buys a node per pod,
and a zone spread with maxSkew 1 balances pods over zones (a GPU per zone for a few
pods). And a NodeClaim keeps every instance type that fits its pods, so five slices
grow it into a 4-GPU g6.12xlarge unless the pods stay on one-GPU instance types.
"""

from __future__ import annotations

import copy
import math

import pytest

from domain.settings import PoolSettings
from tests.support.karpenter_sim import Result, instance_types, simulate

# Dev's embed-small scales to 4 (its pool's 8 slices are shared with offline-scoring, see
# gpu-demand-within-pool-limit); prod's cases cover the pods that need several GPUs.
SHARED_CASES = [("dev", n) for n in (1, 3, 4)] + [("prod", n) for n in (1, 3, 4, 5, 8, 16)]
DEDICATED_CASES = [("prod", n) for n in (2, 3, 4)]


def _service_on(plan, mode: str) -> tuple[str, PoolSettings]:
    """The (first) inference service on a pool of `mode`, and that pool's settings."""
    pools = plan.settings.node_pools
    found = sorted(name for name, svc in plan.settings.inference.items() if pools[svc.pool].gpu == mode)
    assert found, f"no inference service on a {mode} pool in this stack"
    return found[0], pools[plan.settings.inference[found[0]].pool]


def _describe(result: Result) -> str:
    nodes = ", ".join(f"{name} ({gpus} GPU) x{pods} pods" for name, gpus, pods in result.summary())
    relaxed = "; ".join(result.relaxed[:4]) or "nothing"
    return f"NodeClaims: {nodes}; relaxed: {relaxed}"


@pytest.mark.parametrize(("stack", "count"), SHARED_CASES)
def test_one_slice_pods_share_physical_gpus(request: pytest.FixtureRequest, stack: str, count: int) -> None:
    plan = request.getfixturevalue(f"{stack}_plan")
    service, pool = _service_on(plan, "shared")
    replicas = pool.time_slicing_replicas
    reachable = min(plan.settings.inference[service].scaling.max_replicas, pool.gpu_limit)
    assert count <= reachable, f"{count} pods: more than {service} can scale to on {pool} ({reachable})"

    result = simulate(plan, service, count)

    want = math.ceil(count / replicas)
    assert not result.unschedulable, f"{stack}: pods left pending: {result.unschedulable}"
    assert result.physical_gpus == want, (
        f"{stack}: {count} one-slice pods of {service} at {replicas} slices per GPU should buy {want} GPU(s),"
        f" bought {result.physical_gpus}. {_describe(result)}"
    )
    if min(pool.gpu_counts) == 1:
        launched = [nc.launched.gpus for nc in result.nodeclaims]
        assert launched == [1] * want, f"{stack}: expected {want} one-GPU node(s), got {_describe(result)}"


@pytest.mark.parametrize(("stack", "count"), DEDICATED_CASES)
def test_dedicated_pool_pods_keep_a_node_each(request: pytest.FixtureRequest, stack: str, count: int) -> None:
    """The packing is scoped to shared pools: a dedicated pool's pods still spread one per GPU node."""
    plan = request.getfixturevalue(f"{stack}_plan")
    service, _ = _service_on(plan, "dedicated")

    result = simulate(plan, service, count)

    assert not result.unschedulable, f"{stack}: pods left pending: {result.unschedulable}"
    assert [len(nc.pods) for nc in result.nodeclaims] == [1] * count, (
        f"{stack}: {count} pods of {service} should get a node each. {_describe(result)}"
    )


def test_overlays_offer_slices_of_shared_nodes_only(dev_plan) -> None:
    """The simulation sees what NodeOverlays promise: a 1-GPU g6 offers 4 slices on the shared pool, 1 GPU elsewhere."""
    overlays = dev_plan.objects("NodeOverlay").values()
    pools = dev_plan.objects("NodePool")
    shared = {
        it.name: it.capacity["nvidia.com/gpu"] for it in instance_types(pools["gpu-shared"], overlays, "us-west-2")
    }
    dedicated = {it.name: it.capacity["nvidia.com/gpu"] for it in instance_types(pools["gpu"], overlays, "us-west-2")}
    assert (shared["g6.xlarge"], shared["g6.12xlarge"], shared["g6.48xlarge"]) == (4, 16, 32)
    assert (dedicated["g6.xlarge"], dedicated["g6.12xlarge"]) == (1, 4)


def test_zone_spread_with_max_skew_1_costs_a_gpu_per_zone(dev_plan) -> None:
    """Why shared pods carry no zone spread: Respect balances 4 pods 2 + 2 over dev's 2 zones, so 2 GPUs, not 1."""
    service, _ = _service_on(dev_plan, "shared")
    deployment = copy.deepcopy(dev_plan.objects("Deployment")[service])
    template = deployment["spec"]["template"]
    template["spec"]["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": template["metadata"]["labels"]},
        }
    ]

    class WithSpread:  # the plan, with the service's Deployment swapped
        settings, resources, releases = dev_plan.settings, dev_plan.resources, dev_plan.releases

        @staticmethod
        def objects(kind: str) -> dict:
            found = dev_plan.objects(kind)
            return {**found, service: deployment} if kind == "Deployment" else found

    result = simulate(WithSpread, service, 4)

    assert sorted(len(nc.pods) for nc in result.nodeclaims) == [2, 2], _describe(result)
    assert result.physical_gpus == 2, _describe(result)
