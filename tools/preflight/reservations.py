"""Preflight of reserved capacity: every `capacityReservations` term of a pool, against the account.

A pool with capacity type `reserved` launches only into the reservations its
EC2NodeClass selects (Karpenter v1.14.1 has no open matching:
website/content/en/docs/tasks/odcrs.md). A reservation is usable by a pool when
it is `active`, of an instance type of the pool's families, in one of the
stack's zones, and not about to end. What EC2 reports (DescribeCapacityReservations):
`State` (active, expired, cancelled, pending, failed, scheduled,
payment-pending, payment-failed, ...), `ReservationType` (`default` for an ODCR,
`capacity-block` for a Capacity Block), `EndDate` (none for an open-ended ODCR;
a Capacity Block always has one and EC2 terminates its instances 30 minutes
before it), and `TotalInstanceCount` / `AvailableInstanceCount`: an active
reservation with every instance available is idle, paid for at the On-Demand
rate whether anything runs in it or not.

Pure functions here (facts -> findings); `aws.capacity_reservations()` fetches them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.settings import PoolSettings, Settings
from domain.settings.pools import CapacityReservationTerm
from tools.preflight.checks import Finding, family_of

ENDS_SOON = dt.timedelta(days=7)  # warn when a reservation ends within this
NOT_YET = {"pending", "scheduled", "payment-pending", "assessing", "delayed"}  # may still become active


@dataclass(frozen=True)
class Reservation:
    id: str
    instance_type: str
    zone: str
    state: str
    total: int
    available: int
    end: dt.datetime | None  # None: open-ended
    kind: str = "default"  # or capacity-block


def term_text(term: CapacityReservationTerm) -> str:
    return term.id if term.id else "tags " + ", ".join(f"{k}={v}" for k, v in sorted((term.tags or {}).items()))


def reserved_pools(settings: Settings) -> dict[str, PoolSettings]:
    return {n: p for n, p in sorted(settings.node_pools.items()) if "reserved" in p.capacity_types}


def parse(row: Mapping[str, Any]) -> Reservation:
    return Reservation(
        id=row["CapacityReservationId"],
        instance_type=row["InstanceType"],
        zone=row["AvailabilityZone"],
        state=row["State"],
        total=int(row.get("TotalInstanceCount", 0)),
        available=int(row.get("AvailableInstanceCount", 0)),
        end=row.get("EndDate"),
        kind=row.get("ReservationType", "default"),
    )


def findings(
    settings: Settings,
    zones: tuple[str, ...],
    selected: Mapping[str, Mapping[str, tuple[Reservation, ...]]],
    now: dt.datetime,
) -> list[Finding]:
    """Blockers for terms that select nothing usable; warnings for idle, ending and not-yet-active reservations."""
    out: list[Finding] = []
    for name, pool in reserved_pools(settings).items():
        usable = 0
        for term, reservations in (selected.get(name) or {}).items():
            if not reservations:
                out.append(
                    Finding(
                        "blocker",
                        f"pool {name}",
                        f"capacityReservations {term} selects no capacity reservation in {settings.region}"
                        " (found 0, needed at least 1): check the ID or tags, and the region",
                        {"pool": name, "term": term, "found": 0},
                    )
                )
            for r in reservations:
                problem = _unusable(r, pool, zones, now)
                subject = f"pool {name}"
                data = {"pool": name, "reservation": r.id, "instanceType": r.instance_type, "zone": r.zone}
                if problem is not None:
                    severity, text = problem
                    out.append(Finding(severity, subject, f"capacity reservation {r.id} {text}", data))
                    continue
                usable += 1
                if r.end is not None and r.end - now <= ENDS_SOON:
                    out.append(
                        Finding(
                            "warning",
                            subject,
                            f"capacity reservation {r.id} ({r.kind}) ends {r.end.isoformat()}: after that the pool"
                            f" falls back to its other capacity types ({_fallback(pool)})",
                            {**data, "end": r.end.isoformat()},
                        )
                    )
                if r.state == "active" and r.total and r.available == r.total:
                    out.append(
                        Finding(
                            "warning",
                            subject,
                            f"capacity reservation {r.id} is idle: {r.available} of {r.total} {r.instance_type}"
                            f" unused in {r.zone}, paid for whether used or not",
                            {**data, "total": r.total, "available": r.available},
                        )
                    )
        if not usable and any(selected.get(name, {}).values()):
            out.append(
                Finding(
                    "warning",
                    f"pool {name}",
                    f"none of its capacity reservations is usable now: it launches {_fallback(pool)} only",
                    {"pool": name},
                )
            )
    return out


def _fallback(pool: PoolSettings) -> str:
    rest = [c for c in pool.capacity_types if c != "reserved"]
    return ", ".join(rest) if rest else "nothing (reserved is its only capacity type)"


def _unusable(r: Reservation, pool: PoolSettings, zones: tuple[str, ...], now: dt.datetime) -> tuple[str, str] | None:
    """(severity, why) when the pool can never launch into `r`, or not yet; None when it can."""
    if family_of(r.instance_type) not in pool.instance_families:
        return (
            "blocker",
            f"is for {r.instance_type}, not a type of the pool's families {', '.join(pool.instance_families)}:"
            " Karpenter would never launch into it",
        )
    if r.zone not in zones:
        return ("blocker", f"is in {r.zone}, not one of the stack's zones {', '.join(zones)}")
    if r.end is not None and r.end <= now:
        return ("blocker", f"ended {r.end.isoformat()} (state {r.state})")
    if r.state in NOT_YET:
        return ("warning", f"is {r.state}, not active yet: nothing launches into it until it is")
    if r.state != "active":
        return ("blocker", f"is {r.state}, not active: nothing can launch into it")
    return None
