"""Endpoints: exposed inference services as HTTPS hosts on the stack's one Application Load Balancer.

Routing is Kubernetes Ingress handled by the AWS Load Balancer Controller
(`infra/load_balancer.py`), not Gateway API. Why: the platform settings that must
not vary per service (scheme, source CIDRs, certificate, TLS policy, the HTTP to
HTTPS redirect, the idle timeout, which namespaces may join) live in one
`IngressClassParams`, whose fields override any annotation a service owner
writes (docs/guide/ingress/ingress_class.md at v3.5.0), and every Ingress of the
class joins one IngressGroup, so the stack gets one load balancer, not one per
service. Gateway API would add the Gateway API CRDs to install and version, and
its ALB support is younger than the Ingress path, for no routing we need here.

A service at zero replicas cannot answer the load balancer, so its host is
routed to the KEDA HTTP add-on's interceptor instead, which holds the request
while the service wakes (its HTTPScaledObject answers for the external host too,
`inference.http_scaled_object`). An Ingress may only name Services of its own
namespace, so that host's Ingress lives in the interceptor's namespace and joins
the same IngressGroup (groups span namespaces); the class's namespaceSelector
admits exactly the namespaces routes live in.

Draining: the controller deregisters a pod's target when its endpoint goes; the
load balancer stops sending it new requests a few seconds later and lets those
in flight finish for the target group's deregistration delay. So a directly
exposed service's preStop sleep covers the propagation (`LOAD_BALANCER_PRE_STOP_SECONDS`)
and the delay covers preStop + the server's drain; the interceptor's shutdown
delay and drain timeout are set the same way (`infra/keda_http.py`).

Authentication (OIDC or Cognito) is an action of the listener rules of each
Ingress; the OIDC client secret is a Pulumi secret, rendered into a Secret in
each namespace that has a route (the controller reads it from the Ingress's own
namespace).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from domain import contract, pods
from domain.servers import ServerPreset

ALB = contract.ALB_ANNOTATION_PREFIX
OIDC_SECRET = "gpu-inference-oidc"
# Seconds from a target's deregistration until every load balancer node stops sending it new requests.
LOAD_BALANCER_PRE_STOP_SECONDS = 15
HEALTH_CHECK_INTERVAL_SECONDS = 5  # ALB's minimum: an unready pod leaves rotation within 2 checks
HEALTH_CHECK_TIMEOUT_SECONDS = 3  # the same as the readiness probe's
DEREGISTRATION_DELAY_MAX = 3600  # ALB's bound on deregistration_delay.timeout_seconds


@dataclass(frozen=True)
class Exposure:
    """A service's host on the load balancer, as its own pods see it (`inference.ServiceSpec`)."""

    host: str
    # The load balancer's subnets (the public ones, for both schemes: infra/network.py): its requests
    # and health checks come from there (NetworkPolicy). They hold no pod addresses.
    load_balancer_cidrs: tuple[str, ...]
    # The server's idle keep-alive must outlast the load balancer's idle timeout, or the load
    # balancer reuses a connection the server is closing and answers 502.
    keep_alive_seconds: int


def keep_alive_env(preset: ServerPreset, exposure: Exposure | None) -> dict[str, str]:
    """A directly exposed server's idle keep-alive, where its preset has a setting for it (vLLM's is 5 s)."""
    if exposure is None or preset.keep_alive_env is None:
        return {}
    return {preset.keep_alive_env: str(exposure.keep_alive_seconds)}


@dataclass(frozen=True)
class Route:
    """One exposed service: a host (and path prefix) to a Service port in the Ingress's namespace."""

    service: str  # the InferenceService
    host: str
    path: str
    namespace: str  # where the Ingress lives: the service's, or the interceptor's
    backend_service: str
    backend_port: int
    health_check_path: str
    health_check_port: str  # "traffic-port", or the interceptor's admin port
    deregistration_delay_seconds: int
    via_interceptor: bool


@dataclass(frozen=True)
class OidcAuth:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    user_info_endpoint: str
    client_id: str
    scope: str
    on_unauthenticated: str
    session_timeout_seconds: int


