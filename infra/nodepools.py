"""Karpenter EC2NodeClasses, NodePools and the NodeOverlays of shared GPU pools.

One EC2NodeClass per pool (root volume and AMI are per pool); one NodePool per
pool with labels and taints from the contract. A shared pool also gets one
NodeOverlay per GPUs-per-instance count among its families, so Karpenter knows
before launch that e.g. a 1-GPU g6 with 4 replicas offers 4 `nvidia.com/gpu`:
four one-slice pods then need one node, not four.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from domain import contract, image_cache

KARPENTER_API = "karpenter.sh/v1"
NODECLASS_API = "karpenter.k8s.aws/v1"
OVERLAY_API = "karpenter.sh/v1alpha1"


@dataclass(frozen=True)
class DisruptionBudget:
    """One entry of a NodePool's `disruption.budgets`."""

    nodes: str
    schedule: str | None = None
    duration: str | None = None
    reasons: tuple[str, ...] | None = None

    def as_karpenter(self) -> dict:
        fields = {"nodes": self.nodes, "schedule": self.schedule, "duration": self.duration, "reasons": self.reasons}
        return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True)
class CacheVolume:
    """The image-cache volume a node starts from (see domain.image_cache)."""

    snapshot_id: str
    volume_gib: int


@dataclass(frozen=True)
class ReservationTerm:
    """One `capacityReservationSelectorTerms` entry: a reservation ID, or tags it must all carry."""

    id: str | None = None
    tags: Mapping[str, str] | None = None

    def as_karpenter(self) -> dict:
        return {"id": self.id} if self.id is not None else {"tags": dict(self.tags or {})}


@dataclass(frozen=True)
class NodePoolSpec:
    """One NodePool with its EC2NodeClass (and NodeOverlays on a shared pool)."""

    gpu: str  # one of contract.GPU_MODES
    instance_families: tuple[str, ...]
    capacity_types: tuple[str, ...]
    architectures: tuple[str, ...]
    max_cpu: int  # vCPU limit
    max_memory_gib: int | None
    gpu_limit: int  # `nvidia.com/gpu` limit in what nodes advertise (slices on a shared pool); 0 on a CPU pool
    gpu_counts: tuple[int, ...]  # GPUs per instance among the families: one NodeOverlay each on a shared pool
    time_slicing_replicas: int | None  # shared pools only
    consolidation: str
    consolidate_after: str
    expire_after: str
    budgets: tuple[DisruptionBudget, ...]
    root_volume_gib: int
    ami_alias: str
    weight: int | None
    cache_volume: CacheVolume | None  # None: nodes pull their images
    # With capacity type `reserved`: the ODCRs / Capacity Blocks Karpenter may launch into.
    capacity_reservations: tuple[ReservationTerm, ...] = ()

    @property
    def is_gpu(self) -> bool:
        return self.gpu != "none"


@dataclass(frozen=True)
class NodePoolsArgs:
    cluster_name: str
    node_role_name: pulumi.Input[str]
    pools: Mapping[str, NodePoolSpec]  # keyed by pool name
    instance_tags: Mapping[str, str]  # Karpenter launches instances itself: provider default_tags never reach them
    depends_on: list[pulumi.Resource]  # Karpenter CRDs and controller


def pool_contract(name: str, pool: NodePoolSpec) -> contract.PoolContract:
    return contract.PoolContract(name=name, gpu_mode=pool.gpu)


def block_devices(pool: NodePoolSpec) -> list[dict]:
    volume = {
        "volumeSize": f"{pool.root_volume_gib}Gi",
        "volumeType": "gp3",
        "encrypted": True,
        "deleteOnTermination": True,
        "iops": 3000,
        # Image pulls are throughput-bound: GPU pools get more than the gp3 baseline.
        "throughput": 500 if pool.is_gpu else 125,
    }
    cached = pool.cache_volume
    if pool.ami_alias.startswith("bottlerocket@"):
        # Bottlerocket keeps the OS on a small volume and images on the data volume,
        # which can start from the image-cache snapshot as it is.
        os_volume = {"volumeSize": "4Gi", "volumeType": "gp3", "encrypted": True, "deleteOnTermination": True}
        if cached:
            size = max(pool.root_volume_gib, cached.volume_gib)
            volume = {**volume, "volumeSize": f"{size}Gi", "snapshotID": cached.snapshot_id}
        return [{"deviceName": "/dev/xvda", "ebs": os_volume}, {"deviceName": "/dev/xvdb", "ebs": volume}]
    devices = [{"deviceName": "/dev/xvda", "ebs": volume, "rootVolume": True}]
    if cached:
        # AL2023: containerd's store moves onto this volume (see node_user_data).
        cache = image_cache.cache_block_device(cached.snapshot_id, cached.volume_gib)
        # Encrypted whatever the snapshot is: EC2 encrypts a copy of an unencrypted one.
        devices.append({**cache, "ebs": {**cache["ebs"], "encrypted": True}})
    return devices


def node_user_data(pool: NodePoolSpec) -> str | None:
    """AL2023 nodes with an image-cache snapshot mount it at containerd's root before nodeadm starts it."""
    if pool.cache_volume and pool.ami_alias.startswith("al2023@"):
        return image_cache.al2023_containerd_volume_user_data()
    return None


def uses_instance_store(pool: NodePoolSpec) -> bool:
    """GPU nodes put the kubelet's and containerd's storage (emptyDirs, the model cache of a
    served model, image layers) on their instance-store NVMe disks, striped (Karpenter
    `instanceStorePolicy: RAID0`; ignored on types without instance store). Not with an
    image-cache snapshot: its user data mounts that volume at /var/lib/containerd, where
    nodeadm would mount the array."""
    return pool.is_gpu and pool.cache_volume is None


