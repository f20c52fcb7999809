"""Typed stack settings: the only reader of `pulumi.Config`.

`Settings.from_raw(raw)` is pure: it takes the stack's config as a dict (keys
without the `gpu-inference:` prefix, plus `aws:region`) and returns frozen
models or raises `ConfigError` whose lines each name the full key path, the bad
value and what is allowed, every problem at once. `load()` wraps `pulumi.Config`
and is called once, before any resource is registered.

Modules by concern: `patterns` (regexes and reserved names, also used by
scripts), `errors` (ConfigError and the rendering of problems), `base` (the
strict model and shared validators), one module per section (`network`,
`cluster`, `pools` with `pool_rules`, `monitoring`, `workloads`), `stack`
(`Settings`), `rules` (rules across sections) and `loading` (stack config and
the Pulumi engine to `Settings`). Callers import from `domain.settings`.
"""

from domain.settings.base import CapacityType, ConfigModel, ConsolidationPolicy, LogType, PinnedImage
from domain.settings.cluster import ClusterSettings, KarpenterSettings, PrivateAccessSettings, SystemNodeSettings
from domain.settings.errors import ConfigError
from domain.settings.ingress import AuthSettings, CognitoSettings, ExposeSettings, IngressSettings, OidcSettings
from domain.settings.loading import CONFIG_KEYS, FOREIGN_NAMESPACES, load, raw_from_stack_config
from domain.settings.monitoring import (
    AlertingSettings,
    MonitoringSettings,
    PrometheusSettings,
    ReceiverSettings,
    ResourceSpec,
)
from domain.settings.network import NetworkSettings
from domain.settings.patterns import (
    AMI_ALIAS,
    BUDGET_DURATION,
    BUDGET_NODES,
    DNS_LABEL,
    DURATION_OR_NEVER,
    IAM_ROLE_ARN,
    LOAD_GENERATOR_NAME,
    NAME_MAX_LENGTH,
    PROJECT,
    PROM_DURATION,
    QUANTITY,
    REGION,
    RESERVED_TAG_PREFIXES,
    SECURITY_GROUP_ID,
    SNAPSHOT_ID,
    ZONE_ID,
)
from domain.settings.pools import DisruptionBudget, ImageCacheSettings, PoolSettings
from domain.settings.rules import wake_hold_seconds
from domain.settings.stack import Settings
from domain.settings.workloads import (
    BatchJobSettings,
    InferenceSettings,
    LoadGeneratorSettings,
    ScaleDownSettings,
    ScaleUpSettings,
    ScalingSettings,
)

__all__ = [
    "AMI_ALIAS",
    "BUDGET_DURATION",
    "BUDGET_NODES",
    "CONFIG_KEYS",
    "DNS_LABEL",
    "DURATION_OR_NEVER",
    "FOREIGN_NAMESPACES",
    "IAM_ROLE_ARN",
    "LOAD_GENERATOR_NAME",
    "NAME_MAX_LENGTH",
    "PROJECT",
    "PROM_DURATION",
    "QUANTITY",
    "REGION",
    "RESERVED_TAG_PREFIXES",
    "SECURITY_GROUP_ID",
    "SNAPSHOT_ID",
    "ZONE_ID",
    "AlertingSettings",
    "AuthSettings",
    "BatchJobSettings",
    "CapacityType",
    "ClusterSettings",
    "CognitoSettings",
    "ConfigError",
    "ConfigModel",
    "ConsolidationPolicy",
    "DisruptionBudget",
    "ExposeSettings",
    "ImageCacheSettings",
    "InferenceSettings",
    "IngressSettings",
    "KarpenterSettings",
    "LoadGeneratorSettings",
    "LogType",
    "MonitoringSettings",
    "NetworkSettings",
    "OidcSettings",
    "PinnedImage",
    "PoolSettings",
    "PrivateAccessSettings",
    "PrometheusSettings",
    "ReceiverSettings",
    "ResourceSpec",
    "ScaleDownSettings",
    "ScaleUpSettings",
    "ScalingSettings",
    "Settings",
    "SystemNodeSettings",
    "load",
    "raw_from_stack_config",
    "wake_hold_seconds",
]
