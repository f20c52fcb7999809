"""Shared fixtures: stack configs, and the whole program run under recording mocks.

The program is run once per stack per session (about 0.2 s each after imports);
tests that need a variant config build it from a stack file with `stack_config`
and call `plan_of`.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from domain.settings import Settings, raw_from_stack_config
from tools.plan.mocks import Recorded
from tools.plan.run import ROOT, read_stack_file, run_program
from tools.plan.writer import HELM_RELEASE, helm_release, is_manifest, manifest

STACKS = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))


@dataclass
class Plan:
    settings: Settings
    resources: list[Recorded]

    @property
    def manifests(self) -> list[dict[str, Any]]:
        return [manifest(r) for r in self.resources if is_manifest(r)]

    @property
    def releases(self) -> dict[str, dict[str, Any]]:
        return {rel["name"]: rel for rel in (helm_release(r) for r in self.resources if r.type == HELM_RELEASE)}

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, name: str | None = None) -> Recorded:
        found = [r for r in self.of_type(typ) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {typ} named {name}, found {[r.name for r in found]}"
        return found[0]

    def objects(self, kind: str) -> dict[str, dict[str, Any]]:
        """Rendered Kubernetes objects of `kind`, by metadata.name."""
        return {m["metadata"]["name"]: m for m in self.manifests if m["kind"] == kind}


def stack_config(stack: str) -> dict[str, Any]:
    """A deep copy of `Pulumi.<stack>.yaml`'s config, safe to mutate."""
    config, _ = read_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    return copy.deepcopy(config)


def run_plan(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The offline plan command as a user runs it (`python -m tools.plan ARGS`), output captured;
    `env` is added to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "tools.plan", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def in_region(config: dict[str, Any], region: str) -> dict[str, Any]:
    """`config` moved to `region`: the load balancer's ACM certificate must be of the same region."""
    ingress = config.get("gpu-inference:ingress")
    if isinstance(ingress, dict) and "certificateArn" in ingress:
        old = config["aws:region"]
        ingress["certificateArn"] = ingress["certificateArn"].replace(f":acm:{old}:", f":acm:{region}:")
    config["aws:region"] = region
    return config


def settings_of(stack_or_config: str | Mapping[str, Any] = "dev") -> Settings:
    """Validated settings of a stack file by name (`"prod"`) or of a config as such a file holds it."""
    config = stack_config(stack_or_config) if isinstance(stack_or_config, str) else stack_or_config
    return Settings.from_raw(raw_from_stack_config(config))


def plan_of(config: dict[str, Any], stack: str = "test") -> Plan:
    settings, resources = run_program(config, stack)
    return Plan(settings, resources)


@cache
def _stack_plan(stack: str) -> Plan:
    return plan_of(stack_config(stack), stack)


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def plan(stack: str) -> Plan:
    return _stack_plan(stack)


@pytest.fixture
def dev_plan() -> Plan:
    return _stack_plan("dev")


@pytest.fixture
def prod_plan() -> Plan:
    return _stack_plan("prod")


def pytest_report_header() -> list[str]:
    return [f"stacks: {', '.join(STACKS)} (from {Path(ROOT).name}/Pulumi.*.yaml)"]
