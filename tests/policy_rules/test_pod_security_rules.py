"""pod-security-restricted: happy-path workload props, one mutation per way a pod falls below `restricted`."""

from __future__ import annotations

from typing import Any

import pytest

from policies.rules.pod_security import KINDS
from tests.policy_rules.helpers import POLICIES, mutated, resource_violations
from tools.plan.policies import config_path, enforcement, load_config

RULE = "pod-security-restricted"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"


def pod_template() -> dict[str, Any]:
    """A pod template as domain.pods builds it (pod_security() and container_security())."""
    return {
        "metadata": {"labels": {"app.kubernetes.io/name": "model"}},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "server",
                    "image": "registry.example/model:1.2.3",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        },
    }


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "model", "namespace": "inference"},
        "spec": {"replicas": 1, "template": pod_template()},
    }


# Where each kind keeps its pod template, in camelCase inputs.
WRAPPERS = {
    "kubernetes:core/v1:Pod": lambda t: t,
    "kubernetes:apps/v1:Deployment": lambda t: {"spec": {"template": t}},
    "kubernetes:apps/v1:StatefulSet": lambda t: {"spec": {"serviceName": "s", "template": t}},
    "kubernetes:apps/v1:DaemonSet": lambda t: {"spec": {"template": t}},
    "kubernetes:apps/v1:ReplicaSet": lambda t: {"spec": {"template": t}},
    "kubernetes:batch/v1:Job": lambda t: {"spec": {"template": t}},
    "kubernetes:batch/v1:CronJob": lambda t: {"spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": t}}}},
    "kubernetes:keda.sh/v1alpha1:ScaledJob": lambda t: {"spec": {"jobTargetRef": {"template": t}}},
}

C = "spec.template.spec.containers[0].securityContext"
P = "spec.template.spec.securityContext"


def test_a_restricted_deployment_passes() -> None:
    assert resource_violations(RULE, DEPLOYMENT, deployment()) == []


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (f"{C}.privileged", True, 'privileged: container "server" sets securityContext.privileged=true'),
        (f"{P}.runAsUser", 0, "runAsUser: pod sets spec.securityContext.runAsUser=0"),
        (f"{P}.runAsNonRoot", False, "runAsNonRoot: pod sets spec.securityContext.runAsNonRoot=false"),
        (
            f"{P}.seccompProfile",
            None,
            'seccompProfile_restricted: container "server" sets no securityContext.seccompProfile.type and neither'
            " does the pod (spec.securityContext.seccompProfile.type must be one of ['RuntimeDefault', 'Localhost'])",
        ),
        (
            f"{C}.allowPrivilegeEscalation",
            True,
            'allowPrivilegeEscalation: container "server" must set securityContext.allowPrivilegeEscalation=false'
            " (got True)",
        ),
        (
            f"{C}.capabilities.add",
            ["SYS_ADMIN"],
            "capabilities_restricted: container \"server\" adds ['SYS_ADMIN'] in securityContext.capabilities.add;"
            " restricted allows only NET_BIND_SERVICE",
        ),
        ("spec.template.spec.hostNetwork", True, "hostNamespaces: pod sets spec.hostNetwork=true"),
        (
            "spec.template.spec.volumes[0]",
            {"name": "tmp", "hostPath": {"path": "/tmp"}},
            'restrictedVolumes: volume "tmp" uses spec.volumes[].hostPath, which restricted does not allow',
        ),
    ],
    ids=[
        "privileged",
        "root-user",
        "runAsNonRoot-false",
        "no-seccomp",
        "privilege-escalation",
        "added-capability",
        "host-network",
        "host-path",
    ],
)
def test_each_way_below_restricted_is_one_violation(path: str, value: Any, message: str) -> None:
    found = resource_violations(RULE, DEPLOYMENT, mutated(deployment(), path, value))
    assert found == [f"Deployment inference/model is not Pod Security restricted: {message}"]


def test_policy_covers_every_workload_kind_and_keda_scaled_jobs() -> None:
    assert sorted(KINDS) == sorted(WRAPPERS)


@pytest.mark.parametrize("resource_type", sorted(WRAPPERS))
def test_every_kind_with_a_pod_template_is_checked(resource_type: str) -> None:
    kind = resource_type.rsplit(":", 1)[-1]
    meta = {"metadata": {"name": "w", "namespace": "batch"}}
    assert resource_violations(RULE, resource_type, {**WRAPPERS[resource_type](pod_template()), **meta}) == []
    rooted = pod_template()  # root in an init container is root all the same
    rooted["spec"]["initContainers"] = [{"name": "setup", "image": "x:1", "securityContext": {"runAsUser": 0}}]
    found = resource_violations(RULE, resource_type, {**WRAPPERS[resource_type](rooted), **meta})
    assert (
        f'{kind} batch/w is not Pod Security restricted: runAsUser: container "setup" sets securityContext.runAsUser=0'
        in found
    )


def test_objects_without_a_pod_template_are_not_this_rules_business() -> None:
    configmap = {"metadata": {"name": "model", "namespace": "inference"}, "data": {"spec": "x"}}
    assert resource_violations(RULE, "kubernetes:core/v1:ConfigMap", configmap) == []
    release = {"name": "dcgm-exporter", "values": {"securityContext": {"privileged": True}}}
    assert resource_violations(RULE, "kubernetes:helm.sh/v3:Release", release) == []


def _host_agent() -> dict[str, Any]:
    props = mutated(deployment(), "spec.template.spec.volumes[0]", {"name": "tmp", "hostPath": {"path": "/var/lib"}})
    props["metadata"] = {"name": "node-agent", "namespace": "monitoring"}
    return props


def test_allowlisted_workloads_may_use_the_host() -> None:
    assert resource_violations(RULE, DAEMONSET, _host_agent(), {"allowHostAccess": ["monitoring/node-agent"]}) == []


@pytest.mark.parametrize("entry", ["monitoring/other-agent", "kube-system/node-agent", "node-agent"])
def test_the_allowlist_matches_namespace_and_name_exactly(entry: str) -> None:
    [message] = resource_violations(RULE, DAEMONSET, _host_agent(), {"allowHostAccess": [entry]})
    assert message.startswith("DaemonSet monitoring/node-agent is not Pod Security restricted: restrictedVolumes:")


def test_the_allowlist_is_empty_by_default() -> None:
    schema = POLICIES[RULE].config_schema
    assert schema is not None and schema.properties["allowHostAccess"]["default"] == []
    assert len(resource_violations(RULE, DAEMONSET, _host_agent())) == 1


def test_auto_named_objects_are_addressed_by_their_resource_name() -> None:
    props = mutated(deployment(), f"{C}.privileged", True)
    props["metadata"] = {"namespace": "inference"}
    [message] = resource_violations(RULE, DEPLOYMENT, props, name="llm")
    assert message.startswith("Deployment inference/llm is not Pod Security restricted: privileged:")


@pytest.mark.parametrize(("environment", "level"), [("dev", "advisory"), ("prod", "mandatory")])
def test_advisory_in_dev_and_mandatory_in_prod(environment: str, level: str) -> None:
    config = load_config(config_path(environment))
    assert enforcement(POLICIES[RULE], config) == level
