"""What runs on the cluster: GPU pods that can actually schedule, GPU daemons that
cover every GPU pool, pinned images, bounded KEDA scaling."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import PolicyResource, ResourceValidationArgs

from domain import contract, metric_names, scheduling
from domain.images import ImageRef, InvalidImageRef
from policies.rules.common import (
    ADVISORY,
    HELM_RELEASE,
    NODEPOOL,
    POD_TEMPLATE_PATHS,
    SCALED_JOB,
    SCALED_OBJECT,
    Config,
    containers,
    dig,
    pod_spec,
    resource_policy,
    schema,
    stack_policy,
)

# The in-flight gauge InferenceService pods report (infra/workloads/inference.py).
SELF_METRIC = metric_names.IN_FLIGHT
POD_KINDS = list(POD_TEMPLATE_PATHS)


def _workload(r: PolicyResource | ResourceValidationArgs) -> str:
    name = (r.props.get("metadata") or {}).get("name") or r.name
    return f"{r.resource_type.rsplit(':', 1)[-1]} {name}"


def _pools(resources: list[PolicyResource]) -> list[scheduling.PoolNodes]:
    return [scheduling.pool_nodes(r.props) for r in resources if r.resource_type == NODEPOOL]


def _gpu_placement(resources: list[PolicyResource], _: Config) -> Iterable[tuple[str, str | None]]:
    pools = _pools(resources)
    gpu_pools = {p.name for p in pools if p.gpu}
    for r in resources:
        spec = pod_spec(r.resource_type, r.props)
        if not spec or not scheduling.requests_gpu(spec):
            continue
        accepted = set(scheduling.pools_accepting(spec, pools))
        if not accepted & gpu_pools:
            yield (
                f"{_workload(r)} requests {contract.GPU_RESOURCE} but tolerates and selects no GPU NodePool"
                f" (GPU pools: {sorted(gpu_pools)}; nodeSelector {spec.get('nodeSelector') or {}},"
                f" tolerations {spec.get('tolerations') or []}): it would stay Pending",
                r.urn,
            )


def _gpu_daemon_coverage(resources: list[PolicyResource], config: Config) -> Iterable[tuple[str, str | None]]:
    gpu_pools = [p for p in _pools(resources) if p.gpu]
    for r in resources:
        if r.resource_type != HELM_RELEASE or r.props.get("name") not in config["gpuDaemonReleases"]:
            continue
        values = r.props.get("values") or {}
        spec = {k: values.get(k) for k in ("nodeSelector", "affinity", "tolerations")}
        missed = sorted(p.name for p in gpu_pools if not scheduling.pod_fits(spec, p))
        if missed:
            yield (
                f"Helm release {r.props.get('name')} cannot run on GPU NodePools {missed}: their nodes would never"
                " advertise or report GPUs",
                r.urn,
            )


PRIORITY_CLASS = "kubernetes:scheduling.k8s.io/v1:PriorityClass"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
KEDA_DEFAULT_MAX_REPLICAS = 100  # KEDA's maxReplicaCount when a ScaledObject/ScaledJob leaves it out


def _gpus_per_pod(spec: Mapping[str, Any]) -> int:
    """GPUs one pod holds: its containers together, or its largest init container if larger."""

    def gpus(c: Mapping[str, Any]) -> int:
        resources = c.get("resources") or {}
        value = (resources.get("limits") or {}).get(contract.GPU_RESOURCE)
        value = value if value is not None else (resources.get("requests") or {}).get(contract.GPU_RESOURCE)
        return int(str(value)) if str(value).isdigit() else 0

    running = sum(gpus(c) for c in spec.get("containers") or [])
    return max([running, *(gpus(c) for c in spec.get("initContainers") or [])])


def _most_replicas(r: PolicyResource, scaled: Mapping[tuple[str, str], int]) -> int:
    """The most pods a workload can run: its autoscaler's maximum, else its fixed replicas."""
    meta = r.props.get("metadata") or {}
    if r.resource_type == SCALED_JOB:
        return int(dig(r.props, "spec", "maxReplicaCount") or KEDA_DEFAULT_MAX_REPLICAS)
    key = (meta.get("namespace") or "default", meta.get("name") or r.name)
    if r.resource_type == DEPLOYMENT and key in scaled:
        return scaled[key]
    replicas = dig(r.props, "spec", "replicas")
    return 1 if replicas is None else int(replicas)


