"""Building blocks shared by every rule module: policy constructors with config
defaults, and readers for the props shapes rules look at."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY

Config = Mapping[str, Any]
ResourceCheck = Callable[[ResourceValidationArgs, Config], Iterable[str]]
StackCheck = Callable[[list[PolicyResource], Config], Iterable[tuple[str, str | None]]]

NODEPOOL = "kubernetes:karpenter.sh/v1:NodePool"
NODECLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
NODEOVERLAY = "kubernetes:karpenter.sh/v1alpha1:NodeOverlay"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
HELM_CHART_V4 = "kubernetes:helm.sh/v4:Chart"
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
SCALED_JOB = "kubernetes:keda.sh/v1alpha1:ScaledJob"

# Kinds whose spec holds a pod template, and where it sits.
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "kubernetes:core/v1:Pod": ("spec",),
    SCALED_JOB: ("spec", "jobTargetRef", "template", "spec"),
}


def schema(**properties: dict[str, Any]) -> PolicyConfigSchema | None:
    return PolicyConfigSchema(properties=properties) if properties else None


def with_defaults(config_schema: PolicyConfigSchema | None, given: Config) -> dict[str, Any]:
    """The policy's config: schema defaults overridden by what the pack config sets."""
    defaults = {
        k: v["default"] for k, v in (config_schema.properties if config_schema else {}).items() if "default" in v
    }
    return {**defaults, **{k: v for k, v in given.items() if k != "enforcementLevel"}}


def resource_policy(
    name: str,
    description: str,
    remediation: str,
    types: Iterable[str] | None,
    check: ResourceCheck,
    enforcement: EnforcementLevel = MANDATORY,
    config: PolicyConfigSchema | None = None,
) -> ResourceValidationPolicy:
    """A policy that runs `check` on resources of `types` (None: every resource); each message is one violation."""
    wanted = frozenset(types) if types is not None else None

    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if wanted is not None and args.resource_type not in wanted:
            return
        for message in check(args, with_defaults(config, args.get_config())):
            report(message, None)

    return ResourceValidationPolicy(validate=validate, **_metadata(name, description, remediation, enforcement, config))


def stack_policy(
    name: str,
    description: str,
    remediation: str,
    check: StackCheck,
    enforcement: EnforcementLevel = MANDATORY,
    config: PolicyConfigSchema | None = None,
) -> StackValidationPolicy:
    """A policy over the whole stack; `check` yields (message, urn or None)."""

    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        for message, urn in check(list(args.resources), with_defaults(config, args.get_config())):
            report(message, urn)

    return StackValidationPolicy(validate=validate, **_metadata(name, description, remediation, enforcement, config))


def _metadata(
    name: str, description: str, remediation: str, enforcement: EnforcementLevel, config: PolicyConfigSchema | None
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "enforcement_level": enforcement,
        "config_schema": config,
        "remediation_steps": remediation,
    }


def dig(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    path = POD_TEMPLATE_PATHS.get(resource_type)
    return dig(props, *path) if path else None


def containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def json_document(value: Any) -> Any:
    """IAM policies and provider settings arrive as JSON text or as data."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def requirement_values(nodepool_props: Mapping[str, Any], key: str) -> list[str] | None:
    """Values of an `In` requirement on `key` in a NodePool template, or None when absent."""
    for req in dig(nodepool_props, "spec", "template", "spec", "requirements") or []:
        if req.get("key") == key and req.get("operator") == "In":
            return list(req.get("values") or [])
    return None
