"""Endpoints: the class params every exposed host gets, each route's Ingress, the OIDC secret, and
what exposing a service changes in its own pods (preStop, NetworkPolicy, keep-alive, wake-up hosts).

Built from stack copies through `infra.mapping`, as `__main__.py` builds them; assertions are on the
recorded inputs. Annotation names and value formats are those of the AWS Load Balancer Controller
v3.5.0 (docs/guide/ingress/annotations.md, ingress_class.md).
"""

from __future__ import annotations

import json

import pytest

from domain import contract
from infra import keda_http, mapping
from infra.workloads import endpoints, inference
from infra.workloads.endpoints import Endpoints
from tests.conftest import plan_of, stack_config
from tests.support.endpoints import OIDC
from tests.unit.helpers import assert_parented, named, of_type, settings_of
from tools.plan.mocks import SECRET
from tools.plan.run import record

ING = "gpu-inference:ingress"
INF = "gpu-inference:inference"
ALB = contract.ALB_ANNOTATION_PREFIX


def _endpoints(cfg: dict) -> list:
    settings = settings_of(cfg)

    def program():
        args = mapping.endpoints_args(settings, depends_on=[])
        assert args is not None
        Endpoints("endpoints", args)

    secrets = [k for k in cfg if k == "gpu-inference:ingressOidcClientSecret"]
    return record(program, stack="unit", region="us-west-2", config=cfg, secret_keys=secrets)


@pytest.fixture(scope="module")
def dev_endpoints():
    return _endpoints(stack_config("dev"))


