"""Typed stack settings: the only reader of `pulumi.Config`.

`Settings.from_raw(raw)` is pure: it takes the stack's config as a dict (keys
without the `gpu-inference:` prefix, plus `aws:region`) and returns frozen
models or raises `ConfigError` whose lines each name the full key path, the bad
value and what is allowed. `load()` wraps `pulumi.Config` and is called once,
before any resource is registered.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pulumi.errors import RunError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from domain import catalog, images, versions
from domain.images import ImageRef

PROJECT = "gpu-inference"

# Karpenter's own patterns (NodePool CRD v1), so a bad value fails here, not at `up`.
DURATION_OR_NEVER = r"^(([0-9]+(s|m|h))+|Never)$"
BUDGET_NODES = r"^((100|[0-9]{1,2})%|[0-9]+)$"
BUDGET_DURATION = r"^((([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?)$"
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
AMI_ALIAS = r"^(al2023|bottlerocket)@(v[0-9]{8}|[0-9]+\.[0-9]+\.[0-9]+)$"
IAM_ROLE_ARN = r"^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[\w+=,.@/-]+$"
REGION = r"^[a-z]{2}-[a-z]+-[0-9]$"
SNAPSHOT_ID = r"^snap-[0-9a-f]{8,17}$"
SECURITY_GROUP_ID = r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$"
ZONE_ID = r"^[a-z]{2,4}[0-9]-az[0-9]+$"  # use1-az1: the same physical zone in every account

# Tags AWS owns, or that Karpenter sets itself and its EC2NodeClass CRD rejects.
RESERVED_TAG_PREFIXES = (
    "aws:",
    "eks:eks-cluster-name",
    "kubernetes.io/cluster",
    "karpenter.sh/nodepool",
    "karpenter.sh/nodeclaim",
    "karpenter.k8s.aws/ec2nodeclass",
)

ConsolidationPolicy = Literal["WhenEmpty", "WhenEmptyOrUnderutilized"]
CapacityType = Literal["spot", "on-demand"]
LogType = Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]


class ConfigError(RunError, ValueError):
    """Invalid stack config; `lines` holds one readable message per problem.

    A `pulumi.RunError`: under `pulumi up` / `preview` the CLI prints the message
    and exits, with no Python traceback in the way of the key paths.
    """

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("invalid stack config:\n  " + "\n  ".join(lines))


def _field_error(key: str, message: str, value: Any) -> PydanticCustomError:
    """An error about `key` inside the model being validated (cross-field rules).

    `{got}` in `message` becomes the JSON form of `value`.
    """
    return PydanticCustomError("field", message, {"field": key, "got": json.dumps(value)})


def _value_error(kind: str, message: str, value: Any) -> PydanticCustomError:
    """An error about the field being validated; `{got}` becomes the JSON form of `value`."""
    return PydanticCustomError(kind, message, {"got": json.dumps(value)})


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=False)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]):
        """Validate config-shaped data (JSON types: lists, not tuples) as strictly as a stack file."""
        return cls.model_validate_json(json.dumps(dict(raw)))


def _image_ref(value: str) -> str:
    """A container image pinned by tag (not `latest`) or digest."""
    if not (ImageRef.is_valid(value) and ImageRef.parse(value).pinned):
        raise _value_error(
            "image",
            f"must be an image pinned by a tag other than latest or by digest, such as {images.EXAMPLE} (got {{got}})",
            value,
        )
    return value


PinnedImage = Annotated[str, AfterValidator(_image_ref)]


def _unique(value: tuple[str, ...]) -> tuple[str, ...]:
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        raise _value_error("duplicates", "must not repeat {got}", dupes)
    return value


class ImageCacheSettings(_Model):
    """Ways to have a GPU node's inference images on disk before pods need them."""

    # EBS snapshot whose volume already holds the images (see docs/image-snapshot.md).
    snapshot_id: Annotated[str | None, Field(alias="snapshotId", pattern=SNAPSHOT_ID)] = None
    volume_gib: Annotated[int, Field(alias="volumeGib", ge=20, le=16_384)] = 200
    # Fallback without a snapshot: a DaemonSet pulls `images` (and the pool's
    # inference images) as soon as a node joins.
    pre_pull: Annotated[bool, Field(alias="prePull")] = True
    images: tuple[PinnedImage, ...] = ()


class DisruptionBudget(_Model):
    nodes: Annotated[str, Field(pattern=BUDGET_NODES)] = "10%"
    schedule: str | None = None
    duration: Annotated[str, Field(pattern=BUDGET_DURATION)] | None = None
    reasons: tuple[Literal["Underutilized", "Empty", "Drifted"], ...] | None = None

    @model_validator(mode="after")
    def _schedule_with_duration(self) -> DisruptionBudget:
        if (self.schedule is None) != (self.duration is None):
            missing, present = ("duration", "schedule") if self.duration is None else ("schedule", "duration")
            raise _field_error(missing, f"is required when {present} is set (Karpenter needs both or neither)", None)
        return self


