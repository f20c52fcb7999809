#!/bin/sh
# AL2023 builder, last step: check that every image (with the AMI's sandbox
# image, which a node cannot pull) is in the store, report the space used on an
# OUTPUT_MARKER line for the executor, flush and unmount the volume. A missing
# image fails the build before the volume is touched.
#
# Inputs: CRI_NAMESPACE IMAGES OUTPUT_MARKER CONTAINERD_ROOT
#
# Inputs are environment variables. SSM Run Command passes none, so
# tools/image_snapshot/scripts.py inlines each `${NAME}` below as one
# shell-quoted word (a list as one word per item) and sends the script from
# its `set -eu` line on, without this header.
# Unquoted inputs are deliberate: each is one word once inlined (SC2086),
# and so is df's count with its spaces stripped (SC2046).
# shellcheck disable=SC2086,SC2046
set -eu
names=$(ctr -n ${CRI_NAMESPACE} images ls -q)
missing=0
for ref in ${IMAGES}; do
  if ! printf "%s\n" "$names" | grep -Fxq "$ref"; then echo "missing from the store: $ref" >&2; missing=1; fi
done
[ "$missing" -eq 0 ]
ctr -n ${CRI_NAMESPACE} images ls
echo ${OUTPUT_MARKER}used_bytes=$(df -B1 --output=used ${CONTAINERD_ROOT} | tail -n 1 | tr -d ' ')
systemctl stop containerd
sync
umount ${CONTAINERD_ROOT}
