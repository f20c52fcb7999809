"""What the AWS Load Balancer Controller v3.5.0 finds in the network we build, from the
recorded plans of every stack: the subnets it may put a load balancer in, and the one
security group of the nodes' (and so the pods') network interfaces.

Upstream (kubernetes-sigs/aws-load-balancer-controller at tag v3.5.0):
- docs/deploy/subnet_discovery.md and pkg/networking/subnet_resolver.go `ResolveViaDiscovery`:
  without subnets in the Ingress or IngressClassParams, the candidates are the VPC's subnets
  tagged `kubernetes.io/role/internal-elb` (scheme internal) or `kubernetes.io/role/elb`
  (internet-facing) with value `1` or empty; reachability (a route to an IGW) is consulted only
  when no subnet carries the role tag. A candidate tagged `kubernetes.io/cluster/<other>` but not
  `kubernetes.io/cluster/<ours>` is dropped; one subnet is chosen per zone; an ALB needs two
  zones (`computeSubnetsMinimalCount`).
- pkg/networking/networking_manager.go `resolveEndpointSGForENI`: with target type ip the
  controller adds the load balancer's ingress rule to the security group of each target pod's
  ENI: the only one if the ENI has one, else the one (exactly one) tagged
  `kubernetes.io/cluster/<cluster>`; any other count is an error and the target gets no rule.
"""

from __future__ import annotations

from collections import Counter

from domain import contract
from tests.conftest import Plan
from tools.plan.mocks import Recorded

VALUES = ("", "1")  # the role tag values the controller's filter accepts


def _subnets(plan: Plan) -> list[Recorded]:
    return plan.of_type("aws:ec2/subnet:Subnet")


def _candidates(plan: Plan, role_tag: str) -> list[Recorded]:
    return [s for s in _subnets(plan) if s.inputs.get("tags", {}).get(role_tag) in VALUES]


def test_both_schemes_find_one_eligible_subnet_in_every_zone(plan: Plan) -> None:
    cluster_tag = f"kubernetes.io/cluster/{plan.settings.cluster.name}"
    public = sorted(s.name for s in _subnets(plan) if s.inputs["tags"]["tier"] == "public")
    for role_tag in ("kubernetes.io/role/elb", "kubernetes.io/role/internal-elb"):
        found = _candidates(plan, role_tag)
        # The public subnets, for both schemes (infra/network.py: the load balancers' addresses
        # stay out of the pods' ranges, so NetworkPolicies can admit them by subnet).
        assert sorted(s.name for s in found) == public, role_tag
        assert all(s.inputs["tags"].get(cluster_tag) in ("owned", "shared") for s in found), role_tag
        zones = Counter(s.inputs["availabilityZone"] for s in found)
        assert len(zones) >= 2 and set(zones.values()) == {1}, f"{role_tag}: {zones}"
    # No subnet is claimed for another cluster (it would be filtered out).
    others = [
        s.name
        for s in _subnets(plan)
        for key in s.inputs["tags"]
        if key.startswith("kubernetes.io/cluster/") and key != cluster_tag
    ]
    assert others == []


def test_pods_take_their_addresses_outside_the_load_balancers_subnets(plan: Plan) -> None:
    """Karpenter's node classes select the private subnets only; the system node group is in them too."""
    private = {s.name for s in _subnets(plan) if s.inputs["tags"].get(contract.DISCOVERY_TAG)}
    assert private and not private & {s.name for s in _candidates(plan, "kubernetes.io/role/internal-elb")}
    for name, node_class in plan.objects("EC2NodeClass").items():
        assert node_class["spec"]["subnetSelectorTerms"] == [
            {"tags": {contract.DISCOVERY_TAG: plan.settings.cluster.name}}
        ], name


def test_every_node_has_exactly_the_cluster_security_group(plan: Plan) -> None:
    """So each pod ENI has one security group and the controller uses it, tagged or not.

    - Karpenter nodes: every EC2NodeClass selects security groups by the discovery tag alone,
      and the program puts that tag on one group only, the EKS-created cluster security group
      (which EKS tags `kubernetes.io/cluster/<name>: owned`; EKS user guide, "View Amazon EKS
      security group requirements for clusters").
    - System nodes: their launch template names no security group and no network interface,
      so EKS gives the managed node group's instances the cluster security group (EKS user guide,
      "Customize managed nodes with launch templates": security groups).
    - pulumi-eks creates no node security group of its own (`skipDefaultSecurityGroups`), and the
      program creates no security group at all.
    - The VPC CNI's secondary ENIs, where pods take their addresses, copy the primary ENI's groups.
    """
    name = plan.settings.cluster.name
    selector = [{"tags": {contract.DISCOVERY_TAG: name}}]
    node_classes = plan.objects("EC2NodeClass")
    assert node_classes
    assert {n: c["spec"]["securityGroupSelectorTerms"] for n, c in node_classes.items()} == dict.fromkeys(
        node_classes, selector
    )
    (tag,) = [t for t in plan.of_type("aws:ec2/tag:Tag") if t.inputs["key"] == contract.DISCOVERY_TAG]
    (cluster,) = plan.of_type("eks:index:Cluster")
    assert tag.inputs["value"] == name and tag.name == "cluster-sg-discovery"
    assert cluster.inputs["skipDefaultSecurityGroups"] is True
    (template,) = plan.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    for key in ("vpcSecurityGroupIds", "securityGroupNames", "networkInterfaces"):
        assert key not in template.inputs, key
    (group,) = plan.of_type("aws:eks/nodeGroup:NodeGroup")
    assert group.inputs["launchTemplate"]["id"] and "remoteAccess" not in group.inputs
    assert [r.name for r in plan.resources if r.type == "aws:ec2/securityGroup:SecurityGroup"] == []
