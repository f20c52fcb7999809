"""The KEDA HTTP add-on release: pinned images, components placed on the right nodes."""

from __future__ import annotations

import yaml

from domain import contract, versions
from infra import keda_http
from infra.keda_http import KedaHttpAddOn, KedaHttpAddOnArgs
from tests.unit.helpers import assert_parented, build, named
from tools.plan import render


def test_release_is_pinned_and_parented() -> None:
    resources = build(lambda: KedaHttpAddOn("http", KedaHttpAddOnArgs(depends_on=[])))
    assert_parented(resources, "gpuinf:keda:HttpAddOn")
    release = named(resources, "http-release").inputs
    assert (release["chart"], release["version"], release["namespace"], release["name"]) == (
        "keda-add-ons-http",
        versions.KEDA_HTTP_ADD_ON_VERSION,
        "keda",
        "keda-add-ons-http",
    )
    assert release["values"]["images"] == {"tag": versions.KEDA_HTTP_ADD_ON_VERSION}


def test_every_component_runs_on_the_system_nodes_with_pinned_pulls() -> None:
    values = keda_http.helm_values()
    for component in ("operator", "scaler", "interceptor"):
        assert values[component]["nodeSelector"][contract.ROLE_LABEL] == "system", component
        assert values[component]["tolerations"] == contract.system_tolerations(), component
        assert values[component]["pullPolicy"] == "IfNotPresent", component
    assert values["interceptor"]["replicas"]["min"] >= 2  # a node drain never cuts the wake-up path


def test_addresses_match_the_pinned_charts_service_names_and_ports() -> None:
    """The chart names its Services `<chart name>-<values' service name>` (templates/scaler/service.yaml,
    templates/interceptor/service-proxy.yaml); read names and ports from its vendored values.yaml."""
    chart = yaml.safe_load(
        (render.CHARTS / f"keda-add-ons-http-{versions.KEDA_HTTP_ADD_ON_VERSION}" / "values.yaml").read_text()
    )
    scaler, proxy = chart["scaler"], chart["interceptor"]["proxy"]
    assert f"{keda_http.CHART_NAME}-{scaler['service']}.keda:{scaler['grpcPort']}" == keda_http.EXTERNAL_SCALER
    assert (
        f"{keda_http.CHART_NAME}-{proxy['service']}.keda.svc.cluster.local:{proxy['port']}"
    ) == keda_http.INTERCEPTOR_PROXY
