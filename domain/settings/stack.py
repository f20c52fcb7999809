"""`Settings`: the whole stack's config, its sections, and the rules across them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from domain.settings import rules
from domain.settings.base import ConfigModel, name_problems
from domain.settings.cluster import ClusterSettings, KarpenterSettings
from domain.settings.errors import ConfigError, describe_all, field_error, raise_all, value_error
from domain.settings.ingress import IngressSettings
from domain.settings.monitoring import MonitoringSettings
from domain.settings.network import NetworkSettings
from domain.settings.patterns import DNS_LABEL, PROJECT, REGION, RESERVED_TAG_PREFIXES
from domain.settings.pools import PoolSettings
from domain.settings.workloads import BatchJobSettings, InferenceSettings, LoadGeneratorSettings

# What each map of named things calls one of its keys in messages.
_NAME_NOUNS = {"node_pools": "pool name", "inference": "name", "batch_jobs": "name"}


class Settings(ConfigModel):
    region: str
    environment: Annotated[str, Field(pattern=DNS_LABEL, max_length=20)]
    tags: Mapping[str, str] = {}
    network: NetworkSettings = NetworkSettings()
    cluster: ClusterSettings
    karpenter: KarpenterSettings = KarpenterSettings()
    node_pools: Annotated[Mapping[str, PoolSettings], Field(alias="nodePools", min_length=1)]
    monitoring: MonitoringSettings = MonitoringSettings()
    inference: Mapping[str, InferenceSettings] = {}
    batch_jobs: Annotated[Mapping[str, BatchJobSettings], Field(alias="batchJobs")] = {}
    load_generator: Annotated[LoadGeneratorSettings | None, Field(alias="loadGenerator")] = None
    # The stack's one load balancer, for services with `expose` (domain/settings/ingress.py).
    ingress: IngressSettings | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: Mapping[str, str]) -> Mapping[str, str]:
        # Reserved keys (not allowed at all) before lengths (see pool_rules for the order).
        reserved: list[PydanticCustomError] = [
            field_error(
                key,
                f"is reserved for AWS, EKS or Karpenter (keys starting {', '.join(RESERVED_TAG_PREFIXES)})",
                value,
            )
            for key, value in tags.items()
            if key.startswith(RESERVED_TAG_PREFIXES)
        ]
        too_long = [
            field_error(key, "must be a key of 1..128 characters with a value of at most 256", value)
            for key, value in tags.items()
            if not key or len(key) > 128 or len(value) > 256
        ]
        raise_all(reserved + too_long)
        return tags

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not re.match(REGION, value):
            raise value_error("region", "must be an AWS region such as us-west-2 (got {got})", value)
        return value

    @field_validator("node_pools", "inference", "batch_jobs")
    @classmethod
    def _names(cls, named: Mapping[str, Any], info: ValidationInfo) -> Mapping[str, Any]:
        raise_all(name_problems(named, _NAME_NOUNS[info.field_name]))
        return named

    @model_validator(mode="after")
    def _rules_across_sections(self) -> Settings:
        raise_all(rules.problems(self))
        return self

    @property
    def needs_http_add_on(self) -> bool:
        return any(svc.scaling.wakes_through_interceptor for svc in self.inference.values())

    @property
    def exposed(self) -> dict[str, InferenceSettings]:
        """Services with a host on the load balancer, by name."""
        return {k: svc for k, svc in sorted(self.inference.items()) if svc.expose is not None}

    @property
    def load_balancer_idle_timeout(self) -> int:
        """ALB idle timeout: the stack's, else 60 s (ALB's default) or, when more, what the slowest exposed
        scale-to-zero service needs: the interceptor holds its first request with no byte sent."""
        if self.ingress is not None and self.ingress.idle_timeout_seconds is not None:
            return self.ingress.idle_timeout_seconds
        return max([60, *(rules.wake_hold_seconds(svc) for svc in self.exposed.values())])

    @property
    def cpu_pool(self) -> str | None:
        """The first CPU pool by name, where CPU-only helpers such as the load generator run."""
        return next((k for k, p in sorted(self.node_pools.items()) if not p.is_gpu), None)

    @property
    def shared_pools(self) -> dict[str, PoolSettings]:
        return {k: p for k, p in sorted(self.node_pools.items()) if p.gpu == "shared"}

    @property
    def default_tags(self) -> dict[str, str]:
        base = {"project": PROJECT, "environment": self.environment, "managed-by": "pulumi"}
        return {**base, **self.tags}

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> Settings:
        """Validate a stack's config (keys without the project prefix, plus `region`)."""
        try:
            return cls.parse(_with_default_cluster_name(raw))
        except ValidationError as exc:
            raise ConfigError(describe_all(exc.errors(), cls)) from None


def _with_default_cluster_name(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """`cluster` and its `name` may be left out: the cluster is then `gpu-inference-<environment>`."""
    environment, cluster = raw.get("environment"), raw.get("cluster", {})
    if not isinstance(environment, str) or not isinstance(cluster, Mapping) or "name" in cluster:
        return raw
    return {**raw, "cluster": {**cluster, "name": f"{PROJECT}-{environment}"}}
