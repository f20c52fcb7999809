"""The image-snapshot build script and the node-side pieces in domain/image_cache.py.

The script is tested through its plan (what --dry-run prints is what a real run
executes), through its command line, and end to end against moto. moto runs
the EC2 part for real (RunInstances, Stop, CreateSnapshot, Terminate, security
groups, tags) and accepts SendCommand / GetCommandInvocation (it executes
nothing and reports Success); it has no EKS or Bottlerocket public SSM
parameters (and refuses to create `/aws/...` names) and does not implement
DescribeInstanceInformation, so those two calls are answered by a stand-in.
"""

from __future__ import annotations

import base64
import email
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from domain import image_cache, versions
from tests.support.schemas import validate

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "image_snapshot" / "__main__.py"
REGION = "us-west-2"
ECR_IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/llm:1.4.2"
OTHER_ECR_IMAGE = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/embed:2.0.0"
DIGEST = "sha256:" + "ab" * 32
PUBLIC_IMAGE = f"nvcr.io/nvidia/tritonserver@{DIGEST}"


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("build_image_snapshot", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bis = _load_script()


def options(*extra: str, images: tuple[str, ...] = (ECR_IMAGE, PUBLIC_IMAGE)) -> Any:
    """Options as the command line builds them (happy path plus `extra`)."""
    argv = ["--region", REGION, "--instance-profile", "image-builder", *extra]
    for image in images:
        argv += ["--image", image]
    return bis.options_from_args(bis.parser().parse_args(argv), build_id="test-build")


def plan(*extra: str, images: tuple[str, ...] = (ECR_IMAGE, PUBLIC_IMAGE)) -> Any:
    return bis.build_plan(options(*extra, images=images))


def steps(p: Any, operation: str) -> list[Any]:
    return [s for s in p.build if s.operation == operation]


def one(p: Any, operation: str) -> Any:
    found = steps(p, operation)
    assert len(found) == 1, f"expected one {operation} step, found {len(found)}"
    return found[0]


def shell_steps(p: Any, prefix: str) -> list[Any]:
    return [s for s in p.build if s.kind == "shell" and s.title.startswith(prefix)]


def placeholders(value: Any) -> set[str]:
    return set(bis.PLACEHOLDER.findall(json.dumps(value)))


# ---------------------------------------------------------------- command line


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
    cache = bis.stack_config(o, "snap-0123456789abcdef0")["gpu-inference:nodePools"]["gpu"]["imageCache"]
    assert "images" not in cache, "settings reject `latest` in imageCache.images, so the snippet must not carry them"


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
        bis.main(argv, clients=_no_aws)
    err = capsys.readouterr().err
    assert exc.value.code == 2, f"expected exit 2 for {extra}, got {exc.value.code}: {err}"
    assert message in err, f"expected {message!r} in the error, got: {err}"


@pytest.mark.parametrize("missing", ["--region", "--instance-profile", "--image"])
def test_required_arguments(missing: str, capsys) -> None:
    argv = {"--region": REGION, "--instance-profile": "image-builder", "--image": ECR_IMAGE}
    argv.pop(missing)
    with pytest.raises(SystemExit) as exc:
        bis.main([*(x for kv in argv.items() for x in kv), "--dry-run"], clients=_no_aws)
    assert exc.value.code == 2
    assert missing in capsys.readouterr().err


def test_image_and_tag_limits(capsys) -> None:
    images = [x for n in range(bis.MAX_IMAGES + 1) for x in ("--image", f"registry.example.com/m{n}:1")]
    with pytest.raises(SystemExit) as exc:
        bis.main(["--region", REGION, "--instance-profile", "p", *images, "--dry-run"], clients=_no_aws)
    assert exc.value.code == 2
    assert f"--image may be given at most {bis.MAX_IMAGES} times (got {bis.MAX_IMAGES + 1})" in capsys.readouterr().err


def _no_aws(region: str) -> Any:
    raise AssertionError(f"a dry run must not create AWS clients (asked for {region})")


def test_dry_run_calls_nothing_and_prints_the_plan(capsys) -> None:
    argv = ["--region", REGION, "--instance-profile", "image-builder", "--image", ECR_IMAGE, "--dry-run"]
    assert bis.main(argv, clients=_no_aws) == 0
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
    assert bis.main(argv, clients=_no_aws) == 0
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


# ---------------------------------------------------------------- the plan


K8S = versions.DEFAULT_KUBERNETES_VERSION  # the script's default


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        (
            [],
            f"/aws/service/eks/optimized-ami/{K8S}/amazon-linux-2023/x86_64/standard/"
            f"amazon-eks-node-al2023-x86_64-standard-{K8S}-{versions.EKS_AMI_RELEASE}/image_id",
        ),
        (
            ["--arch", "arm64", "--kubernetes-version", "1.33", "--ami-release", "latest"],
            "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/arm64/standard/recommended/image_id",
        ),
        (["--ami-family", "bottlerocket"], f"/aws/service/bottlerocket/aws-k8s-{K8S}/x86_64/latest/image_id"),
        (
            ["--ami-family", "bottlerocket", "--arch", "arm64", "--ami-release", "v1.42.0"],
            f"/aws/service/bottlerocket/aws-k8s-{K8S}/arm64/1.42.0/image_id",
        ),
    ],
)
def test_ami_comes_from_the_ssm_public_parameter(extra: list[str], path: str) -> None:
    p = plan(*extra)
    first = p.build[0]
    assert (first.service, first.operation, dict(first.params)) == ("ssm", "GetParameter", {"Name": path})
    assert one(p, "RunInstances").params["ImageId"] == bis.ref("ami_id")


