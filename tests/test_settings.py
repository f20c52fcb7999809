"""Settings over every stack file, and bad configs rejected with exact messages."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pulumi.runtime import config as runtime_config

from domain import settings as stack_settings
from domain import versions
from domain.settings import ConfigError, Settings, raw_from_stack_config
from tests.conftest import STACKS, stack_config

NP = "gpu-inference:nodePools"
CL = "gpu-inference:cluster"
NET = "gpu-inference:network"


def settings_of(config: dict[str, Any]) -> Settings:
    return Settings.from_raw(raw_from_stack_config(config))


def test_there_are_dev_and_prod_stacks() -> None:
    assert {"dev", "prod"} <= set(STACKS)


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_file_is_valid(stack: str) -> None:
    cfg = settings_of(stack_config(stack))
    assert cfg.environment == stack
    assert any(not p.is_gpu for p in cfg.node_pools.values()), "every stack needs a CPU pool"


def test_dev_has_the_three_pools_the_design_names() -> None:
    pools = settings_of(stack_config("dev")).node_pools
    assert {k: p.gpu for k, p in pools.items()} == {"cpu": "none", "gpu": "dedicated", "gpu-shared": "shared"}
    assert all("spot" in p.capacity_types for p in pools.values())
    assert pools["gpu-shared"].time_slicing_replicas == 4


def test_prod_is_on_demand_private_and_per_az_nat() -> None:
    cfg = settings_of(stack_config("prod"))
    assert all(p.capacity_types == ("on-demand",) for p in cfg.node_pools.values() if p.is_gpu)
    assert cfg.cluster.endpoint_public_access is False
    assert cfg.cluster.api_cidrs == ()
    assert cfg.network.nat_gateways == "perAz"


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
            " disruptionBudgets, rootVolumeGib, amiAlias, weight, warmGpus, imageCache)"
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
        _set(f"{NP}/gpu/capacityTypes", ["reserved"]),
        ["gpu-inference:nodePools.gpu.capacityTypes[0] must be one of 'spot' or 'on-demand' (got \"reserved\")"],
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
            " gpu-inference:loadGenerator, aws:region)"
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


def test_gpu_pool_cpu_limit_defaults_to_what_its_gpus_bring() -> None:
    cfg = stack_config("dev")
    del cfg[NP]["gpu"]["maxCpu"]
    cfg[NP]["gpu"]["instanceFamilies"] = ["p5", "p4d"]
    cfg[NP]["gpu"]["maxGpus"] = 16
    # p5.4xlarge carries 16 vCPUs for 1 H100, p5.48xlarge 192 for 8: 24 per GPU at most.
    assert settings_of(cfg).node_pools["gpu"].max_cpu == 16 * 24
    cfg[NP]["gpu"]["instanceFamilies"] = ["g6", "p5"]  # g6.16xlarge: 64 vCPUs, 1 L4
    assert settings_of(cfg).node_pools["gpu"].max_cpu == 16 * 64
    cfg[NP]["gpu"]["maxCpu"] = 100
    assert settings_of(cfg).node_pools["gpu"].max_cpu == 100


def test_cluster_section_may_be_left_out() -> None:
    cfg = stack_config("dev")
    del cfg["gpu-inference:cluster"]
    cluster = settings_of(cfg).cluster
    assert (cluster.name, cluster.version, cluster.system_nodes.instance_types) == (
        "gpu-inference-dev",
        "1.35",
        ("m7i.large",),
    )
    cfg["gpu-inference:cluster"] = {"version": "1.33"}
    assert settings_of(cfg).cluster.name == "gpu-inference-dev"


def test_provider_namespaces_are_left_to_providers() -> None:
    cfg = stack_config("dev")
    cfg["aws:profile"] = "ml-dev"
    cfg["kubernetes:enableServerSideApply"] = True
    assert settings_of(cfg).region == "us-west-2"


def test_defaults_fill_what_a_stack_leaves_out() -> None:
    cfg = {
        "aws:region": "eu-west-1",
        "gpu-inference:environment": "staging",
        "gpu-inference:cluster": {"name": "gpuinf-staging"},
        "gpu-inference:nodePools": {
            "cpu": {"gpu": "none", "instanceFamilies": ["m7i"], "capacityTypes": ["on-demand"], "maxCpu": 16}
        },
    }
    s = settings_of(cfg)
    pool = s.node_pools["cpu"]
    assert (s.network.cidr, s.network.az_count, s.network.nat_gateways) == ("10.0.0.0/16", 2, "single")
    assert s.cluster.version == "1.35" and s.cluster.api_cidrs == ("0.0.0.0/0",)
    assert (pool.consolidation, pool.consolidate_after, pool.root_volume) == ("WhenEmptyOrUnderutilized", "1m", 50)
    assert pool.ami_alias.startswith("al2023@v")


@pytest.mark.parametrize("az_count", [2, 3, 4, 5, 6])
def test_subnets_never_overlap_and_stay_in_the_vpc(az_count: int) -> None:
    import ipaddress

    from domain.settings import NetworkSettings

    net = NetworkSettings.parse({"cidr": "10.8.0.0/20", "azCount": az_count})
    private, public = net.subnet_cidrs()
    blocks = [ipaddress.IPv4Network(c) for c in private + public]
    assert len(private) == len(public) == az_count
    assert all(b.subnet_of(ipaddress.IPv4Network("10.8.0.0/20")) for b in blocks)
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])


def test_load_reads_the_running_stacks_config() -> None:
    """`load()` is what `__main__.py` calls under the Pulumi engine."""
    cfg = stack_config("prod")
    runtime_config.set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in cfg.items()})
    try:
        loaded = stack_settings.load()
    finally:
        runtime_config.set_all_config({})
    assert loaded == settings_of(stack_config("prod"))


def test_load_rejects_a_misspelt_key_in_the_running_stack() -> None:
    cfg = stack_config("dev")
    cfg["gpu-inference:nodepools"] = cfg.pop(NP)
    runtime_config.set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in cfg.items()})
    try:
        with pytest.raises(ConfigError) as caught:
            stack_settings.load()
    finally:
        runtime_config.set_all_config({})
    assert caught.value.lines[0].startswith("gpu-inference:nodepools is not a known config key")


def test_config_errors_end_a_pulumi_run_cleanly() -> None:
    """`pulumi up` prints a RunError's message without a traceback; the plan still catches ConfigError."""
    import pulumi

    cfg = stack_config("dev")
    cfg[NP]["gpu"]["maxGpus"] = 0
    with pytest.raises(pulumi.RunError) as caught:
        settings_of(cfg)
    assert isinstance(caught.value, ConfigError)
    assert "gpu-inference:nodePools.gpu.maxGpus must be >= 1 (got 0)" in str(caught.value)


