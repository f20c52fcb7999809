#!/usr/bin/env bash
# Install shellcheck from Debian's `shellcheck` package for the tests that lint
# the image snapshot builder's shell templates (tools/image_snapshot/templates/).
#
# Installs only when shellcheck is missing, on a system with apt-get, as root or
# through passwordless sudo (GitHub-hosted runners). Otherwise it prints one line
# and exits 0, and the shellcheck tests skip with a reason that names this
# script; with GPUINF_REQUIRE_TOOLS=1 (CI) it exits 1 instead, and those tests
# would fail rather than skip.
set -euo pipefail

if command -v shellcheck >/dev/null 2>&1; then
    echo "install-shellcheck: already installed: shellcheck $(shellcheck --version | sed -n 's/^version: //p')"
    exit 0
fi

INSTALLER=install-shellcheck NEEDS=shellcheck
# shellcheck source=scripts/lib/apt-install.sh
source "$(dirname "$0")/lib/apt-install.sh"
apt_install shellcheck

echo "install-shellcheck: installed shellcheck $(shellcheck --version | sed -n 's/^version: //p')"
