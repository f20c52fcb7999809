from __future__ import annotations

import json

import pytest

from domain import contract, versions
from domain.karpenter_iam import controller_policy
from domain.settings import KarpenterSettings
from infra.karpenter import INTERRUPTION_EVENTS, NAMESPACE, SERVICE_ACCOUNT, Karpenter
from infra.mapping import karpenter_args
from tests.unit.helpers import assert_parented, build, named, of_type

CLUSTER = "gpuinf-test"


@pytest.fixture(scope="module")
def resources():
    args = karpenter_args(KarpenterSettings(), cluster_name=CLUSTER, region="us-west-2", pools={}, depends_on=[])
    return build(lambda: Karpenter("k", args))


def test_node_role_joins_through_an_access_entry(resources) -> None:
    role = named(resources, "k-node-role").inputs
    assert role["name"] == f"{CLUSTER}-karpenter-node"
    assert json.loads(role["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    entry = named(resources, "k-node-access").inputs
    assert entry == {
        "clusterName": CLUSTER,
        "principalArn": f"arn:aws:iam::123456789012:role/{CLUSTER}-karpenter-node",
        "type": "EC2_LINUX",
    }
    attached = sorted(
        r.inputs["policyArn"].rsplit("/", 1)[1]
        for r in resources
        if r.name.startswith("k-node-") and r.type == "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
    )
    assert attached == sorted(
        [
            "AmazonEKSWorkerNodePolicy",
            "AmazonEKS_CNI_Policy",
            "AmazonEC2ContainerRegistryPullOnly",
            "AmazonSSMManagedInstanceCore",
        ]
    )


def test_interruption_queue_and_all_five_event_rules(resources) -> None:
    queue = named(resources, "k-interruption").inputs
    assert queue["sqsManagedSseEnabled"] is True and queue["messageRetentionSeconds"] == 300
    rules = {
        r.name: json.loads(r.inputs["eventPattern"]) for r in of_type(resources, "aws:cloudwatch/eventRule:EventRule")
    }
    assert rules == {f"k-{event}": pattern for event, pattern in INTERRUPTION_EVENTS.items()}
    detail_types = {p["detail-type"][0] for p in rules.values()}
    assert detail_types == {
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance State-change Notification",
        "AWS Health Event",
        "EC2 Capacity Reservation Instance Interruption Warning",
    }
    targets = of_type(resources, "aws:cloudwatch/eventTarget:EventTarget")
    queue_arn = f"arn:aws:sqs:us-west-2:123456789012:{CLUSTER}-karpenter"
    assert len(targets) == len(INTERRUPTION_EVENTS) and all(t.inputs["arn"] == queue_arn for t in targets)
    policy = json.loads(named(resources, "k-interruption-policy").inputs["policy"])
    deny = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_controller_uses_pod_identity_for_the_charts_service_account(resources) -> None:
    trust = json.loads(named(resources, "k-controller-role").inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert set(trust["Action"]) == {"sts:AssumeRole", "sts:TagSession"}
    association = named(resources, "k-controller-pod-identity").inputs
    values = named(resources, "k-controller").inputs["values"]
    assert (association["namespace"], association["serviceAccount"]) == (NAMESPACE, SERVICE_ACCOUNT)
    assert values["serviceAccount"]["name"] == association["serviceAccount"]


def test_controller_policy_is_scoped_to_this_cluster(resources) -> None:
    policy = json.loads(named(resources, "k-controller-policy").inputs["policy"])
    # Upstream v1.14.1 grants these on `*` too: no resource-level permissions (see tests/test_karpenter_iam.py).
    unscopable = {"pricing:GetProducts", "iam:ListInstanceProfiles", "arc-zonal-shift:GetManagedResource"}
    wildcard_ok = unscopable | {a for a in json.dumps(policy).split('"') if a.startswith("ec2:Describe")}
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert "*" not in actions and not any(a.endswith(":*") for a in actions), statement["Sid"]
        if statement["Resource"] == "*":
            assert set(actions) <= wildcard_ok, f"{statement['Sid']} grants {actions} on every resource"
        if any(a in actions for a in ("ec2:TerminateInstances", "ec2:DeleteLaunchTemplate")):
            assert statement["Condition"]["StringEquals"] == {
                f"aws:ResourceTag/kubernetes.io/cluster/{CLUSTER}": "owned"
            }
    passrole = next(s for s in policy["Statement"] if s["Action"] == "iam:PassRole")
    assert passrole["Resource"] == f"arn:aws:iam::123456789012:role/{CLUSTER}-karpenter-node"
    describe = next(s for s in policy["Statement"] if s["Action"] == "eks:DescribeCluster")
    assert describe["Resource"] == f"arn:aws:eks:us-west-2:123456789012:cluster/{CLUSTER}"


def test_controller_policy_function_builds_arns_from_its_arguments() -> None:
    policy = controller_policy("c1", "eu-west-1", "210987654321", "arn:q", "arn:role")
    text = json.dumps(policy)
    assert "us-west-2" not in text and "123456789012" not in text
    assert "arn:aws:ec2:eu-west-1:*:instance/*" in text


def test_crds_release_then_controller_release_with_pinned_chart(resources) -> None:
    crds = named(resources, "k-crd").inputs
    controller = named(resources, "k-controller")
    assert (crds["chart"], crds["version"]) == (versions.KARPENTER_CRD.chart, versions.KARPENTER_VERSION)
    assert (controller.inputs["chart"], controller.inputs["version"]) == (
        versions.KARPENTER.chart,
        versions.KARPENTER_VERSION,
    )
    assert controller.inputs["skipCrds"] is True
    assert named(resources, "k-crd").urn in controller.dependencies
    values = controller.inputs["values"]
    assert values["settings"]["clusterName"] == CLUSTER
    assert values["settings"]["interruptionQueue"] == f"{CLUSTER}-karpenter"
    # NodeOverlay (slices), ReservedCapacity (capacity type reserved), NodeRepair (GPU health).
    assert values["settings"]["featureGates"] == {"nodeOverlay": True, "reservedCapacity": True, "nodeRepair": True}
    assert values["nodeSelector"] == {"kubernetes.io/os": "linux", **contract.SYSTEM_LABELS}
    assert values["tolerations"] == [contract.SYSTEM_TAINT.toleration()]
    assert_parented(resources, "gpuinf:karpenter:Karpenter")
