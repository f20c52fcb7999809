#!/bin/sh
# Bottlerocket builder, last step: check that every image is in the store,
# report the space used on an OUTPUT_MARKER line when df can tell, and flush the
# host's buffers (stopping the instance next makes the snapshot consistent).
#
# Inputs: CRI_NAMESPACE IMAGES OUTPUT_MARKER
#
# Inputs are environment variables. SSM Run Command passes none, so
# tools/image_snapshot/scripts.py inlines each `${NAME}` below as one
# shell-quoted word (a list as one word per item) and sends the script from
# its `set -eu` line on, without this header.
# Unquoted inputs are deliberate: each is one word once inlined (SC2086).
# shellcheck disable=SC2086
set -eu
names=$(apiclient exec admin sheltie ctr -a /run/containerd/containerd.sock -n ${CRI_NAMESPACE} images ls -q)
missing=0
for ref in ${IMAGES}; do
  if ! printf "%s\n" "$names" | grep -Fxq "$ref"; then echo "missing from the store: $ref" >&2; missing=1; fi
done
[ "$missing" -eq 0 ]
apiclient exec admin sheltie ctr -a /run/containerd/containerd.sock -n ${CRI_NAMESPACE} images ls
used=$(apiclient exec admin sheltie df -B1 --output=used /var/lib/containerd | tail -n 1 | tr -d ' ') || used=
[ -z "$used" ] || echo ${OUTPUT_MARKER}used_bytes=$used
apiclient exec admin sheltie sync
