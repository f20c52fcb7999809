"""Helm releases: an exact pinned chart version from a known repository."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pulumi_policy import ResourceValidationArgs

from domain import versions
from policies.rules.common import HELM_CHART_V4, HELM_RELEASE, Config, resource_policy, schema

EXACT_VERSION = re.compile(r"^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")


def chart_repository(props: dict) -> str:
    """Where a release's chart comes from: the OCI location without the chart name, or the repo URL."""
    chart = str(props.get("chart") or "")
    if chart.startswith("oci://"):
        return chart.rsplit("/", 1)[0]
    return str((props.get("repositoryOpts") or {}).get("repo") or props.get("repository") or "")


def known_repositories() -> list[str]:
    return sorted(
        {
            chart_repository({"chart": c.chart, "repositoryOpts": {"repo": c.repo}})
            for c in versions.HELM_CHARTS.values()
        }
    )


def _pinned(args: ResourceValidationArgs, _: Config) -> Iterable[str]:
    version = str(args.props.get("version") or "")
    if not EXACT_VERSION.match(version) or version.lower() == "latest":
        yield (
            f"Helm release {args.props.get('name') or args.name} (chart {args.props.get('chart')}) has version"
            f" {version!r}; pin an exact version in domain/versions.py"
        )


def _known_repo(args: ResourceValidationArgs, config: Config) -> Iterable[str]:
    repo = chart_repository(dict(args.props))
    if repo not in config["knownRepositories"]:
        yield (
            f"Helm release {args.props.get('name') or args.name} comes from {repo or 'an unnamed repository'!r};"
            f" known repositories: {config['knownRepositories']}"
        )


POLICIES = [
    resource_policy(
        "helm-chart-pinned",
        "Helm releases pin an exact chart version (no empty version, latest or range).",
        "Add the chart to domain/versions.py with an exact version.",
        [HELM_RELEASE, HELM_CHART_V4],
        _pinned,
    ),
    resource_policy(
        "helm-known-repository",
        "Helm charts come from a repository the platform team knows.",
        "Add the repository to knownRepositories in policies/config/<env>.json after review.",
        [HELM_RELEASE, HELM_CHART_V4],
        _known_repo,
        config=schema(
            knownRepositories={
                "type": "array",
                "items": {"type": "string"},
                "default": known_repositories(),
                "description": "Chart repositories (OCI locations without chart name, or HTTPS repo URLs).",
            }
        ),
    ),
]
