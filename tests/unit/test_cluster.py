from __future__ import annotations

import json

from domain import contract, versions
from domain.settings import ClusterSettings
from infra.cluster import CLUSTER_ADMIN_POLICY, Cluster
from infra.mapping import cluster_args
from tests.unit.helpers import assert_parented, build, named, of_type
from tools.plan.mocks import SECRET

ADMIN = "arn:aws:iam::123456789012:role/platform-admin"


def _cluster(**overrides):
    raw = {"name": "gpuinf-test", "version": "1.33", "adminRoleArns": [ADMIN], **overrides}
    settings = ClusterSettings.parse(raw)
    args = cluster_args(
        settings,
        vpc_id="vpc-1",
        public_subnet_ids=["subnet-pub-a", "subnet-pub-b"],
        private_subnet_ids=["subnet-priv-a", "subnet-priv-b"],
        tags={"environment": "test"},
    )
    return build(lambda: Cluster("c", args))


def test_eks_cluster_inputs() -> None:
    resources = _cluster()
    eks = named(resources, "c-eks").inputs
    key = named(resources, "c-secrets")
    assert key.inputs["enableKeyRotation"] is True
    assert eks["name"] == "gpuinf-test" and eks["version"] == "1.33"
    assert eks["authenticationMode"] == "API"
    assert eks["encryptionConfigKeyArn"].startswith("arn:aws:kms:us-west-2:")
    assert eks["enabledClusterLogTypes"] == ["api", "audit", "authenticator", "controllerManager", "scheduler"]
    assert eks["endpointPrivateAccess"] is True
    assert eks["createOidcProvider"] is True
    assert eks["skipDefaultNodeGroup"] is True and eks["skipDefaultSecurityGroups"] is True
    assert eks["privateSubnetIds"] == ["subnet-priv-a", "subnet-priv-b"]
    admin = eks["accessEntries"]["admin-0"]
    assert admin["principalArn"] == ADMIN
    assert admin["accessPolicies"]["cluster-admin"]["policyArn"] == CLUSTER_ADMIN_POLICY


def test_private_endpoint_has_no_public_cidrs() -> None:
    eks = named(_cluster(endpointPublicAccess=False, privateAccess={"cidrs": ["10.60.8.0/24"]}), "c-eks").inputs
    assert eks["endpointPublicAccess"] is False
    assert "publicAccessCidrs" not in eks


def test_public_endpoint_limited_to_configured_cidrs() -> None:
    eks = named(_cluster(publicAccessCidrs=["203.0.113.0/24"]), "c-eks").inputs
    assert eks["publicAccessCidrs"] == ["203.0.113.0/24"]


def test_system_node_group_is_on_demand_tainted_and_encrypted() -> None:
    resources = _cluster()
    group = named(resources, "c-system").inputs
    assert group["capacityType"] == "ON_DEMAND"
    assert group["labels"] == contract.SYSTEM_LABELS
    assert group["taints"] == [{"key": "CriticalAddonsOnly", "value": "true", "effect": "NO_SCHEDULE"}]
    assert group["amiType"] == versions.SYSTEM_NODE_AMI_TYPE
    assert group["scalingConfig"] == {"minSize": 2, "desiredSize": 2, "maxSize": 3}
    assert group["launchTemplate"]["version"] == "1"
    template = named(resources, "c-system-lt").inputs
    ebs = template["blockDeviceMappings"][0]["ebs"]
    assert ebs["encrypted"] == "true" and ebs["volumeType"] == "gp3"
    assert template["metadataOptions"]["httpTokens"] == "required"


def test_log_group_retention_and_addon_pin() -> None:
    resources = _cluster(logRetentionDays=90)
    logs = named(resources, "c-control-plane-logs").inputs
    assert logs == {"name": "/aws/eks/gpuinf-test/cluster", "retentionInDays": 90}
    addon = named(resources, "c-eks-pod-identity-agent").inputs
    assert addon["addonName"] == "eks-pod-identity-agent"
    assert addon["addonVersion"] == versions.EKS_ADDONS["eks-pod-identity-agent"]["1.33"]


