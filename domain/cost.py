"""What a stack costs per hour: idle, and at worst with every pool at its limits.

One function, `estimate(CostInputs)`, serves the plan summary and the
`max-hourly-spend` policy. Its inputs come either from settings
(`CostInputs.from_settings`) or from recorded resources (the policy builds them
from NodePools and the rest), so both price the same thing the same way.

Prices come from `domain/data/prices.json` (on-demand list prices, pinned with
their date). Spot is never charged above on-demand (Karpenter caps spot at the
on-demand price), so on-demand rates bound both capacity types: the worst case
holds whatever the pool's capacity types are.

Worst case of a pool: Karpenter stops launching once any of the pool's limits
(nvidia.com/gpu, cpu, memory) is reached, so for each allowed instance type
the pool can hold `min(limit / per-instance amount)` instances of it; the worst
case is the most expensive such fill. Counts are fractional: Karpenter checks
limits before a launch, so it may overshoot by one node; the estimate leaves
that out and says so. Not priced: EBS of Karpenter nodes, data transfer, NAT
data processing, CloudWatch logs, KMS, load balancers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from domain import catalog, headroom, versions
from domain.settings import Settings

PRICES_FILE = Path(__file__).with_name("data") / "prices.json"
HOURS_PER_MONTH = 730  # AWS's convention for monthly rates


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: float
    gpus: int
    usd_per_hour: float


@dataclass(frozen=True)
class PriceBook:
    region: str  # the region asked for
    priced_as: str  # the region whose rates are used
    as_of: str
    eks_standard: float
    eks_extended: float
    nat_gateway: float
    gp3_gib_month: float
    gpu_types: Mapping[str, InstanceType]
    cpu_families: Mapping[str, tuple[float, float]]  # family -> (GiB per vCPU, USD per vCPU-hour)

    def family_types(self, family: str) -> list[InstanceType]:
        """Instance types of a family that carry a price; CPU families as one vCPU-sized unit."""
        if family in self.cpu_families:
            gib_per_vcpu, per_vcpu = self.cpu_families[family]
            return [InstanceType(f"{family}.*", 1, gib_per_vcpu, 0, per_vcpu)]
        return [t for t in self.gpu_types.values() if t.name.split(".")[0] == family]

    def instance(self, name: str) -> InstanceType:
        if name in self.gpu_types:
            return self.gpu_types[name]
        vcpus = catalog.cpu_instance_vcpus(name)
        family = name.split(".")[0]
        if vcpus is None or family not in self.cpu_families:
            raise KeyError(f"no price for instance type {name} in {PRICES_FILE.name}")
        gib_per_vcpu, per_vcpu = self.cpu_families[family]
        return InstanceType(name, vcpus, vcpus * gib_per_vcpu, 0, vcpus * per_vcpu)

    def control_plane(self, kubernetes_version: str) -> tuple[float, str]:
        """Hourly control-plane rate and its support tier on the price date."""
        end = versions.EKS_STANDARD_SUPPORT_END.get(kubernetes_version)
        if end is not None and dt.date.fromisoformat(self.as_of) > dt.date.fromisoformat(end):
            return self.eks_extended, "extended support"
        return self.eks_standard, "standard support"


@cache
def _price_data() -> dict:
    return json.loads(PRICES_FILE.read_text())


def price_book(region: str) -> PriceBook:
    data = _price_data()
    priced_as = region if region in data["regions"] else data["sameRatesAs"].get(region, "us-east-1")
    rates = data["regions"][priced_as]
    return PriceBook(
        region=region,
        priced_as=priced_as,
        as_of=data["about"]["asOf"],
        eks_standard=rates["eksControlPlane"]["standard"],
        eks_extended=rates["eksControlPlane"]["extended"],
        nat_gateway=rates["natGateway"],
        gp3_gib_month=rates["gp3GibMonth"],
        gpu_types={
            name: InstanceType(name, int(v), float(m), int(g), float(p))
            for name, (v, m, g, p) in rates["gpuInstances"].items()
        },
        cpu_families={f: (float(g), float(p)) for f, (g, p) in rates["cpuFamilies"].items()},
    )


@dataclass(frozen=True)
class PoolCostInputs:
    name: str
    families: tuple[str, ...]
    max_cpu: float
    max_gpus: float | None = None  # physical GPUs
    max_memory_gib: float | None = None
    warm_gpus: int = 0  # physical GPUs held by the headroom
    # What the headroom holds beside each physical GPU (domain/headroom.py): it decides
    # which instance type Karpenter buys for it. Zero: the cheapest type per GPU.
    warm_cpu_per_gpu: float = 0.0
    warm_memory_gib_per_gpu: float = 0.0


@dataclass(frozen=True)
class CostInputs:
    region: str
    kubernetes_version: str
    system_instance_type: str
    system_nodes: int
    system_disk_gib: int
    nat_gateways: int
    pools: tuple[PoolCostInputs, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> CostInputs:
        nodes = settings.cluster.system_nodes
        consumers = headroom.consumers_by_pool(settings)
        held = {
            name: headroom.per_physical_gpu(consumers, name, pool.time_slicing_replicas or 1)
            for name, pool in settings.node_pools.items()
            if pool.warm_gpus
        }
        return cls(
            region=settings.region,
            kubernetes_version=settings.cluster.version,
            # An on-demand managed node group launches its first listed type (prioritized strategy).
            system_instance_type=nodes.instance_types[0],
            system_nodes=nodes.desired_size,
            system_disk_gib=nodes.disk_gib,
            nat_gateways=1 if settings.network.nat_gateways == "single" else settings.network.az_count,
            pools=tuple(
                PoolCostInputs(
                    name=name,
                    families=pool.instance_families,
                    max_cpu=pool.max_cpu,
                    max_gpus=pool.max_gpus,
                    max_memory_gib=pool.max_memory_gib,
                    warm_gpus=pool.warm_physical_gpus,
                    warm_cpu_per_gpu=held.get(name, (0.0, 0.0))[0],
                    warm_memory_gib_per_gpu=held.get(name, (0.0, 0.0))[1],
                )
                for name, pool in sorted(settings.node_pools.items())
            ),
        )


@dataclass(frozen=True)
class PoolCost:
    name: str
    worst_per_hour: float
    worst_type: str  # the instance type that makes the worst case
    worst_count: float  # how many of it fit under the limits
    binding_limit: str  # the limit that stops Karpenter first for that type
    headroom_per_hour: float  # warm GPUs at the cheapest allowed type per GPU


@dataclass(frozen=True)
class CostEstimate:
    region: str
    priced_as: str
    as_of: str
    idle: Mapping[str, float]  # line item -> USD per hour
    pools: Mapping[str, PoolCost]
    notes: tuple[str, ...] = field(default=())

    @property
    def idle_per_hour(self) -> float:
        return sum(self.idle.values())

    @property
    def headroom_per_hour(self) -> float:
        return sum(p.headroom_per_hour for p in self.pools.values())

    @property
    def worst_per_hour(self) -> float:
        """Idle platform plus every pool at its limits (headroom sits inside those limits)."""
        return self.idle_per_hour + sum(p.worst_per_hour for p in self.pools.values())

    def as_json(self) -> dict:
        return {
            "currency": "USD",
            "region": self.region,
            "pricedAs": self.priced_as,
            "pricesAsOf": self.as_of,
            "idlePerHour": round(self.idle_per_hour, 4),
            "idle": {k: round(v, 4) for k, v in self.idle.items()},
            "warmHeadroomPerHour": round(self.headroom_per_hour, 4),
            "worstCasePerHour": round(self.worst_per_hour, 4),
            "pools": {
                name: {
                    "worstCasePerHour": round(p.worst_per_hour, 4),
                    "worstCaseInstanceType": p.worst_type,
                    "worstCaseInstances": round(p.worst_count, 3),
                    "bindingLimit": p.binding_limit,
                    "warmHeadroomPerHour": round(p.headroom_per_hour, 4),
                }
                for name, p in sorted(self.pools.items())
            },
            "notes": list(self.notes),
        }


def pool_worst_case(pool: PoolCostInputs, book: PriceBook) -> tuple[float, str, float, str]:
    """(USD per hour, instance type, instances, binding limit) of the priciest fill of the pool's limits."""
    best = (0.0, "-", 0.0, "-")
    for itype in _types(pool.families, book):
        bounds = {"cpu": pool.max_cpu / itype.vcpus}
        if pool.max_gpus is not None and itype.gpus:
            bounds["nvidia.com/gpu"] = pool.max_gpus / itype.gpus
        if pool.max_memory_gib is not None:
            bounds["memory"] = pool.max_memory_gib / itype.memory_gib
        limit, count = min(bounds.items(), key=lambda kv: kv[1])
        cost = count * itype.usd_per_hour
        if cost > best[0]:
            best = (cost, itype.name, count, limit)
    return best


