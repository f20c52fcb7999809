"""AWS resources: encrypted private S3, encrypted SQS with a DLQ, no open ingress,
no wildcard IAM, required tags."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import PolicyResource, ResourceValidationArgs

from policies.rules.common import ADVISORY, Config, as_list, json_document, resource_policy, schema, stack_policy

BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
BUCKET_SSE = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
BUCKET_PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
PAB_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
QUEUE = "aws:sqs/queue:Queue"
SG = "aws:ec2/securityGroup:SecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
IAM_POLICY_DOCS = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/policy:Policy": "policy",
    "aws:iam/userPolicy:UserPolicy": "policy",
    "aws:iam/groupPolicy:GroupPolicy": "policy",
}
OPEN = ("0.0.0.0/0", "::/0")

# Taggable resources this program (and its planned workloads) create. Resources
# whose props carry `tags` count too.
TAGGABLE = {
    "aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/internetGateway:InternetGateway",
    "aws:ec2/natGateway:NatGateway", "aws:ec2/eip:Eip", "aws:ec2/routeTable:RouteTable", SG,
    "aws:ec2/launchTemplate:LaunchTemplate", "aws:kms/key:Key", "aws:cloudwatch/logGroup:LogGroup",
    "aws:cloudwatch/eventRule:EventRule", QUEUE, "aws:iam/role:Role", "aws:iam/policy:Policy",
    "aws:eks/cluster:Cluster", "aws:eks/nodeGroup:NodeGroup", "aws:eks/addon:Addon",
    "aws:eks/accessEntry:AccessEntry", "aws:eks/podIdentityAssociation:PodIdentityAssociation",
    *BUCKETS, "eks:index:Cluster",
}  # fmt: skip


def _depends_on(resource: PolicyResource, target: PolicyResource) -> bool:
    deps = list(resource.dependencies) + [d for ds in resource.property_dependencies.values() for d in ds]
    return any(d.urn == target.urn for d in deps)


def _buckets(resources: list[PolicyResource], _: Config) -> Iterable[tuple[str, str | None]]:
    for bucket in (r for r in resources if r.resource_type in BUCKETS):
        users = [r for r in resources if _depends_on(r, bucket)]
        if not any(r.resource_type in BUCKET_SSE for r in users):
            yield f"S3 bucket {bucket.name} has no server-side encryption configuration", bucket.urn
        blocks = [r for r in users if r.resource_type == BUCKET_PAB]
        if not any(all(b.props.get(flag) is True for flag in PAB_FLAGS) for b in blocks):
            yield f"S3 bucket {bucket.name} does not block public access (all four {list(PAB_FLAGS)})", bucket.urn


def _queues(resources: list[PolicyResource], config: Config) -> Iterable[tuple[str, str | None]]:
    queues = [r for r in resources if r.resource_type == QUEUE]
    for q in queues:
        name = q.props.get("name") or q.name
        if not (q.props.get("sqsManagedSseEnabled") or q.props.get("kmsMasterKeyId")):
            yield f"SQS queue {name} is not encrypted (sqsManagedSseEnabled or kmsMasterKeyId)", q.urn
        is_dlq = any(_depends_on(other, q) and other.props.get("redrivePolicy") for other in queues)
        exempt = any(fnmatch.fnmatch(str(name), pattern) for pattern in config["queuesWithoutDlq"])
        if not (q.props.get("redrivePolicy") or is_dlq or exempt):
            yield f"SQS queue {name} has no dead-letter queue (redrivePolicy): a poison message retries forever", q.urn


def _ingress_rules(args: ResourceValidationArgs) -> list[Mapping[str, Any]]:
    p = args.props
    if args.resource_type == SG:
        return list(p.get("ingress") or [])
    if args.resource_type == SG_RULE:
        return [p] if p.get("type") == "ingress" else []
    return [
        {**p, "cidrBlocks": [p.get("cidrIpv4")] if p.get("cidrIpv4") else [], "ipv6CidrBlocks": [p.get("cidrIpv6")]}
    ]


def _open_ingress(args: ResourceValidationArgs, config: Config) -> Iterable[str]:
    for rule in _ingress_rules(args):
        cidrs = [*as_list(rule.get("cidrBlocks")), *as_list(rule.get("ipv6CidrBlocks"))]
        if not any(c in OPEN for c in cidrs):
            continue
        low, high = rule.get("fromPort"), rule.get("toPort")
        ports = set(config["allowedPublicPorts"])
        if low is None or high is None or int(low) != int(high) or int(low) not in ports:
            yield (
                f"security group {args.name} allows ingress from the internet on ports {low}-{high}"
                f" (protocol {rule.get('protocol') or rule.get('ipProtocol')}); allowed public ports: {sorted(ports)}"
            )


def _iam(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    document = json_document(args.props.get(IAM_POLICY_DOCS[args.resource_type]))
    for statement in as_list((document or {}).get("Statement")):
        if statement.get("Effect") != "Allow":
            continue
        actions, resources = as_list(statement.get("Action")), as_list(statement.get("Resource"))
        if "*" in resources and any(a == "*" or a.endswith(":*") for a in actions):
            wild = [a for a in actions if a == "*" or a.endswith(":*")]
            yield (
                f"IAM policy {args.name} statement {statement.get('Sid', '?')} allows {wild} on every resource;"
                " scope actions and resources"
            )


def _provider_tags(args: ResourceValidationArgs) -> dict[str, str]:
    if args.provider is None:
        return {}
    tags = json_document(args.provider.props.get("defaultTags"))
    return dict((tags or {}).get("tags") or {})


def _tags(args: ResourceValidationArgs, config: Config) -> Iterable[str]:
    if args.resource_type not in TAGGABLE and "tags" not in args.props:
        return
    tags = {**_provider_tags(args), **(args.props.get("tags") or {})}
    missing = [t for t in config["requiredTags"] if not tags.get(t)]
    if missing:
        yield f"{args.resource_type} {args.name} lacks required tags {missing} (resource tags and provider default_tags)"


POLICIES = [
    stack_policy(
        "s3-bucket-encrypted-private",
        "S3 buckets have server-side encryption and block all public access.",
        "Add a BucketServerSideEncryptionConfiguration and a BucketPublicAccessBlock with all four flags true.",
        _buckets,
    ),
    stack_policy(
        "sqs-encrypted-with-dlq",
        "SQS queues are encrypted and have a dead-letter queue (except short-lived event queues listed in config).",
        "Set sqs_managed_sse_enabled and a redrive_policy to a DLQ.",
        _queues,
        config=schema(
            queuesWithoutDlq={
                "type": "array",
                "items": {"type": "string"},
                # Karpenter's interruption queue: an event not handled within minutes is stale, never retried.
                "default": ["*-karpenter"],
                "description": "Queue name patterns that need no DLQ.",
            }
        ),
    ),
    resource_policy(
        "no-open-ingress",
        "No security group ingress from 0.0.0.0/0 or ::/0 except the load balancer ports config allows.",
        "Restrict the source CIDRs, or add the port to allowedPublicPorts for a public load balancer.",
        [SG, SG_RULE, SG_INGRESS],
        _open_ingress,
        config=schema(
            allowedPublicPorts={
                "type": "array",
                "items": {"type": "integer"},
                "default": [80, 443],
                "description": "Ports a load balancer may open to the internet.",
            }
        ),
    ),
    resource_policy(
        "iam-no-wildcard-admin",
        "IAM policies (the Karpenter controller's included) never allow `*` or `service:*` actions on every resource.",
        "Scope actions and resources; see domain/karpenter_iam.py controller_policy for the pattern.",
        list(IAM_POLICY_DOCS),
        _iam,
    ),
    resource_policy(
        "required-tags",
        "Taggable AWS resources carry the required tags (from provider default_tags or their own tags).",
        "Set gpu-inference:environment and gpu-inference:tags; the AWS provider's default_tags does the rest.",
        None,
        _tags,
        enforcement=ADVISORY,
        config=schema(
            requiredTags={
                "type": "array",
                "items": {"type": "string"},
                "default": ["project", "environment", "managed-by"],
                "description": "Tag keys every taggable resource must carry.",
            }
        ),
    ),
]