def test_coredns_runs_on_the_system_nodes_after_they_exist() -> None:
    resources = _cluster()
    assert named(resources, "c-eks").inputs["corednsAddonOptions"]["enabled"] is False
    coredns = named(resources, "c-coredns")
    assert coredns.inputs["addonVersion"] == versions.EKS_ADDONS["coredns"]["1.33"]
    config = json.loads(coredns.inputs["configurationValues"])
    assert config["nodeSelector"] == contract.SYSTEM_LABELS
    assert config["tolerations"] == [contract.SYSTEM_TAINT.toleration()]
    assert named(resources, "c-system").urn in coredns.dependencies


def test_cluster_security_group_is_tagged_for_karpenter() -> None:
    tag = named(_cluster(), "c-sg-discovery").inputs
    assert tag["key"] == contract.DISCOVERY_TAG and tag["value"] == "gpuinf-test"
    assert tag["resourceId"].startswith("sg-")


def test_kubernetes_provider_gets_the_kubeconfig_as_a_secret() -> None:
    resources = _cluster()
    provider = of_type(resources, "pulumi:providers:kubernetes")
    assert len(provider) == 1
    assert provider[0].inputs["kubeconfig"] == SECRET
    assert "gpuinf:cluster:Cluster$" in provider[0].urn
    assert_parented(resources, "gpuinf:cluster:Cluster")


RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
RUNNER_SG = "sg-0123456789abcdef0"


def test_private_access_opens_https_from_each_source_on_the_cluster_security_group() -> None:
    resources = _cluster(
        endpointPublicAccess=False,
        privateAccess={"cidrs": ["10.60.8.0/24", "10.61.0.0/16"], "securityGroupIds": [RUNNER_SG]},
    )
    cluster_sg = named(resources, "c-sg-discovery").inputs["resourceId"]
    rules = {r.name: r for r in of_type(resources, RULE)}
    assert sorted(rules) == ["c-api-from-cidr-10-60-8-0-24", "c-api-from-cidr-10-61-0-0-16", f"c-api-from-{RUNNER_SG}"]
    for rule in rules.values():
        got = {k: rule.inputs[k] for k in ("securityGroupId", "ipProtocol", "fromPort", "toPort")}
        assert got == {"securityGroupId": cluster_sg, "ipProtocol": "tcp", "fromPort": 443, "toPort": 443}, rule.name
        assert "privateAccess" in rule.inputs["description"]
    assert rules["c-api-from-cidr-10-60-8-0-24"].inputs["cidrIpv4"] == "10.60.8.0/24"
    assert "referencedSecurityGroupId" not in rules["c-api-from-cidr-10-60-8-0-24"].inputs
    assert rules[f"c-api-from-{RUNNER_SG}"].inputs["referencedSecurityGroupId"] == RUNNER_SG
    assert "cidrIpv4" not in rules[f"c-api-from-{RUNNER_SG}"].inputs
    # Kubernetes objects go through the provider: it waits for (and on destroy outlives) the rules.
    provider = of_type(resources, "pulumi:providers:kubernetes")[0]
    assert {r.urn for r in rules.values()} <= set(provider.dependencies)
    assert_parented(resources, "gpuinf:cluster:Cluster")


def test_no_private_access_no_rules() -> None:
    assert of_type(_cluster(), RULE) == []


def test_prod_plan_lets_its_runner_network_reach_the_private_endpoint(prod_plan) -> None:
    cluster_sg = prod_plan.one("aws:ec2/tag:Tag", "cluster-sg-discovery").inputs["resourceId"]
    rule = prod_plan.one(RULE)
    assert rule.inputs["securityGroupId"] == cluster_sg and cluster_sg.startswith("sg-")
    assert (rule.inputs["fromPort"], rule.inputs["toPort"], rule.inputs["ipProtocol"]) == (443, 443, "tcp")
    assert rule.inputs["cidrIpv4"] == "10.60.8.0/24"
