"""Priorities: live inference outranks batch jobs, which outrank warm headroom (domain/priorities.py)."""

from __future__ import annotations

import pytest

from domain import priorities
from domain.settings import ConfigError
from infra import mapping, warmup
from infra.priorities import PriorityClasses
from infra.workloads.inference import ServiceSpec
from tests.conftest import plan_of, settings_of, stack_config
from tests.unit.helpers import assert_parented, build, of_type

PC = "kubernetes:scheduling.k8s.io/v1:PriorityClass"


def test_levels_order_service_over_batch_over_headroom_and_headroom_never_preempts() -> None:
    assert priorities.SERVICE.value > priorities.BATCH.value > 0 > priorities.HEADROOM.value
    assert priorities.SERVICE.preemption_policy == priorities.BATCH.preemption_policy == "PreemptLowerPriority"
    assert priorities.HEADROOM.preemption_policy == "Never"
    assert (warmup.PRIORITY_CLASS, warmup.PRIORITY) == ("gpu-headroom", -10)
    # The inference ServiceSpec's default (a literal there) is the service class.
    assert ServiceSpec.__dataclass_fields__["priority_class"].default == priorities.SERVICE.name


def test_every_plan_creates_the_classes_its_pods_name(plan) -> None:
    classes = plan.objects("PriorityClass")
    named = {}
    for kind in ("Deployment", "ScaledJob"):
        for name, obj in plan.objects(kind).items():
            spec = (
                obj["spec"]["jobTargetRef"]["template"]["spec"]
                if kind == "ScaledJob"
                else obj["spec"]["template"]["spec"]
            )
            if "priorityClassName" in spec:
                named[(kind, name)] = spec["priorityClassName"]
    assert set(named.values()) <= set(classes), (named, sorted(classes))
    assert named[("Deployment", "llm")] == "gpu-inference-service"
    assert named[("ScaledJob", "offline-scoring")] == "gpu-inference-batch"
    assert classes["gpu-inference-service"]["value"] == 1000
    assert classes["gpu-inference-batch"]["value"] == 100
    assert classes["gpu-inference-batch"]["preemptionPolicy"] == "PreemptLowerPriority"
    assert classes["gpu-inference-service"]["globalDefault"] is False


def test_a_batch_job_can_run_at_service_priority_and_a_service_at_batch() -> None:
    config = stack_config("dev")
    config["gpu-inference:batchJobs"]["offline-scoring"]["priority"] = "service"
    config["gpu-inference:inference"]["embed-small"]["priority"] = "batch"
    plan = plan_of(config)
    job = plan.objects("ScaledJob")["offline-scoring"]["spec"]["jobTargetRef"]["template"]["spec"]
    embed = plan.objects("Deployment")["embed-small"]["spec"]["template"]["spec"]
    assert (job["priorityClassName"], embed["priorityClassName"]) == ("gpu-inference-service", "gpu-inference-batch")
    assert sorted(plan.objects("PriorityClass")) == ["gpu-inference-batch", "gpu-inference-service"]


def test_only_named_classes_are_created() -> None:
    config = stack_config("dev")
    config["gpu-inference:batchJobs"]["offline-scoring"]["priority"] = "service"
    args = mapping.priority_classes_args(settings_of(config))
    assert [c.name for c in args.classes] == ["gpu-inference-service"]
    resources = build(lambda: PriorityClasses("p", args))
    assert_parented(resources, "gpuinf:priorities:PriorityClasses")
    [pc] = of_type(resources, PC)
    assert pc.inputs["metadata"]["name"] == "gpu-inference-service" and pc.inputs["value"] == 1000


@pytest.mark.parametrize(("section", "name"), [("inference", "llm"), ("batchJobs", "offline-scoring")])
def test_an_unknown_level_is_rejected_naming_the_key(section: str, name: str) -> None:
    config = stack_config("dev")
    config[f"gpu-inference:{section}"][name]["priority"] = "urgent"
    with pytest.raises(ConfigError) as err:
        settings_of(config)
    assert err.value.lines == [
        f"gpu-inference:{section}.{name}.priority must be one of 'service' or 'batch' (got \"urgent\")"
    ]
