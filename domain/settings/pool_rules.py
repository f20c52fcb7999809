"""The rules one node pool's keys obey together, every problem reported.

The order, shared by every settings rule: first the keys (or values) this kind
of pool does not allow, then the keys it requires, then quantities. A key that
does not belong is usually the mistake that explains the rest, so it comes
first, and quantities are computed as if such keys were absent: a dedicated
pool's `warmGpus` is held against `maxGpus`, not `maxGpus` x a
`timeSlicingReplicas` it may not have. A quantity that depends on a key that is
missing, or on an instance family list with a problem, is not checked at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic_core import PydanticCustomError

from domain import catalog, versions
from domain.settings.errors import field_error

if TYPE_CHECKING:
    from domain.settings.pools import PoolSettings

_GPU_ONLY = "is only allowed on GPU pools (gpu: dedicated or shared)"


def problems(pool: PoolSettings) -> list[PydanticCustomError]:
    families = _family_problems(pool)
    return [*families, *_not_allowed(pool), *_required(pool), *_quantities(pool, families_ok=not families)]


def _family_problems(pool: PoolSettings) -> list[PydanticCustomError]:
    """Families the catalog does not know, and families of the other kind (CPU on a GPU pool)."""
    found = []
    unknown = [f for f in pool.instance_families if f not in catalog.FAMILIES]
    if unknown:
        found.append(
            field_error(
                "instanceFamilies",
                f"names unknown instance families {{got}}; known GPU families: {', '.join(catalog.GPU_FAMILIES)};"
                f" known CPU families: {', '.join(catalog.CPU_FAMILIES)}",
                unknown,
            )
        )
    wrong = [f for f in pool.instance_families if f in catalog.FAMILIES and catalog.FAMILIES[f].is_gpu != pool.is_gpu]
    if wrong:
        allowed = catalog.GPU_FAMILIES if pool.is_gpu else catalog.CPU_FAMILIES
        kind = "GPU" if pool.is_gpu else "CPU"
        found.append(
            field_error(
                "instanceFamilies",
                f"must name only {kind} families since gpu is {pool.gpu} (got {{got}}); allowed: {', '.join(allowed)}",
                wrong,
            )
        )
    return found


def _not_allowed(pool: PoolSettings) -> list[PydanticCustomError]:
    """Keys and values the pool's `gpu` mode (or its consolidation policy) rules out, in key order."""
    found = []
    if not pool.is_gpu and pool.max_gpus is not None:
        found.append(field_error("maxGpus", _GPU_ONLY, pool.max_gpus))
    if pool.gpu != "shared" and pool.time_slicing_replicas is not None:
        found.append(
            field_error(
                "timeSlicingReplicas", "is only allowed on shared GPU pools (gpu: shared)", pool.time_slicing_replicas
            )
        )
    if pool.consolidation == "WhenEmptyOrUnderutilized" and pool.consolidate_after == "Never":
        found.append(
            field_error("consolidateAfter", "cannot be Never with consolidation WhenEmptyOrUnderutilized", "Never")
        )
    # Bottlerocket's NVIDIA variants start their own device plugin as a host
    # service, configured from Bottlerocket settings
    # (settings.kubelet-device-plugins.nvidia.*, bottlerocket.dev/en/os/1.54.x/api/settings/kubelet-device-plugins;
    # bottlerocket-os/bottlerocket-core-kit packages/nvidia-k8s-device-plugin/nvidia-k8s-device-plugin.service
    # and nvidia-k8s-device-plugin-conf). Our device plugin and its per-pool ConfigMap would not be
    # what advertises nvidia.com/gpu there, so a shared pool's time slicing would not apply and its
    # NodeOverlay would promise capacity the node never reports.
    if pool.is_gpu and pool.ami_alias.startswith("bottlerocket@"):
        found.append(
            field_error(
                "amiAlias",
                f"must be an al2023@ alias on GPU pools (gpu: {pool.gpu}), such as al2023@{versions.EKS_AMI_RELEASE}:"
                " Bottlerocket's NVIDIA variants run their own device plugin, configured through Bottlerocket"
                " settings instead of this program's device-plugin ConfigMap; bottlerocket@ is allowed on CPU pools"
                " (gpu: none) (got {got})",
                pool.ami_alias,
            )
        )
    if "reserved" not in pool.capacity_types and pool.capacity_reservations is not None:
        found.append(
            field_error(
                "capacityReservations",
                "is only used when capacityTypes includes reserved (got {got})",
                [t.model_dump(exclude_none=True) for t in pool.capacity_reservations],
            )
        )
    if not pool.is_gpu and pool.warm_gpus:
        found.append(field_error("warmGpus", _GPU_ONLY, pool.warm_gpus))
    if not pool.is_gpu and pool.image_cache is not None:
        found.append(
            field_error(
                "imageCache",
                f"{_GPU_ONLY} (got {{got}})",
                pool.image_cache.model_dump(by_alias=True, exclude_defaults=True),
            )
        )
    return found


def _required(pool: PoolSettings) -> list[PydanticCustomError]:
    found = []
    if not pool.is_gpu and pool.max_cpu_setting is None:
        found.append(field_error("maxCpu", "is required for CPU pools (gpu: none): the pool's vCPU limit, >= 1", None))
    if pool.is_gpu and pool.max_gpus is None:
        found.append(field_error("maxGpus", "is required for GPU pools (an integer >= 1)", None))
    if pool.gpu == "shared" and pool.time_slicing_replicas is None:
        found.append(field_error("timeSlicingReplicas", "is required for shared GPU pools (an integer 2..48)", None))
    if "reserved" in pool.capacity_types and not pool.capacity_reservations:
        found.append(
            field_error(
                "capacityReservations",
                "is required when capacityTypes includes reserved: a list of {id: cr-...} or {tags: {...}} selecting"
                " the pool's On-Demand Capacity Reservations or Capacity Blocks (Karpenter launches into none it is"
                " not told about)",
                None,
            )
        )
    return found


def _quantities(pool: PoolSettings, *, families_ok: bool) -> list[PydanticCustomError]:
    """GPU limits: only on a GPU pool with its maxGpus (a CPU pool's maxGpus is already reported)."""
    if not pool.is_gpu or pool.max_gpus is None:
        return []
    found = []
    fewest = min(pool.gpu_counts) if families_ok else None
    if fewest is not None and pool.max_gpus < fewest:
        found.append(
            field_error(
                "maxGpus",
                f"must be at least {fewest}, the fewest GPUs one instance of"
                f" {', '.join(pool.instance_families)} carries: Karpenter never launches a node that would pass the"
                " pool's limit (got {got})",
                pool.max_gpus,
            )
        )
    # Slices only count on a shared pool; a shared pool without its replica count has no limit to hold against.
    replicas = pool.time_slicing_replicas if pool.gpu == "shared" else 1
    if replicas is not None and pool.warm_gpus > pool.max_gpus * replicas:
        limit = f"maxGpus ({pool.max_gpus})"
        if pool.gpu == "shared":
            limit += f" x timeSlicingReplicas ({replicas}) = {pool.max_gpus * replicas} slices"
        found.append(
            field_error(
                "warmGpus",
                f"must be at most the pool's GPU limit, {limit}: headroom counts against it (got {{got}})",
                pool.warm_gpus,
            )
        )
    return found
