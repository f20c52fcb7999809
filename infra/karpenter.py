"""Karpenter v1: node role and access entry, interruption queue, controller IAM
(Pod Identity, scoped to this cluster), CRDs and the controller Helm release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import contract, versions
from infra.cluster import ec2_assume_role_policy, node_role_policy_arns
from infra.helm import pinned_release
from infra.identity import pod_identity_role
from infra.settings import KarpenterSettings

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "karpenter"

# EventBridge events Karpenter acts on: it drains the node before AWS takes it.
# Keys are short: rule names are `<cluster>-<key>` and EventBridge allows 64 characters.
INTERRUPTION_EVENTS: dict[str, dict] = {
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
    "scheduled-change": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
}


@dataclass(frozen=True)
class KarpenterArgs:
    cluster_name: str
    settings: KarpenterSettings
    region: str
    depends_on: list[pulumi.Resource]  # the system nodes the controller runs on


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
        for i, arn in enumerate(node_role_policy_arns()):
            aws.iam.RolePolicyAttachment(f"{name}-node-{i}", role=self.node_role.name, policy_arn=arn, opts=child)
        # API authentication mode: nodes join through an access entry, not aws-auth.
        self.node_access_entry = aws.eks.AccessEntry(
            f"{name}-node-access",
            cluster_name=args.cluster_name,
            principal_arn=self.node_role.arn,
            type="EC2_LINUX",
            opts=child,
        )
        self.queue = self._interruption_queue(name, args, child)
        self.controller_role, self.pod_identity = self._controller_role(name, args, child)
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
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.crds, self.pod_identity, self.node_access_entry, *args.depends_on]
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
            "replicas": args.settings.replicas,
            "logLevel": args.settings.log_level,
            "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
            "settings": {
                "clusterName": args.cluster_name,
                "interruptionQueue": queue_name,
                # NodeOverlay tells Karpenter a shared GPU node's sliced capacity before launch.
                "featureGates": {"nodeOverlay": True},
            },
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
    ) -> tuple[aws.iam.Role, aws.eks.PodIdentityAssociation]:
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
        aws.iam.RolePolicy(f"{name}-controller-policy", role=role.name, policy=policy, opts=opts)
        return role, association


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


def controller_policy(cluster: str, region: str, account: str, queue_arn: str, node_role_arn: str) -> dict:
    """Karpenter controller permissions, scoped by this cluster's tags wherever EC2 allows.

    Modelled on the statement groups of Karpenter's reference CloudFormation
    policy: writes are limited to resources tagged for this cluster, reads that
    EC2 cannot scope (Describe*, pricing, SSM public parameters) stay broad.
    """
    arn = f"arn:aws:ec2:{region}"
    owned = {f"aws:RequestTag/kubernetes.io/cluster/{cluster}": "owned", "aws:RequestTag/eks:eks-cluster-name": cluster}
    tagged_owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster}": "owned"}
    # What a launch creates, and so what Karpenter may create and tag at launch.
    launched = [
        f"{arn}:*:{kind}/*"
        for kind in ("fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")
    ]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowScopedEC2InstanceAccessActions",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                "Resource": [
                    f"{arn}::image/*",
                    f"{arn}::snapshot/*",
                    f"{arn}:*:security-group/*",
                    f"{arn}:*:subnet/*",
                    f"{arn}:*:capacity-reservation/*",
                ],
            },
            {
                "Sid": "AllowScopedEC2LaunchTemplateAccessActions",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                "Resource": f"{arn}:*:launch-template/*",
                "Condition": {
                    "StringEquals": tagged_owned,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowScopedEC2InstanceActionsWithTags",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
                "Resource": launched,
                "Condition": {
                    "StringEquals": owned,
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowScopedResourceCreationTagging",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": launched,
                "Condition": {
                    "StringEquals": {
                        **owned,
                        "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
                    },
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowScopedResourceTagging",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": f"{arn}:*:instance/*",
                "Condition": {
                    "StringEquals": tagged_owned,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                    "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster},
                    "ForAllValues:StringEquals": {
                        "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                    },
                },
            },
            {
                "Sid": "AllowScopedDeletion",
                "Effect": "Allow",
                "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
                "Resource": [f"{arn}:*:instance/*", f"{arn}:*:launch-template/*"],
                "Condition": {
                    "StringEquals": tagged_owned,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowRegionalReadActions",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeCapacityReservations",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceTypeOfferings",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplates",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSpotPriceHistory",
                    "ec2:DescribeSubnets",
                ],
                # EC2 Describe* cannot be scoped to resources; the region is the narrowest scope.
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
            },
            {
                "Sid": "AllowSSMReadActions",
                "Effect": "Allow",
                "Action": "ssm:GetParameter",
                "Resource": f"arn:aws:ssm:{region}::parameter/aws/service/*",
            },
            {
                "Sid": "AllowPricingReadActions",
                "Effect": "Allow",
                "Action": "pricing:GetProducts",
                # The Pricing API has no resource-level permissions.
                "Resource": "*",
            },
            {
                "Sid": "AllowInterruptionQueueActions",
                "Effect": "Allow",
                "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
                "Resource": queue_arn,
            },
            {
                "Sid": "AllowPassingInstanceRole",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": node_role_arn,
                "Condition": {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}},
            },
            {
                "Sid": "AllowScopedInstanceProfileCreationActions",
                "Effect": "Allow",
                "Action": "iam:CreateInstanceProfile",
                "Resource": f"arn:aws:iam::{account}:instance-profile/*",
                "Condition": {
                    "StringEquals": {**owned, "aws:RequestTag/topology.kubernetes.io/region": region},
                    "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            },
            {
                "Sid": "AllowScopedInstanceProfileTagActions",
                "Effect": "Allow",
                "Action": "iam:TagInstanceProfile",
                "Resource": f"arn:aws:iam::{account}:instance-profile/*",
                "Condition": {
                    "StringEquals": {
                        **tagged_owned,
                        "aws:ResourceTag/topology.kubernetes.io/region": region,
                        **owned,
                        "aws:RequestTag/topology.kubernetes.io/region": region,
                    },
                    "StringLike": {
                        "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                        "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    },
                },
            },
            {
                "Sid": "AllowScopedInstanceProfileActions",
                "Effect": "Allow",
                "Action": [
                    "iam:AddRoleToInstanceProfile",
                    "iam:RemoveRoleFromInstanceProfile",
                    "iam:DeleteInstanceProfile",
                ],
                "Resource": f"arn:aws:iam::{account}:instance-profile/*",
                "Condition": {
                    "StringEquals": {**tagged_owned, "aws:ResourceTag/topology.kubernetes.io/region": region},
                    "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            },
            {
                "Sid": "AllowInstanceProfileReadActions",
                "Effect": "Allow",
                "Action": ["iam:GetInstanceProfile", "iam:ListInstanceProfiles"],
                "Resource": f"arn:aws:iam::{account}:instance-profile/*",
            },
            {
                "Sid": "AllowAPIServerEndpointDiscovery",
                "Effect": "Allow",
                "Action": "eks:DescribeCluster",
                "Resource": f"arn:aws:eks:{region}:{account}:cluster/{cluster}",
            },
        ],
    }
