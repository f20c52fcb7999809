"""Our Karpenter controller policy against upstream's reference policy at v1.14.1.

The reference is Karpenter's getting-started CloudFormation template
(schemas/iam/karpenter-v1.14.1-cloudformation.yaml, see schemas/SOURCES.md).
Both documents are evaluated on the same concrete requests: those each
statement of either document is meant to allow, and variants of them with a
required tag missing or wrong, another region, account or resource name, or
every resource. Upstream allows => ours allows (coverage); upstream denies =>
ours denies (tightness).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import yaml

from domain.karpenter_iam import controller_policy

TEMPLATE = Path(__file__).resolve().parents[1] / "schemas" / "iam" / "karpenter-v1.14.1-cloudformation.yaml"
CLUSTER, REGION, ACCOUNT = "gpuinf-test", "us-west-2", "123456789012"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{CLUSTER}-karpenter"
NODE_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{CLUSTER}-karpenter-node"
OTHER_REGION, OTHER_ACCOUNT = "eu-central-1", "999999999999"

# Values for the template's parameters, pseudo parameters and attributes. Upstream's
# node role and queue stand for ours: PassRole and the queue actions must name the same.
CFN_VALUES = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
    "ClusterName": CLUSTER,
    "KarpenterNodeRole.Arn": NODE_ROLE_ARN,
    "KarpenterInterruptionQueue.Arn": QUEUE_ARN,
}

# Requests where we deliberately decide differently from upstream: (action, label) -> why.
# None today: every statement matches upstream's scope. Add an entry (with the reason)
# before making ours stricter or broader than upstream on purpose.
DELIBERATE_DIFFERENCES: dict[tuple[str, str], str] = {}


# --- CloudFormation: the intrinsic functions the template uses ----------------------


@dataclass(frozen=True)
class Intrinsic:
    function: str
    argument: object


class _CfnLoader(yaml.SafeLoader):
    pass


for _tag in ("Sub", "GetAtt", "Ref"):
    _CfnLoader.add_constructor(f"!{_tag}", lambda loader, node, tag=_tag: Intrinsic(tag, loader.construct_scalar(node)))


def resolve(value: object) -> object:
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if not isinstance(value, Intrinsic):
        return value
    if value.function == "Sub":
        # `${Name}` and `${Resource.Attr}`; an unknown name is a KeyError, never a silent gap.
        return re.sub(r"\$\{([^}!]+)\}", lambda m: CFN_VALUES[m.group(1)], value.argument)
    return CFN_VALUES[value.argument]  # GetAtt `Resource.Attr`, Ref `Parameter`


def upstream_policies() -> dict[str, dict]:
    template = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    return {
        name: json.loads(resolve(resource["Properties"]["PolicyDocument"]))
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::IAM::ManagedPolicy"
    }


UPSTREAM = [s for doc in upstream_policies().values() for s in doc["Statement"]]
OURS = controller_policy(CLUSTER, REGION, ACCOUNT, QUEUE_ARN, NODE_ROLE_ARN)["Statement"]


# --- a small IAM evaluator ------------------------------------------------------------


def as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]


def glob(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM wildcards: `*` any run of characters, `?` one character, nothing else special."""
    regex = ".*".join(".".join(re.escape(p) for p in part.split("?")) for part in pattern.split("*"))
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


_MATCH = {
    "StringEquals": lambda wanted, got: wanted == got,
    "StringLike": glob,
    "ArnLike": glob,
    "Bool": lambda wanted, got: str(wanted).lower() == got.lower(),
}


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    label: str = "as the statement requires"
    region: str = REGION
    request_tags: dict[str, str] = field(default_factory=dict)
    resource_tags: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # other condition keys (ec2:CreateAction, ...)

    def context(self) -> dict[str, list[str]]:
        found = {"aws:RequestedRegion": [self.region], **{k: [v] for k, v in self.keys.items()}}
        found |= {f"aws:RequestTag/{k}": [v] for k, v in self.request_tags.items()}
        found |= {f"aws:ResourceTag/{k}": [v] for k, v in self.resource_tags.items()}
        if self.request_tags:
            found["aws:TagKeys"] = list(self.request_tags)
        return found

    def __str__(self) -> str:
        return f"{self.action} on {self.resource} ({self.label})"


def condition_holds(operator: str, key: str, wanted: object, context: dict[str, list[str]]) -> bool:
    got = context.get(key)
    if operator == "ForAllValues:StringEquals":
        return all(v in as_list(wanted) for v in got or [])  # true when the request has no values
    base = operator.removesuffix("IfExists")
    if base not in _MATCH or ":" in operator:
        raise NotImplementedError(f"condition operator {operator} (key {key}) is not modelled")
    if got is None:
        return operator.endswith("IfExists")
    return any(_MATCH[base](w, g) for w in as_list(wanted) for g in got)


