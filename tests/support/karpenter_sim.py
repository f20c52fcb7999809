"""A small model of Karpenter's provisioning simulation: which NodeClaims one batch of pending pods buys.

Modelled on kubernetes-sigs/karpenter v1.14.1 (the core that aws/karpenter-provider-aws
v1.14.1 pins, go.mod: sigs.k8s.io/karpenter v1.14.1-0.20260819221709-6e7eab7a0f48, the
v1.14.1 tag), `pkg/controllers/provisioning/scheduling/`:

- scheduler.go `Solve`/`trySchedule`/`add`: pods are taken largest first (queue.go); each
  one tries existing nodes (none here: the pool starts empty), then the in-flight
  NodeClaims of this batch (fewest pods first), then a new NodeClaim. Only when all
  three fail is one preference relaxed (preferences.go `Relax`) and the pod tried again.
  A new NodeClaim fits as long as the NodePool's limits allow one, so a preference
  treated as required is relaxed only once the limits are used up.
- `preferencePolicy` (pkg/operator/options/options.go `--preference-policy` /
  `PREFERENCE_POLICY`, chart value `settings.preferencePolicy`, default `Respect`):
  Respect turns the heaviest preferred node-affinity term and every `ScheduleAnyway`
  spread into requirements (scheduling/requirements.go `NewPodRequirements`,
  topology.go `newForTopologies`); Ignore drops them.
- topologygroup.go `nextDomainTopologySpread`: for `kubernetes.io/hostname` the global
  minimum is taken as 0 ("Karpenter can always create a new domain"), so with maxSkew 1
  a node, new or in flight, takes at most one matching pod. For other keys (zone) the
  minimum is over the registered domains (all zones the pool's offerings have; 0 while
  fewer than minDomains), a domain is valid if count + 1 - min <= maxSkew, and a new
  NodeClaim is pinned to the valid domain with the fewest pods.
- nodeclaim.go `CanAdd`: a NodeClaim keeps every instance type that still fits all its
  pods plus daemon overhead, so it grows into a bigger type rather than open a new one.
- scheduler.go `filterByRemainingResources`/`subtractMax`: a new NodeClaim may only use
  instance types whose capacity fits the remaining limits, and reserves the largest
  capacity among its options ("pessimistically"), which can end new NodeClaims early.
- NodeOverlay (pkg/apis/v1alpha1/nodeoverlay.go, pkg/controllers/nodeoverlay/store.go,
  pkg/cloudprovider/types.go `ApplyCapacityOverlay`): with the `nodeOverlay` feature
  gate, a matching overlay's `capacity` is merged over the instance type's capacity
  (`lo.Assign`, so it replaces `nvidia.com/gpu`); limits and fit both use it.

Approximations (say so when reading results): every instance type is offered in every
zone of the cluster's Karpenter subnets and every capacity type of the pool; allocatable
follows aws/karpenter-provider-aws v1.14.1 pkg/providers/instancetype/types.go (7.5 % VM
memory overhead, kube-reserved CPU steps, 11 MiB x maxPods + 255 MiB, 100 Mi eviction)
with maxPods from the vCPU count (ENI limits of the g6 sizes; other families roughly);
daemon overhead is one constant; the launched type is the cheapest on-demand option.
Not modelled: pod (anti-)affinity, existing nodes and preemption of headroom pods, DRA,
reserved capacity, minValues, and more than one provisioning batch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from domain import catalog, contract, cost
from domain.scheduling import tolerates

GPU = contract.GPU_RESOURCE
ZONE = "topology.kubernetes.io/zone"
HOSTNAME = "kubernetes.io/hostname"
VM_MEMORY_OVERHEAD = 0.075  # the chart's settings.vmMemoryOverheadPercent default
# Device plugin, DCGM exporter, node exporter, image pre-pull, aws-node, kube-proxy, pod identity agent.
DAEMON_OVERHEAD = {"cpu": 0.4, "memory": 0.75, "pods": 7}


def quantity(resource: str, value: Any) -> float:
    """A Kubernetes quantity as a float: cores for cpu, GiB for memory, a count otherwise."""
    text = str(value)
    if resource == "memory":
        for suffix, gib in (("Gi", 1), ("Mi", 1 / 1024), ("Ti", 1024)):
            if text.endswith(suffix):
                return float(text[: -len(suffix)]) * gib
        return float(text) / 2**30
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


def _fits(requests: Mapping[str, float], available: Mapping[str, float]) -> bool:
    return all(v <= available.get(k, 0) + 1e-9 for k, v in requests.items() if v)


def _add(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


def _matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values", [])
    return {
        "In": lambda: labels.get(key) in values,
        "NotIn": lambda: labels.get(key) not in values,
        "Exists": lambda: key in labels,
        "DoesNotExist": lambda: key not in labels,
    }[op]()


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpus: int  # physical GPUs
    usd_per_hour: float
    labels: Mapping[str, str]
    capacity: Mapping[str, float]  # after NodeOverlays: nvidia.com/gpu in slices on a shared pool
    allocatable: Mapping[str, float]


def _max_pods(vcpus: int) -> int:
    """ENI-limited pods (ENIs x (IPs per ENI - 1) + 2) as the g6 sizes have them (vpclimits, v1.14.1)."""
    return 58 if vcpus <= 8 else 234 if vcpus <= 48 else 737


def _kube_reserved_cpu(vcpus: int) -> float:
    steps = ((0, 1, 0.06), (1, 2, 0.01), (2, 4, 0.005), (4, 1 << 20, 0.0025))
    return sum(max(0, min(vcpus, end) - start) * share for start, end, share in steps)


def instance_types(
    nodepool: Mapping[str, Any], overlays: Iterable[Mapping[str, Any]], region: str
) -> list[InstanceType]:
    """The instance types a rendered NodePool can launch, with the rendered NodeOverlays applied."""
    name, template = nodepool["metadata"]["name"], nodepool["spec"]["template"]
    reqs = template["spec"]["requirements"]
    families = next(r["values"] for r in reqs if r["key"] == contract.INSTANCE_FAMILY_LABEL)
    ordered = sorted(overlays, key=lambda o: (-o["spec"].get("weight", 0), o["metadata"]["name"]))
    found = []
    for family in families:
        if not catalog.FAMILIES[family].is_gpu:
            raise NotImplementedError(
                f"{family}: only GPU pools are modelled (prices.json sizes CPU families per vCPU)"
            )
        for it in cost.price_book(region).family_types(family):
            labels = {
                **template.get("metadata", {}).get("labels", {}),
                contract.NODEPOOL_LABEL: name,
                "node.kubernetes.io/instance-type": it.name,
                contract.INSTANCE_FAMILY_LABEL: family,
                contract.INSTANCE_GPU_COUNT_LABEL: str(it.gpus),
                contract.ARCH_LABEL: catalog.FAMILIES[family].arch,
                contract.OS_LABEL: "linux",
            }
            if not all(_matches(r, labels) for r in reqs if r["key"] != contract.CAPACITY_TYPE_LABEL):
                continue
            pods = _max_pods(it.vcpus)
            capacity = {"cpu": it.vcpus, "memory": it.memory_gib * (1 - VM_MEMORY_OVERHEAD), GPU: it.gpus, "pods": pods}
            for resource in {k for o in ordered for k in o["spec"].get("capacity", {})}:
                # Highest weight first, then by name: the first matching overlay sets the resource.
                for o in ordered:
                    if resource in o["spec"].get("capacity", {}) and all(
                        _matches(r, labels) for r in o["spec"]["requirements"]
                    ):
                        capacity[resource] = quantity(resource, o["spec"]["capacity"][resource])
                        break
            reserved = {"cpu": _kube_reserved_cpu(it.vcpus), "memory": (11 * pods + 255 + 100) / 1024}
            allocatable = {k: v - reserved.get(k, 0) for k, v in capacity.items()}
            found.append(InstanceType(it.name, it.gpus, it.usd_per_hour, labels, capacity, allocatable))
    return found


@dataclass
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    requests: Mapping[str, float]
    spec: dict  # the pod spec; relaxation edits its copy

    @classmethod
    def replicas(cls, deployment: Mapping[str, Any], count: int) -> list[Pod]:
        """`count` pending pods of a rendered Deployment's pod template."""
        template = deployment["spec"]["template"]
        requests: dict[str, float] = {"pods": 1}
        for c in template["spec"]["containers"]:
            for k, v in c.get("resources", {}).get("requests", {}).items():
                requests[k] = requests.get(k, 0) + quantity(k, v)
        meta = deployment["metadata"]
        return [
            cls(
                f"{meta['name']}-{i}",
                meta.get("namespace", "default"),
                template["metadata"]["labels"],
                requests,
                template["spec"],
            )
            for i in range(count)
        ]


