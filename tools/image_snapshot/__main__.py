#!/usr/bin/env python3
"""Build an EBS snapshot whose containerd image store already holds the inference images.

A GPU node whose EC2NodeClass maps a volume from this snapshot as /dev/xvdb
starts with the images on disk instead of pulling 10-20 GB per image (see
docs/image-snapshot.md and domain/image_cache.py).

What it does, in order: resolve the EKS-optimized AMI (AL2023 or Bottlerocket)
from its SSM public parameter; launch a temporary instance (IMDSv2 only, no
key pair, no inbound rules, tagged with the build ID) with a blank data volume;
through SSM Run Command prepare the volume, pull every image into containerd's
`k8s.io` namespace, check them and flush the volume; stop the instance;
snapshot the data volume with tags naming its images and content hash; wait for
the snapshot. The instance and its security group are deleted afterwards
whatever happened, and a snapshot of a failed build is deleted too.

`--dry-run` prints that plan (every AWS call with its parameters, every shell
script) without touching AWS; `--json` prints it, or the result, as JSON.
Exit codes: 0 done, 1 AWS or build failure, 2 bad arguments.

    python tools/image_snapshot --region us-west-2 \\
        --instance-profile image-snapshot-builder \\
        --image 123456789012.dkr.ecr.us-west-2.amazonaws.com/llm:1.4.2 --dry-run
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import yaml

from domain import amis, catalog, image_cache, settings, versions
from domain.images import ImageRef, InvalidImageRef

EXIT_FAILED = 1

TAG_PREFIX = "gpu-inference/"
BUILD_TAG = f"{TAG_PREFIX}image-snapshot-build"
MAX_IMAGES = 30  # one tag per image; EC2 allows 50 tags per resource
MAX_EXTRA_TAGS = 10
DEFAULT_INSTANCE_TYPES = {"x86_64": "m6i.xlarge", "arm64": "m7g.xlarge"}
DEFAULT_VOLUME_GIB = 200  # the same default as imageCache.volumeGib
BOTTLEROCKET_CTR = "apiclient exec admin sheltie ctr -a /run/containerd/containerd.sock -n k8s.io"
# Builder user data for Bottlerocket: the admin container gives SSM commands a
# root shell on the host (`apiclient exec admin sheltie ...`).
BOTTLEROCKET_BUILDER_USER_DATA = "[settings.host-containers.admin]\nenabled = true\n"
PULL_TIMEOUT_S = 3600
SSM_ONLINE_TIMEOUT_S = 900
INSTANCE_TIMEOUT_S = 900
SNAPSHOT_TIMEOUT_S = 4 * 3600
OUTPUT_MARKER = "image-snapshot-output:"
# Warn when the images fill more of the volume than this: kubelet's image GC
# starts deleting unused images at 85% of the image filesystem by default.
USAGE_WARNING = 0.7

REGION = re.compile(settings.REGION)
DNS_LABEL = re.compile(settings.DNS_LABEL)
SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
INSTANCE_PROFILE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:instance-profile/[\w+=,.@/-]{1,128}$")
INSTANCE_PROFILE_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
TAG_KEY = re.compile(r"^[\w .:/=+@-]{1,128}$")
TAG_VALUE = re.compile(r"^[\w .:/=+@-]{0,256}$")
ECR_HOST = re.compile(r"^[0-9]{12}\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
AL2023_RELEASE = re.compile(r"^v[0-9]{8}$")
BOTTLEROCKET_RELEASE = re.compile(r"^v?[0-9]+\.[0-9]+\.[0-9]+$")
PLACEHOLDER = re.compile(r"\{\{([a-z0-9_.:-]+)\}\}")
ECR_SECRET = "ecr-password:"


class UsageError(ValueError):
    """A bad command line: the message says which argument, what it got and what is allowed."""


class BuildError(RuntimeError):
    """A step on AWS or on the instance failed."""


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    region: str
    images: tuple[str, ...]  # normalized (fully qualified) references, in pull order
    instance_profile: str
    subnet_id: str | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPES["x86_64"]
    ami_family: Literal["al2023", "bottlerocket"] = "al2023"
    kubernetes_version: str = versions.DEFAULT_KUBERNETES_VERSION
    ami_release: str = versions.EKS_AMI_RELEASE
    arch: Literal["x86_64", "arm64"] = "x86_64"
    volume_gib: int = DEFAULT_VOLUME_GIB
    pool: str = "gpu"
    extra_tags: tuple[tuple[str, str], ...] = ()
    mutable_tags: bool = False  # some image uses `latest` or no tag (allowed by --allow-mutable-tags)
    build_id: str = "manual"

    @property
    def content_hash(self) -> str:
        return image_cache.content_hash(self.images, ami_family=self.ami_family, arch=self.arch)

    @property
    def platform(self) -> str:
        return image_cache.PLATFORMS[self.arch]


def _region(value: str) -> str:
    if not REGION.match(value):
        raise argparse.ArgumentTypeError(f"must be an AWS region such as us-west-2 (got {value!r})")
    return value


def _volume_gib(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of GiB (got {value!r})") from None
    if not 20 <= size <= 16_384:
        raise argparse.ArgumentTypeError(f"must be between 20 and 16384 GiB (got {size})")
    return size


def _subnet(value: str) -> str:
    if not SUBNET_ID.match(value):
        raise argparse.ArgumentTypeError(f"must be a subnet ID such as subnet-0123456789abcdef0 (got {value!r})")
    return value


def _instance_type(value: str) -> str:
    if not INSTANCE_TYPE.match(value):
        raise argparse.ArgumentTypeError(f"must be an EC2 instance type such as m6i.xlarge (got {value!r})")
    return value


def _instance_profile(value: str) -> str:
    if not (INSTANCE_PROFILE_ARN.match(value) or INSTANCE_PROFILE_NAME.match(value)):
        raise argparse.ArgumentTypeError(f"must be an IAM instance profile name or ARN (got {value!r})")
    return value


def _pool(value: str) -> str:
    if not DNS_LABEL.match(value):
        raise argparse.ArgumentTypeError(f"must be a node pool name such as gpu (got {value!r})")
    return value


def _tag(value: str) -> tuple[str, str]:
    key, sep, tag_value = value.partition("=")
    if not sep or not TAG_KEY.match(key) or not TAG_VALUE.match(tag_value):
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE with EC2 tag characters (got {value!r})")
    if key.lower().startswith("aws:") or key.startswith(TAG_PREFIX) or key == "Name":
        raise argparse.ArgumentTypeError(f"key {key!r} is reserved (aws:, {TAG_PREFIX}, Name)")
    return key, tag_value


def check_image(ref: str, allow_mutable: bool) -> str:
    """The normalized reference of a valid `--image`; UsageError otherwise."""
    try:
        image = ImageRef.parse(ref)
    except InvalidImageRef:
        raise UsageError(
            f"--image {ref!r} is not an image reference such as registry/name:1.2.3 or registry/name@sha256:<64 hex>"
        ) from None
    if not image.pinned and not allow_mutable:
        if image.tag is None:
            raise UsageError(f"--image {ref!r} has no tag; pin a version tag or a digest, or pass --allow-mutable-tags")
        raise UsageError(
            f"--image {ref!r} uses the mutable tag latest; pin a version tag or a digest, or pass --allow-mutable-tags"
        )
    return image.normalized


def _is_mutable(normalized: str) -> bool:
    return "@" not in normalized and normalized.endswith(":latest")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="build_image_snapshot.py",
        description="Build an EBS snapshot whose containerd store holds the given images (docs/image-snapshot.md).",
    )
    p.add_argument("--region", required=True, type=_region, help="AWS region to build in, e.g. us-west-2")
    p.add_argument(
        "--image",
        dest="images",
        action="append",
        required=True,
        metavar="IMG",
        help="image to pull (repeat; pulled in this order); tag or digest pinned",
    )
    p.add_argument(
        "--instance-profile",
        required=True,
        type=_instance_profile,
        help="instance profile (name or ARN) for the builder: SSM managed instance + ECR read",
    )
    p.add_argument(
        "--subnet-id", type=_subnet, help="subnet with a route to the registries and SSM (default VPC if omitted)"
    )
    p.add_argument(
        "--instance-type", type=_instance_type, help="builder type (default m6i.xlarge / m7g.xlarge by arch)"
    )
    p.add_argument("--ami-family", choices=image_cache.AMI_FAMILIES, default="al2023")
    p.add_argument(
        "--kubernetes-version", choices=versions.KUBERNETES_VERSIONS, default=versions.DEFAULT_KUBERNETES_VERSION
    )
    p.add_argument(
        "--ami-release",
        help=f"AMI release: vYYYYMMDD for al2023 (default {versions.EKS_AMI_RELEASE}, the node classes' release),"
        " X.Y.Z for bottlerocket (default latest), or latest",
    )
    p.add_argument("--arch", choices=image_cache.ARCHITECTURES, default="x86_64")
    p.add_argument("--volume-gib", type=_volume_gib, default=DEFAULT_VOLUME_GIB, help="data volume size (20-16384)")
    p.add_argument("--pool", type=_pool, default="gpu", help="node pool named in the printed stack config")
    p.add_argument("--tag", dest="tags", action="append", type=_tag, default=[], metavar="KEY=VALUE")
    p.add_argument("--allow-mutable-tags", action="store_true", help="accept `latest` and untagged images")
    p.add_argument("--dry-run", action="store_true", help="print the plan; call nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def options_from_args(args: argparse.Namespace, build_id: str) -> Options:
    """Cross-argument checks; UsageError names the argument."""
    images = [check_image(ref, args.allow_mutable_tags) for ref in args.images]
    dupes = sorted({i for i in images if images.count(i) > 1})
    if dupes:
        raise UsageError(f"--image lists {', '.join(dupes)} more than once")
    if len(images) > MAX_IMAGES:
        raise UsageError(f"--image may be given at most {MAX_IMAGES} times (got {len(images)})")
    if len(args.tags) > MAX_EXTRA_TAGS:
        raise UsageError(f"--tag may be given at most {MAX_EXTRA_TAGS} times (got {len(args.tags)})")
    release = args.ami_release or (versions.EKS_AMI_RELEASE if args.ami_family == "al2023" else "latest")
    pattern, example = (
        (AL2023_RELEASE, "v20260512") if args.ami_family == "al2023" else (BOTTLEROCKET_RELEASE, "1.42.0")
    )
    if release != "latest" and not pattern.match(release):
        raise UsageError(f"--ami-release for {args.ami_family} must be latest or like {example} (got {release!r})")
    instance_type = args.instance_type or DEFAULT_INSTANCE_TYPES[args.arch]
    family = catalog.split_instance_type(instance_type)
    known = catalog.FAMILIES.get(family[0]) if family else None
    wanted = "amd64" if args.arch == "x86_64" else "arm64"
    if known is not None and known.arch != wanted:
        raise UsageError(f"--instance-type {instance_type} is {known.arch} but --arch is {args.arch}")
    return Options(
        region=args.region,
        images=tuple(images),
        instance_profile=args.instance_profile,
        subnet_id=args.subnet_id,
        instance_type=instance_type,
        ami_family=args.ami_family,
        kubernetes_version=args.kubernetes_version,
        ami_release=release,
        arch=args.arch,
        volume_gib=args.volume_gib,
        pool=args.pool,
        extra_tags=tuple(args.tags),
        mutable_tags=any(_is_mutable(i) for i in images),
        build_id=build_id,
    )


# ---------------------------------------------------------------- plan


def ref(name: str) -> str:
    """Placeholder for a value known only while running (an ID an earlier step returns)."""
    return "{{" + name + "}}"


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


def ami_parameter(family: str, kubernetes_version: str, arch: str, release: str) -> str:
    """SSM public parameter of the builder AMI: the standard variant, as Karpenter resolves aliases."""
    return amis.ssm_parameter(f"{family}@{release}", kubernetes_version, arch, gpu=False)


def ecr_region(image: str) -> str | None:
    """Region of a private ECR registry, None for any other registry (pulled anonymously)."""
    match = ECR_HOST.match(image.split("/", 1)[0])
    return match["region"] if match else None


def _tags(pairs: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in pairs.items()]


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


def _verify_lines(ctr: str, expected: Sequence[str]) -> list[str]:
    refs = " ".join(shlex.quote(r) for r in expected)
    return [
        f"names=$({ctr} images ls -q)",
        "missing=0",
        f"for ref in {refs}; do",
        '  if ! printf "%s\\n" "$names" | grep -Fxq "$ref"; then echo "missing from the store: $ref" >&2; missing=1; fi',
        "done",
        '[ "$missing" -eq 0 ]',
        f"{ctr} images ls",
    ]


def al2023_prepare_script() -> str:
    """Blank data volume -> XFS labelled for the node's mount, seeded with the AMI's store, mounted for containerd."""
    label, root = image_cache.FILESYSTEM_LABEL, image_cache.CONTAINERD_ROOT
    return "\n".join(
        [
            "set -eu",
            f"vol={ref('data_volume_id')}",
            "# udev names the volume by its block device mapping (ec2-utils) and, on Nitro, by its volume ID",
            'by_id="/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${vol%%-*}${vol#*-}"',
            "dev=",
            "for _ in $(seq 1 120); do",
            f'  for candidate in {image_cache.DATA_DEVICE} "$by_id"; do',
            '    if [ -b "$candidate" ]; then dev=$(readlink -f "$candidate"); break 2; fi',
            "  done",
            "  sleep 1",
            "done",
            '[ -n "$dev" ] || { echo "data volume $vol is not attached" >&2; exit 1; }',
            'if [ -n "$(blkid -o value -s TYPE "$dev" || true)" ]; then echo "$dev already holds a filesystem" >&2; exit 1; fi',
            "if systemctl is-active --quiet containerd; then systemctl stop containerd; fi",
            f'mkfs.{image_cache.FILESYSTEM_TYPE} -q -K -L {label} "$dev"',
            "seed=$(mktemp -d)",
            'mount "$dev" "$seed"',
            "# the AMI caches nodeadm's sandbox image in this store; the node needs it on the cache volume too",
            f'cp -a {root}/. "$seed"/',
            'umount "$seed"',
            'rmdir "$seed"',
            f'mount "$dev" {root}',
            "systemctl start containerd",
            "ctr version",
        ]
    )


def pull_script(options: Options, image: str) -> str:
    """Pull one image for the builder's platform into containerd's `k8s.io` namespace, unpacked for overlayfs."""
    region = ecr_region(image)
    lines = ["set -eu"]
    if options.ami_family == "al2023":
        ctr, user = f"ctr -n {image_cache.CRI_NAMESPACE}", ""
        if region:
            # The password never leaves the instance (instance profile credentials through IMDSv2).
            lines.append(f"token=$(aws ecr get-login-password --region {region})")
            user = ' --user "AWS:$token"'
    else:
        # Bottlerocket's SSM shell has no AWS CLI: the password comes from this machine
        # and is part of the command's parameters (docs/image-snapshot.md).
        ctr, user = BOTTLEROCKET_CTR, f" --user AWS:{ref(ECR_SECRET + region)}" if region else ""
    lines += [
        # ctr redraws its progress table many times a second: keep only the end of it
        "log=$(mktemp)",
        """trap 'tail -n 20 "$log"; rm -f "$log"' EXIT""",
        f"{ctr} images pull --snapshotter overlayfs --platform {options.platform}"
        f' --label {image_cache.CRI_MANAGED_LABEL}{user} {shlex.quote(image)} > "$log" 2>&1',
    ]
    return "\n".join(lines)


def finish_script(options: Options) -> str:
    """Check every image is in the store, report the space used, flush the volume."""
    if options.ami_family == "al2023":
        root = image_cache.CONTAINERD_ROOT
        lines = [
            "set -eu",
            *_verify_lines(f"ctr -n {image_cache.CRI_NAMESPACE}", [*options.images, image_cache.AL2023_SANDBOX_IMAGE]),
        ]
        lines += [
            f"echo {OUTPUT_MARKER}used_bytes=$(df -B1 --output=used {root} | tail -n 1 | tr -d ' ')",
            "systemctl stop containerd",
            "sync",
            f"umount {root}",
        ]
        return "\n".join(lines)
    lines = ["set -eu", *_verify_lines(BOTTLEROCKET_CTR, options.images)]
    lines += [
        "used=$(apiclient exec admin sheltie df -B1 --output=used /var/lib/containerd | tail -n 1 | tr -d ' ') || used=",
        f'[ -z "$used" ] || echo {OUTPUT_MARKER}used_bytes=$used',
        "apiclient exec admin sheltie sync",
    ]
    return "\n".join(lines)


def bottlerocket_prepare_script() -> str:
    return "\n".join(
        [
            "set -eu",
            "# the admin container starts after the SSM agent: wait for a host shell",
            "for _ in $(seq 1 60); do apiclient exec admin sheltie true && break; sleep 5; done",
            "apiclient exec admin sheltie true",
            "# no cluster to join: keep kubelet (and its image GC) out of the way",
            "apiclient exec admin sheltie systemctl stop kubelet || true",
            f"{BOTTLEROCKET_CTR} version",
        ]
    )


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


def _build_tags(options: Options) -> dict[str, str]:
    """Tags of the temporary resources, so a leftover is easy to find: `BUILD_TAG=<build id>`."""
    return {
        "Name": f"gpu-inference-image-snapshot-{options.build_id}",
        BUILD_TAG: options.build_id,
        **dict(options.extra_tags),
    }


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
    prepare = al2023_prepare_script() if options.ami_family == "al2023" else bottlerocket_prepare_script()
    steps = [_shell("prepare the data volume", prepare, instance, 600)]
    count = len(options.images)
    steps += [
        _shell(f"pull image {n}/{count}: {image}", pull_script(options, image), instance, PULL_TIMEOUT_S)
        for n, image in enumerate(options.images, start=1)
    ]
    steps.append(_shell("check the images and flush the volume", finish_script(options), instance, 600, ["used_bytes"]))
    return steps


def _snapshot_steps(options: Options, tags: Mapping[str, str]) -> list[Step]:
    instance = ref("instance_id")
    description = (
        f"gpu-inference image cache: {_count(options.images)}, {options.ami_family} {options.arch},"
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


# ---------------------------------------------------------------- execution


def resolve(value: Any, lookup: Callable[[str], str]) -> Any:
    """`value` with every `{{name}}` replaced by `lookup(name)`."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: lookup(m[1]), value)
    if isinstance(value, list):
        return [resolve(v, lookup) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, lookup) for k, v in value.items()}
    return value


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