def statement_matches(statement: dict, request: Request) -> bool:
    if {"NotAction", "NotResource", "NotPrincipal"} & set(statement):
        raise NotImplementedError(f"{statement.get('Sid')}: Not* elements are not modelled")
    if not any(glob(a, request.action, ignore_case=True) for a in as_list(statement["Action"])):
        return False
    if not any(glob(r, request.resource) for r in as_list(statement["Resource"])):
        return False
    context = request.context()
    return all(
        condition_holds(op, key, wanted, context)
        for op, block in statement.get("Condition", {}).items()
        for key, wanted in block.items()
    )


def allowed(statements: list[dict], request: Request) -> bool:
    matching = [s["Effect"] for s in statements if statement_matches(s, request)]
    return "Allow" in matching and "Deny" not in matching


# --- requests derived from the statements --------------------------------------------


def concrete(pattern: str) -> str:
    """A resource ARN the pattern covers, in our account and region."""
    if pattern == "*":
        return "*"
    arn = pattern.split(":", 5)
    arn[3] = REGION if arn[3] == "*" else arn[3]
    arn[4] = ACCOUNT if arn[4] == "*" else arn[4]
    arn[5] = arn[5].replace("*", "sample-1")
    return ":".join(arn)


def satisfying(statement: dict, action: str, resource: str) -> Request:
    request_tags, resource_tags, keys, region = {}, {}, {}, REGION
    for operator, block in statement.get("Condition", {}).items():
        for key, wanted in block.items():
            if key == "aws:TagKeys":  # only the tag keys allowed, each once
                request_tags |= {k: request_tags.get(k, "sample") for k in as_list(wanted)}
                continue
            value = as_list(wanted)[0]
            value = value.replace("*", "sample") if operator == "StringLike" else value
            if key.startswith("aws:RequestTag/"):
                request_tags[key.removeprefix("aws:RequestTag/")] = value
            elif key.startswith("aws:ResourceTag/"):
                resource_tags[key.removeprefix("aws:ResourceTag/")] = value
            elif key == "aws:RequestedRegion":
                region = value
            else:
                keys[key] = value
    label = f"as {statement['Sid']} requires"
    return Request(action, concrete(resource), label, region, request_tags, resource_tags, keys)


def _swap(arn: str, index: int, value: str) -> str:
    parts = arn.split(":", 5)
    if arn != "*" and parts[index]:
        parts[index] = value
    return ":".join(parts)


def variants(base: Request, statement: dict) -> list[Request]:
    """The same request with one thing changed, each something a statement may scope on."""
    out = [replace(base, label="no tags at all", request_tags={}, resource_tags={})]
    out.append(
        replace(base, label="another region", region=OTHER_REGION, resource=_swap(base.resource, 3, OTHER_REGION))
    )
    if base.resource != "*":
        name = re.sub(r"[^/:]+$", "other", base.resource)
        out += [
            replace(base, label="another account", resource=_swap(base.resource, 4, OTHER_ACCOUNT)),
            replace(base, label="another resource name", resource=name),
            replace(base, label="every resource", resource="*"),
        ]
    out.append(replace(base, label="an extra tag key", request_tags={**base.request_tags, "extra": "x"}))
    conditions = statement.get("Condition", {}).values()
    for key in dict.fromkeys(k for block in conditions for k in block):
        if key.startswith(("aws:RequestTag/", "aws:ResourceTag/")):
            kind, tag = key.split("/", 1)
            tags = "request_tags" if kind == "aws:RequestTag" else "resource_tags"
            current = getattr(base, tags)
            out.append(replace(base, label=f"without {key}", **{tags: {k: v for k, v in current.items() if k != tag}}))
            out.append(replace(base, label=f"{key}=other", **{tags: {**current, tag: "other"}}))
        elif key == "aws:RequestedRegion":
            out.append(replace(base, label=f"{key}=other", region=OTHER_REGION))
        elif key != "aws:TagKeys":
            out.append(replace(base, label=f"without {key}", keys={k: v for k, v in base.keys.items() if k != key}))
            out.append(replace(base, label=f"{key}=other", keys={**base.keys, key: "other"}))
            # Each value the statement accepts (ec2:CreateAction, iam:PassedToService), one request each.
            listed = [w for block in conditions for w in as_list(block.get(key, []))]
            out += [replace(base, label=f"{key}={w}", keys={**base.keys, key: w}) for w in listed]
    return out


def requests_of(statement: dict) -> tuple[list[Request], list[Request]]:
    """(what the statement is meant to allow, variants of it)."""
    bases = [satisfying(statement, a, r) for a in as_list(statement["Action"]) for r in as_list(statement["Resource"])]
    return bases, [v for b in bases for v in variants(b, statement)]


CASES = {f"upstream:{s['Sid']}": s for s in UPSTREAM} | {f"ours:{s['Sid']}": s for s in OURS}


# --- tests ------------------------------------------------------------------------------


