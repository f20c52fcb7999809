"""The build as data (tools/image_snapshot/plan.py): AWS calls, their order and parameters, tags, cleanup."""

from __future__ import annotations

import pytest

from domain import image_cache, versions
from tests.image_snapshot.support import ECR_IMAGE, REGION, one, placeholders, plan, steps
from tools.image_snapshot import cli
from tools.image_snapshot.options import MAX_EXTRA_TAGS, MAX_IMAGES
from tools.image_snapshot.placeholders import ECR_SECRET, ref
from tools.image_snapshot.plan import BUILD_TAG, build_plan

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
    assert one(p, "RunInstances").params["ImageId"] == ref("ami_id")


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
            used = {n for n in placeholders(step.params) if not n.startswith(ECR_SECRET)}
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
    assert run["SecurityGroupIds"] == [ref("security_group_id")]
    assert (run["MinCount"], run["MaxCount"], run["ClientToken"]) == (1, 1, "test-build")
    assert "SubnetId" not in run and "UserData" not in run
    kinds = {spec["ResourceType"]: {t["Key"]: t["Value"] for t in spec["Tags"]} for spec in run["TagSpecifications"]}
    assert set(kinds) == {"instance", "volume"}
    for kind, tags in kinds.items():
        assert tags[BUILD_TAG] == "test-build", f"{kind} must carry the build tag so leftovers can be found"


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
    assert group["VpcId"] == ref("vpc_id")
    assert not steps(p, "AuthorizeSecurityGroupIngress")
    assert one(p, "RunInstances").params["SubnetId"] == "subnet-0123456789abcdef0"
    assert "VpcId" not in one(plan(), "CreateSecurityGroup").params, "without a subnet: the default VPC"


def test_instance_profile_by_arn() -> None:
    arn = "arn:aws:iam::123456789012:instance-profile/image-builder"
    p = build_plan(
        cli.options_from_args(
            cli.parser().parse_args(["--region", REGION, "--instance-profile", arn, "--image", ECR_IMAGE]), "b"
        )
    )
    assert one(p, "RunInstances").params["IamInstanceProfile"] == {"Arn": arn}


def test_bottlerocket_builder_enables_the_admin_container() -> None:
    run = one(plan("--ami-family", "bottlerocket"), "RunInstances").params
    assert run["UserData"] == "[settings.host-containers.admin]\nenabled = true\n"


def test_snapshot_is_tagged_with_its_images_and_content_hash() -> None:
    p = plan("--tag", "team=ml-platform", images=(ECR_IMAGE, "nginx:1.27"))
    snap = one(p, "CreateSnapshot").params
    assert snap["VolumeId"] == ref("data_volume_id")
    (spec,) = snap["TagSpecifications"]
    tags = {t["Key"]: t["Value"] for t in spec["Tags"]}
    expected_hash = image_cache.content_hash([ECR_IMAGE, "nginx:1.27"], ami_family="al2023", arch="x86_64")
    assert spec["ResourceType"] == "snapshot"
    assert tags["gpu-inference/content-hash"] == expected_hash
    assert tags["gpu-inference/image-01"] == ECR_IMAGE
    assert tags["gpu-inference/image-02"] == "docker.io/library/nginx:1.27"
    assert tags["gpu-inference/image-count"] == "2"
    assert (tags["gpu-inference/ami-family"], tags["gpu-inference/arch"]) == ("al2023", "x86_64")
    assert tags["gpu-inference/ami-id"] == ref("ami_id")
    assert tags[BUILD_TAG] == "test-build"
    assert tags["team"] == "ml-platform"
    assert expected_hash[:16] in snap["Description"] and len(snap["Description"]) <= 255


def test_snapshot_tags_fit_ec2_limits_at_the_maximum() -> None:
    long_images = tuple(f"registry.example.com/{'x' * 180}/m{n}:1.0.0" for n in range(MAX_IMAGES))
    extra = [x for n in range(MAX_EXTRA_TAGS) for x in ("--tag", f"k{n}=v")]
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


def test_each_shell_step_sends_its_rendered_script_line_by_line() -> None:
    for step in plan().build:
        if step.kind == "shell":
            assert step.params["Parameters"]["commands"] == step.script.split("\n"), step.title
            assert not any(line.startswith("#!") for line in step.params["Parameters"]["commands"]), (
                f"{step.title}: the template's header must not be sent"
            )
