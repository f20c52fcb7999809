"""The Helm releases as helm really renders them (vendored charts under charts/, the pinned
helm CLI), checked where a defect would otherwise only show on a live cluster: schemas,
placement on nodes, scrape settings, and values that silently do nothing.

Each stack is rendered once per session; see tests/support/rendered.py for the helpers.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from domain import contract, versions
from domain.scheduling import pod_fits, pools_accepting, tolerates
from tests.conftest import Plan, plan_of, run_plan, stack_config
from tests.support.rendered import (
    Validator,
    ValueCase,
    changed,
    helm_or_skip,
    is_hook,
    pod_specs,
    pool_nodes,
    selects,
    system_nodes,
    unchanged_by,
    value_cases_of,
    without,
)
from tools.plan import render
from tools.plan.mocks import Recorded

ROOT = Path(__file__).resolve().parents[1]
RENDERED_STACKS = ("dev", "prod")
SYSTEM_RELEASES = ("karpenter", "keda", "keda-add-ons-http", "kube-prometheus-stack", "aws-load-balancer-controller")
GPU_DAEMON_RELEASES = ("nvidia-device-plugin", "dcgm-exporter")
# Node agents of the system releases: they run on every node, not on the system nodes only.
EVERY_NODE_DAEMONS = {("kube-prometheus-stack", "DaemonSet", "kube-prometheus-stack-prometheus-node-exporter")}
# GPU daemons that must run on every GPU node. The device plugin's MPS control daemon is
# not among them: it selects `nvidia.com/mps.capable=true`, which only GPU feature discovery
# sets for MPS sharing, and we share GPUs by time-slicing (gfd is off).
EVERY_GPU_NODE_DAEMONS = {("nvidia-device-plugin", "nvidia-device-plugin"), ("dcgm-exporter", "dcgm-exporter")}


@dataclass(frozen=True)
class RenderedStack:
    stack: str
    plan: Plan
    rendering: render.Rendering

    def objects(self, release: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, rendered in self.rendering.releases.items():
            if release is None or name == release:
                yield from ((name, obj) for obj in rendered.objects)


@pytest.fixture(scope="session")
def helm() -> str:
    return helm_or_skip()


@pytest.fixture(scope="session")
def rendered_stacks(helm: str) -> dict[str, RenderedStack]:
    found = {}
    for stack in RENDERED_STACKS:
        plan = plan_of(stack_config(stack), stack)
        found[stack] = RenderedStack(stack, plan, render.render(plan.resources, plan.settings.cluster.version, helm))
    return found


@pytest.fixture(params=RENDERED_STACKS)
def rendered(request: pytest.FixtureRequest, rendered_stacks: dict[str, RenderedStack]) -> RenderedStack:
    return rendered_stacks[request.param]


def _name(release: str, obj: dict[str, Any]) -> str:
    return f"{release}: {obj['kind']}/{obj['metadata']['name']}"


# --- the vendored charts and the helm CLI ---------------------------------------------


def _chart_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load((path / "Chart.yaml").read_text())


def test_vendored_charts_are_exactly_the_pinned_versions() -> None:
    charts = render.CHARTS
    expected = {f"{name}-{chart.version}" for name, chart in versions.HELM_CHARTS.items()}
    assert {p.name for p in charts.iterdir() if p.is_dir()} == expected
    sources = (charts / "SOURCES.md").read_text()
    for name, chart in versions.HELM_CHARTS.items():
        meta = _chart_yaml(charts / f"{name}-{chart.version}")
        assert (meta["name"], meta["version"]) == (name, chart.version)
        assert f"`{name}-{chart.version}/`" in sources
    assert "Apache-2.0" in sources


def test_subcharts_are_vendored_at_the_versions_their_parent_asks_for() -> None:
    """helm template uses charts/<parent>/charts/* as is: a wrong version would render silently."""
    for parent in render.CHARTS.iterdir():
        if not (parent / "Chart.yaml").exists():
            continue
        vendored = {}
        for sub in (parent / "charts").glob("*"):
            if sub.is_dir():
                meta = _chart_yaml(sub)
                vendored[meta["name"]] = str(meta["version"])
            else:  # a packaged subchart, <name>-<version>.tgz
                name, version = re.fullmatch(r"(.+)-(\d+\.\d+\.\d+)\.tgz", sub.name).groups()
                vendored[name] = version
        for dep in _chart_yaml(parent).get("dependencies") or []:
            assert dep["name"] in vendored, f"{parent.name}: subchart {dep['name']} is not vendored"
            assert fnmatch.fnmatch(vendored[dep["name"]], str(dep["version"])), (parent.name, dep, vendored)


def test_helm_is_the_pinned_version(helm: str) -> None:
    assert render.helm_version(helm) == versions.HELM_CLI.version


def test_every_release_renders(rendered: RenderedStack) -> None:
    assert set(rendered.rendering.releases) == set(rendered.plan.releases)
    empty = [name for name, r in rendered.rendering.releases.items() if not r.objects]
    assert empty == [], f"releases that render no object: {empty}"


# --- install order: capabilities -------------------------------------------------------


def test_a_release_sees_the_crds_of_what_it_depends_on_and_not_its_own(rendered: RenderedStack) -> None:
    releases = rendered.rendering.releases
    # kube-prometheus-stack depends on no other release: its own CRDs are not served yet
    # when helm evaluates its templates.
    assert releases["kube-prometheus-stack"].api_versions == ()
    assert "karpenter.sh/v1/NodePool" in releases["karpenter"].api_versions  # from karpenter-crd
    # keda waits for kube-prometheus-stack, so its ServiceMonitor template renders.
    assert "monitoring.coreos.com/v1/ServiceMonitor" in releases["keda"].api_versions
    assert "ServiceMonitor" in {obj["kind"] for _, obj in rendered.objects("keda")}


def _recorded(urn: str, typ: str, parent: str = "", deps: tuple[str, ...] = ()) -> Recorded:
    return Recorded(
        urn=urn,
        type=typ,
        name=urn,
        parent=parent,
        custom=typ != "comp",
        provider="",
        providers={},
        dependencies=list(deps),
    )


def test_depending_on_a_component_waits_for_every_release_under_it() -> None:
    recorded = [
        _recorded("comp", "comp"),
        _recorded("inner", "comp", parent="comp"),
        _recorded("b", render.HELM_RELEASE, parent="inner"),
        _recorded("cm", "kubernetes:core/v1:ConfigMap", deps=("b",)),
        _recorded("a", render.HELM_RELEASE, deps=("comp",)),
        _recorded("c", render.HELM_RELEASE, deps=("cm",)),  # through a non-release resource
        _recorded("d", render.HELM_RELEASE),
    ]
    deps = render.install_dependencies(recorded)
    assert {u: deps[u] & {"a", "b", "c", "d"} for u in deps} == {"a": {"b"}, "b": set(), "c": {"b"}, "d": set()}


# --- schemas ---------------------------------------------------------------------------


def _validator(rendered: RenderedStack) -> Validator:
    crds = [obj for _, obj in rendered.objects() if obj["kind"] == "CustomResourceDefinition"]
    return Validator(rendered.plan.settings.cluster.version, crds)


def test_every_rendered_object_validates_strictly(rendered: RenderedStack) -> None:
    validator = _validator(rendered)
    errors = {_name(rel, obj): validator.errors(obj) for rel, obj in rendered.objects()}
    assert {name: e for name, e in errors.items() if e} == {}


def test_the_validator_rejects_what_the_api_server_would(rendered_stacks: dict[str, RenderedStack]) -> None:
    dev = rendered_stacks["dev"]
    validator = _validator(dev)
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for _, obj in dev.objects()}
    daemonset = json.loads(json.dumps(objects[("DaemonSet", "dcgm-exporter")]))
    daemonset["spec"]["template"]["spec"]["containers"][0]["args"] = ["-c", 5000]  # an int arg
    assert any("args" in e for e in validator.errors(daemonset)), validator.errors(daemonset)
    prometheus = json.loads(json.dumps(objects[("Prometheus", "kps-prometheus")]))
    prometheus["spec"]["scrapeEvery"] = "30s"  # a CRD the chart installs, not a vendored one
    assert any("scrapeEvery" in e for e in validator.errors(prometheus)), validator.errors(prometheus)
    prometheus["metadata"]["name"] = 7
    assert any(e.startswith("metadata.name:") for e in validator.errors(prometheus))


# --- placement -------------------------------------------------------------------------


def _pods(rendered: RenderedStack, releases: tuple[str, ...]) -> Iterator[tuple[str, dict, dict]]:
    for release, obj in rendered.objects():
        if release in releases:
            for spec in pod_specs(obj):
                yield release, obj, spec


def test_system_add_ons_run_only_on_system_nodes(rendered: RenderedStack) -> None:
    """Deployments, StatefulSets, Jobs (helm hooks included), operator-managed Prometheus and
    Alertmanager: selected onto the system node group only, tolerating its taint."""
    system, pools = system_nodes(rendered.plan), pool_nodes(rendered.plan)
    checked, wrong = [], []
    for release, obj, spec in _pods(rendered, SYSTEM_RELEASES):
        if (release, obj["kind"], obj["metadata"]["name"]) in EVERY_NODE_DAEMONS:
            continue
        checked.append(_name(release, obj) + (" (hook)" if is_hook(obj) else ""))
        elsewhere = [p.name for p in pools if selects(spec, p)]
        if not selects(spec, system) or elsewhere or not pod_fits(spec, system):
            wrong.append(
                f"{_name(release, obj)}: fits the system nodes: {pod_fits(spec, system)},"
                f" its selector also admits pools {elsewhere}"
            )
    assert any("(hook)" in c for c in checked), "expected kube-prometheus-stack's admission hook Jobs"
    assert {"Prometheus", "Alertmanager"} <= {c.split(": ")[1].split("/")[0] for c in checked}
    assert wrong == []


def test_gpu_daemons_run_on_every_gpu_pool_and_nowhere_else(rendered: RenderedStack) -> None:
    system, pools = system_nodes(rendered.plan), pool_nodes(rendered.plan)
    gpu_pools = sorted(p.name for p in pools if p.gpu)
    assert gpu_pools, "the stack has no GPU NodePool"
    found, wrong = set(), []
    for release, obj, spec in _pods(rendered, GPU_DAEMON_RELEASES):
        accepted = pools_accepting(spec, pools)
        if not set(accepted) <= set(gpu_pools) or pod_fits(spec, system):
            wrong.append(f"{_name(release, obj)} lands on {accepted} (system nodes: {pod_fits(spec, system)})")
        if (release, obj["metadata"]["name"]) in EVERY_GPU_NODE_DAEMONS:
            found.add((release, obj["metadata"]["name"]))
            if accepted != gpu_pools:
                wrong.append(f"{_name(release, obj)} lands on {accepted}, not on every GPU pool {gpu_pools}")
    assert found == EVERY_GPU_NODE_DAEMONS
    assert wrong == []


def test_node_exporter_runs_on_every_node(rendered: RenderedStack) -> None:
    nodes = [system_nodes(rendered.plan), *pool_nodes(rendered.plan)]
    daemons = [
        (obj, spec)
        for release, obj, spec in _pods(rendered, SYSTEM_RELEASES)
        if (release, obj["kind"], obj["metadata"]["name"]) in EVERY_NODE_DAEMONS
    ]
    assert len(daemons) == len(EVERY_NODE_DAEMONS)
    for obj, spec in daemons:
        assert [n.name for n in nodes if not pod_fits(spec, n)] == [], obj["metadata"]["name"]
        # Every taint, not only today's: a NoExecute taint or a new pool's key too.
        assert tolerates(spec.get("tolerations") or [], {"key": "any.example/taint", "effect": "NoExecute"})


# --- scraping --------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(duration: str) -> float:
    """A Prometheus duration (`1m30s`, `500ms`) in seconds."""
    parts = _DURATION.findall(duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a Prometheus duration: {duration!r}"
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


def test_seconds_reads_prometheus_durations() -> None:
    assert [seconds("5s"), seconds("1m30s"), seconds("500ms")] == [5, 90, 0.5]


def test_no_scrape_timeout_exceeds_its_interval(rendered: RenderedStack) -> None:
    """prometheus-operator rejects a ServiceMonitor or PodMonitor whose endpoint sets a
    scrapeTimeout longer than its interval (or, when the endpoint sets none, the Prometheus
    CR's scrapeInterval): `validateScrapeIntervalAndTimeout` in prometheus-operator's
    pkg/prometheus/resource_selector.go. The charts' monitors and our own are checked."""
    prometheus = next(obj["spec"] for _, obj in rendered.objects() if obj["kind"] == "Prometheus")
    monitors = [*rendered.objects(), *(("(program)", m) for m in rendered.plan.manifests)]
    wrong = []
    for release, obj in monitors:
        field = {"ServiceMonitor": "endpoints", "PodMonitor": "podMetricsEndpoints"}.get(obj["kind"])
        endpoints = (obj["spec"].get(field) or []) if field else []
        for i, endpoint in enumerate(endpoints):
            interval = endpoint.get("interval") or prometheus.get("scrapeInterval")
            timeout = endpoint.get("scrapeTimeout")
            if interval and timeout and seconds(timeout) > seconds(interval):
                wrong.append(f"{_name(release, obj)} endpoint {i}: scrapeTimeout {timeout} > interval {interval}")
    assert monitors and wrong == []


# What EKS does not let a cluster scrape: the control plane (controller manager, scheduler,
# etcd) runs outside the cluster, so no pod carries these labels; the kube-proxy add-on serves
# metrics on 127.0.0.1:10249 only. A Service selecting them has no reachable endpoint, and
# the matching `*Down` alerts would fire forever.
EKS_HIDDEN_SELECTORS = (
    {"component": "kube-controller-manager"},
    {"component": "kube-scheduler"},
    {"component": "etcd"},
    {"k8s-app": "kube-proxy"},
)
ALWAYS_FIRING_ON_EKS = {"KubeControllerManagerDown", "KubeSchedulerDown", "KubeProxyDown", "etcdMembersDown"}


def test_nothing_scrapes_or_alerts_on_what_eks_hides(rendered: RenderedStack) -> None:
    services = [
        _name(release, obj)
        for release, obj in rendered.objects()
        if obj["kind"] == "Service" and (obj.get("spec") or {}).get("selector") in EKS_HIDDEN_SELECTORS
    ]
    alerts = sorted(
        rule["alert"]
        for _, obj in rendered.objects()
        if obj["kind"] == "PrometheusRule"
        for group in obj["spec"]["groups"]
        for rule in group["rules"]
        if rule.get("alert") in ALWAYS_FIRING_ON_EKS
    )
    assert (services, alerts) == ([], [])


# --- every value we set does something ------------------------------------------------

# Values equal to the chart's default, set on purpose: removing them renders the same.
# Image references: domain/versions.py is the one place for them, so that a chart bump that
# moves its image shows in review.
_IMAGE_PIN = re.compile(r"(^|\.)images?$")
# Names other resources of ours refer to: the chart's default today, ours by contract.
COUPLED_DEFAULTS = {
    # The Pod Identity associations name these service accounts (infra/identity.py).
    "karpenter: serviceAccount.create",
    "karpenter: serviceAccount.name",
    "keda: serviceAccount.operator.create",
    "keda: serviceAccount.operator.name",
    # Keys of the grafana-admin Secret infra/monitoring.py creates.
    "kube-prometheus-stack: grafana.admin.passwordKey",
    "kube-prometheus-stack: grafana.admin.userKey",
    # The sidecar loads our dashboards ConfigMap by this label, from every namespace.
    "kube-prometheus-stack: grafana.sidecar.dashboards.enabled",
    "kube-prometheus-stack: grafana.sidecar.dashboards.label",
    "kube-prometheus-stack: grafana.sidecar.dashboards.labelValue",
    "kube-prometheus-stack: grafana.sidecar.dashboards.searchNamespace",
    # Follows the stack's `karpenter.logLevel`, whose default is the chart's.
    "karpenter: logLevel",
    # Pools with capacity type `reserved` need it; on by default (beta) at 1.14.1, pinned so a
    # chart bump that turns it off shows in review (infra/karpenter.py).
    "karpenter: settings.featureGates.reservedCapacity",
    # The Pod Identity association names this service account (infra/load_balancer.py); two
    # replicas: the PDB renders only with more than one, and the webhooks stay served in a drain.
    "aws-load-balancer-controller: serviceAccount.name",
    "aws-load-balancer-controller: replicaCount",
}
# Values a chart reads only through `lookup` on a live cluster (helm template's lookup finds
# nothing): removing or changing them renders the same offline. The controller's webhook
# certificate is kept across upgrades by it (infra/load_balancer.py).
LIVE_CLUSTER_ONLY = {"aws-load-balancer-controller: keepTLSSecret"}


def on_purpose(name: str) -> bool:
    return name in COUPLED_DEFAULTS | LIVE_CLUSTER_ONLY or bool(_IMAGE_PIN.search(name.split(": ", 1)[1]))


@pytest.fixture(scope="session")
def value_cases(rendered_stacks: dict[str, RenderedStack]) -> list[ValueCase]:
    stacks = list(rendered_stacks.values())
    return value_cases_of([r.rendering for r in stacks], [r.plan.settings.cluster.version for r in stacks])


@pytest.fixture(scope="session")
def unchanged_without(helm: str, value_cases: list[ValueCase]) -> list[str]:
    return unchanged_by(helm, value_cases, without)


def test_every_value_we_set_is_read_by_its_chart(
    helm: str, value_cases: list[ValueCase], unchanged_without: list[str]
) -> None:
    """A value whose removal and whose change both render the same is ignored by the chart: a
    misspelt key, a key of another chart version, or one that another value switches off."""
    suspects = set(unchanged_without) - LIVE_CLUSTER_ONLY
    cases = [c for c in value_cases if f"{c.release.name}: {'.'.join(c.path)}" in suspects]
    assert unchanged_by(helm, cases, changed) == []


def test_every_value_we_set_differs_from_the_chart_default(unchanged_without: list[str]) -> None:
    """Removing a value must change what is rendered, in at least one stack: a value equal to
    the chart's default is dead weight, unless it is a pin kept on purpose (listed above)."""
    assert [name for name in unchanged_without if not on_purpose(name)] == []


def test_an_ignored_value_is_found(helm: str, rendered_stacks: dict[str, RenderedStack]) -> None:
    """The Karpenter chart reads a top-level `imagePullPolicy`; nested under `controller` it is
    ignored, which both edits detect. A key the chart reads (`logLevel`) changes the output."""
    dev = rendered_stacks["dev"]
    rel = dev.rendering.releases["karpenter"]
    values = {**rel.release.values, "controller": {**rel.release.values["controller"], "imagePullPolicy": "Never"}}
    release = dataclasses.replace(rel.release, values=values, skip_crds=True)
    case = ValueCase(release, ("controller", "imagePullPolicy"), dev.plan.settings.cluster.version, rel.api_versions)
    assert unchanged_by(helm, [case], without) == ["karpenter: controller.imagePullPolicy"]
    assert unchanged_by(helm, [case], changed) == ["karpenter: controller.imagePullPolicy"]
    assert unchanged_by(helm, [dataclasses.replace(case, path=("logLevel",))], changed) == []


# --- the plan command ------------------------------------------------------------------


def _run_plan(out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_plan("--stack", "dev", "--out", str(out), env=env)


def test_the_plan_writes_every_rendered_object(
    tmp_path: Path, helm: str, rendered_stacks: dict[str, RenderedStack]
) -> None:
    proc = _run_plan(tmp_path / "plan")
    assert proc.returncode == 0, proc.stderr
    rendering = rendered_stacks["dev"].rendering
    rendered_dir = tmp_path / "plan" / "rendered"
    assert sorted(p.name for p in rendered_dir.iterdir()) == sorted(rendering.releases)
    files = {str(p.relative_to(rendered_dir)) for p in rendered_dir.rglob("*.yaml")}
    assert files == set(render.object_files(rendering))
    deployment = yaml.safe_load((rendered_dir / "karpenter" / "deployment_kube-system_karpenter.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["nodeSelector"][contract.ROLE_LABEL] == "system"
    summary = (tmp_path / "plan" / "summary.md").read_text()
    assert "## Rendered charts" in summary
    objects = len(rendering.releases["kube-prometheus-stack"].objects)
    assert f"| kube-prometheus-stack | kube-prometheus-stack 88.5.3 | {objects} |" in summary


def test_without_helm_the_plan_is_written_with_a_warning(tmp_path: Path) -> None:
    no_helm = tmp_path / "bin"
    no_helm.mkdir()
    proc = _run_plan(tmp_path / "plan", {"PATH": str(no_helm), render.HELM_ENV: "helm"})
    assert proc.returncode == 0, proc.stderr
    assert "warning: Helm charts not rendered" in proc.stderr and "scripts/setup.sh" in proc.stderr, proc.stderr
    assert not (tmp_path / "plan" / "rendered").exists()
    assert (tmp_path / "plan" / "resources.json").exists()
    summary = (tmp_path / "plan" / "summary.md").read_text()
    assert "Charts were **not rendered**" in summary and "scripts/setup.sh" in summary


def test_ci_fails_rather_than_skips_without_helm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(render.HELM_ENV, "")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"scripts/setup\.sh"):
        helm_or_skip()
    monkeypatch.delenv("CI")
    monkeypatch.delenv("GPUINF_REQUIRE_TOOLS", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"scripts/setup\.sh"):
        helm_or_skip()
