"""The EC2 Spot service-linked role: created when missing, kept when ours, left alone when someone else's."""

from __future__ import annotations

import pulumi
import pytest

from infra import spot
from tests.conftest import plan_of, stack_config
from tests.unit.helpers import build, of_type
from tools.plan.mocks import RecordingMocks

SLR = "aws:iam/serviceLinkedRole:ServiceLinkedRole"


class _Component(pulumi.ComponentResource):
    def __init__(self) -> None:
        super().__init__("test:spot:Parent", "parent")
        self.role = spot.spot_service_linked_role("spot-role", "gpuinf-dev", self)


@pytest.fixture
def account_roles(monkeypatch):
    """Make the mocked account hold the Spot role, with the given tags."""

    def install(tags: dict[str, str]) -> None:
        original = RecordingMocks.call

        def call(self, args):
            if args.token == "aws:iam/getRoles:getRoles":
                return {
                    "arns": [f"arn:aws:iam::123456789012:role{spot.PATH}{spot.ROLE_NAME}"],
                    "names": [spot.ROLE_NAME],
                }
            if args.token == "aws:iam/getRole:getRole":
                assert args.args["name"] == spot.ROLE_NAME
                return {"name": spot.ROLE_NAME, "arn": "arn", "tags": tags, "id": spot.ROLE_NAME}
            return original(self, args)

        monkeypatch.setattr(RecordingMocks, "call", call)

    return install


def test_a_fresh_account_gets_the_role_never_deleted_on_destroy():
    (role,) = of_type(build(_Component), SLR)
    assert role.inputs["awsServiceName"] == "spot.amazonaws.com"
    assert role.inputs["tags"] == {spot.OWNER_TAG: "gpuinf-dev"}
    # Other stacks of the account may launch Spot after this one is destroyed.
    assert role.options.get("retainOnDelete") is True


def test_a_role_someone_else_created_is_left_alone(account_roles):
    account_roles({"owner": "another-team"})
    assert of_type(build(_Component), SLR) == []


def test_a_role_this_cluster_created_stays_declared(account_roles):
    # Otherwise the second `up` would find it, stop declaring it and delete it.
    account_roles({spot.OWNER_TAG: "gpuinf-dev"})
    assert len(of_type(build(_Component), SLR)) == 1


def test_only_stacks_that_launch_spot_ask_for_it(dev_plan, prod_plan):
    assert any("spot" in p.capacity_types for p in dev_plan.settings.node_pools.values())
    assert len(dev_plan.of_type(SLR)) == 1
    assert not any("spot" in p.capacity_types for p in prod_plan.settings.node_pools.values())
    assert prod_plan.of_type(SLR) == []


def test_karpenter_launches_only_after_the_role_exists():
    plan = plan_of(stack_config("dev"))
    (role,) = plan.of_type(SLR)
    controller = plan.one("kubernetes:helm.sh/v3:Release", "karpenter-controller")
    assert role.urn in controller.dependencies
