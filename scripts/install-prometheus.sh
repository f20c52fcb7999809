#!/usr/bin/env bash
# Install Prometheus and promtool from Debian's `prometheus` package (2.42 on
# bookworm) for the observability tests: promtool checks and unit-tests the
# alert rules, a throwaway server evaluates the dashboards' queries.
#
# Installs only when a binary is missing, on a system with apt-get, as root or
# through passwordless sudo (GitHub-hosted runners). Otherwise it prints one line
# and exits 0, and the tests that need the binaries skip with a reason that names
# this script; with GPUINF_REQUIRE_TOOLS=1 (CI) it exits 1 instead, and those
# tests would fail rather than skip.
#
# The package's maintainer scripts would start a system service listening on
# :9090. The tests start their own servers on free ports and want nothing else
# running, so the install runs under a policy-rc.d that refuses every service
# start (Debian's documented switch, see invoke-rc.d(8)), and the script checks
# afterwards that nothing listens on 9090.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    echo "install-prometheus: already installed: $(promtool --version 2>&1 | head -n1)"
    exit 0
fi

INSTALLER=install-prometheus NEEDS="prometheus and promtool"
# shellcheck source=scripts/lib/apt-install.sh
source "$(dirname "$0")/lib/apt-install.sh"
refuse_service_starts
apt_install prometheus

# Belt and braces: if a service came up anyway (a host whose policy allows
# starts), stop it; the tests need the port range to themselves.
listening_9090() {
    if command -v ss >/dev/null 2>&1; then
        ss -Hltn 'sport = :9090' 2>/dev/null | grep -q .
    else
        (exec 3<>/dev/tcp/127.0.0.1/9090) 2>/dev/null
    fi
}
if listening_9090; then
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        as_root systemctl stop prometheus.service || true
        as_root systemctl disable prometheus.service >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/prometheus ]]; then
        as_root /etc/init.d/prometheus stop >/dev/null || true
    fi
    if listening_9090; then
        echo "install-prometheus: warning: something still listens on 127.0.0.1:9090 (the tests use other ports)" >&2
    fi
fi

echo "install-prometheus: installed $(promtool --version 2>&1 | head -n1)"
