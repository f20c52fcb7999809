"""What the AWS Load Balancer Controller (LBC v3.5.0) would build from a stack's objects.

The endpoint rules (policies/rules/endpoints.py) judge load balancers, not objects: what an
Ingress gets depends on its IngressClass and that class's IngressClassParams (whose fields win over
annotations), on the other Ingresses of its IngressGroup (one ALB: scheme, SSL redirect, and per-port
inbound CIDRs and certificates are the group's), on the backend Services' annotations (they win over
the Ingress's for auth), on the controller's defaults, and on its flags as its Helm release sets
them. This module rebuilds those effective values. Each function cites the upstream source at tag
v3.5.0 of kubernetes-sigs/aws-load-balancer-controller (paths relative to the repository).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pulumi_policy import PolicyResource

from domain import contract
from policies.rules.common import HELM_RELEASE, Config, dig

INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
INGRESS_CLASS = "kubernetes:networking.k8s.io/v1:IngressClass"
CLASS_PARAMS = "kubernetes:elbv2.k8s.aws/v1beta1:IngressClassParams"
SERVICE = "kubernetes:core/v1:Service"
LBC_CHART = "aws-load-balancer-controller"
ALB = contract.ALB_ANNOTATION_PREFIX  # "alb.ingress.kubernetes.io/" (pkg/annotations/constants.go)
SVC = "service.beta.kubernetes.io/"
# pkg/ingress/group_loader.go classifyIngress: this annotation wins over spec.ingressClassName.
LEGACY_CLASS = "kubernetes.io/ingress.class"
DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"  # pkg/ingress/class_loader.go
OPEN = ("0.0.0.0/0", "::/0")
# pkg/ingress/config_types.go AuthIDPConfigOIDC / AuthIDPConfigCognito (JSON names).
IDP_FIELDS = {
    "oidc": ("issuer", "authorizationEndpoint", "tokenEndpoint", "userInfoEndpoint", "secretName"),
    "cognito": ("userPoolARN", "userPoolClientID", "userPoolDomain"),
}
TRUE, FALSE = ("1", "t", "T", "TRUE", "true", "True"), ("0", "f", "F", "FALSE", "false", "False")  # Go ParseBool


@dataclass(frozen=True)
class IngressClassConfig:
    controller: str
    params: Mapping[str, Any] | None  # the IngressClassParams spec
    params_name: str | None = None
    missing: bool = False  # params referenced, not in this stack


@dataclass(frozen=True)
class Controller:
    """The controller's flags, from its Helm release's values (chart helm/aws-load-balancer-controller
    values.yaml and templates/deployment.yaml), else the flag defaults."""

    ingress_class: str = "alb"  # --ingress-class; pkg/config/ingress_config.go defaultIngressClass
    default_scheme: str = "internal"  # --default-load-balancer-scheme; pkg/config/controller_config.go
    load_balancer_class: str = "service.k8s.aws/nlb"  # --load-balancer-class
    mutates_services: bool = True  # enableServiceMutatorWebhook: sets that class on new LoadBalancer Services
    # The IngressClass the chart creates (templates/ingressclass.yaml): (name, its config, is default).
    chart_class: tuple[str, IngressClassConfig, bool] | None = None


@dataclass
class Member:
    """One Ingress the ALB controller reconciles, with its class's IngressClassParams spec."""

    urn: str
    key: str  # namespace/name
    namespace: str
    props: Mapping[str, Any]
    annotations: Mapping[str, str]
    class_name: str | None
    config: IngressClassConfig

    @property
    def params(self) -> Mapping[str, Any]:
        return self.config.params or {}

    def ann(self, suffix: str) -> str | None:
        value = self.annotations.get(ALB + suffix)
        return None if value is None else str(value)

    def ann_list(self, suffix: str) -> list[str] | None:
        # pkg/annotations/parser.go splitCommaSeparatedString: split on ',', trim, drop empties.
        raw = self.ann(suffix)
        return None if raw is None else [p.strip() for p in raw.split(",") if p.strip()]

    def source(self, params_field: str, suffix: str) -> str:
        """Where an effective value came from, for messages."""
        if self.params.get(params_field):
            return f"{params_field} of IngressClassParams {self.config.params_name}"
        return f"{ALB}{suffix}" if self.ann(suffix) is not None else ""


