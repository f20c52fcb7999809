"""Preflight findings from facts about an account: pure functions, no AWS calls.

`aws.gather()` fetches `Facts`; `evaluate(settings, facts)` turns them into
blockers (exit 1) and warnings. Kept apart so every rule is tested with
plain data, and with moto through `aws.gather()`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from infra import amis
from infra.settings import PoolSettings, Settings

# EC2 vCPU quotas (Service Quotas, service code `ec2`) that GPU instances count against.
# On-Demand: one quota for G and VT, one for all P families. Spot: G and VT; P2/P3/P4;
# P5 on its own (AWS Service Quotas console names; codes as the console and API show them).
QUOTAS: dict[str, str] = {
    "L-DB2E81BA": "Running On-Demand G and VT instances",
    "L-417A185B": "Running On-Demand P instances",
    "L-3819A6DF": "All G and VT Spot Instance Requests",
    "L-7212CCBC": "All P4, P3 and P2 Spot Instance Requests",
    "L-C4BD4855": "All P5 Spot Instance Requests",
}


def quota_code(family: str, capacity_type: str) -> str | None:
    """The vCPU quota an instance family's capacity counts against (None: not a GPU quota we check)."""
    if family.startswith("g"):
        return "L-DB2E81BA" if capacity_type == "on-demand" else "L-3819A6DF"
    if family.startswith("p"):
        if capacity_type == "on-demand":
            return "L-417A185B"
        return "L-C4BD4855" if family.startswith("p5") else "L-7212CCBC"
    return None


@dataclass(frozen=True)
class InstanceFacts:
    name: str
    vcpus: int
    gpus: int = 0
    gpu_model: str = ""
    gpu_memory_gib: float = 0.0

    @property
    def family(self) -> str:
        return self.name.split(".")[0]


@dataclass(frozen=True)
class Facts:
    region: str
    zones: tuple[str, ...]
    offerings: Mapping[str, frozenset[str]]  # zone -> instance types offered there
    instance_types: Mapping[str, InstanceFacts]
    quotas: Mapping[str, float | None]  # code -> vCPUs (None: not found)
    amis: Mapping[str, str | None]  # SSM parameter -> image id (None: missing)


@dataclass(frozen=True)
class Finding:
    severity: str  # "blocker" | "warning"
    subject: str  # pool, zone or quota
    message: str

    def line(self) -> str:
        return f"{self.severity}: {self.subject}: {self.message}"


@dataclass
class Report:
    region: str
    zones: tuple[str, ...]
    coverage: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # pool -> zone -> types
    quotas: dict[str, dict] = field(default_factory=dict)  # code -> name, found, needed, pools
    amis: dict[str, str | None] = field(default_factory=dict)
    instance_types: dict[str, InstanceFacts] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def blockers(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "blocker"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]


def families_of(instance_type: str) -> str:
    return instance_type.split(".")[0]


def pool_types(pool: PoolSettings, offered: frozenset[str]) -> list[str]:
    return sorted(t for t in offered if families_of(t) in pool.instance_families)


def vcpus_to_reach_limits(pool: PoolSettings, types: list[InstanceFacts]) -> int:
    """vCPUs the pool can hold at its limits with the least favourable of `types`.

    Reaching `maxGpus` GPUs with a type of g GPUs and v vCPUs takes ceil(maxGpus / g)
    instances, ceil(maxGpus / g) * v vCPUs; the pool's cpu limit stops Karpenter first
    when that is more than `maxCpu`. The quota must cover the largest such figure.
    """
    needs = [
        min(math.ceil((pool.max_gpus or 0) / t.gpus) * t.vcpus, pool.max_cpu) for t in types if t.gpus and pool.max_gpus
    ]
    return max(needs, default=0)


def ami_parameters(settings: Settings) -> dict[str, tuple[str, ...]]:
    """SSM parameter -> pools whose nodes boot from it."""
    found: dict[str, list[str]] = {}
    for name, pool in sorted(settings.node_pools.items()):
        for arch in pool.architectures:
            key = amis.ssm_parameter(pool.ami_alias, settings.cluster.version, arch, gpu=pool.is_gpu)
            found.setdefault(key, []).append(name)
    return {k: tuple(v) for k, v in found.items()}


def evaluate(settings: Settings, facts: Facts) -> Report:
    report = Report(region=facts.region, zones=facts.zones, instance_types=dict(facts.instance_types))
    needed: dict[str, dict[str, int]] = {}
    for name, pool in sorted(settings.node_pools.items()):
        coverage = {zone: pool_types(pool, facts.offerings.get(zone, frozenset())) for zone in facts.zones}
        report.coverage[name] = coverage
        families = ", ".join(pool.instance_families)
        empty = [zone for zone, types in coverage.items() if not types]
        if len(empty) == len(facts.zones):
            report.findings.append(
                Finding(
                    "blocker",
                    f"pool {name}",
                    f"no instance type of {families} is offered in any of {', '.join(facts.zones)}",
                )
            )
            continue
        for zone in empty:
            covered = [z for z in facts.zones if z not in empty]
            report.findings.append(
                Finding(
                    "warning",
                    f"pool {name}",
                    f"{zone} offers none of {families}: Karpenter can only launch these nodes in {', '.join(covered)}",
                )
            )
        offered_families = {families_of(t) for types in coverage.values() for t in types}
        for family in pool.instance_families:
            if family not in offered_families:
                report.findings.append(
                    Finding(
                        "warning",
                        f"pool {name}",
                        f"family {family} is offered in none of the zones; only {', '.join(sorted(offered_families))} can launch",
                    )
                )
        if not pool.is_gpu:
            continue
        offered = sorted({t for types in coverage.values() for t in types})
        for capacity_type in pool.capacity_types:
            by_code: dict[str, list[InstanceFacts]] = {}
            for t in offered:
                code = quota_code(families_of(t), capacity_type)
                if code and t in facts.instance_types:
                    by_code.setdefault(code, []).append(facts.instance_types[t])
            for code, types in by_code.items():
                needed.setdefault(code, {})[name] = vcpus_to_reach_limits(pool, types)
    for code, pools in sorted(needed.items()):
        total = sum(pools.values())
        found = facts.quotas.get(code)
        report.quotas[code] = {"name": QUOTAS[code], "found": found, "needed": total, "pools": dict(pools)}
        detail = ", ".join(f"{p} {v}" for p, v in sorted(pools.items()))
        if found is None:
            report.findings.append(
                Finding(
                    "warning",
                    f"quota {code}",
                    f"{QUOTAS[code]}: could not be read; the pool limits can reach {total} vCPUs ({detail})",
                )
            )
        elif found < total:
            report.findings.append(
                Finding(
                    "blocker",
                    f"quota {code}",
                    f"{QUOTAS[code]} is {found:g} vCPUs; the pool limits can reach {total} ({detail}):"
                    " request an increase in Service Quotas or lower maxGpus / maxCpu",
                )
            )
    for parameter, pools in ami_parameters(settings).items():
        image = facts.amis.get(parameter)
        report.amis[parameter] = image
        if not image:
            report.findings.append(
                Finding(
                    "blocker",
                    f"pools {', '.join(pools)}",
                    f"AMI parameter {parameter} does not exist in {facts.region}",
                )
            )
    return report
