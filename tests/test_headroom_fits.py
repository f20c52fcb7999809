"""Warm headroom holds capacity that the pool's real pods can use.

Karpenter buys the cheapest instance that fits the pending placeholders. A real
pod of g GPUs lands on a headroom node by preempting g placeholders there, so it
fits exactly when each placeholder asks, per GPU, for at least what the pod asks
per GPU: CPU and memory as well as the GPU itself. Sized at 10m / 16Mi, the
placeholders got prod's `gpu` pool a g6e.xlarge (4 vCPUs), where `llm` (4 CPUs,
32 GiB for one GPU) never fits.
"""

from __future__ import annotations

import pytest

from domain import contract, pods
from policies.rules.cost import quantity
from tests.conftest import STACKS, plan_of, stack_config


def per_gpu(requests: dict, gpus: int) -> tuple[float, float]:
    return quantity(requests["cpu"]) / gpus, quantity(requests["memory"], "memory") / gpus


def consumers(plan, pool: str) -> dict[str, tuple[float, float]]:
    """Every GPU workload of the pool: name -> (CPUs, GiB) per GPU (slice), as configured."""
    found = {}
    for name, work in [*plan.settings.inference.items(), *plan.settings.batch_jobs.items()]:
        if work.pool == pool and work.gpus:
            found[name] = (pods.cpu_millicores(work.cpu) / 1000 / work.gpus, work.memory_gib / work.gpus)
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_each_placeholder_holds_what_the_hungriest_pod_of_its_pool_needs_per_gpu(stack):
    plan = plan_of(stack_config(stack))
    headrooms = {
        m["metadata"]["labels"][contract.NODEPOOL_LABEL]: m
        for m in plan.manifests
        if m["kind"] == "Deployment" and m["metadata"]["name"].startswith("headroom-")
    }
    checked = 0
    for pool, headroom in headrooms.items():
        (container,) = headroom["spec"]["template"]["spec"]["containers"]
        requests = container["resources"]["requests"]
        held_cpu, held_memory = per_gpu(requests, int(requests[contract.GPU_RESOURCE]))
        for name, (cpu, memory) in consumers(plan, pool).items():
            assert held_cpu >= cpu and held_memory >= memory, (
                f"{stack}/{pool}: a placeholder holds {held_cpu:g} CPU / {held_memory:g} GiB per GPU,"
                f" {name} needs {cpu:g} CPU / {memory:g} GiB per GPU: it could not use the headroom"
            )
            checked += 1
    if any(p.warm_gpus for p in plan.settings.node_pools.values()):
        assert checked, f"{stack}: warm pools but no consumer checked"


def test_a_job_hungrier_than_the_services_sizes_the_headroom():
    config = stack_config("prod")
    config["gpu-inference:batchJobs"]["offline-scoring"].update(cpu="12", memoryGib=96)
    plan = plan_of(config)
    (headroom,) = [m for m in plan.manifests if m["metadata"]["name"] == "headroom-gpu"]
    requests = headroom["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert requests["requests"]["cpu"] == "12000m" and requests["requests"]["memory"] == "98304Mi"
    # The placeholder's memory limit equals its request (Guaranteed-like, never OOM-killed for it).
    assert requests["limits"]["memory"] == requests["requests"]["memory"]
