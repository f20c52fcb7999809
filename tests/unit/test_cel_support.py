"""tests.support.cel: the vendored CRDs' CEL rules run as a real API server runs them on create."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.cel import UnsupportedRule, cel_violations, unsupported_rules
from tests.support.schemas import crd_schemas

NODE_POOL: dict[str, Any] = {
    "apiVersion": "karpenter.sh/v1",
    "kind": "NodePool",
    "metadata": {"name": "gpu"},
    "spec": {
        "template": {
            "metadata": {"labels": {"example.com/workload": "gpu"}},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"},
                "requirements": [
                    {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["g5"]},
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand", "spot"]},
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    {"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "Gt", "values": ["0"]},
                ],
                "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}],
                "expireAfter": "720h",
            },
        },
        "disruption": {
            "consolidationPolicy": "WhenEmptyOrUnderutilized",
            "consolidateAfter": "5m",
            "budgets": [{"nodes": "10%"}, {"nodes": "0", "schedule": "0 9 * * mon-fri", "duration": "8h"}],
        },
        "limits": {"cpu": "256", "nvidia.com/gpu": 16},
    },
}

EC2_NODE_CLASS: dict[str, Any] = {
    "apiVersion": "karpenter.k8s.aws/v1",
    "kind": "EC2NodeClass",
    "metadata": {"name": "gpu"},
    "spec": {
        "role": "KarpenterNodeRole-dev",
        "amiSelectorTerms": [{"alias": "al2023@v20260512"}],
        "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "dev"}}],
        "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "dev"}}],
        "metadataOptions": {
            "httpEndpoint": "enabled",
            "httpProtocolIPv6": "disabled",
            "httpPutResponseHopLimit": 1,
            "httpTokens": "required",
        },
        "blockDeviceMappings": [
            {
                "deviceName": "/dev/xvda",
                "rootVolume": True,
                "ebs": {"volumeSize": "200Gi", "volumeType": "gp3", "encrypted": True, "deleteOnTermination": True},
            }
        ],
        "tags": {"team": "ml"},
    },
}

NODE_OVERLAY: dict[str, Any] = {
    "apiVersion": "karpenter.sh/v1alpha1",
    "kind": "NodeOverlay",
    "metadata": {"name": "g5-discount"},
    "spec": {
        "requirements": [{"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["g5"]}],
        "priceAdjustment": "-10%",
        "weight": 10,
    },
}

VALID = {"NodePool": NODE_POOL, "EC2NodeClass": EC2_NODE_CLASS, "NodeOverlay": NODE_OVERLAY}


def _schema(obj: dict[str, Any]) -> dict[str, Any]:
    return crd_schemas()[(obj["apiVersion"], obj["kind"])]


def _requirements(o: dict[str, Any]) -> list[dict[str, Any]]:
    return o["spec"]["template"]["spec"]["requirements"]


# The vendored CRDs


@pytest.mark.parametrize("key", sorted(crd_schemas()), ids=lambda k: f"{k[1]}-{k[0]}")
def test_every_rule_of_every_vendored_crd_version_can_be_evaluated(key: tuple[str, str]) -> None:
    assert unsupported_rules(crd_schemas()[key]) == []


@pytest.mark.parametrize("kind", VALID)
def test_a_valid_object_has_no_violations(kind: str) -> None:
    """NodePool's nodeClassRef also holds transition rules (group/kind immutable): they must be skipped."""
    assert cel_violations(_schema(VALID[kind]), copy.deepcopy(VALID[kind])) == []


@dataclass(frozen=True)
class Mutation:
    case: str
    kind: str
    mutate: Callable[[dict[str, Any]], object]
    path: str
    message: str
    rule: str

    @property
    def expected(self) -> str:
        return f"{self.path}: {self.message} (rule: {self.rule})"


