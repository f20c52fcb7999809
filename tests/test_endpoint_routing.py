"""Every exposed host reaches a Service port that exists, and the load balancer checks what the pods
behind it call ready.

Checked on the whole plan of each stack, and of a stack copy with an internet-facing, OIDC-protected
load balancer, against the objects the plan creates *and* those the real charts render (the
interceptor's Service and Deployment come from the KEDA HTTP add-on chart, rendered by helm):
- the Ingress's backend Service is in the Ingress's own namespace (an Ingress cannot name another
  namespace's Service) and has the port number it names;
- the target group's health check is the readiness probe of the pods that Service selects: the same
  path, on the traffic port when the probe is on the Service's target port, else on the probe's port;
- a host routed through the interceptor is one its HTTPScaledObject answers for;
- the OIDC client secret's value appears nowhere in the plan's files.
"""

from __future__ import annotations

import pytest

from domain import contract
from tests.conftest import STACKS, Plan, plan_of, run_plan, stack_config
from tests.support.endpoints import OIDC
from tests.support.rendered import helm_or_skip
from tools.plan import render

ALB = contract.ALB_ANNOTATION_PREFIX


def internet_facing_oidc() -> dict:
    cfg = stack_config("dev")
    cfg["gpu-inference:ingress"].update(scheme="internet-facing", allowedCidrs=["198.51.100.0/24"], auth={"oidc": OIDC})
    cfg["gpu-inference:ingressOidcClientSecret"] = "oidc-client-secret-value"
    return cfg


VARIANTS = {**{s: (lambda s=s: stack_config(s)) for s in STACKS}, "internet-facing-oidc": internet_facing_oidc}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def world(request) -> tuple[Plan, list[dict]]:
    """The plan and every Kubernetes object it would create: its own and the charts' rendered ones."""
    plan = plan_of(VARIANTS[request.param]())
    rendered = render.render(plan.resources, plan.settings.cluster.version, helm_or_skip())
    charts = [obj for release in rendered.releases.values() for obj in release.objects]
    return plan, [*plan.manifests, *charts]


def find(objects: list[dict], kind: str, namespace: str, name: str) -> dict:
    found = [
        o
        for o in objects
        if o.get("kind") == kind
        and o["metadata"]["name"] == name
        and o["metadata"].get("namespace", namespace) == namespace
    ]
    assert len(found) == 1, f"expected one {kind} {namespace}/{name}, found {len(found)}"
    return found[0]


def selected_pods(objects: list[dict], namespace: str, selector: dict) -> list[dict]:
    """Pod templates of the Deployments in `namespace` whose pod labels the Service selector matches."""
    return [
        o["spec"]["template"]
        for o in objects
        if o.get("kind") == "Deployment"
        and o["metadata"].get("namespace") == namespace
        and all(o["spec"]["template"]["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
    ]


def container_port(pod: dict, port: int | str) -> int:
    """A named or numbered port of the pod's containers, as a number."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    (number,) = [
        p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", []) if p.get("name") == port
    ]
    return number


def test_every_host_reaches_a_service_port_that_exists_and_checks_the_readiness_path(world):
    plan, objects = world
    ingresses = [o for o in plan.manifests if o["kind"] == "Ingress"]
    assert sorted(i["metadata"]["name"] for i in ingresses) == sorted(plan.settings.exposed)
    for ingress in ingresses:
        ns, notes = ingress["metadata"]["namespace"], ingress["metadata"]["annotations"]
        assert ingress["spec"]["ingressClassName"] == contract.INGRESS_CLASS
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = find(objects, "Service", ns, backend["name"])
                (port,) = [p for p in service["spec"]["ports"] if p["port"] == backend["port"]["number"]]
                pods = selected_pods(objects, ns, service["spec"]["selector"])
                assert pods, f"{rule['host']}: Service {ns}/{backend['name']} selects no Deployment's pods"
                for pod in pods:
                    target = container_port(pod, port["targetPort"])
                    (probe,) = [
                        c["readinessProbe"]["httpGet"] for c in pod["spec"]["containers"] if c.get("readinessProbe")
                    ]
                    assert notes[f"{ALB}healthcheck-path"] == probe["path"], rule["host"]
                    probe_port = container_port(pod, probe["port"])
                    expected = "traffic-port" if probe_port == target else str(probe_port)
                    assert notes[f"{ALB}healthcheck-port"] == expected, rule["host"]


def test_a_host_through_the_interceptor_is_one_its_http_scaled_object_answers_for(world):
    plan, _ = world
    routed = plan.objects("HTTPScaledObject")
    for name, svc in plan.settings.exposed.items():
        if svc.scaling.wakes_through_interceptor:
            assert svc.expose is not None and svc.expose.host in routed[name]["spec"]["hosts"], name


def test_the_class_params_carry_the_certificate_cidrs_and_the_https_redirect(world):
    plan, _ = world
    ingress = plan.settings.ingress
    assert ingress is not None
    (params,) = plan.objects("IngressClassParams").values()
    spec = params["spec"]
    assert spec["certificateArn"] == [ingress.certificate_arn]
    assert spec["inboundCIDRs"] == list(ingress.allowed_cidrs or (plan.settings.network.cidr,))
    assert spec["scheme"] == ingress.scheme and spec["sslRedirectPort"] == "443"


def test_the_oidc_client_secret_never_reaches_the_plan_files(tmp_path):
    import yaml

    cfg = internet_facing_oidc()
    config_file = tmp_path / "Pulumi.oidc.yaml"
    config_file.write_text(yaml.safe_dump({"config": cfg}))
    out = tmp_path / "plan"
    proc = run_plan("--stack", "oidc", "--config", str(config_file), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    leaked = [p for p in out.rglob("*") if p.is_file() and "oidc-client-secret-value" in p.read_text(errors="replace")]
    assert not leaked, f"the client secret is written to {leaked}"
    assert "oidc-client-secret-value" not in proc.stdout + proc.stderr
    assert any(out.glob("manifests/secret_keda_gpu-inference-oidc.yaml"))
