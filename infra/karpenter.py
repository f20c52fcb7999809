"""Karpenter v1: node role and access entry, interruption queue, controller IAM
(Pod Identity, scoped to this cluster), CRDs and the controller Helm release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from domain import contract, versions
from domain.karpenter_iam import controller_policy
from infra.cluster import ec2_assume_role_policy, node_role_policy_arns
from infra.helm import pinned_release
from infra.identity import pod_identity_role
from infra.spot import spot_service_linked_role

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "karpenter"

# EventBridge events Karpenter acts on: it drains the node before AWS takes it.
# Keys are short: rule names are `<cluster>-<key>` and EventBridge allows 64 characters.
INTERRUPTION_EVENTS: dict[str, dict] = {
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
    "scheduled-change": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
    # Karpenter 1.14 drains nodes on reserved capacity before EC2 reclaims them (its
    # reference CloudFormation template routes this event too: schemas/iam/).
    "reservation": {"source": ["aws.ec2"], "detail-type": ["EC2 Capacity Reservation Instance Interruption Warning"]},
}


@dataclass(frozen=True)
class KarpenterArgs:
    cluster_name: str
    region: str
    replicas: int  # controller pods (leader election keeps one active)
    log_level: str
    depends_on: list[pulumi.Resource]  # the system nodes the controller runs on, CoreDNS, the Pod Identity agent
    # What the controller needs to reach EC2 from the private subnets (NAT, routes).
    # Everything Karpenter-owned depends on the release, so these outlive every NodePool
    # and EC2NodeClass on `pulumi destroy`, while Karpenter drains and terminates nodes.
    egress: list[pulumi.Resource] = field(default_factory=list)
    # The ServiceMonitor CRD (kube-prometheus-stack): the chart renders its ServiceMonitor
    # only when the API exists at install time.
    monitoring_crds: list[pulumi.Resource] = field(default_factory=list)
    # Some pool may launch Spot: the account needs EC2's Spot service-linked role.
    spot: bool = False


class Karpenter(pulumi.ComponentResource):
    def __init__(self, name: str, args: KarpenterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:karpenter:Karpenter", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.node_role = aws.iam.Role(
            f"{name}-node-role",
            name=f"{args.cluster_name}-karpenter-node",
            assume_role_policy=ec2_assume_role_policy(),
            opts=child,
        )
        self.node_policies = [
            aws.iam.RolePolicyAttachment(f"{name}-node-{i}", role=self.node_role.name, policy_arn=arn, opts=child)
            for i, arn in enumerate(node_role_policy_arns())
        ]
        # API authentication mode: nodes join through an access entry, not aws-auth.
        self.node_access_entry = aws.eks.AccessEntry(
            f"{name}-node-access",
            cluster_name=args.cluster_name,
            principal_arn=self.node_role.arn,
            type="EC2_LINUX",
            opts=child,
        )
        self.queue = self._interruption_queue(name, args, child)
        self.spot_role = spot_service_linked_role(f"{name}-spot-role", args.cluster_name, self) if args.spot else None
        self.controller_role, self.pod_identity, self.controller_policy = self._controller_role(name, args, child)
        self.crds = pinned_release(
            f"{name}-crd",
            versions.KARPENTER_CRD,
            name="karpenter-crd",
            namespace=NAMESPACE,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.release = pinned_release(
            f"{name}-controller",
            versions.KARPENTER,
            name="karpenter",
            namespace=NAMESPACE,
            skip_crds=True,  # owned by the karpenter-crd release, which Helm also upgrades
            values=self.helm_values(args, self.queue.name),
            # Everything the controller needs to launch, drain and terminate nodes: the
            # NodePools and EC2NodeClasses depend on this release, so on destroy all of it
            # is deleted only after them (and their finalizers) are gone.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    self.crds,
                    self.pod_identity,
                    self.controller_policy,
                    self.node_access_entry,
                    *self.node_policies,
                    *args.depends_on,
                    *args.egress,
                    *args.monitoring_crds,
                    *([self.spot_role] if self.spot_role else []),
                ],
            ),
        )
        self.node_role_name = self.node_role.name
        self.register_outputs(
            {
                "nodeRoleName": self.node_role_name,
                "controllerRoleArn": self.controller_role.arn,
                "interruptionQueue": self.queue.name,
            }
        )

    @staticmethod
    def helm_values(args: KarpenterArgs, queue_name: pulumi.Input[str]) -> dict:
        return {
            "replicas": args.replicas,
            "logLevel": args.log_level,
            "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
            "settings": {
                "clusterName": args.cluster_name,
                "interruptionQueue": queue_name,
                # Karpenter v1.14.1 feature gates (website/content/en/docs/reference/settings.md;
                # chart values settings.featureGates):
                # - nodeOverlay (alpha, off by default): a shared GPU node's sliced capacity before launch.
                # - reservedCapacity (beta, on by default since v1.6): capacity type `reserved`, the
                #   EC2NodeClass's capacityReservationSelectorTerms; set so a chart default can't drop it.
                # - nodeRepair (alpha, off by default): replace a node whose conditions stay unhealthy,
                #   here the EKS node monitoring agent's AcceleratedHardwareReady (see infra/cluster.py).
                "featureGates": {"nodeOverlay": True, "reservedCapacity": True, "nodeRepair": True},
            },
            # Karpenter's own metrics (pool limits, NodeClaims, disruption) for the alerts
            # and dashboards; the release depends on the ServiceMonitor CRD (see above).
            "serviceMonitor": {"enabled": True},
            "controller": {
                "image": {"tag": versions.KARPENTER_VERSION},
                "resources": {
                    "requests": {"cpu": "500m", "memory": "512Mi"},
                    "limits": {"memory": "1Gi"},
                },
                "env": [{"name": "AWS_REGION", "value": args.region}],
            },
            # On the system managed nodes only; the chart's default affinity already keeps
            # it off nodes that Karpenter itself launched.
            "nodeSelector": {contract.OS_LABEL: "linux", **contract.SYSTEM_LABELS},
            "tolerations": contract.system_tolerations(),
        }

    def _interruption_queue(self, name: str, args: KarpenterArgs, opts: pulumi.ResourceOptions) -> aws.sqs.Queue:
        queue = aws.sqs.Queue(
            f"{name}-interruption",
            name=f"{args.cluster_name}-karpenter",
            message_retention_seconds=300,
            sqs_managed_sse_enabled=True,
            opts=opts,
        )
        aws.sqs.QueuePolicy(
            f"{name}-interruption-policy",
            queue_url=queue.url,
            policy=queue.arn.apply(_queue_policy),
            opts=opts,
        )
        for event, pattern in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-{event}",
                name=f"{args.cluster_name}-{event}",
                description=f"Karpenter interruption handling for {args.cluster_name}: {event}",
                event_pattern=json.dumps(pattern),
                opts=opts,
            )
            aws.cloudwatch.EventTarget(
                f"{name}-{event}-target", rule=rule.name, target_id="karpenter-interruption", arn=queue.arn, opts=opts
            )
        return queue

    def _controller_role(
        self, name: str, args: KarpenterArgs, opts: pulumi.ResourceOptions
    ) -> tuple[aws.iam.Role, aws.eks.PodIdentityAssociation, aws.iam.RolePolicy]:
        role, association = pod_identity_role(
            f"{name}-controller",
            role_name=f"{args.cluster_name}-karpenter-controller",
            cluster_name=args.cluster_name,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            opts=opts,
            # Named `<name>-pod-identity` before the shared identity helper existed.
            association_aliases=[pulumi.Alias(name=f"{name}-pod-identity")],
        )
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self))
        policy = pulumi.Output.all(identity.account_id, self.queue.arn, self.node_role.arn).apply(
            lambda v: json.dumps(controller_policy(args.cluster_name, args.region, v[0], v[1], v[2]))
        )
        inline = aws.iam.RolePolicy(f"{name}-controller-policy", role=role.name, policy=policy, opts=opts)
        return role, association, inline


def _queue_policy(queue_arn: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "EventBridgeWrite",
                    "Effect": "Allow",
                    "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                },
                {
                    "Sid": "DenyHTTP",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "sqs:*",
                    "Resource": queue_arn,
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
            ],
        }
    )
