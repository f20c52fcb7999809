"""Alert rules: shape, parameters, PromQL syntax, `promtool check rules` and `promtool test rules`
(alerts_test.yaml: firing and quiet cases for every alert), and loading into a real Prometheus.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from pathlib import Path

import promql_parser
import pytest
import yaml

from infra.observability import alerts, gpu_health
from infra.observability.alerts import AlertParams
from tests.support.prometheus import SKIP_REASON, PrometheusServer, prometheus_binary

UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")


def write_rule_file(directory: Path, params: AlertParams | None = None) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(alerts.rule_file(params), sort_keys=False))
    return path


def all_rules(params: AlertParams | None = None) -> dict[str, dict]:
    return {rule["alert"]: rule for group in alerts.rule_groups(params) for rule in group["rules"]}


def test_rule_groups_have_every_alert_with_severity_and_annotations() -> None:
    groups = alerts.rule_groups()
    assert [g["name"] for g in groups] == [alerts.GROUP_CAPACITY, alerts.GROUP_SERVING, gpu_health.GROUP]
    rules = all_rules()
    assert sorted(rules) == sorted(alerts.ALERT_NAMES)
    for name, rule in rules.items():
        assert list(rule) == ["alert", "expr", "for", "labels", "annotations"], f"{name}: keys {list(rule)}"
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), f"{name}: {rule['labels']}"
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, f"{name}: {rule['annotations']}"


def test_defaults_are_the_documented_ones() -> None:
    rules = all_rules()
    assert {name: rule["for"] for name, rule in rules.items()} == {
        alerts.GPU_NODEPOOL_AT_LIMIT: "5m",
        alerts.PODS_PENDING_TOO_LONG: "10m",
        alerts.INFERENCE_ERROR_RATE_HIGH: "5m",
        alerts.GPU_IDLE_WHILE_SCALED_OUT: "30m",
        gpu_health.GPU_XID_HARDWARE_ERROR: "0m",
        gpu_health.GPU_XID_ERROR: "0m",
        gpu_health.GPU_ECC_DOUBLE_BIT_ERRORS: "0m",
        gpu_health.GPU_THERMAL_THROTTLING: "10m",
        gpu_health.GPU_NODE_SILENT: "15m",
    }
    assert rules[alerts.INFERENCE_ERROR_RATE_HIGH]["expr"].endswith("> 0.05")
    assert 'resource_type="nvidia.com/gpu"' in rules[alerts.GPU_NODEPOOL_AT_LIMIT]["expr"]


def test_parameters_reach_the_rules() -> None:
    params = AlertParams(
        namespaces=("inference", "batch"),
        pending_for="15m",
        error_rate_threshold=0.02,
        error_rate_window="10m",
        gpu_idle_percent=25,
        gpu_idle_for="1h",
        severity_gpu_idle="warning",
        runbook_url="https://runbooks.example.com/gpu-inference",
    )
    rules = all_rules(params)
    assert rules[alerts.PODS_PENDING_TOO_LONG]["for"] == "15m"
    assert 'namespace=~"batch|inference"' in rules[alerts.PODS_PENDING_TOO_LONG]["expr"]
    error_expr = rules[alerts.INFERENCE_ERROR_RATE_HIGH]["expr"]
    assert "[10m]" in error_expr and error_expr.endswith("> 0.02")
    assert 'namespace=~"batch|inference"' in error_expr
    idle = rules[alerts.GPU_IDLE_WHILE_SCALED_OUT]
    assert (idle["for"], idle["labels"]["severity"]) == ("1h", "warning")
    assert "< 25\n" in idle["expr"]
    assert idle["annotations"]["runbook_url"] == "https://runbooks.example.com/gpu-inference#gpuidlewhilescaledout"
    # NodePools are cluster-wide: the namespace filter never applies to them.
    assert "namespace" not in rules[alerts.GPU_NODEPOOL_AT_LIMIT]["expr"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"pending_for": "5 minutes"},
            "pending_for must be a Prometheus duration such as 5m or 1h30m (got '5 minutes')",
        ),
        ({"gpu_idle_for": ""}, "gpu_idle_for must be a Prometheus duration such as 5m or 1h30m (got '')"),
        (
            {"pool_at_limit_for": "30m1h"},
            "pool_at_limit_for must be a Prometheus duration such as 5m or 1h30m (got '30m1h')",
        ),
        ({"error_rate_threshold": 0}, "error_rate_threshold must be in (0, 1] (got 0)"),
        ({"error_rate_threshold": 5}, "error_rate_threshold must be in (0, 1] (got 5)"),
        ({"gpu_idle_percent": 120}, "gpu_idle_percent must be in (0, 100] (got 120)"),
        ({"severity_pending": "page"}, "severity_pending must be one of critical, warning, info (got 'page')"),
        ({"namespaces": ("Inference",)}, "namespace 'Inference' is not a valid Kubernetes namespace name"),
    ],
)
def test_invalid_parameters_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        dataclasses.replace(AlertParams(), **change)
    assert str(raised.value) == message


@pytest.mark.parametrize("params", [None, AlertParams(namespaces=("inference",))], ids=["defaults", "namespaced"])
def test_every_expression_parses(params: AlertParams | None) -> None:
    for name, rule in all_rules(params).items():
        try:
            promql_parser.parse(rule["expr"])
        except ValueError as error:
            pytest.fail(f"{name}: {error}\n{rule['expr']}")


@pytest.mark.parametrize("params", [None, AlertParams(namespaces=("inference",))], ids=["defaults", "namespaced"])
def test_promtool_check_rules(promtool: str, tmp_path: Path, params: AlertParams | None) -> None:
    rules = write_rule_file(tmp_path, params)
    run = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"promtool check rules failed:\n{run.stdout}{run.stderr}"
    assert f"SUCCESS: {len(alerts.ALERT_NAMES)} rules found" in run.stdout


def test_promtool_unit_tests(promtool: str, tmp_path: Path) -> None:
    """Firing and quiet cases for every alert, against the default parameters."""
    fixture = yaml.safe_load(UNIT_TESTS.read_text())
    assert fixture["rule_files"] == ["rules.yaml"]
    tested = {case["alertname"] for test in fixture["tests"] for case in test["alert_rule_test"]}
    assert tested == set(alerts.ALERT_NAMES), f"alerts without a promtool test: {set(alerts.ALERT_NAMES) - tested}"
    for name in alerts.ALERT_NAMES:
        cases = [c for t in fixture["tests"] for c in t["alert_rule_test"] if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in cases) and any(not c["exp_alerts"] for c in cases), (
            f"{name} needs both a firing and a quiet case in {UNIT_TESTS.name}"
        )

    write_rule_file(tmp_path)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    run = subprocess.run(
        [promtool, "test", "rules", UNIT_TESTS.name], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, f"promtool test rules failed:\n{run.stdout}{run.stderr}"


@pytest.mark.skipif(prometheus_binary() is None, reason=SKIP_REASON)
def test_rules_load_into_a_real_prometheus(tmp_path: Path) -> None:
    rules = write_rule_file(tmp_path, AlertParams(namespaces=("inference",)))
    with PrometheusServer(rule_files=[rules], evaluation_interval="1s") as prom:
        deadline = time.monotonic() + 10
        while True:  # until every rule has been evaluated once
            found = {rule["name"]: rule for group in prom.api("rules")["groups"] for rule in group["rules"]}
            if all(r.get("health") != "unknown" for r in found.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert sorted(found) == sorted(alerts.ALERT_NAMES)
        bad = {name: rule.get("lastError") for name, rule in found.items() if rule.get("health") == "err"}
        assert bad == {}, f"rules with evaluation errors: {bad}"
