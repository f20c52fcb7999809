"""A GPU node that boots with its inference images already on disk.

`tools/image_snapshot` pulls the images into containerd's store on a
separate EBS volume and snapshots that volume. A node then gets a volume made
from the snapshot as `/dev/xvdb` (an EC2NodeClass `blockDeviceMappings` entry
with `snapshotID`, see `cache_block_device`):

- Bottlerocket keeps containerd's store on its data volume, which is `/dev/xvdb`
  already: the mapping is all it needs.
- AL2023 keeps the store on the root volume at `/var/lib/containerd`, so the
  node's user data (`al2023_containerd_volume_user_data`) mounts the cache volume
  there before nodeadm starts containerd. That works because on the EKS AL2023
  AMIs `nodeadm-run.service`, which starts containerd and kubelet, is ordered
  after `cloud-final.service`, where cloud-init runs user-data shell scripts.

Pure functions and constants only; both the build script and the platform code
import them, so the volume the script writes and the mount the node performs
cannot drift apart (device, filesystem label, mount point).

See docs/image-snapshot.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import yaml

from domain.images import ImageRef

DATA_DEVICE = "/dev/xvdb"
CONTAINERD_ROOT = "/var/lib/containerd"
FILESYSTEM_TYPE = "xfs"
# Names the cache volume on AL2023; the node mounts it by this label. XFS allows 12 characters.
FILESYSTEM_LABEL = "gpuinf-cache"
# systemd's name for the mount unit of CONTAINERD_ROOT (`systemd-escape --path --suffix=mount`).
MOUNT_UNIT = "var-lib-containerd.mount"
# nodeadm's containerd sandbox image: cached on the AL2023 AMI's root volume at build
# time and never pullable, so every cache volume must carry it too.
AL2023_SANDBOX_IMAGE = "localhost/kubernetes/pause:latest"
NODECONFIG_CONTENT_TYPE = "application/node.eks.aws"
# CRI's own pulls carry this label; images pulled with `ctr` get it too.
CRI_MANAGED_LABEL = "io.cri-containerd.image=managed"
CRI_NAMESPACE = "k8s.io"

AMI_FAMILIES = ("al2023", "bottlerocket")
ARCHITECTURES = ("x86_64", "arm64")
PLATFORMS = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}


def content_hash(images: Iterable[str], *, ami_family: str, arch: str) -> str:
    """SHA-256 (hex) naming what a cache snapshot holds: its images, OS family and CPU architecture.

    Order and short forms do not matter: `nginx:1.27` and
    `docker.io/library/nginx:1.27` hash the same.
    """
    if ami_family not in AMI_FAMILIES:
        raise ValueError(f"ami_family must be one of {', '.join(AMI_FAMILIES)} (got {ami_family!r})")
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)} (got {arch!r})")
    canonical = {
        "amiFamily": ami_family,
        "arch": arch,
        "images": sorted({ImageRef.parse(i).normalized for i in images}),
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cache_block_device(
    snapshot_id: str,
    volume_gib: int,
    *,
    iops: int = 3000,
    throughput: int = 500,
    initialization_rate: int | None = None,
) -> dict:
    """EC2NodeClass `blockDeviceMappings` entry: the cache volume as `/dev/xvdb`, made from `snapshot_id`.

    `volume_gib` may exceed the snapshot's size: the AL2023 user data grows the
    filesystem and Bottlerocket grows its data partition at boot.
    `initialization_rate` (MiB/s, 100-300) buys a fixed rate for fetching the
    snapshot's blocks (Karpenter's `volumeInitializationRate`); without it
    blocks come from S3 lazily on first read, so the first start of each image
    on a node is slower than a read from a warm disk. Encryption follows the
    snapshot (the build script encrypts its volume).
    """
    if initialization_rate is not None and not 100 <= initialization_rate <= 300:
        raise ValueError(f"initialization_rate must be between 100 and 300 MiB/s (got {initialization_rate})")
    ebs: dict = {
        "snapshotID": snapshot_id,
        "volumeSize": f"{volume_gib}Gi",
        "volumeType": "gp3",
        "iops": iops,
        "throughput": throughput,
        "deleteOnTermination": True,
    }
    if initialization_rate is not None:
        ebs["volumeInitializationRate"] = initialization_rate
    return {"deviceName": DATA_DEVICE, "ebs": ebs}


def al2023_mount_script(device: str = DATA_DEVICE, *, label: str = FILESYSTEM_LABEL, wait_seconds: int = 60) -> str:
    """Shell script (cloud-init user data) that mounts the cache volume at containerd's root.

    Runs before nodeadm starts containerd. Without a volume labelled `label`
    it leaves containerd on the root volume (images are then pulled as usual)
    and exits 0, so a node class without the mapping still works. With one it
    writes a mount unit (so a reboot mounts it again), makes containerd
    require that mount, mounts it and grows the filesystem to the volume size.
    """
    for name, value in (("device", device), ("label", label)):
        if not value or any(c in value for c in "'\"\\$` \n"):
            raise ValueError(f"{name} must be a plain path or name without quotes, spaces or `$` (got {value!r})")
    if len(label) > 12:
        raise ValueError(f"label must be at most 12 characters, the XFS limit (got {label!r})")
    by_label = f"/dev/disk/by-label/{label}"
    return f"""#!/bin/bash
