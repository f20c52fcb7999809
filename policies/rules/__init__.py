"""Every rule of the pack, assembled explicitly (no registry filled by import side effects)."""

from __future__ import annotations

from pulumi_policy import Policy

from policies.rules import (
    aws_resources,
    cluster,
    cost,
    disruption,
    endpoints,
    helm,
    model_access,
    nodeclasses,
    nodepools,
    pod_security,
    workloads,
)


def all_policies() -> list[Policy]:
    policies = [
        *nodepools.POLICIES,
        *nodeclasses.POLICIES,
        *cluster.POLICIES,
        *helm.POLICIES,
        *workloads.POLICIES,
        *disruption.POLICIES,
        *pod_security.POLICIES,
        *aws_resources.POLICIES,
        *model_access.POLICIES,
        *cost.POLICIES,
        *endpoints.POLICIES,
    ]
    names = [p.name for p in policies]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"policy names must be unique: {duplicates}")
    return policies
