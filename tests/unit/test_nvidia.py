from __future__ import annotations

import pytest
import yaml

from domain import contract, versions
from infra.mapping import device_plugin_args
from infra.nvidia import CONFIG_MAP, NAMESPACE, DevicePlugin, plugin_configs
from tests.unit.helpers import assert_parented, build, named, settings_of


@pytest.fixture(scope="module")
def resources():
    args = device_plugin_args(settings_of("dev").node_pools)
    return build(lambda: DevicePlugin("nv", args))


def test_named_configs_exclusive_by_default_and_time_sliced_per_shared_pool(resources) -> None:
    data = named(resources, "nv-configs").inputs["data"]
    configs = {name: yaml.safe_load(text) for name, text in data.items()}
    assert sorted(configs) == ["exclusive", "time-sliced-gpu-shared"]
    assert "sharing" not in configs["exclusive"]
    sliced = configs["time-sliced-gpu-shared"]["sharing"]["timeSlicing"]
    assert sliced["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]
    assert sliced["renameByDefault"] is False and sliced["failRequestsGreaterThanOne"] is True


def test_each_shared_pool_gets_its_own_replicas() -> None:
    from domain.settings import PoolSettings

    def shared(replicas: int) -> PoolSettings:
        return PoolSettings.parse(
            {
                "gpu": "shared",
                "instanceFamilies": ["g6"],
                "capacityTypes": ["spot"],
                "maxCpu": 8,
                "maxGpus": 1,
                "timeSlicingReplicas": replicas,
            }
        )

    configs = plugin_configs(device_plugin_args({"a": shared(2), "b": shared(8)}).time_slicing)
    replicas = {
        k: v["sharing"]["timeSlicing"]["resources"][0]["replicas"] for k, v in configs.items() if "sharing" in v
    }
    assert replicas == {"time-sliced-a": 2, "time-sliced-b": 8}


def test_release_is_pinned_and_points_at_the_config_map(resources) -> None:
    release = named(resources, "nv-release").inputs
    assert release["version"] == versions.NVIDIA_DEVICE_PLUGIN.version
    assert release["repositoryOpts"] == {"repo": versions.NVIDIA_DEVICE_PLUGIN.repo}
    assert release["namespace"] == NAMESPACE
    values = release["values"]
    assert values["config"] == {"name": CONFIG_MAP, "default": "exclusive", "fallbackStrategies": ["named"]}
    assert values["image"]["tag"] == versions.IMAGES["nvidia-device-plugin"].rsplit(":", 1)[1]
    assert values["affinity"] == contract.gpu_node_affinity()
    assert values["tolerations"] == contract.gpu_daemon_tolerations()
    assert named(resources, "nv-configs").urn in named(resources, "nv-release").dependencies
    assert_parented(resources, "gpuinf:nvidia:DevicePlugin")