@dataclass
class Result:
    snapshot_id: str
    ami_id: str
    used_bytes: int | None
    context: dict[str, str]


class Executor:
    """Runs a Plan against AWS; cleanup steps run whatever happened to the build steps."""

    def __init__(
        self,
        client: Callable[..., Any],
        *,
        poll_s: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    ) -> None:
        self._client = client  # client(service, region=None) -> boto3 client
        self._poll_s = poll_s
        self._sleep = sleep
        self._log = log
        self._ecr_passwords: dict[str, str] = {}
        self.context: dict[str, str] = {}
        self.cleanup_error = ""  # set when a cleanup step failed; the build itself may have succeeded

    def run(self, plan: Plan) -> Result:
        failed = True
        cleanup_errors: list[str] = []
        try:
            for n, step in enumerate(plan.build, start=1):
                self._log(f"[{n}/{len(plan.build)}] {step.service}.{step.operation}: {step.title}")
                self._execute(step)
            failed = False
        finally:
            for step in plan.cleanup:
                if step.when == "on-failure" and not failed:
                    continue
                if any(name not in self.context for name in step.needs):
                    continue
                self._log(f"[cleanup] {step.service}.{step.operation}: {step.title}")
                try:
                    self._execute(step)
                except Exception as exc:  # keep cleaning up; report at the end
                    cleanup_errors.append(f"{step.operation}: {exc}")
            if cleanup_errors:
                temporary = ("instance_id", "data_volume_id", "security_group_id")
                leftovers = ", ".join(f"{k}={self.context[k]}" for k in temporary if k in self.context)
                self.cleanup_error = (
                    f"cleanup failed: {'; '.join(cleanup_errors)}. Delete by hand what is left of"
                    f" {leftovers} (tagged {BUILD_TAG}={plan.options.build_id})"
                )
                self._log(self.cleanup_error)
        used = self.context.get("used_bytes")
        return Result(
            self.context["snapshot_id"], self.context["ami_id"], int(used) if used else None, dict(self.context)
        )

    # -- one step

    def _lookup(self, name: str) -> str:
        if name.startswith(ECR_SECRET):
            return self._ecr_password(name[len(ECR_SECRET) :])
        if name not in self.context:
            raise BuildError(f"internal error: {name} is not known yet")
        return self.context[name]

    def _ecr_password(self, region: str) -> str:
        if region not in self._ecr_passwords:
            data = self._client("ecr", region=region).get_authorization_token()["authorizationData"][0]
            self._ecr_passwords[region] = base64.b64decode(data["authorizationToken"]).decode().partition(":")[2]
        return self._ecr_passwords[region]

    def _execute(self, step: Step) -> None:
        params = resolve(dict(step.params), self._lookup)
        client = self._client(step.service)
        if step.kind == "call":
            response = self._call(client, step, params)
            for name, path in step.outputs.items():
                value = _search(path, response)
                if not value:
                    raise BuildError(f"{step.operation} returned no {path}")
                self.context[name] = str(value)
                self._log(f"    {name} = {value}")
        elif step.kind == "wait" and step.service == "ssm":
            self._wait_ssm_online(client, params, step.timeout_s)
        elif step.kind == "wait":
            attempts = max(1, int(step.timeout_s / self._poll_s)) if self._poll_s else 3
            waiter = client.get_waiter(step.operation)
            waiter.wait(**params, WaiterConfig={"Delay": int(self._poll_s), "MaxAttempts": attempts})
        else:
            self._run_shell(client, step, params)

    def _call(self, client: Any, step: Step, params: dict) -> Any:
        method = getattr(client, _snake(step.operation))
        deadline = time.monotonic() + step.timeout_s
        while True:
            try:
                return method(**params)
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code not in step.retry_codes or time.monotonic() > deadline:
                    raise
                self._log(f"    {code}; retrying")
                self._sleep(self._poll_s or 1)

    def _wait_ssm_online(self, ssm: Any, params: dict, timeout_s: int) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            found = ssm.describe_instance_information(**params).get("InstanceInformationList", [])
            if any(i.get("PingStatus") == "Online" for i in found):
                return
            if time.monotonic() > deadline:
                raise BuildError(
                    f"the builder's SSM agent was not online after {timeout_s}s: check the instance profile"
                    " (AmazonSSMManagedInstanceCore) and the subnet's route to SSM (NAT or VPC endpoints)"
                )
            self._sleep(self._poll_s)

    def _run_shell(self, ssm: Any, step: Step, params: dict) -> None:
        command_id = ssm.send_command(**params)["Command"]["CommandId"]
        instance = params["InstanceIds"][0]
        deadline = time.monotonic() + step.timeout_s + 600
        while True:
            try:
                invocation = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance)
            except Exception as exc:  # InvocationDoesNotExist right after sending
                if "InvocationDoesNotExist" not in str(exc):
                    raise
                invocation = {"Status": "Pending"}
            status = invocation["Status"]
            if status not in ("Pending", "InProgress", "Delayed"):
                break
            if time.monotonic() > deadline:
                raise BuildError(f"{step.title}: still {status} after {step.timeout_s}s (command {command_id})")
            self._sleep(self._poll_s)
        out = invocation.get("StandardOutputContent", "")
        if status != "Success":
            output = "\n".join(t for t in (invocation.get("StandardErrorContent", ""), out) if t.strip())
            raise BuildError(f"{step.title}: {status} (command {command_id})\n{_tail(output)}")
        for line in out.splitlines():
            if line.startswith(OUTPUT_MARKER):
                name, _, value = line[len(OUTPUT_MARKER) :].partition("=")
                if name in step.outputs:
                    self.context[name] = value.strip()