def test_the_template_resolves_to_the_six_controller_policies() -> None:
    policies = upstream_policies()
    assert sorted(policies) == [
        "EKSIntegrationPolicy",
        "IAMIntegrationPolicy",
        "InterruptionPolicy",
        "NodeLifecyclePolicy",
        "ResourceDiscoveryPolicy",
        "ZonalShiftPolicy",
    ]
    assert "${" not in json.dumps(policies), "an intrinsic was left unresolved"
    passrole = next(s for s in UPSTREAM if s["Sid"] == "AllowPassingInstanceRole")
    assert passrole["Resource"] == NODE_ROLE_ARN


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_statement_allows_what_it_is_meant_to(case: str) -> None:
    """Guards the evaluator and the request builder: otherwise the tests below prove nothing."""
    statement = CASES[case]
    bases, _ = requests_of(statement)
    assert [str(r) for r in bases if not statement_matches(statement, r)] == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_ours_allows_every_request_upstream_allows(case: str) -> None:
    bases, others = requests_of(CASES[case])
    missing = [
        str(r)
        for r in bases + others
        if allowed(UPSTREAM, r) and not allowed(OURS, r) and (r.action, r.label) not in DELIBERATE_DIFFERENCES
    ]
    assert missing == [], f"upstream v1.14.1 allows, ours denies: {missing}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_ours_denies_every_request_upstream_denies(case: str) -> None:
    bases, others = requests_of(CASES[case])
    extra = [
        str(r)
        for r in bases + others
        if allowed(OURS, r) and not allowed(UPSTREAM, r) and (r.action, r.label) not in DELIBERATE_DIFFERENCES
    ]
    assert extra == [], f"ours allows, upstream v1.14.1 denies: {extra}"


def test_the_named_gaps_of_issue_11_are_closed() -> None:
    placement = f"arn:aws:ec2:{REGION}:{ACCOUNT}:placement-group/gpu"
    for request in [
        Request("ec2:DescribeInstanceStatus", "*"),
        Request("ec2:DescribePlacementGroups", "*"),
        Request("ec2:RunInstances", placement),
        Request("ec2:CreateFleet", placement),
    ]:
        assert allowed(UPSTREAM, request) and allowed(OURS, request), str(request)


def test_the_evaluator_knows_the_operators_it_is_given() -> None:
    tagging = next(s for s in UPSTREAM if s["Sid"] == "AllowScopedResourceTagging")
    base = satisfying(tagging, "ec2:CreateTags", f"arn:aws:ec2:{REGION}:*:instance/*")
    assert statement_matches(tagging, base)
    # StringEqualsIfExists: absent passes, a wrong value does not.
    assert statement_matches(tagging, replace(base, request_tags={"Name": "n"}))
    assert not statement_matches(tagging, replace(base, request_tags={"eks:eks-cluster-name": "other"}))
    # ForAllValues:StringEquals: one key outside the set fails it.
    assert not statement_matches(tagging, replace(base, request_tags={"Name": "n", "karpenter.sh/nodepool": "p"}))
    # Bool (YAML may give a real boolean) and ArnLike, as the queue policies use them.
    insecure = {"Effect": "Deny", "Action": "sqs:*", "Resource": "*", "Condition": {"Bool": {"k": False}}}
    assert statement_matches(insecure, Request("sqs:SendMessage", QUEUE_ARN, keys={"k": "false"}))
    assert not statement_matches(insecure, Request("sqs:SendMessage", QUEUE_ARN, keys={"k": "true"}))
    assert not allowed([insecure], Request("sqs:SendMessage", QUEUE_ARN, keys={"k": "false"}))
    from_rule = {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"ArnLike": {"k": "arn:aws:events:*"}}}
    assert statement_matches(from_rule, Request("a:b", "*", keys={"k": "arn:aws:events:x:1:rule/r"}))
    assert not statement_matches(from_rule, Request("a:b", "*", keys={"k": "arn:aws:sns:x:1:topic"}))
    with pytest.raises(NotImplementedError, match="NumericLessThan"):
        condition_holds("NumericLessThan", "k", "1", {})


def test_the_inline_policy_fits_the_iam_size_limit() -> None:
    # IAM counts an inline role policy's characters without whitespace: at most 10,240 per role.
    # Upstream needs six managed policies; ours is one inline policy.
    longest = "c" * 100  # EKS cluster names have at most 100 characters
    text = json.dumps(controller_policy(longest, REGION, ACCOUNT, QUEUE_ARN, NODE_ROLE_ARN))
    assert len(re.sub(r"\s", "", text)) <= 10_240


def test_every_event_upstream_routes_to_the_interruption_queue_is_routed_by_ours() -> None:
    from infra.karpenter import INTERRUPTION_EVENTS

    template = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    upstream = [
        resource["Properties"]["EventPattern"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Events::Rule"
    ]
    assert len(upstream) >= 5, "expected upstream's interruption rules"
    ours = list(INTERRUPTION_EVENTS.values())
    missing = [pattern for pattern in upstream if pattern not in ours]
    assert missing == [], f"upstream routes these events to Karpenter, ours do not: {missing}"
