#!/bin/sh
# Bottlerocket builder: pull one image from a private ECR registry as
# bottlerocket-pull.sh does. Its SSM shell has no AWS CLI, so ECR_PASSWORD comes
# from the machine running the tool, filled in only when the command is sent,
# and is part of the command's parameters (docs/image-snapshot.md, Caveats).
#
# Inputs: ECR_PASSWORD CRI_NAMESPACE PLATFORM CRI_MANAGED_LABEL IMAGE
#
# Inputs are environment variables. SSM Run Command passes none, so
# tools/image_snapshot/scripts.py inlines each `${NAME}` below as one
# shell-quoted word (a list as one word per item) and sends the script from
# its `set -eu` line on, without this header.
# Unquoted inputs are deliberate: each is one word once inlined (SC2086).
# shellcheck disable=SC2086
set -eu
log=$(mktemp)
trap 'tail -n 20 "$log"; rm -f "$log"' EXIT
apiclient exec admin sheltie ctr -a /run/containerd/containerd.sock -n ${CRI_NAMESPACE} images pull --snapshotter overlayfs --platform ${PLATFORM} --label ${CRI_MANAGED_LABEL} --user AWS:${ECR_PASSWORD} ${IMAGE} > "$log" 2>&1
