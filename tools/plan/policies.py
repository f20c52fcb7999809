"""Offline policy evaluation: the pack's own rule functions over the recorded resources.

Enforcement follows `pulumi preview --policy-pack policies --policy-pack-config
policies/config/<env>.json`: the pack default (mandatory), then each policy's
own level, then the config's `all`, then the config's per-policy entry.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from tools.plan.mocks import Recorded

CONFIG_DIR = Path(__file__).resolve().parents[2] / "policies" / "config"


@dataclass(frozen=True)
class Violation:
    policy: str
    enforcement: str  # mandatory | advisory
    urn: str | None
    name: str | None
    message: str


def config_path(environment: str) -> Path | None:
    path = CONFIG_DIR / f"{environment}.json"
    return path if path.exists() else None


def load_config(path: Path | None) -> dict[str, Any]:
    return json.loads(path.read_text()) if path else {}


def enforcement(policy: Policy, config: dict[str, Any]) -> str:
    level = (policy.enforcement_level or EnforcementLevel.MANDATORY).value
    for entry in (config.get("all"), config.get(policy.name)):
        if isinstance(entry, str):
            level = entry
        elif isinstance(entry, dict) and "enforcementLevel" in entry:
            level = entry["enforcementLevel"]
    return level


def policy_config(policy: Policy, config: dict[str, Any]) -> dict[str, Any]:
    entry = config.get(policy.name)
    return dict(entry) if isinstance(entry, dict) else {}


def resource_options() -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )


def _providers(recorded: list[Recorded]) -> dict[str, PolicyProviderResource]:
    return {
        r.urn: PolicyProviderResource(r.type.removeprefix("pulumi:providers:"), r.inputs, r.urn, r.name)
        for r in recorded
        if r.type.startswith("pulumi:providers:")
    }


def _provider_of(r: Recorded, providers: dict[str, PolicyProviderResource]) -> PolicyProviderResource | None:
    # A provider reference is "<provider URN>::<provider id>".
    ref = r.provider or next(iter(r.providers.values()), "")
    return providers.get(ref.rsplit("::", 1)[0]) if ref else None


def _stack_resources(recorded: list[Recorded], providers: dict[str, PolicyProviderResource]) -> list[PolicyResource]:
    by_urn: dict[str, PolicyResource] = {}
    for r in recorded:
        by_urn[r.urn] = PolicyResource(
            r.type, r.inputs, r.urn, r.name, resource_options(), _provider_of(r, providers), None, [], {}
        )
    for r in recorded:
        resource = by_urn[r.urn]
        resource.parent = by_urn.get(r.parent)
        resource.dependencies = [by_urn[d] for d in r.dependencies if d in by_urn]
    return list(by_urn.values())


def evaluate(policies: list[Policy], recorded: list[Recorded], config: dict[str, Any]) -> list[Violation]:
    providers = _providers(recorded)
    stack = _stack_resources(recorded, providers)
    names = {r.urn: r.name for r in recorded}
    found: list[Violation] = []
    for policy in policies:
        level = enforcement(policy, config)
        if level == "disabled":
            continue
        cfg = policy_config(policy, config)

        def report(message: str, urn: str | None = None, _policy: Policy = policy, _level: str = level) -> None:
            found.append(Violation(_policy.name, _level, urn, names.get(urn or ""), message))

        if isinstance(policy, ResourceValidationPolicy):
            for r in recorded:
                args = ResourceValidationArgs(
                    r.type, r.inputs, r.urn, r.name, resource_options(), _provider_of(r, providers), cfg
                )
                policy.validate(args, lambda message, urn=None, _r=r: report(message, urn or _r.urn))
        elif isinstance(policy, StackValidationPolicy):
            policy.validate(StackValidationArgs(stack, cfg), report)
    return found


@dataclass(frozen=True)
class PolicyOutcome:
    config_file: Path | None
    policies: tuple[str, ...]
    violations: tuple[Violation, ...]

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.enforcement == "mandatory"]

    def as_json(self) -> str:
        document = {
            "policyConfig": str(self.config_file) if self.config_file else None,
            "policiesEvaluated": list(self.policies),
            "mandatoryViolations": len(self.mandatory),
            "violations": [asdict(v) for v in self.violations],
        }
        return json.dumps(document, indent=2) + "\n"

    def summary_lines(self) -> list[str]:
        source = f"`{self.config_file.name}`" if self.config_file else "pack defaults"
        lines = [
            "## Policies",
            "",
            f"{len(self.policies)} policies evaluated with {source}: {len(self.mandatory)} mandatory and"
            f" {len(self.violations) - len(self.mandatory)} advisory violations.",
            "",
        ]
        if self.violations:
            lines += ["| policy | enforcement | resource | message |", "|---|---|---|---|"]
            for v in self.violations:
                message = v.message.replace("|", "\\|")
                lines.append(f"| {v.policy} | {v.enforcement} | {v.name or '(stack)'} | {message} |")
            lines.append("")
        return lines


def check(recorded: list[Recorded], environment: str, config_file: Path | None = None) -> PolicyOutcome:
    """Evaluate the whole pack with the environment's policy config (or `config_file`)."""
    from policies.rules import all_policies

    path = config_file or config_path(environment)
    policies = all_policies()
    violations = evaluate(policies, recorded, load_config(path))
    ordered = sorted(violations, key=lambda v: (v.policy, v.urn or "", v.message))
    return PolicyOutcome(path, tuple(sorted(p.name for p in policies)), tuple(ordered))
