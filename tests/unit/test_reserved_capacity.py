"""Reserved capacity: ODCRs and Capacity Blocks selected per pool, rendered for Karpenter v1.14.1."""

from __future__ import annotations

from domain import contract
from infra.mapping import node_pools_args
from infra.nodepools import NodePools
from tests.conftest import plan_of, settings_of, stack_config
from tests.support.schemas import validate
from tests.unit.helpers import build

NP = "gpu-inference:nodePools"
TERMS = [{"id": "cr-0123456789abcdef0"}, {"tags": {"purpose": "gpu-inference", "team": "ml-platform"}}]


def reserved_config() -> dict:
    config = stack_config("prod")
    config[NP]["gpu"]["capacityTypes"] = ["reserved", "on-demand"]
    config[NP]["gpu"]["capacityReservations"] = TERMS
    return config


def _by_kind(resources, kind: str) -> dict:
    return {r.inputs["metadata"]["name"]: r.inputs for r in resources if r.inputs.get("kind") == kind}


def test_reservations_become_the_nodeclass_selector_terms_and_reserved_a_capacity_type() -> None:
    args = node_pools_args(settings_of(reserved_config()), node_role_name="node-role", depends_on=[])
    resources = build(lambda: NodePools("np", args))
    classes, pools = _by_kind(resources, "EC2NodeClass"), _by_kind(resources, "NodePool")
    assert classes["gpu"]["spec"]["capacityReservationSelectorTerms"] == TERMS
    reqs = {r["key"]: r["values"] for r in pools["gpu"]["spec"]["template"]["spec"]["requirements"]}
    assert reqs[contract.CAPACITY_TYPE_LABEL] == ["reserved", "on-demand"]
    # Pools without reservations render no selector at all.
    assert "capacityReservationSelectorTerms" not in classes["gpu-shared"]["spec"]
    assert "capacityReservationSelectorTerms" not in classes["cpu"]["spec"]


def test_reserved_pool_manifests_pass_the_karpenter_crds_and_prod_policies() -> None:
    plan = plan_of(reserved_config(), stack="prod")
    node_class, node_pool = plan.objects("EC2NodeClass")["gpu"], plan.objects("NodePool")["gpu"]
    assert validate(node_class, "1.35") == []
    assert validate(node_pool, "1.35") == []
    assert node_class["spec"]["capacityReservationSelectorTerms"] == TERMS


def test_an_id_term_with_tags_is_what_the_crd_rejects_and_settings_never_render() -> None:
    """The CRD's own CEL rule (id is exclusive): proof the vendored schema would catch it too."""
    plan = plan_of(reserved_config(), stack="prod")
    bad = plan.objects("EC2NodeClass")["gpu"]
    bad["spec"]["capacityReservationSelectorTerms"] = [{"id": "cr-0123456789abcdef0", "tags": {"a": "b"}}]
    assert any("mutually exclusive" in e for e in validate(bad, "1.35"))
