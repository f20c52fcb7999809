"""`pulumi destroy` deletes every finalizer-guarded custom resource while what its controller
needs is still there.

Why it matters (upstream, at the pinned versions):
- pulumi-kubernetes (`provider/pkg/await/await.go` `Deletion`, v4.32.0) deletes with foreground
  propagation and waits until the object is gone (10 minutes by default), so a custom resource
  whose finalizer never clears fails the destroy and stays in the stack.
- Karpenter v1.14.1: deleting a NodePool deletes its NodeClaims (owner references with
  `blockOwnerDeletion`, kubernetes-sigs/karpenter `pkg/utils/nodeclaim/nodeclaim.go`); each
  NodeClaim's finalizer deletes the Node, waits for the drain (`pkg/controllers/node/termination`)
  and calls `TerminateInstances` (`pkg/controllers/nodeclaim/lifecycle/controller.go` `finalize`).
  The EC2NodeClass finalizer waits for every NodeClaim of the class, then removes the node role
  from the instance profiles it created, deletes them and its launch templates
  (aws/karpenter-provider-aws `pkg/controllers/nodeclass/controller.go` `finalize`). All of that is
  the controller pod calling EC2 and IAM: it needs its pod (Helm release, CRDs, system nodes),
  its credentials (Pod Identity agent add-on, association, role and inline policy), DNS (CoreDNS;
  the chart's `dnsPolicy` is ClusterFirst) and a route to the AWS APIs from the private subnets
  (route table associations, tables, NAT gateways, their EIPs, the public route to the IGW).
  Nodes still draining need the node role, its policies and access entry. The interruption queue
  is not needed to terminate.
- KEDA v2.20.2 puts `finalizer.keda.sh` on ScaledObjects, ScaledJobs and TriggerAuthentications
  (`controllers/keda/*_finalizer.go`, `controllers/keda/util/finalizer.go`); the HTTP add-on
  v0.15.0 puts `httpscaledobject.http.keda.sh` on HTTPScaledObjects
  (`operator/controllers/http/finalizer.go`). Only the running operators remove them.

"Still there" is what the object transitively depends on in Pulumi's delete graph
(tests/support/delete_order.py): only that is ordered by the engine. A full destroy's waves are
counted from the bottom of the graph, so today they happen to put the NAT gateways or the
controller's policy late, but nothing holds them there: with `--continue-on-error`, once a
NodePool's deletion fails (say the 10-minute await runs out while GPU nodes drain), the engine
still runs every later wave except what the failed step transitively depends on
(`performPostSteps` in pkg/resource/deploy/deployment_executor.go). NodeOverlays have no finalizer;
they are checked with the rest so that no Karpenter object outlives its controller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pytest

from tests.conftest import Plan, settings_of
from tests.support.delete_order import DeleteGraph, delete_graph, label
from tests.unit.helpers import build, named
from tools.plan.mocks import Recorded

RELEASE = "kubernetes:helm.sh/v3:Release"


@dataclass(frozen=True)
class Needed:
    type: str
    name: str  # a regular expression over the logical name, matched in full
    why: str

    def matches(self, r: Recorded) -> bool:
        return r.type == self.type and re.fullmatch(self.name, r.name) is not None


KARPENTER_KINDS = ("NodePool", "EC2NodeClass", "NodeOverlay")
NEEDED_BY_KARPENTER = (
    Needed(RELEASE, "karpenter-controller", "the controller that runs the finalizers"),
    Needed(RELEASE, "karpenter-crd", "the CRDs: deleting them deletes every Karpenter object at once"),
    Needed("aws:eks/nodeGroup:NodeGroup", "cluster-system", "the nodes the controller runs on"),
    Needed("aws:eks/addon:Addon", "cluster-coredns", "DNS for the AWS API endpoints"),
    Needed("aws:eks/addon:Addon", "cluster-eks-pod-identity-agent", "hands the controller its credentials"),
    Needed("aws:eks/podIdentityAssociation:PodIdentityAssociation", "karpenter-controller-pod-identity", "ditto"),
    Needed("aws:iam/role:Role", "karpenter-controller-role", "the controller's identity"),
    Needed("aws:iam/rolePolicy:RolePolicy", "karpenter-controller-policy", "TerminateInstances, instance profiles"),
    Needed("aws:iam/role:Role", "karpenter-node-role", "in the instance profiles the finalizer removes"),
    Needed("aws:iam/rolePolicyAttachment:RolePolicyAttachment", r"karpenter-node-\d+", "draining nodes' kubelet"),
    Needed("aws:eks/accessEntry:AccessEntry", "karpenter-node-access", "draining nodes' kubelet"),
    Needed("eks:index:Cluster", "cluster-eks", "the API server"),
    Needed("pulumi:providers:kubernetes", "cluster-k8s", "what deletes the objects"),
    Needed("aws:ec2/routeTableAssociation:RouteTableAssociation", r"network-private-rta-\d+", "egress to AWS APIs"),
    Needed("aws:ec2/routeTable:RouteTable", r"network-private-rt-\d+", "egress to AWS APIs"),
    Needed("aws:ec2/natGateway:NatGateway", r"network-nat-\d+", "egress to AWS APIs"),
    Needed("aws:ec2/eip:Eip", r"network-nat-eip-\d+", "the NAT gateways' addresses"),
    Needed("aws:ec2/routeTableAssociation:RouteTableAssociation", r"network-public-rta-\d+", "the NATs' route out"),
    Needed("aws:ec2/routeTable:RouteTable", "network-public-rt", "the NATs' route out"),
    Needed("aws:ec2/internetGateway:InternetGateway", "network-igw", "the NATs' route out"),
    Needed("aws:ec2/subnet:Subnet", r"network-(private|public)-\d+", "where the nodes and NATs are"),
    Needed("aws:ec2/vpc:Vpc", "network-vpc", "ditto"),
)
KEDA_RELEASE = Needed(RELEASE, "keda-release", "the KEDA operator, which removes finalizer.keda.sh")
HTTP_ADD_ON_RELEASE = Needed(RELEASE, "keda-http-release", "the add-on operator, which removes its finalizer")
NEEDED_BY_KEDA = {
    "ScaledObject": (KEDA_RELEASE,),
    "ScaledJob": (KEDA_RELEASE,),
    "TriggerAuthentication": (KEDA_RELEASE,),
    "HTTPScaledObject": (KEDA_RELEASE, HTTP_ADD_ON_RELEASE),
}


@pytest.fixture(params=["dev", "prod"])
def checked_plan(request: pytest.FixtureRequest) -> Plan:
    return request.getfixturevalue(f"{request.param}_plan")


def custom_objects(plan: Plan, kinds: tuple[str, ...]) -> list[Recorded]:
    found = [r for r in plan.resources if r.type.startswith("kubernetes:") and r.inputs.get("kind") in kinds]
    return sorted(found, key=lambda r: (r.inputs["kind"], r.name))


def deleted_too_early(plan: Plan, graph: DeleteGraph, obj: Recorded, needed: tuple[Needed, ...]) -> list[str]:
    """What `obj`'s controller needs but may already be gone while `obj` is being deleted."""
    alive = graph.outlives(obj.urn)
    early = []
    for need in needed:
        found = sorted((r for r in plan.resources if need.matches(r)), key=lambda r: r.name)
        assert found, f"no {need.type} named like {need.name!r} in the plan: update {__name__}.Needed"
        early += [f"{label(r)} ({need.why})" for r in found if r.urn not in alive]
    return early


