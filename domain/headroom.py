"""How big one warm-headroom placeholder is: pure, shared by the warm-up component and the cost model.

Karpenter buys the cheapest instance that fits the pending placeholders. Sized at
10m / 16Mi each, that is the smallest instance of the family, and a real pod that
asks for 4 CPUs and 32 GiB per GPU can never preempt its way onto it. Each
placeholder (one GPU, or one slice on a shared pool) asks for what the hungriest
consumer of the pool asks per GPU, so a node bought for k placeholders fits any
consumer of up to k GPUs once it preempts them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from domain import pods
from domain.settings import Settings

# A placeholder with no service or job on its pool to size after.
MIN_CPU_MILLIS = 10
MIN_MEMORY_MIB = 16


@dataclass(frozen=True)
class GpuConsumer:
    """What one pod of a service or batch job on a GPU pool asks for."""

    gpus: int  # GPUs, or slices on a shared pool
    cpu: str  # quantity, e.g. "4" or "500m"
    memory_gib: int


def consumers_by_pool(settings: Settings) -> dict[str, tuple[GpuConsumer, ...]]:
    """Pool -> every pod shape that may preempt its headroom (services and GPU batch jobs)."""
    found: dict[str, tuple[GpuConsumer, ...]] = {}
    for work in [*settings.inference.values(), *settings.batch_jobs.values()]:
        if work.gpus:
            consumer = GpuConsumer(gpus=work.gpus, cpu=work.cpu, memory_gib=work.memory_gib)
            found[work.pool] = (*found.get(work.pool, ()), consumer)
    return found


def placeholder_resources(consumers: tuple[GpuConsumer, ...]) -> tuple[int, int]:
    """(CPU millicores, memory MiB) of one placeholder, i.e. per GPU (slice) of headroom."""
    cpu = max((math.ceil(pods.cpu_millicores(c.cpu) / c.gpus) for c in consumers), default=MIN_CPU_MILLIS)
    memory = max((math.ceil(c.memory_gib * 1024 / c.gpus) for c in consumers), default=MIN_MEMORY_MIB)
    return max(cpu, MIN_CPU_MILLIS), max(memory, MIN_MEMORY_MIB)


def per_physical_gpu(consumers: Mapping[str, tuple[GpuConsumer, ...]], pool: str, slices: int) -> tuple[float, float]:
    """(CPUs, GiB) the headroom holds per physical GPU of a pool (`slices` per GPU when shared)."""
    cpu, memory = placeholder_resources(consumers.get(pool, ()))
    return cpu / 1000 * slices, memory / 1024 * slices