class PoolSettings(_Model):
    """One Karpenter NodePool. Key names are fixed: other tools edit them."""

    gpu: Literal["none", "dedicated", "shared"]
    instance_families: Annotated[tuple[str, ...], Field(alias="instanceFamilies", min_length=1)]
    capacity_types: Annotated[tuple[CapacityType, ...], Field(alias="capacityTypes", min_length=1)]
    # Required on CPU pools; a GPU pool defaults to what maxGpus can bring along
    # (see `max_cpu`), so its GPU limit is the one that binds.
    max_cpu_setting: Annotated[Annotated[int, Field(ge=1, le=100_000)] | None, Field(alias="maxCpu")] = None
    max_memory_gib: Annotated[Annotated[int, Field(ge=1)] | None, Field(alias="maxMemoryGib")] = None
    max_gpus: Annotated[Annotated[int, Field(ge=1, le=10_000)] | None, Field(alias="maxGpus")] = None
    time_slicing_replicas: Annotated[Annotated[int, Field(ge=2, le=48)] | None, Field(alias="timeSlicingReplicas")] = (
        None
    )
    consolidation: ConsolidationPolicy = "WhenEmptyOrUnderutilized"
    consolidate_after: Annotated[str, Field(alias="consolidateAfter", pattern=DURATION_OR_NEVER)] = "1m"
    expire_after: Annotated[str, Field(alias="expireAfter", pattern=DURATION_OR_NEVER)] = "720h"
    disruption_budgets: Annotated[tuple[DisruptionBudget, ...], Field(alias="disruptionBudgets", min_length=1)] = (
        DisruptionBudget(),
    )
    root_volume_gib: Annotated[Annotated[int, Field(ge=20, le=16_384)] | None, Field(alias="rootVolumeGib")] = None
    ami_alias: Annotated[str, Field(alias="amiAlias", pattern=AMI_ALIAS)] = f"al2023@{versions.EKS_AMI_RELEASE}"
    weight: Annotated[int, Field(ge=1, le=100)] | None = None
    # GPUs kept running ahead of demand by low-priority placeholder pods, in the
    # unit the pool's pods request: physical GPUs on a dedicated pool, slices on
    # a shared one (so `warmGpus: 4` with 4 replicas keeps one physical GPU up).
    warm_gpus: Annotated[int, Field(alias="warmGpus", ge=0, le=10_000)] = 0
    image_cache: Annotated[ImageCacheSettings | None, Field(alias="imageCache")] = None

    @field_validator("instance_families", "capacity_types")
    @classmethod
    def _no_duplicates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _unique(value)

    @model_validator(mode="after")
    def _gpu_pools_boot_al2023(self) -> PoolSettings:
        # Bottlerocket's NVIDIA variants start their own device plugin as a host
        # service, configured from Bottlerocket settings
        # (settings.kubelet-device-plugins.nvidia.*, bottlerocket.dev/en/os/1.54.x/api/settings/kubelet-device-plugins;
        # bottlerocket-os/bottlerocket-core-kit packages/nvidia-k8s-device-plugin/nvidia-k8s-device-plugin.service
        # and nvidia-k8s-device-plugin-conf). Our device plugin and its per-pool ConfigMap would not be
        # what advertises nvidia.com/gpu there, so a shared pool's time slicing would not apply and its
        # NodeOverlay would promise capacity the node never reports.
        if self.gpu != "none" and self.ami_alias.startswith("bottlerocket@"):
            raise _field_error(
                "amiAlias",
                f"must be an al2023@ alias on GPU pools (gpu: {self.gpu}), such as al2023@{versions.EKS_AMI_RELEASE}:"
                " Bottlerocket's NVIDIA variants run their own device plugin, configured through Bottlerocket"
                " settings instead of this program's device-plugin ConfigMap; bottlerocket@ is allowed on CPU pools"
                " (gpu: none) (got {got})",
                self.ami_alias,
            )
        return self

    @model_validator(mode="after")
    def _gpu_rules(self) -> PoolSettings:
        is_gpu = self.gpu != "none"
        unknown = [f for f in self.instance_families if f not in catalog.FAMILIES]
        if unknown:
            raise _field_error(
                "instanceFamilies",
                f"names unknown instance families {{got}}; known GPU families: {', '.join(catalog.GPU_FAMILIES)};"
                f" known CPU families: {', '.join(catalog.CPU_FAMILIES)}",
                unknown,
            )
        wrong = [f for f in self.instance_families if catalog.FAMILIES[f].is_gpu != is_gpu]
        if wrong:
            allowed = catalog.GPU_FAMILIES if is_gpu else catalog.CPU_FAMILIES
            kind = "GPU" if is_gpu else "CPU"
            raise _field_error(
                "instanceFamilies",
                f"must name only {kind} families since gpu is {self.gpu} (got {{got}}); allowed: {', '.join(allowed)}",
                wrong,
            )
        if is_gpu and self.max_gpus is None:
            raise _field_error("maxGpus", "is required for GPU pools (an integer >= 1)", None)
        if not is_gpu and self.max_cpu_setting is None:
            raise _field_error("maxCpu", "is required for CPU pools (gpu: none): the pool's vCPU limit, >= 1", None)
        if is_gpu and self.max_gpus is not None and self.max_gpus < min(self.gpu_counts):
            raise _field_error(
                "maxGpus",
                f"must be at least {min(self.gpu_counts)}, the fewest GPUs one instance of"
                f" {', '.join(self.instance_families)} carries: Karpenter never launches a node that would pass the"
                " pool's limit (got {got})",
                self.max_gpus,
            )
        if not is_gpu and self.max_gpus is not None:
            raise _field_error("maxGpus", "is only allowed on GPU pools (gpu: dedicated or shared)", self.max_gpus)
        if self.warm_gpus and not is_gpu:
            raise _field_error("warmGpus", "is only allowed on GPU pools (gpu: dedicated or shared)", self.warm_gpus)
        if self.image_cache is not None and not is_gpu:
            raise _field_error(
                "imageCache",
                "is only allowed on GPU pools (gpu: dedicated or shared) (got {got})",
                self.image_cache.model_dump(by_alias=True, exclude_defaults=True),
            )
        if self.warm_gpus and self.max_gpus is not None and self.warm_gpus > self.gpu_limit:
            limit = f"maxGpus ({self.max_gpus})"
            if self.time_slicing_replicas:
                limit += f" x timeSlicingReplicas ({self.time_slicing_replicas}) = {self.gpu_limit} slices"
            raise _field_error(
                "warmGpus",
                f"must be at most the pool's GPU limit, {limit}: headroom counts against it (got {{got}})",
                self.warm_gpus,
            )
        if self.gpu == "shared" and self.time_slicing_replicas is None:
            raise _field_error("timeSlicingReplicas", "is required for shared GPU pools (an integer 2..48)", None)
        if self.gpu != "shared" and self.time_slicing_replicas is not None:
            raise _field_error(
                "timeSlicingReplicas", "is only allowed on shared GPU pools (gpu: shared)", self.time_slicing_replicas
            )
        if self.consolidation == "WhenEmptyOrUnderutilized" and self.consolidate_after == "Never":
            raise _field_error(
                "consolidateAfter", "cannot be Never with consolidation WhenEmptyOrUnderutilized", "Never"
            )
        return self

    @property
    def is_gpu(self) -> bool:
        return self.gpu != "none"

    @property
    def max_cpu(self) -> int:
        """The pool's vCPU limit: `maxCpu`, or on a GPU pool without it the most
        vCPUs its `maxGpus` GPUs come with on any allowed instance type."""
        if self.max_cpu_setting is not None:
            return self.max_cpu_setting
        return catalog.max_vcpus_for_gpus(self.instance_families, self.max_gpus or 0)

    @property
    def gpu_limit(self) -> int:
        """The pool's `nvidia.com/gpu` limit in what its nodes advertise: slices on a shared pool.

        Karpenter counts a node's advertised capacity against limits; a shared
        node advertises replicas x physical GPUs.
        """
        return (self.max_gpus or 0) * (self.time_slicing_replicas or 1)

    @property
    def warm_physical_gpus(self) -> int:
        """Physical GPUs the headroom keeps up (slices round up to whole GPUs)."""
        return math.ceil(self.warm_gpus / (self.time_slicing_replicas or 1))

    @property
    def root_volume(self) -> int:
        """GPU images are 10-20 GB and pulled unpacked: GPU pools default larger."""
        if self.root_volume_gib is not None:
            return self.root_volume_gib
        return 200 if self.is_gpu else 50

    @property
    def gpu_counts(self) -> tuple[int, ...]:
        return catalog.gpu_counts(self.instance_families)

    @property
    def architectures(self) -> tuple[str, ...]:
        return catalog.architectures(self.instance_families)