# --- the controller and the classes -------------------------------------------------------------------


def controller(resources: list[PolicyResource]) -> Controller:
    for r in resources:
        chart = str(r.props.get("chart") or "")
        if r.resource_type == HELM_RELEASE and chart.rstrip("/").split("/")[-1] == LBC_CHART:
            v = r.props.get("values") or {}
            params = v.get("ingressClassParams") or {}
            name = v.get("ingressClass") or "alb"  # an empty value omits the flag: its default "alb"
            # The class references params named ingressClassParams.name (default: the class's name) when
            # that name is set or the chart creates them from a non-empty spec (_helpers.tpl, ingressclass.yaml).
            spec = params.get("spec") if params.get("create", True) and params.get("spec") else None
            ref = params.get("name") or (name if spec else None)
            config = IngressClassConfig(contract.ALB_INGRESS_CONTROLLER, spec, ref, ref is not None and spec is None)
            created = v.get("createIngressClassResource", True)
            return Controller(
                ingress_class=name,
                default_scheme=v.get("defaultLoadBalancerScheme") or "internal",
                load_balancer_class=v.get("loadBalancerClass") or "service.k8s.aws/nlb",
                mutates_services=v.get("enableServiceMutatorWebhook", True) is not False,
                chart_class=(name, config, bool(dig(v, "ingressClassConfig", "default"))) if created else None,
            )
    # No release in view: the chart's defaults (an "alb" IngressClass without params).
    return Controller(chart_class=("alb", IngressClassConfig(contract.ALB_INGRESS_CONTROLLER, None), False))


def classes(resources: list[PolicyResource], ctl: Controller) -> tuple[dict[str, IngressClassConfig], list[str]]:
    """IngressClasses by name (the stack's, and the one the controller's chart creates), and the
    names marked default."""
    params = {
        dig(r.props, "metadata", "name"): r.props.get("spec") or {}
        for r in resources
        if r.resource_type == CLASS_PARAMS
    }
    found: dict[str, IngressClassConfig] = {}
    defaults: list[str] = []
    for r in resources:
        if r.resource_type != INGRESS_CLASS:
            continue
        name = str(dig(r.props, "metadata", "name") or r.name)
        ref = dig(r.props, "spec", "parameters") or {}
        spec, ref_name = None, None
        if ref.get("kind") == "IngressClassParams" and ref.get("apiGroup") == "elbv2.k8s.aws":
            ref_name = str(ref.get("name"))
            spec = params.get(ref_name)
        controller_name = str(dig(r.props, "spec", "controller") or "")
        found[name] = IngressClassConfig(controller_name, spec, ref_name, ref_name is not None and spec is None)
        if str(dig(r.props, "metadata", "annotations", DEFAULT_CLASS)) == "true":
            defaults.append(name)
    if ctl.chart_class is not None and ctl.chart_class[0] not in found:
        name, config, default = ctl.chart_class
        found[name] = config
        defaults += [name] if default else []
    return found, defaults


def members(resources: list[PolicyResource], ctl: Controller) -> list[Member]:
    """The Ingresses the ALB controller reconciles (pkg/ingress/group_loader.go classifyIngress)."""
    by_class, defaults = classes(resources, ctl)
    out: list[Member] = []
    for r in resources:
        if r.resource_type != INGRESS:
            continue
        meta = r.props.get("metadata") or {}
        annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
        namespace = str(meta.get("namespace") or "default")
        key = f"{namespace}/{meta.get('name') or r.name}"
        config: IngressClassConfig | None = None
        name = None
        if LEGACY_CLASS in annotations:
            # pkg/ingress/class_annotation_matcher.go: the annotation must equal --ingress-class; no params.
            if annotations[LEGACY_CLASS] != ctl.ingress_class:
                continue
            config = IngressClassConfig(contract.ALB_INGRESS_CONTROLLER, None)
        else:
            name = dig(r.props, "spec", "ingressClassName")
            if name is None and len(defaults) == 1:  # class_loader.go GetDefaultIngressClass
                name = defaults[0]
            config = by_class.get(str(name)) if name is not None else None
            # No class (and --ingress-class set, as the chart always does) or a class of another
            # controller: not the ALB controller's (group_loader.go manageIngressesWithoutIngressClass).
            if config is None or config.controller != contract.ALB_INGRESS_CONTROLLER:
                continue
        out.append(Member(r.urn, key, namespace, r.props, annotations, name, config))
    return out


