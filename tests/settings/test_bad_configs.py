"""Bad stack configs are rejected with exact messages, one per problem, each naming its `gpu-inference:` key.

Each case mutates a stack file (the awsguard pattern: one mutation per negative
case). tests/settings/test_every_problem.py has the configs with several problems.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from domain import versions
from domain.settings import ConfigError
from tests.conftest import settings_of, stack_config

NP = "gpu-inference:nodePools"
CL = "gpu-inference:cluster"
NET = "gpu-inference:network"


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """Mutation setting a nested key; `path` is '<config key>/<a>/<b>'."""
    key, *parts = path.split("/")

    def mutate(cfg: dict) -> None:
        node = cfg[key]
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value

    return mutate


def _drop(path: str) -> Callable[[dict], None]:
    key, *parts = path.split("/")

    def mutate(cfg: dict) -> None:
        node = cfg[key]
        for part in parts[:-1]:
            node = node[part]
        del node[parts[-1]]

    return mutate


BAD_CONFIGS: list[tuple[str, Callable[[dict], None], list[str]]] = [
    (
        "gpu pool without maxGpus",
        _drop(f"{NP}/gpu/maxGpus"),
        ["gpu-inference:nodePools.gpu.maxGpus is required for GPU pools (an integer >= 1)"],
    ),
    (
        "misspelt pool key",
        _set(f"{NP}/gpu/maxGPUs", 3),
        [
            "gpu-inference:nodePools.gpu.maxGPUs is not a known key (allowed: gpu, instanceFamilies, capacityTypes, maxCpu,"
            " maxMemoryGib, maxGpus, timeSlicingReplicas, consolidation, consolidateAfter, expireAfter,"
            " disruptionBudgets, rootVolumeGib, amiAlias, weight, warmGpus, imageCache, capacityReservations)"
        ],
    ),
    (
        "maxGpus below the smallest instance",
        lambda cfg: cfg[NP]["gpu"].update(instanceFamilies=["p4d", "p5e"], maxGpus=4),
        [
            "gpu-inference:nodePools.gpu.maxGpus must be at least 8, the fewest GPUs one instance of p4d, p5e"
            " carries: Karpenter never launches a node that would pass the pool's limit (got 4)"
        ],
    ),
    ("maxGpus zero", _set(f"{NP}/gpu/maxGpus", 0), ["gpu-inference:nodePools.gpu.maxGpus must be >= 1 (got 0)"]),
    (
        "maxGpus as text",
        _set(f"{NP}/gpu/maxGpus", "4"),
        ['gpu-inference:nodePools.gpu.maxGpus must be of type int (got "4")'],
    ),
    (
        "CPU family in a GPU pool",
        _set(f"{NP}/gpu/instanceFamilies", ["g5", "c7i"]),
        [
            'gpu-inference:nodePools.gpu.instanceFamilies must name only GPU families since gpu is dedicated (got ["c7i"]);'
            " allowed: g4dn, g5, g5g, g6, g6e, gr6, p4d, p4de, p5, p5e, p5en"
        ],
    ),
    (
        "GPU family in a CPU pool",
        _set(f"{NP}/cpu/instanceFamilies", ["g5"]),
        [
            'gpu-inference:nodePools.cpu.instanceFamilies must name only CPU families since gpu is none (got ["g5"]);'
            " allowed: c5, c6a, c6i, c7a, c7g, c7i, c8g, m5, m6a, m6i, m7a, m7g, m7i, m8g, r6i, r7a, r7g, r7i"
        ],
    ),
    (
        "empty families",
        _set(f"{NP}/gpu/instanceFamilies", []),
        ["gpu-inference:nodePools.gpu.instanceFamilies must not be empty (got [])"],
    ),
    (
        "unknown capacity type",
        _set(f"{NP}/gpu/capacityTypes", ["dedicated"]),
        [
            "gpu-inference:nodePools.gpu.capacityTypes[0] must be one of 'spot', 'on-demand' or 'reserved'"
            ' (got "dedicated")'
        ],
    ),
    (
        "reserved capacity without reservations",
        _set(f"{NP}/gpu/capacityTypes", ["reserved", "on-demand"]),
        [
            "gpu-inference:nodePools.gpu.capacityReservations is required when capacityTypes includes reserved: a list"
            " of {id: cr-...} or {tags: {...}} selecting the pool's On-Demand Capacity Reservations or Capacity"
            " Blocks (Karpenter launches into none it is not told about)"
        ],
    ),
    (
        "reservations without reserved capacity",
        _set(f"{NP}/gpu/capacityReservations", [{"id": "cr-0123456789abcdef0"}]),
        [
            "gpu-inference:nodePools.gpu.capacityReservations is only used when capacityTypes includes reserved"
            ' (got [{"id": "cr-0123456789abcdef0"}])'
        ],
    ),
    (
        "a reservation term with both id and tags",
        lambda cfg: cfg[NP]["gpu"].update(
            capacityTypes=["reserved"], capacityReservations=[{"id": "cr-0123456789abcdef0", "tags": {"team": "ml"}}]
        ),
        [
            "gpu-inference:nodePools.gpu.capacityReservations[0] must set exactly one of id or tags"
            ' (got {"id": "cr-0123456789abcdef0", "tags": {"team": "ml"}})'
        ],
    ),
    (
        "a reservation ID that is not one",
        lambda cfg: cfg[NP]["gpu"].update(capacityTypes=["reserved"], capacityReservations=[{"id": "odcr-1"}]),
        ['gpu-inference:nodePools.gpu.capacityReservations[0].id must match ^cr-[0-9a-z]+$ (got "odcr-1")'],
    ),
    (
        "repeated capacity type",
        _set(f"{NP}/gpu/capacityTypes", ["spot", "spot"]),
        ['gpu-inference:nodePools.gpu.capacityTypes must not repeat ["spot"]'],
    ),
    (
        "time slicing above 48",
        _set(f"{NP}/gpu-shared/timeSlicingReplicas", 64),
        ["gpu-inference:nodePools.gpu-shared.timeSlicingReplicas must be <= 48 (got 64)"],
    ),
    (
        "time slicing below 2",
        _set(f"{NP}/gpu-shared/timeSlicingReplicas", 1),
        ["gpu-inference:nodePools.gpu-shared.timeSlicingReplicas must be >= 2 (got 1)"],
    ),
    (
        "shared pool without replicas",
        _drop(f"{NP}/gpu-shared/timeSlicingReplicas"),
        ["gpu-inference:nodePools.gpu-shared.timeSlicingReplicas is required for shared GPU pools (an integer 2..48)"],
    ),
    (
        "time slicing on a dedicated pool",
        _set(f"{NP}/gpu/timeSlicingReplicas", 4),
        ["gpu-inference:nodePools.gpu.timeSlicingReplicas is only allowed on shared GPU pools (gpu: shared)"],
    ),
    (
        "maxGpus on a CPU pool",
        _set(f"{NP}/cpu/maxGpus", 2),
        ["gpu-inference:nodePools.cpu.maxGpus is only allowed on GPU pools (gpu: dedicated or shared)"],
    ),
    (
        "unknown gpu mode",
        _set(f"{NP}/gpu/gpu", "mig"),
        ["gpu-inference:nodePools.gpu.gpu must be one of 'none', 'dedicated' or 'shared' (got \"mig\")"],
    ),
    (
        "bad consolidation policy",
        _set(f"{NP}/gpu/consolidation", "Always"),
        [
            "gpu-inference:nodePools.gpu.consolidation must be one of 'WhenEmpty' or 'WhenEmptyOrUnderutilized' (got \"Always\")"
        ],
    ),
    (
        "bad duration",
        _set(f"{NP}/gpu/consolidateAfter", "5 minutes"),
        ['gpu-inference:nodePools.gpu.consolidateAfter must match ^(([0-9]+(s|m|h))+|Never)$ (got "5 minutes")'],
    ),
    (
        "budget schedule without duration",
        _set(f"{NP}/gpu/disruptionBudgets", [{"nodes": "1", "schedule": "@daily"}]),
        [
            "gpu-inference:nodePools.gpu.disruptionBudgets[0].duration is required when schedule is set"
            " (Karpenter needs both or neither)"
        ],
    ),
    (
        "unpinned AMI",
        _set(f"{NP}/gpu/amiAlias", "al2023@latest"),
        [
            "gpu-inference:nodePools.gpu.amiAlias must match ^(al2023|bottlerocket)@(v[0-9]{8}|[0-9]+\\.[0-9]+\\.[0-9]+)$"
            ' (got "al2023@latest")'
        ],
    ),
    (
        "invalid pool name",
        _set(f"{NP}/GPU_big", {"gpu": "none", "instanceFamilies": ["c7i"], "capacityTypes": ["spot"], "maxCpu": 8}),
        [
            "gpu-inference:nodePools.GPU_big is not a valid pool name: use a lowercase DNS label"
            " (a-z, 0-9, '-', at most 40 characters)"
        ],
    ),
    (
        "misspelt top-level key",
        lambda cfg: cfg.__setitem__("gpu-inference:nodePool", {}),
        [
            "gpu-inference:nodePool is not a known config key (allowed: gpu-inference:environment,"
            " gpu-inference:tags, gpu-inference:network, gpu-inference:cluster, gpu-inference:karpenter,"
            " gpu-inference:nodePools, gpu-inference:monitoring, gpu-inference:inference, gpu-inference:batchJobs,"
            " gpu-inference:loadGenerator, gpu-inference:ingress, aws:region)"
        ],
    ),
    (
        "public VPC range",
        _set(f"{NET}/cidr", "8.8.0.0/16"),
        ['gpu-inference:network.cidr must be a private (RFC 1918) range (got "8.8.0.0/16")'],
    ),
    (
        "zones that disagree with azCount",
        _set(f"{NET}/availabilityZones", ["us-west-2a"]),
        ['gpu-inference:network.availabilityZones must list exactly azCount (2) zones (got ["us-west-2a"])'],
    ),
    (
        "zone outside the region",
        _set(f"{NET}/availabilityZones", ["us-west-2a", "us-east-1b"]),
        [
            'gpu-inference:network.availabilityZones[1] must be a zone of aws:region us-west-2, such as us-west-2a (got "us-east-1b")'
        ],
    ),
    (
        "unsupported Kubernetes version",
        _set(f"{CL}/version", "1.20"),
        ["gpu-inference:cluster.version must be one of '1.32', '1.33', '1.34', '1.35' or '1.36' (got \"1.20\")"],
    ),
    (
        "unknown nested key",
        _set(f"{CL}/systemNodes/spot", True),
        [
            "gpu-inference:cluster.systemNodes.spot is not a known key (allowed: instanceTypes, minSize, desiredSize, maxSize, diskGib)"
        ],
    ),
    (
        "CIDRs with a private endpoint",
        _set(f"{CL}/publicAccessCidrs", ["203.0.113.0/24"]),
        [
            'gpu-inference:cluster.publicAccessCidrs is only allowed with endpointPublicAccess: true (got ["203.0.113.0/24"])'
        ],
    ),
    (
        "reserved tag",
        lambda cfg: cfg["gpu-inference:tags"].__setitem__("kubernetes.io/cluster/x", "owned"),
        [
            "gpu-inference:tags.kubernetes.io/cluster/x is reserved for AWS, EKS or Karpenter (keys starting aws:,"
            " eks:eks-cluster-name, kubernetes.io/cluster, karpenter.sh/nodepool, karpenter.sh/nodeclaim,"
            " karpenter.k8s.aws/ec2nodeclass)"
        ],
    ),
    (
        "private endpoint with no way in",
        _drop(f"{CL}/privateAccess"),
        [
            "gpu-inference:cluster.privateAccess must list cidrs or securityGroupIds with endpointPublicAccess: false:"
            " the machine that runs pulumi (a self-hosted runner, VPN or peered network) reaches the API only through"
            " the private endpoint, on port 443 of the cluster security group (got null)"
        ],
    ),
    (
        "private endpoint with an empty privateAccess",
        _set(f"{CL}/privateAccess", {"cidrs": []}),
        [
            "gpu-inference:cluster.privateAccess must list cidrs or securityGroupIds with endpointPublicAccess: false:"
            " the machine that runs pulumi (a self-hosted runner, VPN or peered network) reaches the API only through"
            ' the private endpoint, on port 443 of the cluster security group (got {"cidrs": [], "securityGroupIds": []})'
        ],
    ),
    (
        "public address for the private endpoint",
        _set(f"{CL}/privateAccess/cidrs", ["10.60.8.0/24", "8.8.8.8/32"]),
        [
            "gpu-inference:cluster.privateAccess.cidrs[1] must be a private range routed to the VPC (RFC 1918 or"
            " 100.64.0.0/10): the private endpoint has no public address; public clients need endpointPublicAccess"
            ' with publicAccessCidrs (got "8.8.8.8/32")'
        ],
    ),
    (
        "everyone for the private endpoint",
        _set(f"{CL}/privateAccess/cidrs", ["0.0.0.0/0"]),
        [
            "gpu-inference:cluster.privateAccess.cidrs[0] must be a private range routed to the VPC (RFC 1918 or"
            " 100.64.0.0/10): the private endpoint has no public address; public clients need endpointPublicAccess"
            ' with publicAccessCidrs (got "0.0.0.0/0")'
        ],
    ),
    (
        "privateAccess CIDR with host bits",
        _set(f"{CL}/privateAccess/cidrs", ["10.60.8.7/24"]),
        [
            'gpu-inference:cluster.privateAccess.cidrs[0] has host bits set: the network is 10.60.8.0/24 (got "10.60.8.7/24")'
        ],
    ),
    (
        "privateAccess address without a prefix",
        _set(f"{CL}/privateAccess/cidrs", ["10.60.8.7"]),
        [
            "gpu-inference:cluster.privateAccess.cidrs[0] must be an IPv4 network in CIDR form such as 10.60.8.0/24"
            ' (got "10.60.8.7")'
        ],
    ),
    (
        "repeated privateAccess CIDR",
        _set(f"{CL}/privateAccess/cidrs", ["10.60.8.0/24", "10.60.8.0/24"]),
        ['gpu-inference:cluster.privateAccess.cidrs must not repeat ["10.60.8.0/24"]'],
    ),
    (
        "bad runner security group",
        _set(f"{CL}/privateAccess/securityGroupIds", ["sg-12345"]),
        [
            "gpu-inference:cluster.privateAccess.securityGroupIds[0] must match ^sg-([0-9a-f]{8}|[0-9a-f]{17})$"
            ' (got "sg-12345")'
        ],
    ),
    (
        "misspelt privateAccess key",
        _set(f"{CL}/privateAccess/cidr", ["10.60.8.0/24"]),
        ["gpu-inference:cluster.privateAccess.cidr is not a known key (allowed: cidrs, securityGroupIds)"],
    ),
    (
        "Bottlerocket on a dedicated GPU pool",
        _set(f"{NP}/gpu/amiAlias", "bottlerocket@1.50.0"),
        [
            "gpu-inference:nodePools.gpu.amiAlias must be an al2023@ alias on GPU pools (gpu: dedicated), such as"
            f" al2023@{versions.EKS_AMI_RELEASE}: Bottlerocket's NVIDIA variants run their own device plugin,"
            " configured through Bottlerocket settings instead of this program's device-plugin ConfigMap;"
            ' bottlerocket@ is allowed on CPU pools (gpu: none) (got "bottlerocket@1.50.0")'
        ],
    ),
    (
        "Bottlerocket on a shared GPU pool",
        _set(f"{NP}/gpu-shared/amiAlias", "bottlerocket@1.51.0"),
        [
            "gpu-inference:nodePools.gpu-shared.amiAlias must be an al2023@ alias on GPU pools (gpu: shared), such as"
            f" al2023@{versions.EKS_AMI_RELEASE}: Bottlerocket's NVIDIA variants run their own device plugin,"
            " configured through Bottlerocket settings instead of this program's device-plugin ConfigMap;"
            ' bottlerocket@ is allowed on CPU pools (gpu: none) (got "bottlerocket@1.51.0")'
        ],
    ),
    (
        "zone IDs that disagree with azCount",
        _set(f"{NET}/availabilityZoneIds", ["usw2-az1"]),
        ['gpu-inference:network.availabilityZoneIds must list exactly azCount (2) zone IDs (got ["usw2-az1"])'],
    ),
    (
        "repeated zone ID",
        _set(f"{NET}/availabilityZoneIds", ["usw2-az1", "usw2-az1"]),
        ['gpu-inference:network.availabilityZoneIds must not repeat a zone ID (got ["usw2-az1", "usw2-az1"])'],
    ),
    (
        "zone name where a zone ID belongs",
        _set(f"{NET}/availabilityZoneIds", ["usw2-az1", "us-west-2b"]),
        ['gpu-inference:network.availabilityZoneIds[1] must match ^[a-z]{2,4}[0-9]-az[0-9]+$ (got "us-west-2b")'],
    ),
    (
        "zones pinned by name and by ID",
        lambda cfg: cfg[NET].update(
            availabilityZones=["us-west-2a", "us-west-2b"], availabilityZoneIds=["usw2-az1", "usw2-az2"]
        ),
        [
            "gpu-inference:network.availabilityZoneIds cannot be combined with availabilityZones: pin the zones by ID"
            ' or by name, not both (got ["usw2-az1", "usw2-az2"])'
        ],
    ),
    ("missing region", lambda cfg: cfg.pop("aws:region"), ["aws:region is required"]),
    (
        "bad region",
        lambda cfg: cfg.__setitem__("aws:region", "mars-1"),
        ['aws:region must be an AWS region such as us-west-2 (got "mars-1")'],
    ),
]


# Cases that mutate the prod stack (private endpoint).
PROD_CASES = {
    "CIDRs with a private endpoint",
    "private endpoint with no way in",
    "private endpoint with an empty privateAccess",
    "public address for the private endpoint",
    "everyone for the private endpoint",
    "privateAccess CIDR with host bits",
    "privateAccess address without a prefix",
    "repeated privateAccess CIDR",
    "bad runner security group",
    "misspelt privateAccess key",
}


@pytest.mark.parametrize(("case", "mutate", "expected"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_rejected_with_exact_message(case: str, mutate: Callable, expected: list[str]) -> None:
    stack = "prod" if case in PROD_CASES else "dev"
    cfg = stack_config(stack)
    mutate(cfg)
    with pytest.raises(ConfigError) as caught:
        settings_of(cfg)
    assert caught.value.lines == expected, f"{case}: expected {expected}, found {caught.value.lines}"


def test_every_problem_is_reported_at_once() -> None:
    cfg = stack_config("dev")
    cfg[NP]["gpu"]["maxGpus"] = 0
    cfg[NP]["cpu"]["capacityTypes"] = []
    with pytest.raises(ConfigError) as caught:
        settings_of(cfg)
    assert sorted(caught.value.lines) == [
        "gpu-inference:nodePools.cpu.capacityTypes must not be empty (got [])",
        "gpu-inference:nodePools.gpu.maxGpus must be >= 1 (got 0)",
    ]


def test_only_gpu_pools_are_allowed_without_a_load_generator() -> None:
    cfg = stack_config("dev")
    del cfg[NP]["cpu"]
    with pytest.raises(ConfigError) as caught:
        settings_of(cfg)
    assert caught.value.lines == [
        'gpu-inference:loadGenerator needs a CPU pool (gpu: none) in nodePools to run on; got only GPU pools ["gpu", "gpu-shared"]'
    ]
    del cfg["gpu-inference:loadGenerator"]
    assert settings_of(cfg).cpu_pool is None


def test_cpu_pool_needs_max_cpu() -> None:
    cfg = stack_config("dev")
    del cfg[NP]["cpu"]["maxCpu"]
    with pytest.raises(ConfigError) as caught:
        settings_of(cfg)
    assert caught.value.lines == [
        "gpu-inference:nodePools.cpu.maxCpu is required for CPU pools (gpu: none): the pool's vCPU limit, >= 1"
    ]


def test_config_errors_end_a_pulumi_run_cleanly() -> None:
    """`pulumi up` prints a RunError's message without a traceback; the plan still catches ConfigError."""
    import pulumi

    cfg = stack_config("dev")
    cfg[NP]["gpu"]["maxGpus"] = 0
    with pytest.raises(pulumi.RunError) as caught:
        settings_of(cfg)
    assert isinstance(caught.value, ConfigError)
    assert "gpu-inference:nodePools.gpu.maxGpus must be >= 1 (got 0)" in str(caught.value)
