"""Rules that need two sections of the stack config at once, every problem reported.

A section's own rules live with its model (`pool_rules` for a pool); these look
across sections: zones against the region, workloads against the pools they
name, the load generator against the services. Within a rule the order is the
one `pool_rules` describes (what is not allowed first), and a check that
depends on a problem already reported is skipped: a workload naming no usable
pool gets no GPU-count message about that pool.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic_core import PydanticCustomError

from domain.settings.errors import field_error
from domain.settings.ingress import region_problems
from domain.settings.patterns import LOAD_GENERATOR_NAME

if TYPE_CHECKING:
    from domain.settings.pools import PoolSettings
    from domain.settings.stack import Settings
    from domain.settings.workloads import BatchJobSettings, InferenceSettings


def problems(settings: Settings) -> list[PydanticCustomError]:
    return [
        *_zones_in_region(settings),
        *_workload_pools(settings),
        *_load_generator(settings),
        *_exposure(settings),
    ]


# How much longer than a wake-up the load balancer must hold a request: the interceptor waits up to
# coldStartTimeoutSeconds for the first replica, then the request itself runs.
WAKE_HOLD_MARGIN_SECONDS = 30


def wake_hold_seconds(svc: InferenceSettings) -> int:
    """How long a request to an exposed service may see no byte: its wake-up, when it scales to zero."""
    if not svc.scaling.wakes_through_interceptor:
        return 0
    return svc.scaling.cold_start_timeout_seconds + WAKE_HOLD_MARGIN_SECONDS


def _exposure(settings: Settings) -> list[PydanticCustomError]:
    """Exposed services need the stack's load balancer, distinct host + path pairs and, on it, an
    idle timeout that outlasts every wake-up; the load balancer needs a certificate of its region
    and, when internet-facing, the CIDRs it is open to written out."""
    exposed = {k: svc for k, svc in sorted(settings.inference.items()) if svc.expose is not None}
    ingress = settings.ingress
    if ingress is None:
        return [
            field_error(
                f"inference.{name}.expose",
                "needs gpu-inference:ingress (the stack's load balancer: scheme, certificateArn, allowedCidrs)"
                " (got {got})",
                svc.expose.model_dump(by_alias=True) if svc.expose else None,
            )
            for name, svc in exposed.items()
        ]
    found = region_problems(ingress, settings.region)
    if ingress.scheme == "internet-facing" and ingress.allowed_cidrs is None:
        found.append(
            field_error(
                "ingress.allowedCidrs",
                "is required with scheme internet-facing: the CIDRs that may reach the load balancer"
                " (write 0.0.0.0/0 to open it to everyone) (got {got})",
                None,
            )
        )
    routes: dict[tuple[str, str], str] = {}
    for name, svc in exposed.items():
        assert svc.expose is not None
        key = (svc.expose.host, svc.expose.path)
        if key in routes:
            found.append(
                field_error(
                    f"inference.{name}.expose",
                    f"routes the same host and path as inference.{routes[key]}.expose (got {{got}})",
                    {"host": key[0], "path": key[1]},
                )
            )
        routes.setdefault(key, name)
    needed = {name: wake_hold_seconds(svc) for name, svc in exposed.items()}
    slowest = max(needed, key=lambda n: needed[n], default=None)
    if (
        ingress.idle_timeout_seconds is not None
        and slowest is not None
        and ingress.idle_timeout_seconds < needed[slowest]
    ):
        found.append(
            field_error(
                "ingress.idleTimeoutSeconds",
                f"must be >= {needed[slowest]}: inference.{slowest}.scaling.coldStartTimeoutSeconds + "
                f"{WAKE_HOLD_MARGIN_SECONDS}, so the load balancer holds a request while {slowest} wakes"
                " (got {got})",
                ingress.idle_timeout_seconds,
            )
        )
    return found


def _zones_in_region(settings: Settings) -> list[PydanticCustomError]:
    region = settings.region
    return [
        field_error(
            f"network.availabilityZones[{i}]",
            f"must be a zone of aws:region {region}, such as {region}a (got {{got}})",
            zone,
        )
        for i, zone in enumerate(settings.network.availability_zones or ())
        if not re.fullmatch(re.escape(region) + r"[a-z]", zone)
    ]


def _workload_pools(settings: Settings) -> list[PydanticCustomError]:
    found = []
    for section, workloads in (("inference", settings.inference), ("batchJobs", settings.batch_jobs)):
        for name, spec in sorted(workloads.items()):
            problem = _workload_pool_problem(f"{section}.{name}", spec, settings.node_pools)
            if problem is not None:
                found.append(problem)
    return found


def _workload_pool_problem(
    path: str, spec: InferenceSettings | BatchJobSettings, pools: Mapping[str, PoolSettings]
) -> PydanticCustomError | None:
    """Why a workload cannot run on the pool it names, or None.

    At most one problem: the GPU-count checks depend on the pool, and each of them
    says what `gpus` must be on that pool, so a second would only repeat the first.
    """
    pool, wants_gpu = pools.get(spec.pool), spec.gpus > 0
    if pool is None or (wants_gpu and not pool.is_gpu):
        allowed = sorted(k for k, p in pools.items() if p.is_gpu or not wants_gpu)
        kind = "a GPU pool" if wants_gpu else "a pool"
        return field_error(
            f"{path}.pool", f"must name {kind} of nodePools: one of {', '.join(allowed)} (got {{got}})", spec.pool
        )
    if pool.gpu == "shared" and spec.gpus != 1:
        return field_error(
            f"{path}.gpus",
            f"must be 1 on shared pool {spec.pool}: a time-sliced GPU is handed out one slice per pod (got {{got}})",
            spec.gpus,
        )
    largest = max(pool.gpu_counts, default=0)
    fits = min(largest, pool.max_gpus or 0)
    if wants_gpu and pool.gpu == "dedicated" and spec.gpus > fits:
        return field_error(
            f"{path}.gpus",
            f"must fit one node of pool {spec.pool}: at most {fits} (its families have at most {largest} GPUs per"
            f" instance and maxGpus is {pool.max_gpus}; got {{got}})",
            spec.gpus,
        )
    if not wants_gpu and pool.is_gpu:
        return field_error(
            f"{path}.gpus", f"must be >= 1 on GPU pool {spec.pool}: its nodes are tainted for GPU pods (got {{got}})", 0
        )
    return None


def _load_generator(settings: Settings) -> list[PydanticCustomError]:
    loadgen = settings.load_generator
    if loadgen is None:
        return []
    found = []
    if LOAD_GENERATOR_NAME in settings.inference:
        found.append(
            field_error(
                f"inference.{LOAD_GENERATOR_NAME}",
                "is the load generator's Deployment name in the same namespace: rename the service (got {got})",
                LOAD_GENERATOR_NAME,
            )
        )
    if loadgen.target not in settings.inference:
        found.append(
            field_error(
                "loadGenerator.target",
                f"must name a service of inference: one of {', '.join(sorted(settings.inference)) or '(none defined)'}"
                " (got {got})",
                loadgen.target,
            )
        )
    if settings.cpu_pool is None:
        found.append(
            field_error(
                "loadGenerator",
                "needs a CPU pool (gpu: none) in nodePools to run on; got only GPU pools {got}",
                sorted(settings.node_pools),
            )
        )
    return found