# gpu-inference image cache: put containerd's store on the volume restored from
# the image snapshot. cloud-init runs this before nodeadm-run.service starts containerd.
set -o errexit -o nounset -o pipefail
device='{device}'
by_label='{by_label}'
target='{CONTAINERD_ROOT}'
log() {{ echo "image-cache: $*" >&2; }}

for _ in $(seq 1 {wait_seconds}); do
  if [ -b "$by_label" ] || [ -b "$device" ]; then break; fi
  sleep 1
done
udevadm settle || true
if [ ! -b "$by_label" ]; then
  if [ -b "$device" ]; then
    log "$device holds no filesystem labelled {label}; containerd stays on the root volume"
  else
    log "no image cache volume attached; containerd stays on the root volume"
  fi
  exit 0
fi
if systemctl is-active --quiet containerd; then systemctl stop containerd; fi
mkdir -p "$target"
cat > /etc/systemd/system/{MOUNT_UNIT} <<UNIT
[Unit]
Description=gpu-inference image cache for containerd
Before=containerd.service

[Mount]
What=$by_label
Where=$target
Type={FILESYSTEM_TYPE}
Options=defaults,noatime

[Install]
WantedBy=local-fs.target
UNIT
mkdir -p /etc/systemd/system/containerd.service.d
cat > /etc/systemd/system/containerd.service.d/10-image-cache.conf <<UNIT
[Unit]
RequiresMountsFor=$target
UNIT
systemctl daemon-reload
systemctl enable --now {MOUNT_UNIT}
xfs_growfs "$target" > /dev/null
log "mounted $(readlink -f "$by_label") at $target: $(df -h --output=size,used "$target" | tail -n 1)"
"""


def al2023_containerd_volume_user_data(
    device: str = DATA_DEVICE, *, label: str = FILESYSTEM_LABEL, keep_off_instance_store: bool = True
) -> str:
    """EC2NodeClass `userData` for AL2023 nodes with the cache volume: a MIME multi-part document.

    Parts: (1) when `keep_off_instance_store`, a partial nodeadm NodeConfig
    that keeps `/var/lib/containerd` off the instance-store RAID
    (`localStorage.disabledMounts: [Containerd]`; it only matters with
    `instanceStorePolicy: RAID0`, where nodeadm would otherwise copy the whole
    cache onto the RAID and mount the RAID over it); (2) the mount script.
    Karpenter appends its own NodeConfig (cluster, kubelet) as the last part;
    nodeadm merges the NodeConfig parts in order, so a later part that sets
    `disabledMounts` replaces this one's list.
    """
    archive = MIMEMultipart("mixed", boundary="==gpuinf-image-cache==")
    if keep_off_instance_store:
        node_config = {
            "apiVersion": "node.eks.aws/v1alpha1",
            "kind": "NodeConfig",
            "spec": {"instance": {"localStorage": {"disabledMounts": ["Containerd"]}}},
        }
        part = MIMEText(yaml.safe_dump(node_config, sort_keys=False), "plain", "us-ascii")
        part.replace_header("Content-Type", NODECONFIG_CONTENT_TYPE)
        archive.attach(part)
    archive.attach(MIMEText(al2023_mount_script(device, label=label), "x-shellscript", "us-ascii"))
    return archive.as_string()
