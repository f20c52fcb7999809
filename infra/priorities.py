"""PriorityClasses of the workloads: live inference outranks batch jobs, which outrank warm headroom.

The levels and their values are `domain.priorities`; the headroom's own class
(`gpu-headroom`, never preempting) is created with the placeholders in
`infra/warmup.py`. Only the classes some workload names are created: a pod
naming a class that does not exist is rejected by the Priority admission plugin.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from domain import pods
from domain.priorities import PriorityClass


@dataclass(frozen=True)
class PriorityClassesArgs:
    classes: tuple[PriorityClass, ...]  # the classes some inference service or batch job names


class PriorityClasses(pulumi.ComponentResource):
    def __init__(self, name: str, args: PriorityClassesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:priorities:PriorityClasses", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.classes = {
            pc.name: k8s.scheduling.v1.PriorityClass(
                f"{name}-{pc.name}",
                metadata={"name": pc.name, "labels": {"app.kubernetes.io/part-of": pods.PART_OF}},
                value=pc.value,
                global_default=False,
                preemption_policy=pc.preemption_policy,
                description=pc.description,
                opts=child,
            )
            for pc in sorted(args.classes, key=lambda c: -c.value)
        }
        self.register_outputs({"priorityClasses": sorted(self.classes)})