def test_step_order() -> None:
    p = plan("--subnet-id", "subnet-0123456789abcdef0")
    names = [s.operation if s.kind != "shell" else s.title.split(":")[0] for s in p.build]
    assert names == [
        "GetParameter",
        "DescribeSubnets",
        "CreateSecurityGroup",
        "RunInstances",
        "instance_running",
        "instance_online",
        "DescribeInstances",
        "prepare the data volume",
        "pull image 1/2",
        "pull image 2/2",
        "check the images and flush the volume",
        "StopInstances",
        "instance_stopped",
        "CreateSnapshot",
        "snapshot_completed",
    ]


def test_every_placeholder_is_produced_by_an_earlier_step() -> None:
    for p in (plan("--subnet-id", "subnet-0123456789abcdef0"), plan("--ami-family", "bottlerocket")):
        known: set[str] = set()
        for step in p.build:
            used = {n for n in placeholders(step.params) if not n.startswith(bis.ECR_SECRET)}
            assert used <= known, f"{step.title} uses {sorted(used - known)} before any step returns them"
            known |= set(step.outputs)
        for step in p.cleanup:
            assert placeholders(step.params) <= set(step.needs), f"cleanup {step.operation} must need what it uses"


def test_run_instances_is_locked_down_and_tagged() -> None:
    run = one(plan(), "RunInstances").params
    assert run["MetadataOptions"]["HttpTokens"] == "required", "IMDSv2 only"
    assert run["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert "KeyName" not in run, "no key pair: SSM is the only way in"
    assert run["IamInstanceProfile"] == {"Name": "image-builder"}
    assert run["SecurityGroupIds"] == [bis.ref("security_group_id")]
    assert (run["MinCount"], run["MaxCount"], run["ClientToken"]) == (1, 1, "test-build")
    assert "SubnetId" not in run and "UserData" not in run
    kinds = {spec["ResourceType"]: {t["Key"]: t["Value"] for t in spec["Tags"]} for spec in run["TagSpecifications"]}
    assert set(kinds) == {"instance", "volume"}
    for kind, tags in kinds.items():
        assert tags[bis.BUILD_TAG] == "test-build", f"{kind} must carry the build tag so leftovers can be found"


def test_data_volume_mapping() -> None:
    run = one(plan("--volume-gib", "300"), "RunInstances").params
    assert run["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvdb",
            "Ebs": {
                "VolumeSize": 300,
                "VolumeType": "gp3",
                "Iops": 3000,
                "Throughput": 500,
                "Encrypted": True,
                "DeleteOnTermination": True,
            },
        }
    ]


