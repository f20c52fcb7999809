"""The Karpenter controller's IAM policy document (pure data, no Pulumi).

Reference: Karpenter's getting-started CloudFormation template at v1.14.1
(aws/karpenter-provider-aws, tag v1.14.1,
website/content/en/preview/getting-started/getting-started-with-karpenter/cloudformation.yaml),
vendored as schemas/iam/karpenter-v1.14.1-cloudformation.yaml. Upstream spreads
the statements over six managed policies; we keep one inline policy with the
same Sids. tests/test_karpenter_iam.py evaluates both documents on the same
requests: everything upstream allows we allow, and nothing upstream denies.
"""

from __future__ import annotations

# Tag keys Karpenter puts on what it launches and on the instance profiles it creates.
_NODEPOOL = "karpenter.sh/nodepool"
_NODECLASS = "karpenter.k8s.aws/ec2nodeclass"
_REGION_TAG = "topology.kubernetes.io/region"

# What one launch (RunInstances, CreateFleet, CreateLaunchTemplate) creates and so may tag.
_LAUNCHED = ("fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")
# What a launch only references: untagged, shared or AWS-owned, so not scoped by tags.
_REFERENCED = ("security-group", "subnet", "capacity-reservation", "placement-group")

# Read calls that EC2 cannot scope to resources; the region is the narrowest scope.
_EC2_READS = (
    "ec2:DescribeCapacityReservations",
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceStatus",  # interruption controller health checks (upstream #9064)
    "ec2:DescribeInstanceTypeOfferings",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribePlacementGroups",  # EC2NodeClass placement groups (upstream #9030)
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSpotPriceHistory",
    "ec2:DescribeSubnets",
)


def _allow(sid: str, actions: str | list[str], resources: str | list[str], condition: dict | None = None) -> dict:
    statement = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _ec2_statements(cluster: str, region: str) -> list[dict]:
    arn = f"arn:aws:ec2:{region}"
    owned = {f"aws:RequestTag/kubernetes.io/cluster/{cluster}": "owned", "aws:RequestTag/eks:eks-cluster-name": cluster}
    tagged_owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster}": "owned"}
    tagged_pool = {"aws:ResourceTag/" + _NODEPOOL: "*"}
    launched = [f"{arn}:*:{kind}/*" for kind in _LAUNCHED]
    return [
        _allow(
            "AllowScopedEC2InstanceAccessActions",
            ["ec2:RunInstances", "ec2:CreateFleet"],
            [f"{arn}::image/*", f"{arn}::snapshot/*", *(f"{arn}:*:{kind}/*" for kind in _REFERENCED)],
        ),
        _allow(
            "AllowScopedEC2LaunchTemplateAccessActions",
            ["ec2:RunInstances", "ec2:CreateFleet"],
            f"{arn}:*:launch-template/*",
            condition={"StringEquals": tagged_owned, "StringLike": tagged_pool},
        ),
        _allow(
            "AllowScopedEC2InstanceActionsWithTags",
            ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
            launched,
            condition={"StringEquals": owned, "StringLike": {"aws:RequestTag/" + _NODEPOOL: "*"}},
        ),
        _allow(
            "AllowScopedResourceCreationTagging",
            "ec2:CreateTags",
            launched,
            condition={
                "StringEquals": {**owned, "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]},
                "StringLike": {"aws:RequestTag/" + _NODEPOOL: "*"},
            },
        ),
        _allow(
            "AllowScopedResourceTagging",
            "ec2:CreateTags",
            f"{arn}:*:instance/*",
            condition={
                "StringEquals": tagged_owned,
                "StringLike": tagged_pool,
                "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster},
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                },
            },
        ),
        _allow(
            "AllowScopedDeletion",
            ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
            [f"{arn}:*:instance/*", f"{arn}:*:launch-template/*"],
            condition={"StringEquals": tagged_owned, "StringLike": tagged_pool},
        ),
    ]


