"""The node side of the image cache (domain/image_cache.py): user data, mount script, block device, content hash.

What the snapshot tool writes (tools/image_snapshot) is what these pieces expect on a node.
"""

from __future__ import annotations

import email
import re
import subprocess

import pytest
import yaml

from domain import image_cache, versions
from tests.image_snapshot.support import ECR_IMAGE, syntax_errors
from tests.support.schemas import validate


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
    assert not syntax_errors(image_cache.al2023_mount_script(), "bash")
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
