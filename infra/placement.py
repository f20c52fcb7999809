"""Where a pod lands: the facts of its Karpenter pool that workloads read.

InferenceService, BatchJob and the GPU warm-up each render pods for one pool:
their node selector and tolerations come from the pool's contract (name and GPU
mode), and a shared pool's pods pack onto its smallest instances (GPUs per
instance). A plain frozen value, built from the settings by `infra.mapping`.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain import contract


@dataclass(frozen=True)
class PoolPlacement:
    name: str
    gpu: str  # one of contract.GPU_MODES
    gpu_counts: tuple[int, ...]  # GPUs one instance of the pool's families carries; () on a CPU pool

    @property
    def terms(self) -> contract.PoolContract:
        """The pool's labels and taints: what a pod selects and tolerates."""
        return contract.PoolContract(self.name, self.gpu)
