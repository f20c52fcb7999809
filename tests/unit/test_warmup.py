"""GPU warm headroom and image pre-pull (infra/warmup.py), alone and in the whole program."""

from __future__ import annotations

import pytest
import yaml

from domain import contract, scheduling, versions
from domain.settings import ConfigError
from infra import mapping, warmup
from tests.conftest import plan_of, run_plan, settings_of, stack_config
from tests.support.schemas import validate
from tests.unit.helpers import assert_parented, build, named, of_type

NP = "gpu-inference:nodePools"
IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/llm:1.4.2"


def warm_config() -> dict:
    config = stack_config("dev")
    config[NP]["gpu"]["warmGpus"] = 2
    config[NP]["gpu-shared"]["warmGpus"] = 4
    config[NP]["gpu"]["imageCache"] = {"images": [IMAGE]}
    return config


@pytest.fixture(scope="module")
def warm_plan():
    return plan_of(warm_config())


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def gpu_request(obj: dict) -> int:
    (container,) = pod_spec(obj)["containers"]
    assert (
        container["resources"]["limits"][contract.GPU_RESOURCE]
        == container["resources"]["requests"][contract.GPU_RESOURCE]
    )
    return int(container["resources"]["requests"][contract.GPU_RESOURCE])


def test_priority_class_is_negative_and_never_preempts(warm_plan):
    pc = warm_plan.objects("PriorityClass")[warmup.PRIORITY_CLASS]
    assert pc["value"] < 0 and pc["preemptionPolicy"] == "Never" and pc["globalDefault"] is False


def test_placeholders_request_exactly_the_warm_gpus_on_their_pool(warm_plan):
    deployments = warm_plan.objects("Deployment")
    gpu, shared = deployments["headroom-gpu"], deployments["headroom-gpu-shared"]
    # dedicated: 2 pods x 1 GPU; shared: 4 pods x 1 slice (4 slices = 1 physical GPU at 4 replicas)
    assert (gpu["spec"]["replicas"], gpu_request(gpu)) == (2, 1)
    assert (shared["spec"]["replicas"], gpu_request(shared)) == (4, 1)
    for pool, obj in (("gpu", gpu), ("gpu-shared", shared)):
        spec = pod_spec(obj)
        terms = contract.PoolContract(pool, warm_plan.settings.node_pools[pool].gpu)
        assert spec["nodeSelector"] == terms.node_selector()
        assert spec["tolerations"] == terms.tolerations()
        assert spec["priorityClassName"] == warmup.PRIORITY_CLASS
        assert spec["containers"][0]["image"] == versions.IMAGES["pause"]
        assert obj["metadata"]["annotations"][contract.WARM_GPUS_ANNOTATION] == str(
            warm_plan.settings.node_pools[pool].warm_gpus
        )


def test_placeholders_fit_only_their_own_pool(warm_plan):
    pools = [scheduling.pool_nodes(p) for p in warm_plan.objects("NodePool").values()]
    for pool in ("gpu", "gpu-shared"):
        obj = warm_plan.objects("Deployment")[f"headroom-{pool}"]
        assert scheduling.pools_accepting(pod_spec(obj), pools) == [pool]


def test_prepull_daemonset_runs_only_on_gpu_nodes_of_its_pool(warm_plan):
    daemonset = warm_plan.objects("DaemonSet")["prepull-gpu"]
    spec = pod_spec(daemonset)
    # the configured image, then the pool's inference images
    images = [IMAGE, *(s.image for s in warm_plan.settings.inference.values() if s.pool == "gpu")]
    assert [c["image"] for c in spec["initContainers"]] == list(dict.fromkeys(images))
    assert spec["initContainers"][0]["command"] == ["/bin/sh", "-c", "true"]
    pools = {p.name: p for p in (scheduling.pool_nodes(n) for n in warm_plan.objects("NodePool").values())}
    assert scheduling.pools_accepting(spec, pools.values()) == ["gpu"]
    assert not scheduling.pod_fits(spec, pools["cpu"])
    # it asks for no GPU: it must never take one from inference pods
    assert all(contract.GPU_RESOURCE not in str(c["resources"]) for c in spec["initContainers"] + spec["containers"])


def test_warm_objects_validate_against_upstream_schemas(warm_plan):
    version = warm_plan.settings.cluster.version
    kinds = {"PriorityClass", "Deployment", "DaemonSet", "Namespace"}
    objs = [m for m in warm_plan.manifests if m["kind"] in kinds]
    assert len(objs) >= 5
    assert {f"{m['kind']}/{m['metadata']['name']}": validate(m, version) for m in objs} == {
        f"{m['kind']}/{m['metadata']['name']}": [] for m in objs
    }


