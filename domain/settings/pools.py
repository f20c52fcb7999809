"""`nodePools`: one Karpenter NodePool each, CPU, dedicated GPU or time-sliced (shared) GPU."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from domain import catalog, versions
from domain.settings import pool_rules
from domain.settings.base import CapacityType, ConfigModel, ConsolidationPolicy, PinnedImage, unique
from domain.settings.errors import field_error, raise_all, value_error
from domain.settings.patterns import (
    AMI_ALIAS,
    BUDGET_DURATION,
    BUDGET_NODES,
    CAPACITY_RESERVATION_ID,
    DURATION_OR_NEVER,
    SNAPSHOT_ID,
)


class ImageCacheSettings(ConfigModel):
    """Ways to have a GPU node's inference images on disk before pods need them."""

    # EBS snapshot whose volume already holds the images (see docs/image-snapshot.md).
    snapshot_id: Annotated[str | None, Field(alias="snapshotId", pattern=SNAPSHOT_ID)] = None
    volume_gib: Annotated[int, Field(alias="volumeGib", ge=20, le=16_384)] = 200
    # Fallback without a snapshot: a DaemonSet pulls `images` (and the pool's
    # inference images) as soon as a node joins.
    pre_pull: Annotated[bool, Field(alias="prePull")] = True
    images: tuple[PinnedImage, ...] = ()


class DisruptionBudget(ConfigModel):
    nodes: Annotated[str, Field(pattern=BUDGET_NODES)] = "10%"
    schedule: str | None = None
    duration: Annotated[str, Field(pattern=BUDGET_DURATION)] | None = None
    reasons: tuple[Literal["Underutilized", "Empty", "Drifted"], ...] | None = None

    @model_validator(mode="after")
    def _schedule_with_duration(self) -> DisruptionBudget:
        if (self.schedule is None) != (self.duration is None):
            missing, present = ("duration", "schedule") if self.duration is None else ("schedule", "duration")
            raise field_error(missing, f"is required when {present} is set (Karpenter needs both or neither)", None)
        return self


class CapacityReservationTerm(ConfigModel):
    """One `capacityReservationSelectorTerms` entry of the pool's EC2NodeClass: an ID, or tags (ANDed).

    Karpenter v1.14.1 (EC2NodeClass CRD): terms are ORed; `id` is mutually exclusive
    with the other fields; a tag value `*` matches any value. A Capacity Block is an
    ODCR to EC2 and is selected the same way.
    """

    id: Annotated[str | None, Field(pattern=CAPACITY_RESERVATION_ID)] = None
    tags: Annotated[dict[str, Annotated[str, Field(min_length=1)]] | None, Field(min_length=1, max_length=20)] = None

    @model_validator(mode="after")
    def _one_selector(self) -> CapacityReservationTerm:
        if (self.id is None) == (self.tags is None):
            got = {k: v for k, v in (("id", self.id), ("tags", self.tags)) if v is not None}
            raise value_error("reservation_term", "must set exactly one of id or tags (got {got})", got)
        return self


class PoolSettings(ConfigModel):
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
    # With capacityTypes `reserved`: which ODCRs / Capacity Blocks the pool launches into.
    capacity_reservations: Annotated[
        tuple[CapacityReservationTerm, ...] | None, Field(alias="capacityReservations", max_length=30)
    ] = None

    @field_validator("instance_families", "capacity_types")
    @classmethod
    def _no_duplicates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return unique(value)

    @model_validator(mode="after")
    def _pool_rules(self) -> PoolSettings:
        raise_all(pool_rules.problems(self))
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
