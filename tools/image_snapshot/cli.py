"""The command line: `gpuinf-image-snapshot` / `python -m tools.image_snapshot`.

    gpuinf-image-snapshot --region us-west-2 \\
        --instance-profile image-snapshot-builder \\
        --image 123456789012.dkr.ecr.us-west-2.amazonaws.com/llm:1.4.2 --dry-run

`--dry-run` prints the plan (every AWS call with its parameters, every shell
script) without touching AWS; `--json` prints it, or the result, as JSON.
Exit codes: 0 done, 1 AWS or build failure, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from domain import catalog, image_cache, versions
from domain.images import ImageRef, InvalidImageRef
from domain.settings import DNS_LABEL, REGION
from tools.image_snapshot import report
from tools.image_snapshot.executor import Executor, boto3_clients
from tools.image_snapshot.options import (
    DEFAULT_INSTANCE_TYPES,
    DEFAULT_VOLUME_GIB,
    MAX_EXTRA_TAGS,
    MAX_IMAGES,
    Options,
)
from tools.image_snapshot.plan import TAG_PREFIX, build_plan

EXIT_FAILED = 1
PROG = "gpuinf-image-snapshot"

REGION_NAME = re.compile(REGION)
POOL_NAME = re.compile(DNS_LABEL)
SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
INSTANCE_PROFILE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:instance-profile/[\w+=,.@/-]{1,128}$")
INSTANCE_PROFILE_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
TAG_KEY = re.compile(r"^[\w .:/=+@-]{1,128}$")
TAG_VALUE = re.compile(r"^[\w .:/=+@-]{0,256}$")
AL2023_RELEASE = re.compile(r"^v[0-9]{8}$")
BOTTLEROCKET_RELEASE = re.compile(r"^v?[0-9]+\.[0-9]+\.[0-9]+$")


class UsageError(ValueError):
    """A bad command line: the message says which argument, what it got and what is allowed."""


# -- one argument each (argparse turns ArgumentTypeError into `argument --x: <message>`, exit 2)


def _region(value: str) -> str:
    if not REGION_NAME.match(value):
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
    if not POOL_NAME.match(value):
        raise argparse.ArgumentTypeError(f"must be a node pool name such as gpu (got {value!r})")
    return value


def _tag(value: str) -> tuple[str, str]:
    key, sep, tag_value = value.partition("=")
    if not sep or not TAG_KEY.match(key) or not TAG_VALUE.match(tag_value):
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE with EC2 tag characters (got {value!r})")
    if key.lower().startswith("aws:") or key.startswith(TAG_PREFIX) or key == "Name":
        raise argparse.ArgumentTypeError(f"key {key!r} is reserved (aws:, {TAG_PREFIX}, Name)")
    return key, tag_value


def check_image(ref: str, allow_mutable: bool) -> ImageRef:
    """The parsed reference of a valid `--image`; UsageError otherwise."""
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
    return image


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
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
    parsed = [check_image(ref, args.allow_mutable_tags) for ref in args.images]
    images = [image.normalized for image in parsed]
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
        mutable_tags=not all(image.pinned for image in parsed),
        build_id=build_id,
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
        print(json.dumps(plan.as_dict(), indent=2) if args.json else report.render_plan(plan))
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
    warning = report.usage_warning(options, result.used_bytes)
    if warning:
        print(warning, file=sys.stderr)
    print(report.result_json(plan, result) if args.json else report.render_result(options, result))
    if executor.cleanup_error:
        print(f"error: {executor.cleanup_error}", file=sys.stderr)
        return EXIT_FAILED
    return 0
