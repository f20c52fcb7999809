"""Patterns and reserved names that config values are checked against.

Plain data with no pydantic in sight, so that scripts (the image snapshot tool)
check their own arguments with the very patterns the stack config uses.
"""

from __future__ import annotations

PROJECT = "gpu-inference"

# Karpenter's own patterns (NodePool CRD v1), so a bad value fails here, not at `up`.
DURATION_OR_NEVER = r"^(([0-9]+(s|m|h))+|Never)$"
BUDGET_NODES = r"^((100|[0-9]{1,2})%|[0-9]+)$"
BUDGET_DURATION = r"^((([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?)$"
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
AMI_ALIAS = r"^(al2023|bottlerocket)@(v[0-9]{8}|[0-9]+\.[0-9]+\.[0-9]+)$"
IAM_ROLE_ARN = r"^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[\w+=,.@/-]+$"
REGION = r"^[a-z]{2}-[a-z]+-[0-9]$"
# The name of a Pulumi config key (`pulumi config set --secret NAME`) that a setting refers to.
CONFIG_KEY_NAME = r"^[A-Za-z][A-Za-z0-9_-]*$"
SNAPSHOT_ID = r"^snap-[0-9a-f]{8,17}$"
CAPACITY_RESERVATION_ID = r"^cr-[0-9a-z]+$"  # the EC2NodeClass CRD's own pattern (Karpenter v1.14.1)
SECURITY_GROUP_ID = r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$"
ZONE_ID = r"^[a-z]{2,4}[0-9]-az[0-9]+$"  # use1-az1: the same physical zone in every account
PROM_DURATION = r"^[0-9]+(ms|s|m|h|d|w|y)$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$"

# Longest key of nodePools / inference / batchJobs: each becomes part of
# Kubernetes and AWS names that carry prefixes and suffixes of their own.
NAME_MAX_LENGTH = 40

# Tags AWS owns, or that Karpenter sets itself and its EC2NodeClass CRD rejects.
RESERVED_TAG_PREFIXES = (
    "aws:",
    "eks:eks-cluster-name",
    "kubernetes.io/cluster",
    "karpenter.sh/nodepool",
    "karpenter.sh/nodeclaim",
    "karpenter.k8s.aws/ec2nodeclass",
)

# The load generator's Deployment, next to the InferenceServices in their namespace.
LOAD_GENERATOR_NAME = "loadgen"
