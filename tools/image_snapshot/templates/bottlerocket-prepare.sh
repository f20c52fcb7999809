#!/bin/sh
# Bottlerocket builder, first step: its data volume /dev/xvdb already is
# containerd's store. Wait for the admin container (the builder's user data
# enables it), whose sheltie gives SSM commands a root shell on the host, and
# stop kubelet so that its image GC leaves the store alone.
#
# Inputs: CRI_NAMESPACE
#
# Inputs are environment variables. SSM Run Command passes none, so
# tools/image_snapshot/scripts.py inlines each `${NAME}` below as one
# shell-quoted word (a list as one word per item) and sends the script from
# its `set -eu` line on, without this header.
# Unquoted inputs are deliberate: each is one word once inlined (SC2086).
# shellcheck disable=SC2086
set -eu
# the admin container starts after the SSM agent: wait for a host shell
for _ in $(seq 1 60); do apiclient exec admin sheltie true && break; sleep 5; done
apiclient exec admin sheltie true
# no cluster to join: keep kubelet (and its image GC) out of the way
apiclient exec admin sheltie systemctl stop kubelet || true
apiclient exec admin sheltie ctr -a /run/containerd/containerd.sock -n ${CRI_NAMESPACE} version
