"""InferenceService: a batching inference server on a GPU pool, autoscaled by KEDA on requests in flight.

Scale signal: `sum(inference_requests_in_flight)` over the service's pods,
scraped every `scrapeIntervalSeconds` (5 s by default) and polled by KEDA every
`pollingIntervalSeconds`. In flight (queued + running) is a gauge: it rises the
moment a load step arrives and falls the moment it ends, with no rate window
to fill or drain. By Little's law it is arrival rate x latency, so it also
climbs when the GPU slows down, which a request rate would not show. Queue
depth alone stays at zero until a replica saturates, which is too late to
start a GPU node. KEDA's Prometheus trigger uses an average-value target, so
the HPA runs ceil(in flight / targetInFlight) replicas.

At zero replicas no pod reports anything: scaling up from zero needs a signal
from outside the service. By default a service at minReplicas 0 gets one from
the KEDA HTTP add-on (`infra/keda_http.py`): an HTTPScaledObject routes its
requests through the add-on's interceptor, which holds them while the first
replica starts, and the ScaledObject gains an `external-push` trigger on the
requests waiting there. Clients of such a service call the interceptor proxy
with `Host: <service>.<namespace>`. `scaling.wakeUpQuery` replaces that with a
PromQL query of your own (a gateway's pending requests, a queue length).

Drain: on scale-in or a Karpenter consolidation, the pod gets a preStop sleep
(so endpoints stop sending new requests), then SIGTERM: the server turns
unready, finishes everything queued and in flight, and exits, within a grace
period sized from `drainSeconds`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from domain import contract, metric_names, naming, pods, servers
from infra import keda_http
from infra.identity import pod_identity_role
from infra.placement import PoolPlacement
from infra.workloads import endpoints, model_server
from infra.workloads.model_server import ServerSpec

NAMESPACE = "inference"
SIGNAL_METRIC = metric_names.IN_FLIGHT
PRE_STOP_SECONDS = 5  # endpoint removal reaches every kube-proxy / load balancer within this
PROBE_PERIOD_SECONDS = 5
PROBE_TIMEOUT_SECONDS = 3
SERVICE_PORT = 80


@dataclass(frozen=True)
class ScaleUp:
    stabilization_seconds: int
    pods_per_period: int
    period_seconds: int


@dataclass(frozen=True)
class ScaleDown:
    stabilization_seconds: int
    percent_per_period: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingSpec:
    """How KEDA scales a service (see the module docstring for the signal)."""

    min_replicas: int
    max_replicas: int
    target_in_flight: float  # requests in flight per replica the autoscaler aims for
    activation_in_flight: float
    polling_interval_seconds: int
    cooldown_seconds: int
    scrape_interval_seconds: int
    cold_start_timeout_seconds: int  # how long the interceptor holds a request while the service wakes
    scale_up: ScaleUp
    scale_down: ScaleDown
    wake_up_query: str | None  # PromQL > 0 when traffic waits for a service at zero replicas
    # At zero replicas with no wake-up query of its own: the KEDA HTTP add-on wakes it
    # (the settings decide: `ScalingSettings.wakes_through_interceptor`).
    wakes_through_interceptor: bool


@dataclass(frozen=True)
class ServiceSpec:
    """One service's server container and scaling."""

    image: str
    gpus: int  # GPUs per pod (one slice on a shared pool)
    cpu: str
    memory_gib: int
    port: int
    model_load_seconds: int
    drain_seconds: int
    max_batch_size: int
    max_wait_ms: int
    max_queue: int
    do_not_disrupt: bool  # Karpenter must not consolidate a node under the service's pods
    scaling: ScalingSpec
    priority_class: str = "gpu-inference-service"  # domain.priorities: who gets a GPU first
    # Which model server runs (domain/servers.py presets): today's reference server by default.
    server: ServerSpec = field(default_factory=model_server.reference_server)
    exposure: endpoints.Exposure | None = None  # a host on the load balancer (`expose`)

    @property
    def exposed_directly(self) -> bool:
        """The load balancer sends requests to the pods themselves (not through the interceptor)."""
        return self.exposure is not None and not self.scaling.wakes_through_interceptor


@dataclass(frozen=True)
class InferenceServiceArgs:
    service: ServiceSpec
    pool: PoolPlacement
    prometheus_url: str
    namespace: str = NAMESPACE
    cluster_name: str = ""  # for the model-read role (services that load from s3://)
    # Values of `server.secret_env`, as Pulumi secrets (read by infra/mapping.py, never by the settings).
    secret_values: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


