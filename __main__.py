"""gpu-inference: one `pulumi up` per environment.

Order: settings (fail before any resource) -> AWS provider with default tags ->
network -> EKS -> Karpenter -> node pools -> NVIDIA device plugin -> GPU warm-up -> exports.
"""

import pulumi
import pulumi_aws as aws

from infra import settings as stack_settings
from infra.cluster import Cluster, ClusterArgs
from infra.karpenter import Karpenter, KarpenterArgs
from infra.network import Network, NetworkArgs
from infra.nodepools import NodePools, NodePoolsArgs
from infra.nvidia import DevicePlugin, DevicePluginArgs
from infra.warmup import GpuWarmup, WarmupArgs

cfg = stack_settings.load()

aws_provider = aws.Provider(
    "aws",
    region=cfg.region,
    default_tags=aws.ProviderDefaultTagsArgs(tags=cfg.default_tags),
)
aws_opts = pulumi.ResourceOptions(providers={"aws": aws_provider})

zones = list(cfg.network.availability_zones or ())
if not zones:
    offered = aws.get_availability_zones(
        state="available",
        filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])],
        opts=pulumi.InvokeOptions(provider=aws_provider),
    ).names
    if len(offered) < cfg.network.az_count:
        raise stack_settings.ConfigError(
            [f"network.azCount must be <= {len(offered)}, the zones {cfg.region} offers (got {cfg.network.az_count})"]
        )
    zones = sorted(offered)[: cfg.network.az_count]

network = Network(
    "network",
    NetworkArgs(cluster_name=cfg.cluster.name, settings=cfg.network, availability_zones=zones),
    opts=aws_opts,
)
cluster = Cluster(
    "cluster",
    ClusterArgs(
        settings=cfg.cluster,
        vpc_id=network.vpc_id,
        public_subnet_ids=network.public_subnet_ids,
        private_subnet_ids=network.private_subnet_ids,
        tags=cfg.default_tags,
    ),
    opts=aws_opts,
)
all_opts = pulumi.ResourceOptions(providers={"aws": aws_provider, "kubernetes": cluster.k8s_provider})
karpenter = Karpenter(
    "karpenter",
    KarpenterArgs(
        cluster_name=cfg.cluster.name,
        settings=cfg.karpenter,
        region=cfg.region,
        depends_on=[cluster.system_node_group, cluster.pod_identity_agent],
    ),
    opts=all_opts,
)
node_pools = NodePools(
    "nodepools",
    NodePoolsArgs(
        cluster_name=cfg.cluster.name,
        node_role_name=karpenter.node_role_name,
        pools=cfg.node_pools,
        instance_tags={**cfg.default_tags, "cluster": cfg.cluster.name},
        depends_on=[karpenter.release],
    ),
    opts=all_opts,
)
device_plugin = DevicePlugin("nvidia", DevicePluginArgs(pools=cfg.node_pools), opts=all_opts)
warmup = GpuWarmup(
    "warmup",
    WarmupArgs(pools=cfg.node_pools),
    opts=pulumi.ResourceOptions.merge(all_opts, pulumi.ResourceOptions(depends_on=[node_pools, device_plugin])),
)

pulumi.export("region", cfg.region)
pulumi.export("availabilityZones", zones)
pulumi.export("vpcId", network.vpc_id)
pulumi.export("privateSubnetIds", network.private_subnet_ids)
pulumi.export("clusterName", cfg.cluster.name)
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("oidcProviderArn", cluster.oidc_provider_arn)
pulumi.export("karpenterNodeRole", karpenter.node_role_name)
pulumi.export("karpenterInterruptionQueue", karpenter.queue.name)
pulumi.export("nodePools", node_pools.pool_names)
pulumi.export("nodeOverlays", sorted(node_pools.overlays))
pulumi.export("devicePluginConfigs", sorted(device_plugin.configs))
pulumi.export("warmGpuPools", sorted(warmup.headroom))
