"""Preflight of reserved capacity: each `capacityReservations` term of a pool against the account.

moto 5.2 has no capacity reservations (`create_capacity_reservation` is not
implemented), so DescribeCapacityReservations is stubbed with botocore's
Stubber, which still checks every request against the EC2 service model.
"""

from __future__ import annotations

import datetime as dt

import botocore.session
from botocore.stub import Stubber

from tests.conftest import settings_of, stack_config
from tools.preflight import aws, checks
from tools.preflight.reservations import Reservation, findings

REGION = "us-east-1"
ZONES = ("us-east-1a", "us-east-1b", "us-east-1d")
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
POOLS = "gpu-inference:nodePools"


def reserved_settings(terms=None):
    config = stack_config("prod")
    config[POOLS]["gpu"].update(
        capacityTypes=["reserved", "on-demand"],
        capacityReservations=terms or [{"id": "cr-0aaa"}, {"tags": {"purpose": "llm", "team": "*"}}],
    )
    return settings_of(config)


def res(
    rid="cr-0aaa",
    itype="p5.48xlarge",
    zone="us-east-1a",
    state="active",
    total=2,
    available=1,
    end=None,
    kind="default",
):
    return Reservation(rid, itype, zone, state, total, available, end, kind)


def lines(selected) -> list[str]:
    return [f.line() for f in findings(reserved_settings(), ZONES, selected, NOW)]


def test_an_active_reservation_in_use_in_the_pools_families_and_zones_is_fine() -> None:
    assert lines({"gpu": {"cr-0aaa": (res(),), "tags purpose=llm, team=*": (res("cr-0bbb", "g6e.12xlarge"),)}}) == []


def test_each_unusable_reservation_is_named_with_why() -> None:
    selected = {
        "gpu": {
            "cr-0aaa": (),
            "tags purpose=llm, team=*": (
                res("cr-1", itype="g5.12xlarge"),
                res("cr-2", zone="us-east-1c"),
                res("cr-3", state="cancelled"),
                res("cr-4", state="expired", end=NOW - dt.timedelta(hours=1)),
                res("cr-5", state="scheduled", kind="capacity-block", end=NOW + dt.timedelta(days=30)),
            ),
        }
    }
    assert lines(selected) == [
        "blocker: pool gpu: capacityReservations cr-0aaa selects no capacity reservation in us-east-1 (found 0,"
        " needed at least 1): check the ID or tags, and the region",
        "blocker: pool gpu: capacity reservation cr-1 is for g5.12xlarge, not a type of the pool's families g6e, p5:"
        " Karpenter would never launch into it",
        "blocker: pool gpu: capacity reservation cr-2 is in us-east-1c, not one of the stack's zones us-east-1a,"
        " us-east-1b, us-east-1d",
        "blocker: pool gpu: capacity reservation cr-3 is cancelled, not active: nothing can launch into it",
        "blocker: pool gpu: capacity reservation cr-4 ended 2026-12-01T11:00:00+00:00 (state expired)",
        "warning: pool gpu: capacity reservation cr-5 is scheduled, not active yet: nothing launches into it until it is",
        "warning: pool gpu: none of its capacity reservations is usable now: it launches on-demand only",
    ]


def test_idle_and_ending_reservations_are_warnings() -> None:
    block_end = NOW + dt.timedelta(days=2)
    selected = {
        "gpu": {
            "cr-0aaa": (res(total=4, available=4),),
            "tags purpose=llm, team=*": (res("cr-6", kind="capacity-block", end=block_end),),
        }
    }
    assert lines(selected) == [
        "warning: pool gpu: capacity reservation cr-0aaa is idle: 4 of 4 p5.48xlarge unused in us-east-1a, paid for"
        " whether used or not",
        "warning: pool gpu: capacity reservation cr-6 (capacity-block) ends 2026-12-03T12:00:00+00:00: after that the"
        " pool falls back to its other capacity types (on-demand)",
    ]


def test_pools_without_reserved_capacity_are_not_looked_at() -> None:
    assert findings(settings_of("prod"), ZONES, {}, NOW) == []


def test_evaluate_reports_reservation_findings_with_the_rest() -> None:
    settings = reserved_settings([{"id": "cr-0aaa"}])
    facts = checks.Facts(
        region=REGION,
        zones=ZONES,
        region_zones=ZONES,
        instance_types={},
        offerings=dict.fromkeys(ZONES, frozenset()),
        quotas={},
        amis=dict.fromkeys(checks.ami_parameters(settings), "ami-0123456789abcdef0"),
        reservations={"gpu": {"cr-0aaa": ()}},
        now=NOW,
    )
    report = checks.evaluate(settings, facts)
    assert "capacityReservations cr-0aaa selects no capacity reservation" in " ".join(
        f.message for f in report.blockers
    )


def _row(rid: str, itype: str, zone: str, state: str = "active", **extra) -> dict:
    return {
        "CapacityReservationId": rid,
        "InstanceType": itype,
        "AvailabilityZone": zone,
        "State": state,
        "TotalInstanceCount": 2,
        "AvailableInstanceCount": 0,
        **extra,
    }


def test_the_aws_call_selects_by_id_and_by_tags() -> None:
    ec2 = botocore.session.get_session().create_client(
        "ec2", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y"
    )
    stub = Stubber(ec2)
    end = dt.datetime(2026, 12, 20, 11, 30, tzinfo=dt.UTC)
    stub.add_response(
        "describe_capacity_reservations",
        {"CapacityReservations": [_row("cr-0aaa", "p5.48xlarge", "us-east-1a")]},
        {"CapacityReservationIds": ["cr-0aaa"]},
    )
    stub.add_response(
        "describe_capacity_reservations",
        {
            "CapacityReservations": [
                _row("cr-0bbb", "p5.48xlarge", "us-east-1b", "scheduled", EndDate=end, ReservationType="capacity-block")
            ]
        },
        {"Filters": [{"Name": "tag:purpose", "Values": ["llm"]}, {"Name": "tag-key", "Values": ["team"]}]},
    )
    with stub:
        found = aws.capacity_reservations(ec2, reserved_settings())
    stub.assert_no_pending_responses()
    assert found == {
        "gpu": {
            "cr-0aaa": (Reservation("cr-0aaa", "p5.48xlarge", "us-east-1a", "active", 2, 0, None, "default"),),
            "tags purpose=llm, team=*": (
                Reservation("cr-0bbb", "p5.48xlarge", "us-east-1b", "scheduled", 2, 0, end, "capacity-block"),
            ),
        }
    }


def test_a_reservation_id_that_does_not_exist_selects_nothing() -> None:
    ec2 = botocore.session.get_session().create_client(
        "ec2", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y"
    )
    stub = Stubber(ec2)
    stub.add_client_error(
        "describe_capacity_reservations",
        service_error_code="InvalidCapacityReservationId.NotFound",
        service_message="The capacity reservation ID 'cr-0aaa' does not exist",
        expected_params={"CapacityReservationIds": ["cr-0aaa"]},
    )
    with stub:
        found = aws.capacity_reservations(ec2, reserved_settings([{"id": "cr-0aaa"}]))
    assert found == {"gpu": {"cr-0aaa": ()}}
