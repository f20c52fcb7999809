"""Settings -> component Args: the one module of the components layer that reads `domain.settings`.

Each component takes a frozen dataclass of exactly what it reads (plain values
and small specs of its own, such as `NodePoolSpec` or `ServiceSpec`), never a
config model. `__main__.py` builds every Args here, once; the unit tests build
them through the same functions, so a test of a component also covers how the
settings reach it. Each function takes the smallest part of the settings it
needs (its section and plain values; the root `Settings` where a component
reads across pools and workloads) plus the outputs of other resources, which it
passes through untouched. Derived facts
(subnet CIDRs, a pool's vCPU and GPU limits, whether a service wakes through the
interceptor) are computed by the settings model and copied, never recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi

from domain import priorities
from domain import settings as model
from domain.headroom import consumers_by_pool
from infra import keda_http
from infra.cluster import ClusterArgs, SystemNodes
from infra.karpenter import KarpenterArgs
from infra.keda_http import KedaHttpAddOnArgs
from infra.load_balancer import LoadBalancerControllerArgs
from infra.monitoring import AlertingSpec, MonitoringArgs, PrometheusSpec, ReceiverSpec
from infra.network import NetworkArgs
from infra.nodepools import CacheVolume, DisruptionBudget, NodePoolsArgs, NodePoolSpec, ReservationTerm
from infra.nvidia import DevicePluginArgs
from infra.placement import PoolPlacement
from infra.priorities import PriorityClassesArgs
from infra.warmup import WarmPool, WarmupArgs
from infra.workloads import batch_job, endpoints, inference
from infra.workloads.batch_job import BatchJobArgs, JobSpec
from infra.workloads.endpoints import CognitoAuth, EndpointsArgs, Exposure, OidcAuth, Route
from infra.workloads.inference import InferenceServiceArgs, ScaleDown, ScaleUp, ScalingSpec, ServiceSpec
from infra.workloads.load_generator import LoadGeneratorArgs
from infra.workloads.model_server import ModelSpec, ServerSpec
from infra.workloads.namespaces import WorkloadNamespacesArgs


def network_args(net: model.NetworkSettings, *, cluster_name: str, availability_zones: Sequence[str]) -> NetworkArgs:
    """`availability_zones`: the stack's zone names, resolved by `__main__` (it may ask AWS)."""
    private, public = net.subnet_cidrs()
    return NetworkArgs(
        cluster_name=cluster_name,
        cidr=net.cidr,
        availability_zones=tuple(availability_zones),
        private_subnet_cidrs=tuple(private),
        public_subnet_cidrs=tuple(public),
        nat_gateway_per_az=net.nat_gateways == "perAz",
    )


def cluster_args(
    c: model.ClusterSettings,
    *,
    tags: dict[str, str],
    vpc_id: pulumi.Input[str],
    public_subnet_ids: pulumi.Input[list[str]],
    private_subnet_ids: pulumi.Input[list[str]],
) -> ClusterArgs:
    """`tags`: the stack's default tags (`Settings.default_tags`)."""
    nodes, access = c.system_nodes, c.private_access
    return ClusterArgs(
        name=c.name,
        version=c.version,
        vpc_id=vpc_id,
        public_subnet_ids=public_subnet_ids,
        private_subnet_ids=private_subnet_ids,
        tags=tags,
        system_nodes=SystemNodes(
            instance_types=nodes.instance_types,
            min_size=nodes.min_size,
            desired_size=nodes.desired_size,
            max_size=nodes.max_size,
            disk_gib=nodes.disk_gib,
        ),
        endpoint_public_access=c.endpoint_public_access,
        public_access_cidrs=c.api_cidrs,
        private_access_cidrs=access.cidrs if access else (),
        private_access_security_group_ids=access.security_group_ids if access else (),
        log_types=c.log_types,
        log_retention_days=c.log_retention_days,
        admin_role_arns=c.admin_role_arns,
        deletion_protection=c.deletion_protection,
    )


def alert_webhook_urls(alerting: model.AlertingSettings | None) -> dict[str, pulumi.Output[str]]:
    """Receiver -> its webhook URL, read as a Pulumi secret (`gpu-inference:<webhookSecret>`).

    The settings model holds only the secret's name; the URL exists only as a secret Output
    from here on (a Kubernetes Secret's `stringData`, never Helm values or logs).
    """
    if alerting is None:
        return {}
    config = pulumi.Config()
    return {
        name: config.require_secret(r.webhook_secret)
        for name, r in sorted(alerting.receivers.items())
        if r.webhook_secret is not None
    }


