"""Settings over every stack file, and bad configs rejected with exact messages."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pulumi.runtime import config as runtime_config

from infra import settings as stack_settings
from infra.settings import ConfigError, Settings, raw_from_stack_config
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
    ("missing region", lambda cfg: cfg.pop("aws:region"), ["aws:region is required"]),
    (
        "bad region",
        lambda cfg: cfg.__setitem__("aws:region", "mars-1"),
        ['aws:region must be an AWS region such as us-west-2 (got "mars-1")'],
    ),
]


@pytest.mark.parametrize(("case", "mutate", "expected"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_rejected_with_exact_message(case: str, mutate: Callable, expected: list[str]) -> None:
    stack = "prod" if case == "CIDRs with a private endpoint" else "dev"
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

    from infra.settings import NetworkSettings

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
