#!/usr/bin/env bash
# Install Prometheus and promtool from Debian's `prometheus` package (2.42 on
# bookworm) for the observability tests: promtool checks and unit-tests the
# alert rules, a throwaway server evaluates the dashboards' queries.
#
# Installs only when both binaries are missing and we are root on a system with
# apt-get; otherwise prints one line and exits 0, and the tests that need the
# binaries skip with a reason that names this script.
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
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-prometheus: skipped (needs root and apt-get); observability tests that need prometheus will skip"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive

# Refuse service starts for the duration of the install, unless the system
# already has its own policy (containers usually ship one that does the same).
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\n# temporary, from scripts/install-prometheus.sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    own_policy=1
fi
cleanup() {
    if [[ "$own_policy" == 1 ]]; then
        rm -f "$policy"
    fi
}
trap cleanup EXIT

if ! apt-cache show prometheus >/dev/null 2>&1; then
    apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends prometheus >/dev/null

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
        systemctl stop prometheus.service || true
        systemctl disable prometheus.service >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/prometheus ]]; then
        /etc/init.d/prometheus stop >/dev/null || true
    fi
    if listening_9090; then
        echo "install-prometheus: warning: something still listens on 127.0.0.1:9090 (the tests use other ports)" >&2
    fi
fi

echo "install-prometheus: installed $(promtool --version 2>&1 | head -n1)"
