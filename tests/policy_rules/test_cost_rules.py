"""max-hourly-spend: rebuilt from recorded resources, priced by the same function as the plan."""

from __future__ import annotations

import pytest

from domain import cost
from policies.rules.cost import cost_inputs, quantity
from tests.conftest import plan_of, stack_config
from tests.policy_rules.helpers import stack_violations
from tools.plan.policies import _providers, _stack_resources


def stack_resources(plan):
    return _stack_resources(plan.resources, _providers(plan.resources))


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_inputs_from_resources_equal_inputs_from_settings(stack_name, request):
    plan = request.getfixturevalue(f"{stack_name}_plan")
    assert cost_inputs(stack_resources(plan)) == cost.CostInputs.from_settings(plan.settings)


def test_within_budget_passes_and_over_budget_fails(dev_plan):
    resources = stack_resources(dev_plan)
    worst = cost.estimate(cost.CostInputs.from_settings(dev_plan.settings)).worst_per_hour
    assert stack_violations("max-hourly-spend", resources, {"maxHourlySpend": worst + 0.01}) == []
    found = stack_violations("max-hourly-spend", resources, {"maxHourlySpend": worst - 0.01})
    assert len(found) == 1 and f"worst-case spend ${worst:,.2f}/h" in found[0][0], found


def test_no_budget_configured_means_no_check(dev_plan):
    assert stack_violations("max-hourly-spend", stack_resources(dev_plan), {}) == []


def test_headroom_deployments_count_in_the_inputs():
    config = stack_config("dev")
    config["gpu-inference:nodePools"]["gpu"]["warmGpus"] = 2
    config["gpu-inference:nodePools"]["gpu-shared"]["warmGpus"] = 1
    plan = plan_of(config)
    inputs = cost_inputs(stack_resources(plan))
    assert {p.name: p.warm_gpus for p in inputs.pools} == {"cpu": 0, "gpu": 2, "gpu-shared": 1}
    assert inputs == cost.CostInputs.from_settings(plan.settings)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [("96", "", 96), (96, "", 96), ("1500m", "", 1.5), ("384Gi", "memory", 384), ("1Ti", "memory", 1024),
     ("2G", "memory", 2e9 / 2**30), ("12x", "", None), ("1Zi", "memory", None)],
)  # fmt: skip
def test_quantities(value, unit, expected):
    assert quantity(value, unit) == (pytest.approx(expected) if expected is not None else None)
