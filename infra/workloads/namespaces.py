"""The namespaces workloads run in, with Pod Security admission at `restricted`.

Every pod this project renders into them (servers, batch Jobs, the load
generator) runs non-root with no privilege escalation and all capabilities
dropped; `restricted` makes the API server refuse anything that does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from domain import pods

POD_SECURITY = pods.pod_security_labels("restricted")


@dataclass(frozen=True)
class WorkloadNamespacesArgs:
    names: tuple[str, ...]


class WorkloadNamespaces(pulumi.ComponentResource):
    def __init__(self, name: str, args: WorkloadNamespacesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:namespaces:WorkloadNamespaces", name, None, opts)
        self.namespaces = {
            ns: k8s.core.v1.Namespace(
                f"{name}-{ns}",
                metadata={"name": ns, "labels": {"app.kubernetes.io/part-of": "gpu-inference", **POD_SECURITY}},
                opts=pulumi.ResourceOptions(parent=self),
            )
            for ns in sorted(set(args.names))
        }
        self.register_outputs({"namespaces": sorted(self.namespaces)})
