from __future__ import annotations

import pytest

from domain import versions
from tests.policy_rules import fixtures as fx
from tests.policy_rules.helpers import mutated, resource_violations

V4 = "kubernetes:helm.sh/v4:Chart"
OCI = {"name": "karpenter", "chart": "oci://public.ecr.aws/karpenter/karpenter", "version": "1.14.1"}


@pytest.mark.parametrize("props", [fx.device_plugin_release(), OCI])
def test_pinned_releases_from_known_repositories_pass(props: dict) -> None:
    assert resource_violations("helm-chart-pinned", fx.RELEASE, props) == []
    assert resource_violations("helm-known-repository", fx.RELEASE, props) == []


@pytest.mark.parametrize("version", ["", "latest", "^1.14.0", "~1.14", "1.14", ">=1.0.0", "1.x"])
def test_unpinned_versions(version: str) -> None:
    props = mutated(OCI, "version", version)
    [message] = resource_violations("helm-chart-pinned", fx.RELEASE, props)
    assert message.startswith("Helm release karpenter (chart oci://public.ecr.aws/karpenter/karpenter) has version")
    assert resource_violations("helm-chart-pinned", V4, props)


def test_unknown_repository_and_its_config() -> None:
    props = mutated(fx.device_plugin_release(), "repositoryOpts.repo", "https://charts.example.com")
    assert resource_violations("helm-known-repository", fx.RELEASE, props) == [
        "Helm release nvidia-device-plugin comes from 'https://charts.example.com'; known repositories: "
        + str(sorted({"oci://public.ecr.aws/karpenter", *(c.repo for c in versions.HELM_CHARTS.values() if c.repo)}))
    ]
    config = {"knownRepositories": ["https://charts.example.com"]}
    assert resource_violations("helm-known-repository", fx.RELEASE, props, config) == []


def test_oci_chart_from_another_registry() -> None:
    props = mutated(OCI, "chart", "oci://ghcr.io/someone/karpenter")
    [message] = resource_violations("helm-known-repository", V4, props)
    assert "comes from 'oci://ghcr.io/someone'" in message
