"""gpu-inference: one `pulumi up` per environment.

Order: settings (fail before any resource) -> AWS provider with default tags ->
network -> EKS -> monitoring (its CRDs first) -> Karpenter -> node pools -> NVIDIA device plugin -> KEDA ->
GPU warm-up -> workloads (inference services, batch jobs, load generator) -> exports.
Each component's Args come from `infra.mapping` (settings -> Args, built here once);
components never see a settings model.
"""

import pulumi
import pulumi_aws as aws

from domain import settings as stack_settings
from infra import mapping
from infra.cluster import Cluster
from infra.karpenter import Karpenter
from infra.keda import Keda, KedaArgs
from infra.keda_http import KedaHttpAddOn
from infra.load_balancer import LoadBalancerController
from infra.monitoring import Monitoring
from infra.network import Network
from infra.nodepools import NodePools
from infra.nvidia import DevicePlugin
from infra.priorities import PriorityClasses
from infra.warmup import GpuWarmup
from infra.workloads.batch_job import BatchJob
from infra.workloads.endpoints import Endpoints
from infra.workloads.inference import InferenceService
from infra.workloads.load_generator import LoadGenerator
from infra.workloads.namespaces import WorkloadNamespaces

cfg = stack_settings.load()

aws_provider = aws.Provider(
    "aws",
    region=cfg.region,
    default_tags=aws.ProviderDefaultTagsArgs(tags=cfg.default_tags),
)
aws_opts = pulumi.ResourceOptions(providers={"aws": aws_provider})

zones = list(cfg.network.availability_zones or ())
if not zones:
    region_zones = aws.get_availability_zones(
        state="available",
        filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])],
        opts=pulumi.InvokeOptions(provider=aws_provider),
    )
    offered = region_zones.names
    if len(offered) < cfg.network.az_count:
        raise stack_settings.ConfigError(
            [
                f"{stack_settings.PROJECT}:network.azCount must be <= {len(offered)}, the zones {cfg.region} offers"
                f" (got {cfg.network.az_count})"
            ]
        )
    # Pinned by ID (names differ per account), else the first azCount names: a default that
    # never moves a live stack's subnets. Preflight warns about a zone without a pool's families.
    zones = (
        cfg.network.zones_for_ids(region_zones.zone_ids, offered, cfg.region)
        if cfg.network.availability_zone_ids
        else sorted(offered)[: cfg.network.az_count]
    )

network = Network(
    "network",
    mapping.network_args(cfg.network, cluster_name=cfg.cluster.name, availability_zones=zones),
    opts=aws_opts,
)
cluster = Cluster(
    "cluster",
    mapping.cluster_args(
        cfg.cluster,
        tags=cfg.default_tags,
        vpc_id=network.vpc_id,
        public_subnet_ids=network.public_subnet_ids,
        private_subnet_ids=network.private_subnet_ids,
    ),
    opts=aws_opts,
)
all_opts = pulumi.ResourceOptions(providers={"aws": aws_provider, "kubernetes": cluster.k8s_provider})
monitoring = Monitoring(
    "monitoring",
    mapping.monitoring_args(
        cfg.monitoring,
        storage_class=cluster.storage_class.metadata.name,
        depends_on=[cluster.system_node_group, cluster.ebs_csi],
        cluster_name=cfg.cluster.name,
        region=cfg.region,
    ),
    opts=all_opts,
)
karpenter = Karpenter(
    "karpenter",
    mapping.karpenter_args(
        cfg.karpenter,
        cluster_name=cfg.cluster.name,
        region=cfg.region,
        pools=cfg.node_pools,
        depends_on=[cluster.system_node_group, cluster.pod_identity_agent, cluster.coredns],
        egress=network.egress,
        monitoring_crds=[monitoring.release],
    ),
    opts=all_opts,
)
node_pools = NodePools(
    "nodepools",
    mapping.node_pools_args(cfg, node_role_name=karpenter.node_role_name, depends_on=[karpenter.release]),
    opts=all_opts,
)
device_plugin = DevicePlugin("nvidia", mapping.device_plugin_args(cfg.node_pools), opts=all_opts)
keda = Keda(
    "keda",
    KedaArgs(cluster_name=cfg.cluster.name, depends_on=[cluster.pod_identity_agent, monitoring.release]),
    opts=all_opts,
)
http_add_on = (
    KedaHttpAddOn(
        "keda-http",
        mapping.keda_http_add_on_args(cfg, depends_on=[keda.release]),
        opts=all_opts,
    )
    if cfg.needs_http_add_on
    else None
)
warmup = GpuWarmup(
    "warmup",
    mapping.warmup_args(cfg),
    opts=pulumi.ResourceOptions.merge(all_opts, pulumi.ResourceOptions(depends_on=[node_pools, device_plugin])),
)

namespaces = WorkloadNamespaces("workloads", mapping.workload_namespaces_args(cfg), opts=all_opts)
priority_classes = PriorityClasses("priorities", mapping.priority_classes_args(cfg), opts=all_opts)
workload_opts = pulumi.ResourceOptions.merge(
    all_opts,
    pulumi.ResourceOptions(
        depends_on=[
            namespaces,
            priority_classes,
            keda,
            monitoring,
            node_pools,
            device_plugin,
            *([http_add_on] if http_add_on else []),
        ]
    ),
)
services = {
    name: InferenceService(
        name,
        mapping.inference_service_args(cfg, name, prometheus_url=monitoring.prometheus_url),
        opts=workload_opts,
    )
    for name in sorted(cfg.inference)
}
# Exposed services: hosts on one load balancer, routed by the AWS Load Balancer Controller,
# installed only then. The routes depend on its release, so `destroy` deletes them (and the
# controller their load balancer) while it still runs.
load_balancer = (
    LoadBalancerController(
        "lb",
        mapping.load_balancer_controller_args(
            cfg,
            vpc_id=network.vpc_id,
            depends_on=[
                cluster.system_node_group,
                cluster.pod_identity_agent,
                cluster.coredns,
                *network.egress,
                monitoring.release,
            ],
        ),
        opts=all_opts,
    )
    if cfg.ingress is not None and cfg.exposed
    else None
)
endpoint_args = mapping.endpoints_args(
    cfg,
    depends_on=[
        *([load_balancer.release] if load_balancer else []),
        *(services[name] for name in cfg.exposed),
        *([http_add_on] if http_add_on else []),
    ],
)
endpoints = Endpoints("endpoints", endpoint_args, opts=all_opts) if endpoint_args is not None else None
jobs = {
    name: BatchJob(
        name,
        mapping.batch_job_args(cfg, name, keda_operator_role_name=keda.operator_role_name),
        opts=workload_opts,
    )
    for name in sorted(cfg.batch_jobs)
}
load_generator = mapping.load_generator_args(cfg)
if load_generator is not None:
    LoadGenerator("loadgen", load_generator, opts=workload_opts)

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
pulumi.export("prometheusUrl", monitoring.prometheus_url)
pulumi.export("alertTopicArns", monitoring.alert_topic_arns)
pulumi.export("grafanaAdminPassword", pulumi.Output.secret(monitoring.grafana_password.result))
pulumi.export("inferenceUrls", {name: svc.url for name, svc in services.items()})
pulumi.export("endpointUrls", endpoints.urls if endpoints else {})
if endpoints is not None and endpoints.load_balancer_hostname is not None:
    pulumi.export("loadBalancerHostname", endpoints.load_balancer_hostname)
pulumi.export("batchQueueUrls", {name: job.queue.url for name, job in jobs.items()})