def report(plan: Plan, needed_by: dict[str, tuple[Needed, ...]]) -> str:
    """One paragraph per group of objects that the same needed resources may not outlive."""
    graph = delete_graph(plan.resources)
    objects = custom_objects(plan, tuple(needed_by))
    assert objects, f"no {'/'.join(needed_by)} in the plan"
    by_early: dict[tuple[str, ...], list[str]] = {}
    for obj in objects:
        early = deleted_too_early(plan, graph, obj, needed_by[obj.inputs["kind"]])
        if early:
            by_early.setdefault(tuple(early), []).append(f"{obj.inputs['kind']} {obj.name}")
    return "\n".join(
        f"deleting {', '.join(objs)}, these may already be gone:\n" + "\n".join(f"    {item}" for item in early)
        for early, objs in by_early.items()
    )


def test_karpenter_objects_are_deleted_while_karpenter_can_terminate_nodes(checked_plan: Plan) -> None:
    problems = report(checked_plan, dict.fromkeys(KARPENTER_KINDS, NEEDED_BY_KARPENTER))
    assert not problems, f"pulumi destroy could strand nodes:\n{problems}"


def test_keda_objects_are_deleted_while_their_operators_run(checked_plan: Plan) -> None:
    problems = report(checked_plan, NEEDED_BY_KEDA)
    assert not problems, f"pulumi destroy could leave KEDA objects stuck on their finalizers:\n{problems}"


