#!/usr/bin/env bash
# Create .venv and install the pinned dependencies and the helm CLI that renders
# the charts (scripts/install-helm.sh). `--dev` adds the test tools and Debian's
# prometheus package (a real server and promtool for the tests) and shellcheck
# (scripts/install-shellcheck.sh, for the image snapshot templates).
# Safe to run again: it only installs what is missing or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=requirements.txt
[ "${1:-}" = "--dev" ] && requirements=requirements-dev.txt

if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    # Debian ships venv/ensurepip separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
      echo "setup: python3 cannot create virtual environments; install python3-venv (sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
# The project itself, editable: `domain`, `infra`, `policies`, `tools` and `workloads`
# import from anywhere (the policy pack shares this venv), and the console scripts
# (gpuinf-plan, gpuinf-preflight, ...) land in .venv/bin. Its dependencies are the pins above.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
# The offline plan renders the Helm charts (runtime and dev alike).
./scripts/install-helm.sh
if [ "${1:-}" = "--dev" ]; then
  ./scripts/install-prometheus.sh
  ./scripts/install-alertmanager.sh
  ./scripts/install-shellcheck.sh
fi