def labels(name: str) -> dict[str, str]:
    return pods.app_labels(name, "inference")


def scale_query(name: str, namespace: str = NAMESPACE, server: ServerSpec | None = None) -> str:
    """The KEDA trigger's PromQL: requests in flight across the service's pods (labels set by the
    ServiceMonitor), the server preset's query or the stack's `scaling.query`, placeholders filled."""
    template = (server or model_server.reference_server()).scale_query_template
    return servers.fill_query(template, namespace=namespace, service=name)


def startup_failure_threshold(model_load_seconds: int, download_seconds: int = 0) -> int:
    """Probe failures the startup probe tolerates: the model-load time plus half again, and a minute's
    margin, plus the download when the server fetches its own weights (hf://) after it starts."""
    return math.ceil((model_load_seconds * 1.5 + download_seconds + 60) / PROBE_PERIOD_SECONDS)


def pre_stop_seconds(spec: ServiceSpec) -> int:
    """How long a terminating pod keeps serving before SIGTERM: until no one sends it new requests.
    Behind the load balancer that is its target deregistration, slower than kube-proxy's update."""
    return endpoints.LOAD_BALANCER_PRE_STOP_SECONDS if spec.exposed_directly else PRE_STOP_SECONDS


def grace_period_seconds(spec: ServiceSpec) -> int:
    """preStop sleep + the server's own drain timeout + a margin, so the kubelet never kills mid-drain."""
    return pre_stop_seconds(spec) + spec.drain_seconds + 10


def deregistration_delay_seconds(spec: ServiceSpec) -> int:
    """How long the load balancer lets requests to a deregistered pod finish: all of preStop and the
    drain, so a request it sent just before it stopped still gets the server's whole drain."""
    return min(pre_stop_seconds(spec) + spec.drain_seconds, endpoints.DEREGISTRATION_DELAY_MAX)


def spread_keys(pool: PoolPlacement) -> tuple[str, ...]:
    """Topology keys a service's pods spread over.

    Karpenter's default `preferencePolicy: Respect` treats a `ScheduleAnyway` spread as
    required while it plans new nodes (it relaxes it only when a pod fits nowhere, and
    a new node always fits), so a hostname spread makes N pending pods buy N nodes. On a
    dedicated pool that is what a GPU per pod costs anyway; on a time-sliced pool it
    would defeat the slicing: N one-slice pods must share ceil(N / replicas) GPUs.
    """
    if pool.gpu == "shared":
        return ()
    return ("topology.kubernetes.io/zone", "kubernetes.io/hostname")


