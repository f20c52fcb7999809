"""The namespaces workloads run in, with Pod Security admission at `restricted`.

Every pod this project renders into them (servers, batch Jobs, the load
generator) runs non-root with no privilege escalation and all capabilities
dropped; `restricted` makes the API server refuse anything that does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from domain import contract, pods

POD_SECURITY = pods.pod_security_labels("restricted")


@dataclass(frozen=True)
class WorkloadNamespacesArgs:
    names: tuple[str, ...]
    # Namespaces whose new pods get the load balancer controller's target-health readiness gate
    # (its pod webhook, selected by this label): only where the load balancer targets pods.
    readiness_gate: tuple[str, ...] = ()


class WorkloadNamespaces(pulumi.ComponentResource):
    def __init__(self, name: str, args: WorkloadNamespacesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:namespaces:WorkloadNamespaces", name, None, opts)
        self.namespaces = {
            ns: k8s.core.v1.Namespace(
                f"{name}-{ns}",
                metadata={
                    "name": ns,
                    "labels": {
                        "app.kubernetes.io/part-of": "gpu-inference",
                        **POD_SECURITY,
                        **({contract.ALB_READINESS_GATE_LABEL: "enabled"} if ns in args.readiness_gate else {}),
                    },
                },
                opts=pulumi.ResourceOptions(parent=self),
            )
            for ns in sorted(set(args.names))
        }
        self.register_outputs({"namespaces": sorted(self.namespaces)})
