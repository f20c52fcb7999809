from __future__ import annotations

import pytest

from tests.policy_rules import fixtures as fx
from tests.policy_rules.helpers import mutated, resource_violations

COMPONENT = "eks:index:Cluster"
CLUSTER = "aws:eks/cluster:Cluster"
PROD_ENDPOINT = {"allowPublicEndpoint": False}


@pytest.mark.parametrize("rule", ["eks-secrets-encryption", "eks-control-plane-logging", "eks-endpoint-access"])
def test_happy_clusters_pass_in_both_shapes(rule: str) -> None:
    assert resource_violations(rule, COMPONENT, fx.eks_component(), PROD_ENDPOINT) == []
    assert resource_violations(rule, CLUSTER, fx.eks_cluster(), PROD_ENDPOINT) == []


def test_no_secrets_encryption() -> None:
    expected = ["EKS cluster gpuinf-prod does not envelope-encrypt Kubernetes secrets with a KMS key"]
    assert (
        resource_violations(
            "eks-secrets-encryption", COMPONENT, mutated(fx.eks_component(), "encryptionConfigKeyArn", None)
        )
        == expected
    )
    assert (
        resource_violations(
            "eks-secrets-encryption", CLUSTER, mutated(fx.eks_cluster(), "encryptionConfig.resources", [])
        )
        == expected
    )


def test_missing_log_types_and_the_required_set_from_config() -> None:
    props = mutated(fx.eks_component(), "enabledClusterLogTypes", ["api"])
    assert resource_violations("eks-control-plane-logging", COMPONENT, props) == [
        "EKS cluster gpuinf-prod does not send control-plane logs ['audit', 'authenticator'] to CloudWatch"
    ]
    assert resource_violations("eks-control-plane-logging", COMPONENT, props, {"requiredLogTypes": ["api"]}) == []


def test_public_endpoint_where_private_is_required() -> None:
    props = mutated(fx.eks_cluster(), "vpcConfig.endpointPublicAccess", True)
    assert resource_violations("eks-endpoint-access", CLUSTER, props, PROD_ENDPOINT) == [
        "EKS cluster gpuinf-prod has a public API endpoint; this environment requires a private one"
    ]
    assert resource_violations("eks-endpoint-access", CLUSTER, props) == []  # dev: public allowed by default


def test_public_endpoint_outside_the_allowed_cidrs() -> None:
    props = {**fx.eks_component(), "endpointPublicAccess": True, "publicAccessCidrs": ["203.0.113.0/24"]}
    config = {"allowPublicEndpoint": True, "allowedPublicCidrs": ["203.0.113.0/24"]}
    assert resource_violations("eks-endpoint-access", COMPONENT, props, config) == []
    open_props = mutated(props, "publicAccessCidrs", None)  # EKS defaults to 0.0.0.0/0
    assert resource_violations("eks-endpoint-access", COMPONENT, open_props, config) == [
        "EKS cluster gpuinf-prod exposes its API to ['0.0.0.0/0'], outside the allowed ['203.0.113.0/24']"
    ]


def test_no_endpoint_at_all() -> None:
    props = mutated(fx.eks_component(), "endpointPrivateAccess", False)
    assert resource_violations("eks-endpoint-access", COMPONENT, props, PROD_ENDPOINT) == [
        "EKS cluster gpuinf-prod has neither a public nor a private API endpoint"
    ]


def test_kms_rotation() -> None:
    key = "aws:kms/key:Key"
    assert resource_violations("kms-key-rotation", key, {"enableKeyRotation": True}) == []
    assert resource_violations("kms-key-rotation", key, {"enableKeyRotation": False}, name="k") == [
        "KMS key k does not rotate its key material"
    ]
    asymmetric = {"customerMasterKeySpec": "RSA_2048", "keyUsage": "SIGN_VERIFY"}
    assert resource_violations("kms-key-rotation", key, asymmetric) == []