def topology_spread(name: str, pool: PoolPlacement) -> list[dict]:
    """Spread over zones and nodes when capacity allows; never block a scale-out for it."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": labels(name)},
        }
        for key in spread_keys(pool)
    ]


def pod_spec(name: str, spec: ServiceSpec, pool: PoolPlacement) -> dict:
    terms = pool.terms
    gpus = str(spec.gpus)
    server = spec.server
    # The reference server's own settings; other servers take theirs as arguments.
    env = (
        {
            "PORT": str(spec.port),
            "MAX_BATCH_SIZE": str(spec.max_batch_size),
            "MAX_WAIT_MS": str(spec.max_wait_ms),
            "MAX_QUEUE": str(spec.max_queue),
            "DRAIN_TIMEOUT_S": str(spec.drain_seconds),
        }
        if server.kind == "reference"
        else {}
    )
    http = {"path": server.ready_path, "port": "http"}
    fetch = model_server.fetch_container(server)
    return {
        "serviceAccountName": name,
        "priorityClassName": spec.priority_class,
        "automountServiceAccountToken": False,
        "nodeSelector": terms.node_selector(),
        "tolerations": terms.tolerations(),
        "terminationGracePeriodSeconds": grace_period_seconds(spec),
        # The reference image runs as this user; the volume group lets it write /tmp.
        "securityContext": pods.pod_security(fs_group=True),
        "topologySpreadConstraints": topology_spread(name, pool),
        **pods.packing_affinity(pool),
        **({"initContainers": [fetch]} if fetch else {}),
        "containers": [
            {
                "name": "server",
                "image": spec.image,
                **model_server.command_and_args(server, spec.port),
                "ports": model_server.ports(server, spec.port),
                "env": [
                    {"name": k, "value": v}
                    for k, v in {
                        **env,
                        **endpoints.keep_alive_env(
                            spec.server.preset, spec.exposure if spec.exposed_directly else None
                        ),
                    }.items()
                ]
                + model_server.server_env(server, name),
                "resources": {
                    "requests": {
                        "cpu": spec.cpu,
                        "memory": f"{spec.memory_gib}Gi",
                        contract.GPU_RESOURCE: gpus,
                        **model_server.ephemeral_storage(server),
                    },
                    "limits": {"memory": f"{spec.memory_gib}Gi", contract.GPU_RESOURCE: gpus},
                },
                "startupProbe": {
                    "httpGet": http,
                    "periodSeconds": PROBE_PERIOD_SECONDS,
                    "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
                    "failureThreshold": startup_failure_threshold(
                        spec.model_load_seconds, server.startup_download_seconds
                    ),
                },
                # A loaded server answers its probes late: Kubernetes' default 1 s timeout
                # would turn a busy replica unready exactly when it is needed.
                "readinessProbe": {
                    "httpGet": http,
                    "periodSeconds": PROBE_PERIOD_SECONDS,
                    "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
                    "failureThreshold": 2,
                },
                "livenessProbe": {
                    "httpGet": {"path": server.health_path, "port": "http"},
                    "periodSeconds": 10,
                    "timeoutSeconds": 3,
                    "failureThreshold": 3,
                },
                "lifecycle": {"preStop": {"sleep": {"seconds": pre_stop_seconds(spec)}}},
                "securityContext": pods.container_security(),
                "volumeMounts": [pods.TMP_MOUNT, *model_server.volume_mounts(server)],
            }
        ],
        "volumes": [pods.TMP_VOLUME, *model_server.volumes(server)],
    }


# After creation the HPA that KEDA manages owns `spec.replicas`; later updates leave it
# alone (`ignore_changes`), so an `up` never resets a scaled-out service.
REPLICAS_OWNED_BY_HPA = ["spec.replicas"]


def deployment(name: str, spec: ServiceSpec, pool: PoolPlacement, namespace: str = NAMESPACE) -> dict:
    annotations = {"karpenter.sh/do-not-disrupt": "true"} if spec.do_not_disrupt else {}
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name), "annotations": pods.SKIP_AWAIT},
        "spec": {
            # Created at minReplicas (the API would default to 1, waking a scale-to-zero
            # service and its GPU node on every first `up`); the HPA owns it afterwards.
            "replicas": spec.scaling.min_replicas,
            "selector": {"matchLabels": labels(name)},
            # GPUs are scarce: add one new pod before removing an old one, never fewer ready.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels(name), **({"annotations": annotations} if annotations else {})},
                "spec": pod_spec(name, spec, pool),
            },
        },
    }


def scaled_object(name: str, spec: ServiceSpec, prometheus_url: str, namespace: str = NAMESPACE) -> dict:
    scaling = spec.scaling
    triggers = [
        {
            "type": "prometheus",
            "name": "in-flight",
            "metadata": {
                "serverAddress": prometheus_url,
                "query": scale_query(name, namespace, spec.server),
                "threshold": f"{scaling.target_in_flight:g}",
                "activationThreshold": f"{scaling.activation_in_flight:g}",
                "ignoreNullValues": "true",
            },
        }
    ]
    if scaling.wakes_through_interceptor:
        triggers.append(
            {
                "type": "external-push",
                "name": "wake-up",
                "metadata": {"scalerAddress": keda_http.EXTERNAL_SCALER, "httpScaledObject": name},
            }
        )
    if scaling.wake_up_query:
        triggers.append(
            {
                "type": "prometheus",
                "name": "wake-up",
                "metadata": {
                    "serverAddress": prometheus_url,
                    "query": scaling.wake_up_query,
                    "threshold": f"{scaling.target_in_flight:g}",
                    "activationThreshold": "0",
                    "ignoreNullValues": "true",
                },
            }
        )
    up, down = scaling.scale_up, scaling.scale_down
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "pollingInterval": scaling.polling_interval_seconds,
            "cooldownPeriod": scaling.cooldown_seconds,
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": {
                            "stabilizationWindowSeconds": up.stabilization_seconds,
                            "selectPolicy": "Max",
                            "policies": [
                                {"type": "Pods", "value": up.pods_per_period, "periodSeconds": up.period_seconds},
                                {"type": "Percent", "value": 100, "periodSeconds": up.period_seconds},
                            ],
                        },
                        "scaleDown": {
                            "stabilizationWindowSeconds": down.stabilization_seconds,
                            "selectPolicy": "Min",
                            "policies": [
                                {
                                    "type": "Percent",
                                    "value": down.percent_per_period,
                                    "periodSeconds": down.period_seconds,
                                }
                            ],
                        },
                    }
                }
            },
            "triggers": triggers,
        },
    }


def wake_up_host(name: str, namespace: str = NAMESPACE) -> str:
    """The Host header that routes a request through the interceptor to this service."""
    return f"{name}.{namespace}"


def http_scaled_object(name: str, spec: ServiceSpec, namespace: str = NAMESPACE) -> dict:
    """The interceptor's route to a scale-to-zero service; its ScaledObject stays ours (annotation)."""
    scaling = spec.scaling
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(name),
            "annotations": {keda_http.SKIP_SCALED_OBJECT_ANNOTATION: "true"},
        },
        "spec": {
            # In-cluster names, and the public host when exposed: the load balancer passes the Host on.
            "hosts": [
                wake_up_host(name, namespace),
                f"{name}.{namespace}.svc.cluster.local",
                *([spec.exposure.host] if spec.exposure is not None else []),
            ],
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
                "service": name,
                "port": SERVICE_PORT,
            },
            "replicas": {"min": 0, "max": scaling.max_replicas},
            "scalingMetric": {"concurrency": {"targetValue": max(1, math.ceil(scaling.target_in_flight))}},
            "timeouts": {"conditionWait": f"{scaling.cold_start_timeout_seconds}s"},
        },
    }