def test_security_group_has_no_inbound_rules_and_follows_the_subnet() -> None:
    p = plan("--subnet-id", "subnet-0123456789abcdef0")
    group = one(p, "CreateSecurityGroup").params
    assert group["VpcId"] == bis.ref("vpc_id")
    assert not steps(p, "AuthorizeSecurityGroupIngress")
    assert one(p, "RunInstances").params["SubnetId"] == "subnet-0123456789abcdef0"
    assert "VpcId" not in one(plan(), "CreateSecurityGroup").params, "without a subnet: the default VPC"


def test_instance_profile_by_arn() -> None:
    arn = "arn:aws:iam::123456789012:instance-profile/image-builder"
    p = bis.build_plan(
        bis.options_from_args(
            bis.parser().parse_args(["--region", REGION, "--instance-profile", arn, "--image", ECR_IMAGE]), "b"
        )
    )
    assert one(p, "RunInstances").params["IamInstanceProfile"] == {"Arn": arn}


def _pull_command(step: Any) -> list[str]:
    (line,) = [line for line in step.script.splitlines() if " images pull " in line]
    argv = shlex.split(line)
    return argv[: argv.index(">")]


@pytest.mark.parametrize("family", ["al2023", "bottlerocket"])
def test_each_image_is_pulled_in_order_into_the_k8s_io_namespace(family: str) -> None:
    images = (ECR_IMAGE, PUBLIC_IMAGE, OTHER_ECR_IMAGE, "quay.io/org/model:3.1")
    p = plan("--ami-family", family, "--arch", "arm64", images=images)
    pulls = shell_steps(p, "pull image")
    assert [_pull_command(s)[-1] for s in pulls] == list(images), "one pull per image, in the given order"
    for step in pulls:
        argv = _pull_command(step)
        assert "-n" in argv and argv[argv.index("-n") + 1] == "k8s.io", f"{step.title}: not in k8s.io: {argv}"
        assert argv[argv.index("images") + 1] == "pull"
        assert argv[argv.index("--platform") + 1] == "linux/arm64"
        assert argv[argv.index("--snapshotter") + 1] == "overlayfs", "the CRI's default snapshotter"
        assert argv[argv.index("--label") + 1] == image_cache.CRI_MANAGED_LABEL
        assert step.params["DocumentName"] == "AWS-RunShellScript"
        assert step.params["InstanceIds"] == [bis.ref("instance_id")]
        if family == "bottlerocket":
            assert argv[:4] == ["apiclient", "exec", "admin", "sheltie"], "Bottlerocket pulls run on the host"


def test_al2023_logs_in_to_private_ecr_on_the_instance() -> None:
    pulls = shell_steps(plan(images=(ECR_IMAGE, OTHER_ECR_IMAGE, PUBLIC_IMAGE)), "pull image")
    scripts = [s.script for s in pulls]
    assert "aws ecr get-login-password --region us-west-2" in scripts[0]
    assert "aws ecr get-login-password --region eu-west-1" in scripts[1], "the registry's region, not the build's"
    assert "--user" not in scripts[2] and "ecr" not in scripts[2], "public registries are pulled anonymously"
    assert not any(placeholders(s.params) - {"instance_id"} for s in pulls), "no password leaves this machine"


def test_bottlerocket_gets_the_ecr_password_at_run_time_only() -> None:
    pulls = shell_steps(plan("--ami-family", "bottlerocket", images=(ECR_IMAGE, PUBLIC_IMAGE)), "pull image")
    assert placeholders(pulls[0].params) == {"instance_id", "ecr-password:us-west-2"}
    assert "--user" not in pulls[1].script


def _syntax_errors(script: str, shell: str) -> str:
    proc = subprocess.run([shell, "-n"], input=script, capture_output=True, text=True)
    return proc.stderr if proc.returncode else ""


@pytest.mark.parametrize("family", ["al2023", "bottlerocket"])
def test_shell_scripts_are_valid_posix_sh(family: str) -> None:
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell, "no POSIX shell to check the scripts with"
    for step in plan("--ami-family", family).build:
        if step.kind == "shell":
            assert step.script.startswith("set -eu\n"), f"{step.title} must stop at the first failing command"
            assert not _syntax_errors(step.script, shell), f"{step.title}: {_syntax_errors(step.script, shell)}"


