"""`inference`, `batchJobs` and `loadGenerator`: what runs on the pools, and how it scales."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from domain import servers, versions
from domain.priorities import PriorityLevel
from domain.settings.base import ConfigModel, PinnedImage
from domain.settings.errors import field_error, raise_all, value_error
from domain.settings.ingress import ExposeSettings
from domain.settings.patterns import CONFIG_KEY_NAME, QUANTITY


class ScaleUpSettings(ConfigModel):
    stabilization_seconds: Annotated[int, Field(alias="stabilizationSeconds", ge=0, le=3600)] = 0
    pods_per_period: Annotated[int, Field(alias="podsPerPeriod", ge=1, le=1000)] = 4
    period_seconds: Annotated[int, Field(alias="periodSeconds", ge=1, le=1800)] = 15


class ScaleDownSettings(ConfigModel):
    stabilization_seconds: Annotated[int, Field(alias="stabilizationSeconds", ge=0, le=3600)] = 300
    percent_per_period: Annotated[int, Field(alias="percentPerPeriod", ge=1, le=100)] = 50
    period_seconds: Annotated[int, Field(alias="periodSeconds", ge=1, le=1800)] = 60


class ScalingSettings(ConfigModel):
    min_replicas: Annotated[int, Field(alias="minReplicas", ge=0, le=1000)] = 1
    max_replicas: Annotated[int, Field(alias="maxReplicas", ge=1, le=1000)] = 4
    # Requests in flight (queued + running) per replica that the autoscaler aims for.
    target_in_flight: Annotated[float, Field(alias="targetInFlight", gt=0, le=10_000)] = 8
    activation_in_flight: Annotated[float, Field(alias="activationInFlight", ge=0, le=10_000)] = 0
    polling_interval_seconds: Annotated[int, Field(alias="pollingIntervalSeconds", ge=1, le=600)] = 5
    cooldown_seconds: Annotated[int, Field(alias="cooldownSeconds", ge=0, le=86_400)] = 300
    scrape_interval_seconds: Annotated[int, Field(alias="scrapeIntervalSeconds", ge=1, le=300)] = 5
    # PromQL that is > 0 when traffic waits for a service at zero replicas (its own
    # pods cannot report in-flight requests when none run). Only with minReplicas 0;
    # without it such a service wakes through the KEDA HTTP add-on's interceptor.
    wake_up_query: Annotated[str | None, Field(alias="wakeUpQuery", min_length=1)] = None
    # The scale signal instead of the server preset's: PromQL with `{namespace}` and
    # `{service}` placeholders, and the value per replica it aims for (instead of
    # targetInFlight). A `custom` server must set both.
    query: Annotated[str | None, Field(min_length=1)] = None
    target: Annotated[float | None, Field(gt=0, le=10_000)] = None
    # How long the interceptor holds a request while a service scales up from zero:
    # a GPU node launch, image pull and model load (see the README's cold-start budget).
    cold_start_timeout_seconds: Annotated[int, Field(alias="coldStartTimeoutSeconds", ge=30, le=3600)] = 600
    scale_up: Annotated[ScaleUpSettings, Field(alias="scaleUp")] = ScaleUpSettings()
    scale_down: Annotated[ScaleDownSettings, Field(alias="scaleDown")] = ScaleDownSettings()

    @model_validator(mode="after")
    def _bounds(self) -> ScalingSettings:
        # A key that does not belong first (see pool_rules), then the bound.
        problems: list[PydanticCustomError] = []
        if self.wake_up_query is not None and self.min_replicas != 0:
            problems.append(
                field_error("wakeUpQuery", "is only used with minReplicas: 0 (got {got})", self.wake_up_query)
            )
        if self.query is not None and "{service}" not in self.query:
            problems.append(field_error("query", "must contain the placeholder {service} (got {got})", self.query))
        if self.min_replicas > self.max_replicas:
            problems.append(
                field_error(
                    "minReplicas", f"must be <= maxReplicas ({self.max_replicas}) (got {{got}})", self.min_replicas
                )
            )
        raise_all(problems)
        return self

    @property
    def target_value(self) -> float:
        """What the autoscaler aims for per replica: `target` with a query of its own, else targetInFlight."""
        return self.target if self.target is not None else self.target_in_flight

    @property
    def wakes_through_interceptor(self) -> bool:
        """At zero replicas with no wake-up query of its own: the KEDA HTTP add-on wakes it."""
        return self.min_replicas == 0 and self.wake_up_query is None


ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
URL_PATH = r"^/[A-Za-z0-9._~/%-]*$"


class ModelSettings(ConfigModel):
    """Where a server's weights come from (see domain/servers.py for what each server loads)."""

    uri: str  # s3://bucket/prefix/ or hf://org/name[@revision]
    name: Annotated[str | None, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][\w.-]*$")] = None
    # How long the init container's S3 sync may take: added to the startup probe's budget.
    download_seconds: Annotated[int, Field(alias="downloadSeconds", ge=0, le=7200)] = 300
    # Size limit of the per-pod cache the weights land in (node ephemeral storage: NVMe where the node has it).
    cache_gib: Annotated[int, Field(alias="cacheGib", ge=1, le=4096)] = 50
    # The init container that syncs s3:// weights: the AWS CLI image of domain/versions.py, or your
    # mirror of it (prod pins images by digest: image-digest-pinned).
    fetch_image: Annotated[PinnedImage, Field(alias="fetchImage")] = versions.MODEL_SERVER_IMAGES["model-fetch"]

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if servers.parse_model_uri(value) is None:
            raise value_error(
                "uri", "must be s3://<bucket>/<prefix>/ or hf://<org>/<name>[@<revision>] (got {got})", value
            )
        return value

    @property
    def location(self) -> servers.ModelLocation:
        found = servers.parse_model_uri(self.uri)
        assert found is not None  # validated
        return found

    @property
    def served_name(self) -> str:
        return self.name or self.location.default_name