def service_monitor(name: str, spec: ServiceSpec, namespace: str = NAMESPACE) -> dict:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
        "spec": {
            "selector": {"matchLabels": labels(name)},
            "namespaceSelector": {"matchNames": [namespace]},
            "endpoints": [
                {
                    "port": model_server.metrics_port_name(spec.server),
                    "path": spec.server.metrics_path,
                    "interval": f"{spec.scaling.scrape_interval_seconds}s",
                    "scrapeTimeout": f"{min(spec.scaling.scrape_interval_seconds, 10)}s",
                }
            ],
        },
    }


def network_policy(name: str, spec: ServiceSpec, namespace: str = NAMESPACE) -> dict:
    """Who may reach a service's pods: Prometheus (scrapes), clients that carry the
    client label, the KEDA HTTP interceptor when the service wakes through it, and the
    load balancer's subnets when it is exposed directly.

    The VPC CNI's network policy agent enforces it; it always lets the pod's own node
    (kubelet probes) through (aws/aws-network-policy-agent#65).
    """

    def peer(ns: str | None, pod_labels: dict[str, str] | None) -> dict:
        selected: dict = {"namespaceSelector": {"matchLabels": {contract.NAMESPACE_NAME_LABEL: ns}} if ns else {}}
        if pod_labels:
            selected["podSelector"] = {"matchLabels": pod_labels}
        return selected

    sources = [
        peer(contract.MONITORING_NAMESPACE, contract.PROMETHEUS_POD_LABELS),
        peer(None, {contract.INFERENCE_CLIENT_LABEL: "true"}),
    ]
    if spec.scaling.wakes_through_interceptor:
        sources.append(peer(keda_http.NAMESPACE, keda_http.INTERCEPTOR_POD_LABELS))
    if spec.exposed_directly and spec.exposure is not None:
        # Target type ip: the load balancer's nodes connect to the pods from its own subnets.
        sources += [{"ipBlock": {"cidr": cidr}} for cidr in spec.exposure.load_balancer_cidrs]
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
        "spec": {
            "podSelector": {"matchLabels": labels(name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": sources, "ports": [{"port": "http", "protocol": "TCP"}]},
                # A server that serves metrics on a port of their own (Triton): Prometheus only.
                *(
                    [{"from": sources[:1], "ports": [{"port": model_server.METRICS_PORT_NAME, "protocol": "TCP"}]}]
                    if spec.server.metrics_port is not None
                    else []
                ),
            ],
        },
    }


def service_ports(spec: ServiceSpec) -> list[dict]:
    """Port 80 to the server; a separate metrics port (Triton) is exposed for the ServiceMonitor by name."""
    found = [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}]
    if spec.server.metrics_port is not None:
        found.append(
            {
                "name": model_server.METRICS_PORT_NAME,
                "port": spec.server.metrics_port,
                "targetPort": model_server.METRICS_PORT_NAME,
                "protocol": "TCP",
            }
        )
    return found


