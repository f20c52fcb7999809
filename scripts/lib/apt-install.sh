# shellcheck shell=bash
# Shared by scripts/install-{prometheus,alertmanager,shellcheck}.sh: install a Debian
# package for the tests, only where it can be done safely, and say so either way.
#
# A tool installs only on a system with apt-get, as root or through passwordless sudo
# (GitHub-hosted runners). Otherwise the script prints one line and exits 0, and the
# tests that need the tool skip with a reason naming the script; with
# GPUINF_REQUIRE_TOOLS=1 (CI) it exits 1 instead, and those tests fail rather than skip.
# Source it after setting INSTALLER (the script's name) and NEEDS (what the tests need).

cannot_install() {
    if [[ "${GPUINF_REQUIRE_TOOLS:-}" == 1 ]]; then
        echo "$INSTALLER: $1, and GPUINF_REQUIRE_TOOLS=1 needs $NEEDS" >&2
        exit 1
    fi
    echo "$INSTALLER: skipped ($1); the tests that need $NEEDS will skip"
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

# `refuse_service_starts`: a package's maintainer scripts must not start a system
# service (the tests start their own servers on free ports). A policy-rc.d that refuses
# every start is Debian's documented switch (invoke-rc.d(8)); it is removed on exit,
# unless the system had its own (containers usually ship one that does the same).
refuse_service_starts() {
    local policy=/usr/sbin/policy-rc.d
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# temporary, from %s\nexit 101\n' "$INSTALLER" | as_root tee "$policy" >/dev/null
        as_root chmod 0755 "$policy"
        trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
    fi
}

# `apt_install PACKAGE`: install it, refreshing the package lists only when needed.
apt_install() {
    if ! apt-cache show "$1" >/dev/null 2>&1; then
        as_root apt-get update -qq
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}
