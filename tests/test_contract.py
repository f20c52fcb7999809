"""The label/taint contract: GPU pods and the device plugin tolerate and select only
what some NodePool provides, and pool-derived scheduling lands on that pool."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from domain import contract
from domain.scheduling import PoolNodes, pod_fits, pool_nodes, pools_accepting, requests_gpu
from infra.nvidia import CONFIG_MAP
from tests.conftest import Plan

POD_TEMPLATE_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "Job", "ReplicaSet"}


def pools_of(plan: Plan) -> list[PoolNodes]:
    return [pool_nodes(p) for p in plan.objects("NodePool").values()]


def gpu_pool_names(plan: Plan) -> list[str]:
    return sorted(k for k, p in plan.settings.node_pools.items() if p.is_gpu)


def device_plugin_pod(plan: Plan, release: str = "nvidia-device-plugin") -> dict[str, Any]:
    values = plan.releases[release]["values"]
    return {key: values.get(key) for key in ("affinity", "tolerations", "nodeSelector")}


def gpu_pod_templates(plan: Plan) -> dict[str, dict[str, Any]]:
    """Every pod spec the plan schedules onto GPU nodes: rendered workloads that
    request `nvidia.com/gpu`, and the device plugin's DaemonSet (from its values)."""
    found = {f"helm/{r}": device_plugin_pod(plan, r) for r in ("nvidia-device-plugin", "dcgm-exporter")}
    for obj in plan.manifests:
        if obj["kind"] in POD_TEMPLATE_KINDS or obj["kind"] == "ScaledJob":
            template = obj["spec"]["jobTargetRef" if obj["kind"] == "ScaledJob" else "template"]
            spec = (template["template"] if obj["kind"] == "ScaledJob" else template)["spec"]
            if requests_gpu(spec):
                found[f"{obj['kind']}/{obj['metadata']['name']}"] = spec
    return found


@pytest.mark.parametrize("release", ["nvidia-device-plugin", "dcgm-exporter"])
def test_gpu_daemons_run_on_every_gpu_pool_and_no_cpu_pool(plan: Plan, release: str) -> None:
    accepted = pools_accepting(device_plugin_pod(plan, release), pools_of(plan))
    assert accepted == gpu_pool_names(plan)


def test_every_workload_lands_on_exactly_its_configured_pool(plan: Plan) -> None:
    templates = gpu_pod_templates(plan)
    expected = {
        **{f"Deployment/{name}": svc.pool for name, svc in plan.settings.inference.items()},
        **{f"ScaledJob/{name}": job.pool for name, job in plan.settings.batch_jobs.items() if job.gpus},
    }
    assert expected, "the stack defines no GPU workloads"
    for name, pool in expected.items():
        assert pools_accepting(templates[name], pools_of(plan)) == [pool], name


def test_every_gpu_pod_template_lands_only_on_gpu_pools(plan: Plan) -> None:
    templates = gpu_pod_templates(plan)
    gpu_pools = set(gpu_pool_names(plan))
    for name, spec in templates.items():
        accepted = set(pools_accepting(spec, pools_of(plan)))
        assert accepted, f"{name} fits no NodePool: nothing would ever schedule it"
        assert accepted <= gpu_pools, f"{name} could land on non-GPU pools {sorted(accepted - gpu_pools)}"


@pytest.mark.parametrize("mode", ["dedicated", "shared"])
def test_a_pod_built_from_a_pools_contract_lands_on_exactly_that_pool(plan: Plan, mode: str) -> None:
    for name in [k for k, p in plan.settings.node_pools.items() if p.gpu == mode]:
        terms = contract.PoolContract(name, mode)
        pod = {
            "nodeSelector": terms.node_selector(),
            "tolerations": terms.tolerations(),
            "containers": [{"name": "m", "resources": {"limits": {contract.GPU_RESOURCE: 1}}}],
        }
        assert pools_accepting(pod, pools_of(plan)) == [name]


