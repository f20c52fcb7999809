from __future__ import annotations

import pytest

from domain import contract
from domain.settings import PoolSettings
from infra.mapping import node_pool_spec, node_pools_args
from infra.nodepools import NodePools, block_devices, node_overlay_specs
from tests.unit.helpers import assert_parented, build, of_type, settings_of


@pytest.fixture(scope="module")
def resources():
    args = node_pools_args(settings_of("dev"), node_role_name="node-role", depends_on=[])
    return build(lambda: NodePools("np", args))


def _by_name(resources, kind: str) -> dict:
    return {r.inputs["metadata"]["name"]: r.inputs for r in resources if r.inputs.get("kind") == kind}


def test_one_nodeclass_and_nodepool_per_pool(resources) -> None:
    assert sorted(_by_name(resources, "NodePool")) == ["cpu", "gpu", "gpu-shared"]
    assert sorted(_by_name(resources, "EC2NodeClass")) == ["cpu", "gpu", "gpu-shared"]
    for name, pool in _by_name(resources, "NodePool").items():
        assert pool["spec"]["template"]["spec"]["nodeClassRef"] == {
            "group": "karpenter.k8s.aws",
            "kind": "EC2NodeClass",
            "name": name,
        }
    assert_parented(resources, "gpuinf:nodepools:NodePools")


def test_requirements_limits_and_disruption_follow_settings(resources) -> None:
    gpu = _by_name(resources, "NodePool")["gpu"]["spec"]
    reqs = {r["key"]: r["values"] for r in gpu["template"]["spec"]["requirements"]}
    assert reqs[contract.INSTANCE_FAMILY_LABEL] == ["g5", "g6"]
    assert reqs[contract.CAPACITY_TYPE_LABEL] == ["spot", "on-demand"]
    assert reqs[contract.ARCH_LABEL] == ["amd64"]
    assert gpu["limits"] == {"cpu": 96, "nvidia.com/gpu": 4}
    assert gpu["disruption"] == {
        "consolidationPolicy": "WhenEmpty",
        "consolidateAfter": "5m",
        "budgets": [{"nodes": "10%"}],
    }
    cpu = _by_name(resources, "NodePool")["cpu"]["spec"]
    assert cpu["limits"] == {"cpu": 64}
    assert "taints" not in cpu["template"]["spec"]


def test_gpu_pools_are_tainted_and_labelled_from_the_contract(resources) -> None:
    pools = _by_name(resources, "NodePool")
    for name, mode in (("gpu", "dedicated"), ("gpu-shared", "shared")):
        terms = contract.PoolContract(name, mode)
        template = pools[name]["spec"]["template"]
        assert template["metadata"]["labels"] == terms.labels()
        assert template["spec"]["taints"] == [t.as_k8s() for t in terms.taints()]
        assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in template["spec"]["taints"]
    assert pools["gpu-shared"]["spec"]["template"]["metadata"]["labels"][contract.DEVICE_PLUGIN_CONFIG_LABEL] == (
        "time-sliced-gpu-shared"
    )


def test_shared_pool_limit_counts_slices_and_overlays_cover_each_gpu_count(resources) -> None:
    shared = _by_name(resources, "NodePool")["gpu-shared"]["spec"]
    assert shared["limits"]["nvidia.com/gpu"] == 2 * 4  # maxGpus x timeSlicingReplicas
    overlays = _by_name(resources, "NodeOverlay")
    assert {name: o["spec"]["capacity"] for name, o in overlays.items()} == {
        "gpu-shared-slices-1gpu": {"nvidia.com/gpu": "4"},
        "gpu-shared-slices-4gpu": {"nvidia.com/gpu": "16"},
        "gpu-shared-slices-8gpu": {"nvidia.com/gpu": "32"},
    }
    for name, overlay in overlays.items():
        reqs = {r["key"]: r["values"] for r in overlay["spec"]["requirements"]}
        assert reqs[contract.NODEPOOL_LABEL] == ["gpu-shared"], name
        assert int(reqs[contract.INSTANCE_GPU_COUNT_LABEL][0]) * 4 == int(overlay["spec"]["capacity"]["nvidia.com/gpu"])


