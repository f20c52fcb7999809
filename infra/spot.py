"""The EC2 Spot service-linked role, which a fresh account lacks.

EC2 creates `AWSServiceRoleForEC2Spot` the first time someone requests Spot from
the console, but not for API callers: until it exists every Spot launch Karpenter
makes fails (`AuthFailure.ServiceLinkedRoleCreationNotPermitted`). The role is
one per account, shared by every stack and tool in it, so this stack creates it
only when it is missing, tags it as its own, keeps declaring it on later updates
(it finds its own tag), and never deletes it (`retain_on_delete`): another stack
may be launching Spot by then. A role someone else created is left alone.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

SERVICE = "spot.amazonaws.com"
ROLE_NAME = "AWSServiceRoleForEC2Spot"
PATH = f"/aws-service-role/{SERVICE}/"
OWNER_TAG = "gpu-inference.io/created-by-cluster"


def spot_service_linked_role(name: str, cluster_name: str, parent: pulumi.Resource) -> aws.iam.ServiceLinkedRole | None:
    """The role, when this stack owns it (absent before, or created by this cluster); else None."""
    invoke = pulumi.InvokeOptions(parent=parent)  # the parent's AWS provider and region
    existing = aws.iam.get_roles(path_prefix=PATH, opts=invoke).names
    if ROLE_NAME in existing:
        tags = aws.iam.get_role(name=ROLE_NAME, opts=invoke).tags or {}
        if tags.get(OWNER_TAG) != cluster_name:
            return None
    return aws.iam.ServiceLinkedRole(
        name,
        aws_service_name=SERVICE,
        description="EC2 Spot launches (Karpenter); created by gpu-inference, shared by the account",
        tags={OWNER_TAG: cluster_name},
        opts=pulumi.ResourceOptions(parent=parent, retain_on_delete=True),
    )
