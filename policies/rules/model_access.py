"""Model weights: a model server's role may read its own S3 prefix and nothing else.

Each InferenceService that loads from `s3://bucket/prefix/` gets a Pod Identity role
with one inline policy, `<service>-model-read` (`domain.servers.model_read_policy`).
This rule checks every such policy as the engine sees it: only Allow statements,
only `s3:GetObject` on `arn:aws:s3:::<bucket>/<prefix>*` and `s3:ListBucket` on
`arn:aws:s3:::<bucket>` with an `s3:prefix` StringLike condition on the same
prefix; no wildcard bucket, no empty prefix, no other action, no NotAction or
NotResource (which grant everything they do not name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pulumi_policy import ResourceValidationArgs

from domain.servers import MODEL_POLICY_SUFFIX
from policies.rules.common import Config, as_list, json_document, resource_policy

ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
OBJECTS = re.compile(r"arn:aws:s3:::([a-z0-9][a-z0-9.-]+[a-z0-9])/([^*?]+/)\*")
BUCKET = re.compile(r"arn:aws:s3:::([a-z0-9][a-z0-9.-]+[a-z0-9])")


def _statement_problems(statement: dict, grants: dict[str, set[str]]) -> Iterable[str]:
    sid = statement.get("Sid", "?")
    if statement.get("Effect") != "Allow":
        return  # a Deny only narrows
    if {"NotAction", "NotResource", "NotPrincipal"} & set(statement):
        yield f"statement {sid} uses NotAction/NotResource, which grants what it does not name"
        return
    actions, resources = as_list(statement.get("Action")), as_list(statement.get("Resource"))
    for action in actions:
        if action == "s3:GetObject":
            for resource in resources:
                found = OBJECTS.fullmatch(str(resource))
                if not found:
                    yield f"statement {sid} allows s3:GetObject on {resource}, not on objects under one prefix"
                else:
                    grants["objects"].add(f"{found[1]}/{found[2]}")
        elif action == "s3:ListBucket":
            prefixes = as_list(((statement.get("Condition") or {}).get("StringLike") or {}).get("s3:prefix"))
            if set(statement.get("Condition") or {}) - {"StringLike"} or not prefixes:
                yield f"statement {sid} allows s3:ListBucket without an s3:prefix StringLike condition"
            for resource in resources:
                found = BUCKET.fullmatch(str(resource))
                if not found:
                    yield f"statement {sid} allows s3:ListBucket on {resource}, not on one bucket"
                    continue
                for prefix in prefixes:
                    if not str(prefix).endswith("/*") or "*" in str(prefix)[:-1] or len(str(prefix)) < 3:
                        yield f"statement {sid} lists prefix {prefix!r}, not one prefix followed by /*"
                    else:
                        grants["listing"].add(f"{found[1]}/{str(prefix)[:-1]}")
        else:
            yield f"statement {sid} allows {action}; a model role may only s3:GetObject and s3:ListBucket"


def _model_read_only(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    if not args.name.endswith(MODEL_POLICY_SUFFIX):
        return
    document = json_document(args.props.get("policy"))
    if not isinstance(document, dict):
        return  # an unknown (computed) document: checked at `up` when it is known
    grants: dict[str, set[str]] = {"objects": set(), "listing": set()}
    for statement in as_list(document.get("Statement")):
        for problem in _statement_problems(statement, grants):
            yield f"model policy {args.name}: {problem}"
    if grants["listing"] - grants["objects"]:
        yield f"model policy {args.name} lists {sorted(grants['listing'])} but reads {sorted(grants['objects'])}"


POLICIES = [
    resource_policy(
        "model-read-only",
        "A model server's role may only read its own S3 model prefix (GetObject under it, ListBucket limited to it).",
        "Render the policy with domain.servers.model_read_policy; set the service's model.uri to its own prefix.",
        [ROLE_POLICY],
        _model_read_only,
    ),
]
