"""Every rendered object validates against the real upstream schema of its pinned version."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from domain import versions
from tests.conftest import Plan, plan_of, stack_config
from tests.support.schemas import SCHEMA_ROOT, crd_schemas, validate

NP = "gpu-inference:nodePools"


def _all_errors(plan: Plan) -> dict[str, list[str]]:
    version = plan.settings.cluster.version
    found = {f"{m['kind']}/{m['metadata']['name']}": validate(m, version) for m in plan.manifests}
    return {name: errors for name, errors in found.items() if errors}


def test_every_stack_manifest_validates(plan: Plan) -> None:
    assert plan.manifests, "the plan rendered no Kubernetes objects"
    assert _all_errors(plan) == {}


def kitchen_sink_config() -> dict:
    """A stack using every optional pool key, arm64 and bottlerocket, to widen what is validated."""
    cfg = stack_config("dev")
    pools = cfg[NP]
    pools["cpu"].update(
        maxMemoryGib=256,
        weight=10,
        expireAfter="Never",
        disruptionBudgets=[
            {"nodes": "20%", "reasons": ["Empty", "Drifted"]},
            {"nodes": "0", "schedule": "0 9 * * 1-5", "duration": "8h"},
        ],
    )
    pools["arm"] = {
        "gpu": "none",
        "instanceFamilies": ["c7g", "m7g"],
        "capacityTypes": ["spot"],
        "maxCpu": 32,
        "amiAlias": "bottlerocket@1.50.0",
    }
    pools["h100"] = {
        "gpu": "shared",
        "instanceFamilies": ["p5", "p5e"],
        "capacityTypes": ["on-demand"],
        "maxCpu": 384,
        "maxGpus": 16,
        "timeSlicingReplicas": 48,
        "rootVolumeGib": 1000,
        "consolidation": "WhenEmpty",
        "consolidateAfter": "Never",
        "imageCache": {"snapshotId": "snap-0fedcba9876543210", "volumeGib": 2000},
    }
    pools["gpu"].update(
        warmGpus=2,
        imageCache={"images": ["registry.example.com/llm:1.0.0"], "snapshotId": "snap-0123456789abcdef0"},
    )
    pools["gpu-shared"].update(warmGpus=4)
    cfg["gpu-inference:cluster"]["version"] = "1.32"
    return cfg


def test_every_optional_key_renders_valid_objects() -> None:
    plan = plan_of(kitchen_sink_config())
    names = {m["metadata"]["name"] for m in plan.manifests}
    assert {
        "arm",
        "h100",
        "h100-slices-1gpu",
        "h100-slices-8gpu",
        "gpu-headroom",
        "headroom-gpu",
        "prepull-gpu",
    } <= names
    assert _all_errors(plan) == {}


# --- the validator itself must be able to fail -----------------------------------


@pytest.fixture
def nodepool(dev_plan: Plan) -> dict:
    return copy.deepcopy(dev_plan.objects("NodePool")["gpu"])


def test_unknown_field_in_a_custom_resource_is_an_error(nodepool: dict) -> None:
    nodepool["spec"]["template"]["spec"]["gpuCount"] = 4
    assert any("gpuCount" in e for e in validate(nodepool, "1.34")), validate(nodepool, "1.34")


def test_wrong_enum_in_a_custom_resource_is_an_error(nodepool: dict) -> None:
    nodepool["spec"]["disruption"]["consolidationPolicy"] = "Always"
    errors = validate(nodepool, "1.34")
    assert errors and errors[0].startswith("spec.disruption.consolidationPolicy:"), errors


def test_bad_duration_pattern_is_an_error(nodepool: dict) -> None:
    nodepool["spec"]["disruption"]["consolidateAfter"] = "5 minutes"
    assert any(e.startswith("spec.disruption.consolidateAfter:") for e in validate(nodepool, "1.34"))


def test_bad_metadata_name_is_an_error(nodepool: dict) -> None:
    nodepool["metadata"]["name"] = 7
    assert any(e.startswith("metadata.name:") for e in validate(nodepool, "1.34")), validate(nodepool, "1.34")


def test_unknown_field_in_a_core_object_is_an_error(dev_plan: Plan) -> None:
    config_map = copy.deepcopy(next(iter(dev_plan.objects("ConfigMap").values())))
    config_map["spec"] = {"x": 1}
    assert validate(config_map, "1.34") != []


def test_unknown_kind_is_reported_not_passed() -> None:
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validate(obj, "1.34")[0].startswith("no upstream schema")


# --- vendored files match the pinned versions ------------------------------------


def test_vendored_karpenter_crds_match_the_pinned_version() -> None:
    dirs = sorted(p.name for p in SCHEMA_ROOT.iterdir() if p.is_dir() and p.name.startswith("karpenter-"))
    assert dirs == [f"karpenter-v{versions.KARPENTER_VERSION}"]
    kinds = {kind for (_, kind) in crd_schemas()}
    assert {"NodePool", "EC2NodeClass", "NodeOverlay"} <= kinds
    assert ("karpenter.sh/v1alpha1", "NodeOverlay") in crd_schemas()


def test_every_vendored_file_has_its_source_and_license_recorded() -> None:
    sources = (SCHEMA_ROOT / "SOURCES.md").read_text()
    for path in [*SCHEMA_ROOT.rglob("*.yaml"), *SCHEMA_ROOT.rglob("*.json")]:
        assert path.name in sources, f"{path.relative_to(SCHEMA_ROOT)} is not listed in schemas/SOURCES.md"
        assert path.parent.name in sources
    assert "Apache-2.0" in sources


def test_helm_pod_fields_validate_as_core_pod_spec(plan: Plan) -> None:
    """Helm values that become pod spec fields (affinity, tolerations, nodeSelector) are real PodSpec fields."""
    for name, release in plan.releases.items():
        values = release["values"]
        spec = {key: values[key] for key in ("affinity", "tolerations", "nodeSelector") if values.get(key)}
        if not spec:
            continue
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "registry.example/c:1"}], **spec},
        }
        assert validate(pod, plan.settings.cluster.version) == [], name


def test_cluster_versions_have_core_schemas() -> None:
    import kubernetes_validate.utils as kv

    available = {kv.major_minor(v) for v in kv.all_versions()}
    assert set(versions.KUBERNETES_VERSIONS) <= available


def test_schema_root_is_inside_the_repository() -> None:
    assert Path(__file__).resolve().parents[1] / "schemas" == SCHEMA_ROOT


@pytest.mark.parametrize(
    ("prefix", "version", "kinds"),
    [
        ("keda-v", versions.KEDA_VERSION, {"ScaledObject", "ScaledJob", "TriggerAuthentication"}),
        ("keda-http-add-on-v", versions.KEDA_HTTP_ADD_ON_VERSION, {"HTTPScaledObject"}),
        (
            "prometheus-operator-v",
            versions.PROMETHEUS_OPERATOR_VERSION,
            {"ServiceMonitor", "PodMonitor", "PrometheusRule"},
        ),
    ],
)
def test_vendored_addon_crds_match_the_pinned_versions(prefix: str, version: str, kinds: set[str]) -> None:
    dirs = sorted(p.name for p in SCHEMA_ROOT.iterdir() if p.is_dir() and p.name.startswith(prefix))
    assert dirs == [f"{prefix}{version}"]
    assert kinds <= {kind for (_, kind) in crd_schemas()}


def test_a_wrong_field_in_a_scaled_object_is_an_error(dev_plan: Plan) -> None:
    scaled = copy.deepcopy(dev_plan.objects("ScaledObject")["llm"])
    assert validate(scaled, "1.34") == []
    scaled["spec"]["maxReplicas"] = 3  # KEDA spells it maxReplicaCount
    assert any("maxReplicas" in e for e in validate(scaled, "1.34"))


def test_a_wrong_field_in_an_http_scaled_object_is_an_error(dev_plan: Plan) -> None:
    route = copy.deepcopy(dev_plan.objects("HTTPScaledObject")["embed-small"])
    assert validate(route, "1.35") == []
    route["spec"]["scaleTargetRef"]["port"] = "http"  # an int32; the name goes in portName
    assert any("scaleTargetRef.port" in e for e in validate(route, "1.35"))
