"""EKS control plane: secrets encryption, control-plane logs, endpoint exposure; KMS key rotation.

Rules read both the `eks:index:Cluster` component inputs (what the offline plan
records) and the `aws:eks/cluster:Cluster` it creates (what a real preview shows).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs

from policies.rules.common import Config, dig, resource_policy, schema

EKS_COMPONENT = "eks:index:Cluster"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
KMS_KEY = "aws:kms/key:Key"
ALL_LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]


def _view(args: ResourceValidationArgs) -> dict[str, Any]:
    """The fields rules need, whichever of the two resource shapes this is."""
    p = args.props
    if args.resource_type == EKS_COMPONENT:
        return {
            "name": p.get("name") or args.name,
            "key": p.get("encryptionConfigKeyArn"),
            "secrets": bool(p.get("encryptionConfigKeyArn")),
            "logs": p.get("enabledClusterLogTypes") or [],
            "public": p.get("endpointPublicAccess", True),
            "private": p.get("endpointPrivateAccess", False),
            "cidrs": p.get("publicAccessCidrs") or ["0.0.0.0/0"],
        }
    encryption = p.get("encryptionConfig") or {}
    vpc = p.get("vpcConfig") or {}
    return {
        "name": p.get("name") or args.name,
        "key": dig(encryption, "provider", "keyArn"),
        "secrets": "secrets" in (encryption.get("resources") or []),
        "logs": p.get("enabledClusterLogTypes") or [],
        "public": vpc.get("endpointPublicAccess", True),
        "private": vpc.get("endpointPrivateAccess", False),
        "cidrs": vpc.get("publicAccessCidrs") or ["0.0.0.0/0"],
    }


def _secrets(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    view = _view(args)
    if not (view["secrets"] and view["key"]):
        yield f"EKS cluster {view['name']} does not envelope-encrypt Kubernetes secrets with a KMS key"


def _logging(args: ResourceValidationArgs, config: Config) -> Iterable[str]:
    view = _view(args)
    missing = [t for t in config["requiredLogTypes"] if t not in view["logs"]]
    if missing:
        yield f"EKS cluster {view['name']} does not send control-plane logs {missing} to CloudWatch"


def _endpoint(args: ResourceValidationArgs, config: Config) -> Iterable[str]:
    view = _view(args)
    if not view["public"]:
        if not view["private"]:
            yield f"EKS cluster {view['name']} has neither a public nor a private API endpoint"
        return
    if not config["allowPublicEndpoint"]:
        yield f"EKS cluster {view['name']} has a public API endpoint; this environment requires a private one"
        return
    allowed = [ipaddress.ip_network(c) for c in config["allowedPublicCidrs"]]
    if allowed:
        outside = [c for c in view["cidrs"] if not any(ipaddress.ip_network(c).subnet_of(a) for a in allowed)]
        if outside:
            yield (
                f"EKS cluster {view['name']} exposes its API to {outside}, outside the allowed"
                f" {config['allowedPublicCidrs']}"
            )


def _rotation(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    symmetric = (args.props.get("customerMasterKeySpec") or "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT"
    if symmetric and not args.props.get("enableKeyRotation"):
        yield f"KMS key {args.name} does not rotate its key material"


POLICIES = [
    resource_policy(
        "eks-secrets-encryption",
        "EKS clusters envelope-encrypt Kubernetes secrets with a customer KMS key.",
        "Pass encryption_config_key_arn (infra/cluster.py does).",
        [EKS_COMPONENT, EKS_CLUSTER],
        _secrets,
    ),
    resource_policy(
        "eks-control-plane-logging",
        "EKS clusters send the required control-plane log types to CloudWatch.",
        "Set cluster.logTypes to include every required type.",
        [EKS_COMPONENT, EKS_CLUSTER],
        _logging,
        config=schema(
            requiredLogTypes={
                "type": "array",
                "items": {"enum": ALL_LOG_TYPES},
                "default": ["api", "audit", "authenticator"],
                "description": "Control-plane log types every cluster must enable.",
            }
        ),
    ),
    resource_policy(
        "eks-endpoint-access",
        "The EKS API endpoint is private, or public only to the CIDRs this environment allows.",
        "Set cluster.endpointPublicAccess: false, or cluster.publicAccessCidrs within the allowed ranges.",
        [EKS_COMPONENT, EKS_CLUSTER],
        _endpoint,
        config=schema(
            allowPublicEndpoint={
                "type": "boolean",
                "default": True,
                "description": "Whether a public API endpoint is allowed at all.",
            },
            allowedPublicCidrs={
                "type": "array",
                "items": {"type": "string"},
                "default": [],
                "description": "If not empty, public access CIDRs must lie within these ranges.",
            },
        ),
    ),
    resource_policy(
        "kms-key-rotation",
        "Symmetric KMS keys rotate their key material yearly.",
        "Set enable_key_rotation=True.",
        [KMS_KEY],
        _rotation,
    ),
]
