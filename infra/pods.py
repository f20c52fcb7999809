"""Pod and container security settings every pod we render shares (Pod Security `restricted`).

Workload namespaces enforce `restricted` (workloads/namespaces.py): each pod
runs as a non-root user with the runtime's default seccomp profile, and each
container drops all capabilities, cannot escalate and has a read-only root
filesystem (scratch space is an emptyDir at /tmp).
"""

from __future__ import annotations

# The `app` user of workloads/server/Dockerfile (the image every workload of ours runs).
APP_USER = 10001
# The user the pause image runs as.
PAUSE_USER = 65535

PART_OF = "gpu-inference"


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