def _search(path: str, response: Any) -> Any:
    import jmespath  # botocore's own dependency

    return jmespath.search(path, response)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def boto3_clients(region: str) -> Callable[..., Any]:
    import boto3

    session = boto3.session.Session(region_name=region)
    cache: dict[tuple[str, str], Any] = {}

    def client(service: str, region: str | None = None) -> Any:
        key = (service, region or session.region_name)
        if key not in cache:
            cache[key] = session.client(service, region_name=key[1])
        return cache[key]

    return client


# ---------------------------------------------------------------- output


def stack_config(options: Options, snapshot_id: str) -> dict:
    """The pool's `imageCache` block in `gpu-inference:nodePools`."""
    cache: dict[str, Any] = {"snapshotId": snapshot_id, "volumeGib": options.volume_gib}
    if not options.mutable_tags:  # settings reject `latest` in imageCache.images
        cache["images"] = list(options.images)
    return {"gpu-inference:nodePools": {options.pool: {"imageCache": cache}}}


def config_commands(options: Options, snapshot_id: str) -> list[str]:
    base = f"gpu-inference:nodePools.{options.pool}.imageCache"
    return [
        f"pulumi config set --path '{base}.snapshotId' {snapshot_id}",
        f"pulumi config set --path '{base}.volumeGib' {options.volume_gib}",
    ]


