"""Stacks nobody wrote by hand: seeded random valid configs must plan, validate
against the upstream schemas, keep the scheduling contract and pass the pack's
defaults. (The two stack files are not the only configs users run.)"""

from __future__ import annotations

import random
from typing import Any

import pytest

from domain import catalog, contract, versions
from domain.scheduling import pool_nodes, pools_accepting
from tests.conftest import plan_of
from tests.support.schemas import validate
from tools.plan import policies

SEEDS = list(range(12))


def random_pool(rng: random.Random, gpu: str) -> dict[str, Any]:
    arch = rng.choice(["amd64", "arm64"]) if gpu == "none" else "amd64"
    names = catalog.GPU_FAMILIES if gpu != "none" else catalog.CPU_FAMILIES
    pool_families = [f for f in names if catalog.FAMILIES[f].arch == arch or gpu != "none"]
    pool: dict[str, Any] = {
        "gpu": gpu,
        "instanceFamilies": rng.sample(pool_families, rng.randint(1, 3)),
        "capacityTypes": rng.choice([["spot"], ["on-demand"], ["spot", "on-demand"]]),
        "maxCpu": rng.randint(8, 2000),
        "consolidation": rng.choice(["WhenEmpty", "WhenEmptyOrUnderutilized"]),
        "consolidateAfter": rng.choice(["30s", "5m", "1h30m"]),
    }
    if gpu != "none":
        pool["maxGpus"] = rng.randint(min(catalog.gpu_counts(pool["instanceFamilies"])), 64)
        if rng.random() < 0.3:
            del pool["maxCpu"]  # derived from maxGpus
        pool["rootVolumeGib"] = rng.choice([100, 300, 1000])
    if gpu == "shared":
        pool["timeSlicingReplicas"] = rng.randint(2, 48)
    if rng.random() < 0.3:
        pool["weight"] = rng.randint(1, 100)
    if rng.random() < 0.3:
        pool["disruptionBudgets"] = [{"nodes": "1"}, {"nodes": "0", "schedule": "@daily", "duration": "1h"}]
    if rng.random() < 0.2 and gpu == "none":  # GPU pools boot AL2023 (settings); same draws as before
        pool["amiAlias"] = "bottlerocket@1.50.0"
    if gpu != "none" and rng.random() < 0.5:
        pool["warmGpus"] = rng.randint(0, pool["maxGpus"] * pool.get("timeSlicingReplicas", 1))
    if gpu != "none" and rng.random() < 0.3:
        pool["imageCache"] = {
            "images": [f"registry.example.com/extra:{rng.randint(1, 9)}.0"],
            "prePull": rng.random() < 0.8,
        }
    return pool


IMAGE = "registry.example.com/gpu-inference/server:0.1.0"


def random_workloads(rng: random.Random, pools: dict[str, dict[str, Any]]) -> dict[str, Any]:
    gpu_pools = sorted(k for k, p in pools.items() if p["gpu"] != "none")
    if not gpu_pools:
        return {}
    services = {}
    for i in range(rng.randint(0, 3)):
        pool = rng.choice(gpu_pools)
        minimum = rng.choice([0, 1, 2, 3])  # 0: scale to zero, woken by the HTTP add-on
        services[f"svc-{i}"] = {
            "image": IMAGE,
            "pool": pool,
            "gpus": 1 if pools[pool]["gpu"] == "shared" else rng.randint(1, 2),
            "modelLoadSeconds": rng.randint(5, 600),
            "scaling": {
                "minReplicas": minimum,
                "maxReplicas": rng.randint(max(minimum, 1), 40),
                "targetInFlight": rng.randint(1, 32),
            },
        }
    jobs = {
        f"job-{i}": {"image": IMAGE, "pool": rng.choice(gpu_pools), "gpus": 1, "maxReplicas": rng.randint(1, 40)}
        for i in range(rng.randint(0, 2))
    }
    out: dict[str, Any] = {"gpu-inference:inference": services, "gpu-inference:batchJobs": jobs}
    has_cpu_pool = any(p["gpu"] == "none" for p in pools.values())
    if services and has_cpu_pool and rng.random() < 0.5:
        out["gpu-inference:loadGenerator"] = {"image": IMAGE, "target": rng.choice(sorted(services))}
    return out


