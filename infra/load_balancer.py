"""AWS Load Balancer Controller: turns the stack's Ingresses into ALBs (issue 14).

The controller (chart `aws-load-balancer-controller` 3.5.0, controller v3.5.0) runs two
replicas on the system nodes in its own namespace, with a Pod Identity role whose inline
policy is upstream's reference policy, unchanged (`domain/data/`, see its SOURCES.md).
The program creates the IngressClass and IngressClassParams itself (named
`contract.INGRESS_CLASS`), so the chart creates neither.

Ordering: the release depends on its role policy, the Pod Identity association, the
namespace and `args.depends_on` (system nodes, the Pod Identity agent, CoreDNS, the VPC's
egress path, the monitoring release whose ServiceMonitor CRD the chart's ServiceMonitor
needs). Ingresses depend on `release`, so `pulumi destroy` deletes them while the
controller can still delete their ALBs, target groups and security groups: the
controller's `ingress.k8s.aws/resources` finalizer waits for that.

Webhook TLS (chart `templates/_helpers.tpl`, `aws-load-balancer-controller.webhookCerts`):
without cert-manager the chart makes a CA and a serving certificate with `genCA` /
`genSignedCert` each time it is rendered. `helm.v3.Release` diffs its inputs, not the
rendered manifest, so an unchanged stack never re-renders; but every upgrade (a values
change, a chart bump) would replace the Secret and the webhooks' caBundle at once, while
the running pods still serve the old certificate until kubelet refreshes the mounted
Secret: for that minute the API server rejects every Ingress, TargetGroupBinding and
IngressClassParams write (those webhooks `failurePolicy: Fail`). `keepTLSSecret: true`
makes the chart `lookup` the existing Secret and reuse it on upgrade (the provider runs
helm's install/upgrade against the cluster, where `lookup` works; pulumi-kubernetes
v4.32.0 `provider/pkg/provider/helm_release.go` `helmCreate`/`helmUpdate`). Offline,
`helm template`'s `lookup` finds nothing and the certificates are random on each render:
`tools/plan/render.py` replaces them with a fixed placeholder so that `rendered/` and the
tests' render comparisons are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from domain import contract, naming, pods, versions
from infra.helm import pinned_release
from infra.identity import pod_identity_role

NAMESPACE = "aws-load-balancer-controller"
# Helm release name; the chart names its Deployment, ServiceAccount, Service and
# ServiceMonitor after it (`aws-load-balancer-controller.fullname`: a release name that
# contains the chart name is used as is).
RELEASE_NAME = "aws-load-balancer-controller"
SERVICE_ACCOUNT = "aws-load-balancer-controller"  # the Pod Identity association names it
REPLICAS = 2
# Upstream's reference IAM policy at the controller's tag (docs/install/iam_policy.json),
# byte for byte; domain/data/SOURCES.md records its source and sha256.
IAM_POLICY_FILE = "aws-load-balancer-controller-v3.5.0-iam-policy.json"
ROLE_SUFFIX = "-aws-lb-controller"


def iam_policy_document() -> str:
    """The controller's inline policy: upstream's document as it is stored (package data of `domain`)."""
    return (resources.files("domain") / "data" / IAM_POLICY_FILE).read_text(encoding="utf-8")


def role_name(cluster_name: str) -> str:
    return naming.bounded(cluster_name, ROLE_SUFFIX, naming.IAM_ROLE)


@dataclass(frozen=True)
class LoadBalancerControllerArgs:
    cluster_name: str
    region: str
    vpc_id: pulumi.Input[str]
    # The system node group, the Pod Identity agent, CoreDNS, the network's egress and the
    # monitoring release (the ServiceMonitor CRD).
    depends_on: list[pulumi.Resource]


def helm_values(cluster_name: str, region: str, vpc_id: pulumi.Input[str]) -> dict:
    """Values of the 3.5.0 chart (its values.yaml and templates/deployment.yaml, webhook.yaml, pdb.yaml)."""
    repository, tag = versions.IMAGES["aws-load-balancer-controller"].rsplit(":", 1)
    return {
        "clusterName": cluster_name,
        # Region and VPC given, so the controller never asks IMDS (Karpenter's nodes allow
        # one hop only; the system nodes two, but nothing should depend on that).
        "region": region,
        "vpcId": vpc_id,
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "serviceAccount": {"name": SERVICE_ACCOUNT},
        # One replica leads, the other serves webhooks too: the API server calls whichever
        # is ready, so a drain of one system node never blocks Ingress or pod admission.
        "replicaCount": REPLICAS,
        "podDisruptionBudget": {"maxUnavailable": 1},  # rendered only with replicaCount > 1
        "nodeSelector": {contract.OS_LABEL: "linux", **contract.SYSTEM_LABELS},
        "tolerations": contract.system_tolerations(),
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        # Pod Security `restricted`: the chart already runs as non-root, read-only and without
        # privilege escalation; these two close the gap (capabilities, seccomp).
        "securityContext": {"capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        # The program creates the IngressClass and its IngressClassParams (same name); the
        # controller serves Ingresses of that class only (`--ingress-class`).
        "createIngressClassResource": False,
        "ingressClass": contract.INGRESS_CLASS,
        # Targets are pod IPs (VPC CNI): traffic skips kube-proxy and a node hop, and the pod
        # readiness gate (target health) works only with ip targets.
        "defaultTargetType": "ip",
        # Off: the webhook would set `loadBalancerClass: service.k8s.aws/nlb` on every new
        # Service of type LoadBalancer in the cluster (webhooks/core/service_mutator.go), and
        # it matches every Service CREATE with `failurePolicy: Fail`, so while the controller
        # is down no Service at all could be created. We expose through Ingresses only.
        "enableServiceMutatorWebhook": False,
        # WAF Classic (waf-regional) reached its end of life on 2025-09-30; WAFv2 and Shield stay.
        "enableWaf": False,
        "keepTLSSecret": True,  # reuse the webhook certificate on upgrade (see the module docstring)
        "serviceMonitor": {"enabled": True},
    }


class LoadBalancerController(pulumi.ComponentResource):
    def __init__(self, name: str, args: LoadBalancerControllerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:load_balancer:LoadBalancerController", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # The chart's pods meet `restricted` with the security context above (tests render them).
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-ns", metadata={"name": NAMESPACE, "labels": pods.pod_security_labels("restricted")}, opts=child
        )
        self.role, self.pod_identity = pod_identity_role(
            f"{name}-controller",
            role_name=role_name(args.cluster_name),
            cluster_name=args.cluster_name,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            opts=child,
        )
        self.policy = aws.iam.RolePolicy(
            f"{name}-controller-policy", role=self.role.name, policy=iam_policy_document(), opts=child
        )
        self.release = pinned_release(
            f"{name}-release",
            versions.AWS_LOAD_BALANCER_CONTROLLER,
            name=RELEASE_NAME,
            namespace=NAMESPACE,
            values=helm_values(args.cluster_name, args.region, args.vpc_id),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.namespace, self.policy, self.pod_identity, *args.depends_on]
            ),
        )
        self.namespace_name = self.namespace.metadata.name
        self.register_outputs({"namespace": self.namespace_name, "role": self.role.arn, "release": self.release.name})