MUTATIONS = [
    Mutation(
        "In requirement without values",
        "NodePool",
        lambda o: _requirements(o)[0].update(values=[]),
        "spec.template.spec.requirements",
        "requirements with operator 'In' must have a value defined",
        "self.all(x, x.operator == 'In' ? x.values.size() != 0 : true)",
    ),
    Mutation(
        "template label in the karpenter.sh domain",
        "NodePool",
        lambda o: o["spec"]["template"]["metadata"]["labels"].update({"karpenter.sh/foo": "x"}),
        "spec.template.metadata.labels",
        'label domain "karpenter.sh" is restricted',
        'self.all(x, x in ["karpenter.sh/capacity-type", "karpenter.sh/nodepool"]'
        ' || !x.find("^([^/]+)").endsWith("karpenter.sh"))',
    ),
    Mutation(
        "hostname requirement",
        "NodePool",
        lambda o: _requirements(o).append({"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}),
        "spec.template.spec.requirements[4].key",
        'label "kubernetes.io/hostname" is restricted',
        'self != "kubernetes.io/hostname"',
    ),
    Mutation(
        "budget schedule without duration",
        "NodePool",
        lambda o: o["spec"]["disruption"]["budgets"][1].pop("duration"),
        "spec.disruption.budgets",
        "'schedule' must be set with 'duration'",
        "self.all(x, has(x.schedule) == has(x.duration))",
    ),
    Mutation(
        "static NodePool with a cpu limit",  # the transition rule on the same node is skipped
        "NodePool",
        lambda o: o["spec"].update(replicas=2),
        "spec",
        "only 'limits.nodes' is supported on static NodePools",
        "!has(self.replicas) || (!has(self.limits) || size(self.limits) == 0"
        " || (size(self.limits) == 1 && 'nodes' in self.limits))",
    ),
    Mutation(
        "AMI alias with an owner",
        "EC2NodeClass",
        lambda o: o["spec"]["amiSelectorTerms"][0].update(owner="amazon"),
        "spec.amiSelectorTerms",
        "'alias' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms",
        "!self.exists(x, has(x.alias) && (has(x.id) || has(x.tags) || has(x.name) || has(x.owner)))",
    ),
    Mutation(
        "AMI alias next to another term",
        "EC2NodeClass",
        lambda o: o["spec"]["amiSelectorTerms"].append({"tags": {"team": "ml"}}),
        "spec.amiSelectorTerms",
        "'alias' is mutually exclusive, cannot be set with a combination of other amiSelectorTerms",
        "!(self.exists(x, has(x.alias)) && self.size() != 1)",
    ),
    Mutation(
        "role and instance profile",
        "EC2NodeClass",
        lambda o: o["spec"].update(instanceProfile="KarpenterNodeInstanceProfile-dev"),
        "spec",
        "must specify exactly one of ['role', 'instanceProfile']",
        "(has(self.role) && !has(self.instanceProfile)) || (!has(self.role) && has(self.instanceProfile))",
    ),
    Mutation(
        "AMI alias without a version",
        "EC2NodeClass",
        lambda o: o["spec"]["amiSelectorTerms"][0].update(alias="al2023"),
        "spec.amiSelectorTerms[0].alias",
        "'alias' is improperly formatted, must match the format 'family@version'",
        "self.matches('^[a-zA-Z0-9]+@.+$')",
    ),
    Mutation(
        "pinned Windows AMI alias",
        "EC2NodeClass",
        lambda o: o["spec"]["amiSelectorTerms"][0].update(alias="windows2022@v20260512"),
        "spec.amiSelectorTerms[0].alias",
        "windows families may only specify version 'latest'",
        "self.split('@')[0] in ['windows2019','windows2022','windows2025'] ? self.split('@')[1] == 'latest' : true",
    ),
    Mutation(
        "cluster ownership tag",
        "EC2NodeClass",
        lambda o: o["spec"]["tags"].update({"kubernetes.io/cluster/dev": "owned"}),
        "spec.tags",
        "tag contains a restricted tag matching kubernetes.io/cluster/",
        "self.all(k, !k.startsWith('kubernetes.io/cluster') )",
    ),
    Mutation(
        "two root volumes",
        "EC2NodeClass",
        lambda o: o["spec"]["blockDeviceMappings"].append(
            {"deviceName": "/dev/xvdb", "rootVolume": True, "ebs": {"volumeSize": "100Gi"}}
        ),
        "spec.blockDeviceMappings",
        "must have only one blockDeviceMappings with rootVolume",
        "self.filter(x, has(x.rootVolume)?x.rootVolume==true:false).size() <= 1",
    ),
    Mutation(
        "price and price adjustment",
        "NodeOverlay",
        lambda o: o["spec"].update(price="1.25"),
        "spec",
        "cannot set both 'price' and 'priceAdjustment'",
        "!has(self.price) || !has(self.priceAdjustment)",
    ),
    Mutation(
        "overlay of a core resource",
        "NodeOverlay",
        lambda o: o["spec"].update(capacity={"cpu": "1"}),
        "spec.capacity",
        "invalid resource restricted",
        "self.all(x, !(x in ['cpu', 'memory', 'ephemeral-storage', 'pods']))",
    ),
]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.case for m in MUTATIONS])
def test_a_mutation_the_api_server_rejects_is_reported_exactly(mutation: Mutation) -> None:
    obj = copy.deepcopy(VALID[mutation.kind])
    mutation.mutate(obj)
    assert cel_violations(_schema(obj), obj) == [mutation.expected]