# The AWS Load Balancer Controller (infra/load_balancer.py, built as "lb") removes the ALB, its
# listeners, target groups and security groups of an Ingress when the Ingress is deleted, then the
# `ingress.k8s.aws/resources` finalizer (kubernetes-sigs/aws-load-balancer-controller v3.5.0,
# pkg/ingress/finalizer.go, controllers/ingress/group_controller.go `cleanupGroupResources`). It
# calls ELBv2 and EC2 from its pods: it needs them (release, nodes), credentials (the Pod Identity
# agent, association, role and inline policy), DNS and the route to the AWS APIs. An Ingress is
# safe when all of LB_CONTROLLER_RELEASE + NEEDED_BY_LB_CONTROLLER outlive it:
#     assert deleted_too_early(plan, delete_graph(plan.resources), ingress, NEEDED_BY_INGRESS) == []
LB_CONTROLLER_RELEASE = Needed(RELEASE, "lb-release", "the controller, which deletes the ALB and the finalizer")
EGRESS = tuple(n for n in NEEDED_BY_KARPENTER if n.type.startswith("aws:ec2/"))
NEEDED_BY_LB_CONTROLLER = (
    Needed("aws:iam/rolePolicy:RolePolicy", "lb-controller-policy", "DeleteLoadBalancer, DeleteTargetGroup, ..."),
    Needed("aws:iam/role:Role", "lb-controller-role", "the controller's identity"),
    Needed("aws:eks/podIdentityAssociation:PodIdentityAssociation", "lb-controller-pod-identity", "its credentials"),
    Needed("kubernetes:core/v1:Namespace", "lb-ns", "where it runs"),
    Needed("aws:eks/nodeGroup:NodeGroup", "cluster-system", "the nodes it runs on"),
    Needed("aws:eks/addon:Addon", "cluster-coredns", "DNS for the AWS API endpoints"),
    Needed("aws:eks/addon:Addon", "cluster-eks-pod-identity-agent", "hands the controller its credentials"),
    *EGRESS,
)
NEEDED_BY_INGRESS = (LB_CONTROLLER_RELEASE, *NEEDED_BY_LB_CONTROLLER)


def lb_controller_problems(plan: Plan) -> list[str]:
    """What the controller's release may outlive although it needs it to delete load balancers."""
    (release,) = [r for r in plan.resources if LB_CONTROLLER_RELEASE.matches(r)]
    return deleted_too_early(plan, delete_graph(plan.resources), release, NEEDED_BY_LB_CONTROLLER)


def test_the_lb_controller_outlives_nothing_it_needs(checked_plan: Plan) -> None:
    if not any(LB_CONTROLLER_RELEASE.matches(r) for r in checked_plan.resources):
        pytest.skip("this stack installs no AWS Load Balancer Controller")
    assert lb_controller_problems(checked_plan) == []


def test_every_ingress_goes_before_the_controller_that_deletes_its_load_balancer(checked_plan: Plan) -> None:
    """An Ingress deleted after the controller keeps its finalizer (destroy hangs) and its ALB, whose
    network interfaces then block the subnets' and the VPC's deletion."""
    ingresses = [r for r in checked_plan.resources if r.type == "kubernetes:networking.k8s.io/v1:Ingress"]
    assert len(ingresses) == len(checked_plan.settings.exposed)
    graph = delete_graph(checked_plan.resources)
    for ingress in ingresses:
        assert deleted_too_early(checked_plan, graph, ingress, NEEDED_BY_INGRESS) == [], ingress.name


def _lb_controller_program() -> None:
    """The real Network and controller component, with stand-ins of the real types and names for
    the cluster parts it is given (tests/unit/test_cluster.py covers those)."""
    from infra import mapping
    from infra.load_balancer import LoadBalancerController, LoadBalancerControllerArgs
    from infra.network import Network

    cfg = settings_of("dev")
    network = Network("network", mapping.network_args(cfg.network, cluster_name="c", availability_zones=("z-a", "z-b")))
    nodes = pulumi.CustomResource("aws:eks/nodeGroup:NodeGroup", "cluster-system", {})
    after_nodes = pulumi.ResourceOptions(depends_on=[nodes])
    agent = pulumi.CustomResource("aws:eks/addon:Addon", "cluster-eks-pod-identity-agent", {}, after_nodes)
    coredns = pulumi.CustomResource("aws:eks/addon:Addon", "cluster-coredns", {}, after_nodes)
    monitoring = pulumi.CustomResource(RELEASE, "monitoring-release", {}, after_nodes)
    args = LoadBalancerControllerArgs(
        cluster_name="c",
        region="us-west-2",
        vpc_id=network.vpc_id,
        depends_on=[nodes, agent, coredns, *network.egress, monitoring],
    )
    controller = LoadBalancerController("lb", args)
    pulumi.CustomResource(
        "kubernetes:networking.k8s.io/v1:Ingress",
        "endpoints-llm",
        {},
        pulumi.ResourceOptions(depends_on=[controller.release]),
    )