def model_role_name(cluster_name: str, name: str) -> str:
    return naming.bounded(f"{cluster_name}-{name}", "-model", naming.IAM_ROLE)


def _custom_resource(
    resource_name: str, api_version: str, kind: str, obj: dict, opts: pulumi.ResourceOptions
) -> k8s.apiextensions.CustomResource:
    """A custom resource from a rendered `{metadata, spec}` dict."""
    return k8s.apiextensions.CustomResource(
        resource_name, api_version=api_version, kind=kind, metadata=obj["metadata"], spec=obj["spec"], opts=opts
    )


class InferenceService(pulumi.ComponentResource):
    def __init__(self, name: str, args: InferenceServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:inference:InferenceService", name, None, opts)
        spec, ns = args.service, args.namespace
        child = pulumi.ResourceOptions(parent=self)
        meta = {"name": name, "namespace": ns, "labels": labels(name)}
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=meta, automount_service_account_token=False, opts=child
        )
        before_pods: list[pulumi.Resource] = [self.service_account, *self._model_access(name, args, child)]
        if spec.server.secret_env:
            self.env_secret = k8s.core.v1.Secret(
                f"{name}-env-secret",
                metadata={**meta, "name": model_server.secret_name(name)},
                type="Opaque",
                string_data={k: pulumi.Output.secret(args.secret_values[k]) for k in spec.server.secret_env},
                opts=child,
            )
            before_pods.append(self.env_secret)
        dep = deployment(name, spec, args.pool, ns)
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=dep["metadata"],
            spec=dep["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=before_pods, ignore_changes=REPLICAS_OWNED_BY_HPA),
        )
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta,
            spec={"selector": labels(name), "ports": service_ports(spec)},
            opts=child,
        )
        # maxUnavailable, not minAvailable: with one replica, minAvailable 1 would block every node drain.
        policy = network_policy(name, spec, ns)
        self.network_policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol", metadata=policy["metadata"], spec=policy["spec"], opts=child
        )
        self.pdb = k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=meta,
            spec={"maxUnavailable": 1, "selector": {"matchLabels": labels(name)}},
            opts=child,
        )
        self.service_monitor = _custom_resource(
            f"{name}-servicemonitor",
            "monitoring.coreos.com/v1",
            "ServiceMonitor",
            service_monitor(name, spec, ns),
            child,
        )
        self.scaled_object = _custom_resource(
            f"{name}-scaledobject",
            "keda.sh/v1alpha1",
            "ScaledObject",
            scaled_object(name, spec, args.prometheus_url, ns),
            pulumi.ResourceOptions(parent=self, depends_on=[self.deployment]),
        )
        self.url = f"http://{name}.{ns}.svc.cluster.local"
        if spec.scaling.wakes_through_interceptor:
            self.http_scaled_object = _custom_resource(
                f"{name}-httpscaledobject",
                "http.keda.sh/v1alpha1",
                "HTTPScaledObject",
                http_scaled_object(name, spec, ns),
                pulumi.ResourceOptions(parent=self, depends_on=[self.service, self.scaled_object]),
            )
            # Requests must come through the interceptor to wake the service from zero.
            self.url = f"http://{keda_http.INTERCEPTOR_PROXY} (Host: {wake_up_host(name, ns)})"
        self.register_outputs({"url": self.url, "query": scale_query(name, ns, spec.server)})

    def _model_access(self, name: str, args: InferenceServiceArgs, opts: pulumi.ResourceOptions) -> list:
        """A Pod Identity role that may read the service's s3:// model prefix and nothing else."""
        model = args.service.server.model
        if model is None or model.scheme != "s3":
            return []
        location = servers.parse_model_uri(model.uri)
        assert location is not None and args.cluster_name
        role, association = pod_identity_role(
            f"{name}-model",
            role_name=model_role_name(args.cluster_name, name),
            cluster_name=args.cluster_name,
            namespace=args.namespace,
            service_account=name,
            opts=opts,
        )
        policy = aws.iam.RolePolicy(
            f"{name}{servers.MODEL_POLICY_SUFFIX}",
            role=role.name,
            policy=json.dumps(servers.model_read_policy(location)),
            opts=opts,
        )
        return [association, policy]