def _gpu_demand_within_pool_limit(resources: list[PolicyResource], _: Config) -> Iterable[tuple[str, str | None]]:
    """Every GPU workload of a pool at its most replicas, plus the pool's warm headroom, fits its GPU limit.

    Contributors: each pod template (services, batch ScaledJobs, fixed Deployments)
    that requests nvidia.com/gpu and lands on exactly one GPU pool, at its
    autoscaler's maximum; warm headroom (placeholders of negative priority) at its
    replicas. Priorities decide who waits when the pool is full (live inference
    preempts batch, batch preempts headroom), but a pool whose contributors add up
    past its limit promises maxima that can never all be met: some maxReplicas is a
    number nobody can reach. One violation per pool, naming every contributor.
    """
    pools = {p.name: p for p in _pools(resources) if p.gpu}
    pool_urns = {r.props["metadata"]["name"]: r.urn for r in resources if r.resource_type == NODEPOOL}
    limits = {
        r.props["metadata"]["name"]: dig(r.props, "spec", "limits", contract.GPU_RESOURCE)
        for r in resources
        if r.resource_type == NODEPOOL
    }
    low_priority = {
        (r.props.get("metadata") or {}).get("name")
        for r in resources
        if r.resource_type == PRIORITY_CLASS and int(r.props.get("value") or 0) < 0
    }
    scaled = {
        (
            (r.props.get("metadata") or {}).get("namespace") or "default",
            dig(r.props, "spec", "scaleTargetRef", "name"),
        ): int(dig(r.props, "spec", "maxReplicaCount") or KEDA_DEFAULT_MAX_REPLICAS)
        for r in resources
        if r.resource_type == SCALED_OBJECT and dig(r.props, "spec", "scaleTargetRef", "kind") in (None, "Deployment")
    }
    demand: dict[str, list[tuple[str, int, int]]] = {}
    for r in resources:
        spec = pod_spec(r.resource_type, r.props)
        if not spec or r.resource_type == "kubernetes:apps/v1:DaemonSet":
            continue
        per_pod = _gpus_per_pod(spec)
        accepted = list(scheduling.pools_accepting(spec, pools.values()))
        if not per_pod or len(accepted) != 1 or not str(limits.get(accepted[0])).isdigit():
            continue
        headroom = spec.get("priorityClassName") in low_priority
        label = f"{'headroom ' if headroom else ''}{_workload(r)}"
        demand.setdefault(accepted[0], []).append((label, _most_replicas(r, scaled), per_pod))
    for pool, parts in sorted(demand.items()):
        parts.sort(key=lambda part: (part[0].startswith("headroom "), part[0]))  # workloads by name, headroom last
        total, limit = sum(most * per_pod for _, most, per_pod in parts), int(str(limits[pool]))
        if total > limit:
            named = ", ".join(f"{label} {most} x {per_pod} = {most * per_pod}" for label, most, per_pod in parts)
            yield (
                f"NodePool {pool} is limited to {limit} {contract.GPU_RESOURCE}, but its workloads at their maximum"
                f" replicas ask for {total} ({named}): lower a maxReplicas or raise the pool's GPU limit",
                pool_urns.get(pool),
            )


def _images(args: ResourceValidationArgs) -> list[str]:
    spec = pod_spec(args.resource_type, args.props)
    if spec is not None:
        return [c.get("image", "") for c in containers(spec)]
    if args.resource_type == HELM_RELEASE:
        return [ref for ref in _helm_images(args.props.get("values") or {})]
    return []


def _helm_images(values: Any) -> Iterable[str]:
    """`image: {repository, tag, digest}` blocks anywhere in chart values, as references."""
    if isinstance(values, Mapping):
        image = values.get("image")
        if isinstance(image, Mapping) and image.get("repository"):
            ref = str(image["repository"])
            if image.get("tag"):
                ref += f":{image['tag']}"
            if image.get("digest"):
                ref += f"@{image['digest']}"
            yield ref
        for value in values.values():
            yield from _helm_images(value)
    elif isinstance(values, list):
        for value in values:
            yield from _helm_images(value)


def _parsed(ref: str) -> ImageRef | None:
    try:
        return ImageRef.parse(ref)
    except InvalidImageRef:
        return None