class NetworkSettings(_Model):
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
            raise _value_error(
                "cidr", "must be an IPv4 network in CIDR form such as 10.0.0.0/16 (got {got})", value
            ) from None
        if not 16 <= net.prefixlen <= 20:
            raise _value_error("cidr", "must have a prefix length between /16 and /20 (got {got})", value)
        if not net.is_private:
            raise _value_error("cidr", "must be a private (RFC 1918) range (got {got})", value)
        return value

    @model_validator(mode="after")
    def _zones_match(self) -> NetworkSettings:
        zones = self.availability_zones
        if zones is not None:
            if len(zones) != self.az_count:
                raise _field_error(
                    "availabilityZones", f"must list exactly azCount ({self.az_count}) zones (got {{got}})", list(zones)
                )
            if len(set(zones)) != len(zones):
                raise _field_error("availabilityZones", "must not repeat a zone (got {got})", list(zones))
        return self

    @model_validator(mode="after")
    def _zone_ids_match(self) -> NetworkSettings:
        ids = self.availability_zone_ids
        if ids is None:
            return self
        if self.availability_zones is not None:
            raise _field_error(
                "availabilityZoneIds",
                "cannot be combined with availabilityZones: pin the zones by ID or by name, not both (got {got})",
                list(ids),
            )
        if len(ids) != self.az_count:
            raise _field_error(
                "availabilityZoneIds", f"must list exactly azCount ({self.az_count}) zone IDs (got {{got}})", list(ids)
            )
        if len(set(ids)) != len(ids):
            raise _field_error("availabilityZoneIds", "must not repeat a zone ID (got {got})", list(ids))
        return self

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


