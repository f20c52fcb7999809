"""Shared by the image-snapshot tests: options and plans as the command line builds them."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tools.image_snapshot import cli
from tools.image_snapshot.options import Options
from tools.image_snapshot.placeholders import PLACEHOLDER
from tools.image_snapshot.plan import Plan, Step, build_plan

REGION = "us-west-2"
ECR_IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/llm:1.4.2"
OTHER_ECR_IMAGE = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/embed:2.0.0"
DIGEST = "sha256:" + "ab" * 32
PUBLIC_IMAGE = f"nvcr.io/nvidia/tritonserver@{DIGEST}"


def options(*extra: str, images: tuple[str, ...] = (ECR_IMAGE, PUBLIC_IMAGE)) -> Options:
    """Options as the command line builds them (happy path plus `extra`)."""
    argv = ["--region", REGION, "--instance-profile", "image-builder", *extra]
    for image in images:
        argv += ["--image", image]
    return cli.options_from_args(cli.parser().parse_args(argv), build_id="test-build")


def plan(*extra: str, images: tuple[str, ...] = (ECR_IMAGE, PUBLIC_IMAGE)) -> Plan:
    return build_plan(options(*extra, images=images))


def steps(p: Plan, operation: str) -> list[Step]:
    return [s for s in p.build if s.operation == operation]


def one(p: Plan, operation: str) -> Step:
    found = steps(p, operation)
    assert len(found) == 1, f"expected one {operation} step, found {len(found)}"
    return found[0]


def shell_steps(p: Plan, prefix: str) -> list[Step]:
    return [s for s in p.build if s.kind == "shell" and s.title.startswith(prefix)]


def placeholders(value: Any) -> set[str]:
    return set(PLACEHOLDER.findall(json.dumps(value)))


def syntax_errors(script: str, shell: str) -> str:
    proc = subprocess.run([shell, "-n"], input=script, capture_output=True, text=True)
    return proc.stderr if proc.returncode else ""


def no_aws(region: str) -> Any:
    raise AssertionError(f"a dry run must not create AWS clients (asked for {region})")
