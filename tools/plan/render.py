"""Render every recorded Helm release with the real helm CLI and the vendored chart
sources under `charts/`, as `helm install` would on a fresh cluster.

Capability-gated templates (`.Capabilities.APIVersions.Has`) render as they would at
install time on a fresh cluster: helm's built-in API list (the Kubernetes APIs of the
client helm was built with) plus, through `--api-versions`, the CRDs that the releases
this release (transitively) depends on install. A release's own CRDs do not count: on a
fresh cluster they are not served yet when helm checks. The CRDs EKS itself installs
(ENIConfig, CNINode, PolicyEndpoint) are left out: no vendored chart asks for them.

Values are the recorded `values` input, so a secret renders as the placeholder `[secret]`.

Without a helm binary nothing is rendered (`Rendering.missing` says why); the plan
still writes everything else and warns. helm is looked up as `$GPUINF_HELM` when set
(a path or a command name on PATH; empty switches rendering off, for tests that do not
read rendered/), else next to the running Python (.venv/bin/helm, installed by
scripts/install-helm.sh), else on PATH.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tools.plan.mocks import Recorded

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
CRD_RESOURCE = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
HELM_ENV = "GPUINF_HELM"
SETUP_HINT = "run scripts/setup.sh (it installs helm into .venv/bin)"

# Cluster-scoped built-in kinds our charts render; custom kinds' scope comes from their CRDs.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "APIService",
        "ClusterRole",
        "ClusterRoleBinding",
        "CSIDriver",
        "CustomResourceDefinition",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "PersistentVolume",
        "PriorityClass",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
    }
)


class RenderError(Exception):
    pass


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loading as the API server reads YAML: a bare `=` is a string (PyYAML's YAML 1.1
    resolver alone types it `tag:yaml.org,2002:value` and cannot construct it)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Release:
    """One recorded `helm.v3.Release`, as the renderer needs it."""

    urn: str
    resource: str  # Pulumi resource name
    name: str  # Helm release name
    namespace: str
    chart: str  # chart name, without repository or oci:// prefix
    version: str
    values: Mapping[str, Any]
    skip_crds: bool

    @property
    def chart_dir(self) -> Path:
        return CHARTS / f"{self.chart}-{self.version}"


@dataclass(frozen=True)
class Document:
    text: str  # as helm printed it, `# Source:` comment included
    obj: dict[str, Any]


@dataclass(frozen=True)
class RenderedRelease:
    release: Release
    api_versions: tuple[str, ...]  # the extra APIs passed with --api-versions
    documents: tuple[Document, ...]

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [d.obj for d in self.documents]


@dataclass
class Rendering:
    helm: str | None = None
    helm_version: str | None = None
    missing: str | None = None  # why nothing was rendered
    releases: dict[str, RenderedRelease] = field(default_factory=dict)  # by release name


def find_helm() -> str | None:
    if HELM_ENV in os.environ:
        return shutil.which(os.environ[HELM_ENV]) if os.environ[HELM_ENV] else None
    beside_python = Path(sys.executable).parent / "helm"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("helm")


def _not_found() -> str:
    if os.environ.get(HELM_ENV) == "":
        return f"rendering is switched off (${HELM_ENV} is empty)"
    if HELM_ENV in os.environ:
        return f"${HELM_ENV} is {os.environ[HELM_ENV]!r}, which is no executable on PATH; {SETUP_HINT}"
    return f"helm is neither in {Path(sys.executable).parent} nor on PATH; {SETUP_HINT}"


def helm_version(helm: str) -> str:
    done = subprocess.run([helm, "version", "--template", "{{.Version}}"], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def releases_of(recorded: Iterable[Recorded]) -> list[Release]:
    found = []
    for res in recorded:
        if res.type != HELM_RELEASE:
            continue
        inputs = res.inputs
        found.append(
            Release(
                urn=res.urn,
                resource=res.name,
                name=inputs.get("name", res.name),
                namespace=inputs.get("namespace", "default"),
                chart=inputs["chart"].rstrip("/").rsplit("/", 1)[-1],
                version=inputs.get("version", ""),
                values=inputs.get("values") or {},
                skip_crds=bool(inputs.get("skipCrds")),
            )
        )
    return sorted(found, key=lambda r: r.name)


def install_dependencies(recorded: list[Recorded]) -> dict[str, set[str]]:
    """Release URN -> URNs of every resource it waits for, directly or through other
    resources. Depending on a component means depending on everything under it."""
    children: dict[str, list[str]] = {}
    for res in recorded:
        children.setdefault(res.parent, []).append(res.urn)
    direct = {res.urn: res.dependencies for res in recorded}

    def expand(urn: str) -> list[str]:
        out, stack = [], [urn]
        while stack:
            current = stack.pop()
            out.append(current)
            stack.extend(children.get(current, []))
        return out

    closure: dict[str, set[str]] = {}
    for urn in (res.urn for res in recorded if res.type == HELM_RELEASE):
        seen: set[str] = set()
        stack = [d for dep in direct[urn] for d in expand(dep)]
        while stack:
            current = stack.pop()
            if current in seen or current == urn:
                continue
            seen.add(current)
            stack.extend(d for dep in direct.get(current, []) for d in expand(dep))
        closure[urn] = seen
    return closure


def crd_apis(objects: Iterable[Mapping[str, Any]]) -> set[str]:
    """`group/version` and `group/version/Kind` of every served version of the CRDs among `objects`
    (helm's `.Capabilities.APIVersions.Has` accepts either form)."""
    apis: set[str] = set()
    for obj in objects:
        if obj.get("kind") != "CustomResourceDefinition":
            continue
        spec = obj["spec"]
        for version in spec.get("versions", []):
            if version.get("served", True):
                apis |= {
                    f"{spec['group']}/{version['name']}",
                    f"{spec['group']}/{version['name']}/{spec['names']['kind']}",
                }
    return apis


def template_text(helm: str, release: Release, kubernetes_version: str, api_versions: Iterable[str] = ()) -> str:
    """`helm template` of one release: its manifests (hooks included) as helm prints them."""
    if not release.chart_dir.is_dir():
        raise RenderError(
            f"release {release.name}: no vendored chart {release.chart_dir.relative_to(ROOT)}"
            " (vendor it as charts/SOURCES.md describes)"
        )
    command = [
        helm,
        "template",
        release.name,
        str(release.chart_dir),
        "--namespace",
        release.namespace,
        "--kube-version",
        kubernetes_version,
        "--skip-crds" if release.skip_crds else "--include-crds",
        "--values",
        "-",
        *(f"--api-versions={api}" for api in sorted(api_versions)),
    ]
    done = subprocess.run(command, input=json.dumps(release.values), capture_output=True, text=True)
    if done.returncode != 0:
        raise RenderError(
            f"helm template {release.name} ({release.chart} {release.version}) failed: {done.stderr.strip()}"
        )
    return done.stdout


_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)


