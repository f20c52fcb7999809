#!/usr/bin/env bash
# Create one virtualenv per peer server for `python -m bench.peers` (the reference server
# against MLServer, BentoML and LitServe): .venv-peers/<peer>, each from its own pins,
# bench/peers/requirements-<peer>.txt (installed with --no-deps: the files pin every package).
# The peers' dependencies conflict with each other and with the project's, so each gets its
# own virtualenv and the project's .venv is not touched.
#
#   scripts/setup-peers.sh                 # all three
#   scripts/setup-peers.sh mlserver        # or some of them: mlserver, bentoml, litserve
#
# Safe to run again: a virtualenv is created only when missing, and pip installs only what
# is missing or at another version.
set -euo pipefail
cd "$(dirname "$0")/.."

known="mlserver bentoml litserve"
peers=("$@")
if [ "${#peers[@]}" -eq 0 ]; then
  read -r -a peers <<<"$known"
fi

for peer in "${peers[@]}"; do
  case " $known " in
    *" $peer "*) ;;
    *)
      echo "setup-peers: unknown peer '$peer' (known: $known)" >&2
      exit 2
      ;;
  esac
done

for peer in "${peers[@]}"; do
  venv=".venv-peers/$peer"
  requirements="bench/peers/requirements-$peer.txt"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$requirements"
  "$venv/bin/python" -m pip check --disable-pip-version-check >/dev/null
  echo "setup-peers: $peer ready in $venv"
done
