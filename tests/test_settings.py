"""Settings over every stack file: valid, with the facts the design names, defaults filled, `load()` under the engine.

Bad configs and their exact messages: tests/settings/.
"""

from __future__ import annotations

import json

import pytest
from pulumi.runtime import config as runtime_config

from domain import settings as stack_settings
from domain.settings import ConfigError
from tests.conftest import STACKS, settings_of, stack_config

NP = "gpu-inference:nodePools"
CL = "gpu-inference:cluster"
NET = "gpu-inference:network"


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

    from domain.settings import ClusterSettings, NetworkSettings
    from domain.settings.errors import inner_model
    from tools.plan.run import ROOT

    def keys(model) -> list[str]:
        found = []
        for name, field in model.model_fields.items():
            found.append(field.alias or name)
            inner = inner_model(field.annotation)
            found += keys(inner) if inner is not None else []
        return found

    described = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["template"]["config"]
    for key, model in (("gpu-inference:network", NetworkSettings), ("gpu-inference:cluster", ClusterSettings)):
        text = described[key]["description"]
        missing = [k for k in keys(model) if k not in text]
        assert missing == [], f"{key}: Pulumi.yaml's description does not name {missing}"


# What callers (infra/, tools/, policies/, __main__.py, tests) import from `domain.settings`:
# the package's modules are its own business, these names are its interface.
PUBLIC_NAMES = [
    "PROJECT",
    "DNS_LABEL",
    "REGION",
    "SNAPSHOT_ID",
    "LOAD_GENERATOR_NAME",
    "CONFIG_KEYS",
    "ConfigError",
    "Settings",
    "PoolSettings",
    "NetworkSettings",
    "ClusterSettings",
    "KarpenterSettings",
    "MonitoringSettings",
    "InferenceSettings",
    "BatchJobSettings",
    "LoadGeneratorSettings",
    "ScalingSettings",
    "raw_from_stack_config",
    "load",
]


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_callers_names_are_importable_from_the_package(name: str) -> None:
    assert name in stack_settings.__all__ and getattr(stack_settings, name) is not None