# --- one Ingress: class params first, then annotations, then the controller's defaults --------------


def explicit_certificates(m: Member) -> list[str]:
    # model_build_listener.go computeIngressExplicitTLSCertARNs
    return list(m.params.get("certificateArn") or []) or (m.ann_list("certificate-arn") or [])


def listen_ports(m: Member) -> dict[int, str] | None:
    """Port -> HTTP|HTTPS (model_build_listener.go computeIngressListenPorts): without the annotation,
    HTTPS:443 when the Ingress has a certificate ARN, else HTTP:80. None when unparsable."""
    raw = m.ann("listen-ports")
    if raw is None:
        return {443: "HTTPS"} if explicit_certificates(m) else {80: "HTTP"}
    try:
        entries = json.loads(raw)
        ports = {int(port): str(proto) for entry in entries for proto, port in entry.items()}
    except (ValueError, TypeError, AttributeError):
        return None
    if not ports or not all(p in ("HTTP", "HTTPS") and 1 <= n <= 65535 for n, p in ports.items()):
        return None
    return ports


def group_name(m: Member) -> str:
    # group_loader.go loadGroupID: params group.name, then the group.name annotation, else implicit.
    return str(dig(m.params, "group", "name") or m.ann("group.name") or m.key)


def scheme(m: Member) -> str | None:
    # model_build_load_balancer.go buildLoadBalancerScheme
    return m.params.get("scheme") or m.ann("scheme")


def redirect_port(m: Member) -> str | None:
    # model_builder.go buildSSLRedirectConfig: params sslRedirectPort, then the ssl-redirect annotation.
    value = m.params.get("sslRedirectPort") or m.ann("ssl-redirect")
    return None if value in (None, "") else str(value)


def inbound_cidrs(m: Member) -> list[str]:
    # model_build_listener.go computeIngressExplicitInboundCIDRs
    return list(m.params.get("inboundCIDRs") or []) or (m.ann_list("inbound-cidrs") or [])


def prefix_lists(m: Member) -> list[str]:
    # model_build_listener.go computeIngressExplicitPrefixListIDs
    found = m.params.get("prefixListsIDs") or m.params.get("PrefixListsIDs")
    return list(found or []) or (m.ann_list("security-group-prefix-lists") or [])


def hosts(m: Member) -> list[str]:
    rules = dig(m.props, "spec", "rules") or []
    tls = [h for t in dig(m.props, "spec", "tls") or [] for h in t.get("hosts") or []]
    return sorted({str(r["host"]) for r in rules if r.get("host")} | set(tls))


def backends(m: Member) -> list[Mapping[str, Any]]:
    spec = m.props.get("spec") or {}
    paths = [p.get("backend") or {} for r in spec.get("rules") or [] for p in dig(r, "http", "paths") or []]
    return [b for b in [*paths, spec.get("defaultBackend")] if b]


# --- one IngressGroup: one ALB --------------------------------------------------------------------------


@dataclass
class Group:
    name: str
    members: list[Member]
    ports: dict[int, str]  # every member's listen ports
    scheme: str
    redirect: int | None
    redirect_problem: str
    ipv6: bool  # dualstack: the security group admits the IPv6 CIDRs too


def groups(ingresses: list[Member], ctl: Controller) -> list[Group]:
    by_name: dict[str, list[Member]] = {}
    for m in ingresses:
        by_name.setdefault(group_name(m), []).append(m)
    out = []
    for name, ms in sorted(by_name.items()):
        ports: dict[int, str] = {}
        for m in ms:
            ports.update(listen_ports(m) or {})
        # A scheme any member asks for; internet-facing wins a conflict (the controller then
        # refuses the group, but the policy judges the exposure asked for).
        schemes = {s for s in (scheme(m) for m in ms) if s}
        effective = (
            "internet-facing" if "internet-facing" in schemes else (min(schemes) if schemes else ctl.default_scheme)
        )
        asked = sorted({p for p in (redirect_port(m) for m in ms) if p})
        redirect, problem = None, ""
        if len(asked) > 1:
            problem = f"conflicting SSL redirect ports {asked}"
        elif asked and not (asked[0].isdigit() and ports.get(int(asked[0])) == "HTTPS"):
            problem = f"SSL redirect port {asked[0]} is no HTTPS listener of IngressGroup {name}"
        elif asked:
            redirect = int(asked[0])
        # model_build_load_balancer.go buildLoadBalancerIPAddressType (params, then ip-address-type; ipv4)
        # and isIPv6Supported: model_build_managed_sg.go adds IPv6 rules only for the dualstack types.
        types = {m.params.get("ipAddressType") or m.ann("ip-address-type") for m in ms} - {None}
        ipv6 = bool(types & {"dualstack", "dualstack-without-public-ipv4"})
        out.append(Group(name, ms, ports, effective, redirect, problem, ipv6))
    return out


