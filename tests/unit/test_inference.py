"""InferenceService and LoadGenerator built alone: names, parenting, and every derived value."""

from __future__ import annotations

import dataclasses
import math

import pytest

from domain import contract
from domain.settings import ConfigError
from infra import mapping
from infra.workloads import endpoints, inference
from infra.workloads.inference import InferenceService
from infra.workloads.load_generator import LoadGenerator
from tests.conftest import plan_of, stack_config
from tests.policy_rules.helpers import resource_violations
from tests.unit.helpers import assert_parented, build, named, settings_of

URL = "http://prometheus.example:9090"
INF = "gpu-inference:inference"


@pytest.fixture(scope="module")
def dev():
    return settings_of("dev")


@pytest.fixture(scope="module")
def llm(dev):
    args = mapping.inference_service_args(dev, "llm", prometheus_url=URL)
    return build(lambda: InferenceService("llm", args))


def test_children_are_named_and_parented(llm):
    assert_parented(llm, "gpuinf:inference:InferenceService")
    for suffix in ("sa", "deployment", "service", "pdb", "servicemonitor", "scaledobject"):
        named(llm, f"llm-{suffix}")


def test_pod_lands_on_its_pool_with_contract_terms_and_gpu_requests(llm, dev):
    spec = named(llm, "llm-deployment").inputs["spec"]
    pod = spec["template"]["spec"]
    terms = contract.PoolContract("gpu", "dedicated")
    assert pod["nodeSelector"] == terms.node_selector() and pod["tolerations"] == terms.tolerations()
    (server,) = pod["containers"]
    assert server["resources"]["requests"][contract.GPU_RESOURCE] == "1"
    assert server["resources"]["limits"][contract.GPU_RESOURCE] == "1"
    assert server["resources"]["requests"]["memory"] == f"{dev.inference['llm'].memory_gib}Gi"
    # Created at minReplicas: without `replicas` the API defaults to 1, and the first `up`
    # of a scale-to-zero service would buy a GPU node for nothing.
    assert spec["replicas"] == dev.inference["llm"].scaling.min_replicas


def test_probes_and_drain_derive_from_model_load_and_drain_time(llm, dev):
    svc = dev.inference["llm"]  # modelLoadSeconds 90, drainSeconds 30 (default)
    pod = named(llm, "llm-deployment").inputs["spec"]["template"]["spec"]
    server = pod["containers"][0]
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= svc.model_load_seconds * 1.5
    assert startup["failureThreshold"] == math.ceil((90 * 1.5 + 60) / 5)
    # dev exposes llm on the load balancer: its preStop waits out the target's deregistration
    # (tests/unit/test_endpoints.py has the in-cluster-only case).
    pre_stop = endpoints.LOAD_BALANCER_PRE_STOP_SECONDS
    assert svc.expose is not None
    assert server["lifecycle"]["preStop"] == {"sleep": {"seconds": pre_stop}}
    assert pod["terminationGracePeriodSeconds"] == pre_stop + svc.drain_seconds + 10
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env["DRAIN_TIMEOUT_S"] == str(svc.drain_seconds) and env["MAX_QUEUE"] == str(svc.max_queue)


def test_scaled_object_triggers_on_in_flight_with_config_values(llm, dev):
    scaling = dev.inference["llm"].scaling
    spec = named(llm, "llm-scaledobject").inputs["spec"]
    assert spec["scaleTargetRef"]["name"] == "llm"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (scaling.min_replicas, scaling.max_replicas)
    assert spec["pollingInterval"] == scaling.polling_interval_seconds
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == 'sum(inference_requests_in_flight{namespace="inference",service="llm"})'
    assert trigger["metadata"]["threshold"] == "8" and trigger["metadata"]["serverAddress"] == URL
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == scaling.scale_down.stabilization_seconds


