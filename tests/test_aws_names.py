"""AWS names the program builds from config fit AWS's limits, even when every
user-chosen part (environment, cluster, pool, service, job) is as long as settings allow."""

from __future__ import annotations

import re

import pytest

from infra import naming
from tests.conftest import plan_of, stack_config

# type -> (input, most characters, allowed characters) as the AWS APIs define them.
LIMITS = {
    "aws:iam/role:Role": ("name", 64, r"[\w+=,.@-]+"),
    "aws:sqs/queue:Queue": ("name", 80, r"[A-Za-z0-9_-]+"),
    "aws:s3/bucket:Bucket": ("bucketPrefix", naming.S3_BUCKET_PREFIX, r"[a-z0-9][a-z0-9.-]*"),
    "aws:cloudwatch/eventRule:EventRule": ("name", 64, r"[\w.-]+"),
    "aws:eks/nodeGroup:NodeGroup": ("nodeGroupName", 63, r"[A-Za-z0-9][\w-]*"),
    "aws:kms/alias:Alias": ("name", 256, r"alias/[\w/-]+"),
}


def longest_names_config() -> dict:
    config = stack_config("dev")
    config["gpu-inference:environment"] = "e" * 20
    config["gpu-inference:cluster"]["name"] = "c" * 38
    pools = config["gpu-inference:nodePools"]
    pools["p" * 40] = pools.pop("gpu-shared")
    for section in ("gpu-inference:inference", "gpu-inference:batchJobs"):
        workloads = config[section]
        for i, key in enumerate(sorted(workloads)):
            spec = workloads.pop(key)
            if spec["pool"] == "gpu-shared":
                spec["pool"] = "p" * 40
            workloads["abcdefgh"[i] * 40] = spec
            if config["gpu-inference:loadGenerator"]["target"] == key:
                config["gpu-inference:loadGenerator"]["target"] = "abcdefgh"[i] * 40
    return config


def test_names_fit_aws_limits_at_the_longest_config() -> None:
    plan = plan_of(longest_names_config(), stack="longest")
    checked = 0
    for r in plan.resources:
        if r.type not in LIMITS:
            continue
        key, most, allowed = LIMITS[r.type]
        value = r.inputs.get(key)
        if value is None:
            continue  # auto-named by Pulumi from the (short) logical name
        checked += 1
        assert len(value) <= most and re.fullmatch(allowed, value), f"{r.type} {r.name}: {key}={value!r}"
    assert checked >= 10


def test_names_that_fit_are_kept_as_they_read() -> None:
    assert (
        naming.bounded("gpuinf-dev-offline-scoring", "-worker", naming.IAM_ROLE) == "gpuinf-dev-offline-scoring-worker"
    )


@pytest.mark.parametrize("suffix", ["", "-dlq", "-worker"])
def test_long_names_are_cut_and_stay_distinct(suffix: str) -> None:
    a = naming.bounded("c" * 38 + "-" + "a" * 40, suffix, 64)
    b = naming.bounded("c" * 38 + "-" + "a" * 39 + "b", suffix, 64)
    assert len(a) == len(b) == 64 and a != b and a.endswith(suffix)
