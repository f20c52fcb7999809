"""The label and taint contract between node pools and the pods that use them.

NodePools, the device plugin and every workload derive their labels, taints,
tolerations and node selectors from here, so they cannot drift apart: a GPU pod
built from `PoolContract.tolerations()` / `.node_selector()` lands exactly on
the pool that set `PoolContract.labels()` / `.taints()`.
"""

from __future__ import annotations

from dataclasses import dataclass

GPU_RESOURCE = "nvidia.com/gpu"

# Well-known label Karpenter puts on every node it launches: selecting on it is
# selecting a pool that exists, with nothing of ours to keep in sync.
NODEPOOL_LABEL = "karpenter.sh/nodepool"
INSTANCE_FAMILY_LABEL = "karpenter.k8s.aws/instance-family"
INSTANCE_GPU_COUNT_LABEL = "karpenter.k8s.aws/instance-gpu-count"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
ARCH_LABEL = "kubernetes.io/arch"
OS_LABEL = "kubernetes.io/os"

# Our own node labels.
GPU_MODE_LABEL = "gpu-inference.io/gpu-mode"  # none | dedicated | shared
ROLE_LABEL = "gpu-inference.io/role"  # system (managed node group) | workload (Karpenter)

# The device plugin reads this node label to pick a named config from its config map.
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"
DEVICE_PLUGIN_DEFAULT_CONFIG = "exclusive"

# Annotations that let tools reading only rendered objects (policies, cost) recover
# settings: a shared pool's GPU limit is in slices, a headroom Deployment's GPUs
# in slices too.
TIME_SLICING_REPLICAS_ANNOTATION = "gpu-inference.io/time-slicing-replicas"
WARM_GPUS_ANNOTATION = "gpu-inference.io/warm-gpus"

# Pod label of in-cluster clients allowed through an inference service's NetworkPolicy
# (the load generator carries it; an application opts in by setting it on its pods).
INFERENCE_CLIENT_LABEL = "gpu-inference.io/inference-client"
# Namespace label the API server sets on every namespace (NetworkPolicy selectors use it).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Endpoints (AWS Load Balancer Controller): the one IngressClass (and its IngressClassParams, same
# name) every exposed service uses, the controller's name for ALB Ingresses, and the namespace label
# that makes the controller's webhook add a target-health readiness gate to new pods.
INGRESS_CLASS = "gpu-inference"
ALB_INGRESS_CONTROLLER = "ingress.k8s.aws/alb"
ALB_ANNOTATION_PREFIX = "alb.ingress.kubernetes.io/"
ALB_READINESS_GATE_LABEL = "elbv2.k8s.aws/pod-readiness-gate-inject"
# Where Prometheus runs (infra/monitoring.py), and the label prometheus-operator puts on
# its pods: workloads let it scrape them through their NetworkPolicies.
MONITORING_NAMESPACE = "monitoring"
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}

# AWS tag Karpenter's EC2NodeClass selects subnets and security groups by.
DISCOVERY_TAG = "karpenter.sh/discovery"

GPU_MODES = ("none", "dedicated", "shared")


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str = "NoSchedule"

    def as_k8s(self) -> dict[str, str]:
        return {"key": self.key, "value": self.value, "effect": self.effect}

    def toleration(self) -> dict[str, str]:
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}

    def as_eks(self) -> dict[str, str]:
        """Shape of `aws.eks.NodeGroup` taints (effect in EKS's spelling)."""
        effect = {"NoSchedule": "NO_SCHEDULE", "NoExecute": "NO_EXECUTE", "PreferNoSchedule": "PREFER_NO_SCHEDULE"}
        return {"key": self.key, "value": self.value, "effect": effect[self.effect]}


# Every GPU node carries this taint, so only pods that ask for a GPU land there.
GPU_TAINT = Taint(GPU_RESOURCE, "true")
# Time-sliced GPUs share memory with no isolation: a pod opts in explicitly.
SHARED_GPU_TAINT = Taint("gpu-inference.io/shared-gpu", "true")
# System managed node group: only cluster-critical add-ons (Karpenter, CoreDNS).
SYSTEM_TAINT = Taint("CriticalAddonsOnly", "true")
SYSTEM_LABELS = {ROLE_LABEL: "system"}


@dataclass(frozen=True)
class PoolContract:
    """What a Karpenter NodePool promises its nodes will carry."""

    name: str
    gpu_mode: str  # one of GPU_MODES

    @property
    def is_gpu(self) -> bool:
        return self.gpu_mode != "none"

    @property
    def device_plugin_config(self) -> str | None:
        """Name of the device-plugin config this pool's nodes select, if any."""
        if self.gpu_mode == "shared":
            return f"time-sliced-{self.name}"
        if self.gpu_mode == "dedicated":
            return DEVICE_PLUGIN_DEFAULT_CONFIG
        return None

    def labels(self) -> dict[str, str]:
        labels = {GPU_MODE_LABEL: self.gpu_mode, ROLE_LABEL: "workload"}
        if self.device_plugin_config:
            labels[DEVICE_PLUGIN_CONFIG_LABEL] = self.device_plugin_config
        return labels

    def taints(self) -> list[Taint]:
        return {"none": [], "dedicated": [GPU_TAINT], "shared": [GPU_TAINT, SHARED_GPU_TAINT]}[self.gpu_mode]

    def tolerations(self) -> list[dict[str, str]]:
        return [t.toleration() for t in self.taints()]

    def node_selector(self) -> dict[str, str]:
        return {NODEPOOL_LABEL: self.name}


def prefer_gpu_count(count: int) -> dict:
    """Node affinity that prefers instances with `count` GPUs (a shared pool's smallest).

    A Karpenter NodeClaim keeps every instance type that still fits all the pods planned
    onto it, so without this the fifth one-slice pod grows a 1-GPU claim into a 4-GPU
    instance. Under the default `preferencePolicy: Respect` Karpenter treats the
    preference as required while it plans, and relaxes it only for a pod that fits
    nowhere else (kubernetes-sigs/karpenter v1.14.1 pkg/controllers/provisioning/
    scheduling/preferences.go).
    """
    term = {"matchExpressions": [{"key": INSTANCE_GPU_COUNT_LABEL, "operator": "In", "values": [str(count)]}]}
    return {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": term}]}}


def gpu_node_affinity() -> dict:
    """Node affinity for GPU-node daemons: any node of a dedicated or shared pool."""
    term = {"matchExpressions": [{"key": GPU_MODE_LABEL, "operator": "In", "values": ["dedicated", "shared"]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def gpu_daemon_tolerations() -> list[dict[str, str]]:
    """Tolerations for daemons that must run on every GPU node, shared or not."""
    return [GPU_TAINT.toleration(), SHARED_GPU_TAINT.toleration()]


def system_tolerations() -> list[dict[str, str]]:
    return [SYSTEM_TAINT.toleration()]
