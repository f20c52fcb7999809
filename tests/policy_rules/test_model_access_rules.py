"""model-read-only: a model role's inline policy reads its own prefix and nothing else (happy path plus
one mutation per case, the awsguard pattern)."""

from __future__ import annotations

import copy
import json

import pytest

from domain import servers
from tests.policy_rules.helpers import resource_violations

TYPE = "aws:iam/rolePolicy:RolePolicy"
NAME = "chat-model-read"


def document() -> dict:
    location = servers.parse_model_uri("s3://acme-models/models/qwen/")
    assert location is not None
    return servers.model_read_policy(location)


def violations(doc: dict, name: str = NAME) -> list[str]:
    return resource_violations("model-read-only", TYPE, {"role": "r", "policy": json.dumps(doc)}, name=name)


def test_the_rendered_policy_passes() -> None:
    assert violations(document()) == []


def mutated(change) -> dict:
    doc = copy.deepcopy(document())
    change(doc["Statement"])
    return doc


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s[0].__setitem__("Action", ["s3:GetObject", "s3:PutObject"]),
         "statement ReadModel allows s3:PutObject; a model role may only s3:GetObject and s3:ListBucket"),
        (lambda s: s[0].__setitem__("Action", "s3:*"),
         "statement ReadModel allows s3:*; a model role may only s3:GetObject and s3:ListBucket"),
        (lambda s: s[0].__setitem__("Resource", "arn:aws:s3:::acme-models/*"),
         "statement ReadModel allows s3:GetObject on arn:aws:s3:::acme-models/*, not on objects under one prefix"),
        (lambda s: s[0].__setitem__("Resource", "*"),
         "statement ReadModel allows s3:GetObject on *, not on objects under one prefix"),
        (lambda s: s[1].pop("Condition"),
         "statement ListModelPrefix allows s3:ListBucket without an s3:prefix StringLike condition"),
        (lambda s: s[1]["Condition"]["StringLike"].__setitem__("s3:prefix", ["*"]),
         "statement ListModelPrefix lists prefix '*', not one prefix followed by /*"),
        (lambda s: s[1].__setitem__("Resource", "arn:aws:s3:::*"),
         "statement ListModelPrefix allows s3:ListBucket on arn:aws:s3:::*, not on one bucket"),
        (lambda s: s.append({"Sid": "Extra", "Effect": "Allow", "NotAction": "s3:DeleteObject", "Resource": "*"}),
         "statement Extra uses NotAction/NotResource, which grants what it does not name"),
        (lambda s: s[1]["Condition"]["StringLike"].__setitem__("s3:prefix", ["other/*"]),
         "model policy chat-model-read lists ['acme-models/other/'] but reads ['acme-models/models/qwen/']"),
    ],
)  # fmt: skip
def test_each_widening_is_a_violation(change, expected) -> None:
    found = violations(mutated(change))
    assert any(v.endswith(expected) for v in found), found


def test_only_model_policies_are_checked() -> None:
    wide = mutated(lambda s: s[0].__setitem__("Action", ["s3:PutObject"]))
    assert violations(wide, name="offline-scoring-worker-policy") == []
