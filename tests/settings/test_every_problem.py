"""A config with several problems gets every one of them, in a fixed order.

Every rule collects all it finds. Within a rule, keys (or values) that are not
allowed where they stand come first, then keys that are required, then
quantities; a quantity is computed as if the disallowed key were absent, and
not checked at all when it depends on a key that is missing or wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain import versions
from domain.settings import ConfigError
from tests.conftest import settings_of, stack_config

NP = "gpu-inference:nodePools"
CL = "gpu-inference:cluster"
NET = "gpu-inference:network"
INF = "gpu-inference:inference"
JOBS = "gpu-inference:batchJobs"

CPU_FAMILIES = "c5, c6a, c6i, c7a, c7g, c7i, c8g, m5, m6a, m6i, m7a, m7g, m7i, m8g, r6i, r7a, r7g, r7i"
GPU_FAMILIES = "g4dn, g5, g5g, g6, g6e, gr6, p4d, p4de, p5, p5e, p5en"
RESERVED = (
    "is reserved for AWS, EKS or Karpenter (keys starting aws:, eks:eks-cluster-name, kubernetes.io/cluster,"
    " karpenter.sh/nodepool, karpenter.sh/nodeclaim, karpenter.k8s.aws/ec2nodeclass)"
)
DNS_NAME = "use a lowercase DNS label (a-z, 0-9, '-', at most 40 characters)"
SYSTEM_TYPES = (
    "must name x86_64 CPU instance types such as m7i.large or c7i.2xlarge (sizes large, xlarge, Nxlarge,"
    " metal-Nxl; families c5, c6a, c6i, c7a, c7i, m5, m6a, m6i, m7a, m7i, r6i, r7a, r7i)"
)


def problems(stack: str, mutate: Callable[[dict], None]) -> list[str]:
    cfg = stack_config(stack)
    mutate(cfg)
    with pytest.raises(ConfigError) as caught:
        settings_of(cfg)
    return caught.value.lines


def test_a_dedicated_pool_with_slices_reports_the_stray_key_first_and_holds_warm_gpus_to_max_gpus() -> None:
    """Before: one message, warmGpus against maxGpus x timeSlicingReplicas = 16 slices, on a pool with no slices."""

    def mutate(cfg: dict) -> None:
        cfg[NP]["gpu"].update(
            timeSlicingReplicas=4, warmGpus=99, consolidation="WhenEmptyOrUnderutilized", consolidateAfter="Never"
        )

    assert problems("dev", mutate) == [
        "gpu-inference:nodePools.gpu.timeSlicingReplicas is only allowed on shared GPU pools (gpu: shared)",
        "gpu-inference:nodePools.gpu.consolidateAfter cannot be Never with consolidation WhenEmptyOrUnderutilized",
        "gpu-inference:nodePools.gpu.warmGpus must be at most the pool's GPU limit, maxGpus (4): headroom counts"
        " against it (got 99)",
    ]


def _cpu_pool_with_gpu_keys(cfg: dict) -> None:
    pool = cfg[NP]["cpu"]
    del pool["maxCpu"]
    pool.update(instanceFamilies=["c7i", "g5", "zz9"], maxGpus=2, warmGpus=1, imageCache={"prePull": False})


def _shared_pool_without_replicas(cfg: dict) -> None:
    pool = cfg[NP]["gpu-shared"]
    del pool["timeSlicingReplicas"]
    pool.update(warmGpus=9, amiAlias="bottlerocket@1.50.0")


def _cross_section(cfg: dict) -> None:
    cfg[NET]["availabilityZones"] = ["us-east-1a", "us-east-1b"]
    cfg[INF]["llm"]["pool"] = "cpu"
    cfg[INF]["loadgen"] = dict(cfg[INF]["embed-small"], gpus=2)
    cfg[JOBS]["offline-scoring"]["pool"] = "nope"
    cfg["gpu-inference:loadGenerator"]["target"] = "nope"


def _bad_names(cfg: dict) -> None:
    cfg[NP]["Big_Pool"] = cfg[NP]["cpu"]
    cfg[NP]["p" * 41] = cfg[NP]["cpu"]
    cfg[INF]["LLM"] = cfg[INF]["llm"]
    cfg[JOBS]["Job"] = cfg[JOBS]["offline-scoring"]


CASES: list[tuple[str, str, Callable[[dict], None], list[str]]] = [
    (
        "CPU pool with every GPU-only key and no maxCpu",
        "dev",
        _cpu_pool_with_gpu_keys,
        [
            'gpu-inference:nodePools.cpu.instanceFamilies names unknown instance families ["zz9"];'
            f" known GPU families: {GPU_FAMILIES}; known CPU families: {CPU_FAMILIES}",
            "gpu-inference:nodePools.cpu.instanceFamilies must name only CPU families since gpu is none"
            f' (got ["g5"]); allowed: {CPU_FAMILIES}',
            "gpu-inference:nodePools.cpu.maxGpus is only allowed on GPU pools (gpu: dedicated or shared)",
            "gpu-inference:nodePools.cpu.warmGpus is only allowed on GPU pools (gpu: dedicated or shared)",
            'gpu-inference:nodePools.cpu.imageCache is only allowed on GPU pools (gpu: dedicated or shared) (got {"prePull": false})',
            "gpu-inference:nodePools.cpu.maxCpu is required for CPU pools (gpu: none): the pool's vCPU limit, >= 1",
        ],
    ),
    (
        # warmGpus counts slices here, and the slice count is missing: no limit to hold it against.
        "shared pool without replicas skips the warmGpus limit",
        "dev",
        _shared_pool_without_replicas,
        [
            "gpu-inference:nodePools.gpu-shared.amiAlias must be an al2023@ alias on GPU pools (gpu: shared), such as"
            f" al2023@{versions.EKS_AMI_RELEASE}: Bottlerocket's NVIDIA variants run their own device plugin,"
            " configured through Bottlerocket settings instead of this program's device-plugin ConfigMap;"
            ' bottlerocket@ is allowed on CPU pools (gpu: none) (got "bottlerocket@1.50.0")',
            "gpu-inference:nodePools.gpu-shared.timeSlicingReplicas is required for shared GPU pools (an integer 2..48)",
        ],
    ),
    (
        # p4d alone would need maxGpus >= 8; with a CPU family in the list that check means nothing.
        "wrong family skips the fewest-GPUs check, not the warmGpus limit",
        "dev",
        lambda cfg: cfg[NP]["gpu"].update(instanceFamilies=["p4d", "c7i"], maxGpus=4, warmGpus=5),
        [
            "gpu-inference:nodePools.gpu.instanceFamilies must name only GPU families since gpu is dedicated"
            f' (got ["c7i"]); allowed: {GPU_FAMILIES}',
            "gpu-inference:nodePools.gpu.warmGpus must be at most the pool's GPU limit, maxGpus (4): headroom counts"
            " against it (got 5)",
        ],
    ),
    (
        "VPC range both too small and public",
        "dev",
        lambda cfg: cfg[NET].__setitem__("cidr", "8.8.0.0/24"),
        [
            'gpu-inference:network.cidr must have a prefix length between /16 and /20 (got "8.8.0.0/24")',
            'gpu-inference:network.cidr must be a private (RFC 1918) range (got "8.8.0.0/24")',
        ],
    ),
    (
        # The IDs are the key that does not belong: their own count is not checked.
        "zones by name and by ID, the names repeated and too few",
        "dev",
        lambda cfg: cfg[NET].update(
            azCount=3, availabilityZones=["us-west-2a", "us-west-2a"], availabilityZoneIds=["usw2-az1"]
        ),
        [
            "gpu-inference:network.availabilityZoneIds cannot be combined with availabilityZones: pin the zones by ID"
            ' or by name, not both (got ["usw2-az1"])',
            'gpu-inference:network.availabilityZones must list exactly azCount (3) zones (got ["us-west-2a", "us-west-2a"])',
            'gpu-inference:network.availabilityZones must not repeat a zone (got ["us-west-2a", "us-west-2a"])',
        ],
    ),
    (
        "private endpoint with public CIDRs and no way in",
        "prod",
        lambda cfg: (cfg[CL].__setitem__("publicAccessCidrs", ["203.0.113.0/24"]), cfg[CL].pop("privateAccess")),
        [
            'gpu-inference:cluster.publicAccessCidrs is only allowed with endpointPublicAccess: true (got ["203.0.113.0/24"])',
            "gpu-inference:cluster.privateAccess must list cidrs or securityGroupIds with endpointPublicAccess: false:"
            " the machine that runs pulumi (a self-hosted runner, VPN or peered network) reaches the API only through"
            " the private endpoint, on port 443 of the cluster security group (got null)",
        ],
    ),
    (
        "two bad public CIDRs",
        "dev",
        lambda cfg: cfg[CL].__setitem__("publicAccessCidrs", ["nope", "203.0.113.0/24", "10.0.0.1/8"]),
        [
            'gpu-inference:cluster.publicAccessCidrs must list IPv4 CIDRs such as 203.0.113.0/24 (got "nope")',
            'gpu-inference:cluster.publicAccessCidrs must list IPv4 CIDRs such as 203.0.113.0/24 (got "10.0.0.1/8")',
        ],
    ),
    (
        "private endpoint CIDR with host bits and public",
        "prod",
        lambda cfg: cfg[CL]["privateAccess"].__setitem__("cidrs", ["8.8.8.7/24"]),
        [
            'gpu-inference:cluster.privateAccess.cidrs[0] has host bits set: the network is 8.8.8.0/24 (got "8.8.8.7/24")',
            "gpu-inference:cluster.privateAccess.cidrs[0] must be a private range routed to the VPC (RFC 1918 or"
            " 100.64.0.0/10): the private endpoint has no public address; public clients need endpointPublicAccess"
            ' with publicAccessCidrs (got "8.8.8.7/24")',
        ],
    ),
    (
        "two system node types that are not x86_64 CPU types",
        "dev",
        lambda cfg: cfg[CL]["systemNodes"].__setitem__("instanceTypes", ["g5.xlarge", "m7i.large", "m7g.large"]),
        [
            f'gpu-inference:cluster.systemNodes.instanceTypes {SYSTEM_TYPES} (got "g5.xlarge")',
            f'gpu-inference:cluster.systemNodes.instanceTypes {SYSTEM_TYPES} (got "m7g.large")',
        ],
    ),
    (
        "wake-up query off zero and minReplicas above maxReplicas",
        "dev",
        lambda cfg: cfg[INF]["llm"]["scaling"].update(minReplicas=9, wakeUpQuery="up"),
        [
            'gpu-inference:inference.llm.scaling.wakeUpQuery is only used with minReplicas: 0 (got "up")',
            "gpu-inference:inference.llm.scaling.minReplicas must be <= maxReplicas (2) (got 9)",
        ],
    ),
    (
        "reserved tags before a tag too long",
        "dev",
        lambda cfg: cfg["gpu-inference:tags"].update({"x" * 129: "v", "aws:team": "a", "eks:eks-cluster-name": "b"}),
        [
            f"gpu-inference:tags.aws:team {RESERVED}",
            f"gpu-inference:tags.eks:eks-cluster-name {RESERVED}",
            f"gpu-inference:tags.{'x' * 129} must be a key of 1..128 characters with a value of at most 256",
        ],
    ),
    (
        "bad names in every map of named things",
        "dev",
        _bad_names,
        [
            f"gpu-inference:nodePools.Big_Pool is not a valid pool name: {DNS_NAME}",
            f"gpu-inference:nodePools.{'p' * 41} is not a valid pool name: {DNS_NAME}",
            f"gpu-inference:inference.LLM is not a valid name: {DNS_NAME}",
            f"gpu-inference:batchJobs.Job is not a valid name: {DNS_NAME}",
        ],
    ),
    (
        # Section by section: zones, then workloads (services by name, then jobs), then the load generator.
        "rules across sections",
        "dev",
        _cross_section,
        [
            "gpu-inference:network.availabilityZones[0] must be a zone of aws:region us-west-2, such as us-west-2a"
            ' (got "us-east-1a")',
            "gpu-inference:network.availabilityZones[1] must be a zone of aws:region us-west-2, such as us-west-2a"
            ' (got "us-east-1b")',
            'gpu-inference:inference.llm.pool must name a GPU pool of nodePools: one of gpu, gpu-shared (got "cpu")',
            "gpu-inference:inference.loadgen.gpus must be 1 on shared pool gpu-shared: a time-sliced GPU is handed out"
            " one slice per pod (got 2)",
            "gpu-inference:batchJobs.offline-scoring.pool must name a GPU pool of nodePools: one of gpu, gpu-shared"
            ' (got "nope")',
            "gpu-inference:inference.loadgen is the load generator's Deployment name in the same namespace: rename the"
            ' service (got "loadgen")',
            'gpu-inference:loadGenerator.target must name a service of inference: one of embed-small, llm, loadgen, qwen (got "nope")',
            # The copy of embed-small keeps its expose: two services on one host and path.
            "gpu-inference:inference.loadgen.expose routes the same host and path as inference.embed-small.expose"
            ' (got {"host": "embed.dev.gpuinf.example.com", "path": "/"})',
        ],
    ),
    (
        # pydantic's own order would put cpu's bound first: a misspelt key often explains the rest.
        "an unknown key comes before other pools' problems",
        "dev",
        lambda cfg: (cfg[NP]["cpu"].__setitem__("maxCpu", 0), cfg[NP]["gpu"].__setitem__("maxGPUs", 3)),
        [
            "gpu-inference:nodePools.gpu.maxGPUs is not a known key (allowed: gpu, instanceFamilies, capacityTypes,"
            " maxCpu, maxMemoryGib, maxGpus, timeSlicingReplicas, consolidation, consolidateAfter, expireAfter,"
            " disruptionBudgets, rootVolumeGib, amiAlias, weight, warmGpus, imageCache, capacityReservations)",
            "gpu-inference:nodePools.cpu.maxCpu must be >= 1 (got 0)",
        ],
    ),
]


@pytest.mark.parametrize(("case", "stack", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_every_problem_in_order(case: str, stack: str, mutate: Callable[[dict], None], expected: list[str]) -> None:
    found = problems(stack, mutate)
    assert found == expected, f"{case}: expected {expected}, found {found}"
