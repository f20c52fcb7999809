"""Karpenter NodePools: limits, taints, allowed families and capacity types,
and time-sliced pools that Karpenter must know the sliced capacity of."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from pulumi_policy import PolicyResource, ResourceValidationArgs

from domain import catalog, contract
from policies.rules.common import (
    ADVISORY,
    NODEOVERLAY,
    NODEPOOL,
    Config,
    dig,
    requirement_values,
    resource_policy,
    schema,
    stack_policy,
)


def _families(props: Mapping[str, Any]) -> list[str]:
    return requirement_values(props, contract.INSTANCE_FAMILY_LABEL) or []


def is_gpu_pool(props: Mapping[str, Any]) -> bool:
    """A pool that can launch GPU instances: a GPU family, or a GPU limit or taint already set."""
    if any(catalog.FAMILIES.get(f, catalog.Family(f, "")).is_gpu for f in _families(props)):
        return True
    taints = dig(props, "spec", "template", "spec", "taints") or []
    return contract.GPU_RESOURCE in (dig(props, "spec", "limits") or {}) or any(
        t.get("key") == contract.GPU_TAINT.key for t in taints
    )


def _name(props: Mapping[str, Any]) -> str:
    return str(dig(props, "metadata", "name") or "?")


def _gpu_limit(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    if not is_gpu_pool(args.props):
        return
    limit = (dig(args.props, "spec", "limits") or {}).get(contract.GPU_RESOURCE)
    if limit in (None, "", 0, "0"):
        yield (
            f"NodePool {_name(args.props)} can launch GPU instances but has no limits.{contract.GPU_RESOURCE}:"
            " Karpenter would buy GPUs without bound"
        )


def _gpu_taint(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    if not is_gpu_pool(args.props):
        return
    taints = dig(args.props, "spec", "template", "spec", "taints") or []
    if not any(t.get("key") == contract.GPU_TAINT.key and t.get("effect") == "NoSchedule" for t in taints):
        yield (
            f"NodePool {_name(args.props)} can launch GPU instances without the {contract.GPU_TAINT.key}:NoSchedule"
            " taint: any pod could land on (and keep alive) a GPU node"
        )


def _cpu_limit(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    if (dig(args.props, "spec", "limits") or {}).get("cpu") in (None, "", 0, "0"):
        yield f"NodePool {_name(args.props)} has no limits.cpu: Karpenter could scale it without bound"


def _allowed_families(args: ResourceValidationArgs, config: Config) -> Iterable[str]:
    families = requirement_values(args.props, contract.INSTANCE_FAMILY_LABEL)
    if families is None:
        yield (
            f"NodePool {_name(args.props)} does not constrain {contract.INSTANCE_FAMILY_LABEL} with an In requirement:"
            " Karpenter may launch any family, GPU ones included"
        )
        return
    allowed = set(config["allowedFamilies"])
    denied = sorted(set(families) - allowed)
    if denied:
        yield f"NodePool {_name(args.props)} allows instance families {denied}; this environment allows {sorted(allowed)}"


def _allowed_capacity(args: ResourceValidationArgs, config: Config) -> Iterable[str]:
    # Karpenter launches on-demand only when a pool does not say.
    types = requirement_values(args.props, contract.CAPACITY_TYPE_LABEL) or ["on-demand"]
    key = "gpuCapacityTypes" if is_gpu_pool(args.props) else "cpuCapacityTypes"
    denied = sorted(set(types) - set(config[key]))
    if denied:
        kind = "GPU" if key == "gpuCapacityTypes" else "CPU"
        yield (
            f"NodePool {_name(args.props)} ({kind}) allows capacity types {denied};"
            f" this environment allows {sorted(config[key])} for {kind} pools"
        )


def _expiry(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    if dig(args.props, "spec", "template", "spec", "expireAfter") == "Never":
        yield f"NodePool {_name(args.props)} never expires its nodes: AMI and kernel patches never roll out"


def time_sliced_configs(resources: list[PolicyResource]) -> dict[str, int]:
    """Device-plugin config name -> time-slicing replicas, from the ConfigMaps in the stack."""
    found: dict[str, int] = {}
    for r in resources:
        if r.resource_type != "kubernetes:core/v1:ConfigMap":
            continue
        for name, text in (r.props.get("data") or {}).items():
            try:
                document = yaml.safe_load(text) if isinstance(text, str) else None
            except yaml.YAMLError:
                continue
            for res in dig(document, "sharing", "timeSlicing", "resources") or []:
                if res.get("name") == contract.GPU_RESOURCE and res.get("replicas"):
                    found[name] = int(res["replicas"])
    return found


def _overlays_for_sliced_pools(resources: list[PolicyResource], _: Config) -> Iterable[tuple[str, str | None]]:
    sliced = time_sliced_configs(resources)
    overlaid: set[str] = set()
    for r in resources:
        if r.resource_type == NODEOVERLAY and contract.GPU_RESOURCE in (dig(r.props, "spec", "capacity") or {}):
            for req in dig(r.props, "spec", "requirements") or []:
                if req.get("key") == contract.NODEPOOL_LABEL and req.get("operator") == "In":
                    overlaid.update(req.get("values") or [])
    for r in resources:
        if r.resource_type != NODEPOOL:
            continue
        config = (dig(r.props, "spec", "template", "metadata", "labels") or {}).get(contract.DEVICE_PLUGIN_CONFIG_LABEL)
        name = _name(r.props)
        if config in sliced and name not in overlaid:
            yield (
                f"NodePool {name} runs time-sliced GPUs ({sliced[config]} per GPU) but no NodeOverlay tells Karpenter"
                f" its sliced {contract.GPU_RESOURCE} capacity: N one-slice pods would get N nodes",
                r.urn,
            )


FAMILIES = schema(
    allowedFamilies={
        "type": "array",
        "items": {"type": "string"},
        "default": sorted(catalog.FAMILIES),
        "description": "EC2 instance families NodePools may launch in this environment.",
    }
)
CAPACITY = schema(
    gpuCapacityTypes={
        "type": "array",
        "items": {"enum": ["spot", "on-demand", "reserved"]},
        "default": ["spot", "on-demand", "reserved"],
        "description": "Capacity types GPU NodePools may use (prod inference: on-demand and reserved, no spot).",
    },
    cpuCapacityTypes={
        "type": "array",
        "items": {"enum": ["spot", "on-demand", "reserved"]},
        "default": ["spot", "on-demand", "reserved"],
        "description": "Capacity types CPU NodePools may use.",
    },
)

POLICIES = [
    resource_policy(
        "gpu-nodepool-gpu-limit",
        "GPU NodePools have a limit on nvidia.com/gpu.",
        "Set nodePools.<pool>.maxGpus in the stack config.",
        [NODEPOOL],
        _gpu_limit,
    ),
    resource_policy(
        "gpu-nodepool-taint",
        "GPU NodePools taint their nodes nvidia.com/gpu:NoSchedule.",
        "Build NodePool taints from domain.contract.PoolContract.taints().",
        [NODEPOOL],
        _gpu_taint,
    ),
    resource_policy(
        "nodepool-cpu-limit",
        "Every NodePool has a CPU limit.",
        "Set nodePools.<pool>.maxCpu in the stack config.",
        [NODEPOOL],
        _cpu_limit,
    ),
    resource_policy(
        "allowed-instance-families",
        "NodePools only launch the instance families this environment allows.",
        "Change nodePools.<pool>.instanceFamilies, or allowedFamilies in policies/config/<env>.json.",
        [NODEPOOL],
        _allowed_families,
        config=FAMILIES,
    ),
    resource_policy(
        "allowed-capacity-types",
        "NodePools only use the capacity types this environment allows (for example no spot for prod GPUs).",
        "Change nodePools.<pool>.capacityTypes, or the allowed lists in policies/config/<env>.json.",
        [NODEPOOL],
        _allowed_capacity,
        config=CAPACITY,
    ),
    resource_policy(
        "nodepool-node-expiry",
        "NodePools expire nodes so AMI and kernel updates roll out.",
        "Set nodePools.<pool>.expireAfter to a duration such as 720h.",
        [NODEPOOL],
        _expiry,
        enforcement=ADVISORY,
    ),
    stack_policy(
        "time-sliced-pool-has-overlay",
        "NodePools whose nodes load a time-slicing device-plugin config have a NodeOverlay with the sliced capacity.",
        "Render shared pools with infra.nodepools (one NodeOverlay per GPU count); enable the nodeOverlay feature gate.",
        _overlays_for_sliced_pools,
    ),
]
