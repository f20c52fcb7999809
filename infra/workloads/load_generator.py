"""LoadGenerator: `python -m workloads.loadgen` as an in-cluster Deployment, 0 replicas by default.

Scale it up to drive a load step at an InferenceService from inside the VPC
(`kubectl -n inference scale deployment/loadgen --replicas=1`); each replica
offers `rps` requests per second for `durationSeconds`, reports, and starts
over. It runs on a CPU pool: it must never hold a GPU node up.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from domain import contract, pods
from infra import keda_http
from infra.workloads.inference import NAMESPACE, SERVICE_PORT, wake_up_host


@dataclass(frozen=True)
class LoadGeneratorArgs:
    # The Deployment's name, beside the InferenceServices in their namespace (the
    # settings own it: they reject a service of the same name).
    deployment_name: str
    image: str
    target: str  # the InferenceService the load goes to
    rps: float  # per replica
    duration_seconds: int
    replicas: int
    cpu_pool: str  # a pool with gpu: none
    target_wakes_through_interceptor: bool  # the target scales to zero via the KEDA HTTP add-on
    namespace: str = NAMESPACE


def target_args(args: LoadGeneratorArgs) -> list[str]:
    """Where the load goes: the service itself, or, for one that scales to zero, the
    KEDA HTTP interceptor with the service's Host header (so the load wakes it)."""
    if args.target_wakes_through_interceptor:
        url = f"http://{keda_http.INTERCEPTOR_PROXY}/v1/predict"
        return ["--url", url, "--host-header", wake_up_host(args.target, args.namespace)]
    return ["--url", f"http://{args.target}.{args.namespace}.svc.cluster.local:{SERVICE_PORT}/v1/predict"]


def deployment(args: LoadGeneratorArgs) -> dict:
    labels = {"app.kubernetes.io/name": args.deployment_name, "app.kubernetes.io/part-of": "gpu-inference"}
    # Let through by the inference services' NetworkPolicies.
    pod_labels = {**labels, contract.INFERENCE_CLIENT_LABEL: "true"}
    target = target_args(args)
    return {
        # It waits for a CPU node when started; `pulumi up` does not wait with it.
        "metadata": {
            "name": args.deployment_name,
            "namespace": args.namespace,
            "labels": labels,
            "annotations": pods.SKIP_AWAIT,
        },
        "spec": {
            "replicas": args.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "nodeSelector": contract.PoolContract(args.cpu_pool, "none").node_selector(),
                    "automountServiceAccountToken": False,
                    "securityContext": pods.pod_security(),
                    "containers": [
                        {
                            "name": "loadgen",
                            "image": args.image,
                            "command": ["python", "-m", "workloads.loadgen"],
                            "args": [*target, "--rps", f"{args.rps:g}", "--duration", str(args.duration_seconds)],
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "256Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "securityContext": pods.container_security(),
                        }
                    ],
                },
            },
        },
    }


class LoadGenerator(pulumi.ComponentResource):
    def __init__(self, name: str, args: LoadGeneratorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:loadgen:LoadGenerator", name, None, opts)
        obj = deployment(args)
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment", metadata=obj["metadata"], spec=obj["spec"], opts=pulumi.ResourceOptions(parent=self)
        )
        self.register_outputs({"replicas": args.replicas})
