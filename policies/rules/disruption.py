"""Consolidation safety: a one-replica service where Karpenter (or EC2) may take its node away.

A service at one replica keeps a PodDisruptionBudget of `maxUnavailable: 1`
(infra/workloads/inference.py): that budget lets the eviction through, so when
Karpenter consolidates the node (`WhenEmptyOrUnderutilized` replaces an
underutilized node with a cheaper one) or EC2 reclaims a Spot instance, the
service has no ready replica until a new pod has been scheduled, its node
launched, its image pulled and its model loaded: a full cold start, minutes
for a GPU service. `karpenter.sh/do-not-disrupt` on the pods stops voluntary
disruption (consolidation, drift, expiry: Karpenter docs, "Disruption",
v1.14) but not a Spot interruption or a node repair.

Services at minReplicas 0 chose cold starts (they scale to zero) and are left
out. Dev accepts Spot interruptions (`countSpot: false` in policies/config/dev.json).
"""

from __future__ import annotations

from collections.abc import Iterable

from pulumi_policy import PolicyResource

from domain import contract, scheduling
from policies.rules.common import (
    ADVISORY,
    NODEPOOL,
    SCALED_OBJECT,
    Config,
    dig,
    pod_spec,
    requirement_values,
    schema,
    stack_policy,
)

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"


def _risks(nodepool: PolicyResource, count_spot: bool, protected: bool) -> list[str]:
    found = []
    if not protected and dig(nodepool.props, "spec", "disruption", "consolidationPolicy") == "WhenEmptyOrUnderutilized":
        found.append("consolidates underutilized nodes (WhenEmptyOrUnderutilized)")
    if count_spot and "spot" in (requirement_values(nodepool.props, contract.CAPACITY_TYPE_LABEL) or []):
        found.append("may launch Spot capacity, which EC2 reclaims at two minutes' notice")
    return found


def _single_replica_disruption(resources: list[PolicyResource], config: Config) -> Iterable[tuple[str, str | None]]:
    nodepools = {r.props["metadata"]["name"]: r for r in resources if r.resource_type == NODEPOOL}
    pools = [scheduling.pool_nodes(r.props) for r in nodepools.values()]
    minimums = {
        (
            (r.props.get("metadata") or {}).get("namespace") or "default",
            dig(r.props, "spec", "scaleTargetRef", "name"),
        ): int(dig(r.props, "spec", "minReplicaCount") or 0)
        for r in resources
        if r.resource_type == SCALED_OBJECT and dig(r.props, "spec", "scaleTargetRef", "kind") in (None, "Deployment")
    }
    for r in resources:
        meta = r.props.get("metadata") or {}
        key = (meta.get("namespace") or "default", meta.get("name") or r.name)
        spec = pod_spec(r.resource_type, r.props)
        if r.resource_type != DEPLOYMENT or key not in minimums or minimums[key] != 1 or not spec:
            continue
        annotations = dig(r.props, "spec", "template", "metadata", "annotations") or {}
        protected = str(annotations.get(DO_NOT_DISRUPT)).lower() == "true"
        for pool in scheduling.pools_accepting(spec, pools):
            risks = _risks(nodepools[pool], bool(config["countSpot"]), protected)
            if risks:
                yield (
                    f"Deployment {key[1]} runs a single replica at its minimum on NodePool {pool}, which"
                    f" {' and '.join(risks)}: its PodDisruptionBudget (maxUnavailable 1) lets that one pod go,"
                    " and the service is down for a full cold start (node, image pull, model load)",
                    r.urn,
                )


POLICIES = [
    stack_policy(
        "single-replica-disruption",
        "A service whose minimum is one replica does not run where consolidation or Spot can evict that replica.",
        "Set inference.<svc>.scaling.minReplicas >= 2; or doNotDisrupt: true (stops consolidation, not Spot);"
        " or run it on a pool with consolidation WhenEmpty and on-demand (or reserved) capacity only.",
        _single_replica_disruption,
        enforcement=ADVISORY,
        config=schema(
            countSpot={
                "type": "boolean",
                "default": True,
                "description": "Count Spot capacity as a disruption risk (dev may accept Spot interruptions).",
            }
        ),
    )
]
