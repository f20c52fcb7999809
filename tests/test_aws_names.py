"""AWS names the program builds from config fit AWS's limits, even when every
user-chosen part (environment, cluster, pool, service, job) is as long as settings allow.

The limits below are AWS's, written out as literals with where they come from, and
never read from `domain.naming`: the test must fail when the code's own constant is
wrong, not agree with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from domain import naming
from tests.conftest import plan_of, stack_config


@dataclass(frozen=True)
class NameRule:
    key: str  # the recorded (camelCase) input that holds the name
    most: int
    allowed: str  # a full-match regex
    source: str


# Sources (read for this test; the botocore models ship in the venv, botocore 1.x):
# - botocore data iam/2010-05-08 `roleNameType`: 1-64, `[\w+=,.@-]+` (IAM CreateRole RoleName).
# - SQS CreateQueue QueueName: 1-80 of `[A-Za-z0-9_-]`, a FIFO queue's name ends in `.fifo` and the
#   suffix counts toward the 80 (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_CreateQueue.html).
# - S3 bucket names: 3-63 characters of lowercase letters, digits, `.` and `-`, beginning and
#   ending with a letter or digit (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
#   The AWS provider's `bucket_prefix` appends a 26-character unique suffix, so the prefix may
#   have at most 63 - 26 = 37 (pulumi-aws 7.51 sdk `pulumi_aws/s3/bucket.py`: "Must be lowercase
#   and less than or equal to 37 characters in length").
# - botocore data events/2015-10-07 `RuleName`: 1-64, `[\.\-_A-Za-z0-9]+` (EventBridge PutRule Name).
# - EKS CreateNodegroup nodegroupName: up to 63, begins with a letter or digit, then letters,
#   digits, `-` and `_` (https://docs.aws.amazon.com/eks/latest/APIReference/API_CreateNodegroup.html).
# - botocore data kms/2014-11-01 `AliasNameType`: 1-256, `alias/` prefix (KMS CreateAlias).
AWS_LIMITS = {
    "aws:iam/role:Role": NameRule("name", 64, r"[\w+=,.@-]+", "IAM CreateRole RoleName"),
    "aws:sqs/queue:Queue": NameRule("name", 80, r"[A-Za-z0-9_-]+(\.fifo)?", "SQS CreateQueue QueueName"),
    "aws:s3/bucket:Bucket": NameRule("bucketPrefix", 37, r"[a-z0-9][a-z0-9.-]*", "pulumi-aws s3 bucket_prefix"),
    "aws:cloudwatch/eventRule:EventRule": NameRule("name", 64, r"[\w.-]+", "EventBridge PutRule Name"),
    "aws:eks/nodeGroup:NodeGroup": NameRule("nodeGroupName", 63, r"[A-Za-z0-9][\w-]*", "EKS CreateNodegroup"),
    "aws:kms/alias:Alias": NameRule("name", 256, r"alias/[\w/-]+", "KMS CreateAlias AliasName"),
}
S3_BUCKET_NAME = (3, 63, r"[a-z0-9][a-z0-9.-]*[a-z0-9]")
PROVIDER_UNIQUE_SUFFIX = 26  # what the provider appends to a bucket_prefix


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


def violations(resources) -> tuple[list[str], int]:
    found, checked = [], 0
    for r in resources:
        rule = AWS_LIMITS.get(r.type)
        value = rule and r.inputs.get(rule.key)
        if value is None:
            continue  # auto-named by Pulumi from the (short) logical name
        checked += 1
        if len(value) > rule.most or not re.fullmatch(rule.allowed, value):
            found.append(
                f"{r.type} {r.name}: {rule.key}={value!r} ({len(value)} chars; {rule.source} allows {rule.most})"
            )
        if r.type == "aws:sqs/queue:Queue" and r.inputs.get("fifoQueue") and not value.endswith(".fifo"):
            found.append(f"{r.name}: a FIFO queue's name must end in .fifo (got {value!r})")
    return found, checked


def test_names_fit_aws_limits_at_the_longest_config() -> None:
    found, checked = violations(plan_of(longest_names_config(), stack="longest").resources)
    assert not found, "names over AWS's limits:\n" + "\n".join(found)
    assert checked >= 10, f"expected at least 10 explicitly named AWS resources, checked {checked}"


def test_the_longest_bucket_prefix_still_makes_a_valid_bucket_name() -> None:
    plan = plan_of(longest_names_config(), stack="longest")
    prefixes = [r.inputs["bucketPrefix"] for r in plan.resources if r.type == "aws:s3/bucket:Bucket"]
    assert prefixes, "expected the batch jobs' results buckets"
    least, most, allowed = S3_BUCKET_NAME
    for prefix in prefixes:
        name = prefix + "0" * PROVIDER_UNIQUE_SUFFIX  # the provider's suffix is lowercase hex and digits
        assert least <= len(name) <= most and re.fullmatch(allowed, name), f"bucket {name!r} from prefix {prefix!r}"


@pytest.mark.parametrize(
    ("constant", "aws_limit"),
    [("IAM_ROLE", 64), ("SQS_QUEUE", 80), ("S3_BUCKET_PREFIX", 37)],
)
def test_naming_limits_do_not_exceed_aws(constant: str, aws_limit: int) -> None:
    assert getattr(naming, constant) <= aws_limit, f"domain.naming.{constant} is above AWS's limit of {aws_limit}"


def test_names_that_fit_are_kept_as_they_read() -> None:
    assert (
        naming.bounded("gpuinf-dev-offline-scoring", "-worker", naming.IAM_ROLE) == "gpuinf-dev-offline-scoring-worker"
    )


@pytest.mark.parametrize("suffix", ["", "-dlq", "-worker"])
def test_long_names_are_cut_and_stay_distinct(suffix: str) -> None:
    a = naming.bounded("c" * 38 + "-" + "a" * 40, suffix, 64)
    b = naming.bounded("c" * 38 + "-" + "a" * 39 + "b", suffix, 64)
    assert len(a) == len(b) == 64 and a != b and a.endswith(suffix)
