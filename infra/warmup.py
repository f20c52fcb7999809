"""GPU cold start: warm headroom and image pre-pull.

Warm headroom: per GPU pool with `warmGpus > 0`, a Deployment of pause
containers asks for that many GPUs (slices on a shared pool, since that is what
its pods request and what its NodePool limit counts) at a negative
priority, so Karpenter keeps those GPUs running. A real pod (a service at
`gpu-inference-service`, a batch Job at `gpu-inference-batch`, anything else at 0:
domain/priorities.py) preempts a placeholder at once and lands on a node that is already up with its
device plugin ready; the evicted placeholder goes pending and Karpenter buys the
headroom back behind it. The price is the headroom's hourly cost, shown in the
plan summary, and it counts against the pool's `maxGpus`.

Pre-pull: per GPU pool whose `imageCache.prePull` is on and that has images to
pull, a DaemonSet on that pool's nodes runs one init container per image, so
the kubelet pulls every image as soon as the node joins. It pairs with
headroom: a headroom node has the images before any real pod arrives. Each
image must contain `/bin/sh` (the init container runs `sh -c true`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from domain import contract, pods, priorities, versions
from domain.headroom import GpuConsumer, placeholder_resources
from infra.placement import PoolPlacement

NAMESPACE = "gpu-warmup"
PRIORITY_CLASS = priorities.HEADROOM.name
# Below the default 0 of every pod without a class and below batch (domain/priorities.py),
# so any real pod preempts a placeholder.
PRIORITY = priorities.HEADROOM.value
HEADROOM_APP = "gpu-headroom"
RESTRICTED = pods.pod_security_labels("restricted")
PREPULL_APP = "image-prepull"


@dataclass(frozen=True)
class WarmPool:
    """A GPU pool as the warm-up reads it."""

    placement: PoolPlacement
    warm_gpus: int  # kept running ahead of demand, in what its pods request (slices on a shared pool)
    pre_pull: bool  # pull the pool's images on every node as it joins
    cache_images: tuple[str, ...]  # pulled besides the inference images of the pool


@dataclass(frozen=True)
class WarmupArgs:
    pools: Mapping[str, WarmPool]  # GPU pools only, keyed by pool name
    # Pool -> inference images that run there (added by the workloads): pulled too.
    pool_images: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Pool -> the pods that may preempt its headroom: placeholders are sized after them.
    consumers: Mapping[str, tuple[GpuConsumer, ...]] = field(default_factory=dict)


def placeholder_shape(pool: WarmPool) -> tuple[int, int]:
    """(pods, GPUs each) that hold `warmGpus`: GPUs on a dedicated pool, slices on a shared one.

    One unit per pod lets a real pod preempt exactly what it needs, and leaves
    the rest of the headroom standing.
    """
    return pool.warm_gpus, 1


def _pod_base(pool: WarmPool) -> dict:
    terms = pool.placement.terms
    return {
        "nodeSelector": terms.node_selector(),
        "tolerations": terms.tolerations(),
        **pods.packing_affinity(pool.placement),
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 0,
        # Pod Security `restricted` (the namespace enforces it): the pause user, the
        # runtime's seccomp profile. Pre-pull init containers run `sh -c true` as that user
        # too, which any image with a shell allows.
        "securityContext": pods.pod_security(pods.PAUSE_USER),
    }


def headroom_deployment(pool: WarmPool, consumers: tuple[GpuConsumer, ...] = ()) -> dict:
    pool_name = pool.placement.name
    count, gpus = placeholder_shape(pool)
    labels = {"app.kubernetes.io/name": HEADROOM_APP, contract.NODEPOOL_LABEL: pool_name}
    cpu, memory = placeholder_resources(consumers)
    resources = {
        "requests": {"cpu": f"{cpu * gpus}m", "memory": f"{memory * gpus}Mi", contract.GPU_RESOURCE: str(gpus)},
        "limits": {"memory": f"{memory * gpus}Mi", contract.GPU_RESOURCE: str(gpus)},
    }
    return {
        "metadata": {
            "name": f"headroom-{pool_name}",
            "namespace": NAMESPACE,
            "labels": labels,
            # Placeholders wait for a GPU node; `pulumi up` does not.
            "annotations": {contract.WARM_GPUS_ANNOTATION: str(pool.warm_gpus), **pods.SKIP_AWAIT},
        },
        "spec": {
            "replicas": count,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **_pod_base(pool),
                    "priorityClassName": PRIORITY_CLASS,
                    "containers": [
                        {
                            "name": "pause",
                            "image": versions.IMAGES["pause"],
                            "resources": resources,
                            "securityContext": pods.container_security(),
                        }
                    ],
                },
            },
        },
    }


def prepull_images(pool: WarmPool, pool_images: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Images the pool's nodes pull at join, in a stable order without repeats."""
    if not pool.pre_pull:
        return []
    return list(dict.fromkeys([*pool.cache_images, *pool_images.get(pool.placement.name, ())]))