def alerting_spec(
    alerting: model.AlertingSettings | None,
    *,
    cluster_name: str,
    region: str,
    webhook_urls: Mapping[str, pulumi.Input[str]],
) -> AlertingSpec | None:
    if alerting is None:
        return None
    return AlertingSpec(
        receivers={
            name: ReceiverSpec(sns=r.sns, webhook_url=webhook_urls.get(name), send_resolved=r.send_resolved)
            for name, r in sorted(alerting.receivers.items())
        },
        routes=dict(alerting.routes),
        cluster_name=cluster_name,
        region=region,
    )


def monitoring_args(
    settings: model.MonitoringSettings,
    *,
    storage_class: pulumi.Input[str],
    depends_on: list[pulumi.Resource],
    cluster_name: str = "",
    region: str = "",
    webhook_urls: Mapping[str, pulumi.Input[str]] | None = None,
) -> MonitoringArgs:
    """`webhook_urls`: receiver -> URL secret (`alert_webhook_urls`); `cluster_name` and `region`
    name the alert topics and sign SNS requests (only read with `monitoring.alerting`)."""
    if settings.alerting is not None and not (cluster_name and region):
        raise ValueError("monitoring.alerting needs the cluster name and region")
    prom = settings.prometheus
    return MonitoringArgs(
        prometheus=PrometheusSpec(
            retention=prom.retention,
            storage_gib=prom.storage_gib,
            scrape_interval=prom.scrape_interval,
            cpu_request=prom.requests.cpu,
            memory_request=prom.requests.memory,
            memory_limit=prom.memory_limit,
        ),
        grafana_replicas=settings.grafana_replicas,
        dcgm_interval_ms=settings.dcgm_interval_ms,
        storage_class=storage_class,
        depends_on=depends_on,
        alerting=alerting_spec(
            settings.alerting,
            cluster_name=cluster_name,
            region=region,
            webhook_urls=webhook_urls if webhook_urls is not None else alert_webhook_urls(settings.alerting),
        ),
    )


def karpenter_args(
    settings: model.KarpenterSettings,
    *,
    cluster_name: str,
    region: str,
    pools: Mapping[str, model.PoolSettings],
    depends_on: list[pulumi.Resource],
    egress: Sequence[pulumi.Resource] = (),
    monitoring_crds: Sequence[pulumi.Resource] = (),
) -> KarpenterArgs:
    return KarpenterArgs(
        cluster_name=cluster_name,
        region=region,
        replicas=settings.replicas,
        log_level=settings.log_level,
        depends_on=depends_on,
        egress=list(egress),
        monitoring_crds=list(monitoring_crds),
        # Some pool may launch Spot: the account needs EC2's Spot service-linked role.
        spot=any("spot" in pool.capacity_types for pool in pools.values()),
    )


def node_pool_spec(pool: model.PoolSettings) -> NodePoolSpec:
    cache = pool.image_cache
    return NodePoolSpec(
        gpu=pool.gpu,
        instance_families=pool.instance_families,
        capacity_types=pool.capacity_types,
        architectures=pool.architectures,
        max_cpu=pool.max_cpu,
        max_memory_gib=pool.max_memory_gib,
        gpu_limit=pool.gpu_limit,
        gpu_counts=pool.gpu_counts,
        time_slicing_replicas=pool.time_slicing_replicas,
        consolidation=pool.consolidation,
        consolidate_after=pool.consolidate_after,
        expire_after=pool.expire_after,
        budgets=tuple(
            DisruptionBudget(nodes=b.nodes, schedule=b.schedule, duration=b.duration, reasons=b.reasons)
            for b in pool.disruption_budgets
        ),
        root_volume_gib=pool.root_volume,
        ami_alias=pool.ami_alias,
        weight=pool.weight,
        cache_volume=CacheVolume(cache.snapshot_id, cache.volume_gib) if cache and cache.snapshot_id else None,
        capacity_reservations=tuple(ReservationTerm(t.id, t.tags) for t in pool.capacity_reservations or ()),
    )


def node_pools_args(
    cfg: model.Settings, *, node_role_name: pulumi.Input[str], depends_on: list[pulumi.Resource]
) -> NodePoolsArgs:
    return NodePoolsArgs(
        cluster_name=cfg.cluster.name,
        node_role_name=node_role_name,
        pools={name: node_pool_spec(pool) for name, pool in cfg.node_pools.items()},
        instance_tags={**cfg.default_tags, "cluster": cfg.cluster.name},
        depends_on=depends_on,
    )


