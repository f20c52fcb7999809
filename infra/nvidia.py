"""NVIDIA device plugin: advertises `nvidia.com/gpu` on GPU nodes only.

Named configs live in one ConfigMap: `exclusive` (1 per physical GPU, the
default) and `time-sliced-<pool>` per shared pool with that pool's replicas.
Each node picks its config through the `nvidia.com/device-plugin.config` label
its NodePool sets (see `domain.contract.PoolContract.labels`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import yaml

from domain import contract, pods, versions
from infra.helm import pinned_release

NAMESPACE = "nvidia-device-plugin"
CONFIG_MAP = "nvidia-device-plugin-configs"


@dataclass(frozen=True)
class DevicePluginArgs:
    # Shared (time-sliced) pool name -> slices per physical GPU; dedicated pools use the default config.
    time_slicing: Mapping[str, int]


def plugin_configs(time_slicing: Mapping[str, int]) -> dict[str, dict]:
    """Config name -> device-plugin config (the plugin's `version: v1` format)."""
    flags = {"migStrategy": "none"}
    configs: dict[str, dict] = {contract.DEVICE_PLUGIN_DEFAULT_CONFIG: {"version": "v1", "flags": flags}}
    for name, replicas in sorted(time_slicing.items()):
        config = contract.PoolContract(name, "shared").device_plugin_config
        assert config is not None  # every shared pool's nodes select a config of their own
        configs[config] = {
            "version": "v1",
            "flags": flags,
            "sharing": {
                "timeSlicing": {
                    # Keep the resource name `nvidia.com/gpu` so pods and NodeOverlays agree.
                    "renameByDefault": False,
                    # A slice gives no more compute when asked twice: refuse instead of misleading.
                    "failRequestsGreaterThanOne": True,
                    "resources": [{"name": contract.GPU_RESOURCE, "replicas": replicas}],
                }
            },
        }
    return configs


def helm_values() -> dict:
    repository, tag = versions.IMAGES["nvidia-device-plugin"].rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag},
        "config": {
            "name": CONFIG_MAP,
            "default": contract.DEVICE_PLUGIN_DEFAULT_CONFIG,
            # Only named configs: a node whose label names no config falls back to
            # the default, never to a guess.
            "fallbackStrategies": ["named"],
        },
        # Our own node labels replace the chart's NFD/GFD-based affinity: no
        # feature discovery runs here, and our pools set these labels at launch.
        # (The chart's defaults already run it at system-node-critical priority, and
        # leave GPU feature discovery and node feature discovery off.)
        "affinity": contract.gpu_node_affinity(),
        "tolerations": contract.gpu_daemon_tolerations(),
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }


class DevicePlugin(pulumi.ComponentResource):
    def __init__(self, name: str, args: DevicePluginArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:nvidia:DevicePlugin", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-ns",
            # The device plugin registers with the kubelet through a hostPath socket.
            metadata={"name": NAMESPACE, "labels": {"name": NAMESPACE, **pods.pod_security_labels("privileged")}},
            opts=child,
        )
        ns_child = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        self.configs = plugin_configs(args.time_slicing)
        self.config_map = k8s.core.v1.ConfigMap(
            f"{name}-configs",
            metadata={"name": CONFIG_MAP, "namespace": NAMESPACE},
            data={key: yaml.safe_dump(cfg, sort_keys=False) for key, cfg in self.configs.items()},
            opts=ns_child,
        )
        self.release = pinned_release(
            f"{name}-release",
            versions.NVIDIA_DEVICE_PLUGIN,
            name="nvidia-device-plugin",
            namespace=NAMESPACE,
            values=helm_values(),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.namespace, self.config_map]),
        )
        self.register_outputs({"configNames": sorted(self.configs)})