def test_al2023_prepare_writes_the_volume_the_node_mounts() -> None:
    script = shell_steps(plan(), "prepare")[0].script
    assert f"mkfs.xfs -q -K -L {image_cache.FILESYSTEM_LABEL} " in script, "the label the node's user data mounts by"
    assert 'cp -a /var/lib/containerd/. "$seed"/' in script, "the AMI's sandbox image must come along"
    assert 'mount "$dev" /var/lib/containerd' in script
    assert "already holds a filesystem" in script, "never format a volume that has data"
    assert script.index("mkfs") < script.index("systemctl start containerd")


def test_finish_checks_every_image_then_flushes() -> None:
    al2023 = shell_steps(plan(), "check")[0].script
    for image in (ECR_IMAGE, PUBLIC_IMAGE, image_cache.AL2023_SANDBOX_IMAGE):
        assert image in al2023.splitlines()[3], f"{image} is not checked"
    lines = al2023.splitlines()
    assert lines[-3:] == ["systemctl stop containerd", "sync", "umount /var/lib/containerd"]
    bottlerocket = shell_steps(plan("--ami-family", "bottlerocket"), "check")[0].script
    assert image_cache.AL2023_SANDBOX_IMAGE not in bottlerocket
    assert bottlerocket.splitlines()[-1] == "apiclient exec admin sheltie sync"


def _run_with_stubs(
    script: str, tmp_path: Path, stubs: dict[str, str]
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `script` under a POSIX sh with fake commands first on PATH; returns the process and the calls made."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.touch()
    for name, body in stubs.items():
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n{body}\n')
        stub.chmod(0o755)
    shell = shutil.which("dash") or "sh"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    proc = subprocess.run([shell, "-c", script], capture_output=True, text=True, env=env, timeout=30)
    return proc, calls.read_text().splitlines()


def _ctr_listing(tmp_path: Path, *names: str) -> str:
    """Body of a fake `ctr` whose `images ls -q` prints `names`."""
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"{n}\n" for n in names))
    return f'if [ "$5" = "-q" ]; then cat {listing}; fi'


def test_finish_script_flushes_when_every_image_is_there(tmp_path: Path) -> None:
    script = shell_steps(plan(), "check")[0].script
    ctr = _ctr_listing(tmp_path, "other/image:1", ECR_IMAGE, PUBLIC_IMAGE, image_cache.AL2023_SANDBOX_IMAGE)
    stubs = {"ctr": ctr, "df": "echo Used; echo ' 1234'", "systemctl": "", "sync": "", "umount": ""}
    proc, calls = _run_with_stubs(script, tmp_path, stubs)
    assert proc.returncode == 0, proc.stderr
    assert f"{bis.OUTPUT_MARKER}used_bytes=1234" in proc.stdout
    assert calls[-3:] == ["systemctl stop containerd", "sync ", "umount /var/lib/containerd"]


def test_finish_script_fails_and_keeps_the_volume_when_an_image_is_missing(tmp_path: Path) -> None:
    script = shell_steps(plan(), "check")[0].script
    stubs = {"ctr": _ctr_listing(tmp_path, ECR_IMAGE), "df": "", "systemctl": "", "sync": "", "umount": ""}
    proc, calls = _run_with_stubs(script, tmp_path, stubs)
    assert proc.returncode != 0
    assert f"missing from the store: {PUBLIC_IMAGE}" in proc.stderr
    assert f"missing from the store: {image_cache.AL2023_SANDBOX_IMAGE}" in proc.stderr
    assert not any(c.startswith("umount") for c in calls)


def test_pull_script_fails_with_the_end_of_ctr_output(tmp_path: Path) -> None:
    (step,) = shell_steps(plan(images=(ECR_IMAGE,)), "pull image")
    proc, calls = _run_with_stubs(
        step.script,
        tmp_path,
        {"aws": "echo secret-token", "ctr": "echo 'resolving'; echo 'ctr: pull access denied' >&2; exit 1"},
    )
    assert proc.returncode == 1
    assert "ctr: pull access denied" in proc.stdout
    assert calls[0] == "aws ecr get-login-password --region us-west-2"
    assert "--user AWS:secret-token" in calls[1]
    assert "secret-token" not in proc.stdout + proc.stderr, "the registry password must not reach SSM's output"