def test_no_headroom_and_no_images_render_nothing():
    # dev's pools keep no headroom; with no inference images passed in, nothing is pulled either.
    args = warmup.WarmupArgs(pools=mapping.warm_pools(settings_of(stack_config("dev")).node_pools))
    resources = build(lambda: warmup.GpuWarmup("w", args))
    assert [r.type for r in resources] == ["gpuinf:warmup:GpuWarmup"]


def test_component_alone_names_and_parents():
    pools = mapping.warm_pools(settings_of(warm_config()).node_pools)
    resources = build(lambda: warmup.GpuWarmup("w", warmup.WarmupArgs(pools=pools, pool_images={"gpu": (IMAGE,)})))
    assert_parented(resources, "gpuinf:warmup:GpuWarmup")
    assert named(resources, "w-priority").inputs["value"] == warmup.PRIORITY
    assert sorted(r.name for r in of_type(resources, "kubernetes:apps/v1:Deployment")) == [
        "w-headroom-gpu",
        "w-headroom-gpu-shared",
    ]
    # an inference image of the pool is pulled once even when also configured
    ds = named(resources, "w-prepull-gpu")
    assert [c["image"] for c in ds.inputs["spec"]["template"]["spec"]["initContainers"]] == [IMAGE]


def test_prepull_can_be_switched_off():
    config = warm_config()
    config[NP]["gpu"]["imageCache"]["prePull"] = False
    assert "prepull-gpu" not in plan_of(config).objects("DaemonSet")


@pytest.mark.parametrize(
    ("pool", "key", "value", "message"),
    [
        (
            "gpu",
            "warmGpus",
            5,
            "gpu-inference:nodePools.gpu.warmGpus must be at most the pool's GPU limit, maxGpus (4)",
        ),
        (
            "gpu-shared",
            "warmGpus",
            9,
            "gpu-inference:nodePools.gpu-shared.warmGpus must be at most the pool's GPU limit, maxGpus (2) x timeSlicingReplicas (4)"
            " = 8 slices",
        ),
        ("cpu", "warmGpus", 1, "gpu-inference:nodePools.cpu.warmGpus is only allowed on GPU pools"),
        ("gpu", "warmGpus", -1, "gpu-inference:nodePools.gpu.warmGpus"),
        (
            "cpu",
            "imageCache",
            {"images": [IMAGE]},
            "gpu-inference:nodePools.cpu.imageCache is only allowed on GPU pools",
        ),
        (
            "gpu",
            "imageCache",
            {"images": ["llm:latest"]},
            "gpu-inference:nodePools.gpu.imageCache.images[0] must be an image pinned",
        ),
        ("gpu", "imageCache", {"snapshotId": "vol-123"}, "gpu-inference:nodePools.gpu.imageCache.snapshotId"),
    ],
)
def test_bad_warmup_settings_name_their_key(pool, key, value, message):
    config = stack_config("dev")
    config[NP][pool][key] = value
    with pytest.raises(ConfigError) as err:
        settings_of(config)
    assert any(line.startswith(message) for line in err.value.lines), err.value.lines


def test_warm_gpus_above_the_limit_exits_2_from_the_plan(tmp_path):
    config = stack_config("dev")
    config[NP]["gpu"]["warmGpus"] = 5
    stack_file = tmp_path / "Pulumi.warm.yaml"
    stack_file.write_text(yaml.safe_dump({"config": config}))
    out = tmp_path / "out"
    proc = run_plan("--stack", "dev", "--config", str(stack_file), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "gpu-inference:nodePools.gpu.warmGpus must be at most" in proc.stderr
    assert not out.exists()


def test_headroom_cost_shows_in_the_summary(tmp_path):
    stack_file = tmp_path / "Pulumi.warm.yaml"
    stack_file.write_text(yaml.safe_dump({"config": warm_config()}))
    out = tmp_path / "out"
    proc = run_plan("--stack", "dev", "--config", str(stack_file), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    # gpu: 2 GPUs, each held with llm's 2 CPUs / 12 GiB: one per g6.xlarge (4 vCPUs, 16 GiB, $0.8048).
    # gpu-shared: 4 slices = 1 g6 GPU held with 4 x (1 CPU, 4 GiB) of embed-small and the batch job:
    # too much for a g6.xlarge once the node's own reservations are off, so a g6.2xlarge ($0.9776).
    expected = 2 * 0.8048 + 1 * 0.9776
    assert f"Warm GPU headroom: **${expected:,.2f}/h**" in (out / "summary.md").read_text()