def test_a_rule_that_fails_to_evaluate_is_a_violation_too() -> None:
    """The server rejects on 'no such key' as on false: evictionSoft without evictionSoftGracePeriod."""
    obj = copy.deepcopy(EC2_NODE_CLASS)
    obj["spec"]["kubelet"] = {"evictionSoft": {"memory.available": "5%"}}
    assert cel_violations(_schema(obj), obj) == [
        "spec.kubelet: evictionSoft OwnerKey does not have a matching evictionSoftGracePeriod"
        " (rule: has(self.evictionSoft) ? self.evictionSoft.all(e, (e in self.evictionSoftGracePeriod)):true;"
        " evaluation error: no such member in mapping: 'evictionSoftGracePeriod')"
    ]


def test_int_conversion_is_as_strict_as_the_api_server() -> None:
    """cel-go's int() refuses '1_0', which Python's int() would take: the server rejects this Gt requirement."""
    obj = copy.deepcopy(NODE_POOL)
    _requirements(obj)[3]["values"] = ["1_0"]
    [violation] = cel_violations(_schema(obj), obj)
    assert violation.startswith("spec.template.spec.requirements: requirements operator 'Gt', 'Lt', 'Gte', or 'Lte'")
    assert violation.endswith("evaluation error: cannot convert '1_0' to int)")


def test_the_object_is_not_modified() -> None:
    obj = copy.deepcopy(NODE_POOL)
    del obj["spec"]["disruption"]  # defaulted while evaluating
    before = copy.deepcopy(obj)
    cel_violations(_schema(obj), obj)
    assert obj == before


# Kubernetes semantics, on small schemas


