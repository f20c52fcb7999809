"""Call a rule the way the Pulumi engine does: with constructed validation args."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    Policy,
    PolicyProviderResource,
    PolicyResource,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
)

from policies.rules import all_policies
from tools.plan.policies import resource_options as options

POLICIES = {p.name: p for p in all_policies()}


def urn(resource_type: str, name: str) -> str:
    return f"urn:pulumi:test::gpu-inference::{resource_type}::{name}"


def resource_violations(
    policy_name: str,
    resource_type: str,
    props: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    name: str = "r",
    provider: PolicyProviderResource | None = None,
) -> list[str]:
    policy = POLICIES[policy_name]
    assert isinstance(policy, ResourceValidationPolicy), policy_name
    args = ResourceValidationArgs(
        resource_type, copy.deepcopy(dict(props)), urn(resource_type, name), name, options(), provider, config or {}
    )
    found: list[str] = []
    policy.validate(args, lambda message, _urn=None: found.append(message))
    return found


def resource(
    resource_type: str, props: Mapping[str, Any], name: str = "r", depends_on: list[PolicyResource] | None = None
) -> PolicyResource:
    return PolicyResource(
        resource_type, copy.deepcopy(dict(props)), urn(resource_type, name), name, options(), None, None,
        list(depends_on or []), {},
    )  # fmt: skip


def stack_violations(
    policy_name: str, resources: list[PolicyResource], config: Mapping[str, Any] | None = None
) -> list[tuple[str, str | None]]:
    policy: Policy = POLICIES[policy_name]
    found: list[tuple[str, str | None]] = []
    policy.validate(StackValidationArgs(resources, config or {}), lambda message, u=None: found.append((message, u)))
    return found


def mutated(props: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Deep copy of `props` with the dotted `path` set to `value` (`[i]` for list items); value None deletes."""
    out = copy.deepcopy(dict(props))
    node: Any = out
    parts = path.replace("[", ".[").split(".")
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    key: Any = int(last[1:-1]) if last.startswith("[") else last
    if value is None:
        del node[key]
    else:
        node[key] = value
    return out