def render_plan(plan: Plan) -> str:
    o = plan.options
    lines = [
        f"Plan (dry run, nothing is called): {o.ami_family} {o.arch} image snapshot in {o.region}, build {o.build_id}",
        f"Images ({_count(o.images)}, content hash {o.content_hash}):",
        *(f"  - {image}" for image in o.images),
        "",
        "Build steps:",
    ]
    for n, step in enumerate(plan.build, start=1):
        lines += _render_step(f"{n:>3}.", step)
    lines += ["", "Cleanup steps (run even when a build step fails):"]
    for n, step in enumerate(plan.cleanup, start=1):
        lines += _render_step(f" c{n}.", step)
    lines += ["", "On success the stack config gets:", *(f"  {c}" for c in config_commands(o, ref("snapshot_id")))]
    return "\n".join(lines)


def _render_step(number: str, step: Step) -> list[str]:
    head = f"{number} {step.service}.{step.operation}" + (" (waiter)" if step.kind == "wait" else "")
    notes = [step.title]
    if step.when == "on-failure":
        notes.append("only if the build failed")
    if step.outputs and step.kind != "shell":
        notes.append("-> " + ", ".join(step.outputs))
    lines = [f"{head}: {'; '.join(notes)}"]
    pad = " " * (len(number) + 1)
    if step.kind == "shell":
        lines.append(f"{pad}instance {step.params['InstanceIds'][0]}, timeout {step.timeout_s}s, script:")
        lines += [f"{pad}  | {line}" for line in step.script.splitlines()]
    else:
        lines += [f"{pad}{line}" for line in json.dumps(step.params, indent=2).splitlines()]
    return lines