def port_certificates(group: Group, port: int, config: Config) -> list[str]:
    """A listener's certificates are every member's on that port (model_builder.go mergeListenPortConfigs)."""
    found: list[str] = []
    for m in group.members:
        if (listen_ports(m) or {}).get(port) != "HTTPS":
            continue
        found += explicit_certificates(m)
        if not explicit_certificates(m) and config.get("allowCertificateDiscovery") and hosts(m):
            found.append(f"discovered for {', '.join(hosts(m))}")
    return found


def port_sources(group: Group, port: int) -> tuple[list[str], list[str], bool]:
    """CIDRs and prefix lists a listener admits, and whether the CIDRs are the controller's default
    (mergeListenPortConfigs: 0.0.0.0/0 and ::/0 when no member on the port names CIDRs or prefix lists;
    IPv6 ones reach the security group on a dualstack load balancer only)."""
    cidrs: set[str] = set()
    lists: set[str] = set()
    for m in group.members:
        if port in (listen_ports(m) or {}):
            cidrs |= set(inbound_cidrs(m))
            lists |= set(prefix_lists(m))
    if not cidrs and not lists:
        return list(OPEN if group.ipv6 else OPEN[:1]), [], True
    return sorted(c for c in cidrs if group.ipv6 or ":" not in c), sorted(lists), False


def service_handled(props: Mapping[str, Any], ctl: Controller) -> bool | None:
    """Whether the LBC makes this Service's NLB (pkg/service/service_utils.go IsServiceSupported and
    webhooks/core/service_mutator.go); None: no LBC, the legacy cloud provider would."""
    spec = props.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return False
    cls = spec.get("loadBalancerClass")
    if cls:
        return cls == ctl.load_balancer_class
    ann = dig(props, "metadata", "annotations") or {}
    lb_type = ann.get(SVC + "aws-load-balancer-type")
    target = ann.get(SVC + "aws-load-balancer-nlb-target-type")
    if ctl.mutates_services or lb_type == "nlb-ip" or (lb_type == "external" and target in ("ip", "instance")):
        return True
    return None


def load_balancer_services(
    resources: list[PolicyResource], ctl: Controller
) -> Iterable[tuple[PolicyResource, str, Mapping[str, str], bool | None]]:
    for r in resources:
        if r.resource_type != SERVICE:
            continue
        handled = service_handled(r.props, ctl)
        if handled is False:
            continue
        meta = r.props.get("metadata") or {}
        key = f"{meta.get('namespace') or 'default'}/{meta.get('name') or r.name}"
        yield r, key, {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}, handled


def service_annotations(resources: list[PolicyResource]) -> dict[str, Mapping[str, str]]:
    out = {}
    for r in resources:
        if r.resource_type == SERVICE:
            meta = r.props.get("metadata") or {}
            out[f"{meta.get('namespace') or 'default'}/{meta.get('name') or r.name}"] = meta.get("annotations") or {}
    return out


def forwarded_service(m: Member, backend_service: Mapping[str, Any]) -> str | None:
    """The one Service whose annotations join the Ingress's for a backend's auth (enhanced_backend_builder.go
    buildAuthConfig: a forward to exactly one Service). A `use-annotation` port names an action
    (`actions.<name>`, buildActionViaAnnotation); a forward to one serviceName counts, anything else none."""
    name = backend_service.get("name")
    if dig(backend_service, "port", "name") != "use-annotation":
        return str(name)
    try:
        action = json.loads(m.ann(f"actions.{name}") or "null")
    except ValueError:
        return None
    groups_ = dig(action, "forwardConfig", "targetGroups") if isinstance(action, dict) else None
    if dig(action, "type") == "forward" and isinstance(groups_, list) and len(groups_) == 1:
        target = groups_[0].get("serviceName") if isinstance(groups_[0], dict) else None
        return str(target) if target else None
    return None


