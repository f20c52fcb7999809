"""KEDA: event-driven autoscaling (ScaledObject for services, ScaledJob for queue work).

The operator runs on the system nodes. Its AWS identity comes from EKS Pod
Identity on its own service account: TriggerAuthentications with the `aws`
pod-identity provider read SQS queue lengths as the operator. The role starts
with no permissions; each batch job grants it `sqs:GetQueueAttributes` on its
own queue only.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from domain import contract, pods, versions
from infra.helm import pinned_release
from infra.identity import pod_identity_role

NAMESPACE = "keda"
OPERATOR_SERVICE_ACCOUNT = "keda-operator"


@dataclass(frozen=True)
class KedaArgs:
    cluster_name: str
    depends_on: list[pulumi.Resource]  # the system nodes and the Pod Identity agent


def helm_values() -> dict:
    small = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    tag = versions.IMAGES["keda"].rsplit(":", 1)[1]
    return {
        # Explicit tags and IfNotPresent: the chart defaults to `Always` pulls of its appVersion.
        "image": {
            "keda": {"tag": tag},
            "metricsApiServer": {"tag": tag},
            "webhooks": {"tag": tag},
            "pullPolicy": "IfNotPresent",
        },
        "nodeSelector": {contract.OS_LABEL: "linux", **contract.SYSTEM_LABELS},
        "tolerations": contract.system_tolerations(),
        "serviceAccount": {"operator": {"create": True, "name": OPERATOR_SERVICE_ACCOUNT}},
        "resources": {"operator": small, "metricServer": small, "webhooks": small},
        # The operator's own metrics, for the scaling dashboards.
        "prometheus": {"operator": {"enabled": True, "serviceMonitor": {"enabled": True}}},
    }


class Keda(pulumi.ComponentResource):
    def __init__(self, name: str, args: KedaArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:keda:Keda", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # KEDA and its HTTP add-on run as non-root with the runtime's seccomp profile.
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-ns", metadata={"name": NAMESPACE, "labels": pods.pod_security_labels("restricted")}, opts=child
        )
        self.operator_role, self.pod_identity = pod_identity_role(
            f"{name}-operator",
            role_name=f"{args.cluster_name}-keda-operator",
            cluster_name=args.cluster_name,
            namespace=NAMESPACE,
            service_account=OPERATOR_SERVICE_ACCOUNT,
            opts=child,
        )
        self.release = pinned_release(
            f"{name}-release",
            versions.KEDA,
            name="keda",
            namespace=NAMESPACE,
            values=helm_values(),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.namespace, self.pod_identity, *args.depends_on]),
        )
        self.operator_role_name = self.operator_role.name
        self.register_outputs({"operatorRole": self.operator_role.arn})
