"""Endpoints: what the AWS Load Balancer Controller (LBC v3.5.0) would put on the network.

`endpoint-https-only`: every ALB listener of an Ingress serves HTTPS with a certificate, or
redirects to HTTPS; every port of an NLB Service is TLS. `endpoint-internet-facing-locked`: an
internet-facing load balancer admits a named set of CIDRs (never 0.0.0.0/0 or ::/0) and, for an ALB,
authenticates every backend with OIDC or Cognito. Both are stack policies that judge any Ingress or
Service of type LoadBalancer a user could write, not only ours, through the effective values
policies/rules/load_balancers.py rebuilds (IngressClassParams, then annotations, then the
controller's defaults, group-wide where the controller merges an IngressGroup).

Deliberate choices, beyond what the controller does:
- A certificate is an ARN in IngressClassParams `certificateArn` or the `certificate-arn` annotation.
  ACM discovery from hosts (pkg/ingress/model_build_listener.go computeIngressInferredTLSCertARNs) and
  `create-acm-cert` depend on ACM and a controller flag at reconcile time, which no preview sees; a
  failed discovery stops the whole IngressGroup. `allowCertificateDiscovery: true` accepts them when
  the Ingress names hosts.
- Sources nobody can read from the stack are not a lock: own security groups (`security-groups`, the
  controller then ignores inbound CIDRs), managed prefix lists, and a frontend NLB.
- An NLB cannot authenticate callers (no NLB listener action does), so its source ranges are its only
  lock: an internet-facing NLB passes only with ranges that are not the whole internet.
- An IngressClassParams `namespaceSelector` that excludes the Ingress's namespace only stops the
  controller from serving it at all, so it is not modelled (never less safe).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import PolicyResource

from policies.rules.common import ADVISORY, Config, dig, schema, stack_policy
from policies.rules.load_balancers import (
    ALB,
    OPEN,
    SVC,
    Group,
    Member,
    auth_problem,
    backends,
    controller,
    forwarded_service,
    frontend_nlb_scheme,
    groups,
    hosts,
    inbound_cidrs,
    is_open,
    lbc_gateways,
    listen_ports,
    load_balancer_services,
    members,
    port_certificates,
    port_sources,
    service_annotations,
    service_scheme,
)


def _label(ports: Mapping[int, str]) -> str:
    return ", ".join(f"{proto}:{port}" for port, proto in sorted(ports.items()))


def _missing_params(m: Member) -> str:
    return (
        f"Ingress {m.key}: IngressClass {m.class_name} takes IngressClassParams {m.config.params_name}, which is"
        " not in this stack: its settings win over the Ingress's annotations and cannot be checked"
    )


# --- endpoint-https-only --------------------------------------------------------------------------------


def _ingress_https(group: Group, m: Member, config: Config) -> Iterable[str]:
    ports = listen_ports(m)
    if ports is None:
        yield f'Ingress {m.key}: {ALB}listen-ports {m.ann("listen-ports")!r} is not a JSON list of {{"HTTP"|"HTTPS": port}}'
        return
    if "HTTPS" not in ports.values():
        why = (
            "listen-ports"
            if m.ann("listen-ports") is not None
            else "listen-ports unset and no certificate ARN: the controller's default"
        )
        yield f"Ingress {m.key} serves no HTTPS: its listeners are {_label(ports)} ({why})"
    for port, proto in sorted(ports.items()):
        if proto == "HTTPS" and not port_certificates(group, port, config):
            discovery = (
                "; certificates discovered from its hosts are not accepted (allowCertificateDiscovery is off)"
                if hosts(m) and not config.get("allowCertificateDiscovery")
                else ""
            )
            yield (
                f"Ingress {m.key}: HTTPS:{port} has no certificate ARN (IngressClassParams certificateArn or"
                f" {ALB}certificate-arn){discovery}"
            )
        elif proto == "HTTP" and group.redirect is None:
            why = group.redirect_problem or f"neither IngressClassParams sslRedirectPort nor {ALB}ssl-redirect is set"
            yield f"Ingress {m.key}: HTTP:{port} serves plain HTTP, nothing redirects it to HTTPS ({why})"


def _service_tls(props: Mapping[str, Any], key: str, ann: Mapping[str, str]) -> Iterable[str]:
    # pkg/service/model_build_listener.go buildListenerSpec: a port is TLS when the service has
    # aws-load-balancer-ssl-cert and aws-load-balancer-ssl-ports is empty or names it; never UDP.
    certs = [c.strip() for c in ann.get(SVC + "aws-load-balancer-ssl-cert", "").split(",") if c.strip()]
    tls_ports = {p.strip() for p in ann.get(SVC + "aws-load-balancer-ssl-ports", "").split(",") if p.strip()}
    for port in dig(props, "spec", "ports") or []:
        number, proto = int(port.get("port") or 0), str(port.get("protocol") or "TCP")
        label = f"{port.get('name') or number} ({number}/{proto})"
        if proto in ("UDP", "TCP_UDP"):
            yield f"Service {key}: NLB port {label} carries {proto}, which cannot be TLS"
        elif not certs:
            yield f"Service {key}: NLB port {label} is plain TCP, no TLS ({SVC}aws-load-balancer-ssl-cert is not set)"
        elif tls_ports and not tls_ports & {str(port.get("name") or ""), str(number)}:
            yield f"Service {key}: NLB port {label} is plain TCP, no TLS (not in {SVC}aws-load-balancer-ssl-ports)"


def _gateways(resources: list[PolicyResource]) -> Iterable[tuple[str, str | None]]:
    for r, key, cls, controller_name in lbc_gateways(resources):
        yield (
            (
                f"Gateway {key} (GatewayClass {cls}, {controller_name}) is a load balancer these rules do not model"
                " (Gateway API listeners, LoadBalancerConfiguration, route filters): expose through an Ingress of an"
                " ALB IngressClass"
            ),
            r.urn,
        )


def _legacy_service(key: str) -> str:
    return (
        f"Service {key} of type LoadBalancer is not handled by the AWS Load Balancer Controller (no"
        " loadBalancerClass, and its service mutator webhook is off): the legacy cloud provider would make a"
        " load balancer these rules do not model; set spec.loadBalancerClass: service.k8s.aws/nlb"
    )


def _https_only(resources: list[PolicyResource], config: Config) -> Iterable[tuple[str, str | None]]:
    ctl = controller(resources)
    for group in groups(members(resources, ctl), ctl):
        for m in group.members:
            if m.config.missing:
                yield _missing_params(m), m.urn
            for message in _ingress_https(group, m, config):
                yield message, m.urn
    for r, key, ann, handled in load_balancer_services(resources, ctl):
        if handled is None:
            yield _legacy_service(key), r.urn
            continue
        for message in _service_tls(r.props, key, ann):
            yield message, r.urn
    yield from _gateways(resources)


# --- endpoint-internet-facing-locked ---------------------------------------------------------------------


def _ingress_lock(group: Group, m: Member, services: Mapping[str, Mapping[str, str]]) -> Iterable[str]:
    ports = listen_ports(m) or {}
    problems: dict[str, list[str]] = {}
    for b in backends(m):
        svc = b.get("service") or {}
        port = svc.get("port") or {}
        name = f"{svc.get('name')}:{port.get('name') or port.get('number')}"
        own = services.get(f"{m.namespace}/{forwarded_service(m, svc)}", {})
        problem = auth_problem(m.annotations, {str(k): str(v) for k, v in own.items()})
        if problem:
            problems.setdefault(problem, []).append(name)
    for problem, names in problems.items():
        yield f"Ingress {m.key} is internet-facing and serves {', '.join(names)} without authentication: {problem}"
    for port, proto in sorted(ports.items()):
        if proto == "HTTP" and group.redirect is None:
            # model_build_actions.go buildActions: authenticate actions only on HTTPS listeners.
            yield f"Ingress {m.key} is internet-facing and HTTP:{port} forwards with no authentication (ALB authenticates on HTTPS listeners only)"
    own_groups = m.ann_list("security-groups")
    if own_groups:
        # model_build_load_balancer.go buildLoadBalancerSecurityGroups: no managed security group.
        yield (
            f"Ingress {m.key} is internet-facing behind its own security groups {', '.join(own_groups)}"
            f" ({ALB}security-groups): the controller ignores inbound CIDRs then, and who may connect is not in view"
        )
        return
    for port in sorted(ports):
        cidrs, lists, default = port_sources(group, port)
        open_ = [c for c in cidrs if is_open(c)]
        if open_:
            if default:
                why = "inbound CIDRs unset: the controller's default"
            elif set(open_) <= set(inbound_cidrs(m)):
                why = m.source("inboundCIDRs", "inbound-cidrs")
            else:  # the listener's CIDRs are every member's on the port (mergeListenPortConfigs)
                why = f"from another Ingress of IngressGroup {group.name}"
            yield f"Ingress {m.key} is internet-facing and {ports[port]}:{port} admits {', '.join(open_)} ({why})"
        if lists:
            yield f"Ingress {m.key} is internet-facing and {ports[port]}:{port} admits managed prefix lists {', '.join(lists)}, whose entries are not in view"


def _service_lock(props: Mapping[str, Any], key: str, ann: Mapping[str, str]) -> Iterable[str]:
    own_groups = [g.strip() for g in ann.get(SVC + "aws-load-balancer-security-groups", "").split(",") if g.strip()]
    if own_groups:
        yield (
            f"Service {key} is an internet-facing NLB behind its own security groups {', '.join(own_groups)}:"
            " who may connect is not in view"
        )
        return
    # pkg/service/model_build_managed_sg.go buildCIDRsFromSourceRanges: spec.loadBalancerSourceRanges,
    # then the annotation, else 0.0.0.0/0 (and ::/0 on dualstack) unless prefix lists are set.
    ranges = list(dig(props, "spec", "loadBalancerSourceRanges") or [])
    where = "spec.loadBalancerSourceRanges"
    if not ranges:
        ranges = [c.strip() for c in ann.get(SVC + "load-balancer-source-ranges", "").split(",") if c.strip()]
        where = f"{SVC}load-balancer-source-ranges"
    lists = [
        p.strip() for p in ann.get(SVC + "aws-load-balancer-security-group-prefix-lists", "").split(",") if p.strip()
    ]
    if lists:
        yield f"Service {key} is an internet-facing NLB admitting managed prefix lists {', '.join(lists)}, whose entries are not in view"
    if not ranges and not lists:
        dualstack = ann.get(SVC + "aws-load-balancer-ip-address-type") == "dualstack"
        ranges, where = list(OPEN if dualstack else OPEN[:1]), "source ranges unset: the controller's default"
    open_ = [c for c in ranges if is_open(c)]
    if open_:
        yield (
            f"Service {key} is an internet-facing NLB open to {', '.join(open_)} ({where}); an NLB cannot"
            " authenticate callers, so its source ranges are its only lock"
        )


def _internet_facing_locked(resources: list[PolicyResource], _: Config) -> Iterable[tuple[str, str | None]]:
    ctl = controller(resources)
    services = service_annotations(resources)
    for group in groups(members(resources, ctl), ctl):
        nlb = frontend_nlb_scheme(group, ctl)
        for m in group.members:
            if m.config.missing:
                yield _missing_params(m), m.urn
            if nlb == "internet-facing":
                yield (
                    (
                        f"Ingress {m.key} puts an internet-facing frontend NLB before its ALB"
                        f" ({ALB}enable-frontend-nlb): who may connect through it is not in view"
                    ),
                    m.urn,
                )
            if group.scheme == "internet-facing":
                for message in _ingress_lock(group, m, services):
                    yield message, m.urn
    for r, key, ann, handled in load_balancer_services(resources, ctl):
        if handled is None:
            yield _legacy_service(key), r.urn
        elif service_scheme(ann, ctl) == "internet-facing":
            for message in _service_lock(r.props, key, ann):
                yield message, r.urn
    yield from _gateways(resources)


POLICIES = [
    stack_policy(
        "endpoint-https-only",
        "Every endpoint the AWS Load Balancer Controller would build serves HTTPS only: each ALB Ingress has an"
        " HTTPS listener with a certificate ARN and its HTTP listeners redirect to HTTPS; each port of an NLB"
        " Service is TLS (effective values: IngressClassParams, then annotations, then the controller's defaults).",
        "Expose services through gpu-inference:ingress (its IngressClassParams set certificateArn and"
        " sslRedirectPort). For your own Ingress: set alb.ingress.kubernetes.io/certificate-arn, listen-ports"
        ' \'[{"HTTP": 80}, {"HTTPS": 443}]\' and ssl-redirect: "443"; for a LoadBalancer Service:'
        " service.beta.kubernetes.io/aws-load-balancer-ssl-cert (and ssl-ports naming every port).",
        _https_only,
        config=schema(
            allowCertificateDiscovery={
                "type": "boolean",
                "default": False,
                "description": "Accept an HTTPS listener whose certificate the controller would discover in ACM"
                " from the Ingress's hosts (or create with create-acm-cert) instead of a certificate ARN.",
            }
        ),
    ),
    stack_policy(
        "endpoint-internet-facing-locked",
        "An internet-facing endpoint admits named CIDRs only (never 0.0.0.0/0 or ::/0, the controller's default"
        " when unset) and, for an ALB, authenticates every backend with OIDC or Cognito; an NLB, which cannot"
        " authenticate, must have source ranges.",
        "Set gpu-inference:ingress.allowedCidrs to your clients' ranges and ingress.auth (oidc or cognito), or"
        " keep ingress.scheme internal. For your own Ingress: alb.ingress.kubernetes.io/inbound-cidrs and"
        " auth-type with auth-idp-oidc / auth-idp-cognito; for a LoadBalancer Service:"
        " spec.loadBalancerSourceRanges.",
        _internet_facing_locked,
        enforcement=ADVISORY,
    ),
]