def node_class_spec(cluster_name: str, role: str, pool: NodePoolSpec, tags: Mapping[str, str]) -> dict:
    discovery = [{"tags": {contract.DISCOVERY_TAG: cluster_name}}]
    return {
        "role": role,
        "amiSelectorTerms": [{"alias": pool.ami_alias}],
        "subnetSelectorTerms": discovery,
        "securityGroupSelectorTerms": discovery,
        # IMDSv2 only, hop limit 1: pods get AWS credentials from Pod Identity, never
        # the node role through IMDS.
        "metadataOptions": {
            "httpEndpoint": "enabled",
            "httpProtocolIPv6": "disabled",
            "httpPutResponseHopLimit": 1,
            "httpTokens": "required",
        },
        "blockDeviceMappings": block_devices(pool),
        # Karpenter v1.14.1 (ReservedCapacity, beta, on by default): it launches only into the
        # reservations these terms select (no open matching), prefers them over spot and
        # on-demand, and models them as free when it consolidates
        # (website/content/en/docs/tasks/odcrs.md at v1.14.1).
        **(
            {"capacityReservationSelectorTerms": [t.as_karpenter() for t in pool.capacity_reservations]}
            if pool.capacity_reservations
            else {}
        ),
        **({"instanceStorePolicy": "RAID0"} if uses_instance_store(pool) else {}),
        **({"userData": user_data} if (user_data := node_user_data(pool)) else {}),
        "tags": dict(tags),
    }


def node_pool_spec(name: str, pool: NodePoolSpec) -> dict:
    terms = pool_contract(name, pool)
    requirements = [
        {"key": contract.INSTANCE_FAMILY_LABEL, "operator": "In", "values": list(pool.instance_families)},
        {"key": contract.CAPACITY_TYPE_LABEL, "operator": "In", "values": list(pool.capacity_types)},
        {"key": contract.ARCH_LABEL, "operator": "In", "values": list(pool.architectures)},
        {"key": contract.OS_LABEL, "operator": "In", "values": ["linux"]},
    ]
    limits: dict[str, int | str] = {"cpu": pool.max_cpu}
    if pool.max_memory_gib:
        limits["memory"] = f"{pool.max_memory_gib}Gi"
    if pool.is_gpu:
        limits[contract.GPU_RESOURCE] = pool.gpu_limit
    template_spec: dict = {
        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name},
        "requirements": requirements,
        "expireAfter": pool.expire_after,
    }
    if terms.taints():
        template_spec["taints"] = [t.as_k8s() for t in terms.taints()]
    spec: dict = {
        "template": {"metadata": {"labels": terms.labels()}, "spec": template_spec},
        "disruption": {
            "consolidationPolicy": pool.consolidation,
            "consolidateAfter": pool.consolidate_after,
            "budgets": [b.as_karpenter() for b in pool.budgets],
        },
        "limits": limits,
    }
    if pool.weight is not None:
        spec["weight"] = pool.weight
    return spec


def node_pool_metadata(name: str, pool: NodePoolSpec) -> dict:
    if pool.time_slicing_replicas is None:
        return {"name": name}
    return {"name": name, "annotations": {contract.TIME_SLICING_REPLICAS_ANNOTATION: str(pool.time_slicing_replicas)}}


def node_overlay_specs(name: str, pool: NodePoolSpec) -> dict[str, dict]:
    """Overlay name -> spec, one per GPUs-per-instance count of a shared pool."""
    if pool.gpu != "shared":
        return {}
    assert pool.time_slicing_replicas is not None
    return {
        f"{name}-slices-{count}gpu": {
            "requirements": [
                {"key": contract.NODEPOOL_LABEL, "operator": "In", "values": [name]},
                {"key": contract.INSTANCE_GPU_COUNT_LABEL, "operator": "In", "values": [str(count)]},
            ],
            "capacity": {contract.GPU_RESOURCE: str(count * pool.time_slicing_replicas)},
        }
        for count in pool.gpu_counts
    }


class NodePools(pulumi.ComponentResource):
    def __init__(self, name: str, args: NodePoolsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:nodepools:NodePools", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        self.node_classes: dict[str, k8s.apiextensions.CustomResource] = {}
        self.pools: dict[str, k8s.apiextensions.CustomResource] = {}
        self.overlays: dict[str, k8s.apiextensions.CustomResource] = {}
        for key, pool in sorted(args.pools.items()):
            self.node_classes[key] = k8s.apiextensions.CustomResource(
                f"{name}-{key}-nodeclass",
                api_version=NODECLASS_API,
                kind="EC2NodeClass",
                metadata={"name": key},
                spec=pulumi.Output.from_input(args.node_role_name).apply(
                    lambda role, p=pool: node_class_spec(args.cluster_name, role, p, args.instance_tags)
                ),
                opts=child,
            )
            self.pools[key] = k8s.apiextensions.CustomResource(
                f"{name}-{key}",
                api_version=KARPENTER_API,
                kind="NodePool",
                metadata=node_pool_metadata(key, pool),
                spec=node_pool_spec(key, pool),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, self.node_classes[key]]),
            )
            for overlay, spec in node_overlay_specs(key, pool).items():
                self.overlays[overlay] = k8s.apiextensions.CustomResource(
                    f"{name}-{overlay}",
                    api_version=OVERLAY_API,
                    kind="NodeOverlay",
                    metadata={"name": overlay},
                    spec=spec,
                    opts=child,
                )
        self.pool_names = sorted(self.pools)
        self.register_outputs({"poolNames": self.pool_names, "nodeOverlays": sorted(self.overlays)})