def _count(images: Sequence[str]) -> str:
    return f"{len(images)} image" + ("" if len(images) == 1 else "s")


def render_result(options: Options, result: Result) -> str:
    snippet = yaml.safe_dump({"config": stack_config(options, result.snapshot_id)}, sort_keys=False)
    lines = [
        f"Snapshot {result.snapshot_id} is ready ({_count(options.images)}, content hash {options.content_hash},"
        f" built on {result.ami_id}).",
        "",
        "Set it on the stack:",
        *(f"  {c}" for c in config_commands(options, result.snapshot_id)),
        "",
        "or in Pulumi.<stack>.yaml (merge into the existing pool):",
        *(f"  {line}" for line in snippet.splitlines()),
    ]
    if options.ami_family == "bottlerocket":
        lines.append("The pool's amiAlias must be bottlerocket@...: this snapshot holds a Bottlerocket data volume.")
    return "\n".join(lines)


def _usage_warning(options: Options, used_bytes: int | None) -> str | None:
    if used_bytes is None:
        return None
    share = used_bytes / (options.volume_gib * 2**30)
    if share <= USAGE_WARNING:
        return None
    return (
        f"warning: the images fill {share:.0%} of the {options.volume_gib} GiB volume; kubelet starts deleting"
        " unused images at 85% of the image filesystem: give nodes a larger volumeGib, or rebuild with --volume-gib"
    )


