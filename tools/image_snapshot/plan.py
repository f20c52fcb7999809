"""The build as data: every AWS call, waiter and shell script, in order, with its parameters.

`build_plan(options)` is pure: `--dry-run` prints its result and a real run hands
the same object to the executor, so what a dry run shows is what a build does.
Parameters may hold `{{name}}` placeholders (placeholders.py) for values that an
earlier step returns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from domain import amis, image_cache
from tools.image_snapshot import scripts
from tools.image_snapshot.options import Options, count_images
from tools.image_snapshot.placeholders import ref

TAG_PREFIX = "gpu-inference/"
BUILD_TAG = f"{TAG_PREFIX}image-snapshot-build"
# Builder user data for Bottlerocket: the admin container gives SSM commands a
# root shell on the host (`apiclient exec admin sheltie ...`).
BOTTLEROCKET_BUILDER_USER_DATA = "[settings.host-containers.admin]\nenabled = true\n"
PULL_TIMEOUT_S = 3600
SSM_ONLINE_TIMEOUT_S = 900
INSTANCE_TIMEOUT_S = 900
SNAPSHOT_TIMEOUT_S = 4 * 3600


@dataclass(frozen=True)
class Step:
    """One AWS call, waiter or SSM shell script. Params may hold `{{name}}` placeholders."""

    kind: Literal["call", "wait", "shell"]
    service: str
    operation: str  # API operation; the waiter's name for `wait`
    title: str
    params: Mapping[str, Any]
    outputs: Mapping[str, str] = field(default_factory=dict)  # name -> JMESPath (call) or "" (shell)
    when: Literal["always", "on-failure"] = "always"  # cleanup steps only
    needs: tuple[str, ...] = ()  # a cleanup step runs only when these are known
    timeout_s: int = 0
    retry_codes: tuple[str, ...] = ()  # AWS error codes that mean "not yet": retried until timeout_s

    @property
    def script(self) -> str:
        """The shell script of a `shell` step."""
        return "\n".join(self.params["Parameters"]["commands"])

    def as_dict(self) -> dict:
        out = asdict(self)
        out["params"] = json.loads(json.dumps(self.params))
        out["outputs"] = dict(self.outputs)
        out["needs"] = list(self.needs)
        return out


@dataclass(frozen=True)
class Plan:
    options: Options
    ami_parameter: str
    snapshot_tags: dict[str, str]
    build: tuple[Step, ...]
    cleanup: tuple[Step, ...]

    def as_dict(self) -> dict:
        return {
            "dryRun": True,
            "options": {**asdict(self.options), "extra_tags": dict(self.options.extra_tags)},
            "contentHash": self.options.content_hash,
            "amiParameter": self.ami_parameter,
            "snapshotTags": self.snapshot_tags,
            "build": [s.as_dict() for s in self.build],
            "cleanup": [s.as_dict() for s in self.cleanup],
        }


def build_plan(options: Options) -> Plan:
    """Every step, in order, with its parameters: what --dry-run prints and what a real run executes."""
    parameter = ami_parameter(options.ami_family, options.kubernetes_version, options.arch, options.ami_release)
    tags = snapshot_tags(options)
    build = (
        Step(
            "call", "ssm", "GetParameter", "resolve the builder AMI", {"Name": parameter}, {"ami_id": "Parameter.Value"}
        ),
        *_launch_steps(options),
        *_image_steps(options),
        *_snapshot_steps(options, tags),
    )
    return Plan(options, parameter, tags, build, _cleanup_steps())


def ami_parameter(family: str, kubernetes_version: str, arch: str, release: str) -> str:
    """SSM public parameter of the builder AMI: the standard variant, as Karpenter resolves aliases."""
    return amis.ssm_parameter(f"{family}@{release}", kubernetes_version, arch, gpu=False)


def snapshot_tags(options: Options) -> dict[str, str]:
    tags = {
        "Name": f"gpu-inference-images-{options.content_hash[:12]}",
        f"{TAG_PREFIX}purpose": "image-cache",
        f"{TAG_PREFIX}content-hash": options.content_hash,
        f"{TAG_PREFIX}ami-family": options.ami_family,
        f"{TAG_PREFIX}arch": options.arch,
        f"{TAG_PREFIX}kubernetes-version": options.kubernetes_version,
        f"{TAG_PREFIX}ami-id": ref("ami_id"),
        f"{TAG_PREFIX}image-count": str(len(options.images)),
        BUILD_TAG: options.build_id,
    }
    tags.update({f"{TAG_PREFIX}image-{n:02d}": image for n, image in enumerate(options.images, start=1)})
    tags.update(dict(options.extra_tags))
    return tags


def _tags(pairs: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in pairs.items()]


def _build_tags(options: Options) -> dict[str, str]:
    """Tags of the temporary resources, so a leftover is easy to find: `BUILD_TAG=<build id>`."""
    return {
        "Name": f"gpu-inference-image-snapshot-{options.build_id}",
        BUILD_TAG: options.build_id,
        **dict(options.extra_tags),
    }


def _shell(title: str, script: str, instance: str, timeout_s: int, outputs: Sequence[str] = ()) -> Step:
    return Step(
        kind="shell",
        service="ssm",
        operation="SendCommand",
        title=title,
        params={
            "DocumentName": "AWS-RunShellScript",
            "InstanceIds": [instance],
            "Comment": title[:100],
            "TimeoutSeconds": 600,  # to reach the instance, not to run
            "Parameters": {"commands": script.splitlines(), "executionTimeout": [str(timeout_s)]},
        },
        outputs={name: "" for name in outputs},
        timeout_s=timeout_s,
    )


def _launch_steps(options: Options) -> list[Step]:
    instance, tags = ref("instance_id"), _build_tags(options)
    steps: list[Step] = []
    group: dict[str, Any] = {
        "GroupName": f"gpu-inference-image-snapshot-{options.build_id}",
        "Description": "gpu-inference image snapshot builder: no inbound, all outbound",
        "TagSpecifications": [{"ResourceType": "security-group", "Tags": _tags(tags)}],
    }
    if options.subnet_id:
        steps.append(
            Step(
                "call",
                "ec2",
                "DescribeSubnets",
                "find the subnet's VPC",
                {"SubnetIds": [options.subnet_id]},
                {"vpc_id": "Subnets[0].VpcId"},
            )
        )
        group["VpcId"] = ref("vpc_id")
    steps.append(
        Step(
            "call",
            "ec2",
            "CreateSecurityGroup",
            "security group without inbound rules",
            group,
            {"security_group_id": "GroupId"},
        )
    )
    steps += [
        Step(
            "call",
            "ec2",
            "RunInstances",
            "launch the builder",
            _run_instances(options, tags),
            {"instance_id": "Instances[0].InstanceId"},
        ),
        Step(
            "wait",
            "ec2",
            "instance_running",
            "wait for it to run",
            {"InstanceIds": [instance]},
            timeout_s=INSTANCE_TIMEOUT_S,
        ),
        Step(
            "wait",
            "ssm",
            "instance_online",
            "wait for its SSM agent (DescribeInstanceInformation until PingStatus is Online)",
            {"Filters": [{"Key": "InstanceIds", "Values": [instance]}]},
            timeout_s=SSM_ONLINE_TIMEOUT_S,
        ),
        Step(
            "call",
            "ec2",
            "DescribeInstances",
            "find the data volume",
            {"InstanceIds": [instance]},
            {
                "data_volume_id": "Reservations[0].Instances[0].BlockDeviceMappings"
                f"[?DeviceName=='{image_cache.DATA_DEVICE}'] | [0].Ebs.VolumeId"
            },
        ),
    ]
    return steps


def _run_instances(options: Options, tags: Mapping[str, str]) -> dict[str, Any]:
    profile_key = "Arn" if options.instance_profile.startswith("arn:") else "Name"
    data_volume = {
        "VolumeSize": options.volume_gib,
        "VolumeType": "gp3",
        "Iops": 3000,
        "Throughput": 500,  # pulls are throughput-bound
        "Encrypted": True,  # the snapshot, and every node volume made from it, stay encrypted
        "DeleteOnTermination": True,
    }
    params: dict[str, Any] = {
        "ImageId": ref("ami_id"),
        "InstanceType": options.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": options.build_id,
        "IamInstanceProfile": {profile_key: options.instance_profile},
        # IMDSv2 only; no key pair: the only way in is SSM.
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1},
        "SecurityGroupIds": [ref("security_group_id")],
        # The root volume keeps the AMI's mapping (deleted on termination on the EKS AMIs).
        "BlockDeviceMappings": [{"DeviceName": image_cache.DATA_DEVICE, "Ebs": data_volume}],
        # A shutdown from inside ends the builder for good; StopInstances (below) still stops it.
        "InstanceInitiatedShutdownBehavior": "terminate",
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": _tags(tags)},
            {"ResourceType": "volume", "Tags": _tags(tags)},
        ],
    }
    if options.subnet_id:
        params["SubnetId"] = options.subnet_id
    if options.ami_family == "bottlerocket":
        params["UserData"] = BOTTLEROCKET_BUILDER_USER_DATA
    return params


def _image_steps(options: Options) -> list[Step]:
    instance = ref("instance_id")
    steps = [_shell("prepare the data volume", scripts.prepare_script(options), instance, 600)]
    count = len(options.images)
    steps += [
        _shell(f"pull image {n}/{count}: {image}", scripts.pull_script(options, image), instance, PULL_TIMEOUT_S)
        for n, image in enumerate(options.images, start=1)
    ]
    steps.append(
        _shell("check the images and flush the volume", scripts.finish_script(options), instance, 600, ["used_bytes"])
    )
    return steps


def _snapshot_steps(options: Options, tags: Mapping[str, str]) -> list[Step]:
    instance = ref("instance_id")
    description = (
        f"gpu-inference image cache: {count_images(options.images)}, {options.ami_family} {options.arch},"
        f" content {options.content_hash[:16]}"
    )
    return [
        Step("call", "ec2", "StopInstances", "stop the builder", {"InstanceIds": [instance]}),
        Step(
            "wait",
            "ec2",
            "instance_stopped",
            "wait for it to stop",
            {"InstanceIds": [instance]},
            timeout_s=INSTANCE_TIMEOUT_S,
        ),
        Step(
            "call",
            "ec2",
            "CreateSnapshot",
            "snapshot the data volume",
            {
                "VolumeId": ref("data_volume_id"),
                "Description": description,
                "TagSpecifications": [{"ResourceType": "snapshot", "Tags": _tags(tags)}],
            },
            {"snapshot_id": "SnapshotId"},
        ),
        Step(
            "wait",
            "ec2",
            "snapshot_completed",
            "wait for the snapshot to complete",
            {"SnapshotIds": [ref("snapshot_id")]},
            timeout_s=SNAPSHOT_TIMEOUT_S,
        ),
    ]


def _cleanup_steps() -> tuple[Step, ...]:
    instance = ref("instance_id")
    return (
        Step(
            "call",
            "ec2",
            "DeleteSnapshot",
            "delete the snapshot of a failed build",
            {"SnapshotId": ref("snapshot_id")},
            when="on-failure",
            needs=("snapshot_id",),
        ),
        Step(
            "call",
            "ec2",
            "TerminateInstances",
            "terminate the builder (its volumes go with it)",
            {"InstanceIds": [instance]},
            needs=("instance_id",),
        ),
        Step(
            "wait",
            "ec2",
            "instance_terminated",
            "wait for it to terminate",
            {"InstanceIds": [instance]},
            needs=("instance_id",),
            timeout_s=INSTANCE_TIMEOUT_S,
        ),
        Step(
            "call",
            "ec2",
            "DeleteSecurityGroup",
            "delete the security group",
            {"GroupId": ref("security_group_id")},
            needs=("security_group_id",),
            timeout_s=300,
            # the terminated instance's network interface can hold the group for a while
            retry_codes=("DependencyViolation",),
        ),
    )
