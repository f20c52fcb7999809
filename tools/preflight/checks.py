"""Preflight findings from facts about an account: pure functions, no AWS calls.

`aws.gather()` fetches `Facts`; `evaluate(settings, facts)` turns them into a
`Report` of blockers (exit 1) and warnings. Kept apart from the AWS calls so
every rule can be tested with plain data.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from domain import amis
from domain.settings import PoolSettings, Settings

# --- vCPU quotas --------------------------------------------------------------
#
# EC2 counts running GPU instances against vCPU quotas (Service Quotas, service
# code `ec2`), one per instance class and purchase option:
#   On-Demand: "Running On-Demand G and VT instances" (L-DB2E81BA) and
#     "Running On-Demand P instances" (L-417A185B, every P generation, P5 included).
#   Spot: "All G and VT Spot Instance Requests" (L-3819A6DF), and for P:
#     L-7212CCBC, listed as "All P4, P3 and P2 Spot Instance Requests" next to a
#     separate "All P5 Spot Instance Requests" (L-C4BD4855) in the older EC2 user
#     guide's Spot quota table (docs.aws.amazon.com/AWSEC2/latest/WindowsGuide/
#     using-spot-limits.html); the current user guide (.../UserGuide/
#     using-spot-limits.html) lists a single "All P Spot Instance Requests", and a
#     public 2026 quota-increase write-up shows L-7212CCBC under that name
#     covering p5.48xlarge Spot.
# So P5-family Spot capacity counts against L-C4BD4855 where the account still
# has that quota, and against L-7212CCBC where it does not: `quota_candidates`
# lists both, in that order, and `quota_code` takes the first the account has.
# Names are read from the API at run time; the table below is the fallback.
OD_G, OD_P, SPOT_G, SPOT_P, SPOT_P5 = "L-DB2E81BA", "L-417A185B", "L-3819A6DF", "L-7212CCBC", "L-C4BD4855"
QUOTAS: dict[str, str] = {  # names shown when the API does not send one
    OD_G: "Running On-Demand G and VT instances",
    OD_P: "Running On-Demand P instances",
    SPOT_G: "All G and VT Spot Instance Requests",
    SPOT_P: "All P Spot Instance Requests",
    SPOT_P5: "All P5 Spot Instance Requests",
}
P5_FAMILIES = ("p5", "p5e", "p5en")

Severity = Literal["blocker", "warning"]


def quota_candidates(family: str, capacity_type: str) -> tuple[str, ...]:
    """Quota codes a family's capacity may count against, the most specific first (empty: not checked)."""
    spot = capacity_type == "spot"
    if family.startswith(("g", "vt")):
        return (SPOT_G,) if spot else (OD_G,)
    if family.startswith("p"):
        if not spot:
            return (OD_P,)
        return (SPOT_P5, SPOT_P) if family in P5_FAMILIES else (SPOT_P,)
    return ()


def quota_code(family: str, capacity_type: str, quotas: Mapping[str, Quota]) -> str | None:
    """The quota that governs a family's capacity: the first candidate the account has, else the last."""
    candidates = quota_candidates(family, capacity_type)
    for code in candidates:
        if code in quotas and quotas[code].value is not None:
            return code
    return candidates[-1] if candidates else None


# --- facts ----------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceFacts:
    name: str
    vcpus: int
    gpus: int = 0
    gpu_manufacturer: str = ""
    gpu_name: str = ""
    gpu_memory_mib: int = 0  # per GPU

    @property
    def family(self) -> str:
        return family_of(self.name)

    @property
    def gpu_model(self) -> str:
        return " ".join(filter(None, [self.gpu_manufacturer, self.gpu_name]))


@dataclass(frozen=True)
class Quota:
    code: str
    name: str
    value: float | None  # vCPUs; None: the account has neither an applied value nor an AWS default
    source: Literal["applied", "default", "missing"] = "applied"


@dataclass(frozen=True)
class Facts:
    region: str
    zones: tuple[str, ...]  # the zones the stack uses
    region_zones: tuple[str, ...]  # every available zone of the region
    instance_types: Mapping[str, InstanceFacts]  # the pools' families, as the region describes them
    offerings: Mapping[str, frozenset[str]]  # zone -> instance types offered there
    quotas: Mapping[str, Quota]
    amis: Mapping[str, str | None]  # SSM parameter -> image id (None: no such parameter)
    zone_ids: Mapping[str, str] = field(default_factory=dict)  # zone name -> zone ID (use1-az3), where known
    # pool -> capacityReservations term -> what it selects (tools/preflight/reservations.py)
    reservations: Mapping[str, Mapping[str, tuple[Any, ...]]] = field(default_factory=dict)
    now: datetime.datetime | None = None  # when the facts were gathered (reservation end dates)


# --- report -------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    severity: Severity
    subject: str  # "pool gpu", "zone us-west-2z", "quota L-DB2E81BA", "AMI <parameter>"
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)  # found / needed and the like, for --json

    def line(self) -> str:
        return f"{self.severity}: {self.subject}: {self.message}"