def random_config(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    first = "none" if rng.random() < 0.8 else rng.choice(["dedicated", "shared"])  # GPU-only stacks too
    modes = [first] + [rng.choice(["none", "dedicated", "shared"]) for _ in range(rng.randint(0, 4))]
    pools = {f"pool-{i}-{mode}": random_pool(rng, mode) for i, mode in enumerate(modes)}
    region = rng.choice(["us-east-1", "us-west-2", "eu-west-1"])
    config = {
        "aws:region": region,
        "gpu-inference:environment": f"env{seed}",
        "gpu-inference:tags": {"team": f"t{seed}"},
        "gpu-inference:network": {
            "cidr": rng.choice(["10.0.0.0/16", "172.16.0.0/18", "192.168.0.0/20"]),
            "azCount": rng.randint(2, 3),
            "natGateways": rng.choice(["single", "perAz"]),
        },
        "gpu-inference:cluster": {
            "name": f"random-{seed}",
            "version": rng.choice(versions.KUBERNETES_VERSIONS),
            "endpointPublicAccess": rng.random() < 0.5,
            "privateAccess": {"cidrs": ["100.64.0.0/24"]},  # required when the endpoint is private
        },
        "gpu-inference:nodePools": pools,
        "gpu-inference:monitoring": {
            "prometheus": {"retention": rng.choice(["2d", "15d"]), "storageGib": rng.randint(10, 500)}
        },
        **random_workloads(rng, pools),
    }
    if rng.random() < 0.2:
        del config["gpu-inference:cluster"]  # every cluster key has a default
    return config


@pytest.mark.parametrize("seed", SEEDS)
def test_random_valid_config_renders_valid_consistent_objects(seed: int) -> None:
    plan = plan_of(random_config(seed), stack=f"random{seed}")
    version = plan.settings.cluster.version
    errors = {f"{m['kind']}/{m['metadata']['name']}": validate(m, version) for m in plan.manifests}
    assert {k: v for k, v in errors.items() if v} == {}

    pools = [pool_nodes(p) for p in plan.objects("NodePool").values()]
    gpu_pools = sorted(k for k, p in plan.settings.node_pools.items() if p.is_gpu)
    device_plugin = plan.releases["nvidia-device-plugin"]["values"]
    assert pools_accepting(device_plugin, pools) == gpu_pools
    for name, pool in plan.settings.node_pools.items():
        if pool.is_gpu:
            terms = contract.PoolContract(name, pool.gpu)
            pod = {"nodeSelector": terms.node_selector(), "tolerations": terms.tolerations()}
            assert pools_accepting(pod, pools) == [name]
    templates = {f"Deployment/{n}": m["spec"]["template"]["spec"] for n, m in plan.objects("Deployment").items()}
    templates |= {
        f"ScaledJob/{n}": m["spec"]["jobTargetRef"]["template"]["spec"] for n, m in plan.objects("ScaledJob").items()
    }
    for name, svc in plan.settings.inference.items():
        assert pools_accepting(templates[f"Deployment/{name}"], pools) == [svc.pool], name
    for name, job in plan.settings.batch_jobs.items():
        assert pools_accepting(templates[f"ScaledJob/{name}"], pools) == [job.pool], name
    for name, pool in plan.settings.node_pools.items():
        headroom = plan.objects("Deployment").get(f"headroom-{name}")
        assert (headroom is not None) == bool(pool.warm_gpus), name
        if headroom is not None:
            assert headroom["spec"]["replicas"] == pool.warm_gpus
            assert pools_accepting(headroom["spec"]["template"]["spec"], pools) == [name]
    overlays = plan.objects("NodeOverlay")
    expected = {
        f"{name}-slices-{n}gpu"
        for name, p in plan.settings.node_pools.items()
        if p.gpu == "shared"
        for n in p.gpu_counts
    }
    assert set(overlays) == expected

    woken = {n for n, svc in plan.settings.inference.items() if svc.scaling.wakes_through_interceptor}
    assert set(plan.objects("HTTPScaledObject")) == woken
    assert ("keda-add-ons-http" in plan.releases) == bool(woken)
    for name in woken:
        assert [t["type"] for t in plan.objects("ScaledObject")[name]["spec"]["triggers"]] == [
            "prometheus",
            "external-push",
        ]

    outcome = policies.check(plan.resources, plan.settings.environment)
    assert outcome.config_file is None  # no policies/config/env<seed>.json: pack defaults
    assert outcome.mandatory == [], [v.message for v in outcome.mandatory]