def test_service_monitor_scrapes_the_service_port_every_few_seconds(llm, dev):
    monitor = named(llm, "llm-servicemonitor").inputs["spec"]
    service = named(llm, "llm-service").inputs["spec"]
    assert monitor["selector"]["matchLabels"].items() <= named(llm, "llm-service").inputs["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] == service["ports"][0]["name"] == "http"
    assert monitor["endpoints"][0]["interval"] == f"{dev.inference['llm'].scaling.scrape_interval_seconds}s"


def test_pdb_never_blocks_a_drain(llm):
    assert named(llm, "llm-pdb").inputs["spec"]["maxUnavailable"] == 1


def test_scale_to_zero_wakes_through_the_http_add_on():
    config = stack_config("dev")
    config[INF]["llm"]["scaling"]["minReplicas"] = 0
    plan = plan_of(config)
    scaled = plan.objects("ScaledObject")["llm"]
    assert scaled["spec"]["minReplicaCount"] == 0
    wake = scaled["spec"]["triggers"][1]
    assert wake == {
        "type": "external-push",
        "name": "wake-up",
        "metadata": {"scalerAddress": "keda-add-ons-http-external-scaler.keda:9090", "httpScaledObject": "llm"},
    }
    route = plan.objects("HTTPScaledObject")["llm"]
    assert route["metadata"]["annotations"] == {"httpscaledobject.keda.sh/skip-scaledobject-creation": "true"}
    assert route["spec"]["hosts"][0] == "llm.inference"
    assert route["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "llm", "service": "llm", "port": 80,
    }  # fmt: skip
    assert route["spec"]["timeouts"] == {"conditionWait": "600s"}
    assert route["spec"]["scalingMetric"] == {"concurrency": {"targetValue": 8}}
    assert "keda-add-ons-http" in plan.releases
    assert resource_violations("keda-scale-from-zero-signal", "kubernetes:keda.sh/v1alpha1:ScaledObject", scaled) == []
    # Without the interceptor's trigger, the policy sees a service that cannot wake.
    scaled["spec"]["triggers"] = scaled["spec"]["triggers"][:1]
    found = resource_violations("keda-scale-from-zero-signal", "kubernetes:keda.sh/v1alpha1:ScaledObject", scaled)
    assert len(found) == 1 and "never scale up again" in found[0]


def test_a_wake_up_query_replaces_the_http_add_on():
    config = stack_config("prod")
    config[INF]["llm"]["scaling"].update(minReplicas=0, wakeUpQuery='sum(gateway_pending_requests{service="llm"})')
    plan = plan_of(config)
    scaled = plan.objects("ScaledObject")["llm"]
    assert [(t["name"], t["type"]) for t in scaled["spec"]["triggers"]] == [
        ("in-flight", "prometheus"),
        ("wake-up", "prometheus"),
    ]
    assert "llm" not in plan.objects("HTTPScaledObject") and "keda-add-ons-http" not in plan.releases
    assert resource_violations("keda-scale-from-zero-signal", "kubernetes:keda.sh/v1alpha1:ScaledObject", scaled) == []


def test_services_that_keep_a_replica_need_no_http_add_on():
    assert not settings_of("prod").needs_http_add_on and settings_of("dev").needs_http_add_on


def test_shared_pool_service_asks_for_one_slice_with_shared_tolerations(dev):
    args = mapping.inference_service_args(dev, "embed-small", prometheus_url=URL)
    pod = inference.pod_spec("embed-small", args.service, args.pool)
    assert pod["tolerations"] == contract.PoolContract("gpu-shared", "shared").tolerations()
    assert pod["containers"][0]["resources"]["requests"][contract.GPU_RESOURCE] == "1"


def test_do_not_disrupt_annotation_is_opt_in(dev):
    args = mapping.inference_service_args(dev, "llm", prometheus_url=URL)
    assert "annotations" not in inference.deployment("llm", args.service, args.pool)["spec"]["template"]["metadata"]
    pinned = dataclasses.replace(args.service, do_not_disrupt=True)
    meta = inference.deployment("llm", pinned, args.pool)["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}


def test_load_generator_targets_its_service_on_a_cpu_pool_at_zero_replicas(dev):
    args_of = mapping.load_generator_args(dev)
    assert args_of is not None and not args_of.target_wakes_through_interceptor  # dev's target keeps a replica
    resources = build(lambda: LoadGenerator("lg", args_of))
    assert_parented(resources, "gpuinf:loadgen:LoadGenerator")
    spec = named(resources, "lg-deployment").inputs["spec"]
    assert spec["replicas"] == 0
    pod = spec["template"]["spec"]
    assert pod["nodeSelector"] == {contract.NODEPOOL_LABEL: "cpu"}
    args = pod["containers"][0]["args"]
    assert args[args.index("--url") + 1] == "http://llm.inference.svc.cluster.local:80/v1/predict"
    assert args[args.index("--rps") + 1] == "50"
    assert "--host-header" not in args


def test_load_generator_wakes_a_scale_to_zero_target_through_the_interceptor(dev):
    scale_to_zero = dev.inference["llm"].model_copy(
        update={"scaling": dev.inference["llm"].scaling.model_copy(update={"min_replicas": 0})}
    )
    args_of = mapping.load_generator_args(dev.model_copy(update={"inference": {**dev.inference, "llm": scale_to_zero}}))
    assert args_of is not None and args_of.target_wakes_through_interceptor
    resources = build(lambda: LoadGenerator("lg", args_of))
    args = named(resources, "lg-deployment").inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == [
        "--url",
        "http://keda-add-ons-http-interceptor-proxy.keda.svc.cluster.local:8080/v1/predict",
        "--host-header",
        "llm.inference",
    ]


def _error(mutate) -> list[str]:
    config = stack_config("dev")
    mutate(config)
    with pytest.raises(ConfigError) as err:
        settings_of(config)
    return err.value.lines


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c[INF]["llm"].__setitem__("pool", "cpu"), 'gpu-inference:inference.llm.pool must name a GPU pool of nodePools: one of gpu, gpu-shared (got "cpu")'),
        (lambda c: c[INF]["llm"].__setitem__("pool", "nope"), 'gpu-inference:inference.llm.pool must name a GPU pool of nodePools: one of gpu, gpu-shared (got "nope")'),
        (lambda c: c[INF]["embed-small"].__setitem__("gpus", 2), "gpu-inference:inference.embed-small.gpus must be 1 on shared pool gpu-shared"),
        (lambda c: c[INF]["llm"]["scaling"].__setitem__("minReplicas", 9), "gpu-inference:inference.llm.scaling.minReplicas must be <= maxReplicas (2) (got 9)"),
        (lambda c: c[INF]["llm"]["scaling"].__setitem__("wakeUpQuery", "up"), 'gpu-inference:inference.llm.scaling.wakeUpQuery is only used with minReplicas: 0 (got "up")'),
        (lambda c: c[INF]["llm"].__setitem__("image", "repo/server:latest"), "gpu-inference:inference.llm.image must be an image pinned by a tag other than latest"),
        (lambda c: c[INF]["llm"].__setitem__("replicas", 2), "gpu-inference:inference.llm.replicas is not a known key (allowed: server, image, pool, gpus,"),
        (lambda c: c[INF].__setitem__("LLM", c[INF]["llm"]), "gpu-inference:inference.LLM is not a valid name"),
        (lambda c: c[INF].__setitem__("loadgen", c[INF]["llm"]), "gpu-inference:inference.loadgen is the load generator's Deployment name in the same namespace"),
        (lambda c: c["gpu-inference:loadGenerator"].__setitem__("target", "nope"), 'gpu-inference:loadGenerator.target must name a service of inference: one of embed-small, llm, qwen (got "nope")'),
        (lambda c: c["gpu-inference:batchJobs"]["offline-scoring"].__setitem__("pool", "cpu"), 'gpu-inference:batchJobs.offline-scoring.pool must name a GPU pool of nodePools'),
        (lambda c: c["gpu-inference:monitoring"]["prometheus"].__setitem__("retention", "two weeks"), "gpu-inference:monitoring.prometheus.retention"),
    ],
)  # fmt: skip
def test_bad_workload_config_names_its_key(mutate, message):
    lines = _error(mutate)
    assert any(line.startswith(message) for line in lines), lines
