"""The plan's Helm releases rendered by the real helm CLI, for tests.

- `helm_or_skip()`: the helm that `scripts/setup.sh` installs. Without it a test skips on a
  workstation but fails in CI (`CI` set, or `GPUINF_REQUIRE_TOOLS=1`), so CI cannot pass by
  rendering nothing.
- `pod_specs(obj)`: the pod templates of a rendered object, prometheus-operator CRs included.
- `system_nodes(plan)` / `pool_nodes(plan)`: what the scheduler sees on the system managed
  node group and on each Karpenter NodePool of the plan.
- `Validator`: strict schemas for the cluster version (kubernetes-validate's files, loaded once)
  and, for custom resources, the CRDs the charts themselves install (vendored ones as fallback).
- `value_paths(values)`, `without`, `changed`, `unchanged_by`: the leaves (and small subtrees)
  of a release's values, edited one at a time and rendered again, for the tests that every
  value we set is read by its chart and differs from the chart's default.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import jsonschema
import pytest
import referencing
from kubernetes_validate import utils as kv

from domain import contract
from domain.scheduling import PoolNodes, node_affinity_matches
from domain.scheduling import pool_nodes as nodepool_nodes
from tests.conftest import Plan
from tests.support.cel import cel_violations
from tests.support.schemas import crd_schemas, strict
from tools.plan import render

SKIP_REASON = "helm not installed: run scripts/setup.sh (it installs .venv/bin/helm)"
POD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
# prometheus-operator CRs whose spec carries the pod's scheduling fields directly.
OPERATOR_POD_KINDS = ("Prometheus", "Alertmanager", "PrometheusAgent", "ThanosRuler")


def tools_required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("GPUINF_REQUIRE_TOOLS") == "1"


def helm_or_skip() -> str:
    helm = render.find_helm()
    if helm is None:
        if tools_required():
            pytest.fail(f"{SKIP_REASON} (required here: CI or GPUINF_REQUIRE_TOOLS=1)")
        pytest.skip(SKIP_REASON)
    return helm


# --- pods and nodes --------------------------------------------------------------------


def pod_specs(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Pod specs `obj` creates pods from (empty for objects that create none)."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if kind in POD_KINDS:
        return [spec["template"]["spec"]]
    if kind in OPERATOR_POD_KINDS and obj["apiVersion"].startswith("monitoring.coreos.com/"):
        return [spec]
    return []


def is_hook(obj: Mapping[str, Any]) -> bool:
    return "helm.sh/hook" in ((obj.get("metadata") or {}).get("annotations") or {})


_EKS_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}


def _linux(labels: Mapping[str, str]) -> dict[str, str]:
    # Every node of this platform runs Linux (AL2023 or Bottlerocket) and the kubelet
    # labels it so, whatever the pool's requirements say.
    return {contract.OS_LABEL: "linux", **labels}


def system_nodes(plan: Plan) -> PoolNodes:
    """The system managed node group, from its recorded inputs (labels, EKS-spelled taints)."""
    (group,) = plan.of_type("aws:eks/nodeGroup:NodeGroup")
    inputs = group.inputs
    taints = tuple(
        {"key": t["key"], "value": t.get("value", ""), "effect": _EKS_EFFECTS[t["effect"]]}
        for t in inputs.get("taints", [])
    )
    labels = _linux({**inputs.get("labels", {}), "eks.amazonaws.com/nodegroup": inputs.get("nodeGroupName", "")})
    return PoolNodes(name="(system node group)", labels=labels, taints=taints, gpu=False)


def pool_nodes(plan: Plan) -> list[PoolNodes]:
    """Every Karpenter NodePool of the plan, as its nodes will be labelled and tainted."""
    pools = [nodepool_nodes(np) for np in plan.objects("NodePool").values()]
    return [PoolNodes(p.name, _linux(p.labels), p.taints, p.gpu) for p in pools]


def selects(pod_spec: Mapping[str, Any], nodes: PoolNodes) -> bool:
    """nodeSelector and required node affinity alone (taints aside) admit these nodes."""
    selector = pod_spec.get("nodeSelector") or {}
    return all(nodes.labels.get(k) == v for k, v in selector.items()) and node_affinity_matches(
        pod_spec.get("affinity"), nodes.labels
    )


# --- schemas ---------------------------------------------------------------------------


@cache
def _core_validator(version: str, kind: str, api_version: str) -> jsonschema.Draft202012Validator | None:
    """kubernetes-validate's strict schema of one kind, loaded once: its own `validate` re-reads
    the schema files, megabytes of JSON, on every call. Same files and lookup as that function."""
    newest = [v for v in kv.all_versions() if kv.major_minor(v) <= version][-1]
    folder = f"kubernetes-json-schema/v{newest}-local-strict"
    # rbac.authorization.k8s.io/v1 -> rbac-v1, apps/v1 -> apps-v1, v1 -> v1
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kv.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", version)
    except FileNotFoundError:
        return None
    definitions = kv.schema_contents(f"{folder}/_definitions.json", version)
    registry = referencing.Resource.from_contents(definitions) @ (
        referencing.Resource.from_contents(schema) @ referencing.Registry()
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<root>"


def _errors(validator: jsonschema.Draft202012Validator, obj: Any) -> list[str]:
    return [f"{_path(e)}: {e.message}" for e in sorted(validator.iter_errors(obj), key=str)]


class Validator:
    """Strict validation of rendered objects for one Kubernetes version. Custom resources are
    checked against `crds` (the CRD objects the plan's charts install), else the vendored ones."""

    def __init__(self, kubernetes_version: str, crds: list[Mapping[str, Any]]) -> None:
        self.version = kubernetes_version
        self.crd_schemas: dict[tuple[str, str], dict] = dict(crd_schemas())
        for crd in crds:
            spec = crd["spec"]
            for version in spec["versions"]:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                self.crd_schemas[key] = version["schema"]["openAPIV3Schema"]
        self._crd_validators: dict[tuple[str, str], jsonschema.Draft202012Validator] = {}

    def errors(self, obj: Mapping[str, Any]) -> list[str]:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        if key in self.crd_schemas:
            if key not in self._crd_validators:
                self._crd_validators[key] = jsonschema.Draft202012Validator(
                    strict(copy.deepcopy(self.crd_schemas[key]))
                )
            found = _errors(self._crd_validators[key], obj)
            # CRD schemas leave metadata open; the API server still enforces ObjectMeta.
            probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata", {})}
            found += _errors(self._core("ConfigMap", "v1"), probe)
            return found + cel_violations(self.crd_schemas[key], dict(obj))
        validator = _core_validator(self.version, *reversed(key))
        if validator is None:
            return [f"no schema for {key} (neither Kubernetes {self.version} nor a CRD the plan installs)"]
        return _errors(validator, obj)

    def _core(self, kind: str, api_version: str) -> jsonschema.Draft202012Validator:
        validator = _core_validator(self.version, kind, api_version)
        assert validator is not None
        return validator


# --- values ----------------------------------------------------------------------------

# Maps we set as one unit ("small subtrees"): a selector or an affinity is one scheduling
# decision, and helm merges maps key by key, so removing one key of ours can leave the chart's
# same default; resources are one sizing decision, an image reference one pin.
ATOMIC_KEYS = frozenset(
    {"nodeSelector", "affinity", "podLabels", "podAnnotations", "labels", "annotations", "resources", "image", "images"}
)

ValuePath = tuple[str, ...]


def value_paths(values: Mapping[str, Any], prefix: ValuePath = ()) -> Iterator[ValuePath]:
    """Every leaf of `values` (lists and ATOMIC_KEYS maps count as leaves), depth first."""
    for key, value in values.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value and key not in ATOMIC_KEYS:
            yield from value_paths(value, path)
        else:
            yield path


def without(values: Mapping[str, Any], path: ValuePath) -> dict[str, Any]:
    """A deep copy of `values` with `path` removed, so the chart's default applies there."""
    out = copy.deepcopy(dict(values))
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return out


def _perturbed(value: Any) -> Any:
    """A different value of the same shape: every leaf changed (a map set to `{}` would not do:
    helm merges it into the chart's default map, a no-op)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "-probe"
    if isinstance(value, list):
        return [_perturbed(v) for v in value] if value else ["probe"]
    if isinstance(value, dict):
        return {k: _perturbed(v) for k, v in value.items()} if value else {"gpu-inference.io/probe": "probe"}
    return "probe"  # null


def changed(values: Mapping[str, Any], path: ValuePath) -> dict[str, Any]:
    """A deep copy of `values` with the value at `path` replaced by a different one of its shape."""
    out = copy.deepcopy(dict(values))
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = _perturbed(parent[path[-1]])
    return out


@dataclasses.dataclass(frozen=True)
class ValueCase:
    """One value path of one release as rendered for one stack (CRDs of crds/ dirs skipped:
    helm copies those files, it never templates them)."""

    release: render.Release
    path: ValuePath
    kubernetes_version: str
    api_versions: tuple[str, ...]


def value_cases_of(renderings: Iterable[render.Rendering], kubernetes_versions: Iterable[str]) -> list[ValueCase]:
    """Every values path of every release; a path whose value is the same in several stacks once."""
    cases, seen = [], set()
    for rendering, version in zip(renderings, kubernetes_versions, strict=True):
        for rendered in rendering.releases.values():
            release = dataclasses.replace(rendered.release, skip_crds=True)
            for path in value_paths(release.values):
                leaf: Any = release.values
                for key in path:
                    leaf = leaf[key]
                key = (release.name, path, json.dumps(leaf, sort_keys=True))
                if key not in seen:
                    seen.add(key)
                    cases.append(ValueCase(release, path, version, rendered.api_versions))
    return cases


def _base_key(case: ValueCase) -> tuple[str, str, str, tuple[str, ...]]:
    values = json.dumps(case.release.values, sort_keys=True)
    return (case.release.name, values, case.kubernetes_version, case.api_versions)


def unchanged_by(
    helm: str, cases: Iterable[ValueCase], edit: Callable[[Mapping[str, Any], ValuePath], dict[str, Any]]
) -> list[str]:
    """`release: dotted.path` of each value whose `edit` leaves the release's output byte-identical
    in every stack it was tried in. Renders in parallel; a render that fails counts as a change."""

    def text(release: render.Release, version: str, apis: tuple[str, ...]) -> str:
        try:
            return render.template_text(helm, release, version, apis)
        except render.RenderError as exc:
            return f"render failed: {exc}"

    cases = list(cases)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        bases = {}
        for case in cases:
            if _base_key(case) not in bases:
                bases[_base_key(case)] = pool.submit(text, case.release, case.kubernetes_version, case.api_versions)
        edited = [
            pool.submit(
                text,
                dataclasses.replace(case.release, values=edit(case.release.values, case.path)),
                case.kubernetes_version,
                case.api_versions,
            )
            for case in cases
        ]
        same: dict[str, bool] = {}
        for case, future in zip(cases, edited, strict=True):
            name = f"{case.release.name}: {'.'.join(case.path)}"
            base = bases[_base_key(case)].result()
            same[name] = same.get(name, True) and future.result() == base
    return sorted(name for name, unchanged in same.items() if unchanged)