def _object(properties: dict[str, Any], *rules: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if rules:
        schema["x-kubernetes-validations"] = list(rules)
    return schema


def _resource(spec: dict[str, Any]) -> dict[str, Any]:
    """An openAPIV3Schema whose spec is `spec`, as a CRD has it."""
    meta = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    return _object({**meta, "spec": spec})


def _rule(rule: str, message: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"rule": rule, **({"message": message} if message else {}), **extra}


STRING = {"type": "string"}


def test_rules_run_only_where_a_value_is_present() -> None:
    schema = _resource(_object({"name": {**STRING, "x-kubernetes-validations": [_rule("self != ''", "empty")]}}))
    assert cel_violations(schema, {"spec": {}}) == []
    assert cel_violations(schema, {"spec": {"name": None}}) == []  # a null the server prunes
    assert cel_violations(schema, {"spec": {"name": ""}}) == ["spec.name: empty (rule: self != '')"]


def test_rules_run_on_every_list_item_and_map_value() -> None:
    positive = {"type": "integer", "x-kubernetes-validations": [_rule("self > 0")]}
    schema = _resource(
        _object(
            {"list": {"type": "array", "items": positive}, "map": {"type": "object", "additionalProperties": positive}}
        )
    )
    found = cel_violations(schema, {"spec": {"list": [1, 0, -1], "map": {"a": 1, "b/c": 0}}})
    assert found == [
        "spec.list[1]: self > 0 (rule: self > 0)",
        "spec.list[2]: self > 0 (rule: self > 0)",
        "spec.map[b/c]: self > 0 (rule: self > 0)",
    ]


def test_a_root_rule_sees_only_the_name_of_the_metadata() -> None:
    schema = _resource(_object({}))
    schema["x-kubernetes-validations"] = [_rule("self.metadata.name.startsWith('gpu') && !has(self.metadata.labels)")]
    assert cel_violations(schema, {"metadata": {"name": "gpu-a", "labels": {"a": "b"}}, "spec": {}}) == []
    rule = schema["x-kubernetes-validations"][0]["rule"]
    assert cel_violations(schema, {"metadata": {"name": "cpu"}, "spec": {}}) == [f"<root>: {rule} (rule: {rule})"]


def test_defaults_are_applied_before_rules_run() -> None:
    mode = {**STRING, "default": "Spot"}
    schema = _resource(_object({"mode": mode}, _rule("self.mode == 'OnDemand'", "must be OnDemand")))
    assert cel_violations(schema, {"spec": {}}) == ["spec: must be OnDemand (rule: self.mode == 'OnDemand')"]


def test_values_are_typed_from_the_schema() -> None:
    spec = _object(
        {
            "timeout": {**STRING, "format": "duration"},
            "since": {**STRING, "format": "date-time"},
            "ratio": {"type": "number"},
            "maxUnavailable": {"x-kubernetes-int-or-string": True},
            "ephemeral-storage": STRING,
        },
        _rule("self.timeout < duration('1h')", "timeout"),
        _rule("self.since < timestamp('2030-01-01T00:00:00Z')", "since"),
        _rule("self.ratio / 2.0 == 0.5", "ratio"),  # an int 1 in the object is the double 1.0 to CEL
        _rule("self.maxUnavailable == 1 || self.maxUnavailable == '10%'", "maxUnavailable"),
        _rule("self.ephemeral__dash__storage == '1Gi'", "escaped name"),
    )
    obj = {
        "spec": {
            "timeout": "30m",
            "since": "2026-01-01T00:00:00Z",
            "ratio": 1,
            "maxUnavailable": 1,
            "ephemeral-storage": "1Gi",
        }
    }
    assert cel_violations(_resource(spec), obj) == []
    obj["spec"].update(timeout="90m", maxUnavailable="10%")
    assert [v.split(" (")[0] for v in cel_violations(_resource(spec), obj)] == ["spec: timeout"]


def test_a_rule_without_message_is_reported_by_its_text_and_field_path_is_followed() -> None:
    schema = _resource(_object({"a": STRING}, _rule("self.a != 'x'", fieldPath=".a")))
    assert cel_violations(schema, {"spec": {"a": "x"}}) == ["spec.a: self.a != 'x' (rule: self.a != 'x')"]


def test_transition_rules_are_skipped_and_not_unsupported() -> None:
    schema = _resource(_object({"a": STRING}, _rule("self.a == oldSelf.a", "immutable")))
    assert unsupported_rules(schema) == []
    assert cel_violations(schema, {"spec": {"a": "x"}}) == []


@pytest.mark.parametrize(
    "rule",
    [
        "'a@b@c'.split('@') == ['a', 'b', 'c'] && 'a@b@c'.split('@', 2) == ['a', 'b@c']",
        "'karpenter.sh/foo'.find('^([^/]+)') == 'karpenter.sh' && 'abc'.find('[0-9]+') == ''",
        "'a1b22'.findAll('[0-9]+') == ['1', '22'] && 'a1b22'.findAll('[0-9]+', 1) == ['1']",
        "'x1'.matches('^[a-z][0-9]$') && 'ab'.matches('b')",
        "'AbC-É'.lowerAscii() == 'abc-É' && 'abc'.upperAscii() == 'ABC'",
        "'hello'.indexOf('l') == 2 && 'hello'.lastIndexOf('l') == 3 && 'hello'.substring(1, 3) == 'el'",
        "'hello'.charAt(1) == 'e' && ' x '.trim() == 'x' && 'a-b-c'.replace('-', '.', 1) == 'a.b-c'",
        "['a', 'b'].join('/') == 'a/b' && [1, 2, 3].isSorted() && [1, 3, 2].sum() == 6 && [1, 3, 2].max() == 3",
        "int('-12') == -12 && 1 == 1.0 && 1 != 'a' && [1].exists_one(x, x == 1) && [1].map(x, x * 2) == [2]",
    ],
)
def test_kubernetes_library_functions(rule: str) -> None:
    schema = _resource(_object({}, _rule(rule)))
    assert cel_violations(schema, {"spec": {}}) == []


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("quantity(self.a).isGreaterThan(quantity('1'))", "function quantity() is not provided"),
        ("has(self.?a)", "cel-python cannot parse it"),
        ("self.all(k, v, v != '')", "macro all() with 3 arguments is not supported"),
        ("self.a == other", "unknown identifier 'other'"),
    ],
)
def test_a_rule_that_cannot_be_evaluated_is_reported_and_raises(rule: str, problem: str) -> None:
    schema = _resource(_object({"a": STRING}, _rule(rule)))
    [line] = unsupported_rules(schema)
    assert line.startswith(f"spec: {rule!r}: ") and problem in line
    with pytest.raises(UnsupportedRule, match=re.escape(problem)):
        cel_violations(schema, {"spec": {"a": "1"}})


def test_optional_old_self_rules_and_rules_under_any_of_are_reported() -> None:
    schema = _resource(_object({"a": STRING}))
    schema["properties"]["spec"]["anyOf"] = [{"x-kubernetes-validations": [_rule("true")]}]
    schema["properties"]["spec"]["properties"]["a"]["x-kubernetes-validations"] = [
        _rule("!oldSelf.hasValue() || self == oldSelf.value()", optionalOldSelf=True)
    ]
    assert unsupported_rules(schema) == [
        "spec.a: '!oldSelf.hasValue() || self == oldSelf.value()': optionalOldSelf rules need CEL optionals",
        "#/properties/spec/anyOf/0: rules outside properties/items/additionalProperties are not evaluated",
    ]
