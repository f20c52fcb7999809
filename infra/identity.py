"""EKS Pod Identity: an IAM role that one Kubernetes service account assumes.

The trust policy names only the Pod Identity service; which pods get the role
is decided by the association (cluster, namespace, service account), so the
role cannot be assumed from anywhere else.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

POD_IDENTITY_PRINCIPAL = "pods.eks.amazonaws.com"


def pod_identity_trust_policy() -> str:
    statement = {
        "Effect": "Allow",
        "Principal": {"Service": POD_IDENTITY_PRINCIPAL},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def pod_identity_role(
    name: str,
    *,
    role_name: str,
    cluster_name: str,
    namespace: str,
    service_account: str,
    opts: pulumi.ResourceOptions,
    association_aliases: list[pulumi.Alias] | None = None,
) -> tuple[aws.iam.Role, aws.eks.PodIdentityAssociation]:
    """`<name>-role` and `<name>-pod-identity`, children of whatever `opts` names as parent."""
    role = aws.iam.Role(f"{name}-role", name=role_name, assume_role_policy=pod_identity_trust_policy(), opts=opts)
    if association_aliases:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(aliases=association_aliases))
    association = aws.eks.PodIdentityAssociation(
        f"{name}-pod-identity",
        cluster_name=cluster_name,
        namespace=namespace,
        service_account=service_account,
        role_arn=role.arn,
        opts=opts,
    )
    return role, association