class InferenceSettings(ConfigModel):
    """One InferenceService: a model server (domain/servers.py presets) on a GPU pool."""

    server: Literal["reference", "vllm", "triton", "custom"] = "reference"
    # Defaults to the server preset's image (vllm, triton); reference and custom must name one.
    image: PinnedImage
    pool: str
    gpus: Annotated[int, Field(ge=1, le=8)] = 1
    cpu: Annotated[str, Field(pattern=QUANTITY)] = "2"
    memory_gib: Annotated[int, Field(alias="memoryGib", ge=1, le=2048)] = 8
    # Defaults to the server preset's port; custom must set it.
    port: Annotated[int | None, Field(ge=1024, le=65_535)] = None
    model: ModelSettings | None = None
    args: tuple[str, ...] = ()  # appended to the preset's arguments
    env: Mapping[str, str] = {}
    # Environment variable -> name of a Pulumi secret config key (`pulumi config set --secret NAME`):
    # rendered as a Kubernetes Secret and a secretKeyRef, never as plain text.
    env_secrets: Annotated[Mapping[str, str], Field(alias="envSecrets")] = {}
    # custom only: probe and metrics paths (readyPath defaults to healthPath).
    health_path: Annotated[str | None, Field(alias="healthPath", pattern=URL_PATH)] = None
    ready_path: Annotated[str | None, Field(alias="readyPath", pattern=URL_PATH)] = None
    metrics_path: Annotated[str | None, Field(alias="metricsPath", pattern=URL_PATH)] = None
    # How long the model takes to load: the startup probe allows this plus margin.
    model_load_seconds: Annotated[int, Field(alias="modelLoadSeconds", ge=1, le=3600)] = 60
    # SIGTERM to exit: in-flight and queued requests finish within this.
    drain_seconds: Annotated[int, Field(alias="drainSeconds", ge=5, le=3600)] = 30
    max_batch_size: Annotated[int, Field(alias="maxBatchSize", ge=1, le=1024)] = 16
    max_wait_ms: Annotated[int, Field(alias="maxWaitMs", ge=0, le=10_000)] = 5
    max_queue: Annotated[int, Field(alias="maxQueue", ge=1, le=100_000)] = 256
    do_not_disrupt: Annotated[bool, Field(alias="doNotDisrupt")] = False
    # Who gets a GPU first (domain/priorities.py): live inference outranks batch jobs.
    priority: PriorityLevel = "service"
    scaling: ScalingSettings = ScalingSettings()
    # A host (and path) on the stack's load balancer (`gpu-inference:ingress`); in-cluster only without.
    expose: ExposeSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: Any) -> Any:
        """`image` and `port` default to the server preset's (an unknown server is reported by its field)."""
        if isinstance(data, dict):
            preset = servers.PRESETS.get(data.get("server", "reference"))
            if preset is not None and "image" not in data and preset.image:
                data = {**data, "image": preset.image}
            if preset is not None and "port" not in data and preset.port:
                data = {**data, "port": preset.port}
            # What this returns is validated in (strict) Python mode, where a JSON list is no tuple.
            if isinstance(data.get("args"), list):
                data = {**data, "args": tuple(data["args"])}
        return data

    @model_validator(mode="after")
    def _server(self) -> InferenceSettings:
        preset = self.preset
        # Keys that do not belong first (see pool_rules), then what is missing or malformed.
        disallowed = [
            field_error(key, f"is only for server custom (got {{got}} with server {self.server})", value)
            for key, value in (("healthPath", self.health_path), ("readyPath", self.ready_path),
                               ("metricsPath", self.metrics_path))
            if value is not None and self.server != "custom"
        ]  # fmt: skip
        problems: list[PydanticCustomError] = []
        if self.model is None and preset.model_required:
            problems.append(field_error("model.uri", f"is required for server {self.server}", None))
        if self.model is not None and not self.model.uri.startswith(preset.model_schemes):
            allowed = " or ".join(preset.model_schemes)
            problems.append(
                field_error("model.uri", f"must be {allowed} for server {self.server} (got {{got}})", self.model.uri)
            )
        if self.server == "custom":
            for key, value in (("port", self.port), ("healthPath", self.health_path), ("scaling.query", self.scaling.query),
                               ("scaling.target", self.scaling.target)):  # fmt: skip
                if value is None:
                    problems.append(field_error(key, "is required for server custom", None))
        problems += [
            field_error(f"env.{k}", "is not an environment variable name (got {got})", k)
            for k in (*self.env, *self.env_secrets)
            if not re.match(ENV_NAME, k)
        ]
        problems += [
            field_error(f"envSecrets.{k}", "is also set in env (got {got})", k)
            for k in sorted(set(self.env) & set(self.env_secrets))
        ]
        problems += [
            field_error(f"envSecrets.{k}", "must name a Pulumi config key (letters, digits, '-', '_') (got {got})", v)
            for k, v in self.env_secrets.items()
            if not re.match(CONFIG_KEY_NAME, v)
        ]
        raise_all(disallowed + problems)
        return self

    @property
    def preset(self) -> servers.ServerPreset:
        return servers.PRESETS[self.server]

    @property
    def container_port(self) -> int:
        assert self.port is not None  # the preset's default, or required (custom)
        return self.port

    @property
    def scale_query_template(self) -> str:
        """The in-flight query with `{namespace}` / `{service}` placeholders: the stack's, else the preset's."""
        query = self.scaling.query or self.preset.scale_query
        assert query is not None  # custom requires scaling.query
        return query


