"""`cluster` (the EKS control plane, its API endpoints and system node group) and `karpenter`."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from domain import catalog, versions
from domain.settings.base import ConfigModel, LogType, unique
from domain.settings.errors import field_error, raise_all, value_error
from domain.settings.patterns import DNS_LABEL, IAM_ROLE_ARN, SECURITY_GROUP_ID


class SystemNodeSettings(ConfigModel):
    instance_types: Annotated[tuple[str, ...], Field(alias="instanceTypes", min_length=1)] = ("m7i.large",)
    min_size: Annotated[int, Field(alias="minSize", ge=1, le=20)] = 2
    desired_size: Annotated[int, Field(alias="desiredSize", ge=1, le=20)] = 2
    max_size: Annotated[int, Field(alias="maxSize", ge=1, le=20)] = 3
    disk_gib: Annotated[int, Field(alias="diskGib", ge=20, le=1000)] = 50

    @field_validator("instance_types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        amd64 = [f for f in catalog.CPU_FAMILIES if catalog.FAMILIES[f].arch == "amd64"]
        raise_all(
            [
                value_error(
                    "instance_type",
                    "must name x86_64 CPU instance types such as m7i.large or c7i.2xlarge"
                    f" (sizes large, xlarge, Nxlarge, metal-Nxl; families {', '.join(amd64)}) (got {{got}})",
                    name,
                )
                for name in value
                if catalog.cpu_instance_vcpus(name) is None
                or catalog.FAMILIES[catalog.split_instance_type(name)[0]].arch != "amd64"
            ]
        )
        return value

    @model_validator(mode="after")
    def _sizes(self) -> SystemNodeSettings:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise field_error(
                "desiredSize",
                f"must be between minSize ({self.min_size}) and maxSize ({self.max_size}) (got {{got}})",
                self.desired_size,
            )
        return self


def _private_cidr(value: str) -> str:
    """A network that can reach the VPC's private endpoint: not the internet's address space."""
    try:
        if "/" not in value:
            raise ValueError(value)
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise value_error(
            "cidr", "must be an IPv4 network in CIDR form such as 10.60.8.0/24 (got {got})", value
        ) from None
    problems = []
    if str(net) != value:
        problems.append(value_error("cidr", f"has host bits set: the network is {net} (got {{got}})", value))
    if net.is_global:
        problems.append(
            value_error(
                "cidr",
                "must be a private range routed to the VPC (RFC 1918 or 100.64.0.0/10): the private endpoint has no"
                " public address; public clients need endpointPublicAccess with publicAccessCidrs (got {got})",
                value,
            )
        )
    raise_all(problems)
    return value


class PrivateAccessSettings(ConfigModel):
    """Who may call the API on its private endpoint: one 443 rule each on the cluster security group.

    The group admits only itself (nodes, control-plane ENIs) by default, so the
    machine that runs `pulumi up` (a self-hosted CI runner, a VPN) must be listed here.
    """

    cidrs: Annotated[tuple[Annotated[str, AfterValidator(_private_cidr)], ...], AfterValidator(unique)] = ()
    security_group_ids: Annotated[
        tuple[Annotated[str, Field(pattern=SECURITY_GROUP_ID)], ...],
        AfterValidator(unique),
        Field(alias="securityGroupIds"),
    ] = ()

    @property
    def is_empty(self) -> bool:
        return not self.cidrs and not self.security_group_ids


class ClusterSettings(ConfigModel):
    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=38)]
    version: Literal[versions.KUBERNETES_VERSIONS] = versions.DEFAULT_KUBERNETES_VERSION  # type: ignore[valid-type]
    endpoint_public_access: Annotated[bool, Field(alias="endpointPublicAccess")] = True
    public_access_cidrs: Annotated[
        Annotated[tuple[str, ...], Field(min_length=1)] | None, Field(alias="publicAccessCidrs")
    ] = None
    private_access: Annotated[PrivateAccessSettings | None, Field(alias="privateAccess")] = None
    log_types: Annotated[tuple[LogType, ...], Field(alias="logTypes")] = (
        "api",
        "audit",
        "authenticator",
        "controllerManager",
        "scheduler",
    )
    log_retention_days: Annotated[int, Field(alias="logRetentionDays", ge=1, le=3653)] = 30
    admin_role_arns: Annotated[
        tuple[Annotated[str, Field(pattern=IAM_ROLE_ARN)], ...], Field(alias="adminRoleArns")
    ] = ()
    deletion_protection: Annotated[bool, Field(alias="deletionProtection")] = False
    system_nodes: Annotated[SystemNodeSettings, Field(alias="systemNodes")] = SystemNodeSettings()

    @field_validator("public_access_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        raise_all(
            [
                value_error("cidr", "must list IPv4 CIDRs such as 203.0.113.0/24 (got {got})", cidr)
                for cidr in value or ()
                if not _is_ipv4_network(cidr)
            ]
        )
        return value

    @model_validator(mode="after")
    def _endpoint_access(self) -> ClusterSettings:
        problems: list[PydanticCustomError] = []
        if not self.endpoint_public_access and self.public_access_cidrs is not None:
            problems.append(
                field_error(
                    "publicAccessCidrs",
                    "is only allowed with endpointPublicAccess: true (got {got})",
                    list(self.public_access_cidrs),
                )
            )
        # An error, not a warning: this program applies Kubernetes objects through the
        # endpoint itself, so with no way in, `pulumi up` creates the cluster (15 minutes)
        # and then fails at its first Kubernetes resource, leaving a half-built stack.
        if not self.endpoint_public_access and (self.private_access is None or self.private_access.is_empty):
            problems.append(
                field_error(
                    "privateAccess",
                    "must list cidrs or securityGroupIds with endpointPublicAccess: false: the machine that runs"
                    " pulumi (a self-hosted runner, VPN or peered network) reaches the API only through the private"
                    " endpoint, on port 443 of the cluster security group (got {got})",
                    self.private_access.model_dump(by_alias=True) if self.private_access else None,
                )
            )
        raise_all(problems)
        return self

    @property
    def api_cidrs(self) -> tuple[str, ...]:
        if not self.endpoint_public_access:
            return ()
        return self.public_access_cidrs or ("0.0.0.0/0",)


def _is_ipv4_network(cidr: str) -> bool:
    try:
        ipaddress.IPv4Network(cidr)
    except ValueError:
        return False
    return True


class KarpenterSettings(ConfigModel):
    replicas: Annotated[int, Field(ge=1, le=5)] = 2
    log_level: Annotated[Literal["debug", "info", "error"], Field(alias="logLevel")] = "info"
