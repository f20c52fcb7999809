"""`inference`, `batchJobs` and `loadGenerator`: what runs on the pools, and how it scales."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from domain.settings.base import ConfigModel, PinnedImage
from domain.settings.errors import field_error, raise_all
from domain.settings.patterns import QUANTITY


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
        if self.min_replicas > self.max_replicas:
            problems.append(
                field_error(
                    "minReplicas", f"must be <= maxReplicas ({self.max_replicas}) (got {{got}})", self.min_replicas
                )
            )
        raise_all(problems)
        return self

    @property
    def wakes_through_interceptor(self) -> bool:
        """At zero replicas with no wake-up query of its own: the KEDA HTTP add-on wakes it."""
        return self.min_replicas == 0 and self.wake_up_query is None


class InferenceSettings(ConfigModel):
    """One InferenceService: the reference server (or a compatible image) on a GPU pool."""

    image: PinnedImage
    pool: str
    gpus: Annotated[int, Field(ge=1, le=8)] = 1
    cpu: Annotated[str, Field(pattern=QUANTITY)] = "2"
    memory_gib: Annotated[int, Field(alias="memoryGib", ge=1, le=2048)] = 8
    port: Annotated[int, Field(ge=1024, le=65_535)] = 8080
    # How long the model takes to load: the startup probe allows this plus margin.
    model_load_seconds: Annotated[int, Field(alias="modelLoadSeconds", ge=1, le=3600)] = 60
    # SIGTERM to exit: in-flight and queued requests finish within this.
    drain_seconds: Annotated[int, Field(alias="drainSeconds", ge=5, le=3600)] = 30
    max_batch_size: Annotated[int, Field(alias="maxBatchSize", ge=1, le=1024)] = 16
    max_wait_ms: Annotated[int, Field(alias="maxWaitMs", ge=0, le=10_000)] = 5
    max_queue: Annotated[int, Field(alias="maxQueue", ge=1, le=100_000)] = 256
    do_not_disrupt: Annotated[bool, Field(alias="doNotDisrupt")] = False
    scaling: ScalingSettings = ScalingSettings()


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


class LoadGeneratorSettings(ConfigModel):
    """An in-cluster load generator aimed at one InferenceService, scaled to 0 until someone runs it."""

    image: PinnedImage
    target: str  # a key of `inference`
    rps: Annotated[float, Field(gt=0, le=100_000)] = 20
    duration_seconds: Annotated[int, Field(alias="durationSeconds", ge=1, le=86_400)] = 300
    replicas: Annotated[int, Field(ge=0, le=100)] = 0
