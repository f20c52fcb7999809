"""`network`: the VPC, its subnets per zone, and which zones."""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from domain.settings.base import ConfigModel
from domain.settings.errors import ConfigError, field_error, raise_all, value_error
from domain.settings.patterns import PROJECT, ZONE_ID


class NetworkSettings(ConfigModel):
    cidr: str = "10.0.0.0/16"
    az_count: Annotated[int, Field(alias="azCount", ge=2, le=6)] = 2
    availability_zones: Annotated[tuple[str, ...] | None, Field(alias="availabilityZones")] = None
    # Zones by ID (use1-az1): names are shuffled per account, IDs name the same
    # physical zone everywhere, so this is how a stack avoids a zone such as
    # use1-az3 that lacks current instance families. Resolved to names by `zones_for_ids`.
    availability_zone_ids: Annotated[
        tuple[Annotated[str, Field(pattern=ZONE_ID)], ...] | None, Field(alias="availabilityZoneIds")
    ] = None
    nat_gateways: Annotated[Literal["single", "perAz"], Field(alias="natGateways")] = "single"

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            net = ipaddress.IPv4Network(value)
        except ValueError:
            raise value_error(
                "cidr", "must be an IPv4 network in CIDR form such as 10.0.0.0/16 (got {got})", value
            ) from None
        problems = []
        if not 16 <= net.prefixlen <= 20:
            problems.append(value_error("cidr", "must have a prefix length between /16 and /20 (got {got})", value))
        if not net.is_private:
            problems.append(value_error("cidr", "must be a private (RFC 1918) range (got {got})", value))
        raise_all(problems)
        return value

    @model_validator(mode="after")
    def _zones(self) -> NetworkSettings:
        # Zones pinned both ways are the first problem; the IDs' own counts are then not checked.
        names, ids = self.availability_zones, self.availability_zone_ids
        problems: list[PydanticCustomError] = []
        if names is not None and ids is not None:
            problems.append(
                field_error(
                    "availabilityZoneIds",
                    "cannot be combined with availabilityZones: pin the zones by ID or by name, not both (got {got})",
                    list(ids),
                )
            )
        problems += self._zone_list_problems("availabilityZones", "zone", names)
        if names is None:
            problems += self._zone_list_problems("availabilityZoneIds", "zone ID", ids)
        raise_all(problems)
        return self

    def _zone_list_problems(self, key: str, noun: str, zones: tuple[str, ...] | None) -> list[PydanticCustomError]:
        if zones is None:
            return []
        problems = []
        if len(zones) != self.az_count:
            problems.append(
                field_error(key, f"must list exactly azCount ({self.az_count}) {noun}s (got {{got}})", list(zones))
            )
        if len(set(zones)) != len(zones):
            problems.append(field_error(key, f"must not repeat a {noun} (got {{got}})", list(zones)))
        return problems

    def zones_for_ids(self, offered_ids: Sequence[str], offered_names: Sequence[str], region: str) -> list[str]:
        """The zone names of `availabilityZoneIds`, in their order, from the region's
        (parallel) lists of zone IDs and names; a `ConfigError` names each ID it lacks."""
        by_id = dict(zip(offered_ids, offered_names, strict=True))
        ids = self.availability_zone_ids or ()
        missing = [(i, z) for i, z in enumerate(ids) if z not in by_id]
        if missing:
            offered = ", ".join(sorted(by_id)) or "none"
            raise ConfigError(
                [
                    f"{PROJECT}:network.availabilityZoneIds[{i}] is not a zone ID {region} offers to this account"
                    f" (offered: {offered}) (got {json.dumps(z)})"
                    for i, z in missing
                ]
            )
        return [by_id[z] for z in ids]

    def subnet_cidrs(self) -> tuple[list[str], list[str]]:
        """(private, public) CIDRs, one each per AZ.

        Private subnets get the large blocks (pods take VPC IPs with the VPC CNI);
        public subnets only hold NAT gateways and load balancers, so they share
        the last block.
        """
        net = ipaddress.IPv4Network(self.cidr)
        private_bits = math.ceil(math.log2(self.az_count + 1))
        blocks = list(net.subnets(prefixlen_diff=private_bits))
        public_bits = math.ceil(math.log2(self.az_count))
        public = list(blocks[-1].subnets(prefixlen_diff=public_bits))[: self.az_count]
        return [str(b) for b in blocks[: self.az_count]], [str(b) for b in public]
