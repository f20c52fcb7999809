#!/bin/sh
# AL2023 builder, first step: format the blank data volume XFS with the label
# the node's user data mounts by (domain/image_cache.py), seed it with the AMI's
# containerd store and mount it where containerd keeps its images.
#
# Inputs: DATA_VOLUME_ID DATA_DEVICE FILESYSTEM_TYPE FILESYSTEM_LABEL CONTAINERD_ROOT
#
# Inputs are environment variables. SSM Run Command passes none, so
# tools/image_snapshot/scripts.py inlines each `${NAME}` below as one
# shell-quoted word (a list as one word per item) and sends the script from
# its `set -eu` line on, without this header.
# Unquoted inputs are deliberate: each is one word once inlined (SC2086).
# shellcheck disable=SC2086
set -eu
vol=${DATA_VOLUME_ID}
# udev names the volume by its block device mapping (ec2-utils) and, on Nitro, by its volume ID
by_id="/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${vol%%-*}${vol#*-}"
dev=
for _ in $(seq 1 120); do
  for candidate in ${DATA_DEVICE} "$by_id"; do
    if [ -b "$candidate" ]; then dev=$(readlink -f "$candidate"); break 2; fi
  done
  sleep 1
done
[ -n "$dev" ] || { echo "data volume $vol is not attached" >&2; exit 1; }
if [ -n "$(blkid -o value -s TYPE "$dev" || true)" ]; then echo "$dev already holds a filesystem" >&2; exit 1; fi
if systemctl is-active --quiet containerd; then systemctl stop containerd; fi
mkfs.${FILESYSTEM_TYPE} -q -K -L ${FILESYSTEM_LABEL} "$dev"
seed=$(mktemp -d)
mount "$dev" "$seed"
# the AMI caches nodeadm's sandbox image in this store; the node needs it on the cache volume too
cp -a ${CONTAINERD_ROOT}/. "$seed"/
umount "$seed"
rmdir "$seed"
mount "$dev" ${CONTAINERD_ROOT}
systemctl start containerd
ctr version
