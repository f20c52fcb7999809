"""Happy-path props, shaped like what the program renders (camelCase inputs)."""

from __future__ import annotations

import json
from typing import Any

NODEPOOL = "kubernetes:karpenter.sh/v1:NodePool"
NODECLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
NODEOVERLAY = "kubernetes:karpenter.sh/v1alpha1:NodeOverlay"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
RELEASE = "kubernetes:helm.sh/v3:Release"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
PRIORITY_CLASS = "kubernetes:scheduling.k8s.io/v1:PriorityClass"


def gpu_nodepool(name: str = "gpu", families: list[str] | None = None, config: str = "exclusive") -> dict[str, Any]:
    taints = [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    if config.startswith("time-sliced"):
        taints.append({"key": "gpu-inference.io/shared-gpu", "value": "true", "effect": "NoSchedule"})
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {
                    "labels": {
                        "gpu-inference.io/gpu-mode": "shared" if config.startswith("time-sliced") else "dedicated",
                        "gpu-inference.io/role": "workload",
                        "nvidia.com/device-plugin.config": config,
                    }
                },
                "spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name},
                    "requirements": [
                        {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": families or ["g6"]},
                        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    ],
                    "taints": taints,
                    "expireAfter": "720h",
                },
            },
            "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5m", "budgets": [{"nodes": "10%"}]},
            "limits": {"cpu": 96, "nvidia.com/gpu": 4},
        },
    }


def cpu_nodepool(name: str = "cpu") -> dict[str, Any]:
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": {"gpu-inference.io/gpu-mode": "none", "gpu-inference.io/role": "workload"}},
                "spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name},
                    "requirements": [
                        {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["c7i", "m7i"]},
                        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot", "on-demand"]},
                    ],
                    "expireAfter": "720h",
                },
            },
            "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "1m"},
            "limits": {"cpu": 64},
        },
    }


def nodeclass() -> dict[str, Any]:
    return {
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": "gpu"},
        "spec": {
            "role": "node-role",
            "amiSelectorTerms": [{"alias": "al2023@v20260512"}],
            "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "c"}}],
            "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "c"}}],
            "metadataOptions": {"httpEndpoint": "enabled", "httpPutResponseHopLimit": 1, "httpTokens": "required"},
            "blockDeviceMappings": [
                {"deviceName": "/dev/xvda", "ebs": {"volumeSize": "200Gi", "volumeType": "gp3", "encrypted": True}}
            ],
        },
    }


def launch_template() -> dict[str, Any]:
    return {
        "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 2},
        "blockDeviceMappings": [
            {"deviceName": "/dev/xvda", "ebs": {"volumeSize": 50, "volumeType": "gp3", "encrypted": "true"}}
        ],
    }


def time_sliced_configmap(config: str = "time-sliced-shared", replicas: int = 4) -> dict[str, Any]:
    sliced = (
        "version: v1\nsharing:\n  timeSlicing:\n    resources:\n"
        f"    - name: nvidia.com/gpu\n      replicas: {replicas}\n"
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "nvidia-device-plugin-configs", "namespace": "nvidia-device-plugin"},
        "data": {"exclusive": "version: v1\n", config: sliced},
    }


def overlay(pool: str = "shared") -> dict[str, Any]:
    return {
        "apiVersion": "karpenter.sh/v1alpha1",
        "kind": "NodeOverlay",
        "metadata": {"name": f"{pool}-slices-1gpu"},
        "spec": {
            "requirements": [
                {"key": "karpenter.sh/nodepool", "operator": "In", "values": [pool]},
                {"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "In", "values": ["1"]},
            ],
            "capacity": {"nvidia.com/gpu": "4"},
        },
    }


def gpu_deployment(pool: str = "gpu", image: str = "registry.example/model:1.2.3") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "model", "namespace": "inference"},
        "spec": {
            "template": {
                "spec": {
                    "nodeSelector": {"karpenter.sh/nodepool": pool},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
                    ],
                    "containers": [{"name": "model", "image": image, "resources": {"limits": {"nvidia.com/gpu": 1}}}],
                }
            }
        },
    }


def device_plugin_release() -> dict[str, Any]:
    return {
        "name": "nvidia-device-plugin",
        "chart": "nvidia-device-plugin",
        "version": "0.20.0",
        "repositoryOpts": {"repo": "https://nvidia.github.io/k8s-device-plugin"},
        "values": {
            "image": {"repository": "nvcr.io/nvidia/k8s-device-plugin", "tag": "v0.20.0"},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "gpu-inference.io/gpu-mode",
                                        "operator": "In",
                                        "values": ["dedicated", "shared"],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
                {"key": "gpu-inference.io/shared-gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
            ],
        },
    }


def eks_component() -> dict[str, Any]:
    return {
        "name": "gpuinf-prod",
        "encryptionConfigKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k",
        "enabledClusterLogTypes": ["api", "audit", "authenticator", "controllerManager", "scheduler"],
        "endpointPublicAccess": False,
        "endpointPrivateAccess": True,
    }


def eks_cluster() -> dict[str, Any]:
    return {
        "name": "gpuinf-prod",
        "encryptionConfig": {
            "provider": {"keyArn": "arn:aws:kms:us-east-1:123456789012:key/k"},
            "resources": ["secrets"],
        },
        "enabledClusterLogTypes": ["api", "audit", "authenticator", "controllerManager", "scheduler"],
        "vpcConfig": {"endpointPublicAccess": False, "endpointPrivateAccess": True, "subnetIds": ["subnet-1"]},
    }


def iam_policy(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements})
