"""The offline plan command, end to end, as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from domain import versions
from tests import conftest
from tests.conftest import STACKS, stack_config
from tools.plan.run import read_stack_file

ROOT = Path(__file__).resolve().parents[1]


def run_plan(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return conftest.run_plan(*args)


def write_stack(tmp_path: Path, config: dict[str, Any], name: str = "variant") -> Path:
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def load_manifests(out: Path) -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted((out / "manifests").glob("*.yaml"))}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    base = tmp_path_factory.mktemp("plans")
    return {stack: (base / stack, run_plan(base, "--stack", stack, "--out", str(base / stack))) for stack in STACKS}


@pytest.mark.parametrize("stack", STACKS)
def test_plan_writes_every_file(written, stack: str) -> None:
    out, proc = written[stack]
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "helm-releases.yaml",
        "manifests",
        "policy-report.json",
        "rendered",
        "resources.json",
        "summary.md",
    ]
    assert f"plan for stack {stack}:" in proc.stdout and proc.stdout.rstrip().endswith(" s)"), proc.stdout


@pytest.mark.parametrize("stack", STACKS)
def test_resources_json_lists_every_resource_with_type_name_parent_inputs(written, stack: str) -> None:
    out, _ = written[stack]
    document = json.loads((out / "resources.json").read_text())
    resources = document["resources"]
    assert document["stack"] == stack
    assert all({"type", "name", "parent", "inputs", "urn"} <= set(r) for r in resources)
    types = {r["type"] for r in resources}
    assert {
        "aws:ec2/vpc:Vpc",
        "eks:index:Cluster",
        "aws:eks/nodeGroup:NodeGroup",
        "aws:sqs/queue:Queue",
        "kubernetes:karpenter.sh/v1:NodePool",
        "kubernetes:helm.sh/v3:Release",
    } <= types
    urns = {r["urn"] for r in resources}
    parents = {r["parent"] for r in resources} - urns
    assert all(p.endswith(f"::gpu-inference-{stack}") for p in parents), f"parents outside the plan: {parents}"


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_has_a_manifest_and_every_release_is_listed(written, stack: str) -> None:
    out, _ = written[stack]
    resources = json.loads((out / "resources.json").read_text())["resources"]
    k8s_objects = [
        r for r in resources if r["type"].startswith("kubernetes:") and r["type"] != "kubernetes:helm.sh/v3:Release"
    ]
    manifests = load_manifests(out)
    assert len(manifests) == len(k8s_objects)
    kinds = sorted({m["kind"] for m in manifests.values()})
    expected = {
        "ConfigMap", "DaemonSet", "Deployment", "EC2NodeClass", "Namespace", "NetworkPolicy", "NodeOverlay", "NodePool",
        "PodDisruptionBudget", "PrometheusRule", "ScaledJob", "ScaledObject", "Secret", "Service", "ServiceAccount",
        "ServiceMonitor", "StorageClass", "TriggerAuthentication",
    }  # fmt: skip
    config, _ = read_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    if any(pool.get("warmGpus") for pool in config["gpu-inference:nodePools"].values()):
        expected.add("PriorityClass")  # warm GPU headroom
    if config.get("gpu-inference:inference") or config.get("gpu-inference:batchJobs"):
        expected.add("PriorityClass")  # live inference outranks batch (domain/priorities.py)
    wakes_from_zero = any(
        (svc.get("scaling") or {}).get("minReplicas") == 0 and "wakeUpQuery" not in svc["scaling"]
        for svc in config.get("gpu-inference:inference", {}).values()
    )
    if wakes_from_zero:
        expected.add("HTTPScaledObject")  # the KEDA HTTP add-on's route to a scale-to-zero service
    exposed = config.get("gpu-inference:ingress") and any(
        "expose" in svc for svc in config.get("gpu-inference:inference", {}).values()
    )
    if exposed:
        expected |= {"Ingress", "IngressClass", "IngressClassParams"}  # one load balancer, a host per service
    assert kinds == sorted(expected)
    releases = yaml.safe_load((out / "helm-releases.yaml").read_text())
    charts = {name: c.version for name, c in versions.HELM_CHARTS.items()}
    if not wakes_from_zero:
        del charts["keda-add-ons-http"]
    if not exposed:
        del charts["aws-load-balancer-controller"]  # installed only for exposed services
    assert {r["name"]: r["version"] for r in releases} == charts
    assert all(set(r) == {"name", "namespace", "chart", "repo", "version", "values"} for r in releases)


@pytest.mark.parametrize("stack", STACKS)
def test_summary_shows_pools_counts_and_versions(written, stack: str) -> None:
    out, _ = written[stack]
    text = (out / "summary.md").read_text()
    for name, pool in stack_config(stack)["gpu-inference:nodePools"].items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {pool['gpu']} |" in row and ", ".join(pool["instanceFamilies"]) in row, row
    assert "| `kubernetes:karpenter.sh/v1:NodePool` | 3 |" in text
    assert f"| chart karpenter | `{versions.KARPENTER_VERSION}` |" in text
    for name, svc in stack_config(stack)["gpu-inference:inference"].items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} | {svc['pool']} |"))
        zero = svc["scaling"]["minReplicas"] == 0
        assert row.endswith("| KEDA HTTP add-on (`keda-add-ons-http-external-scaler.keda:9090`) |" if zero else
                            "| - (keeps a replica) |"), row  # fmt: skip


def test_invalid_config_exits_2_with_the_key_path_and_writes_nothing(tmp_path: Path) -> None:
    config = stack_config("dev")
    config["gpu-inference:nodePools"]["gpu"]["maxGPUs"] = config["gpu-inference:nodePools"]["gpu"].pop("maxGpus")
    out = tmp_path / "out"
    proc = run_plan(tmp_path, "--stack", "dev", "--out", str(out), "--config", str(write_stack(tmp_path, config)))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "nodePools.gpu.maxGPUs is not a known key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "Pulumi.variant.yaml"], "no staging directory left behind"


def test_invalid_config_leaves_an_earlier_plan_untouched(tmp_path: Path, written) -> None:
    out = tmp_path / "plan"
    assert run_plan(tmp_path, "--stack", "dev", "--out", str(out)).returncode == 0
    before = (out / "resources.json").read_text()
    config = stack_config("dev")
    config["gpu-inference:nodePools"]["gpu"]["maxGpus"] = 0
    proc = run_plan(tmp_path, "--stack", "dev", "--out", str(out), "--config", str(write_stack(tmp_path, config)))
    assert proc.returncode == 2 and "nodePools.gpu.maxGpus must be >= 1 (got 0)" in proc.stderr
    assert (out / "resources.json").read_text() == before


def test_more_zones_than_the_region_offers_exits_2(tmp_path: Path) -> None:
    config = stack_config("dev")
    config["gpu-inference:network"]["azCount"] = 6
    out = tmp_path / "out"
    proc = run_plan(tmp_path, "--stack", "dev", "--out", str(out), "--config", str(write_stack(tmp_path, config)))
    assert proc.returncode == 2, proc.stderr
    assert "network.azCount must be <= 4, the zones us-west-2 offers (got 6)" in proc.stderr
    assert not out.exists()


def test_missing_stack_file_exits_2(tmp_path: Path) -> None:
    proc = run_plan(tmp_path, "--stack", "nosuchstack", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "Pulumi.nosuchstack.yaml does not exist" in proc.stderr


def test_refuses_to_replace_a_directory_that_is_not_a_plan(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    proc = run_plan(tmp_path, "--stack", "dev", "--out", str(out))
    assert proc.returncode == 2 and "is not an earlier plan" in proc.stderr
    assert (out / "notes.txt").read_text() == "keep me"


def test_secure_values_become_marked_placeholders(tmp_path: Path) -> None:
    config = stack_config("dev")
    config["aws:secretKey"] = {"secure": "v1:AAAAencrypted"}
    out = tmp_path / "out"
    proc = run_plan(tmp_path, "--stack", "dev", "--out", str(out), "--config", str(write_stack(tmp_path, config)))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "resources.json").read_text())["metadata"]["secretConfigKeys"] == ["aws:secretKey"]
    assert "placeholder for: `aws:secretKey`" in (out / "summary.md").read_text()
    assert "AAAAencrypted" not in "".join(p.read_text() for p in out.rglob("*") if p.is_file())


# --- editing a stack changes exactly what it should ------------------------------


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}.{key}" if prefix else key).items()
        }
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def changed(before: dict[str, dict], after: dict[str, dict]) -> set[tuple[str, str]]:
    """(manifest file, field path) pairs that differ, added or removed files as (file, '*')."""
    diffs = {(name, "*") for name in before.keys() ^ after.keys()}
    for name in before.keys() & after.keys():
        a, b = flatten(before[name]), flatten(after[name])
        diffs |= {(name, path) for path in a.keys() | b.keys() if a.get(path) != b.get(path)}
    return diffs


@pytest.fixture(scope="module")
def dev_baseline(written) -> dict[str, dict]:
    return load_manifests(written["dev"][0])


NP = "gpu-inference:nodePools"
FAMILY_REQ = "spec.template.spec.requirements[0].values"
CAPACITY_REQ = "spec.template.spec.requirements[1].values"
SLICED = "data.time-sliced-gpu-shared"
CONFIG_MAP = "configmap_nvidia-device-plugin_nvidia-device-plugin-configs.yaml"

EDITS = [
    (
        "instanceFamilies",
        lambda c: c[NP]["gpu"].__setitem__("instanceFamilies", ["g6e"]),
        {("nodepool_gpu.yaml", f"{FAMILY_REQ}[0]"), ("nodepool_gpu.yaml", f"{FAMILY_REQ}[1]")},
    ),
    (
        "maxGpus",
        lambda c: c[NP]["gpu"].__setitem__("maxGpus", 16),
        {("nodepool_gpu.yaml", "spec.limits.nvidia.com/gpu")},
    ),
    (
        "capacityTypes",
        lambda c: c[NP]["gpu"].__setitem__("capacityTypes", ["on-demand"]),
        {("nodepool_gpu.yaml", f"{CAPACITY_REQ}[0]"), ("nodepool_gpu.yaml", f"{CAPACITY_REQ}[1]")},
    ),
    (
        "timeSlicingReplicas",
        lambda c: c[NP]["gpu-shared"].__setitem__("timeSlicingReplicas", 8),
        {
            (CONFIG_MAP, SLICED),
            ("nodepool_gpu-shared.yaml", "spec.limits.nvidia.com/gpu"),
            ("nodepool_gpu-shared.yaml", "metadata.annotations.gpu-inference.io/time-slicing-replicas"),
            ("nodeoverlay_gpu-shared-slices-1gpu.yaml", "spec.capacity.nvidia.com/gpu"),
            ("nodeoverlay_gpu-shared-slices-4gpu.yaml", "spec.capacity.nvidia.com/gpu"),
            ("nodeoverlay_gpu-shared-slices-8gpu.yaml", "spec.capacity.nvidia.com/gpu"),
        },
    ),
]


@pytest.mark.parametrize(("key", "edit", "expected"), EDITS, ids=[e[0] for e in EDITS])
def test_editing_a_pool_key_changes_exactly_its_objects(tmp_path: Path, dev_baseline, key, edit, expected) -> None:
    config = stack_config("dev")
    edit(config)
    out = tmp_path / "out"
    proc = run_plan(tmp_path, "--stack", "dev", "--out", str(out), "--config", str(write_stack(tmp_path, config)))
    assert proc.returncode == 0, proc.stderr
    after = load_manifests(out)
    assert changed(dev_baseline, after) == expected, f"editing {key} changed {sorted(changed(dev_baseline, after))}"


def test_edited_values_are_the_new_ones(tmp_path: Path) -> None:
    config = stack_config("dev")
    config[NP]["gpu"]["instanceFamilies"] = ["g6e"]
    config[NP]["gpu"]["maxGpus"] = 16
    config[NP]["gpu"]["capacityTypes"] = ["on-demand"]
    config[NP]["gpu-shared"]["timeSlicingReplicas"] = 8
    out = tmp_path / "out"
    assert (
        run_plan(
            tmp_path, "--stack", "dev", "--out", str(out), "--config", str(write_stack(tmp_path, config))
        ).returncode
        == 0
    )
    m = load_manifests(out)
    gpu = m["nodepool_gpu.yaml"]["spec"]
    reqs = {r["key"]: r["values"] for r in gpu["template"]["spec"]["requirements"]}
    assert reqs["karpenter.k8s.aws/instance-family"] == ["g6e"]
    assert reqs["karpenter.sh/capacity-type"] == ["on-demand"]
    assert gpu["limits"]["nvidia.com/gpu"] == 16
    sliced = yaml.safe_load(m[CONFIG_MAP]["data"]["time-sliced-gpu-shared"])
    assert sliced["sharing"]["timeSlicing"]["resources"][0]["replicas"] == 8
    assert m["nodepool_gpu-shared.yaml"]["spec"]["limits"]["nvidia.com/gpu"] == 2 * 8
    assert m["nodeoverlay_gpu-shared-slices-4gpu.yaml"]["spec"]["capacity"]["nvidia.com/gpu"] == "32"


# --- policies in the plan --------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_stack_plans_have_no_mandatory_policy_violation(written, stack: str) -> None:
    out, _ = written[stack]
    report = json.loads((out / "policy-report.json").read_text())
    assert report["mandatoryViolations"] == 0, report["violations"]
    assert report["policyConfig"].endswith(f"policies/config/{stack}.json")
    assert len(report["policiesEvaluated"]) >= 20
    assert "## Policies" in (out / "summary.md").read_text()


BROKEN_PROD = [
    ("forbidden family", lambda c: c[NP]["gpu"].__setitem__("instanceFamilies", ["g5"]), "allowed-instance-families"),
    ("spot GPUs", lambda c: c[NP]["gpu"].__setitem__("capacityTypes", ["spot", "on-demand"]), "allowed-capacity-types"),
    (
        "public API",
        lambda c: c["gpu-inference:cluster"].__setitem__("endpointPublicAccess", True),
        "eks-endpoint-access",
    ),
    ("untagged team", lambda c: c["gpu-inference:tags"].pop("team"), "required-tags"),
    (
        "endpoint open to all",
        lambda c: c["gpu-inference:ingress"].__setitem__("allowedCidrs", ["203.0.113.0/24", "0.0.0.0/0"]),
        "endpoint-internet-facing-locked",
    ),
    ("endpoint without auth", lambda c: c["gpu-inference:ingress"].pop("auth"), "endpoint-internet-facing-locked"),
    (
        "endpoint auth lets anonymous through",
        lambda c: c["gpu-inference:ingress"]["auth"].__setitem__("onUnauthenticatedRequest", "allow"),
        "endpoint-internet-facing-locked",
    ),
]


@pytest.mark.parametrize(("case", "edit", "rule"), BROKEN_PROD, ids=[b[0] for b in BROKEN_PROD])
def test_a_broken_prod_copy_exits_3_naming_the_rule(tmp_path: Path, case, edit, rule: str) -> None:
    config = stack_config("prod")
    edit(config)
    out = tmp_path / "out"
    proc = run_plan(tmp_path, "--stack", "prod", "--out", str(out), "--config", str(write_stack(tmp_path, config)))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"[{rule}]" in proc.stderr
    report = json.loads((out / "policy-report.json").read_text())
    assert {v["policy"] for v in report["violations"] if v["enforcement"] == "mandatory"} == {rule}
    assert f"| {rule} | mandatory |" in (out / "summary.md").read_text()


def test_the_same_break_is_only_advisory_where_config_says_so(tmp_path: Path) -> None:
    config = stack_config("dev")
    config["gpu-inference:tags"] = {}
    config["gpu-inference:environment"] = "dev"
    out = tmp_path / "out"
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"required-tags": {"enforcementLevel": "advisory", "requiredTags": ["team"]}}))
    args = ["--stack", "dev", "--out", str(out), "--config", str(write_stack(tmp_path, config))]
    proc = run_plan(tmp_path, *args, "--policy-config", str(policy))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "policy-report.json").read_text())
    advisories = [v for v in report["violations"] if v["policy"] == "required-tags"]
    assert advisories and all(v["enforcement"] == "advisory" for v in advisories)
    assert all("lacks required tags ['team']" in v["message"] for v in advisories)
