"""Model server presets (domain/servers.py) rendered through the whole program: per server, the
Deployment (command, args, ports, probes, env, secret refs, init container), the ServiceMonitor
(port, path), the ScaledObject (query with the service filled in) and the model-read IAM policy."""

from __future__ import annotations

import json
import math

import pytest

from domain import servers, versions
from domain.metric_names import IN_FLIGHT
from infra.workloads import inference
from tests.conftest import plan_of, stack_config
from tests.policy_rules.helpers import resource_violations

INF = "gpu-inference:inference"
TOKEN_KEY = "hfToken"
MIRROR = "123456789012.dkr.ecr.us-west-2.amazonaws.com/mirror/aws-cli:2.27.9@sha256:" + "ab" * 32
SERVICES = {
    "chat": {
        "server": "vllm",
        "pool": "gpu",
        "memoryGib": 24,
        "modelLoadSeconds": 120,
        "model": {"uri": "s3://acme-models/models/qwen2.5-0.5b-instruct/", "downloadSeconds": 200, "cacheGib": 20},
        "args": ["--max-model-len", "4096"],
        "env": {"VLLM_LOGGING_LEVEL": "INFO"},
    },
    "chat-hf": {
        "server": "vllm",
        "pool": "gpu",
        "model": {"uri": "hf://Qwen/Qwen2.5-0.5B-Instruct@a8b602d", "name": "qwen-small", "downloadSeconds": 240},
        "envSecrets": {"HF_TOKEN": TOKEN_KEY},
    },
    "resnet": {
        "server": "triton",
        "pool": "gpu",
        "model": {"uri": "s3://acme-models/triton/resnet50/", "fetchImage": MIRROR},
    },
    "tgi": {
        "server": "custom",
        "pool": "gpu",
        "image": "ghcr.io/huggingface/text-generation-inference:3.3.4",
        "port": 8080,
        "healthPath": "/health",
        "args": ["--model-id", "/models/phi/"],
        "model": {"uri": "s3://acme-models/models/phi/"},
        "scaling": {
            "query": 'sum(tgi_queue_size{{namespace="{namespace}",service="{service}"}})',
            "target": 3,
        },
    },
}


@pytest.fixture(scope="module")
def plan():
    config = stack_config("dev")
    config[INF].update(SERVICES)
    config[f"gpu-inference:{TOKEN_KEY}"] = "hf_not_a_real_token"
    return plan_of(config, stack="dev")


def server_container(plan, name: str) -> dict:
    (container,) = plan.objects("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    return container


def pod(plan, name: str) -> dict:
    return plan.objects("Deployment")[name]["spec"]["template"]["spec"]


def trigger_query(plan, name: str) -> tuple[str, str]:
    (trigger,) = [t for t in plan.objects("ScaledObject")[name]["spec"]["triggers"] if t["name"] == "in-flight"]
    return trigger["metadata"]["query"], trigger["metadata"]["threshold"]


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_vllm_from_s3_loads_the_synced_prefix_with_its_own_args(plan) -> None:
    c = server_container(plan, "chat")
    assert c["image"] == versions.MODEL_SERVER_IMAGES["vllm"] == "vllm/vllm-openai:v0.11.0"
    assert c["command"] == ["vllm", "serve"]
    assert c["args"] == [
        "/models/qwen2.5-0.5b-instruct", "--served-model-name", "qwen2.5-0.5b-instruct",
        "--host", "0.0.0.0", "--port", "8000", "--max-model-len", "4096",
    ]  # fmt: skip
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == c["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # The init container downloads before the server starts: its time is not in the startup window.
    assert c["startupProbe"]["failureThreshold"] == math.ceil((120 * 1.5 + 60) / 5)
    env = env_of(c)
    assert env["MODEL_DIR"] == "/models/qwen2.5-0.5b-instruct" and env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_LOGGING_LEVEL"] == "INFO" and "MAX_BATCH_SIZE" not in env  # reference settings only
    assert c["resources"]["requests"]["ephemeral-storage"] == "20Gi"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"tmp": "/tmp", "model-cache": "/models", "dshm": "/dev/shm"}


def test_s3_model_is_synced_by_a_bounded_init_container_into_a_per_pod_cache(plan) -> None:
    spec = pod(plan, "chat")
    (fetch,) = spec["initContainers"]
    assert fetch["image"] == versions.MODEL_SERVER_IMAGES["model-fetch"]
    assert fetch["command"] == ["timeout", "200s", "aws", "s3", "sync"]
    assert fetch["args"] == [
        "s3://acme-models/models/qwen2.5-0.5b-instruct/", "/models/qwen2.5-0.5b-instruct/",
        "--only-show-errors", "--no-progress",
    ]  # fmt: skip
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {"sizeLimit": "20Gi"}}
    assert not any("hostPath" in v for v in spec["volumes"])
    assert spec["serviceAccountName"] == "chat"