@dataclass(frozen=True)
class CognitoAuth:
    user_pool_arn: str
    user_pool_client_id: str
    user_pool_domain: str
    scope: str
    on_unauthenticated: str
    session_timeout_seconds: int


@dataclass(frozen=True)
class EndpointsArgs:
    group_name: str  # the IngressGroup: one load balancer per stack
    scheme: str  # internal | internet-facing
    certificate_arn: str
    allowed_cidrs: tuple[str, ...]
    ssl_policy: str
    idle_timeout_seconds: int
    routes: tuple[Route, ...]
    auth: OidcAuth | CognitoAuth | None = None
    client_secret: pulumi.Input[str] | None = None  # OIDC only, a Pulumi secret
    depends_on: Sequence[pulumi.Resource] = ()  # the controller's release, the routed services


def ingress_class_params(args: EndpointsArgs) -> dict:
    """What every Ingress of the class gets, whatever its annotations say."""
    namespaces = sorted({r.namespace for r in args.routes})
    return {
        "metadata": {"name": contract.INGRESS_CLASS, "labels": {"app.kubernetes.io/part-of": "gpu-inference"}},
        "spec": {
            "group": {"name": args.group_name},
            "scheme": args.scheme,
            "inboundCIDRs": list(args.allowed_cidrs),
            "certificateArn": [args.certificate_arn],
            "sslPolicy": args.ssl_policy,
            # Port 80 only answers a redirect to 443: no plain-HTTP request reaches a service.
            "sslRedirectPort": "443",
            "targetType": "ip",
            "namespaceSelector": {
                "matchExpressions": [{"key": contract.NAMESPACE_NAME_LABEL, "operator": "In", "values": namespaces}]
            },
            "loadBalancerAttributes": [
                {"key": "idle_timeout.timeout_seconds", "value": str(args.idle_timeout_seconds)},
                # Requests with header names ALB cannot parse are dropped, not forwarded.
                {"key": "routing.http.drop_invalid_header_fields.enabled", "value": "true"},
            ],
        },
    }


def ingress_class() -> dict:
    return {
        "metadata": {"name": contract.INGRESS_CLASS},
        "spec": {
            "controller": contract.ALB_INGRESS_CONTROLLER,
            "parameters": {"apiGroup": "elbv2.k8s.aws", "kind": "IngressClassParams", "name": contract.INGRESS_CLASS},
        },
    }


def auth_annotations(auth: OidcAuth | CognitoAuth | None) -> dict[str, str]:
    if auth is None:
        return {}
    common = {
        f"{ALB}auth-scope": auth.scope,
        f"{ALB}auth-on-unauthenticated-request": auth.on_unauthenticated,
        f"{ALB}auth-session-timeout": str(auth.session_timeout_seconds),
    }
    if isinstance(auth, OidcAuth):
        idp = {
            "issuer": auth.issuer,
            "authorizationEndpoint": auth.authorization_endpoint,
            "tokenEndpoint": auth.token_endpoint,
            "userInfoEndpoint": auth.user_info_endpoint,
            "secretName": OIDC_SECRET,
        }
        return {f"{ALB}auth-type": "oidc", f"{ALB}auth-idp-oidc": json.dumps(idp), **common}
    idp = {
        "userPoolARN": auth.user_pool_arn,
        "userPoolClientID": auth.user_pool_client_id,
        "userPoolDomain": auth.user_pool_domain,
    }
    return {f"{ALB}auth-type": "cognito", f"{ALB}auth-idp-cognito": json.dumps(idp), **common}


def rule_order(path: str) -> int:
    """IngressGroup order (lower first, -1000..1000): longer path prefixes before shorter ones on a host."""
    return 100 - min(len(path), 100)


