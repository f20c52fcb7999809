"""A Helm release of a chart pinned in `domain/versions.py`: chart, version and repository from one place."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from domain.versions import HelmChart


def pinned_release(
    resource_name: str,
    chart: HelmChart,
    *,
    name: str,
    namespace: str,
    opts: pulumi.ResourceOptions,
    values: pulumi.Input[dict] | None = None,
    **extra: Any,
) -> k8s.helm.v3.Release:
    """`helm.v3.Release` (it records chart, version, repository and values as inputs, so the
    offline plan and the policies see exactly what would be installed). OCI charts carry
    their repository in `chart`."""
    repository = k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo) if chart.repo else None
    return k8s.helm.v3.Release(
        resource_name,
        name=name,
        chart=chart.chart,
        version=chart.version,
        repository_opts=repository,
        namespace=namespace,
        values=values,
        opts=opts,
        **extra,
    )