def prepull_daemonset(pool: WarmPool, images: list[str]) -> dict:
    pool_name = pool.placement.name
    labels = {"app.kubernetes.io/name": PREPULL_APP, contract.NODEPOOL_LABEL: pool_name}
    small = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
    pulls = [
        {
            "name": f"pull-{i}",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sh", "-c", "true"],
            "resources": small,
            # Any image: it may need to write its root filesystem, but never privileges.
            "securityContext": pods.container_security(read_only_root=False),
        }
        for i, image in enumerate(images)
    ]
    return {
        "metadata": {"name": f"prepull-{pool_name}", "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            # Pulls are big: one node at a time on an image change, never all at once.
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **_pod_base(pool),
                    "initContainers": pulls,
                    "containers": [
                        {
                            "name": "pause",
                            "image": versions.IMAGES["pause"],
                            "resources": small,
                            "securityContext": pods.container_security(),
                        }
                    ],
                },
            },
        },
    }


class GpuWarmup(pulumi.ComponentResource):
    def __init__(self, name: str, args: WarmupArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:warmup:GpuWarmup", name, None, opts)
        gpu_pools = dict(sorted(args.pools.items()))
        headroom = {
            k: headroom_deployment(p, tuple(args.consumers.get(k, ()))) for k, p in gpu_pools.items() if p.warm_gpus
        }
        prepull = {k: images for k, p in gpu_pools.items() if (images := prepull_images(p, args.pool_images))}
        self.headroom: dict[str, k8s.apps.v1.Deployment] = {}
        self.prepull: dict[str, k8s.apps.v1.DaemonSet] = {}
        self.priority_class: k8s.scheduling.v1.PriorityClass | None = None
        if headroom or prepull:
            child = pulumi.ResourceOptions(parent=self)
            namespace = k8s.core.v1.Namespace(
                f"{name}-ns",
                metadata={"name": NAMESPACE, "labels": {"app.kubernetes.io/part-of": pods.PART_OF, **RESTRICTED}},
                opts=child,
            )
            ns_child = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
            if headroom:
                self.priority_class = k8s.scheduling.v1.PriorityClass(
                    f"{name}-priority",
                    metadata={"name": PRIORITY_CLASS},
                    value=PRIORITY,
                    global_default=False,
                    # Placeholders wait; they never evict anything to get a GPU.
                    preemption_policy=priorities.HEADROOM.preemption_policy,
                    description=priorities.HEADROOM.description,
                    opts=child,
                )
                placeholders = pulumi.ResourceOptions(parent=self, depends_on=[namespace, self.priority_class])
                for key, obj in headroom.items():
                    self.headroom[key] = k8s.apps.v1.Deployment(
                        f"{name}-headroom-{key}", metadata=obj["metadata"], spec=obj["spec"], opts=placeholders
                    )
            for key, images in prepull.items():
                obj = prepull_daemonset(gpu_pools[key], images)
                self.prepull[key] = k8s.apps.v1.DaemonSet(
                    f"{name}-prepull-{key}", metadata=obj["metadata"], spec=obj["spec"], opts=ns_child
                )
        self.register_outputs({"headroomPools": sorted(self.headroom), "prePullPools": sorted(self.prepull)})