def default_build_id() -> str:
    """Unique per run: names the temporary resources and is RunInstances' idempotency token."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def main(
    argv: Sequence[str] | None = None,
    *,
    clients: Callable[[str], Callable[..., Any]] = boto3_clients,
    poll_s: float = 15.0,
) -> int:
    p = parser()
    args = p.parse_args(argv)  # exits 2 with argparse's message on a bad argument
    try:
        options = options_from_args(args, default_build_id())
    except UsageError as exc:
        p.error(str(exc))
    plan = build_plan(options)
    if args.dry_run:
        print(json.dumps(plan.as_dict(), indent=2) if args.json else render_plan(plan))
        return 0
    executor = Executor(clients(options.region), poll_s=poll_s)
    try:
        result = executor.run(plan)
    except KeyboardInterrupt:
        print("interrupted; cleanup ran (see above)", file=sys.stderr)
        return 130
    except Exception as exc:  # botocore errors, waiter timeouts, failed shell steps
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    warning = _usage_warning(options, result.used_bytes)
    if warning:
        print(warning, file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {
                    "snapshotId": result.snapshot_id,
                    "amiId": result.ami_id,
                    "contentHash": options.content_hash,
                    "images": list(options.images),
                    "usedBytes": result.used_bytes,
                    "tags": resolve(plan.snapshot_tags, result.context.__getitem__),
                    "stackConfig": stack_config(options, result.snapshot_id),
                },
                indent=2,
            )
        )
    else:
        print(render_result(options, result))
    if executor.cleanup_error:
        print(f"error: {executor.cleanup_error}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
