"""Model servers an InferenceService can run: one preset per server, as data.

A preset owns what differs between servers: the default image (pinned in
`domain.versions`), the container port, how the command line loads a model, the
probe paths, where metrics are scraped, and the in-flight scale query. The
settings read it to validate and fill defaults; the component reads it to render.

Scale queries are PromQL with `{namespace}` and `{service}` placeholders, filled
with the labels the ServiceMonitor puts on every series of the service's pods.
Upstream metric names (checked at the pinned versions):
- vLLM (`vllm/v1/metrics/loggers.py`): gauges `vllm:num_requests_running` and
  `vllm:num_requests_waiting`, labels `model_name` and `engine` (one series per
  engine under data parallelism, so the query sums).
- Triton (`docs/user_guide/metrics.md`, Inference Request Metrics): the gauge
  `nv_inference_pending_request_count` (requests enqueued and not yet picked up
  by a backend, labels `model`, `version`). Triton has no gauge of requests
  executing; `nv_inference_compute_infer_duration_us` is a counter of compute
  microseconds summed over requests, so its per-second rate / 1e6 is the mean
  number of requests executing (Little's law). Pending + that rate is in flight.
- ours (`workloads/server/metric_names.py`): `inference_requests_in_flight`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain import versions
from domain.metric_names import IN_FLIGHT

SERVERS = ("reference", "vllm", "triton", "custom")
MODEL_SCHEMES = ("s3://", "hf://")
# Where the init container puts the weights (an emptyDir per pod, see infra/workloads/inference.py).
MODEL_ROOT = "/models"
# Logical-name suffix of a service's model-read RolePolicy: the policy rule model-read-only finds them by it.
MODEL_POLICY_SUFFIX = "-model-read"
# Window of Triton's compute-time rate: long enough for two scrapes at the 5 s default.
TRITON_RATE_WINDOW = "30s"


@dataclass(frozen=True)
class ServerPreset:
    name: str
    image: str | None  # None: the stack must name one
    port: int | None  # None: the stack must set `port`
    health_path: str | None  # liveness
    ready_path: str | None  # readiness and startup
    metrics_port: int | None  # None: the server's own port
    metrics_path: str
    scale_query: str | None  # None: the stack must set `scaling.query`
    model_required: bool
    model_schemes: tuple[str, ...]  # model URI schemes the server can load
    # Environment variable of the server's idle keep-alive in seconds, if it has one: behind a load
    # balancer it must outlast the load balancer's idle timeout (infra/workloads/inference.py).
    keep_alive_env: str | None = None


PRESETS: dict[str, ServerPreset] = {
    "reference": ServerPreset(
        name="reference",
        image=None,
        port=8080,
        health_path="/healthz",
        ready_path="/readyz",
        metrics_port=None,
        metrics_path="/metrics",
        scale_query=f'sum({IN_FLIGHT}{{{{namespace="{{namespace}}",service="{{service}}"}}}})',
        model_required=False,
        model_schemes=("s3://",),
    ),
    "vllm": ServerPreset(
        name="vllm",
        image=versions.MODEL_SERVER_IMAGES["vllm"],
        port=8000,
        # vLLM's OpenAI server answers /health 200 once the engine is up (vllm/entrypoints/openai/api_server.py).
        health_path="/health",
        ready_path="/health",
        metrics_port=None,
        metrics_path="/metrics",
        scale_query=(
            'sum(vllm:num_requests_running{{namespace="{namespace}",service="{service}"}})'
            ' + sum(vllm:num_requests_waiting{{namespace="{namespace}",service="{service}"}})'
        ),
        model_required=True,
        model_schemes=("s3://", "hf://"),
        # uvicorn's timeout_keep_alive in vllm/entrypoints/openai/api_server.py (vllm/envs.py, default 5 s).
        keep_alive_env="VLLM_HTTP_TIMEOUT_KEEP_ALIVE",
    ),
    "triton": ServerPreset(
        name="triton",
        image=versions.MODEL_SERVER_IMAGES["triton"],
        port=8000,
        # KServe v2 health endpoints (docs/protocol/README.md; Triton serves them on --http-port).
        health_path="/v2/health/live",
        ready_path="/v2/health/ready",
        metrics_port=8002,  # Triton's default --metrics-port
        metrics_path="/metrics",
        scale_query=(
            'sum(nv_inference_pending_request_count{{namespace="{namespace}",service="{service}"}})'
            " + sum(rate(nv_inference_compute_infer_duration_us"
            '{{namespace="{namespace}",service="{service}"}}[' + TRITON_RATE_WINDOW + "])) / 1e6"
        ),
        model_required=True,
        model_schemes=("s3://",),  # a Triton model repository, synced from S3
    ),
    "custom": ServerPreset(
        name="custom",
        image=None,
        port=None,
        health_path=None,
        ready_path=None,
        metrics_port=None,
        metrics_path="/metrics",
        scale_query=None,
        model_required=False,
        model_schemes=MODEL_SCHEMES,
    ),
}


def fill_query(query: str, *, namespace: str, service: str) -> str:
    """A scale query with its placeholders filled (`{{`/`}}` are literal braces)."""
    return query.format(namespace=namespace, service=service)


@dataclass(frozen=True)
class ModelLocation:
    """A parsed model URI: `s3://bucket/prefix/` or `hf://org/name[@revision]`."""

    scheme: str  # "s3" or "hf"
    bucket: str = ""
    prefix: str = ""  # ends with "/"
    repo: str = ""  # hf: org/name
    revision: str | None = None

    @property
    def default_name(self) -> str:
        """The served model name when `model.name` is not set: the last path segment."""
        path = self.prefix.rstrip("/") if self.scheme == "s3" else self.repo
        return path.rsplit("/", 1)[-1]

    @property
    def object_arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}/{self.prefix}*"

    @property
    def bucket_arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}"

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_model_uri(uri: str) -> ModelLocation | None:
    """None when `uri` is not an s3:// prefix with a bucket and a path, or an hf:// org/name."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[5:].partition("/")
        prefix = prefix.strip("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket) or not prefix or "*" in prefix:
            return None
        return ModelLocation("s3", bucket=bucket, prefix=prefix + "/")
    if uri.startswith("hf://"):
        repo, _, revision = uri[5:].partition("@")
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo) or (revision == "" and "@" in uri):
            return None
        return ModelLocation("hf", repo=repo, revision=revision or None)
    return None


def model_read_policy(location: ModelLocation) -> dict:
    """Least privilege on a model prefix: read its objects, list only under it (nothing else)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadModel", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": location.object_arn},
            {
                "Sid": "ListModelPrefix",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": location.bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{location.prefix}*"]}},
            },
        ],
    }