def test_pull_script_stops_when_the_ecr_login_fails(tmp_path: Path) -> None:
    (step,) = shell_steps(plan(images=(ECR_IMAGE,)), "pull image")
    proc, calls = _run_with_stubs(step.script, tmp_path, {"aws": "exit 255", "ctr": ""})
    assert proc.returncode == 255
    assert [c.split()[0] for c in calls] == ["aws"], "ctr must not run without credentials"


def test_bottlerocket_builder_enables_the_admin_container() -> None:
    run = one(plan("--ami-family", "bottlerocket"), "RunInstances").params
    assert run["UserData"] == "[settings.host-containers.admin]\nenabled = true\n"


def test_snapshot_is_tagged_with_its_images_and_content_hash() -> None:
    p = plan("--tag", "team=ml-platform", images=(ECR_IMAGE, "nginx:1.27"))
    snap = one(p, "CreateSnapshot").params
    assert snap["VolumeId"] == bis.ref("data_volume_id")
    (spec,) = snap["TagSpecifications"]
    tags = {t["Key"]: t["Value"] for t in spec["Tags"]}
    expected_hash = image_cache.content_hash([ECR_IMAGE, "nginx:1.27"], ami_family="al2023", arch="x86_64")
    assert spec["ResourceType"] == "snapshot"
    assert tags["gpu-inference/content-hash"] == expected_hash
    assert tags["gpu-inference/image-01"] == ECR_IMAGE
    assert tags["gpu-inference/image-02"] == "docker.io/library/nginx:1.27"
    assert tags["gpu-inference/image-count"] == "2"
    assert (tags["gpu-inference/ami-family"], tags["gpu-inference/arch"]) == ("al2023", "x86_64")
    assert tags["gpu-inference/ami-id"] == bis.ref("ami_id")
    assert tags[bis.BUILD_TAG] == "test-build"
    assert tags["team"] == "ml-platform"
    assert expected_hash[:16] in snap["Description"] and len(snap["Description"]) <= 255


def test_snapshot_tags_fit_ec2_limits_at_the_maximum() -> None:
    long_images = tuple(f"registry.example.com/{'x' * 180}/m{n}:1.0.0" for n in range(bis.MAX_IMAGES))
    extra = [x for n in range(bis.MAX_EXTRA_TAGS) for x in ("--tag", f"k{n}=v")]
    tags = plan(*extra, images=long_images).snapshot_tags
    assert len(tags) <= 50, f"EC2 allows 50 tags per resource, the plan has {len(tags)}"
    assert all(len(k) <= 128 and len(v) <= 256 for k, v in tags.items())


def test_cleanup_always_terminates_and_deletes_temporary_resources() -> None:
    for p in (plan(), plan("--ami-family", "bottlerocket", "--subnet-id", "subnet-0123456789abcdef0")):
        by_operation = {s.operation: s for s in p.cleanup}
        assert by_operation["TerminateInstances"].when == "always"
        assert by_operation["instance_terminated"].when == "always"
        assert by_operation["DeleteSecurityGroup"].when == "always"
        assert "DependencyViolation" in by_operation["DeleteSecurityGroup"].retry_codes
        assert by_operation["DeleteSnapshot"].when == "on-failure", "a finished snapshot is the product"
        order = [s.operation for s in p.cleanup]
        assert order.index("instance_terminated") < order.index("DeleteSecurityGroup")
        assert not any(s.operation in by_operation for s in p.build)


# ---------------------------------------------------------------- end to end on moto


class _Stand_in:
    """A boto3 client with some methods replaced."""

    def __init__(self, real: Any, **methods: Any) -> None:
        self._real, self._methods = real, methods

    def __getattr__(self, name: str) -> Any:
        return self._methods.get(name) or getattr(self._real, name)


@pytest.fixture
def aws():
    with mock_aws():
        boto3.client("iam", region_name=REGION).create_instance_profile(InstanceProfileName="image-builder")
        yield boto3.client("ec2", region_name=REGION)


