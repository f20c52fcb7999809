"""Node launch settings: EC2NodeClasses and launch templates (IMDSv2, encrypted volumes, pinned AMIs)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pulumi_policy import ResourceValidationArgs

from domain import versions
from policies.rules.common import ADVISORY, NODECLASS, Config, dig, resource_policy, schema

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
PINNED_ALIAS = re.compile(r"^[a-z0-9]+@(v[0-9]{8}|[0-9]+\.[0-9]+\.[0-9]+)$")


def _label(args: ResourceValidationArgs) -> str:
    if args.resource_type == NODECLASS:
        return f"EC2NodeClass {dig(args.props, 'metadata', 'name') or args.name}"
    return f"launch template {args.name}"


def _imdsv2(args: ResourceValidationArgs, config: Config) -> Iterable[str]:
    if args.resource_type == NODECLASS:
        options = dig(args.props, "spec", "metadataOptions") or {}
        tokens, hops = options.get("httpTokens"), options.get("httpPutResponseHopLimit")
        limit = config["maxHopLimitNodeClass"]
    else:
        options = args.props.get("metadataOptions") or {}
        tokens, hops = options.get("httpTokens"), options.get("httpPutResponseHopLimit")
        limit = config["maxHopLimitLaunchTemplate"]
    if tokens != "required":
        yield f"{_label(args)} does not require IMDSv2 (httpTokens is {tokens!r}, expected 'required')"
    if hops is None or int(hops) > limit:
        yield (
            f"{_label(args)} has IMDS hop limit {hops!r}; at most {limit} keeps pods from reaching the node's"
            " credentials (pods use Pod Identity)"
        )


def _encrypted(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    path = ("spec", "blockDeviceMappings") if args.resource_type == NODECLASS else ("blockDeviceMappings",)
    mappings = dig(args.props, *path) or []
    if not mappings:
        yield f"{_label(args)} sets no block device mappings: the AMI's default root volume may be unencrypted"
    for m in mappings:
        ebs = m.get("ebs") or {}
        if str(ebs.get("encrypted")).lower() != "true":
            yield f"{_label(args)} volume {m.get('deviceName')} is not encrypted"


def _ami_pinned(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    for term in dig(args.props, "spec", "amiSelectorTerms") or []:
        if "id" in term:
            continue
        alias = term.get("alias")
        if alias is None:
            yield f"{_label(args)} selects AMIs by {sorted(term)}: a new matching image changes nodes without review"
        elif not PINNED_ALIAS.match(alias):
            yield f"{_label(args)} uses AMI alias {alias!r}; pin a release such as al2023@{versions.EKS_AMI_RELEASE}"


HOPS = schema(
    maxHopLimitNodeClass={
        "type": "integer",
        "default": 1,
        "description": "Highest IMDS hop limit for Karpenter nodes (1: pods cannot reach IMDS).",
    },
    maxHopLimitLaunchTemplate={
        "type": "integer",
        "default": 2,
        "description": "Highest IMDS hop limit for managed node group launch templates (system nodes).",
    },
)

POLICIES = [
    resource_policy(
        "node-imdsv2-required",
        "Nodes require IMDSv2 with a hop limit suited to pods that use Pod Identity.",
        "Set metadataOptions.httpTokens: required and a hop limit of 1 (Karpenter) or 2 (system nodes).",
        [NODECLASS, LAUNCH_TEMPLATE],
        _imdsv2,
        config=HOPS,
    ),
    resource_policy(
        "node-volumes-encrypted",
        "Node root and data volumes are encrypted.",
        "Set ebs.encrypted: true on every block device mapping.",
        [NODECLASS, LAUNCH_TEMPLATE],
        _encrypted,
    ),
    resource_policy(
        "nodeclass-ami-pinned",
        "EC2NodeClasses pin an AMI release (alias@version or id), so nodes only change on review.",
        "Set nodePools.<pool>.amiAlias to a pinned release; never @latest.",
        [NODECLASS],
        _ami_pinned,
        enforcement=ADVISORY,
    ),
]