def pool_headroom(pool: PoolCostInputs, book: PriceBook) -> float:
    """Warm GPUs priced at the cheapest allowed type per held GPU, as Karpenter would pick:
    a type holds as many placeholders as its GPUs, and its allocatable CPU and memory, allow."""
    if not pool.warm_gpus:
        return 0.0
    per_gpu = [
        t.usd_per_hour / held
        for t in _types(pool.families, book)
        if t.gpus and (held := _placeholders_held(t, pool.warm_cpu_per_gpu, pool.warm_memory_gib_per_gpu))
    ]
    if not per_gpu:
        raise ValueError(f"pool {pool.name}: no instance type of {list(pool.families)} fits one warm GPU's requests")
    return pool.warm_gpus * min(per_gpu)


# Roughly what a GPU node keeps from pods: kubelet/system reservations and eviction
# threshold (EKS AMI: about 6% of the first core plus fractions of the rest; 255 MiB +
# 11 MiB per pod plus 100 MiB), and the DaemonSets every GPU node runs (VPC CNI,
# kube-proxy, EBS CSI node, Pod Identity agent, device plugin, DCGM and node exporters).
NODE_RESERVED_CPU = 0.6
NODE_RESERVED_MEMORY_GIB = 3.0


def _placeholders_held(itype: InstanceType, cpu: float, memory_gib: float) -> int:
    fits = [itype.gpus]
    if cpu:
        fits.append(math.floor((itype.vcpus - NODE_RESERVED_CPU) / cpu))
    if memory_gib:
        fits.append(math.floor((itype.memory_gib - NODE_RESERVED_MEMORY_GIB) / memory_gib))
    return max(min(fits), 0)