def device_plugin_args(pools: Mapping[str, model.PoolSettings]) -> DevicePluginArgs:
    return DevicePluginArgs(
        time_slicing={
            name: pool.time_slicing_replicas
            for name, pool in sorted(pools.items())
            if pool.gpu == "shared" and pool.time_slicing_replicas is not None
        }
    )


def placement(name: str, pool: model.PoolSettings) -> PoolPlacement:
    return PoolPlacement(name=name, gpu=pool.gpu, gpu_counts=pool.gpu_counts)


def warm_pools(pools: Mapping[str, model.PoolSettings]) -> dict[str, WarmPool]:
    """The GPU pools, as the warm-up reads them (CPU pools have no headroom or images to pull)."""
    found = {}
    for name, pool in sorted(pools.items()):
        if pool.is_gpu:
            cache = pool.image_cache
            found[name] = WarmPool(
                placement=placement(name, pool),
                warm_gpus=pool.warm_gpus,
                pre_pull=cache is None or cache.pre_pull,
                cache_images=cache.images if cache else (),
            )
    return found


def warmup_args(cfg: model.Settings) -> WarmupArgs:
    pool_images: dict[str, tuple[str, ...]] = {}
    for _, svc in sorted(cfg.inference.items()):  # by name: the stack file's order must not matter
        pool_images[svc.pool] = (*pool_images.get(svc.pool, ()), svc.image)
    return WarmupArgs(pools=warm_pools(cfg.node_pools), pool_images=pool_images, consumers=consumers_by_pool(cfg))


def priority_classes_args(cfg: model.Settings) -> PriorityClassesArgs:
    """The workload PriorityClasses that some inference service or batch job names, highest first."""
    levels = {spec.priority for spec in [*cfg.inference.values(), *cfg.batch_jobs.values()]}
    return PriorityClassesArgs(
        classes=tuple(sorted((priorities.class_for(level) for level in levels), key=lambda c: -c.value))
    )


def workload_namespaces_args(cfg: model.Settings) -> WorkloadNamespacesArgs:
    """Only the namespaces that something runs in; the inference namespace gets the load balancer's
    readiness gate when a service there is exposed directly (a rollout then waits for the new pod's
    target to be healthy before it removes an old one)."""
    used = ([inference.NAMESPACE] if cfg.inference else []) + ([batch_job.NAMESPACE] if cfg.batch_jobs else [])
    direct = cfg.ingress is not None and any(not svc.scaling.wakes_through_interceptor for svc in cfg.exposed.values())
    return WorkloadNamespacesArgs(names=tuple(used), readiness_gate=(inference.NAMESPACE,) if direct else ())


def service_spec(svc: model.InferenceSettings, exposure: Exposure | None = None) -> ServiceSpec:
    scaling, up, down = svc.scaling, svc.scaling.scale_up, svc.scaling.scale_down
    return ServiceSpec(
        exposure=exposure,
        image=svc.image,
        gpus=svc.gpus,
        cpu=svc.cpu,
        memory_gib=svc.memory_gib,
        port=svc.container_port,
        model_load_seconds=svc.model_load_seconds,
        drain_seconds=svc.drain_seconds,
        max_batch_size=svc.max_batch_size,
        max_wait_ms=svc.max_wait_ms,
        max_queue=svc.max_queue,
        do_not_disrupt=svc.do_not_disrupt,
        priority_class=priorities.class_for(svc.priority).name,
        server=server_spec(svc),
        scaling=ScalingSpec(
            min_replicas=scaling.min_replicas,
            max_replicas=scaling.max_replicas,
            target_in_flight=scaling.target_value,  # targetInFlight, or `target` with a query of its own
            activation_in_flight=scaling.activation_in_flight,
            polling_interval_seconds=scaling.polling_interval_seconds,
            cooldown_seconds=scaling.cooldown_seconds,
            scrape_interval_seconds=scaling.scrape_interval_seconds,
            cold_start_timeout_seconds=scaling.cold_start_timeout_seconds,
            scale_up=ScaleUp(up.stabilization_seconds, up.pods_per_period, up.period_seconds),
            scale_down=ScaleDown(down.stabilization_seconds, down.percent_per_period, down.period_seconds),
            wake_up_query=scaling.wake_up_query,
            wakes_through_interceptor=scaling.wakes_through_interceptor,
        ),
    )


