"""Program-wide invariants of `__main__.py`, checked on every stack's recorded run."""

from __future__ import annotations

import json

from tests.conftest import Plan

AWS_PROVIDER = "pulumi:providers:aws::aws"
K8S_PROVIDER = "pulumi:providers:kubernetes::cluster-k8s"


def test_every_aws_resource_uses_the_stacks_provider(plan: Plan) -> None:
    aws = [r for r in plan.resources if r.type.startswith("aws:")]
    stray = [r.urn for r in aws if f"{AWS_PROVIDER}::" not in r.provider]
    assert aws and not stray, f"AWS resources on a default provider (no default_tags): {stray}"


def test_every_kubernetes_object_uses_the_clusters_provider(plan: Plan) -> None:
    k8s = [r for r in plan.resources if r.type.startswith("kubernetes:")]
    stray = [r.urn for r in k8s if f"{K8S_PROVIDER}::" not in r.provider]
    assert k8s and not stray, f"Kubernetes resources on an ambient kubeconfig: {stray}"


def test_the_eks_component_gets_the_aws_provider(plan: Plan) -> None:
    eks = plan.one("eks:index:Cluster")
    assert AWS_PROVIDER in eks.providers["aws"]


def test_default_tags_come_from_settings(plan: Plan) -> None:
    provider = plan.one("pulumi:providers:aws")
    tags = json.loads(provider.inputs["defaultTags"])["tags"]
    assert tags == plan.settings.default_tags
    assert {"project", "environment", "managed-by"} <= set(tags)
    assert provider.inputs["region"] == plan.settings.region


def test_only_components_and_providers_sit_at_the_top(plan: Plan) -> None:
    top = [r for r in plan.resources if r.parent.endswith(f"::gpu-inference-{r.urn.split(':')[2]}")]
    assert {r.type.split(":")[0] for r in top} <= {"gpuinf", "pulumi"}, [r.urn for r in top]
    assert sorted(r.type for r in top if r.type.startswith("gpuinf:")) == [
        *["gpuinf:batch:BatchJob"] * len(plan.settings.batch_jobs),
        "gpuinf:cluster:Cluster",
        *(["gpuinf:endpoints:Endpoints"] if plan.settings.exposed else []),
        *["gpuinf:inference:InferenceService"] * len(plan.settings.inference),
        "gpuinf:karpenter:Karpenter",
        *(["gpuinf:keda:HttpAddOn"] if plan.settings.needs_http_add_on else []),
        "gpuinf:keda:Keda",
        *(["gpuinf:load_balancer:LoadBalancerController"] if plan.settings.exposed else []),
        *(["gpuinf:loadgen:LoadGenerator"] if plan.settings.load_generator else []),
        "gpuinf:monitoring:Monitoring",
        "gpuinf:namespaces:WorkloadNamespaces",
        "gpuinf:network:Network",
        "gpuinf:nodepools:NodePools",
        "gpuinf:nvidia:DevicePlugin",
        "gpuinf:priorities:PriorityClasses",
        "gpuinf:warmup:GpuWarmup",
    ]


def test_urns_are_unique(plan: Plan) -> None:
    urns = [r.urn for r in plan.resources]
    assert len(urns) == len(set(urns))


def test_subnets_span_the_configured_zone_count(plan: Plan) -> None:
    zones = {r.inputs["availabilityZone"] for r in plan.of_type("aws:ec2/subnet:Subnet")}
    assert len(zones) == plan.settings.network.az_count
    nats = plan.of_type("aws:ec2/natGateway:NatGateway")
    assert len(nats) == (plan.settings.network.az_count if plan.settings.network.nat_gateways == "perAz" else 1)


# AWS name limits, checked with the longest cluster name settings accept.
# AWS name limits at the longest config: tests/test_aws_names.py.


def test_the_plan_is_deterministic() -> None:
    """Two runs of one config record the same resources and inputs, so plan diffs show real changes."""
    from tests.conftest import plan_of, stack_config

    first, second = plan_of(stack_config("dev")), plan_of(stack_config("dev"))

    def canonical(plan: Plan) -> list[dict]:
        return sorted((r.as_json() for r in plan.resources), key=lambda r: r["urn"])

    assert canonical(first) == canonical(second)