def auth_problem(annotations: Mapping[str, str], service_annotations: Mapping[str, str]) -> str:
    """Why a backend is not authenticated, or "" (pkg/ingress/auth_config_builder.go; the backend
    Service's annotations win over the Ingress's: enhanced_backend_builder.go buildAuthConfig merges
    them first with algorithm.MergeStringMap, which keeps the first value)."""

    def get(suffix: str) -> tuple[str | None, str]:
        if ALB + suffix in service_annotations:
            return str(service_annotations[ALB + suffix]), " (on the backend Service)"
        return (None, "") if ALB + suffix not in annotations else (str(annotations[ALB + suffix]), "")

    kind, where = get("auth-type")
    if kind is None:
        return "auth-type is unset (the controller's default: none)"
    if kind not in IDP_FIELDS:
        return f"auth-type is {kind}{where}, not oidc or cognito"
    raw, idp_where = get(f"auth-idp-{kind}")
    if raw is None:
        return f"auth-type {kind} without {ALB}auth-idp-{kind}"
    try:
        idp = json.loads(raw)
    except ValueError:
        idp = None
    if not isinstance(idp, dict):
        return f"{ALB}auth-idp-{kind}{idp_where} is not a JSON object"
    missing = [f for f in IDP_FIELDS[kind] if not idp.get(f)]
    if missing:
        return f"{ALB}auth-idp-{kind}{idp_where} lacks {', '.join(missing)}"
    behaviour, b_where = get("auth-on-unauthenticated-request")
    if behaviour == "allow":
        return f"auth-on-unauthenticated-request is allow{b_where}: requests without a session pass with no identity"
    return ""


def is_open(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def frontend_nlb_scheme(group: Group, ctl: Controller) -> str | None:
    # model_build_frontend_nlb.go: enable-frontend-nlb, scheme from frontend-nlb-scheme, else the default.
    if not any(m.ann("enable-frontend-nlb") in TRUE for m in group.members):
        return None
    schemes = {s for s in (m.ann("frontend-nlb-scheme") for m in group.members) if s}
    return "internet-facing" if "internet-facing" in schemes else (min(schemes) if schemes else ctl.default_scheme)


def service_scheme(ann: Mapping[str, str], ctl: Controller) -> str:
    # pkg/service/model_build_load_balancer.go buildLoadBalancerScheme: the scheme annotation, then the
    # legacy aws-load-balancer-internal, then the default (an existing LB's scheme is not in view).
    value = ann.get(SVC + "aws-load-balancer-scheme")
    if value:
        return value
    internal = ann.get(SVC + "aws-load-balancer-internal")
    if internal in FALSE:
        return "internet-facing"
    return "internal" if internal in TRUE else ctl.default_scheme


# pkg/gateway/constants/controller_constants.go: the GatewayClass controllerNames the LBC serves (Gateway
# API support is on by default at v3.5.0, pkg/config/feature_gates.go ALBGatewayAPI / NLBGatewayAPI).
GATEWAY_CONTROLLERS = ("gateway.k8s.aws/alb", "gateway.k8s.aws/nlb")
GATEWAY_API = "kubernetes:gateway.networking.k8s.io/"


def lbc_gateways(resources: list[PolicyResource]) -> list[tuple[PolicyResource, str, str, str]]:
    """Gateways of a GatewayClass (in this stack) that the LBC serves: (resource, key, class, controller)."""
    by_class = {
        str(dig(r.props, "metadata", "name") or r.name): str(dig(r.props, "spec", "controllerName") or "")
        for r in resources
        if r.resource_type.startswith(GATEWAY_API) and r.resource_type.endswith(":GatewayClass")
    }
    out = []
    for r in resources:
        if r.resource_type.startswith(GATEWAY_API) and r.resource_type.endswith(":Gateway"):
            cls = str(dig(r.props, "spec", "gatewayClassName") or "")
            if by_class.get(cls) in GATEWAY_CONTROLLERS:
                meta = r.props.get("metadata") or {}
                out.append(
                    (r, f"{meta.get('namespace') or 'default'}/{meta.get('name') or r.name}", cls, by_class[cls])
                )
    return out
