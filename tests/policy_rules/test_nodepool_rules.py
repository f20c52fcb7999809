from __future__ import annotations

import pytest

from tests.policy_rules import fixtures as fx
from tests.policy_rules.helpers import mutated, resource, resource_violations, stack_violations


@pytest.mark.parametrize(
    "rule", ["gpu-nodepool-gpu-limit", "gpu-nodepool-taint", "nodepool-cpu-limit", "allowed-instance-families",
             "allowed-capacity-types", "nodepool-node-expiry"]
)  # fmt: skip
def test_happy_nodepools_pass(rule: str) -> None:
    assert resource_violations(rule, fx.NODEPOOL, fx.gpu_nodepool()) == []
    assert resource_violations(rule, fx.NODEPOOL, fx.cpu_nodepool()) == []


def test_gpu_pool_without_gpu_limit() -> None:
    props = mutated(fx.gpu_nodepool(), "spec.limits", {"cpu": 96})
    assert resource_violations("gpu-nodepool-gpu-limit", fx.NODEPOOL, props) == [
        "NodePool gpu can launch GPU instances but has no limits.nvidia.com/gpu: Karpenter would buy GPUs without bound"
    ]


def test_a_gpu_family_makes_a_pool_a_gpu_pool_even_without_taint_or_limit() -> None:
    props = mutated(fx.cpu_nodepool(), "spec.template.spec.requirements[0].values", ["c7i", "g5"])
    assert resource_violations("gpu-nodepool-gpu-limit", fx.NODEPOOL, props)
    assert resource_violations("gpu-nodepool-taint", fx.NODEPOOL, props)


def test_gpu_pool_without_taint() -> None:
    props = mutated(fx.gpu_nodepool(), "spec.template.spec.taints", [])
    [message] = resource_violations("gpu-nodepool-taint", fx.NODEPOOL, props)
    assert message.startswith("NodePool gpu can launch GPU instances without the nvidia.com/gpu:NoSchedule taint")


def test_prefer_no_schedule_is_not_enough() -> None:
    taint = [{"key": "nvidia.com/gpu", "value": "true", "effect": "PreferNoSchedule"}]
    props = mutated(fx.gpu_nodepool(), "spec.template.spec.taints", taint)
    assert resource_violations("gpu-nodepool-taint", fx.NODEPOOL, props)


def test_pool_without_cpu_limit() -> None:
    props = mutated(fx.cpu_nodepool(), "spec.limits", {})
    assert resource_violations("nodepool-cpu-limit", fx.NODEPOOL, props) == [
        "NodePool cpu has no limits.cpu: Karpenter could scale it without bound"
    ]


def test_families_outside_the_environments_list() -> None:
    config = {"allowedFamilies": ["g6", "c7i", "m7i"]}
    assert resource_violations("allowed-instance-families", fx.NODEPOOL, fx.gpu_nodepool(), config) == []
    props = fx.gpu_nodepool(families=["g6", "p5"])
    assert resource_violations("allowed-instance-families", fx.NODEPOOL, props, config) == [
        "NodePool gpu allows instance families ['p5']; this environment allows ['c7i', 'g6', 'm7i']"
    ]


def test_a_pool_that_does_not_constrain_families() -> None:
    props = mutated(fx.cpu_nodepool(), "spec.template.spec.requirements[0].operator", "Exists")
    [message] = resource_violations("allowed-instance-families", fx.NODEPOOL, props)
    assert "does not constrain karpenter.k8s.aws/instance-family" in message


def test_spot_gpu_where_the_environment_forbids_it() -> None:
    config = {"gpuCapacityTypes": ["on-demand"]}
    assert resource_violations("allowed-capacity-types", fx.NODEPOOL, fx.gpu_nodepool(), config) == []
    props = mutated(fx.gpu_nodepool(), "spec.template.spec.requirements[1].values", ["spot", "on-demand"])
    assert resource_violations("allowed-capacity-types", fx.NODEPOOL, props, config) == [
        "NodePool gpu (GPU) allows capacity types ['spot']; this environment allows ['on-demand'] for GPU pools"
    ]
    # The same config leaves spot CPU pools alone.
    assert resource_violations("allowed-capacity-types", fx.NODEPOOL, fx.cpu_nodepool(), config) == []


def test_pool_that_never_expires() -> None:
    props = mutated(fx.cpu_nodepool(), "spec.template.spec.expireAfter", "Never")
    [message] = resource_violations("nodepool-node-expiry", fx.NODEPOOL, props)
    assert "never expires its nodes" in message


def test_nodepool_rules_ignore_other_types() -> None:
    assert resource_violations("nodepool-cpu-limit", fx.CONFIGMAP, {"data": {}}) == []


def _sliced_stack(with_overlay: bool) -> list:
    resources = [
        resource(fx.CONFIGMAP, fx.time_sliced_configmap(), "configs"),
        resource(fx.NODEPOOL, fx.gpu_nodepool("shared", config="time-sliced-shared"), "shared"),
        resource(fx.NODEPOOL, fx.gpu_nodepool("gpu"), "gpu"),
    ]
    if with_overlay:
        resources.append(resource(fx.NODEOVERLAY, fx.overlay("shared"), "overlay"))
    return resources


def test_time_sliced_pool_with_overlay_passes() -> None:
    assert stack_violations("time-sliced-pool-has-overlay", _sliced_stack(with_overlay=True)) == []


def test_time_sliced_pool_without_overlay() -> None:
    [(message, urn)] = stack_violations("time-sliced-pool-has-overlay", _sliced_stack(with_overlay=False))
    assert message.startswith("NodePool shared runs time-sliced GPUs (4 per GPU) but no NodeOverlay")
    assert urn is not None and urn.endswith("::shared")


def test_overlay_for_another_pool_does_not_count() -> None:
    resources = [*_sliced_stack(with_overlay=False), resource(fx.NODEOVERLAY, fx.overlay("gpu"), "overlay")]
    assert len(stack_violations("time-sliced-pool-has-overlay", resources)) == 1
