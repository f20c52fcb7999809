from __future__ import annotations

import json

import pytest
from pulumi_policy import PolicyProviderResource

from tests.policy_rules import fixtures as fx
from tests.policy_rules.helpers import resource, resource_violations, stack_violations

BUCKET = "aws:s3/bucket:Bucket"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
QUEUE = "aws:sqs/queue:Queue"
SG = "aws:ec2/securityGroup:SecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ALL_BLOCKED = {
    "blockPublicAcls": True,
    "blockPublicPolicy": True,
    "ignorePublicAcls": True,
    "restrictPublicBuckets": True,
}


def bucket_stack(sse: bool = True, block: dict | None = None) -> list:
    bucket = resource(BUCKET, {"bucket": "results"}, "results")
    stack = [bucket]
    if sse:
        stack.append(
            resource(
                SSE, {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}]}, "sse", [bucket]
            )
        )
    stack.append(resource(PAB, block if block is not None else ALL_BLOCKED, "pab", [bucket]))
    return stack


def test_encrypted_private_bucket_passes() -> None:
    assert stack_violations("s3-bucket-encrypted-private", bucket_stack()) == []


def test_bucket_without_encryption() -> None:
    [(message, urn)] = stack_violations("s3-bucket-encrypted-private", bucket_stack(sse=False))
    assert message == "S3 bucket results has no server-side encryption configuration" and urn.endswith("::results")


def test_bucket_with_a_partial_public_access_block() -> None:
    [(message, _)] = stack_violations(
        "s3-bucket-encrypted-private", bucket_stack(block={**ALL_BLOCKED, "blockPublicPolicy": False})
    )
    assert message.startswith("S3 bucket results does not block public access")


def queue_stack(**work_props) -> list:
    dlq = resource(QUEUE, {"name": "jobs-dlq", "sqsManagedSseEnabled": True}, "dlq")
    props = {"name": "jobs", "sqsManagedSseEnabled": True, "redrivePolicy": json.dumps({"maxReceiveCount": 5})}
    return [dlq, resource(QUEUE, {**props, **work_props}, "jobs", [dlq])]


def test_encrypted_queue_with_dlq_passes_and_the_dlq_needs_none() -> None:
    assert stack_violations("sqs-encrypted-with-dlq", queue_stack()) == []


def test_unencrypted_queue() -> None:
    [(message, _)] = stack_violations("sqs-encrypted-with-dlq", queue_stack(sqsManagedSseEnabled=False))
    assert message == "SQS queue jobs is not encrypted (sqsManagedSseEnabled or kmsMasterKeyId)"


def test_queue_without_dlq_and_the_exemption_config() -> None:
    lonely = [resource(QUEUE, {"name": "jobs", "sqsManagedSseEnabled": True}, "jobs")]
    [(message, _)] = stack_violations("sqs-encrypted-with-dlq", lonely)
    assert message.startswith("SQS queue jobs has no dead-letter queue")
    assert stack_violations("sqs-encrypted-with-dlq", lonely, {"queuesWithoutDlq": ["jobs"]}) == []
    karpenter = [resource(QUEUE, {"name": "gpuinf-dev-karpenter", "sqsManagedSseEnabled": True}, "k")]
    assert stack_violations("sqs-encrypted-with-dlq", karpenter) == []  # default exemption


@pytest.mark.parametrize(
    ("kind", "props"),
    [
        (SG, {"ingress": [{"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]}]}),
        (SG_RULE, {"type": "ingress", "protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["10.0.0.0/8"]}),
        (SG_INGRESS, {"ipProtocol": "tcp", "fromPort": 80, "toPort": 80, "cidrIpv4": "0.0.0.0/0"}),
        (SG_RULE, {"type": "egress", "protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"]}),
    ],
)
def test_allowed_ingress_passes(kind: str, props: dict) -> None:
    assert resource_violations("no-open-ingress", kind, props) == []


@pytest.mark.parametrize(
    ("kind", "props"),
    [
        (SG, {"ingress": [{"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]}]}),
        (SG_RULE, {"type": "ingress", "protocol": "-1", "fromPort": 0, "toPort": 65535, "ipv6CidrBlocks": ["::/0"]}),
        (SG_INGRESS, {"ipProtocol": "tcp", "fromPort": 8080, "toPort": 8080, "cidrIpv4": "0.0.0.0/0"}),
    ],
)
def test_open_ingress(kind: str, props: dict) -> None:
    [message] = resource_violations("no-open-ingress", kind, props, name="sg")
    assert message.startswith("security group sg allows ingress from the internet on ports")


def test_allowed_public_ports_come_from_config() -> None:
    props = {"ipProtocol": "tcp", "fromPort": 8443, "toPort": 8443, "cidrIpv4": "0.0.0.0/0"}
    assert resource_violations("no-open-ingress", SG_INGRESS, props)
    assert resource_violations("no-open-ingress", SG_INGRESS, props, {"allowedPublicPorts": [8443]}) == []


def test_scoped_iam_passes_and_wildcards_fail() -> None:
    scoped = fx.iam_policy([{"Sid": "Read", "Effect": "Allow", "Action": "ec2:DescribeImages", "Resource": "*"}])
    assert resource_violations("iam-no-wildcard-admin", ROLE_POLICY, {"policy": scoped}) == []
    for action in ["*", "ec2:*", ["s3:GetObject", "iam:*"]]:
        doc = fx.iam_policy([{"Sid": "Bad", "Effect": "Allow", "Action": action, "Resource": "*"}])
        [message] = resource_violations("iam-no-wildcard-admin", ROLE_POLICY, {"policy": doc}, name="karpenter")
        assert message.startswith("IAM policy karpenter statement Bad allows"), action
    deny = fx.iam_policy([{"Effect": "Deny", "Action": "*", "Resource": "*"}])
    assert resource_violations("iam-no-wildcard-admin", ROLE_POLICY, {"policy": deny}) == []


def test_the_real_karpenter_controller_policy_passes() -> None:
    from infra.karpenter import controller_policy

    doc = json.dumps(controller_policy("c", "us-west-2", "123456789012", "arn:q", "arn:r"))
    assert resource_violations("iam-no-wildcard-admin", ROLE_POLICY, {"policy": doc}) == []


def provider(tags: dict) -> PolicyProviderResource:
    return PolicyProviderResource("aws", {"defaultTags": json.dumps({"tags": tags})}, "urn:aws", "aws")


def test_tags_from_the_provider_count() -> None:
    tags = {"project": "gpu-inference", "environment": "dev", "managed-by": "pulumi"}
    assert (
        resource_violations("required-tags", "aws:ec2/vpc:Vpc", {"cidrBlock": "10.0.0.0/16"}, provider=provider(tags))
        == []
    )


def test_missing_required_tags_and_the_config() -> None:
    violations = resource_violations("required-tags", "aws:ec2/vpc:Vpc", {"tags": {"project": "x"}}, name="vpc")
    assert violations == [
        "aws:ec2/vpc:Vpc vpc lacks required tags ['environment', 'managed-by'] (resource tags and provider default_tags)"
    ]
    assert (
        resource_violations("required-tags", "aws:ec2/vpc:Vpc", {"tags": {"team": "ml"}}, {"requiredTags": ["team"]})
        == []
    )


def test_untaggable_resources_are_skipped() -> None:
    assert resource_violations("required-tags", "aws:ec2/routeTableAssociation:RouteTableAssociation", {}) == []
