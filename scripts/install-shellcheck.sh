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

cannot_install() {
    if [[ "${GPUINF_REQUIRE_TOOLS:-}" == 1 ]]; then
        echo "install-shellcheck: $1, and GPUINF_REQUIRE_TOOLS=1 needs shellcheck" >&2
        exit 1
    fi
    echo "install-shellcheck: skipped ($1); the template lint tests will skip"
    exit 0
}

# `as_root CMD...` runs CMD as root: directly when we are root, else through sudo
# without a password prompt (-n: fail rather than hang in CI).
if [[ "$(id -u)" == 0 ]]; then
    as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root() { sudo -n "$@"; }
else
    cannot_install "needs root or passwordless sudo"
fi
command -v apt-get >/dev/null 2>&1 || cannot_install "needs apt-get"

if ! apt-cache show shellcheck >/dev/null 2>&1; then
    as_root apt-get update -qq
fi
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null

echo "install-shellcheck: installed shellcheck $(shellcheck --version | sed -n 's/^version: //p')"