class SystemNodeSettings(_Model):
    instance_types: Annotated[tuple[str, ...], Field(alias="instanceTypes", min_length=1)] = ("m7i.large",)
    min_size: Annotated[int, Field(alias="minSize", ge=1, le=20)] = 2
    desired_size: Annotated[int, Field(alias="desiredSize", ge=1, le=20)] = 2
    max_size: Annotated[int, Field(alias="maxSize", ge=1, le=20)] = 3
    disk_gib: Annotated[int, Field(alias="diskGib", ge=20, le=1000)] = 50

    @field_validator("instance_types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        amd64 = [f for f in catalog.CPU_FAMILIES if catalog.FAMILIES[f].arch == "amd64"]
        for name in value:
            parts = catalog.split_instance_type(name)
            if catalog.cpu_instance_vcpus(name) is None or catalog.FAMILIES[parts[0]].arch != "amd64":
                raise _value_error(
                    "instance_type",
                    "must name x86_64 CPU instance types such as m7i.large or c7i.2xlarge"
                    f" (sizes large, xlarge, Nxlarge, metal-Nxl; families {', '.join(amd64)}); got {{got}}",
                    name,
                )
        return value

    @model_validator(mode="after")
    def _sizes(self) -> SystemNodeSettings:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise _field_error(
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
        raise _value_error(
            "cidr", "must be an IPv4 network in CIDR form such as 10.60.8.0/24 (got {got})", value
        ) from None
    if str(net) != value:
        raise _value_error("cidr", f"has host bits set: the network is {net} (got {{got}})", value)
    if net.is_global:
        raise _value_error(
            "cidr",
            "must be a private range routed to the VPC (RFC 1918 or 100.64.0.0/10): the private endpoint has no"
            " public address; public clients need endpointPublicAccess with publicAccessCidrs (got {got})",
            value,
        )
    return value


class PrivateAccessSettings(_Model):
    """Who may call the API on its private endpoint: one 443 rule each on the cluster security group.

    The group admits only itself (nodes, control-plane ENIs) by default, so the
    machine that runs `pulumi up` (a self-hosted CI runner, a VPN) must be listed here.
    """

    cidrs: Annotated[tuple[Annotated[str, AfterValidator(_private_cidr)], ...], AfterValidator(_unique)] = ()
    security_group_ids: Annotated[
        tuple[Annotated[str, Field(pattern=SECURITY_GROUP_ID)], ...],
        AfterValidator(_unique),
        Field(alias="securityGroupIds"),
    ] = ()

    @property
    def is_empty(self) -> bool:
        return not self.cidrs and not self.security_group_ids


class ClusterSettings(_Model):
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
        for cidr in value or ():
            try:
                ipaddress.IPv4Network(cidr)
            except ValueError:
                raise _value_error("cidr", "must list IPv4 CIDRs such as 203.0.113.0/24 (got {got})", cidr) from None
        return value

    @model_validator(mode="after")
    def _public_cidrs_need_public_endpoint(self) -> ClusterSettings:
        if not self.endpoint_public_access and self.public_access_cidrs is not None:
            raise _field_error(
                "publicAccessCidrs",
                "is only allowed with endpointPublicAccess: true (got {got})",
                list(self.public_access_cidrs),
            )
        return self

    @model_validator(mode="after")
    def _private_endpoint_needs_a_way_in(self) -> ClusterSettings:
        # An error, not a warning: this program applies Kubernetes objects through the
        # endpoint itself, so with no way in, `pulumi up` creates the cluster (15 minutes)
        # and then fails at its first Kubernetes resource, leaving a half-built stack.
        if not self.endpoint_public_access and (self.private_access is None or self.private_access.is_empty):
            raise _field_error(
                "privateAccess",
                "must list cidrs or securityGroupIds with endpointPublicAccess: false: the machine that runs"
                " pulumi (a self-hosted runner, VPN or peered network) reaches the API only through the private"
                " endpoint, on port 443 of the cluster security group (got {got})",
                self.private_access.model_dump(by_alias=True) if self.private_access else None,
            )
        return self

    @property
    def api_cidrs(self) -> tuple[str, ...]:
        if not self.endpoint_public_access:
            return ()
        return self.public_access_cidrs or ("0.0.0.0/0",)


class KarpenterSettings(_Model):
    replicas: Annotated[int, Field(ge=1, le=5)] = 2
    log_level: Annotated[Literal["debug", "info", "error"], Field(alias="logLevel")] = "info"


PROM_DURATION = r"^[0-9]+(ms|s|m|h|d|w|y)$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$"


class ResourceSpec(_Model):
    cpu: Annotated[str, Field(pattern=QUANTITY)]
    memory: Annotated[str, Field(pattern=QUANTITY)]


class PrometheusSettings(_Model):
    retention: Annotated[str, Field(pattern=PROM_DURATION)] = "15d"
    storage_gib: Annotated[int, Field(alias="storageGib", ge=10, le=16_384)] = 50
    scrape_interval: Annotated[str, Field(alias="scrapeInterval", pattern=PROM_DURATION)] = "30s"
    requests: ResourceSpec = ResourceSpec(cpu="500m", memory="2Gi")
    memory_limit: Annotated[str, Field(alias="memoryLimit", pattern=QUANTITY)] = "4Gi"


class MonitoringSettings(_Model):
    prometheus: PrometheusSettings = PrometheusSettings()
    grafana_replicas: Annotated[int, Field(alias="grafanaReplicas", ge=1, le=3)] = 1
    dcgm_interval_ms: Annotated[int, Field(alias="dcgmIntervalMs", ge=100, le=60_000)] = 5000


class ScaleUpSettings(_Model):
    stabilization_seconds: Annotated[int, Field(alias="stabilizationSeconds", ge=0, le=3600)] = 0
    pods_per_period: Annotated[int, Field(alias="podsPerPeriod", ge=1, le=1000)] = 4
    period_seconds: Annotated[int, Field(alias="periodSeconds", ge=1, le=1800)] = 15


class ScaleDownSettings(_Model):
    stabilization_seconds: Annotated[int, Field(alias="stabilizationSeconds", ge=0, le=3600)] = 300
    percent_per_period: Annotated[int, Field(alias="percentPerPeriod", ge=1, le=100)] = 50
    period_seconds: Annotated[int, Field(alias="periodSeconds", ge=1, le=1800)] = 60


class ScalingSettings(_Model):
    min_replicas: Annotated[int, Field(alias="minReplicas", ge=0, le=1000)] = 1
    max_replicas: Annotated[int, Field(alias="maxReplicas", ge=1, le=1000)] = 4
    # Requests in flight (queued + running) per replica that the autoscaler aims for.
    target_in_flight: Annotated[float, Field(alias="targetInFlight", gt=0, le=10_000)] = 8
    activation_in_flight: Annotated[float, Field(alias="activationInFlight", ge=0, le=10_000)] = 0
    polling_interval_seconds: Annotated[int, Field(alias="pollingIntervalSeconds", ge=1, le=600)] = 5
    cooldown_seconds: Annotated[int, Field(alias="cooldownSeconds", ge=0, le=86_400)] = 300
    scrape_interval_seconds: Annotated[int, Field(alias="scrapeIntervalSeconds", ge=1, le=300)] = 5
    # PromQL that is > 0 when traffic waits for a service at zero replicas (its own
    # pods cannot report in-flight requests when none run). Only with minReplicas 0;
    # without it such a service wakes through the KEDA HTTP add-on's interceptor.
    wake_up_query: Annotated[str | None, Field(alias="wakeUpQuery", min_length=1)] = None
    # How long the interceptor holds a request while a service scales up from zero:
    # a GPU node launch, image pull and model load (see the README's cold-start budget).
    cold_start_timeout_seconds: Annotated[int, Field(alias="coldStartTimeoutSeconds", ge=30, le=3600)] = 600
    scale_up: Annotated[ScaleUpSettings, Field(alias="scaleUp")] = ScaleUpSettings()
    scale_down: Annotated[ScaleDownSettings, Field(alias="scaleDown")] = ScaleDownSettings()

    @model_validator(mode="after")
    def _bounds(self) -> ScalingSettings:
        if self.min_replicas > self.max_replicas:
            raise _field_error(
                "minReplicas", f"must be <= maxReplicas ({self.max_replicas}) (got {{got}})", self.min_replicas
            )
        if self.wake_up_query is not None and self.min_replicas != 0:
            raise _field_error("wakeUpQuery", "is only used with minReplicas: 0 (got {got})", self.wake_up_query)
        return self

    @property
    def wakes_through_interceptor(self) -> bool:
        """At zero replicas with no wake-up query of its own: the KEDA HTTP add-on wakes it."""
        return self.min_replicas == 0 and self.wake_up_query is None


class InferenceSettings(_Model):
    """One InferenceService: the reference server (or a compatible image) on a GPU pool."""

    image: PinnedImage
    pool: str
    gpus: Annotated[int, Field(ge=1, le=8)] = 1
    cpu: Annotated[str, Field(pattern=QUANTITY)] = "2"
    memory_gib: Annotated[int, Field(alias="memoryGib", ge=1, le=2048)] = 8
    port: Annotated[int, Field(ge=1024, le=65_535)] = 8080
    # How long the model takes to load: the startup probe allows this plus margin.
    model_load_seconds: Annotated[int, Field(alias="modelLoadSeconds", ge=1, le=3600)] = 60
    # SIGTERM to exit: in-flight and queued requests finish within this.
    drain_seconds: Annotated[int, Field(alias="drainSeconds", ge=5, le=3600)] = 30
    max_batch_size: Annotated[int, Field(alias="maxBatchSize", ge=1, le=1024)] = 16
    max_wait_ms: Annotated[int, Field(alias="maxWaitMs", ge=0, le=10_000)] = 5
    max_queue: Annotated[int, Field(alias="maxQueue", ge=1, le=100_000)] = 256
    do_not_disrupt: Annotated[bool, Field(alias="doNotDisrupt")] = False
    scaling: ScalingSettings = ScalingSettings()


class BatchJobSettings(_Model):
    """A queue-driven batch job: one Kubernetes Job per batch of SQS messages."""

    image: PinnedImage
    pool: str
    gpus: Annotated[int, Field(ge=0, le=8)] = 1
    cpu: Annotated[str, Field(pattern=QUANTITY)] = "2"
    memory_gib: Annotated[int, Field(alias="memoryGib", ge=1, le=2048)] = 8
    max_replicas: Annotated[int, Field(alias="maxReplicas", ge=1, le=1000)] = 10
    messages_per_job: Annotated[int, Field(alias="messagesPerJob", ge=1, le=10_000)] = 10
    polling_interval_seconds: Annotated[int, Field(alias="pollingIntervalSeconds", ge=1, le=600)] = 10
    visibility_timeout_seconds: Annotated[int, Field(alias="visibilityTimeoutSeconds", ge=30, le=43_200)] = 300
    max_receive_count: Annotated[int, Field(alias="maxReceiveCount", ge=1, le=1000)] = 3
    active_deadline_seconds: Annotated[int, Field(alias="activeDeadlineSeconds", ge=60, le=86_400)] = 3600
    # Karpenter must not consolidate a node under a running batch Job.
    do_not_disrupt: Annotated[bool, Field(alias="doNotDisrupt")] = True


# The load generator's Deployment, next to the InferenceServices in their namespace.
LOAD_GENERATOR_NAME = "loadgen"


class LoadGeneratorSettings(_Model):
    """An in-cluster load generator aimed at one InferenceService, scaled to 0 until someone runs it."""

    image: PinnedImage
    target: str  # a key of `inference`
    rps: Annotated[float, Field(gt=0, le=100_000)] = 20
    duration_seconds: Annotated[int, Field(alias="durationSeconds", ge=1, le=86_400)] = 300
    replicas: Annotated[int, Field(ge=0, le=100)] = 0


class Settings(_Model):
    region: str
    environment: Annotated[str, Field(pattern=DNS_LABEL, max_length=20)]
    tags: Mapping[str, str] = {}
    network: NetworkSettings = NetworkSettings()
    cluster: ClusterSettings
    karpenter: KarpenterSettings = KarpenterSettings()
    node_pools: Annotated[Mapping[str, PoolSettings], Field(alias="nodePools", min_length=1)]
    monitoring: MonitoringSettings = MonitoringSettings()
    inference: Mapping[str, InferenceSettings] = {}
    batch_jobs: Annotated[Mapping[str, BatchJobSettings], Field(alias="batchJobs")] = {}
    load_generator: Annotated[LoadGeneratorSettings | None, Field(alias="loadGenerator")] = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: Mapping[str, str]) -> Mapping[str, str]:
        for key, value in tags.items():
            if not key or len(key) > 128 or len(value) > 256:
                raise _field_error(key, "must be a key of 1..128 characters with a value of at most 256", value)
            if key.startswith(RESERVED_TAG_PREFIXES):
                raise _field_error(
                    key,
                    f"is reserved for AWS, EKS or Karpenter (keys starting {', '.join(RESERVED_TAG_PREFIXES)})",
                    value,
                )
        return tags

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not re.match(REGION, value):
            raise _value_error("region", "must be an AWS region such as us-west-2 (got {got})", value)
        return value

    @field_validator("node_pools")
    @classmethod
    def _pool_names(cls, pools: Mapping[str, PoolSettings]) -> Mapping[str, PoolSettings]:
        for key in pools:
            if not re.match(DNS_LABEL, key) or len(key) > 40:
                raise _field_error(
                    key,
                    "is not a valid pool name: use a lowercase DNS label (a-z, 0-9, '-', at most 40 characters)",
                    key,
                )
        return pools

    @model_validator(mode="after")
    def _zones_in_region(self) -> Settings:
        for i, zone in enumerate(self.network.availability_zones or ()):
            if not re.fullmatch(re.escape(self.region) + r"[a-z]", zone):
                raise PydanticCustomError(
                    "field",
                    f"must be a zone of aws:region {self.region}, such as {self.region}a (got {json.dumps(zone)})",
                    {"field": f"network.availabilityZones[{i}]", "got": json.dumps(zone)},
                )
        return self

    @field_validator("inference", "batch_jobs")
    @classmethod
    def _workload_names(cls, workloads: Mapping[str, Any]) -> Mapping[str, Any]:
        for key in workloads:
            if not re.match(DNS_LABEL, key) or len(key) > 40:
                raise _field_error(
                    key, "is not a valid name: use a lowercase DNS label (a-z, 0-9, '-', at most 40 characters)", key
                )
        return workloads

    @model_validator(mode="after")
    def _workload_pools(self) -> Settings:
        for section, workloads in (("inference", self.inference), ("batchJobs", self.batch_jobs)):
            for name, spec in sorted(workloads.items()):
                problem = _workload_pool_problem(f"{section}.{name}", spec, self.node_pools)
                if problem is not None:
                    raise problem
        return self

    @model_validator(mode="after")
    def _load_target(self) -> Settings:
        if self.load_generator is not None and LOAD_GENERATOR_NAME in self.inference:
            raise _field_error(
                f"inference.{LOAD_GENERATOR_NAME}",
                "is the load generator's Deployment name in the same namespace: rename the service (got {got})",
                LOAD_GENERATOR_NAME,
            )
        if self.load_generator is not None and self.load_generator.target not in self.inference:
            raise _field_error(
                "loadGenerator.target",
                f"must name a service of inference: one of {', '.join(sorted(self.inference)) or '(none defined)'}"
                " (got {got})",
                self.load_generator.target,
            )
        return self

    @model_validator(mode="after")
    def _load_generator_needs_a_cpu_pool(self) -> Settings:
        if self.load_generator is not None and self.cpu_pool is None:
            raise _field_error(
                "loadGenerator",
                "needs a CPU pool (gpu: none) in nodePools to run on; got only GPU pools {got}",
                sorted(self.node_pools),
            )
        return self

    @property
    def needs_http_add_on(self) -> bool:
        return any(svc.scaling.wakes_through_interceptor for svc in self.inference.values())

    @property
    def cpu_pool(self) -> str | None:
        """The first CPU pool by name, where CPU-only helpers such as the load generator run."""
        return next((k for k, p in sorted(self.node_pools.items()) if not p.is_gpu), None)

    @property
    def shared_pools(self) -> dict[str, PoolSettings]:
        return {k: p for k, p in sorted(self.node_pools.items()) if p.gpu == "shared"}

    @property
    def default_tags(self) -> dict[str, str]:
        base = {"project": PROJECT, "environment": self.environment, "managed-by": "pulumi"}
        return {**base, **self.tags}

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> Settings:
        """Validate a stack's config (keys without the project prefix, plus `region`)."""
        try:
            return cls.parse(_with_default_cluster_name(raw))
        except ValidationError as exc:
            raise ConfigError(_describe_all(exc.errors())) from None


def _with_default_cluster_name(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """`cluster` and its `name` may be left out: the cluster is then `gpu-inference-<environment>`."""
    environment, cluster = raw.get("environment"), raw.get("cluster", {})
    if not isinstance(environment, str) or not isinstance(cluster, Mapping) or "name" in cluster:
        return raw
    return {**raw, "cluster": {**cluster, "name": f"{PROJECT}-{environment}"}}


def _workload_pool_problem(
    path: str, spec: InferenceSettings | BatchJobSettings, pools: Mapping[str, PoolSettings]
) -> PydanticCustomError | None:
    """Why a workload cannot run on the pool it names, or None."""
    pool, wants_gpu = pools.get(spec.pool), spec.gpus > 0
    if pool is None or (wants_gpu and not pool.is_gpu):
        allowed = sorted(k for k, p in pools.items() if p.is_gpu or not wants_gpu)
        kind = "a GPU pool" if wants_gpu else "a pool"
        return _field_error(
            f"{path}.pool", f"must name {kind} of nodePools: one of {', '.join(allowed)} (got {{got}})", spec.pool
        )
    if pool.gpu == "shared" and spec.gpus != 1:
        return _field_error(
            f"{path}.gpus",
            f"must be 1 on shared pool {spec.pool}: a time-sliced GPU is handed out one slice per pod (got {{got}})",
            spec.gpus,
        )
    largest = max(pool.gpu_counts, default=0)
    fits = min(largest, pool.max_gpus or 0)
    if wants_gpu and pool.gpu == "dedicated" and spec.gpus > fits:
        return _field_error(
            f"{path}.gpus",
            f"must fit one node of pool {spec.pool}: at most {fits} (its families have at most {largest} GPUs per"
            f" instance and maxGpus is {pool.max_gpus}; got {{got}})",
            spec.gpus,
        )
    if not wants_gpu and pool.is_gpu:
        return _field_error(
            f"{path}.gpus", f"must be >= 1 on GPU pool {spec.pool}: its nodes are tainted for GPU pods (got {{got}})", 0
        )
    return None


# Config keys as they appear in Pulumi.<stack>.yaml -> field in `Settings`.
CONFIG_KEYS: dict[str, str] = {
    f"{PROJECT}:environment": "environment",
    f"{PROJECT}:tags": "tags",
    f"{PROJECT}:network": "network",
    f"{PROJECT}:cluster": "cluster",
    f"{PROJECT}:karpenter": "karpenter",
    f"{PROJECT}:nodePools": "nodePools",
    f"{PROJECT}:monitoring": "monitoring",
    f"{PROJECT}:inference": "inference",
    f"{PROJECT}:batchJobs": "batchJobs",
    f"{PROJECT}:loadGenerator": "loadGenerator",
    "aws:region": "region",
}
# Keys other namespaces may hold without our say (providers read their own).
FOREIGN_NAMESPACES = ("aws", "kubernetes", "pulumi")


def raw_from_stack_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Map `Pulumi.<stack>.yaml`'s `config:` block to `from_raw` input.

    Unknown keys in our namespace are errors (a misspelt `nodePool` must not be
    silently ignored); keys of provider namespaces are left to the providers.
    """
    raw: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in config.items():
        if key in CONFIG_KEYS:
            raw[CONFIG_KEYS[key]] = value
        elif key.split(":", 1)[0] not in FOREIGN_NAMESPACES:
            unknown.append(key)
    if unknown:
        allowed = ", ".join(k for k in CONFIG_KEYS)
        raise ConfigError([f"{k} is not a known config key (allowed: {allowed})" for k in sorted(unknown)])
    return raw


def load() -> Settings:
    """Read the running stack's config through pulumi and validate it."""
    from pulumi.runtime import config as runtime_config

    known = dict(runtime_config.get_config_env())
    known.update(runtime_config.CONFIG.get())
    parsed = {key: _maybe_json(value) for key, value in known.items()}
    return Settings.from_raw(raw_from_stack_config(parsed))


def _maybe_json(value: Any) -> Any:
    """Pulumi hands structured config over as JSON text; plain strings stay strings."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    return value


# --- error formatting -------------------------------------------------------

# Fields whose config key is not `gpu-inference:<alias>`.
_KEY_OF_FIELD = {"region": "aws:region"}


def _path(loc: tuple[Any, ...]) -> str:
    """The key as a user finds it in `Pulumi.<stack>.yaml`: `gpu-inference:nodePools.gpu.maxGpus`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return _KEY_OF_FIELD.get(out, f"{PROJECT}:{out}")


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Keys the model at `loc` accepts (for unknown-key messages)."""
    model: Any = Settings
    skip_map_key = False
    for part in loc:
        if isinstance(part, int):
            continue
        if skip_map_key:  # a pool name in nodePools: the model stays the value model
            skip_map_key = False
            continue
        field = next(f for n, f in model.model_fields.items() if (f.alias or n) == part)
        skip_map_key = _is_mapping(field.annotation)
        model = _inner_model(field.annotation)
    return [f.alias or n for n, f in model.model_fields.items()]


def _is_mapping(annotation: Any) -> bool:
    origin = getattr(annotation, "__origin__", None)
    return origin in (Mapping, dict) or any(_is_mapping(a) for a in getattr(annotation, "__args__", ()) or ())


def _inner_model(annotation: Any) -> Any:
    """The model class inside Optional / tuple / Mapping / Annotated annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def _describe_all(errors: list[Any]) -> list[str]:
    """One line per problem. A list whose item failed also reports its length
    (pydantic drops the bad item): keep only the item's message."""
    item_paths = {tuple(e["loc"][:-1]) for e in errors if e["loc"] and isinstance(e["loc"][-1], int)}
    kept = [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in item_paths)]
    return [_describe(e) for e in kept]


def _describe(err: Mapping[str, Any]) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = json.dumps(err.get("input"), default=str)
    if kind == "field":
        return f"{_path((*loc, ctx['field']))} {err['msg']}"
    path = _path(loc)
    if kind == "extra_forbidden":
        return f"{path} is not a known key (allowed: {', '.join(_allowed_keys(loc[:-1]))})"
    if kind == "missing":
        return f"{path} is required"
    if kind in _BOUNDS:
        op, name = _BOUNDS[kind]
        return f"{path} must be {op} {ctx[name]} (got {got})"
    if kind == "literal_error":
        return f"{path} must be one of {ctx['expected']} (got {got})"
    if kind == "string_pattern_mismatch":
        return f"{path} must match {ctx['pattern']} (got {got})"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return f"{path} must not be empty (got {got})"
    if kind in ("too_short", "too_long"):
        what, limit = ("at least", ctx.get("min_length")) if kind == "too_short" else ("at most", ctx.get("max_length"))
        unit = "characters" if isinstance(err.get("input"), str) else "items"
        return f"{path} must have {what} {limit} {unit} (got {got})"
    if kind.endswith("_type"):
        return f"{path} must be of type {kind.removesuffix('_type').replace('_', ' ')} (got {got})"
    message = f"{err['msg'][:1].lower()}{err['msg'][1:]}"
    return f"{path} {message}" if "got" in ctx else f"{path} {message} (got {got})"