def test_a_gpu_pod_without_tolerations_fits_no_gpu_pool(plan: Plan) -> None:
    pod = {"containers": [{"name": "m", "resources": {"limits": {contract.GPU_RESOURCE: 1}}}]}
    assert set(pools_accepting(pod, pools_of(plan))).isdisjoint(gpu_pool_names(plan))


def test_shared_pools_need_the_explicit_opt_in(plan: Plan) -> None:
    only_gpu_taint = {"tolerations": [contract.GPU_TAINT.toleration()]}
    accepted = pools_accepting(only_gpu_taint, pools_of(plan))
    shared = [k for k, p in plan.settings.node_pools.items() if p.gpu == "shared"]
    assert shared and not set(shared) & set(accepted)


def test_karpenter_controller_stays_on_the_system_nodes(plan: Plan) -> None:
    values = plan.releases["karpenter"]["values"]
    pod = {"nodeSelector": values["nodeSelector"], "tolerations": values["tolerations"]}
    assert pools_accepting(pod, pools_of(plan)) == []
    system = PoolNodes(
        "system", {**contract.SYSTEM_LABELS, contract.OS_LABEL: "linux"}, (contract.SYSTEM_TAINT.as_k8s(),), gpu=False
    )
    assert pod_fits(pod, system)


def test_every_gpu_pool_names_a_device_plugin_config_that_exists(plan: Plan) -> None:
    config_map = plan.objects("ConfigMap")[CONFIG_MAP]
    configs = {name: yaml.safe_load(text) for name, text in config_map["data"].items()}
    values = plan.releases["nvidia-device-plugin"]["values"]
    assert values["config"]["name"] == config_map["metadata"]["name"]
    assert values["config"]["default"] in configs
    for pool in pools_of(plan):
        label = pool.labels.get(contract.DEVICE_PLUGIN_CONFIG_LABEL)
        assert (label is not None) == pool.gpu, pool.name
        if label:
            assert label in configs, f"pool {pool.name} selects missing device-plugin config {label}"


def test_shared_capacity_karpenter_expects_is_what_the_plugin_advertises(plan: Plan) -> None:
    """NodeOverlay capacity = GPUs per instance x the replicas of the config the pool's nodes load."""
    config_map = plan.objects("ConfigMap")[CONFIG_MAP]
    nodepools = {p.name: p for p in pools_of(plan)}
    overlays = plan.objects("NodeOverlay")
    shared = [k for k, p in plan.settings.node_pools.items() if p.gpu == "shared"]
    assert {
        r["values"][0]
        for o in overlays.values()
        for r in o["spec"]["requirements"]
        if r["key"] == contract.NODEPOOL_LABEL
    } == set(shared)
    for name, overlay in overlays.items():
        reqs = {r["key"]: r["values"] for r in overlay["spec"]["requirements"]}
        pool = nodepools[reqs[contract.NODEPOOL_LABEL][0]]
        config = yaml.safe_load(config_map["data"][pool.labels[contract.DEVICE_PLUGIN_CONFIG_LABEL]])
        replicas = config["sharing"]["timeSlicing"]["resources"][0]["replicas"]
        gpus = int(reqs[contract.INSTANCE_GPU_COUNT_LABEL][0])
        assert int(overlay["spec"]["capacity"][contract.GPU_RESOURCE]) == gpus * replicas, name


def test_gpu_limits_cover_what_the_pool_advertises(plan: Plan) -> None:
    for name, settings in plan.settings.node_pools.items():
        limits = plan.objects("NodePool")[name]["spec"]["limits"]
        if settings.is_gpu:
            assert limits[contract.GPU_RESOURCE] == settings.max_gpus * (settings.time_slicing_replicas or 1)
        else:
            assert contract.GPU_RESOURCE not in limits
        assert limits["cpu"] == settings.max_cpu
