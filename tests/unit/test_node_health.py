"""GPU node health: Karpenter NodeRepair on, and the EKS node monitoring agent that reports the conditions."""

from __future__ import annotations

import json

import jsonschema

from domain import contract, versions
from infra.cluster import node_monitoring_configuration
from tests.support.schemas import SCHEMA_ROOT

ADDON = "eks-node-monitoring-agent"


def test_the_agent_is_pinned_for_every_supported_kubernetes_version() -> None:
    assert set(versions.EKS_ADDONS[ADDON]) == set(versions.KUBERNETES_VERSIONS)
    assert all(v.startswith("v1.7.0-eksbuild.") for v in versions.EKS_ADDONS[ADDON].values())


def test_its_configuration_passes_the_vendored_schema_and_tolerates_the_gpu_taints() -> None:
    schema = json.loads((SCHEMA_ROOT / "eks-node-monitoring-agent-v1.7.0" / "configuration.schema.json").read_text())
    config = node_monitoring_configuration()
    jsonschema.Draft7Validator(schema).validate(config)
    # The DCGM server must reach dedicated and time-sliced GPU nodes alike.
    assert config["dcgmAgent"]["tolerations"] == [
        contract.GPU_TAINT.toleration(),
        contract.SHARED_GPU_TAINT.toleration(),
    ]
    for taint in (contract.GPU_TAINT, contract.SHARED_GPU_TAINT):
        assert taint.toleration() in config["dcgmAgent"]["tolerations"]
    assert config["nodeAgent"]["tolerations"] == [{"operator": "Exists"}]
    # A key the schema does not know is rejected (additionalProperties: false): the check bites.
    try:
        jsonschema.Draft7Validator(schema).validate({**config, "dcgm": {}})
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("the vendored schema accepted an unknown key")


def test_every_plan_installs_the_agent_after_the_system_nodes(plan) -> None:
    [addon] = [r for r in plan.resources if r.type == "aws:eks/addon:Addon" and r.inputs["addonName"] == ADDON]
    assert addon.inputs["addonVersion"] == versions.EKS_ADDONS[ADDON][plan.settings.cluster.version]
    assert json.loads(addon.inputs["configurationValues"]) == node_monitoring_configuration()
    system = [r for r in plan.resources if r.type == "aws:eks/nodeGroup:NodeGroup"]
    assert system and system[0].urn in addon.dependencies


def test_karpenter_repairs_nodes(plan) -> None:
    [release] = [
        r for r in plan.resources if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs["name"] == "karpenter"
    ]
    gates = release.inputs["values"]["settings"]["featureGates"]
    assert gates["nodeRepair"] is True and gates["reservedCapacity"] is True