@dataclass(frozen=True)
class Spread:
    """A topology group (topologygroup.go): pods counted per domain of one key."""

    key: str
    max_skew: int
    namespace: str
    match_labels: tuple[tuple[str, str], ...]
    min_domains: int | None

    @classmethod
    def of(cls, pod: Pod, tsc: Mapping[str, Any]) -> Spread:
        selector = tsc.get("labelSelector", {})
        if selector.get("matchExpressions") or tsc.get("matchLabelKeys"):
            raise NotImplementedError("only matchLabels selectors are modelled")
        labels = tuple(sorted(selector.get("matchLabels", {}).items()))
        return cls(tsc["topologyKey"], tsc["maxSkew"], pod.namespace, labels, tsc.get("minDomains"))

    def selects(self, pod: Pod) -> bool:
        return pod.namespace == self.namespace and all(pod.labels.get(k) == v for k, v in self.match_labels)


@dataclass
class NodeClaim:
    hostname: str
    zones: frozenset[str]
    requirements: list[dict]  # pod node requirements merged in
    options: list[InstanceType]
    pods: list[str] = field(default_factory=list)
    requests: dict[str, float] = field(default_factory=dict)

    @property
    def launched(self) -> InstanceType:
        """What EC2 Fleet's lowest-price strategy launches: the cheapest option."""
        return min(self.options, key=lambda it: (it.usd_per_hour, it.name))