def _clients(
    ec2: Any, *, fail_command: str | None = None, fail_waiter: str | None = None, ec2_methods: dict | None = None
) -> Any:
    """Client factory over moto, answering what moto lacks; optionally failing one step."""
    ami = ec2.register_image(Name="eks-node-stand-in", Architecture="x86_64", RootDeviceName="/dev/xvda")["ImageId"]
    real = bis.boto3_clients(REGION)
    titles: dict[str, str] = {}

    def client(service: str, region: str | None = None) -> Any:
        c = real(service, region)
        if service == "ssm":

            def send_command(**params: Any) -> Any:
                response = c.send_command(**params)
                titles[response["Command"]["CommandId"]] = params["Comment"]
                return response

            def get_command_invocation(CommandId: str, InstanceId: str) -> Any:
                answer = c.get_command_invocation(CommandId=CommandId, InstanceId=InstanceId)
                if fail_command and titles[CommandId].startswith(fail_command):
                    answer.update(Status="Failed", StandardErrorContent="ctr: failed to resolve reference")
                elif titles[CommandId].startswith("check"):
                    answer.update(StandardOutputContent=f"{bis.OUTPUT_MARKER}used_bytes={190 * 2**30}\n")
                return answer

            return _Stand_in(
                c,
                get_parameter=lambda Name: {"Parameter": {"Name": Name, "Value": ami}},
                describe_instance_information=lambda **_: {"InstanceInformationList": [{"PingStatus": "Online"}]},
                send_command=send_command,
                get_command_invocation=get_command_invocation,
            )
        if service == "ec2":

            def get_waiter(name: str) -> Any:
                if name == fail_waiter:
                    raise RuntimeError(f"Waiter {name} failed: Max attempts exceeded")
                return c.get_waiter(name)

            return _Stand_in(c, get_waiter=get_waiter, **(ec2_methods or {}))
        return c

    return lambda _region: client


def _states(ec2: Any) -> list[str]:
    return [i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


def _own_snapshots(ec2: Any) -> list[dict]:
    purpose = [{"Name": "tag:gpu-inference/purpose", "Values": ["image-cache"]}]
    return ec2.describe_snapshots(Filters=purpose)["Snapshots"]


def _groups(ec2: Any) -> list[str]:
    return [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"]


ARGV = ["--region", REGION, "--instance-profile", "image-builder", "--image", ECR_IMAGE, "--image", "nginx:1.27"]


def test_moto_build_snapshots_the_data_volume_and_cleans_up(aws, capsys) -> None:
    assert bis.main([*ARGV, "--json"], clients=_clients(aws), poll_s=0) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    (snapshot,) = _own_snapshots(aws)
    assert result["snapshotId"] == snapshot["SnapshotId"]
    assert snapshot["State"] == "completed" and snapshot["VolumeSize"] == 200 and snapshot["Encrypted"]
    tags = {t["Key"]: t["Value"] for t in snapshot["Tags"]}
    assert tags["gpu-inference/ami-id"] == result["amiId"].strip() and tags["gpu-inference/ami-id"].startswith("ami-")
    assert tags["gpu-inference/content-hash"] == result["contentHash"]
    assert tags["gpu-inference/image-02"] == "docker.io/library/nginx:1.27"
    assert _states(aws) == ["terminated"], "the builder must be gone"
    assert _groups(aws) == [], "the temporary security group must be gone"
    cache = result["stackConfig"]["gpu-inference:nodePools"]["gpu"]["imageCache"]
    assert cache == {"snapshotId": snapshot["SnapshotId"], "volumeGib": 200, "images": list(result["images"])}
    assert result["usedBytes"] == 190 * 2**30
    assert "warning: the images fill 95% of the 200 GiB volume" in captured.err


def test_moto_failed_pull_still_cleans_up(aws, capsys) -> None:
    assert bis.main(ARGV, clients=_clients(aws, fail_command="pull image 2/2"), poll_s=0) == 1
    err = capsys.readouterr().err
    assert "pull image 2/2: docker.io/library/nginx:1.27: Failed" in err and "failed to resolve reference" in err
    assert _states(aws) == ["terminated"]
    assert _groups(aws) == []
    assert _own_snapshots(aws) == [], "nothing was snapshotted"


def test_moto_failure_after_the_snapshot_deletes_it(aws, capsys) -> None:
    assert bis.main(ARGV, clients=_clients(aws, fail_waiter="snapshot_completed"), poll_s=0) == 1
    assert "Waiter snapshot_completed failed" in capsys.readouterr().err
    assert _own_snapshots(aws) == [], "a snapshot of a failed build must not be left behind"
    assert _states(aws) == ["terminated"]


def test_moto_bottlerocket_sends_the_ecr_password_only_when_running(aws, capsys) -> None:
    argv = [*ARGV[:6], "--ami-family", "bottlerocket"]
    assert bis.main(argv, clients=_clients(aws), poll_s=0) == 0
    commands = boto3.client("ssm", region_name=REGION).list_commands()["Commands"]
    pull = next(c for c in commands if c["Comment"].startswith("pull image"))
    token = boto3.client("ecr", region_name=REGION).get_authorization_token()["authorizationData"][0]
    password = base64.b64decode(token["authorizationToken"]).decode().partition(":")[2]
    assert f"--user AWS:{password} " in pull["Parameters"]["commands"][-1]
    assert "{{" not in json.dumps([c["Parameters"] for c in commands]), "placeholders are resolved before sending"
    # The text result: the snapshot ID as pulumi commands and as a stack-file fragment.
    out = capsys.readouterr().out
    (snapshot,) = _own_snapshots(aws)
    assert (
        f"pulumi config set --path 'gpu-inference:nodePools.gpu.imageCache.snapshotId' {snapshot['SnapshotId']}" in out
    )
    fragment = yaml.safe_load(out.split("(merge into the existing pool):\n", 1)[1].split("\nThe pool's")[0])
    assert fragment["config"]["gpu-inference:nodePools"]["gpu"]["imageCache"]["snapshotId"] == snapshot["SnapshotId"]
    assert "amiAlias must be bottlerocket@" in out


def _client_error(code: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}}, "DeleteSecurityGroup")