def documents(text: str) -> tuple[Document, ...]:
    """helm's output split into one document per object. A chunk between `---` lines that still
    holds several documents (a separator with content after it) is re-serialized per object."""
    found = []
    for chunk in _SEPARATOR.split(text):
        objs = [o for o in yaml.load_all(chunk, Loader=_Loader) if o]
        if len(objs) == 1:
            found.append(Document(chunk.strip("\n") + "\n", objs[0]))
        else:
            found += [Document(yaml.safe_dump(o, sort_keys=False), o) for o in objs]
    return tuple(found)


def template(
    helm: str, release: Release, kubernetes_version: str, api_versions: Iterable[str] = ()
) -> tuple[Document, ...]:
    return documents(template_text(helm, release, kubernetes_version, api_versions))


def render(recorded: list[Recorded], kubernetes_version: str, helm: str | None = None) -> Rendering:
    """Every recorded release, dependencies first; the releases of one wave in parallel."""
    helm = helm or find_helm()
    if helm is None:
        return Rendering(missing=_not_found())
    releases = {r.urn: r for r in releases_of(recorded)}
    deps = install_dependencies(recorded)
    # CRDs the program creates itself, outside any chart, count as much as a chart's.
    own_crds = {r.urn: r.inputs for r in recorded if r.type == CRD_RESOURCE}
    # Parsing megabytes of CRDs allocates many long-lived objects: the cyclic GC would only
    # cost time here (it doubles the parse), as in tools/plan/run.py. Back on afterwards.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        done = _render_waves(helm, releases, deps, own_crds, kubernetes_version)
    finally:
        if was_enabled:
            gc.enable()
    ordered = sorted(done.values(), key=lambda r: r.release.name)
    return Rendering(helm=helm, helm_version=helm_version(helm), releases={r.release.name: r for r in ordered})


def _render_waves(
    helm: str,
    releases: dict[str, Release],
    deps: dict[str, set[str]],
    own_crds: dict[str, dict[str, Any]],
    kubernetes_version: str,
) -> dict[str, RenderedRelease]:
    """Render in waves: each wave holds the releases whose dependencies are all rendered."""
    done: dict[str, RenderedRelease] = {}

    def installed_before(urn: str) -> tuple[str, ...]:
        objects = [o for d in deps[urn] if d in done for o in done[d].objects]
        objects += [own_crds[d] for d in deps[urn] if d in own_crds]
        return tuple(sorted(crd_apis(objects)))

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        while len(done) < len(releases):
            ready = [u for u in releases if u not in done and deps[u] & releases.keys() <= done.keys()]
            if not ready:
                raise RenderError("the recorded Helm releases depend on each other in a cycle")
            apis = {u: installed_before(u) for u in ready}
            futures = {u: pool.submit(template, helm, releases[u], kubernetes_version, apis[u]) for u in ready}
            for urn, future in futures.items():
                done[urn] = RenderedRelease(releases[urn], apis[urn], future.result())
    return done


def cluster_scoped_kinds(rendering: Rendering) -> set[str]:
    kinds = set(CLUSTER_SCOPED_KINDS)
    for rendered in rendering.releases.values():
        for obj in rendered.objects:
            if obj.get("kind") == "CustomResourceDefinition" and obj["spec"].get("scope") == "Cluster":
                kinds.add(obj["spec"]["names"]["kind"])
    return kinds


def namespace_of(obj: Mapping[str, Any], release: Release, cluster_scoped: set[str]) -> str:
    """Where helm would create `obj`: its own namespace, else the release's (namespaced kinds only)."""
    if obj.get("kind") in cluster_scoped:
        return ""
    return (obj.get("metadata") or {}).get("namespace") or release.namespace


def object_files(rendering: Rendering) -> dict[str, str]:
    """`<release>/<kind>_<namespace>_<name>.yaml` -> the object as helm printed it, for every rendered object."""
    cluster_scoped = cluster_scoped_kinds(rendering)
    files: dict[str, str] = {}
    for name, rendered in rendering.releases.items():
        for doc in rendered.documents:
            obj = doc.obj
            parts = [obj["kind"].lower(), namespace_of(obj, rendered.release, cluster_scoped), obj["metadata"]["name"]]
            path = f"{name}/{'_'.join(p for p in parts if p)}.yaml"
            if path in files:
                raise RenderError(f"release {name} renders two objects that would share {path}")
            files[path] = doc.text
    return files
