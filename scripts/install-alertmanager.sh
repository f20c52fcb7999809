#!/usr/bin/env bash
# Install amtool from Debian's `prometheus-alertmanager` package (0.25 on bookworm)
# for the alert-routing tests: `amtool check-config` and `amtool config routes test`
# run against the Alertmanager config the plan renders (tests/observability/test_alerting.py).
#
# Installs only when amtool is missing, on a system with apt-get, as root or through
# passwordless sudo. Otherwise it prints one line and exits 0, and the tests that need
# amtool skip with a reason that names this script; with GPUINF_REQUIRE_TOOLS=1 (CI) it
# exits 1 instead, and those tests fail rather than skip.
#
# The package's maintainer scripts would start an Alertmanager service on :9093; the
# install runs under a policy-rc.d that refuses every service start (invoke-rc.d(8)), as
# scripts/install-prometheus.sh does.
set -euo pipefail

if command -v amtool >/dev/null 2>&1; then
    echo "install-alertmanager: already installed: $(amtool --version 2>&1 | head -n1)"
    exit 0
fi

INSTALLER=install-alertmanager NEEDS=amtool
# shellcheck source=scripts/lib/apt-install.sh
source "$(dirname "$0")/lib/apt-install.sh"
refuse_service_starts
apt_install prometheus-alertmanager

if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    as_root systemctl stop prometheus-alertmanager.service >/dev/null 2>&1 || true
    as_root systemctl disable prometheus-alertmanager.service >/dev/null 2>&1 || true
fi

command -v amtool >/dev/null 2>&1 || cannot_install "the package installed no amtool"
echo "install-alertmanager: installed $(amtool --version 2>&1 | head -n1)"
