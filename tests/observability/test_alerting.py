"""Alerts that reach someone: Alertmanager receivers from `monitoring.alerting`, routed by severity.

The plan records the resources (SNS topics, the Pod Identity role, the webhook Secret) and
the kube-prometheus-stack values; the real chart renders them (tests/support/rendered.py's
helm) into the Alertmanager config Secret, and `amtool` (Debian's prometheus-alertmanager,
scripts/install-alertmanager.sh) checks that config and tests its routing tree.

amtool 0.25 predates `webhook_configs[].url_file` (Alertmanager 0.26; the chart runs v0.34.0),
and rejects it as an unknown field (prometheus-community/helm-charts#3758 hit the same with an
old Alertmanager), so the amtool copy swaps each `url_file` for a placeholder `url`: routing
does not look at receivers' contents.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra import monitoring
from infra.observability import alerting
from tests.conftest import plan_of, stack_config
from tests.support.prometheus import tools_required
from tests.support.rendered import helm_or_skip
from tools.plan import render
from tools.plan.mocks import SECRET

AMTOOL_SKIP = "amtool not installed: run scripts/install-alertmanager.sh (Debian package prometheus-alertmanager)"
WEBHOOK = "https://hooks.example.com/services/T000/B000/not-a-real-token"
ALERTING = {
    "receivers": {"page": {"sns": True}, "ticket": {"webhookSecret": "ticketWebhook", "sendResolved": False}},
    "routes": {"critical": "page", "warning": "ticket"},
}


def amtool_or_skip() -> str:
    found = shutil.which("amtool")
    if found is None:
        if tools_required():
            pytest.fail(f"{AMTOOL_SKIP} (required here: GPUINF_REQUIRE_TOOLS=1)")
        pytest.skip(AMTOOL_SKIP)
    return found


@pytest.fixture(scope="module")
def plan():
    config = stack_config("prod")
    config["gpu-inference:monitoring"]["alerting"] = ALERTING
    config["gpu-inference:ticketWebhook"] = WEBHOOK  # `pulumi config set --secret ticketWebhook ...`
    return plan_of(config, stack="prod")


def _of(plan, typ: str) -> list:
    return [r for r in plan.resources if r.type == typ]


def _values(plan) -> dict:
    [release] = [r for r in _of(plan, render.HELM_RELEASE) if r.inputs["name"] == monitoring.RELEASE]
    return release.inputs["values"]


def test_the_webhook_url_is_a_secret_and_never_in_helm_values(plan) -> None:
    everything = json.dumps([r.inputs for r in plan.resources])
    assert WEBHOOK not in everything, "the webhook URL leaked into a recorded input"
    [secret] = [
        r for r in _of(plan, "kubernetes:core/v1:Secret") if r.inputs["metadata"]["name"] == alerting.WEBHOOK_SECRET
    ]
    assert secret.inputs["metadata"]["namespace"] == monitoring.NAMESPACE
    assert secret.inputs["stringData"] == {"ticket": SECRET}  # recorded as a Pulumi secret
    am = _values(plan)["alertmanager"]
    assert am["alertmanagerSpec"]["secrets"] == [alerting.WEBHOOK_SECRET]
    ticket = next(r for r in am["config"]["receivers"] if r["name"] == "ticket")
    assert ticket == {
        "name": "ticket",
        "webhook_configs": [
            {"url_file": "/etc/alertmanager/secrets/alertmanager-webhooks/ticket", "send_resolved": False}
        ],
    }


def test_sns_receivers_get_a_topic_and_alertmanager_may_publish_only_to_it(plan) -> None:
    [topic] = _of(plan, "aws:sns/topic:Topic")
    assert topic.inputs["name"] == "gpuinf-prod-alerts-page"
    assert topic.inputs["kmsMasterKeyId"] == "alias/aws/sns"
    [association] = [
        r
        for r in _of(plan, "aws:eks/podIdentityAssociation:PodIdentityAssociation")
        if r.inputs["serviceAccount"] == monitoring.ALERTMANAGER_SERVICE_ACCOUNT
    ]
    assert association.inputs["namespace"] == monitoring.NAMESPACE
    assert association.inputs["clusterName"] == "gpuinf-prod"
    [policy] = [r for r in _of(plan, "aws:iam/rolePolicy:RolePolicy") if r.name == "monitoring-alertmanager-sns"]
    statement = json.loads(policy.inputs["policy"])["Statement"]
    page = next(r for r in _values(plan)["alertmanager"]["config"]["receivers"] if r["name"] == "page")
    arn = page["sns_configs"][0]["topic_arn"]
    assert statement == [{"Effect": "Allow", "Action": "sns:Publish", "Resource": [arn]}]
    assert page["sns_configs"][0]["sigv4"] == {"region": "us-east-1"}


def test_without_alerting_the_chart_keeps_its_own_config() -> None:
    values = monitoring.stack_values(
        monitoring.MonitoringArgs(
            prometheus=monitoring.PrometheusSpec("15d", 50, "30s", "1", "2Gi", "4Gi"),
            grafana_replicas=1,
            dcgm_interval_ms=5000,
            storage_class="gp3",
            depends_on=[],
        ),
        "gp3",
    )
    assert "config" not in values["alertmanager"] and "secrets" not in values["alertmanager"]["alertmanagerSpec"]


@pytest.fixture(scope="module")
def rendered_config(plan) -> dict:
    helm = helm_or_skip()
    rendering = render.render(plan.resources, plan.settings.cluster.version, helm)
    objects = rendering.releases[monitoring.RELEASE].objects
    [secret] = [
        o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "alertmanager-kps-alertmanager"
    ]
    [am] = [o for o in objects if o["kind"] == "Alertmanager"]
    assert am["spec"]["secrets"] == [alerting.WEBHOOK_SECRET]
    assert WEBHOOK not in json.dumps(objects)
    return yaml.safe_load(base64.b64decode(secret["data"]["alertmanager.yaml"]))


def _for_amtool(config: dict, directory: Path) -> Path:
    copy = json.loads(json.dumps(config))
    for receiver in copy["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:9/{receiver['name']}"  # placeholder, see the module docstring
            del hook["url_file"]
    path = directory / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(copy))
    return path


def test_the_rendered_config_keeps_the_charts_inhibit_rules_and_null_receiver(rendered_config) -> None:
    assert rendered_config["route"]["receiver"] == "null"
    assert any(r.get("source_matchers") == ["severity = critical"] for r in rendered_config["inhibit_rules"])
    assert [r["name"] for r in rendered_config["receivers"]] == ["null", "page", "ticket"]
    ticket = next(r for r in rendered_config["receivers"] if r["name"] == "ticket")
    assert ticket["webhook_configs"][0]["url_file"] == alerting.webhook_url_file("ticket")


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=GpuXidHardwareError"], "page"),
        (["severity=warning", "alertname=GpuNodeSilent"], "ticket"),
        (["severity=info", "alertname=GpuIdleWhileScaledOut"], "null"),
        (["alertname=Watchdog", "severity=none"], "null"),
        (["alertname=Whatever"], "null"),
    ],
)
def test_amtool_routes_each_severity_to_its_receiver(rendered_config, tmp_path: Path, labels, receiver) -> None:
    amtool = amtool_or_skip()
    path = _for_amtool(rendered_config, tmp_path)
    check = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={path}", f"--verify.receivers={receiver}", *labels],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, f"{labels} went to {run.stdout.strip()!r}, expected {receiver}: {run.stderr}"
    assert run.stdout.strip() == receiver


def test_amtool_catches_a_wrong_route(rendered_config, tmp_path: Path) -> None:
    """The check bites: a critical alert is not the ticket receiver's."""
    amtool = amtool_or_skip()
    path = _for_amtool(rendered_config, tmp_path)
    run = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={path}", "--verify.receivers=ticket", "severity=critical"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
