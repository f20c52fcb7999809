"""Pod and container security settings every pod we render shares (Pod Security `restricted`).

Workload namespaces enforce `restricted` (infra/workloads/namespaces.py): each pod
runs as a non-root user with the runtime's default seccomp profile, and each
container drops all capabilities, cannot escalate and has a read-only root
filesystem (scratch space is an emptyDir at /tmp).
"""

from __future__ import annotations

from typing import Protocol

from domain import contract

# The `app` user of workloads/Dockerfile (the image every workload of ours runs).
APP_USER = 10001
# The user the pause image runs as.
PAUSE_USER = 65535

PART_OF = "gpu-inference"
POD_SECURITY_LEVELS = ("privileged", "baseline", "restricted")
# Pulumi's Kubernetes provider waits for a Deployment to become ready, by default up to
# 10 minutes. A pod on a Karpenter pool is ready only after a node was launched (for a
# GPU pod: plus image pull and model load): `pulumi up` must not hang on, or fail for,
# capacity. Every workload on a Karpenter pool carries this annotation.
SKIP_AWAIT = {"pulumi.com/skipAwait": "true"}


def pod_security_labels(enforce: str, *, audit: str = "restricted") -> dict[str, str]:
    """Pod Security admission labels of a namespace: `enforce` refuses pods below that level;
    `audit` and `warn` report (in the audit log and to the client) what falls below `audit`."""
    assert enforce in POD_SECURITY_LEVELS and audit in POD_SECURITY_LEVELS
    return {
        "pod-security.kubernetes.io/enforce": enforce,
        "pod-security.kubernetes.io/audit": audit,
        "pod-security.kubernetes.io/warn": audit,
    }


class GpuPool(Protocol):
    """What packing reads of a pool (a settings `PoolSettings` or a component's `PoolPlacement`)."""

    @property
    def gpu(self) -> str: ...

    @property
    def gpu_counts(self) -> tuple[int, ...]: ...


def packing_affinity(pool: GpuPool) -> dict:
    """Pods on a shared pool pack onto its smallest (one-GPU) instances: contract.prefer_gpu_count."""
    return {"affinity": contract.prefer_gpu_count(min(pool.gpu_counts))} if pool.gpu == "shared" else {}


def cpu_millicores(quantity: str) -> int:
    """A CPU quantity of the settings (`2`, `0.5`, `500m`) in millicores."""
    if quantity.endswith("m"):
        return int(float(quantity[:-1]))
    return round(float(quantity) * 1000)


def app_labels(name: str, component: str) -> dict[str, str]:
    """Recommended app labels; selectors, Services and monitors match on all three."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
    }


TMP_VOLUME = {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def pod_security(user: int = APP_USER, *, fs_group: bool = False) -> dict:
    context: dict = {"runAsNonRoot": True, "runAsUser": user, "runAsGroup": user}
    if fs_group:  # volumes writable by the user
        context["fsGroup"] = user
    return {**context, "seccompProfile": {"type": "RuntimeDefault"}}


def container_security(*, read_only_root: bool = True) -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
    }