def test_one_class_with_the_platform_settings_no_annotation_can_override(dev_endpoints):
    assert_parented(dev_endpoints, "gpuinf:endpoints:Endpoints")
    params = named(dev_endpoints, "endpoints-class-params").inputs
    assert (params["apiVersion"], params["kind"]) == ("elbv2.k8s.aws/v1beta1", "IngressClassParams")
    spec = params["spec"]
    settings = settings_of("dev")
    assert spec["group"] == {"name": settings.cluster.name}  # one load balancer for the stack
    assert spec["scheme"] == "internal"
    assert spec["inboundCIDRs"] == [settings.network.cidr]  # internal default: the VPC only
    assert spec["certificateArn"] == [settings.ingress.certificate_arn]
    assert spec["sslRedirectPort"] == "443" and spec["targetType"] == "ip"
    assert spec["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    attributes = {a["key"]: a["value"] for a in spec["loadBalancerAttributes"]}
    assert attributes["idle_timeout.timeout_seconds"] == str(settings.load_balancer_idle_timeout)
    (only,) = spec["namespaceSelector"]["matchExpressions"]
    assert only == {"key": contract.NAMESPACE_NAME_LABEL, "operator": "In", "values": ["inference", "keda"]}
    klass = named(dev_endpoints, "endpoints-class").inputs
    assert klass["metadata"]["name"] == contract.INGRESS_CLASS
    assert klass["spec"]["controller"] == "ingress.k8s.aws/alb"
    assert klass["spec"]["parameters"]["name"] == params["metadata"]["name"] == contract.INGRESS_CLASS


def test_a_direct_route_goes_to_the_service_and_checks_its_readiness_path(dev_endpoints):
    llm = named(dev_endpoints, "endpoints-llm").inputs
    meta, spec = llm["metadata"], llm["spec"]
    assert (meta["namespace"], spec["ingressClassName"]) == (inference.NAMESPACE, contract.INGRESS_CLASS)
    (rule,) = spec["rules"]
    assert rule["host"] == "llm.dev.gpuinf.example.com"
    (path,) = rule["http"]["paths"]
    assert path == {
        "path": "/",
        "pathType": "Prefix",
        "backend": {"service": {"name": "llm", "port": {"number": inference.SERVICE_PORT}}},
    }
    notes = meta["annotations"]
    assert json.loads(notes[f"{ALB}listen-ports"]) == [{"HTTP": 80}, {"HTTPS": 443}]
    assert notes[f"{ALB}healthcheck-path"] == "/readyz" and notes[f"{ALB}healthcheck-port"] == "traffic-port"
    # The load balancer lets a deregistered pod finish: all of preStop and the server's drain.
    drain = settings_of("dev").inference["llm"].drain_seconds
    expected = endpoints.LOAD_BALANCER_PRE_STOP_SECONDS + drain
    assert notes[f"{ALB}target-group-attributes"] == f"deregistration_delay.timeout_seconds={expected}"
    assert f"{ALB}auth-type" not in notes  # dev: internal, no auth


def test_a_scale_to_zero_route_goes_to_the_interceptor_in_its_namespace(dev_endpoints):
    embed = named(dev_endpoints, "endpoints-embed-small").inputs
    assert embed["metadata"]["namespace"] == keda_http.NAMESPACE  # an Ingress names Services of its namespace
    backend = embed["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": keda_http.PROXY_SERVICE, "port": {"number": keda_http.PROXY_PORT}}
    notes = embed["metadata"]["annotations"]
    assert (notes[f"{ALB}healthcheck-path"], notes[f"{ALB}healthcheck-port"]) == ("/readyz", "9090")
    interceptor = mapping.keda_http_add_on_args(settings_of("dev"), depends_on=[])
    delay = interceptor.shutdown_delay_seconds + interceptor.drain_timeout_seconds
    assert notes[f"{ALB}target-group-attributes"] == f"deregistration_delay.timeout_seconds={delay}"


def test_the_interceptor_drains_through_a_wake_up_and_waits_for_deregistration_behind_the_load_balancer():
    settings = settings_of("dev")
    args = mapping.keda_http_add_on_args(settings, depends_on=[])
    cold_start = settings.inference["embed-small"].scaling.cold_start_timeout_seconds
    assert args.drain_timeout_seconds == cold_start + 30
    assert args.shutdown_delay_seconds == endpoints.LOAD_BALANCER_PRE_STOP_SECONDS
    values = keda_http.helm_values(args)["interceptor"]
    assert (values["shutdownDelay"], values["drainTimeout"]) == ("15s", f"{cold_start + 30}s")
    assert values["terminationGracePeriodSeconds"] == 15 + cold_start + 30 + 10
    cfg = stack_config("dev")
    for svc in cfg[INF].values():
        svc.pop("expose", None)
    cfg.pop(ING)
    assert mapping.keda_http_add_on_args(settings_of(cfg), depends_on=[]).shutdown_delay_seconds == 5


def test_auth_oidc_puts_the_client_secret_in_a_secret_in_each_routed_namespace():
    cfg = stack_config("dev")
    cfg[ING]["auth"] = {"oidc": OIDC, "onUnauthenticatedRequest": "deny"}
    cfg["gpu-inference:ingressOidcClientSecret"] = "s3cr3t"
    resources = _endpoints(cfg)
    secrets = of_type(resources, "kubernetes:core/v1:Secret")
    assert sorted(s.inputs["metadata"]["namespace"] for s in secrets) == ["inference", "keda"]
    for secret in secrets:
        assert secret.inputs["metadata"]["name"] == endpoints.OIDC_SECRET
        # The plan shows a Secret's keys, never its values (the client secret is a Pulumi secret).
        assert secret.inputs["stringData"] == {"clientID": SECRET, "clientSecret": SECRET}
    for ingress in of_type(resources, "kubernetes:networking.k8s.io/v1:Ingress"):
        notes = ingress.inputs["metadata"]["annotations"]
        assert notes[f"{ALB}auth-type"] == "oidc"
        idp = json.loads(notes[f"{ALB}auth-idp-oidc"])
        assert idp == {
            "issuer": OIDC["issuer"],
            "authorizationEndpoint": OIDC["authorizationEndpoint"],
            "tokenEndpoint": OIDC["tokenEndpoint"],
            "userInfoEndpoint": OIDC["userInfoEndpoint"],
            "secretName": endpoints.OIDC_SECRET,
        }
        assert notes[f"{ALB}auth-on-unauthenticated-request"] == "deny"
        # The Ingress waits for its namespace's secret: the controller reads it when it builds the rule.
        assert any(s.urn in ingress.dependencies for s in secrets), ingress.name


def test_longer_paths_come_first_on_a_shared_host():
    assert endpoints.rule_order("/v2/models") < endpoints.rule_order("/v2") < endpoints.rule_order("/")


def test_exposing_changes_the_services_own_pods():
    plan = plan_of(stack_config("dev"))
    deployments = plan.objects("Deployment")
    llm = deployments["llm"]["spec"]["template"]["spec"]
    qwen = deployments["qwen"]["spec"]["template"]["spec"]  # not exposed
    assert llm["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] == endpoints.LOAD_BALANCER_PRE_STOP_SECONDS
    assert qwen["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] == inference.PRE_STOP_SECONDS
    hosts = plan.objects("HTTPScaledObject")["embed-small"]["spec"]["hosts"]
    assert "embed.dev.gpuinf.example.com" in hosts  # the interceptor answers for the public host too
    namespaces = plan.objects("Namespace")
    assert namespaces["inference"]["metadata"]["labels"][contract.ALB_READINESS_GATE_LABEL] == "enabled"
    assert contract.ALB_READINESS_GATE_LABEL not in namespaces["keda"]["metadata"]["labels"]


def test_a_directly_exposed_vllm_keeps_connections_longer_than_the_load_balancer():
    cfg = stack_config("dev")
    cfg[INF]["qwen"]["scaling"]["minReplicas"] = 1
    cfg[INF]["qwen"]["expose"] = {"host": "qwen.dev.gpuinf.example.com"}
    cfg[INF]["llm"]["scaling"]["maxReplicas"] = 1  # the gpu pool's 4 GPUs: llm 1 + qwen 2 + warm
    plan = plan_of(cfg)
    server = plan.objects("Deployment")["qwen"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in server["env"]}
    idle = plan.settings.load_balancer_idle_timeout
    assert int(env["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"]) > idle
    # Not exposed directly (in-cluster only): uvicorn's default stays.
    embed = plan.objects("Deployment")["embed-small"]["spec"]["template"]["spec"]["containers"][0]
    assert "VLLM_HTTP_TIMEOUT_KEEP_ALIVE" not in {e["name"] for e in embed["env"]}
