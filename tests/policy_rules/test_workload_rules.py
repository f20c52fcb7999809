from __future__ import annotations

import pytest

from tests.policy_rules import fixtures as fx
from tests.policy_rules.helpers import mutated, resource, resource_violations, stack_violations

DIGEST = "registry.example/model@sha256:" + "a" * 64
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
SCALED_JOB = "kubernetes:keda.sh/v1alpha1:ScaledJob"


def pools() -> list:
    return [
        resource(fx.NODEPOOL, fx.cpu_nodepool(), "cpu"),
        resource(fx.NODEPOOL, fx.gpu_nodepool("gpu"), "gpu"),
        resource(fx.NODEPOOL, fx.gpu_nodepool("shared", config="time-sliced-shared"), "shared"),
    ]


def test_gpu_workload_that_fits_a_gpu_pool_passes() -> None:
    stack = [*pools(), resource(fx.DEPLOYMENT, fx.gpu_deployment("gpu"), "model")]
    assert stack_violations("gpu-workload-placement", stack) == []


@pytest.mark.parametrize(
    ("case", "path", "value"),
    [
        ("no toleration", "spec.template.spec.tolerations", []),
        ("a pool that does not exist", "spec.template.spec.nodeSelector", {"karpenter.sh/nodepool": "gpu-xl"}),
        ("shared pool without the opt-in", "spec.template.spec.nodeSelector", {"karpenter.sh/nodepool": "shared"}),
    ],
)
def test_gpu_workload_that_fits_no_gpu_pool(case: str, path: str, value) -> None:
    stack = [*pools(), resource(fx.DEPLOYMENT, mutated(fx.gpu_deployment("gpu"), path, value), "model")]
    [(message, urn)] = stack_violations("gpu-workload-placement", stack)
    assert message.startswith("Deployment model requests nvidia.com/gpu but tolerates and selects no GPU NodePool"), (
        case
    )
    assert urn is not None and urn.endswith("::model")


def test_pods_without_gpu_requests_are_not_this_rules_business() -> None:
    cpu = mutated(fx.gpu_deployment(), "spec.template.spec.containers[0].resources", {})
    assert stack_violations("gpu-workload-placement", [*pools(), resource(fx.DEPLOYMENT, cpu, "web")]) == []


def test_scaled_job_templates_are_checked_too() -> None:
    job = {"metadata": {"name": "batch"}, "spec": {"jobTargetRef": {"template": {"spec": {
        "containers": [{"name": "w", "image": "x:1", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}}}}  # fmt: skip
    [(message, _)] = stack_violations("gpu-workload-placement", [*pools(), resource(SCALED_JOB, job, "batch")])
    assert message.startswith("ScaledJob batch requests nvidia.com/gpu")


def test_device_plugin_that_covers_every_gpu_pool_passes() -> None:
    stack = [*pools(), resource(fx.RELEASE, fx.device_plugin_release(), "nvidia")]
    assert stack_violations("gpu-daemon-coverage", stack) == []


def test_device_plugin_that_misses_the_shared_pool() -> None:
    release = mutated(
        fx.device_plugin_release(), "values.tolerations", fx.device_plugin_release()["values"]["tolerations"][:1]
    )
    [(message, _)] = stack_violations("gpu-daemon-coverage", [*pools(), resource(fx.RELEASE, release, "nvidia")])
    assert message == (
        "Helm release nvidia-device-plugin cannot run on GPU NodePools ['shared']: their nodes would never"
        " advertise or report GPUs"
    )


def test_device_plugin_selecting_a_label_no_pool_sets() -> None:
    release = mutated(fx.device_plugin_release(), "values.affinity", None)
    release["values"]["nodeSelector"] = {"nvidia.com/gpu.present": "true"}  # needs GPU feature discovery
    [(message, _)] = stack_violations("gpu-daemon-coverage", [*pools(), resource(fx.RELEASE, release, "nvidia")])
    assert "cannot run on GPU NodePools ['gpu', 'shared']" in message


def test_daemon_release_names_come_from_config() -> None:
    release = mutated(fx.device_plugin_release(), "values.tolerations", [])
    stack = [*pools(), resource(fx.RELEASE, release, "nvidia")]
    assert stack_violations("gpu-daemon-coverage", stack)
    assert stack_violations("gpu-daemon-coverage", stack, {"gpuDaemonReleases": ["dcgm-exporter"]}) == []


@pytest.mark.parametrize("image", ["registry.example/model:1.2.3", DIGEST, "localhost:5000/model:2"])
def test_pinned_images_pass(image: str) -> None:
    assert resource_violations("image-tag-pinned", fx.DEPLOYMENT, fx.gpu_deployment(image=image)) == []


@pytest.mark.parametrize("image", ["registry.example/model", "registry.example/model:latest", "localhost:5000/model"])
def test_unpinned_images(image: str) -> None:
    [message] = resource_violations("image-tag-pinned", fx.DEPLOYMENT, fx.gpu_deployment(image=image))
    assert message == f"Deployment model runs image {image!r} without a pinned tag (no tag or 'latest')"


def test_helm_values_images_are_checked_for_tags() -> None:
    assert resource_violations("image-tag-pinned", fx.RELEASE, fx.device_plugin_release()) == []
    release = mutated(fx.device_plugin_release(), "values.image.tag", "latest")
    [message] = resource_violations("image-tag-pinned", fx.RELEASE, release, name="nvidia")
    assert "nvcr.io/nvidia/k8s-device-plugin:latest" in message


def test_digest_rule() -> None:
    assert resource_violations("image-digest-pinned", fx.DEPLOYMENT, fx.gpu_deployment(image=DIGEST)) == []
    [message] = resource_violations("image-digest-pinned", fx.DEPLOYMENT, fx.gpu_deployment())
    assert (
        message
        == "Deployment model runs image 'registry.example/model:1.2.3' by tag only; pin it by digest (@sha256:...)"
    )


@pytest.mark.parametrize("kind", [SCALED_OBJECT, SCALED_JOB])
def test_keda_max_replicas(kind: str) -> None:
    props = {"metadata": {"name": "model"}, "spec": {"minReplicaCount": 0, "maxReplicaCount": 8}}
    assert resource_violations("keda-max-replicas", kind, props) == []
    assert resource_violations("keda-max-replicas", kind, props, {"maxReplicas": 4}) == [
        f"{kind.rsplit(':', 1)[1]} model allows 8 replicas; this environment allows at most 4"
    ]
    [message] = resource_violations("keda-max-replicas", kind, mutated(props, "spec.maxReplicaCount", None))
    assert "sets no maxReplicaCount" in message