@dataclass(frozen=True)
class Need:
    """The vCPUs one pool can hold against one quota at its limits, and why."""

    vcpus: int
    instance_type: str  # the type that needs the most
    instances: int  # of it, to reach maxGpus
    uncapped: int  # instances x its vCPUs, before the pool's cpu limit
    max_cpu: int

    def explain(self) -> str:
        text = f"{self.instances} x {self.instance_type} = {self.uncapped}"
        return text + (f", capped at maxCpu {self.max_cpu}" if self.uncapped > self.max_cpu else "")


@dataclass
class QuotaCheck:
    quota: Quota
    capacity_type: str
    needs: dict[str, Need] = field(default_factory=dict)  # pool -> need

    @property
    def needed(self) -> int:
        return sum(n.vcpus for n in self.needs.values())

    @property
    def ok(self) -> bool | None:
        return None if self.quota.value is None else self.quota.value >= self.needed


@dataclass
class Report:
    region: str
    zones: tuple[str, ...]
    pools: dict[str, PoolSettings] = field(default_factory=dict)
    coverage: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # pool -> zone -> types
    instance_types: dict[str, InstanceFacts] = field(default_factory=dict)  # offered types of the pools
    quotas: dict[str, QuotaCheck] = field(default_factory=dict)
    amis: dict[str, tuple[str | None, tuple[str, ...]]] = field(default_factory=dict)  # param -> image, pools
    findings: list[Finding] = field(default_factory=list)

    @property
    def blockers(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "blocker"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]


# --- rules ------------------------------------------------------------------------------


def vcpus_text(value: float | None) -> str:
    """A quota value as people write it: 144, not 144.0 or 1.44e+02."""
    if value is None:
        return "?"
    return f"{value:.0f}" if value == int(value) else f"{value}"


def family_of(instance_type: str) -> str:
    return instance_type.split(".", 1)[0]


def vcpus_to_reach_limits(pool: PoolSettings, types: Iterable[InstanceFacts]) -> Need | None:
    """The most vCPUs the pool's nodes of `types` can add up to before its limits stop Karpenter.

    Karpenter launches a node only while the pool stays within its limits: it
    drops every instance type whose capacity exceeds what is left of a limit
    (`filterByRemainingResources` in karpenter's scheduler). Two limits bound
    the vCPUs of a GPU pool:
    - `nvidia.com/gpu` (maxGpus physical GPUs): a type with g GPUs and v vCPUs
      reaches it with ceil(maxGpus / g) nodes, ceil(maxGpus / g) * v vCPUs. The
      largest of these over the types bounds any mix too: a mix's vCPUs are
      sum(v_i/g_i * g_i) <= max(v/g) * maxGpus <= ceil(maxGpus / g) * v for the
      type with the most vCPUs per GPU. (ceil, not floor: one node over the GPU
      limit is allowed for, which keeps the figure safe if a launch races.)
    - `cpu` (maxCpu): the vCPUs of the pool's nodes never exceed it.
    So the quota must cover min(that largest figure, maxCpu).
    """
    best: Need | None = None
    for t in types:
        if not t.gpus or not pool.max_gpus:
            continue
        instances = math.ceil(pool.max_gpus / t.gpus)
        uncapped = instances * t.vcpus
        need = Need(min(uncapped, pool.max_cpu), t.name, instances, uncapped, pool.max_cpu)
        if best is None or (need.vcpus, need.uncapped, t.name) > (best.vcpus, best.uncapped, best.instance_type):
            best = need
    return best


def ami_parameters(settings: Settings) -> dict[str, tuple[str, ...]]:
    """SSM parameter -> pools whose nodes boot from it (what Karpenter resolves the pool's amiAlias with)."""
    found: dict[str, list[str]] = {}
    for name, pool in sorted(settings.node_pools.items()):
        for arch in pool.architectures:
            key = amis.ssm_parameter(pool.ami_alias, settings.cluster.version, arch, gpu=pool.is_gpu)
            found.setdefault(key, []).append(name)
    return {k: tuple(v) for k, v in sorted(found.items())}


def needed_quota_codes(settings: Settings) -> list[str]:
    """Every quota the GPU pools' families and capacity types may count against (what to fetch)."""
    return sorted(
        {
            code
            for pool in settings.node_pools.values()
            if pool.is_gpu
            for family in pool.instance_families
            for capacity_type in pool.capacity_types
            for code in quota_candidates(family, capacity_type)
        }
    )