def _tag_pinned(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    for ref in _images(args):
        image = _parsed(ref)
        if image is None:
            yield f"{_workload(args)} runs {ref!r}, which is not an image reference"
        elif not image.pinned:
            yield f"{_workload(args)} runs image {ref!r} without a pinned tag (no tag or 'latest')"


def _digest_pinned(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    # Only pod templates this program renders: a chart's own images are pinned by
    # its exact chart version (helm-chart-pinned), and the chart decides them.
    spec = pod_spec(args.resource_type, args.props)
    for ref in [c.get("image", "") for c in containers(spec)] if spec is not None else []:
        image = _parsed(ref)
        if image is None or image.digest is None:
            yield f"{_workload(args)} runs image {ref!r} by tag only; pin it by digest (@sha256:...)"


def _max_replicas(args: ResourceValidationArgs, config: Config) -> Iterable[str]:
    spec = args.props.get("spec") or {}
    value = spec.get("maxReplicaCount")
    if value is None:
        yield f"{_workload(args)} sets no maxReplicaCount: a runaway trigger could scale it without bound"
    elif int(value) > config["maxReplicas"]:
        yield f"{_workload(args)} allows {int(value)} replicas; this environment allows at most {config['maxReplicas']}"


def _scale_from_zero(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    """A ScaledObject at minReplicaCount 0 whose every trigger reads metrics its own pods emit never wakes up."""
    spec = args.props.get("spec") or {}
    if spec.get("minReplicaCount", 0) not in (0, "0"):
        return
    triggers = spec.get("triggers") or []
    own = [t for t in triggers if t.get("type") == "prometheus" and SELF_METRIC in str(dig(t, "metadata", "query"))]
    if triggers and len(own) == len(triggers):
        yield (
            f"{_workload(args)} scales to zero but only on {SELF_METRIC}, which no pod reports at zero replicas:"
            " it would never scale up again"
        )


POLICIES = [
    stack_policy(
        "gpu-workload-placement",
        "Every pod template that requests nvidia.com/gpu tolerates the GPU taints and selects a NodePool that exists.",
        "Build tolerations and nodeSelector from domain.contract.PoolContract for the pool the workload runs on.",
        _gpu_placement,
    ),
    stack_policy(
        "gpu-demand-within-pool-limit",
        "The GPU workloads of a NodePool at their maximum replicas (inference services, batch jobs) plus its warm"
        " headroom fit the pool's nvidia.com/gpu limit (advisory in dev, mandatory in prod).",
        "Lower a workload's maxReplicas (or gpus) or the pool's warmGpus, or raise the pool's maxGpus"
        " (timeSlicingReplicas on a shared pool); priorities decide who waits, not how many can run.",
        _gpu_demand_within_pool_limit,
        enforcement=ADVISORY,
    ),
    stack_policy(
        "gpu-daemon-coverage",
        "GPU node daemons (device plugin, DCGM exporter) can run on every GPU NodePool.",
        "Build their affinity and tolerations from domain.contract (gpu_node_affinity, gpu_daemon_tolerations).",
        _gpu_daemon_coverage,
        config=schema(
            gpuDaemonReleases={
                "type": "array",
                "items": {"type": "string"},
                "default": ["nvidia-device-plugin", "dcgm-exporter"],
                "description": "Helm release names of daemons that must run on every GPU node.",
            }
        ),
    ),
    resource_policy(
        "image-tag-pinned",
        "Container images have a tag that is not latest (or a digest).",
        "Pin the image tag in domain/versions.py or the workload config.",
        [*POD_KINDS, HELM_RELEASE],
        _tag_pinned,
    ),
    resource_policy(
        "image-digest-pinned",
        "Container images of rendered pod templates are pinned by digest (mandatory in prod).",
        "Reference images as repository@sha256:<digest>.",
        POD_KINDS,
        _digest_pinned,
        enforcement=ADVISORY,
    ),
    resource_policy(
        "keda-max-replicas",
        "KEDA ScaledObjects and ScaledJobs set maxReplicaCount within this environment's bound.",
        "Set maxReplicas in the workload config, within maxReplicas of policies/config/<env>.json.",
        [SCALED_OBJECT, SCALED_JOB],
        _max_replicas,
        config=schema(
            maxReplicas={
                "type": "integer",
                "default": 50,
                "description": "Highest maxReplicaCount a ScaledObject or ScaledJob may set.",
            }
        ),
    ),
    resource_policy(
        "keda-scale-from-zero-signal",
        "A ScaledObject with minReplicaCount 0 has a trigger that still reports when no replica runs.",
        "Let the stack wake it through the KEDA HTTP add-on (its external-push trigger, the default without"
        " scaling.wakeUpQuery), set inference.<name>.scaling.wakeUpQuery to a metric from outside the service"
        " (a gateway's pending requests, a queue length), or keep minReplicas >= 1.",
        [SCALED_OBJECT],
        _scale_from_zero,
        enforcement=ADVISORY,
    ),
]