def server_spec(svc: model.InferenceSettings) -> ServerSpec:
    """The server preset (domain/servers.py) with what the stack set on top of it."""
    preset = svc.preset
    model_spec = None
    if svc.model is not None:
        where = svc.model.location
        model_spec = ModelSpec(
            uri=svc.model.uri,
            scheme=where.scheme,
            name=svc.model.served_name,
            download_seconds=svc.model.download_seconds,
            cache_gib=svc.model.cache_gib,
            s3_uri=where.s3_uri if where.scheme == "s3" else "",
            repo=where.repo,
            revision=where.revision,
            fetch_image=svc.model.fetch_image,
        )
    health = svc.health_path or preset.health_path
    ready = svc.ready_path or preset.ready_path or health
    assert health is not None and ready is not None  # custom requires healthPath
    return ServerSpec(
        kind=svc.server,
        model=model_spec,
        args=svc.args,
        env=dict(svc.env),
        secret_env=tuple(sorted(svc.env_secrets)),
        health_path=health,
        ready_path=ready,
        metrics_path=svc.metrics_path or preset.metrics_path,
        metrics_port=preset.metrics_port,
        scale_query_template=svc.scale_query_template,
    )


def inference_service_args(cfg: model.Settings, name: str, *, prometheus_url: str) -> InferenceServiceArgs:
    """`envSecrets` values are read here, as Pulumi secrets (`Config.require_secret`): never by the settings."""
    svc = cfg.inference[name]
    config = pulumi.Config()
    return InferenceServiceArgs(
        service=service_spec(svc, exposure(cfg, name)),
        pool=placement(svc.pool, cfg.node_pools[svc.pool]),
        prometheus_url=prometheus_url,
        cluster_name=cfg.cluster.name,
        secret_values={env: config.require_secret(key) for env, key in sorted(svc.env_secrets.items())},
    )


def job_spec(job: model.BatchJobSettings) -> JobSpec:
    return JobSpec(
        image=job.image,
        gpus=job.gpus,
        cpu=job.cpu,
        memory_gib=job.memory_gib,
        max_replicas=job.max_replicas,
        messages_per_job=job.messages_per_job,
        polling_interval_seconds=job.polling_interval_seconds,
        visibility_timeout_seconds=job.visibility_timeout_seconds,
        max_receive_count=job.max_receive_count,
        active_deadline_seconds=job.active_deadline_seconds,
        do_not_disrupt=job.do_not_disrupt,
        priority_class=priorities.class_for(job.priority).name,
    )


def batch_job_args(cfg: model.Settings, name: str, *, keda_operator_role_name: pulumi.Input[str]) -> BatchJobArgs:
    job = cfg.batch_jobs[name]
    return BatchJobArgs(
        job=job_spec(job),
        pool=placement(job.pool, cfg.node_pools[job.pool]),
        cluster_name=cfg.cluster.name,
        region=cfg.region,
        keda_operator_role_name=keda_operator_role_name,
    )


def load_generator_args(cfg: model.Settings) -> LoadGeneratorArgs | None:
    """None when the stack has no load generator."""
    spec = cfg.load_generator
    if spec is None:
        return None
    assert cfg.cpu_pool is not None  # the settings require a CPU pool with a load generator
    return LoadGeneratorArgs(
        deployment_name=model.LOAD_GENERATOR_NAME,
        image=spec.image,
        target=spec.target,
        rps=spec.rps,
        duration_seconds=spec.duration_seconds,
        replicas=spec.replicas,
        cpu_pool=cfg.cpu_pool,
        target_wakes_through_interceptor=cfg.inference[spec.target].scaling.wakes_through_interceptor,
    )


# --- endpoints (`ingress`, `inference.<svc>.expose`) ---------------------------

# The server's idle keep-alive outlasts the load balancer's idle timeout by this much.
KEEP_ALIVE_MARGIN_SECONDS = 15


def exposure(cfg: model.Settings, name: str) -> Exposure | None:
    """Service `name`'s host on the load balancer, as its pods need it; None when not exposed."""
    svc, ingress = cfg.inference[name], cfg.ingress
    if svc.expose is None or ingress is None:
        return None
    _, public = cfg.network.subnet_cidrs()
    return Exposure(
        host=svc.expose.host,
        # Both schemes' load balancers sit in the public subnets (infra/network.py), never beside pods.
        load_balancer_cidrs=tuple(public),
        keep_alive_seconds=cfg.load_balancer_idle_timeout + KEEP_ALIVE_MARGIN_SECONDS,
    )