def evaluate(settings: Settings, facts: Facts) -> Report:
    report = Report(region=facts.region, zones=facts.zones, pools=dict(sorted(settings.node_pools.items())))
    unknown_zones = [z for z in facts.zones if z not in facts.region_zones]
    for zone in unknown_zones:
        report.findings.append(
            Finding(
                "blocker",
                f"zone {zone}",
                f"is not an available zone of {facts.region} (available: {', '.join(facts.region_zones) or 'none'})",
                {"zone": zone, "available": list(facts.region_zones)},
            )
        )
    zones = [z for z in facts.zones if z not in unknown_zones]
    for name, pool in report.pools.items():
        coverage = _coverage(report, name, pool, zones, facts)
        if pool.is_gpu and any(coverage.values()):
            _quota_needs(report, name, pool, coverage, facts)
    for check in report.quotas.values():
        _judge_quota(report, check)
    for parameter, pools in ami_parameters(settings).items():
        image = facts.amis.get(parameter)
        report.amis[parameter] = (image, pools)
        if not image:
            report.findings.append(
                Finding(
                    "blocker",
                    f"AMI of pools {', '.join(pools)}",
                    f"SSM parameter {parameter} does not exist in {facts.region}"
                    f" (Kubernetes {settings.cluster.version}; check cluster.version and the pools' amiAlias)",
                    {"parameter": parameter, "pools": list(pools)},
                )
            )
    from tools.preflight import reservations  # it builds on this module's Finding

    now = facts.now or datetime.datetime.now(datetime.UTC)
    report.findings.extend(reservations.findings(settings, tuple(zones), facts.reservations, now))
    return report


def _coverage(report: Report, name: str, pool: PoolSettings, zones: list[str], facts: Facts) -> dict[str, list[str]]:
    """Record which of the pool's instance types each zone offers, with the findings about gaps."""
    families = set(pool.instance_families)
    coverage = {
        zone: sorted(t for t in facts.offerings.get(zone, frozenset()) if family_of(t) in families) for zone in zones
    }
    report.coverage[name] = coverage
    for types in coverage.values():
        report.instance_types.update({t: facts.instance_types[t] for t in types if t in facts.instance_types})
    listed = ", ".join(pool.instance_families)
    covered = [z for z, types in coverage.items() if types]
    empty = [z for z, types in coverage.items() if not types]
    if zones and not covered:
        report.findings.append(
            Finding(
                "blocker",
                f"pool {name}",
                f"no instance type of {listed} is offered in {', '.join(zones)}"
                " (found 0 zones, needed at least 1): choose other families or zones",
                {"pool": name, "families": list(pool.instance_families), "zones": zones, "found": 0, "needed": 1},
            )
        )
        return coverage
    for zone in empty:
        # Names are shuffled per account; the ID is what network.availabilityZoneIds pins
        # (us-east-1's use1-az3, for one, has none of the current GPU families).
        zone_id = facts.zone_ids.get(zone)
        where = f"{zone} ({zone_id})" if zone_id else zone
        hint = "; to use another zone, pin network.availabilityZoneIds without it" if zone_id else ""
        report.findings.append(
            Finding(
                "warning",
                f"pool {name}",
                f"{where} offers none of {listed}: its nodes can only launch in {', '.join(covered)}{hint}",
                {"pool": name, "zone": zone, "zoneId": zone_id, "coveredZones": covered},
            )
        )
    offered = {family_of(t) for types in coverage.values() for t in types}
    for family in pool.instance_families:
        if family not in offered:
            report.findings.append(
                Finding(
                    "warning",
                    f"pool {name}",
                    f"family {family} is offered in none of {', '.join(zones)}; only {', '.join(sorted(offered))} can launch",
                    {"pool": name, "family": family},
                )
            )
    return coverage


def _quota_needs(
    report: Report, name: str, pool: PoolSettings, coverage: Mapping[str, list[str]], facts: Facts
) -> None:
    offered = [facts.instance_types[t] for t in sorted({t for ts in coverage.values() for t in ts})]
    for capacity_type in pool.capacity_types:
        by_code: dict[str, list[InstanceFacts]] = {}
        for t in offered:
            code = quota_code(t.family, capacity_type, facts.quotas)
            if code:
                by_code.setdefault(code, []).append(t)
        for code, types in sorted(by_code.items()):
            need = vcpus_to_reach_limits(pool, types)
            if need is None:
                continue
            quota = facts.quotas.get(code) or Quota(code, QUOTAS[code], None, "missing")
            check = report.quotas.setdefault(code, QuotaCheck(quota, capacity_type))
            check.needs[name] = need


def _judge_quota(report: Report, check: QuotaCheck) -> None:
    q = check.quota
    detail = "; ".join(f"{pool} {n.vcpus}: {n.explain()}" for pool, n in sorted(check.needs.items()))
    data = {
        "quota": q.code,
        "name": q.name,
        "found": q.value,
        "needed": check.needed,
        "pools": {p: n.vcpus for p, n in sorted(check.needs.items())},
    }
    if q.value is None:
        report.findings.append(
            Finding(
                "warning",
                f"quota {q.code}",
                f"{q.name}: the account has no value for it (neither applied nor default), needed {check.needed}"
                f" vCPUs ({detail})",
                data,
            )
        )
    elif q.value < check.needed:
        source = "" if q.source == "applied" else " (the AWS default)"
        report.findings.append(
            Finding(
                "blocker",
                f"quota {q.code}",
                f"{q.name}: found {vcpus_text(q.value)} vCPUs{source}, needed {check.needed} ({detail});"
                " request an increase in Service Quotas or lower the pools' maxGpus / maxCpu",
                data,
            )
        )