def test_moto_failed_cleanup_after_a_good_build_keeps_the_snapshot_and_exits_1(aws, capsys) -> None:
    def denied(**_: Any) -> Any:
        raise _client_error("UnauthorizedOperation")

    clients = _clients(aws, ec2_methods={"delete_security_group": denied})
    assert bis.main(ARGV, clients=clients, poll_s=0) == 1
    captured = capsys.readouterr()
    (snapshot,) = _own_snapshots(aws)
    assert snapshot["SnapshotId"] in captured.out, "the snapshot is still reported"
    assert "cleanup failed: DeleteSecurityGroup" in captured.err and "security_group_id=sg-" in captured.err
    assert _states(aws) == ["terminated"]


def test_security_group_deletion_is_retried_while_the_instance_lets_go() -> None:
    answers = [_client_error("DependencyViolation"), _client_error("DependencyViolation"), {}]

    def delete_security_group(**_: Any) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    ec2 = SimpleNamespace(delete_security_group=delete_security_group)
    executor = bis.Executor(lambda service, region=None: ec2, poll_s=0, log=lambda _: None)
    executor.context["security_group_id"] = "sg-1"
    (step,) = [s for s in bis.build_plan(options()).cleanup if s.operation == "DeleteSecurityGroup"]
    executor._execute(step)
    assert answers == [], "retried until it went through"
    with pytest.raises(Exception, match="UnauthorizedOperation"):
        answers.append(_client_error("UnauthorizedOperation"))
        executor._execute(step)


# ---------------------------------------------------------------- domain/image_cache.py


def _parts(user_data: str) -> list[email.message.Message]:
    message = email.message_from_string(user_data)
    assert message.is_multipart(), "user data must be a MIME multi-part document"
    assert message.get_content_type() == "multipart/mixed"
    return list(message.get_payload())


def test_user_data_is_mime_multipart_with_a_node_config_and_a_mount_script() -> None:
    user_data = image_cache.al2023_containerd_volume_user_data()
    # Karpenter only treats user data as MIME when it starts with one of these headers.
    assert user_data.startswith(("MIME-Version:", "Content-Type:"))
    node_config, script = _parts(user_data)
    assert node_config.get_content_type() == "application/node.eks.aws"
    assert yaml.safe_load(node_config.get_payload()) == {
        "apiVersion": "node.eks.aws/v1alpha1",
        "kind": "NodeConfig",
        "spec": {"instance": {"localStorage": {"disabledMounts": ["Containerd"]}}},
    }
    assert script.get_content_type() == "text/x-shellscript"
    body = script.get_payload()
    assert body.startswith("#!/bin/bash\n")
    assert "What=$by_label\nWhere=$target\nType=xfs" in body
    assert "by_label='/dev/disk/by-label/gpuinf-cache'" in body and "target='/var/lib/containerd'" in body
    assert "systemctl enable --now var-lib-containerd.mount" in body
    assert "RequiresMountsFor=$target" in body, "containerd must never start on the root volume after a reboot"
    assert 'xfs_growfs "$target"' in body, "a node volume larger than the snapshot gets the space"
    # Karpenter re-serializes every part with the boundary `//`.
    assert "--//" not in node_config.get_payload() + body