def keda_http_add_on_args(cfg: model.Settings, *, depends_on: list[pulumi.Resource]) -> KedaHttpAddOnArgs:
    """The interceptor drains for the longest wake-up it may hold a request through; behind the
    load balancer it also waits for its target to be deregistered before it stops accepting."""
    waking = [svc for svc in cfg.inference.values() if svc.scaling.wakes_through_interceptor]
    behind_load_balancer = any(svc.expose is not None for svc in waking) and cfg.ingress is not None
    return KedaHttpAddOnArgs(
        depends_on=depends_on,
        shutdown_delay_seconds=(
            endpoints.LOAD_BALANCER_PRE_STOP_SECONDS if behind_load_balancer else keda_http.SHUTDOWN_DELAY_SECONDS
        ),
        drain_timeout_seconds=max([keda_http.DRAIN_TIMEOUT_SECONDS, *(model.wake_hold_seconds(svc) for svc in waking)]),
    )


def load_balancer_controller_args(
    cfg: model.Settings, *, vpc_id: pulumi.Input[str], depends_on: list[pulumi.Resource]
) -> LoadBalancerControllerArgs:
    return LoadBalancerControllerArgs(
        cluster_name=cfg.cluster.name, region=cfg.region, vpc_id=vpc_id, depends_on=depends_on
    )


def route(cfg: model.Settings, name: str) -> Route:
    svc = cfg.inference[name]
    assert svc.expose is not None
    spec = service_spec(svc, exposure(cfg, name))
    if svc.scaling.wakes_through_interceptor:
        interceptor = keda_http_add_on_args(cfg, depends_on=[])
        return Route(
            service=name,
            host=svc.expose.host,
            path=svc.expose.path,
            namespace=keda_http.NAMESPACE,
            backend_service=keda_http.PROXY_SERVICE,
            backend_port=keda_http.PROXY_PORT,
            health_check_path="/readyz",
            health_check_port=str(keda_http.ADMIN_PORT),
            deregistration_delay_seconds=min(
                interceptor.shutdown_delay_seconds + interceptor.drain_timeout_seconds,
                endpoints.DEREGISTRATION_DELAY_MAX,
            ),
            via_interceptor=True,
        )
    return Route(
        service=name,
        host=svc.expose.host,
        path=svc.expose.path,
        namespace=inference.NAMESPACE,
        backend_service=name,
        backend_port=inference.SERVICE_PORT,
        health_check_path=spec.server.ready_path,
        health_check_port="traffic-port",
        deregistration_delay_seconds=inference.deregistration_delay_seconds(spec),
        via_interceptor=False,
    )


def endpoints_args(cfg: model.Settings, *, depends_on: list[pulumi.Resource]) -> EndpointsArgs | None:
    """None when no service is exposed. The OIDC client secret is read here, as a Pulumi secret."""
    ingress = cfg.ingress
    if ingress is None or not cfg.exposed:
        return None
    auth, secret = _auth(ingress.auth)
    return EndpointsArgs(
        group_name=cfg.cluster.name,
        scheme=ingress.scheme,
        certificate_arn=ingress.certificate_arn,
        allowed_cidrs=ingress.allowed_cidrs or (cfg.network.cidr,),
        ssl_policy=ingress.ssl_policy,
        idle_timeout_seconds=cfg.load_balancer_idle_timeout,
        routes=tuple(route(cfg, name) for name in cfg.exposed),
        auth=auth,
        client_secret=pulumi.Config().require_secret(secret) if secret else None,
        depends_on=depends_on,
    )


def _auth(auth: model.AuthSettings | None) -> tuple[OidcAuth | CognitoAuth | None, str | None]:
    """The listener's authentication, and the config key of the OIDC client secret."""
    if auth is None:
        return None, None
    common = {
        "scope": auth.scope,
        "on_unauthenticated": auth.on_unauthenticated,
        "session_timeout_seconds": auth.session_timeout_seconds,
    }
    if auth.oidc is not None:
        o = auth.oidc
        return (
            OidcAuth(
                issuer=o.issuer,
                authorization_endpoint=o.authorization_endpoint,
                token_endpoint=o.token_endpoint,
                user_info_endpoint=o.user_info_endpoint,
                client_id=o.client_id,
                **common,
            ),
            o.client_secret,
        )
    c = auth.cognito
    assert c is not None
    return CognitoAuth(
        user_pool_arn=c.user_pool_arn,
        user_pool_client_id=c.user_pool_client_id,
        user_pool_domain=c.user_pool_domain,
        **common,
    ), None
