"""Build one component alone under the recording mocks and look at what it registered."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import settings_of as settings_of  # component tests import it from here
from tools.plan.mocks import Recorded
from tools.plan.run import record


def build(fn: Callable[[], Any], region: str = "us-west-2") -> list[Recorded]:
    return record(fn, stack="unit", region=region)


def of_type(resources: list[Recorded], typ: str) -> list[Recorded]:
    return [r for r in resources if r.type == typ]


def named(resources: list[Recorded], name: str) -> Recorded:
    found = [r for r in resources if r.name == name]
    assert len(found) == 1, f"expected one resource named {name}, found {[r.urn for r in found]}"
    return found[0]


def assert_parented(resources: list[Recorded], component_type: str) -> None:
    """Every resource but the component itself is its child (its URN carries the component's type)."""
    children = [r for r in resources if r.type != component_type and not r.type.startswith("pulumi:providers:")]
    orphans = [r.urn for r in children if f"{component_type}$" not in r.urn]
    assert children and not orphans, f"resources not parented to {component_type}: {orphans}"