def _instance_profile_statements(cluster: str, region: str, account: str, node_role_arn: str) -> list[dict]:
    profiles = f"arn:aws:iam::{account}:instance-profile/*"
    owned = {f"aws:RequestTag/kubernetes.io/cluster/{cluster}": "owned", "aws:RequestTag/eks:eks-cluster-name": cluster}
    tagged_owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster}": "owned"}
    return [
        _allow(
            "AllowPassingInstanceRole",
            "iam:PassRole",
            # Only our node role: upstream names its own node role the same way.
            node_role_arn,
            condition={"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}},
        ),
        _allow(
            "AllowScopedInstanceProfileCreationActions",
            "iam:CreateInstanceProfile",
            profiles,
            condition={
                "StringEquals": {**owned, "aws:RequestTag/" + _REGION_TAG: region},
                "StringLike": {"aws:RequestTag/" + _NODECLASS: "*"},
            },
        ),
        _allow(
            "AllowScopedInstanceProfileTagActions",
            "iam:TagInstanceProfile",
            profiles,
            condition={
                "StringEquals": {
                    **tagged_owned,
                    "aws:ResourceTag/" + _REGION_TAG: region,
                    **owned,
                    "aws:RequestTag/" + _REGION_TAG: region,
                },
                "StringLike": {"aws:ResourceTag/" + _NODECLASS: "*", "aws:RequestTag/" + _NODECLASS: "*"},
            },
        ),
        _allow(
            "AllowScopedInstanceProfileActions",
            ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"],
            profiles,
            condition={
                "StringEquals": {**tagged_owned, "aws:ResourceTag/" + _REGION_TAG: region},
                "StringLike": {"aws:ResourceTag/" + _NODECLASS: "*"},
            },
        ),
        # Listing takes a path prefix, not a profile: upstream grants it unscoped since
        # EC2NodeClass role mutability (upstream #8249) garbage-collects old profiles.
        _allow("AllowUnscopedInstanceProfileListAction", "iam:ListInstanceProfiles", "*"),
        _allow("AllowInstanceProfileReadActions", "iam:GetInstanceProfile", profiles),
    ]


def controller_policy(cluster: str, region: str, account: str, queue_arn: str, node_role_arn: str) -> dict:
    """Karpenter controller permissions, scoped by this cluster's tags wherever EC2 allows.

    Writes are limited to resources tagged for this cluster, the interruption
    queue to ours and PassRole to our node role; reads that AWS cannot scope
    (EC2 Describe*, pricing, listing instance profiles) stay broad, EC2 reads
    within the region.
    """
    cluster_arn = f"arn:aws:eks:{region}:{account}:cluster/{cluster}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            *_ec2_statements(cluster, region),
            _allow(
                "AllowRegionalReadActions",
                list(_EC2_READS),
                "*",
                condition={"StringEquals": {"aws:RequestedRegion": region}},
            ),
            _allow("AllowSSMReadActions", "ssm:GetParameter", f"arn:aws:ssm:{region}::parameter/aws/service/*"),
            # The Pricing API has no resource-level permissions and answers from us-east-1.
            _allow("AllowPricingReadActions", "pricing:GetProducts", "*"),
            _allow(
                "AllowInterruptionQueueActions",
                ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
                queue_arn,
            ),
            *_instance_profile_statements(cluster, region, account, node_role_arn),
            _allow("AllowAPIServerEndpointDiscovery", "eks:DescribeCluster", cluster_arn),
            # ARC zonal shift status of this cluster only (upstream #9096, #9123): the action
            # takes no resource ARN, the condition key names the cluster.
            _allow(
                "AllowZonalShiftStatusReadOnly",
                "arc-zonal-shift:GetManagedResource",
                "*",
                condition={"StringEquals": {"arc-zonal-shift:ResourceIdentifier": cluster_arn}},
            ),
        ],
    }
