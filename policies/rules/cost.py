"""Spend: the worst case that the pool limits allow must stay under the environment's budget.

The rule rebuilds `domain.cost.CostInputs` from the resources a preview sees
(NodePools, the system node group, NAT gateways, the cluster version, subnets'
zones, headroom Deployments) and prices them with `domain.cost.estimate`, the
function the plan summary uses: one computation, two readers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import PolicyResource

from domain import contract, cost
from policies.rules.common import NODEPOOL, Config, dig, pod_spec, requirement_values, schema, stack_policy

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
NAT_GATEWAY = "aws:ec2/natGateway:NatGateway"
SUBNET = "aws:ec2/subnet:Subnet"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
CLUSTER_TYPES = ("eks:index:Cluster", "aws:eks/cluster:Cluster")
DEPLOYMENT = "kubernetes:apps/v1:Deployment"

_BINARY = {"Ki": 2**-20, "Mi": 2**-10, "Gi": 1, "Ti": 2**10}
_DECIMAL = {"k": 1e3 / 2**30, "M": 1e6 / 2**30, "G": 1e9 / 2**30, "T": 1e12 / 2**30}


def quantity(value: Any, unit: str = "") -> float | None:
    """A Kubernetes quantity as a number: CPUs for `cpu`, GiB for `memory`."""
    if value is None:
        return None
    text = str(value).strip()
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    if match is None:
        return None
    number, suffix = float(match[1]), match[2]
    if suffix == "m":
        return number / 1000
    if unit == "memory":
        factor = 2**-30 if not suffix else _BINARY.get(suffix, _DECIMAL.get(suffix))
        return number * factor if factor is not None else None
    return number if not suffix else None


def cost_inputs(resources: list[PolicyResource]) -> cost.CostInputs | None:
    """CostInputs from a stack's resources; None when there is no cluster to price."""
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for res in resources:
        by_type.setdefault(res.resource_type, []).append(res.props or {})
    clusters = [p for t in CLUSTER_TYPES for p in by_type.get(t, [])]
    groups = by_type.get(NODE_GROUP, [])
    if not clusters or not groups:
        return None
    group = groups[0]
    zones = sorted(str(p.get("availabilityZone")) for p in by_type.get(SUBNET, []) if p.get("availabilityZone"))
    disks = [
        int(dig(m, "ebs", "volumeSize") or 0)
        for lt in by_type.get(LAUNCH_TEMPLATE, [])
        for m in lt.get("blockDeviceMappings") or []
    ]
    warm = _warm_gpus(by_type.get(DEPLOYMENT, []))
    return cost.CostInputs(
        region=zones[0][:-1] if zones else "us-east-1",
        kubernetes_version=str(clusters[0].get("version") or ""),
        system_instance_type=str((group.get("instanceTypes") or ["m7i.large"])[0]),
        system_nodes=int(dig(group, "scalingConfig", "desiredSize") or 0),
        system_disk_gib=int(group.get("diskSize") or max(disks, default=20)),
        nat_gateways=len(by_type.get(NAT_GATEWAY, [])),
        pools=tuple(
            sorted(
                (_pool(p, warm) for p in by_type.get(NODEPOOL, []) if dig(p, "metadata", "name")), key=lambda p: p.name
            )
        ),
    )


def _pool(props: Mapping[str, Any], warm: Mapping[str, tuple[int, float, float]]) -> cost.PoolCostInputs:
    name = str(dig(props, "metadata", "name"))
    limits = dig(props, "spec", "limits") or {}
    replicas = quantity(dig(props, "metadata", "annotations", contract.TIME_SLICING_REPLICAS_ANNOTATION)) or 1
    gpus = quantity(limits.get(contract.GPU_RESOURCE))
    units, cpu, memory = warm.get(name, (0, 0.0, 0.0))
    return cost.PoolCostInputs(
        name=name,
        families=tuple(requirement_values(props, contract.INSTANCE_FAMILY_LABEL) or ()),
        # No cpu limit: the cpu-limit rule reports it; price as if capped at 0 here.
        max_cpu=quantity(limits.get("cpu")) or 0.0,
        max_gpus=gpus / replicas if gpus is not None else None,
        max_memory_gib=quantity(limits.get("memory"), "memory"),
        # The annotation counts the pool's unit (slices on a shared pool); cost wants physical GPUs.
        warm_gpus=math.ceil(units / replicas),
        warm_cpu_per_gpu=cpu * replicas,
        warm_memory_gib_per_gpu=memory * replicas,
    )


def _warm_gpus(deployments: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, float, float]]:
    """Pool -> (GPUs held warm (slices on a shared pool), CPUs and GiB held beside each), from
    the headroom Deployments' annotation and their placeholders' requests."""
    warm: dict[str, tuple[int, float, float]] = {}
    for props in deployments:
        value = dig(props, "metadata", "annotations", contract.WARM_GPUS_ANNOTATION)
        spec = pod_spec(DEPLOYMENT, props) or {}
        pool = (spec.get("nodeSelector") or {}).get(contract.NODEPOOL_LABEL)
        if value is None or not pool:
            continue
        requests = dig((spec.get("containers") or [{}])[0], "resources", "requests") or {}
        per_pod = quantity(requests.get(contract.GPU_RESOURCE)) or 1
        units, cpu, memory = warm.get(pool, (0, 0.0, 0.0))
        warm[pool] = (
            units + int(quantity(value) or 0),
            max(cpu, (quantity(requests.get("cpu")) or 0.0) / per_pod),
            max(memory, (quantity(requests.get("memory"), "memory") or 0.0) / per_pod),
        )
    return warm


def _max_hourly_spend(resources: list[PolicyResource], config: Config) -> Iterable[tuple[str, str | None]]:
    budget = config.get("maxHourlySpend")
    if budget is None:
        return
    inputs = cost_inputs(resources)
    if inputs is None:
        return
    try:
        estimate = cost.estimate(inputs)
    except KeyError as exc:
        yield f"cannot price this stack: {exc.args[0]}", None
        return
    worst = estimate.worst_per_hour
    if worst > budget:
        pools = ", ".join(
            f"{p.name} ${p.worst_per_hour:,.2f} ({p.worst_count:g} x {p.worst_type})"
            for p in sorted(estimate.pools.values(), key=lambda p: -p.worst_per_hour)
        )
        yield (
            (
                f"worst-case spend ${worst:,.2f}/h (idle ${estimate.idle_per_hour:,.2f}/h plus every pool at its"
                f" limits: {pools}) exceeds maxHourlySpend ${budget:,.2f}/h"
            ),
            None,
        )


POLICIES = [
    stack_policy(
        "max-hourly-spend",
        "The hourly spend that the NodePool limits allow (priced with domain/cost.py at on-demand list prices)"
        " stays within the environment's budget.",
        "Lower maxGpus / maxCpu of the priciest pools, drop their most expensive instance families, or raise"
        " maxHourlySpend in this environment's policy config if the budget really allows it.",
        _max_hourly_spend,
        config=schema(maxHourlySpend={"type": "number", "minimum": 0, "description": "USD per hour; unset: no check"}),
    )
]