def test_nodeclass_is_imdsv2_encrypted_pinned_and_tagged(resources) -> None:
    classes = _by_name(resources, "EC2NodeClass")
    gpu = classes["gpu"]["spec"]
    assert gpu["role"] == "node-role"
    assert gpu["metadataOptions"]["httpTokens"] == "required"
    assert gpu["metadataOptions"]["httpPutResponseHopLimit"] == 1
    assert gpu["amiSelectorTerms"] == [{"alias": PoolSettings.model_fields["ami_alias"].default}]
    ebs = gpu["blockDeviceMappings"][0]["ebs"]
    assert (ebs["volumeSize"], ebs["encrypted"], ebs["volumeType"]) == ("200Gi", True, "gp3")
    assert gpu["subnetSelectorTerms"] == [{"tags": {contract.DISCOVERY_TAG: "gpuinf-dev"}}]
    assert gpu["securityGroupSelectorTerms"] == gpu["subnetSelectorTerms"]
    # Karpenter launches the instances itself: the provider's default tags plus the cluster's name.
    assert gpu["tags"] == {**settings_of("dev").default_tags, "cluster": "gpuinf-dev"}
    assert classes["cpu"]["spec"]["blockDeviceMappings"][0]["ebs"]["volumeSize"] == "50Gi"


def test_bottlerocket_keeps_images_on_the_data_volume() -> None:
    pool = PoolSettings.parse(
        {
            "gpu": "none",  # Bottlerocket is for CPU pools only (settings: GPU pools boot AL2023)
            "instanceFamilies": ["c7i"],
            "capacityTypes": ["spot"],
            "maxCpu": 8,
            "rootVolumeGib": 300,
            "amiAlias": "bottlerocket@1.50.0",
        }
    )
    devices = block_devices(node_pool_spec(pool))
    assert [d["deviceName"] for d in devices] == ["/dev/xvda", "/dev/xvdb"]
    assert devices[1]["ebs"]["volumeSize"] == "300Gi" and all(d["ebs"]["encrypted"] for d in devices)


def test_dedicated_and_cpu_pools_get_no_overlay() -> None:
    pools = node_pools_args(settings_of("dev"), node_role_name="r", depends_on=[]).pools
    assert node_overlay_specs("gpu", pools["gpu"]) == {}
    assert node_overlay_specs("cpu", pools["cpu"]) == {}


def test_karpenter_objects_wait_for_the_controller() -> None:
    def program():
        import pulumi_kubernetes as k8s

        marker = k8s.helm.v3.Release("karpenter-release", chart="karpenter", version="1.0.0")
        NodePools("np", node_pools_args(settings_of("dev"), node_role_name="r", depends_on=[marker]))

    resources = build(program)
    marker = next(r.urn for r in resources if r.name == "karpenter-release")
    karpenter_objects = [r for r in resources if r.type.startswith("kubernetes:karpenter")]
    assert karpenter_objects and all(marker in r.dependencies for r in karpenter_objects)
    assert len(of_type(resources, "kubernetes:karpenter.sh/v1alpha1:NodeOverlay")) == 3


def test_gpu_node_classes_stripe_instance_store_unless_an_image_cache_owns_containerd():
    """RAID0 puts emptyDirs (a served model's cache) and image layers on local NVMe; an image-cache
    snapshot's user data mounts its volume where nodeadm would mount the array, so not both."""
    from tests.conftest import plan_of, stack_config

    config = stack_config("dev")
    config["gpu-inference:nodePools"]["gpu-shared"]["imageCache"] = {"snapshotId": "snap-0123456789abcdef0"}
    classes = plan_of(config).objects("EC2NodeClass")
    policies = {name: obj["spec"].get("instanceStorePolicy") for name, obj in classes.items()}
    assert policies == {"cpu": None, "gpu": "RAID0", "gpu-shared": None}