def test_vllm_from_the_hub_downloads_itself_with_a_secret_token_inside_a_longer_startup_budget(plan) -> None:
    spec = pod(plan, "chat-hf")
    assert "initContainers" not in spec
    c = server_container(plan, "chat-hf")
    assert c["args"][:8] == [
        "Qwen/Qwen2.5-0.5B-Instruct", "--served-model-name", "qwen-small", "--host", "0.0.0.0", "--port", "8000",
        "--revision",
    ] and c["args"][8] == "a8b602d"  # fmt: skip
    assert c["startupProbe"]["failureThreshold"] == math.ceil((60 * 1.5 + 240 + 60) / 5)
    env = env_of(c)
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "chat-hf-env", "key": "HF_TOKEN"}}
    assert env["HF_HOME"] == "/models/.cache/huggingface" and "HF_HUB_OFFLINE" not in env
    assert "hf_not_a_real_token" not in json.dumps(plan.objects("Deployment")["chat-hf"])
    secret = plan.one("kubernetes:core/v1:Secret", "chat-hf-env-secret")
    assert secret.inputs["metadata"]["name"] == "chat-hf-env"
    assert secret.inputs["stringData"] == {"HF_TOKEN": "[secret]"}  # recorded as a Pulumi secret
    assert "hf_not_a_real_token" not in json.dumps(secret.inputs)
    # No S3 model: no model role.
    assert not [r for r in plan.of_type("aws:iam/role:Role") if r.name == "chat-hf-model-role"]


