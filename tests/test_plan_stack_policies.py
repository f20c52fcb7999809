"""The offline plan evaluates every stack policy of the pack, not only the per-resource ones.

Each case takes the dev stack as recorded, breaks exactly what one stack policy
guards, and runs `tools.plan.policies.check` (what `python -m tools.plan` calls):
that policy must be reported by name. A new stack policy without a case here
fails `test_every_stack_policy_has_a_case`. One break also goes through the real
command, which must exit 3 naming the rule.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pulumi_policy import StackValidationPolicy

from policies.rules import all_policies
from tests.conftest import Plan, run_plan, stack_config
from tools.plan.mocks import Recorded
from tools.plan.policies import check

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
Edit = Callable[[list[Recorded]], list[Recorded]]


def _drop(typ: str) -> Edit:
    return lambda resources: [r for r in resources if r.type != typ]


def _gpu_deployment(resources: list[Recorded]) -> Recorded:
    for r in resources:
        if r.type == DEPLOYMENT:
            spec = r.inputs["spec"]["template"]["spec"]
            limits = spec["containers"][0].get("resources", {}).get("limits", {})
            if "nvidia.com/gpu" in limits:
                return r
    raise AssertionError("the dev stack has no Deployment that requests nvidia.com/gpu")


def _without_tolerations(resources: list[Recorded]) -> list[Recorded]:
    _gpu_deployment(resources).inputs["spec"]["template"]["spec"]["tolerations"] = []
    return resources


def _scaled_far_beyond_the_pool(resources: list[Recorded]) -> list[Recorded]:
    for r in resources:
        if r.type == "kubernetes:keda.sh/v1alpha1:ScaledObject":
            r.inputs["spec"]["maxReplicaCount"] = 10_000
    return resources


def _device_plugin_pinned_elsewhere(resources: list[Recorded]) -> list[Recorded]:
    for r in resources:
        if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs.get("name") == "nvidia-device-plugin":
            r.inputs["values"] = {**r.inputs["values"], "nodeSelector": {"example.com/no-such-label": "x"}}
            return resources
    raise AssertionError("the dev stack has no nvidia-device-plugin release")


def _unencrypted_queues(resources: list[Recorded]) -> list[Recorded]:
    for r in resources:
        if r.type == "aws:sqs/queue:Queue":
            r.inputs.pop("sqsManagedSseEnabled", None)
            r.inputs.pop("kmsMasterKeyId", None)
    return resources


def _over_budget(resources: list[Recorded]) -> list[Recorded]:
    for r in resources:
        if r.type == "kubernetes:karpenter.sh/v1:NodePool" and "nvidia.com/gpu" in r.inputs["spec"]["limits"]:
            r.inputs["spec"]["limits"]["nvidia.com/gpu"] = 10_000
            r.inputs["spec"]["limits"]["cpu"] = 1_000_000
    return resources


def _gpu_pool_consolidates_underutilized(resources: list[Recorded]) -> list[Recorded]:
    for r in resources:
        if r.type == "kubernetes:karpenter.sh/v1:NodePool" and r.inputs["metadata"]["name"] == "gpu":
            r.inputs["spec"]["disruption"]["consolidationPolicy"] = "WhenEmptyOrUnderutilized"
    return resources


def _open_plain_http_ingress(resources: list[Recorded]) -> list[Recorded]:
    """An ALB IngressClass without params and an internet-facing Ingress of it: plain HTTP, no auth, open."""
    klass, ingress = "kubernetes:networking.k8s.io/v1:IngressClass", "kubernetes:networking.k8s.io/v1:Ingress"
    backend = {"service": {"name": "open", "port": {"number": 80}}}
    inputs = {
        "metadata": {"name": "open", "annotations": {"alb.ingress.kubernetes.io/scheme": "internet-facing"}},
        "spec": {
            "ingressClassName": "open",
            "rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}],
        },
    }
    return [
        *resources,
        Recorded(f"urn:pulumi:dev::gpu-inference::{klass}::open", klass, "open", "", True, "", {}, [],
                 {"metadata": {"name": "open"}, "spec": {"controller": "ingress.k8s.aws/alb"}}),
        Recorded(f"urn:pulumi:dev::gpu-inference::{ingress}::open", ingress, "open", "", True, "", {}, [], inputs),
    ]  # fmt: skip


# policy name -> how to break what it guards in a recorded dev stack
BREAKS: dict[str, Edit] = {
    "time-sliced-pool-has-overlay": _drop("kubernetes:karpenter.sh/v1alpha1:NodeOverlay"),
    "gpu-workload-placement": _without_tolerations,
    "gpu-demand-within-pool-limit": _scaled_far_beyond_the_pool,
    "gpu-daemon-coverage": _device_plugin_pinned_elsewhere,
    "s3-bucket-encrypted-private": _drop("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"),
    "sqs-encrypted-with-dlq": _unencrypted_queues,
    "max-hourly-spend": _over_budget,
    "single-replica-disruption": _gpu_pool_consolidates_underutilized,  # dev's llm runs at minReplicas 1
    "endpoint-https-only": _open_plain_http_ingress,
    "endpoint-internet-facing-locked": _open_plain_http_ingress,
}


def stack_policy_names() -> set[str]:
    return {p.name for p in all_policies() if isinstance(p, StackValidationPolicy)}


def reported(resources: list[Recorded]) -> set[str]:
    return {v.policy for v in check(resources, "dev").violations}


def test_every_stack_policy_has_a_case() -> None:
    assert stack_policy_names() == set(BREAKS), "add a break to BREAKS for every stack policy of the pack"


def test_the_dev_stack_as_recorded_violates_no_stack_policy(dev_plan: Plan) -> None:
    assert not reported(dev_plan.resources) & set(BREAKS)


@pytest.mark.parametrize("policy", sorted(BREAKS))
def test_the_plan_reports_each_broken_stack_policy_by_name(dev_plan: Plan, policy: str) -> None:
    broken = BREAKS[policy](copy.deepcopy(dev_plan.resources))
    outcome = check(broken, "dev")
    assert policy in outcome.policies, f"{policy} was not evaluated; evaluated: {outcome.policies}"
    found = [v for v in outcome.violations if v.policy == policy]
    assert found, f"expected a {policy} violation, got {sorted({v.policy for v in outcome.violations})}"
    assert all(v.message for v in found)


def test_a_stack_policy_violation_through_the_command_exits_3(tmp_path: Path) -> None:
    """Raising the dev GPU pool's limits past dev's budget: only max-hourly-spend (a stack policy) can see it."""
    config = stack_config("dev")
    config["gpu-inference:nodePools"]["gpu"].update(maxGpus=64, maxCpu=2048)
    stack_file = tmp_path / "Pulumi.variant.yaml"
    stack_file.write_text(yaml.safe_dump({"config": config}))
    out = tmp_path / "out"
    proc = run_plan("--stack", "dev", "--out", str(out), "--config", str(stack_file))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "[max-hourly-spend] (stack): worst-case spend $" in proc.stderr, proc.stderr
    report = json.loads((out / "policy-report.json").read_text())
    assert {v["policy"] for v in report["violations"] if v["enforcement"] == "mandatory"} == {"max-hourly-spend"}
