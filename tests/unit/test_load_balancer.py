"""The AWS Load Balancer Controller component under the recording mocks: names, parenting,
the release's recorded values and dependencies, and the IAM document (upstream's, unchanged)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pulumi

from domain import contract, naming, versions
from infra import load_balancer
from infra.load_balancer import LoadBalancerController, LoadBalancerControllerArgs
from tests.unit.helpers import assert_parented, build, named, of_type
from tools.plan.mocks import Recorded

TYPE = "gpuinf:load_balancer:LoadBalancerController"
CLUSTER = "gpuinf-dev"
VPC = "vpc-0123456789abcdef0"
DATA = Path(load_balancer.__file__).resolve().parents[1] / "domain" / "data"
# Recorded when the file was vendored (domain/data/SOURCES.md): sha256 of upstream's
# docs/install/iam_policy.json at kubernetes-sigs/aws-load-balancer-controller tag v3.5.0.
UPSTREAM_SHA256 = "16f232c9d9f79366fe949c4550ad517a202380058a9e48d45a4e215044a20a6a"


def _program(depends_on: tuple[str, ...] = ()) -> None:
    needed = [pulumi.CustomResource("test:index:Thing", n, {}) for n in depends_on]
    LoadBalancerController(
        "lb", LoadBalancerControllerArgs(cluster_name=CLUSTER, region="us-west-2", vpc_id=VPC, depends_on=needed)
    )


def _built(depends_on: tuple[str, ...] = ()) -> list[Recorded]:
    return build(lambda: _program(depends_on))


def test_children_are_named_after_the_component_and_parented_to_it() -> None:
    resources = _built()
    assert_parented(resources, TYPE)
    assert sorted((r.type, r.name) for r in resources if r.type != TYPE) == [
        ("aws:eks/podIdentityAssociation:PodIdentityAssociation", "lb-controller-pod-identity"),
        ("aws:iam/role:Role", "lb-controller-role"),
        ("aws:iam/rolePolicy:RolePolicy", "lb-controller-policy"),
        ("kubernetes:core/v1:Namespace", "lb-ns"),
        ("kubernetes:helm.sh/v3:Release", "lb-release"),
    ]


def test_the_namespace_enforces_restricted() -> None:
    namespace = named(_built(), "lb-ns").inputs["metadata"]
    assert namespace["name"] == load_balancer.NAMESPACE == "aws-load-balancer-controller"
    assert namespace["labels"] == {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    }


def test_pod_identity_binds_the_role_to_the_charts_service_account() -> None:
    resources = _built()
    role = named(resources, "lb-controller-role").inputs
    assert role["name"] == "gpuinf-dev-aws-lb-controller"
    assert json.loads(role["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    association = named(resources, "lb-controller-pod-identity").inputs
    release = named(resources, "lb-release").inputs
    assert (association["clusterName"], association["namespace"], association["serviceAccount"]) == (
        CLUSTER,
        release["namespace"],
        release["values"]["serviceAccount"]["name"],
    )


def test_the_role_name_fits_iam_at_the_longest_cluster_name() -> None:
    longest = "c" * 38  # domain/settings/cluster.py caps cluster names at 38
    assert len(load_balancer.role_name(longest)) <= naming.IAM_ROLE
    assert load_balancer.role_name("gpuinf-prod") == "gpuinf-prod-aws-lb-controller"


def test_the_release_is_pinned_with_our_values() -> None:
    release = named(_built(), "lb-release").inputs
    chart = versions.AWS_LOAD_BALANCER_CONTROLLER
    assert (release["chart"], release["version"], release["repositoryOpts"], release["name"]) == (
        "aws-load-balancer-controller",
        "3.5.0",
        {"repo": "https://aws.github.io/eks-charts"},
        "aws-load-balancer-controller",
    )
    assert (chart.chart, chart.version) == (release["chart"], release["version"])
    values = release["values"]
    assert values == load_balancer.helm_values(CLUSTER, "us-west-2", VPC)
    assert (values["clusterName"], values["region"], values["vpcId"]) == (CLUSTER, "us-west-2", VPC)
    assert values["image"] == {
        "repository": "public.ecr.aws/eks/aws-load-balancer-controller",
        "tag": "v3.5.0",
        "pullPolicy": "IfNotPresent",
    }
    assert (
        f"{values['image']['repository']}:{values['image']['tag']}" == versions.IMAGES["aws-load-balancer-controller"]
    )
    assert (values["ingressClass"], values["createIngressClassResource"]) == (contract.INGRESS_CLASS, False)
    assert (values["replicaCount"], values["podDisruptionBudget"]) == (2, {"maxUnavailable": 1})
    assert values["nodeSelector"] == {"kubernetes.io/os": "linux", "gpu-inference.io/role": "system"}
    assert values["tolerations"] == contract.system_tolerations()
    assert (values["defaultTargetType"], values["enableServiceMutatorWebhook"]) == ("ip", False)
    assert values["serviceMonitor"] == {"enabled": True}


def test_the_release_waits_for_its_identity_namespace_and_what_it_was_given() -> None:
    resources = _built(depends_on=("system-nodes", "egress"))
    urn = {r.name: r.urn for r in resources}
    release = named(resources, "lb-release")
    assert sorted(release.dependencies) == sorted(
        urn[n] for n in ("lb-ns", "lb-controller-policy", "lb-controller-pod-identity", "system-nodes", "egress")
    )
    # The policy is attached to the role the association hands out.
    assert named(resources, "lb-controller-policy").dependencies == [urn["lb-controller-role"]]


# --- IAM ---------------------------------------------------------------------------------


def _sources_sha256() -> str:
    text = (DATA / "SOURCES.md").read_text()
    found = re.search(rf"sha256 of `{re.escape(load_balancer.IAM_POLICY_FILE)}`:\s*`([0-9a-f]{{64}})`", text)
    assert found, "domain/data/SOURCES.md records no sha256 for the IAM policy file"
    return found.group(1)


def test_the_stored_policy_is_upstreams_byte_for_byte() -> None:
    stored = (DATA / load_balancer.IAM_POLICY_FILE).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == _sources_sha256() == UPSTREAM_SHA256
    assert load_balancer.iam_policy_document().encode() == stored  # read as package data


def test_the_inline_policy_is_exactly_the_document() -> None:
    policy = of_type(_built(), "aws:iam/rolePolicy:RolePolicy")
    assert len(policy) == 1
    assert policy[0].inputs["policy"] == (DATA / load_balancer.IAM_POLICY_FILE).read_text()


def test_the_document_fits_an_inline_role_policy() -> None:
    """IAM counts an inline role policy without white space against 10,240 characters
    (IAM user guide, "IAM and AWS STS quotas": role policy size)."""
    document = json.loads(load_balancer.iam_policy_document())
    assert len(json.dumps(document, separators=(",", ":"))) <= 10_240


def _unconditioned_star_actions() -> set[str]:
    document = json.loads(load_balancer.iam_policy_document())
    found: set[str] = set()
    for statement in document["Statement"]:
        if statement["Effect"] == "Allow" and statement["Resource"] == "*" and "Condition" not in statement:
            found |= set(statement["Action"])
    return found


def test_what_it_allows_on_every_resource_without_a_condition() -> None:
    """The writes upstream grants on `*` with no `elbv2.k8s.aws/cluster` tag condition (the rest are
    Describe/Get/List reads). Listed so a controller bump that widens them shows in review."""
    writes = {a for a in _unconditioned_star_actions() if not re.match(r"[^:]+:(Describe|Get|List)", a)}
    assert writes == {
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:CreateSecurityGroup",
        "elasticloadbalancing:CreateListener",
        "elasticloadbalancing:DeleteListener",
        "elasticloadbalancing:CreateRule",
        "elasticloadbalancing:DeleteRule",
        "elasticloadbalancing:SetWebAcl",
        "elasticloadbalancing:ModifyListener",
        "elasticloadbalancing:AddListenerCertificates",
        "elasticloadbalancing:RemoveListenerCertificates",
        "elasticloadbalancing:ModifyRule",
        "elasticloadbalancing:SetRulePriorities",
        "waf-regional:AssociateWebACL",
        "waf-regional:DisassociateWebACL",
        "wafv2:AssociateWebACL",
        "wafv2:DisassociateWebACL",
        "shield:CreateProtection",
        "shield:DeleteProtection",
    }
