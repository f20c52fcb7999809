#!/bin/sh
# AL2023 builder: pull one image from a private ECR registry as al2023-pull.sh
# does, logged in with the instance profile's credentials (through IMDSv2): the
# registry password never leaves the instance nor reaches SSM's output.
# ECR_REGION is the registry's region, not the build's.
#
# Inputs: ECR_REGION CRI_NAMESPACE PLATFORM CRI_MANAGED_LABEL IMAGE
#
# Inputs are environment variables. SSM Run Command passes none, so
# tools/image_snapshot/scripts.py inlines each `${NAME}` below as one
# shell-quoted word (a list as one word per item) and sends the script from
# its `set -eu` line on, without this header.
# Unquoted inputs are deliberate: each is one word once inlined (SC2086).
# shellcheck disable=SC2086
set -eu
token=$(aws ecr get-login-password --region ${ECR_REGION})
log=$(mktemp)
trap 'tail -n 20 "$log"; rm -f "$log"' EXIT
ctr -n ${CRI_NAMESPACE} images pull --snapshotter overlayfs --platform ${PLATFORM} --label ${CRI_MANAGED_LABEL} --user "AWS:$token" ${IMAGE} > "$log" 2>&1