def test_user_data_without_the_node_config() -> None:
    (script,) = _parts(image_cache.al2023_containerd_volume_user_data(keep_off_instance_store=False))
    assert script.get_content_type() == "text/x-shellscript"
    assert "device='/dev/xvdc'" in image_cache.al2023_mount_script("/dev/xvdc")


def test_mount_script_is_valid_bash_and_leaves_a_node_without_the_volume_alone() -> None:
    script = image_cache.al2023_mount_script("/nonexistent/xvdz", label="no-such-vol", wait_seconds=0)
    assert not _syntax_errors(image_cache.al2023_mount_script(), "bash")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "no image cache volume attached; containerd stays on the root volume" in proc.stderr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "/dev/xvdb'; rm -rf /"}, "device must be a plain path"),
        ({"label": "a-label-too-long"}, "label must be at most 12 characters"),
        ({"label": "$(id)"}, "label must be a plain path or name"),
    ],
)
def test_mount_script_rejects_unsafe_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        image_cache.al2023_mount_script(**kwargs)


def test_filesystem_label_fits_xfs() -> None:
    assert len(image_cache.FILESYSTEM_LABEL) <= 12


def test_content_hash() -> None:
    base = image_cache.content_hash(["nginx:1.27", ECR_IMAGE], ami_family="al2023", arch="x86_64")
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert base == image_cache.content_hash(
        [ECR_IMAGE, "docker.io/library/nginx:1.27"], ami_family="al2023", arch="x86_64"
    ), "order and short forms must not matter"
    assert base != image_cache.content_hash(["nginx:1.27", ECR_IMAGE], ami_family="bottlerocket", arch="x86_64")
    assert base != image_cache.content_hash(["nginx:1.27", ECR_IMAGE], ami_family="al2023", arch="arm64")
    assert base != image_cache.content_hash(["nginx:1.28", ECR_IMAGE], ami_family="al2023", arch="x86_64")
    with pytest.raises(ValueError, match="ami_family must be one of al2023, bottlerocket"):
        image_cache.content_hash([], ami_family="al2", arch="x86_64")


def test_cache_block_device_and_user_data_are_a_valid_ec2nodeclass() -> None:
    node_class = {
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": "gpu"},
        "spec": {
            "role": "KarpenterNodeRole",
            "amiSelectorTerms": [{"alias": f"al2023@{versions.EKS_AMI_RELEASE}"}],
            "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "c"}}],
            "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "c"}}],
            "blockDeviceMappings": [
                {"deviceName": "/dev/xvda", "rootVolume": True, "ebs": {"volumeSize": "100Gi", "volumeType": "gp3"}},
                image_cache.cache_block_device("snap-0123456789abcdef0", 250, initialization_rate=300),
            ],
            "userData": image_cache.al2023_containerd_volume_user_data(),
        },
    }
    assert validate(node_class, versions.DEFAULT_KUBERNETES_VERSION) == []
    ebs = node_class["spec"]["blockDeviceMappings"][1]["ebs"]
    assert node_class["spec"]["blockDeviceMappings"][1]["deviceName"] == image_cache.DATA_DEVICE
    assert (ebs["snapshotID"], ebs["volumeSize"], ebs["volumeInitializationRate"]) == (
        "snap-0123456789abcdef0",
        "250Gi",
        300,
    )
    assert "volumeInitializationRate" not in image_cache.cache_block_device("snap-0123456789abcdef0", 250)["ebs"]
    with pytest.raises(ValueError, match="initialization_rate must be between 100 and 300 MiB/s"):
        image_cache.cache_block_device("snap-0123456789abcdef0", 250, initialization_rate=50)
