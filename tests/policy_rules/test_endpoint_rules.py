"""endpoint-https-only and endpoint-internet-facing-locked: what the AWS Load Balancer Controller would
build, judged from the objects a stack holds.

The happy paths are our objects as the program renders them (an IngressClass and its
IngressClassParams, one Ingress per exposed service, the backend Services), internal and
internet-facing with OIDC or Cognito; each case below changes one thing, so each controller
default and each precedence (IngressClassParams over annotations over defaults, the backend
Service's auth annotations over the Ingress's, group-wide redirect and certificates) is in play once.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pulumi_policy import EnforcementLevel, PolicyResource

from infra.load_balancer import helm_values
from policies.rules import load_balancers as lb
from tests.conftest import Plan
from tests.policy_rules.helpers import POLICIES, mutated, resource, stack_violations
from tools.plan.policies import enforcement, load_config

HTTPS = "endpoint-https-only"
LOCK = "endpoint-internet-facing-locked"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
INGRESS_CLASS = "kubernetes:networking.k8s.io/v1:IngressClass"
PARAMS = "kubernetes:elbv2.k8s.aws/v1beta1:IngressClassParams"
SERVICE = "kubernetes:core/v1:Service"
RELEASE = "kubernetes:helm.sh/v3:Release"
CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
A = "alb.ingress.kubernetes.io/"
S = "service.beta.kubernetes.io/"
OIDC = {
    "issuer": "https://login.example.com",
    "authorizationEndpoint": "https://login.example.com/authorize",
    "tokenEndpoint": "https://login.example.com/token",
    "userInfoEndpoint": "https://login.example.com/userinfo",
    "secretName": "gpu-inference-oidc",
}
COGNITO = {
    "userPoolARN": "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_AbCdEf123",
    "userPoolClientID": "5example",
    "userPoolDomain": "gpu-inference",
}


def ingress_class() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "gpu-inference"},
        "spec": {
            "controller": "ingress.k8s.aws/alb",
            "parameters": {"apiGroup": "elbv2.k8s.aws", "kind": "IngressClassParams", "name": "gpu-inference"},
        },
    }


def class_params(scheme: str = "internal", cidrs: list[str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "elbv2.k8s.aws/v1beta1",
        "kind": "IngressClassParams",
        "metadata": {"name": "gpu-inference"},
        "spec": {
            "scheme": scheme,
            "group": {"name": "gpu-inference"},
            "inboundCIDRs": cidrs or ["10.0.0.0/16"],
            "certificateArn": [CERT],
            "sslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
            "sslRedirectPort": "443",
            "loadBalancerAttributes": [{"key": "idle_timeout.timeout_seconds", "value": "60"}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "inference"}},
            "targetType": "ip",
        },
    }


def ingress(name: str = "chat", auth: str | None = None) -> dict[str, Any]:
    annotations = {
        f"{A}listen-ports": '[{"HTTP": 80}, {"HTTPS": 443}]',
        f"{A}healthcheck-path": "/healthz",
        f"{A}target-group-attributes": "deregistration_delay.timeout_seconds=30",
    }
    if auth == "oidc":
        annotations |= {f"{A}auth-type": "oidc", f"{A}auth-idp-oidc": json.dumps(OIDC)}
    elif auth == "cognito":
        annotations |= {f"{A}auth-type": "cognito", f"{A}auth-idp-cognito": json.dumps(COGNITO)}
    if auth:
        annotations[f"{A}auth-on-unauthenticated-request"] = "deny"
    backend = {"service": {"name": name, "port": {"name": "http"}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "inference", "annotations": annotations},
        "spec": {
            "ingressClassName": "gpu-inference",
            "rules": [
                {
                    "host": f"{name}.example.com",
                    "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
                }
            ],
        },
    }


def service(name: str = "chat", annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "inference", "annotations": annotations or {}},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8000}], **spec},
    }


def lbc_release(**values: Any) -> PolicyResource:
    props = {
        "name": "aws-load-balancer-controller",
        "chart": "aws-load-balancer-controller",
        "version": "3.5.0",
        "repositoryOpts": {"repo": "https://aws.github.io/eks-charts"},
        "values": {"clusterName": "gpuinf-prod", **values},
    }
    return resource(RELEASE, props, "aws-load-balancer-controller")


def stack(
    scheme: str = "internal",
    auth: str | None = None,
    cidrs: list[str] | None = None,
    params: dict[str, Any] | None = None,
    ingresses: list[dict[str, Any]] | None = None,
    services: list[dict[str, Any]] | None = None,
    extra: list[PolicyResource] | None = None,
) -> list[PolicyResource]:
    ings = ingresses if ingresses is not None else [ingress("chat", auth), ingress("embed", auth)]
    svcs = services if services is not None else [service("chat"), service("embed")]
    return [
        resource(INGRESS_CLASS, ingress_class(), "gpu-inference"),
        resource(PARAMS, params or class_params(scheme, cidrs), "gpu-inference"),
        *(resource(INGRESS, i, i["metadata"]["name"]) for i in ings),
        *(resource(SERVICE, s, s["metadata"]["name"]) for s in svcs),
        *(extra or []),
    ]


def exposed(auth: str = "oidc", **kwargs: Any) -> list[PolicyResource]:
    return stack("internet-facing", auth, ["203.0.113.0/24", "2001:db8::/32"], **kwargs)


def messages(policy: str, resources: list[PolicyResource], config: dict[str, Any] | None = None) -> list[str]:
    return [m for m, _ in stack_violations(policy, resources, config)]


def spec_without(field: str, scheme: str = "internet-facing") -> dict[str, Any]:
    params = class_params(scheme, ["203.0.113.0/24"])
    del params["spec"][field]
    return params


def annotated(props: dict[str, Any], **annotations: str | None) -> dict[str, Any]:
    """`props` with ALB annotations set (None removes); keys use '_' for '-'."""
    out = copy.deepcopy(props)
    for key, value in annotations.items():
        name = A + key.replace("_", "-")
        if value is None:
            out["metadata"]["annotations"].pop(name, None)
        else:
            out["metadata"]["annotations"][name] = value
    return out


# --- happy paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resources",
    [stack("internal"), exposed("oidc"), exposed("cognito")],
    ids=["internal", "internet-facing-oidc", "internet-facing-cognito"],
)
def test_our_objects_pass_both_rules(resources: list[PolicyResource]) -> None:
    assert messages(HTTPS, resources) == []
    assert messages(LOCK, resources) == []


def test_an_internal_endpoint_needs_no_auth_even_open_inside() -> None:
    assert messages(LOCK, stack("internal", cidrs=["0.0.0.0/0"])) == []


def test_enforcement_https_only_mandatory_everywhere_the_lock_mandatory_in_prod_only() -> None:
    assert POLICIES[HTTPS].enforcement_level == EnforcementLevel.MANDATORY
    assert POLICIES[LOCK].enforcement_level == EnforcementLevel.ADVISORY
    dev, prod = load_config_for("dev"), load_config_for("prod")
    assert (enforcement(POLICIES[HTTPS], dev), enforcement(POLICIES[HTTPS], prod)) == ("mandatory", "mandatory")
    assert (enforcement(POLICIES[LOCK], dev), enforcement(POLICIES[LOCK], prod)) == ("advisory", "mandatory")


def load_config_for(env: str) -> dict[str, Any]:
    from tools.plan.policies import config_path

    return load_config(config_path(env))


# --- scheme: IngressClassParams, then the annotation, then the controller's default -------------------


def test_no_scheme_anywhere_is_internal_by_default() -> None:
    params = spec_without("scheme")
    params["spec"]["inboundCIDRs"] = ["0.0.0.0/0"]
    assert messages(LOCK, stack(params=params)) == []


def test_no_scheme_is_internet_facing_when_the_controller_release_defaults_to_it() -> None:
    release = lbc_release(defaultLoadBalancerScheme="internet-facing", createIngressClassResource=False)
    found = messages(LOCK, stack(params=spec_without("scheme"), extra=[release]))
    assert found == [
        "Ingress inference/chat is internet-facing and serves chat:http without authentication: auth-type is"
        " unset (the controller's default: none)",
        "Ingress inference/embed is internet-facing and serves embed:http without authentication: auth-type is"
        " unset (the controller's default: none)",
    ]


def test_params_scheme_wins_over_the_annotation() -> None:
    loud = [annotated(ingress("chat"), scheme="internet-facing")]
    assert messages(LOCK, stack("internal", ingresses=loud)) == []
    quiet = [annotated(ingress("chat"), scheme="internal")]
    assert messages(LOCK, stack("internet-facing", ingresses=quiet)) == [
        "Ingress inference/chat is internet-facing and serves chat:http without authentication: auth-type is"
        " unset (the controller's default: none)"
    ]


def test_the_annotation_scheme_counts_when_params_set_none() -> None:
    loud = [annotated(ingress("chat"), scheme="internet-facing")]
    found = messages(LOCK, stack(params=spec_without("scheme"), ingresses=loud))
    assert found == [
        "Ingress inference/chat is internet-facing and serves chat:http without authentication: auth-type is"
        " unset (the controller's default: none)"
    ]


# --- inbound CIDRs --------------------------------------------------------------------------------------


def test_internet_facing_without_inbound_cidrs_is_open_by_default() -> None:
    found = messages(LOCK, stack(params=spec_without("inboundCIDRs"), ingresses=[ingress("chat", "oidc")]))
    assert found == [
        "Ingress inference/chat is internet-facing and HTTP:80 admits 0.0.0.0/0 (inbound CIDRs unset: the"
        " controller's default)",
        "Ingress inference/chat is internet-facing and HTTPS:443 admits 0.0.0.0/0 (inbound CIDRs unset: the"
        " controller's default)",
    ]
    dualstack = spec_without("inboundCIDRs")
    dualstack["spec"]["ipAddressType"] = "dualstack"
    found = messages(LOCK, stack(params=dualstack, ingresses=[ingress("chat", "oidc")]))
    assert found == [
        "Ingress inference/chat is internet-facing and HTTP:80 admits 0.0.0.0/0, ::/0 (inbound CIDRs unset: the"
        " controller's default)",
        "Ingress inference/chat is internet-facing and HTTPS:443 admits 0.0.0.0/0, ::/0 (inbound CIDRs unset: the"
        " controller's default)",
    ]


@pytest.mark.parametrize(("open_cidr", "ip_type"), [("0.0.0.0/0", "ipv4"), ("::/0", "dualstack")])
def test_params_cidrs_open_to_everyone(open_cidr: str, ip_type: str) -> None:
    params = class_params("internet-facing", ["203.0.113.0/24", open_cidr])
    params["spec"]["ipAddressType"] = ip_type
    found = messages(LOCK, exposed(params=params))
    assert found == [
        f"Ingress inference/{name} is internet-facing and {listener} admits {open_cidr} (inboundCIDRs of"
        " IngressClassParams gpu-inference)"
        for name in ("chat", "embed")
        for listener in ("HTTP:80", "HTTPS:443")
    ]


def test_an_ipv6_range_does_not_reach_an_ipv4_load_balancer() -> None:
    assert messages(LOCK, exposed(params=class_params("internet-facing", ["203.0.113.0/24", "::/0"]))) == []


def test_params_cidrs_win_over_the_annotation() -> None:
    wide = [annotated(ingress("chat", "oidc"), inbound_cidrs="0.0.0.0/0")]
    assert messages(LOCK, exposed(ingresses=wide)) == []


def test_the_annotation_cidrs_count_when_params_set_none() -> None:
    wide = [annotated(ingress("chat", "oidc"), inbound_cidrs="203.0.113.0/24, 0.0.0.0/0")]
    found = messages(LOCK, stack(params=spec_without("inboundCIDRs"), ingresses=wide))
    assert found == [
        f"Ingress inference/chat is internet-facing and HTTP:80 admits 0.0.0.0/0 ({A}inbound-cidrs)",
        f"Ingress inference/chat is internet-facing and HTTPS:443 admits 0.0.0.0/0 ({A}inbound-cidrs)",
    ]
    narrow = [annotated(ingress("chat", "oidc"), inbound_cidrs="203.0.113.0/24")]
    assert messages(LOCK, stack(params=spec_without("inboundCIDRs"), ingresses=narrow)) == []


def test_own_security_groups_and_prefix_lists_are_not_a_lock_in_view() -> None:
    own = [annotated(ingress("chat", "oidc"), security_groups="sg-0123456789abcdef0")]
    assert messages(LOCK, exposed(ingresses=own)) == [
        "Ingress inference/chat is internet-facing behind its own security groups sg-0123456789abcdef0"
        f" ({A}security-groups): the controller ignores inbound CIDRs then, and who may connect is not in view"
    ]
    listed = [annotated(ingress("chat", "oidc"), security_group_prefix_lists="pl-0abc")]
    found = messages(LOCK, stack(params=spec_without("inboundCIDRs"), ingresses=listed))
    assert found == [
        "Ingress inference/chat is internet-facing and HTTP:80 admits managed prefix lists pl-0abc, whose entries"
        " are not in view",
        "Ingress inference/chat is internet-facing and HTTPS:443 admits managed prefix lists pl-0abc, whose entries"
        " are not in view",
    ]


def test_an_internet_facing_frontend_nlb_is_not_a_lock_in_view() -> None:
    fronted = [annotated(ingress("chat", "oidc"), enable_frontend_nlb="true", frontend_nlb_scheme="internet-facing")]
    assert messages(LOCK, stack("internal", ingresses=fronted)) == [
        f"Ingress inference/chat puts an internet-facing frontend NLB before its ALB ({A}enable-frontend-nlb):"
        " who may connect through it is not in view"
    ]
    internal = [annotated(ingress("chat", "oidc"), enable_frontend_nlb="true")]  # its default: internal
    assert messages(LOCK, stack("internal", ingresses=internal)) == []


# --- authentication ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"auth_type": "none"}, "auth-type is none, not oidc or cognito"),
        ({"auth_type": "basic"}, "auth-type is basic, not oidc or cognito"),
        ({"auth_idp_oidc": None}, f"auth-type oidc without {A}auth-idp-oidc"),
        ({"auth_idp_oidc": "issuer=https://login.example.com"}, f"{A}auth-idp-oidc is not a JSON object"),
        ({"auth_idp_oidc": json.dumps({**OIDC, "secretName": ""})}, f"{A}auth-idp-oidc lacks secretName"),
        ({"auth_type": "cognito"}, f"auth-type cognito without {A}auth-idp-cognito"),
        (
            {"auth_on_unauthenticated_request": "allow"},
            "auth-on-unauthenticated-request is allow: requests without a session pass with no identity",
        ),
    ],
)
def test_each_missing_or_hollow_authentication(change: dict[str, str | None], problem: str) -> None:
    found = messages(LOCK, exposed(ingresses=[annotated(ingress("chat", "oidc"), **change)]))
    assert found == [
        f"Ingress inference/chat is internet-facing and serves chat:http without authentication: {problem}"
    ]


def test_the_backend_services_auth_annotations_win_over_the_ingress() -> None:
    off = service("chat", {f"{A}auth-type": "none"})
    assert messages(LOCK, exposed(services=[off])) == [
        "Ingress inference/chat is internet-facing and serves chat:http without authentication: auth-type is none"
        " (on the backend Service), not oidc or cognito"
    ]
    on = service("chat", {f"{A}auth-type": "cognito", f"{A}auth-idp-cognito": json.dumps(COGNITO)})
    assert messages(LOCK, exposed("oidc", ingresses=[ingress("chat")], services=[on])) == []


def test_http_without_redirect_on_an_internet_facing_alb_bypasses_authentication() -> None:
    found = messages(LOCK, exposed(params={**spec_without("sslRedirectPort")}, ingresses=[ingress("chat", "oidc")]))
    assert found == [
        "Ingress inference/chat is internet-facing and HTTP:80 forwards with no authentication (ALB authenticates on"
        " HTTPS listeners only)"
    ]


# --- HTTPS only --------------------------------------------------------------------------------------------


def test_http_without_redirect() -> None:
    found = messages(HTTPS, stack(params=spec_without("sslRedirectPort", "internal")))
    assert found == [
        f"Ingress inference/chat: HTTP:80 serves plain HTTP, nothing redirects it to HTTPS (neither"
        f" IngressClassParams sslRedirectPort nor {A}ssl-redirect is set)",
        f"Ingress inference/embed: HTTP:80 serves plain HTTP, nothing redirects it to HTTPS (neither"
        f" IngressClassParams sslRedirectPort nor {A}ssl-redirect is set)",
    ]


def test_one_members_ssl_redirect_annotation_redirects_the_whole_group() -> None:
    params = spec_without("sslRedirectPort", "internal")
    ings = [annotated(ingress("chat"), ssl_redirect="443"), ingress("embed")]
    assert messages(HTTPS, stack(params=params, ingresses=ings)) == []


def test_params_redirect_wins_over_the_annotation_and_a_redirect_needs_an_https_listener() -> None:
    odd = [annotated(ingress("chat"), ssl_redirect="8443")]
    assert messages(HTTPS, stack(ingresses=odd)) == []  # params say 443; the annotation is not read
    found = messages(HTTPS, stack(params=spec_without("sslRedirectPort", "internal"), ingresses=odd))
    assert found == [
        "Ingress inference/chat: HTTP:80 serves plain HTTP, nothing redirects it to HTTPS (SSL redirect port 8443 is"
        " no HTTPS listener of IngressGroup gpu-inference)"
    ]


def test_no_certificate_anywhere() -> None:
    found = messages(HTTPS, stack(params=spec_without("certificateArn", "internal"), ingresses=[ingress("chat")]))
    assert found == [
        f"Ingress inference/chat: HTTPS:443 has no certificate ARN (IngressClassParams certificateArn or"
        f" {A}certificate-arn); certificates discovered from its hosts are not accepted (allowCertificateDiscovery"
        " is off)"
    ]
    relaxed = {"allowCertificateDiscovery": True}
    assert messages(HTTPS, stack(params=spec_without("certificateArn", "internal")), relaxed) == []


def test_without_a_certificate_or_listen_ports_the_default_is_plain_http() -> None:
    bare = [annotated(ingress("chat"), listen_ports=None)]
    found = messages(HTTPS, stack(params=spec_without("certificateArn", "internal"), ingresses=bare))
    assert found == [
        "Ingress inference/chat serves no HTTPS: its listeners are HTTP:80 (listen-ports unset and no certificate"
        " ARN: the controller's default)",
        "Ingress inference/chat: HTTP:80 serves plain HTTP, nothing redirects it to HTTPS (SSL redirect port 443 is"
        " no HTTPS listener of IngressGroup gpu-inference)",
    ]


def test_a_certificate_annotation_alone_defaults_to_https_443() -> None:
    params = spec_without("certificateArn", "internal")
    del params["spec"]["sslRedirectPort"]
    bare = [annotated(ingress("chat"), listen_ports=None, certificate_arn=CERT)]
    assert messages(HTTPS, stack(params=params, ingresses=bare)) == []


def test_certificates_are_the_groups_per_port_but_not_across_groups() -> None:
    params = spec_without("certificateArn", "internal")
    ings = [annotated(ingress("chat"), certificate_arn=CERT), ingress("embed")]
    assert messages(HTTPS, stack(params=params, ingresses=ings)) == []  # embed shares chat's listener
    del params["spec"]["group"]  # implicit groups: one ALB per Ingress
    del params["spec"]["sslRedirectPort"]
    ings = [annotated(i, ssl_redirect="443") for i in ings]
    assert messages(HTTPS, stack(params=params, ingresses=ings)) == [
        f"Ingress inference/embed: HTTPS:443 has no certificate ARN (IngressClassParams certificateArn or"
        f" {A}certificate-arn); certificates discovered from its hosts are not accepted (allowCertificateDiscovery"
        " is off)"
    ]


def test_http_only_listen_ports() -> None:
    plain = [annotated(ingress("chat"), listen_ports='[{"HTTP": 8080}]')]
    found = messages(HTTPS, stack(params=spec_without("sslRedirectPort", "internal"), ingresses=plain))
    assert found == [
        "Ingress inference/chat serves no HTTPS: its listeners are HTTP:8080 (listen-ports)",
        f"Ingress inference/chat: HTTP:8080 serves plain HTTP, nothing redirects it to HTTPS (neither"
        f" IngressClassParams sslRedirectPort nor {A}ssl-redirect is set)",
    ]
    broken = [annotated(ingress("chat"), listen_ports='[{"TCP": 80}]')]
    assert messages(HTTPS, stack(ingresses=broken)) == [
        f"""Ingress inference/chat: {A}listen-ports '[{{"TCP": 80}}]' is not a JSON list of {{"HTTP"|"HTTPS": port}}"""
    ]


# --- which Ingresses are the ALB controller's -----------------------------------------------------------


def nginx_stack(ing: dict[str, Any]) -> list[PolicyResource]:
    """An nginx IngressClass beside ours (internet-facing, no auth on the Ingress) and one Ingress."""
    nginx = mutated(ingress_class(), "metadata.name", "nginx")
    nginx = mutated(nginx, "spec", {"controller": "k8s.io/ingress-nginx"})
    return [
        *stack("internet-facing", ingresses=[]),
        resource(INGRESS_CLASS, nginx, "nginx"),
        resource(INGRESS, ing, "plain"),
    ]


def plain(**spec: Any) -> dict[str, Any]:
    ing = mutated(ingress("plain"), "metadata.annotations", {f"{A}scheme": "internet-facing"})
    return mutated(ing, "spec", {**ing["spec"], **spec})


@pytest.mark.parametrize(
    "ing",
    [
        plain(ingressClassName="nginx"),
        plain(ingressClassName="no-such-class"),
        mutated(plain(), "spec.ingressClassName", None),  # no class and no default class
        # the legacy annotation wins over spec.ingressClassName (group_loader.go classifyIngress)
        mutated(plain(), "metadata.annotations", {"kubernetes.io/ingress.class": "nginx"}),
    ],
    ids=["another-controller", "unknown-class", "no-class", "legacy-annotation-wins"],
)
def test_ingresses_of_other_controllers_are_ignored(ing: dict[str, Any]) -> None:
    assert messages(HTTPS, nginx_stack(ing)) == []
    assert messages(LOCK, nginx_stack(ing)) == []


def test_the_same_ingress_with_our_class_is_judged() -> None:
    assert messages(LOCK, nginx_stack(plain()))[0] == (
        "Ingress inference/plain is internet-facing and serves plain:http without authentication: auth-type is unset"
        " (the controller's default: none)"
    )


PLAIN_HTTPS = [
    "Ingress inference/plain serves no HTTPS: its listeners are HTTP:80 (listen-ports unset and no certificate ARN:"
    " the controller's default)",
    f"Ingress inference/plain: HTTP:80 serves plain HTTP, nothing redirects it to HTTPS (neither IngressClassParams"
    f" sslRedirectPort nor {A}ssl-redirect is set)",
]


def test_the_legacy_class_annotation_makes_an_alb_ingress() -> None:
    legacy = mutated(
        plain(), "metadata.annotations", {"kubernetes.io/ingress.class": "alb", f"{A}scheme": "internet-facing"}
    )
    legacy = mutated(legacy, "spec.ingressClassName", "nginx")  # the annotation wins
    assert messages(HTTPS, nginx_stack(legacy)) == PLAIN_HTTPS
    assert messages(LOCK, nginx_stack(legacy))[0] == (
        "Ingress inference/plain is internet-facing and serves plain:http without authentication: auth-type is unset"
        " (the controller's default: none)"
    )


def test_an_ingress_without_a_class_gets_the_default_alb_class() -> None:
    default = mutated(ingress_class(), "metadata.annotations", {"ingressclass.kubernetes.io/is-default-class": "true"})
    default = mutated(default, "spec.parameters", None)
    resources = [
        resource(INGRESS_CLASS, default, "gpu-inference"),
        resource(INGRESS, mutated(plain(), "spec.ingressClassName", None), "plain"),
    ]
    assert messages(HTTPS, resources) == PLAIN_HTTPS


def test_the_chart_created_class_carries_the_release_values_params() -> None:
    release = lbc_release(ingressClassParams={"spec": {"scheme": "internet-facing", "certificateArn": [CERT]}})
    ing = mutated(ingress("plain"), "spec.ingressClassName", "alb")
    found = messages(LOCK, [release, resource(INGRESS, ing, "plain")])
    assert found[0] == (
        "Ingress inference/plain is internet-facing and serves plain:http without authentication: auth-type is unset"
        " (the controller's default: none)"
    )


def test_params_that_are_not_in_the_stack_cannot_be_checked() -> None:
    resources = [r for r in stack() if r.resource_type != PARAMS]
    expected = (
        "Ingress inference/chat: IngressClass gpu-inference takes IngressClassParams gpu-inference, which is not in"
        " this stack: its settings win over the Ingress's annotations and cannot be checked"
    )
    assert expected in messages(HTTPS, resources)
    assert expected in messages(LOCK, resources)


# --- Services of type LoadBalancer (NLB) ----------------------------------------------------------------


def nlb(
    annotations: dict[str, str] | None = None, ports: list[dict[str, Any]] | None = None, **spec: Any
) -> list[PolicyResource]:
    props = service("chat", annotations, type="LoadBalancer", **spec)
    if ports is not None:
        props["spec"]["ports"] = ports
    return [resource(SERVICE, props, "chat")]


TLS = {f"{S}aws-load-balancer-ssl-cert": CERT}
OUT = {f"{S}aws-load-balancer-scheme": "internet-facing"}
HTTPS_PORT = [{"name": "https", "port": 443, "targetPort": 8000, "protocol": "TCP"}]


def test_an_nlb_without_tls() -> None:
    assert messages(HTTPS, nlb()) == [
        f"Service inference/chat: NLB port http (80/TCP) is plain TCP, no TLS ({S}aws-load-balancer-ssl-cert is not set)"
    ]
    assert messages(HTTPS, nlb(TLS)) == []  # no ssl-ports: every port is TLS


def test_an_nlb_port_left_out_of_ssl_ports_or_udp() -> None:
    ports = [
        *HTTPS_PORT,
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
    ]
    found = messages(HTTPS, nlb({**TLS, f"{S}aws-load-balancer-ssl-ports": "https"}, ports))
    assert found == [
        f"Service inference/chat: NLB port http (80/TCP) is plain TCP, no TLS (not in {S}aws-load-balancer-ssl-ports)",
        "Service inference/chat: NLB port dns (53/UDP) carries UDP, which cannot be TLS",
    ]


def test_an_nlb_is_internal_by_default_and_internet_facing_needs_source_ranges() -> None:
    assert messages(LOCK, nlb(TLS)) == []
    assert messages(LOCK, nlb({**TLS, **OUT})) == [
        "Service inference/chat is an internet-facing NLB open to 0.0.0.0/0 (source ranges unset: the controller's"
        " default); an NLB cannot authenticate callers, so its source ranges are its only lock"
    ]
    dualstack = {**TLS, **OUT, f"{S}aws-load-balancer-ip-address-type": "dualstack"}
    assert messages(LOCK, nlb(dualstack)) == [
        "Service inference/chat is an internet-facing NLB open to 0.0.0.0/0, ::/0 (source ranges unset: the"
        " controller's default); an NLB cannot authenticate callers, so its source ranges are its only lock"
    ]
    legacy = {**TLS, f"{S}aws-load-balancer-internal": "false"}
    assert messages(LOCK, nlb(legacy)) == messages(LOCK, nlb({**TLS, **OUT}))
    assert messages(LOCK, nlb({**TLS, **OUT}, loadBalancerSourceRanges=["203.0.113.0/24"])) == []


def test_nlb_spec_source_ranges_win_over_the_annotation() -> None:
    wide = {**TLS, **OUT, f"{S}load-balancer-source-ranges": "0.0.0.0/0"}
    assert messages(LOCK, nlb(wide, loadBalancerSourceRanges=["203.0.113.0/24"])) == []
    assert messages(LOCK, nlb(wide)) == [
        f"Service inference/chat is an internet-facing NLB open to 0.0.0.0/0 ({S}load-balancer-source-ranges); an"
        " NLB cannot authenticate callers, so its source ranges are its only lock"
    ]
    assert messages(LOCK, nlb({**TLS, **OUT}, loadBalancerSourceRanges=["0.0.0.0/0"])) == [
        "Service inference/chat is an internet-facing NLB open to 0.0.0.0/0 (spec.loadBalancerSourceRanges); an"
        " NLB cannot authenticate callers, so its source ranges are its only lock"
    ]


def test_services_the_controller_does_not_handle() -> None:
    assert messages(HTTPS, [resource(SERVICE, service("chat"), "chat")]) == []  # ClusterIP
    assert messages(HTTPS, nlb(loadBalancerClass="example.com/other")) == []  # another controller's
    assert messages(HTTPS, nlb(loadBalancerClass="service.k8s.aws/nlb")) != []
    legacy = [lbc_release(enableServiceMutatorWebhook=False), *nlb(TLS)]
    expected = (
        "Service inference/chat of type LoadBalancer is not handled by the AWS Load Balancer Controller (no"
        " loadBalancerClass, and its service mutator webhook is off): the legacy cloud provider would make a load"
        " balancer these rules do not model; set spec.loadBalancerClass: service.k8s.aws/nlb"
    )
    assert messages(HTTPS, legacy) == [expected]
    assert messages(LOCK, legacy) == [expected]
    typed = [lbc_release(enableServiceMutatorWebhook=False), *nlb({**TLS, f"{S}aws-load-balancer-type": "nlb-ip"})]
    assert messages(HTTPS, typed) == []


def test_violations_name_the_resource() -> None:
    [(_, urn)] = stack_violations(HTTPS, nlb())
    assert urn is not None and urn.endswith("kubernetes:core/v1:Service::chat")


# --- the stacks as planned, and our controller's release -----------------------------------------------


def planned(plan: Plan) -> list[PolicyResource]:
    return [resource(r.type, r.inputs, r.name) for r in plan.resources]


def test_the_planned_ingresses_are_judged_and_pass(dev_plan: Plan, prod_plan: Plan) -> None:
    for plan, scheme, keys in (
        (dev_plan, "internal", ["inference/llm", "keda/embed-small"]),
        (prod_plan, "internet-facing", ["inference/llm"]),
    ):
        resources = planned(plan)
        ctl = lb.controller(resources)
        [group] = lb.groups(lb.members(resources, ctl), ctl)
        assert (group.scheme, group.redirect, group.ports) == (scheme, 443, {80: "HTTP", 443: "HTTPS"})
        assert sorted(m.key for m in group.members) == keys
        assert messages(HTTPS, resources) == []
        assert messages(LOCK, resources) == []


def test_prod_as_planned_without_its_auth_or_with_an_open_range_fails(prod_plan: Plan) -> None:
    resources = planned(prod_plan)
    [ing] = [r for r in resources if r.resource_type == INGRESS]
    ing.props["metadata"]["annotations"] = {
        k: v for k, v in ing.props["metadata"]["annotations"].items() if not k.startswith(f"{A}auth-")
    }
    [params] = [r for r in resources if r.resource_type == PARAMS]
    params.props["spec"]["inboundCIDRs"] = ["198.51.100.0/24", "0.0.0.0/0"]
    assert messages(LOCK, resources) == [
        "Ingress inference/llm is internet-facing and serves llm:80 without authentication: auth-type is unset (the"
        " controller's default: none)",
        "Ingress inference/llm is internet-facing and HTTP:80 admits 0.0.0.0/0 (inboundCIDRs of IngressClassParams"
        " gpu-inference)",
        "Ingress inference/llm is internet-facing and HTTPS:443 admits 0.0.0.0/0 (inboundCIDRs of IngressClassParams"
        " gpu-inference)",
    ]


def test_our_controller_release_sets_the_flags_the_rules_read() -> None:
    values = helm_values("gpuinf-prod", "us-east-1", "vpc-0123456789abcdef0")
    release = resource(RELEASE, {"chart": "aws-load-balancer-controller", "values": values}, "lbc")
    assert lb.controller([release]) == lb.Controller(
        ingress_class="gpu-inference", mutates_services=False, chart_class=None
    )
    # Its service mutator is off, so a plain LoadBalancer Service would go to the legacy cloud provider.
    assert messages(HTTPS, [release, *nlb(TLS)]) == [
        "Service inference/chat of type LoadBalancer is not handled by the AWS Load Balancer Controller (no"
        " loadBalancerClass, and its service mutator webhook is off): the legacy cloud provider would make a load"
        " balancer these rules do not model; set spec.loadBalancerClass: service.k8s.aws/nlb"
    ]
    assert messages(HTTPS, [release, *nlb(TLS, loadBalancerClass="service.k8s.aws/nlb")]) == []
    # --ingress-class=gpu-inference: the legacy annotation must name that class, "alb" no longer counts.
    legacy = mutated(plain(), "metadata.annotations", {"kubernetes.io/ingress.class": "alb"})
    assert messages(HTTPS, [release, resource(INGRESS, legacy, "plain")]) == []
    legacy["metadata"]["annotations"]["kubernetes.io/ingress.class"] = "gpu-inference"
    assert messages(HTTPS, [release, resource(INGRESS, legacy, "plain")]) == PLAIN_HTTPS


def gateway_stack(controller_name: str) -> list[PolicyResource]:
    api = "kubernetes:gateway.networking.k8s.io/v1"
    cls = {"metadata": {"name": "edge"}, "spec": {"controllerName": controller_name}}
    gw = {
        "metadata": {"name": "edge", "namespace": "inference"},
        "spec": {"gatewayClassName": "edge", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
    }
    return [resource(f"{api}:GatewayClass", cls, "edge"), resource(f"{api}:Gateway", gw, "edge")]


@pytest.mark.parametrize("controller_name", ["gateway.k8s.aws/alb", "gateway.k8s.aws/nlb"])
def test_gateways_of_the_controller_are_not_modelled_so_they_fail(controller_name: str) -> None:
    expected = [
        f"Gateway inference/edge (GatewayClass edge, {controller_name}) is a load balancer these rules do not model"
        " (Gateway API listeners, LoadBalancerConfiguration, route filters): expose through an Ingress of an ALB"
        " IngressClass"
    ]
    assert messages(HTTPS, gateway_stack(controller_name)) == expected
    assert messages(LOCK, gateway_stack(controller_name)) == expected


def test_gateways_of_other_controllers_are_ignored() -> None:
    assert messages(HTTPS, gateway_stack("example.com/gateway")) == []


def test_an_action_forwarding_to_one_service_takes_that_services_auth_annotations() -> None:
    action = {"type": "forward", "forwardConfig": {"targetGroups": [{"serviceName": "chat", "servicePort": "http"}]}}
    ing = annotated(ingress("chat", "oidc"), **{"actions.route": json.dumps(action)})
    ing["spec"]["rules"][0]["http"]["paths"][0]["backend"] = {
        "service": {"name": "route", "port": {"name": "use-annotation"}}
    }
    off = service("chat", {f"{A}auth-type": "none"})
    assert messages(LOCK, exposed(ingresses=[ing], services=[off])) == [
        "Ingress inference/chat is internet-facing and serves route:use-annotation without authentication: auth-type"
        " is none (on the backend Service), not oidc or cognito"
    ]
    fixed = annotated(
        ing, **{"actions.route": json.dumps({"type": "fixed-response", "fixedResponseConfig": {"statusCode": "404"}})}
    )
    assert messages(LOCK, exposed(ingresses=[fixed], services=[off])) == []


def test_inbound_cidrs_are_the_groups_per_port() -> None:
    """The controller merges every member's CIDRs on a port: one Ingress's open range opens the other's listener."""
    params = spec_without("inboundCIDRs")
    ings = [
        annotated(ingress("chat", "oidc"), inbound_cidrs="203.0.113.0/24"),
        annotated(ingress("embed", "oidc"), inbound_cidrs="0.0.0.0/0"),
    ]
    found = messages(LOCK, stack(params=params, ingresses=ings))
    assert found == [
        "Ingress inference/chat is internet-facing and HTTP:80 admits 0.0.0.0/0 (from another Ingress of"
        " IngressGroup gpu-inference)",
        "Ingress inference/chat is internet-facing and HTTPS:443 admits 0.0.0.0/0 (from another Ingress of"
        " IngressGroup gpu-inference)",
        f"Ingress inference/embed is internet-facing and HTTP:80 admits 0.0.0.0/0 ({A}inbound-cidrs)",
        f"Ingress inference/embed is internet-facing and HTTPS:443 admits 0.0.0.0/0 ({A}inbound-cidrs)",
    ]
    ings[1] = annotated(ingress("embed", "oidc"), inbound_cidrs=None)  # no CIDRs: it takes chat's
    assert messages(LOCK, stack(params=params, ingresses=ings)) == []


def test_a_chart_class_naming_params_it_does_not_create_cannot_be_checked() -> None:
    release = lbc_release(ingressClassParams={"create": False, "name": "shared"})
    ing = mutated(ingress("plain"), "spec.ingressClassName", "alb")
    assert messages(HTTPS, [release, resource(INGRESS, ing, "plain")]) == [
        "Ingress inference/plain: IngressClass alb takes IngressClassParams shared, which is not in this stack: its"
        " settings win over the Ingress's annotations and cannot be checked",
        f"Ingress inference/plain: HTTP:80 serves plain HTTP, nothing redirects it to HTTPS (neither"
        f" IngressClassParams sslRedirectPort nor {A}ssl-redirect is set)",
        f"Ingress inference/plain: HTTPS:443 has no certificate ARN (IngressClassParams certificateArn or"
        f" {A}certificate-arn); certificates discovered from its hosts are not accepted (allowCertificateDiscovery"
        " is off)",
    ]