class BatchJobSettings(ConfigModel):
    """A queue-driven batch job: one Kubernetes Job per batch of SQS messages."""

    image: PinnedImage
    pool: str
    gpus: Annotated[int, Field(ge=0, le=8)] = 1
    cpu: Annotated[str, Field(pattern=QUANTITY)] = "2"
    memory_gib: Annotated[int, Field(alias="memoryGib", ge=1, le=2048)] = 8
    max_replicas: Annotated[int, Field(alias="maxReplicas", ge=1, le=1000)] = 10
    messages_per_job: Annotated[int, Field(alias="messagesPerJob", ge=1, le=10_000)] = 10
    polling_interval_seconds: Annotated[int, Field(alias="pollingIntervalSeconds", ge=1, le=600)] = 10
    visibility_timeout_seconds: Annotated[int, Field(alias="visibilityTimeoutSeconds", ge=30, le=43_200)] = 300
    max_receive_count: Annotated[int, Field(alias="maxReceiveCount", ge=1, le=1000)] = 3
    active_deadline_seconds: Annotated[int, Field(alias="activeDeadlineSeconds", ge=60, le=86_400)] = 3600
    # Karpenter must not consolidate a node under a running batch Job.
    do_not_disrupt: Annotated[bool, Field(alias="doNotDisrupt")] = True
    # Batch yields to live inference and preempts warm headroom (domain/priorities.py).
    priority: PriorityLevel = "batch"


class LoadGeneratorSettings(ConfigModel):
    """An in-cluster load generator aimed at one InferenceService, scaled to 0 until someone runs it."""

    image: PinnedImage
    target: str  # a key of `inference`
    rps: Annotated[float, Field(gt=0, le=100_000)] = 20
    duration_seconds: Annotated[int, Field(alias="durationSeconds", ge=1, le=86_400)] = 300
    replicas: Annotated[int, Field(ge=0, le=100)] = 0
