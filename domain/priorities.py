"""Who gets a GPU first: the PriorityClasses of live inference, batch jobs and warm headroom.

The scheduler preempts lower-priority pods for a pending pod of higher priority
(kubernetes.io/docs/concepts/scheduling-eviction/pod-priority-preemption/), and
Karpenter provisions for pods in priority order. Three levels on the GPU pools:

- `service` (live inference, 1000): preempts batch jobs and headroom.
- `batch` (queue-driven Jobs, 100): preempts headroom, which exists to be
  preempted; it never preempts a service. A preempted Job pod fails; its SQS
  messages come back after the visibility timeout and a new Job picks them up.
- headroom (placeholders, -10, `preemptionPolicy: Never`): below every pod
  without a class (0), never evicts anything to get a GPU.

`inference.<svc>.priority` and `batchJobs.<job>.priority` name a level
(`service` or `batch`): a batch job that must not wait behind others can run at
`service`, a best-effort service at `batch`. Named levels rather than free class
names, so every class a pod names is one this program creates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PriorityLevel = Literal["service", "batch"]


@dataclass(frozen=True)
class PriorityClass:
    name: str
    value: int
    preemption_policy: Literal["PreemptLowerPriority", "Never"]
    description: str


SERVICE = PriorityClass(
    "gpu-inference-service",
    1000,
    "PreemptLowerPriority",
    "Live inference: preempts batch jobs and warm headroom for a GPU.",
)
BATCH = PriorityClass(
    "gpu-inference-batch",
    100,
    "PreemptLowerPriority",
    "Batch jobs: preempt warm headroom, are preempted by live inference.",
)
HEADROOM = PriorityClass(
    "gpu-headroom",
    -10,
    "Never",
    "Warm GPU headroom placeholders: preempted by any real pod.",
)
LEVELS: dict[str, PriorityClass] = {"service": SERVICE, "batch": BATCH}


def class_for(level: PriorityLevel) -> PriorityClass:
    return LEVELS[level]
