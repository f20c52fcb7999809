"""Facts about the EC2 instance families a pool may name.

Settings use this table to reject a GPU family in a CPU pool (and the reverse);
the device-plugin and NodeOverlay code use the GPU counts. Sizes that exist for
a family decide which GPU counts per instance Karpenter can launch, so a shared
pool gets one NodeOverlay per count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    arch: str  # kubernetes.io/arch value
    gpu_model: str = ""  # empty for CPU families
    gpu_memory_gib: int = 0  # per GPU
    gpu_counts: tuple[int, ...] = ()  # GPUs per instance across the family's sizes
    max_vcpus_per_gpu: int = 0  # the most vCPUs any size carries per GPU (g5.16xlarge: 64 for 1)

    @property
    def is_gpu(self) -> bool:
        return bool(self.gpu_counts)


def _gpu(
    name: str, model: str, memory: int, counts: tuple[int, ...], vcpus_per_gpu: int, arch: str = "amd64"
) -> Family:
    return Family(name, arch, model, memory, counts, vcpus_per_gpu)


_GPU_FAMILIES = (
    _gpu("g4dn", "T4", 16, (1, 4, 8), 64),
    _gpu("g5", "A10G", 24, (1, 4, 8), 64),
    _gpu("g5g", "T4G", 16, (1, 2), 32, arch="arm64"),
    _gpu("g6", "L4", 24, (1, 4, 8), 64),
    _gpu("gr6", "L4", 24, (1,), 32),
    _gpu("g6e", "L40S", 48, (1, 4, 8), 64),
    _gpu("p4d", "A100", 40, (8,), 12),
    _gpu("p4de", "A100", 80, (8,), 12),
    _gpu("p5", "H100", 80, (1, 8), 24),
    _gpu("p5e", "H200", 141, (8,), 24),
    _gpu("p5en", "H200", 141, (8,), 24),
)

_CPU_FAMILIES = tuple(
    Family(name, arch)
    for arch, names in (
        ("amd64", ("c5", "c6i", "c6a", "c7i", "c7a", "m5", "m6i", "m6a", "m7i", "m7a", "r6i", "r7i", "r7a")),
        ("arm64", ("c7g", "m7g", "r7g", "c8g", "m8g")),
    )
    for name in names
)

FAMILIES: dict[str, Family] = {f.name: f for f in _GPU_FAMILIES + _CPU_FAMILIES}
GPU_FAMILIES = tuple(sorted(f.name for f in _GPU_FAMILIES))
CPU_FAMILIES = tuple(sorted(f.name for f in _CPU_FAMILIES))


def gpu_counts(families: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """Distinct GPUs-per-instance values across the given families, ascending."""
    return tuple(sorted({n for name in families for n in FAMILIES[name].gpu_counts}))


def max_vcpus_for_gpus(families: tuple[str, ...] | list[str], gpus: int) -> int:
    """The most vCPUs that `gpus` physical GPUs of these families can bring along."""
    return gpus * max(FAMILIES[name].max_vcpus_per_gpu for name in families)


def architectures(families: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(sorted({FAMILIES[name].arch for name in families}))


# vCPUs of a size name within a CPU family: large=2, xlarge=4, Nxlarge=4N,
# metal-Nxl=4N. Plain `metal` differs per family and is not accepted.
_SIZE = re.compile(r"^(?:(?P<large>large)|(?P<n>[0-9]*)xlarge|metal-(?P<metal>[0-9]+)xl)$")


def split_instance_type(name: str) -> tuple[str, str] | None:
    """`m7i.xlarge` -> ("m7i", "xlarge"); None when not of that shape."""
    family, dot, size = name.partition(".")
    return (family, size) if dot and family and size else None


def cpu_instance_vcpus(name: str) -> int | None:
    """vCPUs of a CPU-family instance type such as `m7i.2xlarge`; None when unknown."""
    parts = split_instance_type(name)
    if parts is None or parts[0] not in CPU_FAMILIES:
        return None
    match = _SIZE.match(parts[1])
    if match is None:
        return None
    if match["large"]:
        return 2
    return 4 * int(match["n"] or match["metal"] or 1)
