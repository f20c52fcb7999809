"""Could a pod land on a pool's nodes? Pure functions over Kubernetes dicts.

Used by the contract tests (and the policy pack) to check that every GPU pod
template tolerates and selects what some NodePool actually provides. Only the
scheduling predicates that labels and taints decide are modelled: nodeSelector,
required node affinity, and NoSchedule / NoExecute taints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from domain import contract


@dataclass(frozen=True)
class PoolNodes:
    """What every node of a NodePool carries."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Mapping[str, str], ...]
    gpu: bool


def pool_nodes(nodepool: Mapping[str, Any]) -> PoolNodes:
    """Labels and taints of a rendered Karpenter NodePool's nodes.

    Labels: the template's labels, the nodepool label Karpenter adds, and every
    requirement that pins a single value (Karpenter labels nodes with those).
    """
    name = nodepool["metadata"]["name"]
    template = nodepool["spec"]["template"]
    labels = dict(template.get("metadata", {}).get("labels", {}))
    labels[contract.NODEPOOL_LABEL] = name
    for req in template["spec"].get("requirements", []):
        if req["operator"] == "In" and len(req.get("values", [])) == 1:
            labels.setdefault(req["key"], req["values"][0])
    taints = tuple(template["spec"].get("taints", []))
    gpu = contract.GPU_RESOURCE in nodepool["spec"].get("limits", {})
    return PoolNodes(name=name, labels=labels, taints=taints, gpu=gpu)


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, str]) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint["effect"]:
            continue
        if tol.get("operator", "Equal") == "Exists":
            if not tol.get("key") or tol["key"] == taint["key"]:
                return True
        elif tol.get("key") == taint["key"] and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def _expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values", [])
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels:
        number, bound = int(labels[key]), int(values[0])
        return number > bound if op == "Gt" else number < bound
    return False


def node_affinity_matches(affinity: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    required = ((affinity or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return True
    return any(
        all(_expression_matches(e, labels) for e in term.get("matchExpressions", []))
        for term in required.get("nodeSelectorTerms", [])
    )


def pod_fits(pod_spec: Mapping[str, Any], pool: PoolNodes) -> bool:
    """Would the scheduler accept `pod_spec` on a node of `pool`, label- and taint-wise?"""
    selector = pod_spec.get("nodeSelector") or {}
    if any(pool.labels.get(k) != v for k, v in selector.items()):
        return False
    if not node_affinity_matches(pod_spec.get("affinity"), pool.labels):
        return False
    hard = [t for t in pool.taints if t["effect"] in ("NoSchedule", "NoExecute")]
    return all(tolerates(pod_spec.get("tolerations") or [], t) for t in hard)


def requests_gpu(pod_spec: Mapping[str, Any]) -> bool:
    containers = [*(pod_spec.get("containers") or []), *(pod_spec.get("initContainers") or [])]
    for c in containers:
        resources = c.get("resources") or {}
        if contract.GPU_RESOURCE in (resources.get("limits") or {}) or contract.GPU_RESOURCE in (
            resources.get("requests") or {}
        ):
            return True
    return False


def pools_accepting(pod_spec: Mapping[str, Any], pools: Iterable[PoolNodes]) -> list[str]:
    return sorted(p.name for p in pools if pod_fits(pod_spec, p))