def test_triton_serves_a_synced_model_repository_and_is_scraped_on_its_metrics_port(plan) -> None:
    c = server_container(plan, "resnet")
    assert c["image"] == "nvcr.io/nvidia/tritonserver:25.09-py3"
    assert c["command"] == ["tritonserver"]
    assert c["args"] == [
        "--model-repository=/models/resnet50",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
    ]
    assert c["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 8002, "protocol": "TCP"},
    ]
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    (endpoint,) = plan.objects("ServiceMonitor")["resnet"]["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    (fetch,) = pod(plan, "resnet")["initContainers"]
    assert fetch["image"] == MIRROR  # model.fetchImage: a digest-pinned mirror (prod's image-digest-pinned)
    assert fetch["args"][:2] == ["s3://acme-models/triton/resnet50/", "/models/resnet50/"]
    service_ports = plan.objects("Service")["resnet"]["spec"]["ports"]
    assert {"name": "metrics", "port": 8002, "targetPort": "metrics", "protocol": "TCP"} in service_ports
    ingress = plan.objects("NetworkPolicy")["resnet"]["spec"]["ingress"]
    assert [r["ports"] for r in ingress] == [
        [{"port": "http", "protocol": "TCP"}],
        [{"port": "metrics", "protocol": "TCP"}],
    ]
    assert ingress[1]["from"] == ingress[0]["from"][:1]  # metrics: Prometheus only


def test_each_preset_scales_on_its_own_in_flight_query_filtered_to_the_service(plan) -> None:
    sel = 'namespace="inference",service="{}"'
    assert trigger_query(plan, "llm") == (f"sum({IN_FLIGHT}{{{sel.format('llm')}}})", "8")
    assert trigger_query(plan, "chat") == (
        f"sum(vllm:num_requests_running{{{sel.format('chat')}}}) + sum(vllm:num_requests_waiting{{{sel.format('chat')}}})",
        "8",
    )
    assert trigger_query(plan, "resnet") == (
        f"sum(nv_inference_pending_request_count{{{sel.format('resnet')}}})"
        f" + sum(rate(nv_inference_compute_infer_duration_us{{{sel.format('resnet')}}}[30s])) / 1e6",
        "8",
    )
    # A query of the stack's own replaces the preset's, and `target` replaces targetInFlight.
    assert trigger_query(plan, "tgi") == (f"sum(tgi_queue_size{{{sel.format('tgi')}}})", "3")


def test_custom_server_keeps_its_image_entrypoint_and_uses_its_own_paths(plan) -> None:
    c = server_container(plan, "tgi")
    assert "command" not in c and c["args"] == ["--model-id", "/models/phi/"]
    assert c["image"] == "ghcr.io/huggingface/text-generation-inference:3.3.4"
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"]["path"] == c["readinessProbe"]["httpGet"]["path"] == "/health"
    (endpoint,) = plan.objects("ServiceMonitor")["tgi"]["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")


def test_model_role_may_read_exactly_its_prefix(plan) -> None:
    policy = json.loads(plan.one("aws:iam/rolePolicy:RolePolicy", "chat-model-read").inputs["policy"])
    assert policy == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadModel",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": "arn:aws:s3:::acme-models/models/qwen2.5-0.5b-instruct/*",
            },
            {
                "Sid": "ListModelPrefix",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": "arn:aws:s3:::acme-models",
                "Condition": {"StringLike": {"s3:prefix": ["models/qwen2.5-0.5b-instruct/*"]}},
            },
        ],
    }
    role = plan.one("aws:iam/role:Role", "chat-model-role")
    assert role.inputs["name"] == "gpuinf-dev-chat-model"
    assert json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {
        "Service": "pods.eks.amazonaws.com"
    }
    association = plan.one("aws:eks/podIdentityAssociation:PodIdentityAssociation", "chat-model-pod-identity")
    assert (association.inputs["namespace"], association.inputs["serviceAccount"]) == ("inference", "chat")
    # The policy rule passes what the program renders (and tests/policy_rules fails every widening).
    read = plan.one("aws:iam/rolePolicy:RolePolicy", "chat-model-read")
    assert resource_violations("model-read-only", read.type, read.inputs, name=read.name) == []
    triton = json.loads(plan.one("aws:iam/rolePolicy:RolePolicy", "resnet-model-read").inputs["policy"])
    assert triton["Statement"][0]["Resource"] == "arn:aws:s3:::acme-models/triton/resnet50/*"


def test_reference_service_without_server_key_renders_as_before(plan) -> None:
    c = server_container(plan, "llm")
    assert "command" not in c and "args" not in c and "initContainers" not in pod(plan, "llm")
    assert [e["name"] for e in c["env"]] == ["PORT", "MAX_BATCH_SIZE", "MAX_WAIT_MS", "MAX_QUEUE", "DRAIN_TIMEOUT_S"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert (c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"]) == ("/healthz", "/readyz")
    assert [v["name"] for v in pod(plan, "llm")["volumes"]] == ["tmp"]
    assert plan.objects("Service")["llm"]["spec"]["ports"] == [
        {"name": "http", "port": inference.SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
    ]
    assert not [r for r in plan.of_type("aws:iam/role:Role") if r.name == "llm-model-role"]


def test_every_preset_has_what_rendering_needs() -> None:
    assert set(servers.PRESETS) == set(servers.SERVERS)
    for name, preset in servers.PRESETS.items():
        if name != "custom":
            assert preset.scale_query and "{service}" in preset.scale_query and preset.health_path