@dataclass
class Result:
    nodeclaims: list[NodeClaim]
    unschedulable: list[str]
    relaxed: list[str]  # "pod: what was relaxed"

    @property
    def physical_gpus(self) -> int:
        return sum(nc.launched.gpus for nc in self.nodeclaims)

    def summary(self) -> list[tuple[str, int, int]]:
        return [(nc.launched.name, nc.launched.gpus, len(nc.pods)) for nc in self.nodeclaims]


class Scheduler:
    """One provisioning batch for one NodePool that starts with no nodes."""

    def __init__(
        self,
        nodepool: Mapping[str, Any],
        types: list[InstanceType],
        zones: Iterable[str],
        preference_policy: str = "Respect",
    ) -> None:
        spec = nodepool["spec"]
        self.taints = spec["template"]["spec"].get("taints", [])
        self.template_types = types
        self.zones = frozenset(zones)
        self.respect = preference_policy == "Respect"
        self.remaining = {k: quantity(k, v) for k, v in spec.get("limits", {}).items()}
        self.counts: dict[Spread, dict[str, int]] = {}
        self.nodeclaims: list[NodeClaim] = []
        self.relaxed: list[str] = []

    def solve(self, pods: list[Pod]) -> Result:
        for pod in pods:  # topology.go NewTopology: every pending pod's groups exist before the first placement
            self._spreads(pod)
        queue = sorted(pods, key=lambda p: (-p.requests.get("cpu", 0), -p.requests.get("memory", 0), p.name))
        last_len: dict[str, int] = {}
        failed: set[str] = set()
        while queue and last_len.get(queue[0].name) != len(queue):
            pod = queue.pop(0)
            if self._try_schedule(Pod(pod.name, pod.namespace, pod.labels, pod.requests, copy.deepcopy(pod.spec))):
                failed.discard(pod.name)
            else:
                failed.add(pod.name)
                queue.append(pod)
                last_len[pod.name] = len(queue)
        return Result(self.nodeclaims, sorted(failed), self.relaxed)

    def _try_schedule(self, pod: Pod) -> bool:
        while not self._add(pod):
            relaxed = self._relax(pod)
            if relaxed is None:
                return False
            self.relaxed.append(f"{pod.name}: {relaxed}")
        return True

    def _relax(self, pod: Pod) -> str | None:
        """preferences.go `Relax`: one preference at a time, in upstream order (pod affinity terms are not modelled)."""
        affinity = pod.spec.get("affinity") or {}
        if affinity.get("podAffinity") or affinity.get("podAntiAffinity"):
            raise NotImplementedError("pod (anti-)affinity is not modelled")
        required = (affinity.get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
        if required and len(required["nodeSelectorTerms"]) > 1:
            required["nodeSelectorTerms"].pop(0)
            return "required node affinity term"
        preferred = (affinity.get("nodeAffinity") or {}).get("preferredDuringSchedulingIgnoredDuringExecution")
        if preferred:
            preferred.sort(key=lambda t: -t["weight"])
            preferred.pop(0)
            return "preferred node affinity term"
        spreads = pod.spec.get("topologySpreadConstraints") or []
        for i, tsc in enumerate(spreads):
            if tsc["whenUnsatisfiable"] == "ScheduleAnyway":
                spreads[i] = spreads[-1]  # upstream swaps the last one into its place
                spreads.pop()
                return f"spread on {tsc['topologyKey']}"
        return None

    def _requirements(self, pod: Pod) -> list[dict]:
        reqs = [{"key": k, "operator": "In", "values": [v]} for k, v in (pod.spec.get("nodeSelector") or {}).items()]
        node_affinity = (pod.spec.get("affinity") or {}).get("nodeAffinity") or {}
        preferred = node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or []
        if self.respect and preferred:
            reqs += max(preferred, key=lambda t: t["weight"])["preference"].get("matchExpressions", [])
        required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        if required and required.get("nodeSelectorTerms"):
            reqs += required["nodeSelectorTerms"][0].get("matchExpressions", [])
        return reqs

    def _spreads(self, pod: Pod) -> list[Spread]:
        tscs = pod.spec.get("topologySpreadConstraints") or []
        spreads = [Spread.of(pod, t) for t in tscs if self.respect or t["whenUnsatisfiable"] == "DoNotSchedule"]
        for s in spreads:
            self.counts.setdefault(s, dict.fromkeys(self.zones, 0) if s.key == ZONE else {})
        return spreads

    def _add(self, pod: Pod) -> bool:
        for nc in sorted(self.nodeclaims, key=lambda n: len(n.pods)):  # stable: earlier NodeClaims win ties
            if self._place(pod, nc):
                return True
        types = [it for it in self.template_types if _fits(it.capacity, self._limit_view())]
        if not types:
            return False
        nc = NodeClaim(f"hostname-placeholder-{len(self.nodeclaims) + 1:04d}", self.zones, [], types)
        if not self._place(pod, nc):
            return False
        self.nodeclaims.append(nc)
        for k in self.remaining:  # subtractMax
            self.remaining[k] -= max(it.capacity.get(k, 0) for it in nc.options)
        return True

    def _limit_view(self) -> dict[str, float]:
        return {k: self.remaining.get(k, math.inf) for k in ("cpu", "memory", GPU, "pods")}

    def _place(self, pod: Pod, nc: NodeClaim) -> bool:
        if not all(_tolerated(pod.spec.get("tolerations") or [], t) for t in self.taints):
            return False
        pod_reqs = self._requirements(pod)
        reqs = nc.requirements + pod_reqs
        pod_zones = {z for z in self.zones if all(_matches(r, {ZONE: z}) for r in pod_reqs if r["key"] == ZONE)}
        zones = set(nc.zones) & pod_zones
        for spread in self._spreads(pod):
            counts, own = self.counts[spread], int(spread.selects(pod))
            if spread.key == HOSTNAME:
                if counts.get(nc.hostname, 0) + own > spread.max_skew:
                    return False
                continue
            if spread.key != ZONE:
                raise NotImplementedError(f"spread on {spread.key} is not modelled")
            domains = sorted(z for z in counts if z in pod_zones)  # domainMinCount: the pod's domains only
            low = (
                0
                if spread.min_domains and len(domains) < spread.min_domains
                else min((counts[z] for z in domains), default=0)
            )
            valid = [z for z in domains if z in zones and counts[z] + own - low <= spread.max_skew]
            if not valid:
                return False
            zones = {min(valid, key=lambda z: (counts[z], z))}  # Go map order breaks ties upstream
        if not zones:
            return False
        requests = _add(_add(nc.requests, pod.requests), DAEMON_OVERHEAD)
        options = [
            it
            for it in nc.options
            if all(_matches(r, it.labels) for r in reqs if r["key"] != ZONE) and _fits(requests, it.allocatable)
        ]
        if not options:
            return False
        nc.zones, nc.requirements, nc.options = frozenset(zones), reqs, options
        nc.pods.append(pod.name)
        nc.requests = _add(nc.requests, pod.requests)
        self._record(pod, nc)
        return True

    def _record(self, pod: Pod, nc: NodeClaim) -> None:
        """topology.go `Record`: every group that selects the pod counts it, where its domain is known."""
        for spread, counts in self.counts.items():
            if not spread.selects(pod):
                continue
            if spread.key == HOSTNAME:
                counts[nc.hostname] = counts.get(nc.hostname, 0) + 1
            elif spread.key == ZONE and len(nc.zones) == 1:
                (zone,) = nc.zones
                counts[zone] += 1


def _tolerated(tolerations: list[Mapping[str, str]], taint: Mapping[str, str]) -> bool:
    return taint["effect"] not in ("NoSchedule", "NoExecute") or tolerates(tolerations, taint)


def karpenter_zones(resources: Iterable[Any]) -> list[str]:
    """Zones of the subnets Karpenter discovers (tagged `karpenter.sh/discovery`)."""
    return sorted(
        {
            r.inputs["availabilityZone"]
            for r in resources
            if r.type == "aws:ec2/subnet:Subnet" and contract.DISCOVERY_TAG in (r.inputs.get("tags") or {})
        }
    )


def simulate(plan: Any, service: str, count: int) -> Result:
    """Simulate `count` pending pods of an inference service on the pool it names, from a rendered plan."""
    deployment = plan.objects("Deployment")[service]
    pool_name = deployment["spec"]["template"]["spec"]["nodeSelector"][contract.NODEPOOL_LABEL]
    nodepool = plan.objects("NodePool")[pool_name]
    settings = plan.releases["karpenter"]["values"].get("settings", {})
    overlays = plan.objects("NodeOverlay").values() if settings.get("featureGates", {}).get("nodeOverlay") else ()
    types = instance_types(nodepool, overlays, plan.settings.region)
    zones = karpenter_zones(plan.resources)
    scheduler = Scheduler(nodepool, types, zones, settings.get("preferencePolicy", "Respect"))
    return scheduler.solve(Pod.replicas(deployment, count))