def test_the_lb_controller_component_orders_its_destroy() -> None:
    plan = Plan(settings_of("dev"), build(_lb_controller_program))
    assert lb_controller_problems(plan) == []
    ingress = named(plan.resources, "endpoints-llm")
    assert deleted_too_early(plan, delete_graph(plan.resources), ingress, NEEDED_BY_INGRESS) == []


def test_an_lb_controller_given_no_egress_is_reported() -> None:
    """Break the wiring on purpose: without the egress path in `depends_on`, the NAT gateways and
    routes may go first, and the check names them."""
    resources = build(_lb_controller_program)
    release = named(resources, "lb-release")
    egress = {r.urn for r in resources if any(n.matches(r) for n in EGRESS if "rt" in n.name or "nat" in n.name)}
    release.dependencies[:] = [d for d in release.dependencies if d not in egress]
    problems = lb_controller_problems(Plan(settings_of("dev"), resources))
    assert any("NatGateway network-nat-0" in p for p in problems), problems
    assert any("RouteTableAssociation network-private-rta-0" in p for p in problems), problems


class _Component(pulumi.ComponentResource):
    def __init__(self, name: str, make_children, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("test:index:Component", name, None, opts)
        make_children(pulumi.ResourceOptions(parent=self))
        self.register_outputs({})


def _thing(name: str, opts: pulumi.ResourceOptions | None = None, **props) -> pulumi.CustomResource:
    return pulumi.CustomResource("test:index:Thing", name, props, opts)


def _edges_program() -> None:
    provider = pulumi.ProviderResource("test", "prov")
    inner = {}

    def outer_children(opts: pulumi.ResourceOptions) -> None:
        inner["first"] = _thing("first", opts)
        _Component("inner", lambda o: inner.setdefault("second", _thing("second", o)), opts)

    outer = _Component("outer", outer_children)
    user = _thing("user", pulumi.ResourceOptions(depends_on=[outer], provider=provider))
    _thing("by-property", source=user.urn)
    _thing("deleted-with", pulumi.ResourceOptions(deleted_with=inner["first"]))
    _thing("replaced-with", pulumi.ResourceOptions(replace_with=[inner["second"]]))


def test_the_recording_keeps_every_edge_the_delete_order_follows() -> None:
    resources = build(_edges_program)
    urn = {r.name: r.urn for r in resources}
    user = named(resources, "user")
    # The SDK expands `depends_on=[component]` into the component's custom descendants.
    assert sorted(user.dependencies) == sorted([urn["first"], urn["second"]]), user.dependencies
    assert named(resources, "by-property").dependencies == [urn["user"]]
    assert named(resources, "deleted-with").deleted_with == urn["first"]
    assert named(resources, "replaced-with").replace_with == [urn["second"]]

    graph = delete_graph(resources)
    names = {u: r.name for u, r in graph.resources.items()}
    assert sorted(names[u] for u in graph.outlives(urn["user"])) == ["first", "inner", "outer", "prov", "second"]
    assert graph.outlives(urn["by-property"]) == {urn["user"], *graph.outlives(urn["user"])}
    # `ScheduleDeletes`: counted from the bottom, so `deleted-with` goes with `second`, not first.
    assert [sorted(names[u] for u in wave) for wave in graph.delete_waves()] == [
        ["by-property"],
        ["replaced-with", "user"],
        ["deleted-with", "second"],
        ["first", "inner"],
        ["outer", "prov"],
    ]


def _recorded(name: str, *, custom: bool = True, parent: str = "", dependencies: tuple[str, ...] = ()) -> Recorded:
    return Recorded(f"urn:{name}", "test:index:Thing", name, parent, custom, "", {}, list(dependencies))


def test_a_dependency_on_a_remote_component_covers_its_children_registered_before() -> None:
    """`DependenciesOf`: a remote component (say `eks:index:Cluster`) stands for its children,
    but only those earlier in the snapshot, so the widening can never make a cycle."""
    remote = _recorded("remote", custom=False)
    before = _recorded("before", parent="urn:remote")
    user = _recorded("user", dependencies=("urn:remote",))
    after = _recorded("after", parent="urn:remote")
    graph = delete_graph([remote, before, user, after])
    assert graph.outlives("urn:user") == {"urn:remote", "urn:before"}
    assert graph.outlives("urn:after") == {"urn:remote"}
