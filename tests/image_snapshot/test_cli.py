"""The command line (tools/image_snapshot/cli.py): arguments, their checks, the dry run, the entry points."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata

import pytest

from domain import image_cache, versions
from tests.image_snapshot.support import DIGEST, ECR_IMAGE, PUBLIC_IMAGE, REGION, no_aws, options
from tools.image_snapshot import cli, report
from tools.image_snapshot.options import MAX_IMAGES
from tools.plan.run import ROOT


def test_defaults() -> None:
    o = options()
    assert (o.ami_family, o.arch, o.kubernetes_version) == ("al2023", "x86_64", versions.DEFAULT_KUBERNETES_VERSION)
    assert o.ami_release == versions.EKS_AMI_RELEASE, "AL2023 builds default to the node classes' AMI release"
    assert (o.instance_type, o.volume_gib, o.pool, o.subnet_id) == ("m6i.xlarge", 200, "gpu", None)
    assert o.images == (ECR_IMAGE, PUBLIC_IMAGE), "images keep the order they were given in"


def test_defaults_per_arch_and_family() -> None:
    assert options("--arch", "arm64").instance_type == "m7g.xlarge"
    assert options("--ami-family", "bottlerocket").ami_release == "latest"
    assert options("--ami-family", "bottlerocket", "--ami-release", "1.42.0").ami_release == "1.42.0"


def test_image_references_are_normalized_as_the_kubelet_resolves_them() -> None:
    o = options(images=("nginx:1.27", f"ghcr.io/org/app:1.0@{DIGEST}"))
    assert o.images == ("docker.io/library/nginx:1.27", f"ghcr.io/org/app@{DIGEST}")


def test_mutable_tags_need_the_flag_and_keep_images_out_of_the_config() -> None:
    o = options("--allow-mutable-tags", images=("registry.example.com/llm", "registry.example.com/emb:latest"))
    assert o.images == ("registry.example.com/llm:latest", "registry.example.com/emb:latest")
    assert o.mutable_tags
    cache = report.stack_config(o, "snap-0123456789abcdef0")["gpu-inference:nodePools"]["gpu"]["imageCache"]
    assert "images" not in cache, "settings reject `latest` in imageCache.images, so the snippet must not carry them"


def test_pinned_images_are_not_mutable_even_with_the_flag() -> None:
    o = options("--allow-mutable-tags", images=("registry.example.com/llm:1.0", f"quay.io/o/m:latest@{DIGEST}"))
    assert not o.mutable_tags, "a digest pins an image whatever its tag says"


BAD_ARGUMENTS = [
    (["--region", "US-WEST-2"], "argument --region: must be an AWS region such as us-west-2 (got 'US-WEST-2')"),
    (["--image", "registry.example.com/llm:latest"], "uses the mutable tag latest"),
    (["--image", "registry.example.com/llm"], "has no tag; pin a version tag or a digest"),
    (["--image", "Registry/LLM:1"], "--image 'Registry/LLM:1' is not an image reference"),
    (["--image", "registry.example.com/llm@sha256:abc"], "is not an image reference"),
    (["--image", ECR_IMAGE], f"--image lists {ECR_IMAGE} more than once"),
    (["--image", "nginx:1.27", "--image", "docker.io/library/nginx:1.27"], "lists docker.io/library/nginx:1.27 more"),
    (["--volume-gib", "10"], "argument --volume-gib: must be between 20 and 16384 GiB (got 10)"),
    (["--volume-gib", "big"], "argument --volume-gib: must be a whole number of GiB (got 'big')"),
    (["--subnet-id", "sn-1"], "argument --subnet-id: must be a subnet ID"),
    (["--instance-type", "M6I"], "argument --instance-type: must be an EC2 instance type"),
    (["--arch", "arm64", "--instance-type", "m6i.xlarge"], "--instance-type m6i.xlarge is amd64 but --arch is arm64"),
    (["--instance-type", "g5g.xlarge"], "--instance-type g5g.xlarge is arm64 but --arch is x86_64"),
    (["--arch", "i386"], "argument --arch: invalid choice: 'i386'"),
    (["--ami-family", "al2"], "argument --ami-family: invalid choice: 'al2'"),
    (["--kubernetes-version", "1.20"], "argument --kubernetes-version: invalid choice: '1.20'"),
    (["--ami-release", "1.42.0"], "--ami-release for al2023 must be latest or like v20260512 (got '1.42.0')"),
    (["--ami-family", "bottlerocket", "--ami-release", "v20260512"], "--ami-release for bottlerocket must be latest"),
    (["--instance-profile", "role/with spaces"], "argument --instance-profile: must be an IAM instance profile"),
    (["--pool", "GPU_pool"], "argument --pool: must be a node pool name"),
    (["--tag", "novalue"], "argument --tag: must be KEY=VALUE"),
    (["--tag", "aws:owner=me"], "argument --tag: key 'aws:owner' is reserved"),
    (["--tag", "gpu-inference/purpose=x"], "key 'gpu-inference/purpose' is reserved"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS])
def test_bad_arguments_exit_2_with_a_clear_message(extra: list[str], message: str, capsys) -> None:
    argv = ["--region", REGION, "--instance-profile", "image-builder", "--image", ECR_IMAGE, "--dry-run", *extra]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv, clients=no_aws)
    err = capsys.readouterr().err
    assert exc.value.code == 2, f"expected exit 2 for {extra}, got {exc.value.code}: {err}"
    assert message in err, f"expected {message!r} in the error, got: {err}"


@pytest.mark.parametrize("missing", ["--region", "--instance-profile", "--image"])
def test_required_arguments(missing: str, capsys) -> None:
    argv = {"--region": REGION, "--instance-profile": "image-builder", "--image": ECR_IMAGE}
    argv.pop(missing)
    with pytest.raises(SystemExit) as exc:
        cli.main([*(x for kv in argv.items() for x in kv), "--dry-run"], clients=no_aws)
    assert exc.value.code == 2
    assert missing in capsys.readouterr().err


def test_image_and_tag_limits(capsys) -> None:
    images = [x for n in range(MAX_IMAGES + 1) for x in ("--image", f"registry.example.com/m{n}:1")]
    with pytest.raises(SystemExit) as exc:
        cli.main(["--region", REGION, "--instance-profile", "p", *images, "--dry-run"], clients=no_aws)
    assert exc.value.code == 2
    assert f"--image may be given at most {MAX_IMAGES} times (got {MAX_IMAGES + 1})" in capsys.readouterr().err


def test_dry_run_calls_nothing_and_prints_the_plan(capsys) -> None:
    argv = ["--region", REGION, "--instance-profile", "image-builder", "--image", ECR_IMAGE, "--dry-run"]
    assert cli.main(argv, clients=no_aws) == 0
    out = capsys.readouterr().out
    for expected in (
        "ssm.GetParameter",
        "ec2.RunInstances",
        "ssm.SendCommand",
        "ec2.CreateSnapshot",
        "c2. ec2.TerminateInstances",
    ):
        assert expected in out, f"{expected} missing from the dry-run text"


def test_dry_run_json_is_the_plan(capsys) -> None:
    argv = ["--region", REGION, "--instance-profile", "image-builder", "--image", ECR_IMAGE, "--dry-run", "--json"]
    assert cli.main(argv, clients=no_aws) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dryRun"] is True
    assert [s["operation"] for s in doc["build"]][:3] == ["GetParameter", "CreateSecurityGroup", "RunInstances"]
    assert [s["operation"] for s in doc["cleanup"]] == [
        "DeleteSnapshot",
        "TerminateInstances",
        "instance_terminated",
        "DeleteSecurityGroup",
    ]
    assert doc["contentHash"] == image_cache.content_hash([ECR_IMAGE], ami_family="al2023", arch="x86_64")
    assert re.fullmatch(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}", doc["options"]["build_id"])


def test_console_script_is_the_cli() -> None:
    (entry,) = [e for e in metadata.entry_points(group="console_scripts") if e.name == "gpuinf-image-snapshot"]
    assert entry.value == "tools.image_snapshot.__main__:main", f"pyproject.toml points the command at {entry.value}"
    assert entry.load() is cli.main


def test_python_dash_m_runs_a_dry_run() -> None:
    argv = ["--region", REGION, "--instance-profile", "image-builder", "--image", ECR_IMAGE, "--dry-run", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "tools.image_snapshot", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["build"][0]["operation"] == "GetParameter"