def ingress(route: Route, args: EndpointsArgs) -> dict:
    annotations = {
        # HTTPS for traffic; HTTP only to redirect (the class's sslRedirectPort).
        f"{ALB}listen-ports": json.dumps([{"HTTP": 80}, {"HTTPS": 443}]),
        f"{ALB}backend-protocol": "HTTP",
        f"{ALB}group.order": str(rule_order(route.path)),
        f"{ALB}healthcheck-path": route.health_check_path,
        f"{ALB}healthcheck-port": route.health_check_port,
        f"{ALB}healthcheck-interval-seconds": str(HEALTH_CHECK_INTERVAL_SECONDS),
        f"{ALB}healthcheck-timeout-seconds": str(HEALTH_CHECK_TIMEOUT_SECONDS),
        f"{ALB}healthy-threshold-count": "2",
        f"{ALB}unhealthy-threshold-count": "2",
        f"{ALB}success-codes": "200",
        f"{ALB}target-group-attributes": f"deregistration_delay.timeout_seconds={route.deregistration_delay_seconds}",
        **auth_annotations(args.auth),
    }
    backend = {"service": {"name": route.backend_service, "port": {"number": route.backend_port}}}
    return {
        "metadata": {
            "name": route.service,
            "namespace": route.namespace,
            "labels": pods.app_labels(route.service, "endpoint"),
            "annotations": annotations,
        },
        "spec": {
            "ingressClassName": contract.INGRESS_CLASS,
            "rules": [
                {
                    "host": route.host,
                    "http": {"paths": [{"path": route.path, "pathType": "Prefix", "backend": backend}]},
                }
            ],
        },
    }


class Endpoints(pulumi.ComponentResource):
    def __init__(self, name: str, args: EndpointsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:endpoints:Endpoints", name, None, opts)
        # Everything here depends on the controller: on destroy the Ingresses go first, while the
        # controller still runs to delete the load balancer, its target groups and security groups.
        after = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        params = ingress_class_params(args)
        self.class_params = k8s.apiextensions.CustomResource(
            f"{name}-class-params",
            api_version="elbv2.k8s.aws/v1beta1",
            kind="IngressClassParams",
            metadata=params["metadata"],
            spec=params["spec"],
            opts=after,
        )
        klass = ingress_class()
        self.ingress_class = k8s.networking.v1.IngressClass(
            f"{name}-class",
            metadata=klass["metadata"],
            spec=klass["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, self.class_params]),
        )
        self.secrets = self._oidc_secrets(name, args, after)
        before_routes = [*args.depends_on, self.ingress_class, *self.secrets.values()]
        # Awaited (no skipAwait): pulumi-kubernetes' Ingress await (provider/pkg/await/ingress.go)
        # waits for the backend's Endpoints object to exist, which it does at zero ready pods, and for
        # status.loadBalancer, which the controller sets once the load balancer exists, so `up`
        # never waits for a GPU node; and `destroy` waits until the controller has removed the
        # Ingress's finalizer, that is, deleted its share of the load balancer.
        self.ingresses: Mapping[str, k8s.networking.v1.Ingress] = {}
        for route in sorted(args.routes, key=lambda r: r.service):
            obj = ingress(route, args)
            self.ingresses[route.service] = k8s.networking.v1.Ingress(
                f"{name}-{route.service}",
                metadata=obj["metadata"],
                spec=obj["spec"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=before_routes),
            )
        self.urls = {r.service: f"https://{r.host}{r.path}" for r in args.routes}
        # The DNS name to point each host at (a CNAME), once the controller has made the load balancer.
        first = next(iter(self.ingresses.values()), None)
        self.load_balancer_hostname = (
            first.status.apply(
                lambda s: (s.load_balancer.ingress or [None])[0].hostname if s and s.load_balancer else None
            )
            if first is not None
            else None
        )
        self.register_outputs({"urls": self.urls})

    def _oidc_secrets(self, name: str, args: EndpointsArgs, opts: pulumi.ResourceOptions) -> dict:
        """The OIDC client id and secret, in each namespace that has a route (the controller reads it there)."""
        if not isinstance(args.auth, OidcAuth):
            return {}
        assert args.client_secret is not None
        return {
            ns: k8s.core.v1.Secret(
                f"{name}-oidc-{ns}",
                metadata={
                    "name": OIDC_SECRET,
                    "namespace": ns,
                    "labels": {"app.kubernetes.io/part-of": "gpu-inference"},
                },
                type="Opaque",
                string_data={"clientID": args.auth.client_id, "clientSecret": pulumi.Output.secret(args.client_secret)},
                opts=opts,
            )
            for ns in sorted({r.namespace for r in args.routes})
        }
