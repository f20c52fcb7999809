"""The CEL rules of the vendored CRDs (Karpenter, KEDA HTTP add-on) are evaluated, and catch what an API server would."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from tests.conftest import Plan
from tests.support.cel import cel_violations, unsupported_rules
from tests.support.schemas import crd_schemas


@pytest.mark.parametrize("key", sorted(crd_schemas()), ids=lambda k: k[1])
def test_every_rule_of_the_vendored_crds_compiles(key: tuple[str, str]) -> None:
    assert unsupported_rules(crd_schemas()[key]) == []


def _labels(o: dict) -> dict:
    return o["spec"]["template"]["metadata"]["labels"]


def _requirements(o: dict) -> list:
    return o["spec"]["template"]["spec"]["requirements"]


MUTATIONS: list[tuple[str, str, Callable[[dict], object], str]] = [
    ("NodePool", "label in the karpenter.sh domain", lambda o: _labels(o).update({"karpenter.sh/foo": "x"}),
     'spec.template.metadata.labels: label domain "karpenter.sh" is restricted'),
    ("NodePool", "In requirement without values", lambda o: _requirements(o)[0].update(values=[]),
     "spec.template.spec.requirements: requirements with operator 'In' must have a value defined"),
    ("NodePool", "hostname requirement",
     lambda o: _requirements(o).append({"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}),
     'spec.template.spec.requirements[4].key: label "kubernetes.io/hostname" is restricted'),
    ("NodePool", "budget schedule without duration",
     lambda o: o["spec"]["disruption"].update(budgets=[{"nodes": "1", "schedule": "@daily"}]),
     "spec.disruption.budgets: 'schedule' must be set with 'duration'"),
    ("EC2NodeClass", "alias with an id", lambda o: o["spec"]["amiSelectorTerms"][0].update(id="ami-0123"),
     "spec.amiSelectorTerms: 'alias' is mutually exclusive"),
    ("EC2NodeClass", "role and instance profile", lambda o: o["spec"].update(instanceProfile="profile"),
     "spec: must specify exactly one of ['role', 'instanceProfile']"),
    ("EC2NodeClass", "reserved tag", lambda o: o["spec"]["tags"].update({"karpenter.sh/nodepool": "x"}),
     "spec.tags: tag contains a restricted tag matching karpenter.sh/nodepool"),
    ("NodeOverlay", "price and price adjustment", lambda o: o["spec"].update(price="1.0", priceAdjustment="-10%"),
     "spec: cannot set both 'price' and 'priceAdjustment'"),
    ("HTTPScaledObject", "port and port name", lambda o: o["spec"]["scaleTargetRef"].update(portName="http"),
     "spec.scaleTargetRef: must define either the 'portName' or the 'port'"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "case", "mutate", "expected"), MUTATIONS, ids=[m[1] for m in MUTATIONS])
def test_a_rule_violation_is_reported_with_its_message(dev_plan: Plan, kind, case, mutate, expected) -> None:
    obj = copy.deepcopy(next(iter(dev_plan.objects(kind).values())))
    schema = crd_schemas()[(obj["apiVersion"], kind)]
    assert cel_violations(schema, obj) == [], "the rendered object must pass before the mutation"
    mutate(obj)
    found = cel_violations(schema, obj)
    assert any(v.startswith(expected) for v in found), f"{case}: expected {expected!r}, found {found}"


def test_transition_rules_are_skipped_not_failed(dev_plan: Plan) -> None:
    """Rules reading `oldSelf` apply to updates only (e.g. nodeClassRef group is immutable)."""
    obj = copy.deepcopy(dev_plan.objects("NodePool")["gpu"])
    obj["spec"]["template"]["spec"]["nodeClassRef"]["group"] = "karpenter.k8s.aws"
    assert cel_violations(crd_schemas()[("karpenter.sh/v1", "NodePool")], obj) == []