def test_bottlerocket_stays_allowed_on_cpu_pools() -> None:
    cfg = stack_config("dev")
    cfg[NP]["cpu"]["amiAlias"] = "bottlerocket@1.50.0"
    assert settings_of(cfg).node_pools["cpu"].ami_alias == "bottlerocket@1.50.0"


def test_private_access_is_optional_with_a_public_endpoint() -> None:
    """In-VPC clients reach a public+private cluster through its private endpoint too, so the key is allowed."""
    cfg = stack_config("dev")
    assert settings_of(cfg).cluster.private_access is None
    cfg[CL]["privateAccess"] = {"securityGroupIds": ["sg-0123456789abcdef0"], "cidrs": ["100.64.0.0/16"]}
    access = settings_of(cfg).cluster.private_access
    assert (access.cidrs, access.security_group_ids) == (("100.64.0.0/16",), ("sg-0123456789abcdef0",))


def test_prod_reaches_its_private_endpoint_from_the_runner_network() -> None:
    cluster = settings_of(stack_config("prod")).cluster
    assert cluster.endpoint_public_access is False
    assert cluster.private_access is not None and cluster.private_access.cidrs == ("10.60.8.0/24",)


def test_zone_ids_resolve_to_this_accounts_names_in_their_order() -> None:
    cfg = stack_config("prod")
    network = settings_of(cfg).network
    assert network.availability_zone_ids == ("use1-az1", "use1-az2", "use1-az4")
    # One account's mapping: AWS shuffles names per account, IDs stay put.
    ids = ["use1-az4", "use1-az6", "use1-az1", "use1-az2", "use1-az3", "use1-az5"]
    names = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d", "us-east-1e", "us-east-1f"]
    assert network.zones_for_ids(ids, names, "us-east-1") == ["us-east-1c", "us-east-1d", "us-east-1a"]


def test_a_zone_id_the_region_does_not_offer_is_named() -> None:
    cfg = stack_config("prod")
    cfg[NET]["availabilityZoneIds"] = ["use1-az1", "use1-az9", "usw2-az1"]
    network = settings_of(cfg).network
    with pytest.raises(ConfigError) as caught:
        network.zones_for_ids(["use1-az1", "use1-az2"], ["us-east-1a", "us-east-1b"], "us-east-1")
    assert caught.value.lines == [
        'gpu-inference:network.availabilityZoneIds[1] is not a zone ID us-east-1 offers to this account (offered: use1-az1, use1-az2) (got "use1-az9")',
        'gpu-inference:network.availabilityZoneIds[2] is not a zone ID us-east-1 offers to this account (offered: use1-az1, use1-az2) (got "usw2-az1")',
    ]


def test_the_project_file_describes_every_network_and_cluster_key() -> None:
    """`pulumi config` users read Pulumi.yaml's descriptions; a new key must appear there too."""
    import yaml

    from domain.settings import ClusterSettings, NetworkSettings, _inner_model
    from tools.plan.run import ROOT

    def keys(model) -> list[str]:
        found = []
        for name, field in model.model_fields.items():
            found.append(field.alias or name)
            inner = _inner_model(field.annotation)
            found += keys(inner) if inner is not None else []
        return found

    described = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["template"]["config"]
    for key, model in (("gpu-inference:network", NetworkSettings), ("gpu-inference:cluster", ClusterSettings)):
        text = described[key]["description"]
        missing = [k for k in keys(model) if k not in text]
        assert missing == [], f"{key}: Pulumi.yaml's description does not name {missing}"
