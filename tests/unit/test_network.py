from __future__ import annotations

import ipaddress

import pytest

from domain import contract
from domain.settings import ConfigError, NetworkSettings
from infra.mapping import network_args
from infra.network import Network
from tests.conftest import plan_of, stack_config
from tests.unit.helpers import assert_parented, build, of_type

ZONES3 = ["us-west-2a", "us-west-2b", "us-west-2c"]


def _network(nat: str, zones: list[str] = ZONES3):
    settings = NetworkSettings.parse({"cidr": "10.40.0.0/16", "azCount": len(zones), "natGateways": nat})
    args = network_args(settings, cluster_name="gpuinf-test", availability_zones=zones)
    return build(lambda: Network("net", args))


def test_subnets_per_az_with_role_and_discovery_tags() -> None:
    resources = _network("perAz")
    subnets = of_type(resources, "aws:ec2/subnet:Subnet")
    private = [s for s in subnets if s.inputs["tags"]["tier"] == "private"]
    public = [s for s in subnets if s.inputs["tags"]["tier"] == "public"]
    assert sorted(s.inputs["availabilityZone"] for s in private) == ZONES3
    assert sorted(s.inputs["availabilityZone"] for s in public) == ZONES3
    for s in private:
        assert s.inputs["tags"][contract.DISCOVERY_TAG] == "gpuinf-test", s.name
        # Pods take their addresses here: no load balancer may share them (infra/network.py).
        assert "kubernetes.io/role/internal-elb" not in s.inputs["tags"], s.name
        assert "kubernetes.io/role/elb" not in s.inputs["tags"], s.name
        assert s.inputs["mapPublicIpOnLaunch"] is False
    for s in public:
        # Both schemes' load balancers live in the public subnets (an internal one with private addresses).
        assert s.inputs["tags"]["kubernetes.io/role/elb"] == "1", s.name
        assert s.inputs["tags"]["kubernetes.io/role/internal-elb"] == "1", s.name
        assert contract.DISCOVERY_TAG not in s.inputs["tags"], f"{s.name}: nodes must not launch in public subnets"
    vpc = ipaddress.IPv4Network("10.40.0.0/16")
    assert all(ipaddress.IPv4Network(s.inputs["cidrBlock"]).subnet_of(vpc) for s in subnets)


def test_nat_per_az_routes_each_private_subnet_through_its_own_gateway() -> None:
    resources = _network("perAz")
    nats = of_type(resources, "aws:ec2/natGateway:NatGateway")
    assert len(nats) == 3
    private_routes = [r for r in of_type(resources, "aws:ec2/routeTable:RouteTable") if "private" in r.name]
    targets = [r.inputs["routes"][0]["natGatewayId"] for r in private_routes]
    assert len(set(targets)) == 3, f"expected one NAT per private route table, found {targets}"


def test_single_nat_is_shared_by_all_private_subnets() -> None:
    resources = _network("single")
    assert len(of_type(resources, "aws:ec2/natGateway:NatGateway")) == 1
    assert len(of_type(resources, "aws:ec2/eip:Eip")) == 1
    private_routes = [r for r in of_type(resources, "aws:ec2/routeTable:RouteTable") if "private" in r.name]
    assert len(private_routes) == 3
    assert len({r.inputs["routes"][0]["natGatewayId"] for r in private_routes}) == 1


def test_everything_is_a_child_of_the_component() -> None:
    resources = _network("single")
    assert_parented(resources, "gpuinf:network:Network")
    vpc = of_type(resources, "aws:ec2/vpc:Vpc")[0]
    assert vpc.inputs["enableDnsHostnames"] is True and vpc.name == "net-vpc"


def test_prod_pins_its_zones_by_id(prod_plan) -> None:
    """`availabilityZoneIds` become the names this account's region gives them (the offline
    plan's mock maps usw2/use1-azN to the Nth letter): use1-az3, `c` here, is left out."""
    assert prod_plan.settings.network.availability_zone_ids == ("use1-az1", "use1-az2", "use1-az4")
    subnets = prod_plan.of_type("aws:ec2/subnet:Subnet")
    assert sorted({s.inputs["availabilityZone"] for s in subnets}) == ["us-east-1a", "us-east-1b", "us-east-1d"]


def test_a_zone_id_the_region_lacks_stops_the_program_with_the_key() -> None:
    cfg = stack_config("dev")
    cfg["gpu-inference:network"]["availabilityZoneIds"] = ["usw2-az2", "use1-az1"]
    with pytest.raises(ConfigError) as caught:
        plan_of(cfg)
    assert caught.value.lines == [
        "gpu-inference:network.availabilityZoneIds[1] is not a zone ID us-west-2 offers to this account"
        ' (offered: usw2-az1, usw2-az2, usw2-az3, usw2-az4) (got "use1-az1")'
    ]


def test_unpinned_zones_are_the_first_by_name(dev_plan) -> None:
    subnets = dev_plan.of_type("aws:ec2/subnet:Subnet")
    assert sorted({s.inputs["availabilityZone"] for s in subnets}) == ["us-west-2a", "us-west-2b"]