def estimate(inputs: CostInputs, book: PriceBook | None = None) -> CostEstimate:
    book = book or price_book(inputs.region)
    control_plane, tier = book.control_plane(inputs.kubernetes_version)
    system = book.instance(inputs.system_instance_type)
    idle = {
        f"EKS control plane ({tier})": control_plane,
        f"system nodes ({inputs.system_nodes} x {system.name})": inputs.system_nodes * system.usd_per_hour,
        f"system node volumes ({inputs.system_nodes} x {inputs.system_disk_gib} GiB gp3)": inputs.system_nodes
        * inputs.system_disk_gib
        * book.gp3_gib_month
        / HOURS_PER_MONTH,
        f"NAT gateways ({inputs.nat_gateways})": inputs.nat_gateways * book.nat_gateway,
    }
    pools = {}
    for pool in inputs.pools:
        cost, itype, count, limit = pool_worst_case(pool, book)
        pools[pool.name] = PoolCost(pool.name, cost, itype, count, limit, pool_headroom(pool, book))
    notes = ["on-demand list prices; spot can only be cheaper", "a pool may overshoot its limits by one node"]
    if book.priced_as != inputs.region:
        mapped = inputs.region in _price_data()["sameRatesAs"]
        notes.append(
            f"{inputs.region} lists the same rates as {book.priced_as} for these types"
            if mapped
            else f"no rates for {inputs.region} in {PRICES_FILE.name}: priced at {book.priced_as} rates"
        )
    return CostEstimate(inputs.region, book.priced_as, book.as_of, idle, pools, tuple(notes))


def _types(families: Iterable[str], book: PriceBook) -> list[InstanceType]:
    found = [t for f in families for t in book.family_types(f)]
    if not found:
        raise KeyError(f"no prices for instance families {sorted(families)} in {PRICES_FILE.name}")
    return found
