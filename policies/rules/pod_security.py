"""Pods this program renders meet Pod Security `restricted`: no privileged, root or host-sharing pods.

Admission enforces only what a namespace's label asks for, and only at `pulumi up`;
this rule catches the same fields at preview, in every namespace. The checks are
domain.pod_security's (the upstream pod-security-admission checks). Chart pods are
inside Helm Releases, not separate resources, so they are not this rule's business;
a rendered DaemonSet that needs the host can be allowlisted by `namespace/name`.
"""

from __future__ import annotations

from collections.abc import Iterable

from pulumi_policy import ResourceValidationArgs

from domain import pod_security as pss
from policies.rules.common import ADVISORY, POD_TEMPLATE_PATHS, Config, resource_policy, schema

KINDS = list(POD_TEMPLATE_PATHS)  # Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, ScaledJob


def address(args: ResourceValidationArgs) -> str:
    """`namespace/name` as the allowlist spells it; Pulumi auto-names objects without metadata.name."""
    meta = args.props.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name') or args.name}"


def _restricted(args: ResourceValidationArgs, config: Config) -> Iterable[str]:
    where = address(args)
    if where in config["allowHostAccess"]:
        return
    # "kubernetes:apps/v1:Deployment" -> apiVersion "apps/v1", kind "Deployment"
    _, api_version, kind = args.resource_type.split(":", 2)
    template = pss.pod_template(api_version, kind, args.props)
    for violation in pss.violations(template.spec, pss.RESTRICTED, template.metadata) if template else []:
        yield f"{kind} {where} is not Pod Security restricted: {violation}"


POLICIES = [
    resource_policy(
        "pod-security-restricted",
        "Pod templates meet the Pod Security Standards `restricted` level: non-root, no privilege escalation, all"
        " capabilities dropped, a RuntimeDefault/Localhost seccomp profile, no host namespaces, ports or paths"
        " (mandatory in prod).",
        "Build the pod and container securityContext from domain.pods (pod_security(), container_security()); a"
        " workload that truly needs the host goes in allowHostAccess as namespace/name, in a namespace that enforces"
        " privileged.",
        KINDS,
        _restricted,
        enforcement=ADVISORY,
        config=schema(
            allowHostAccess={
                "type": "array",
                "items": {"type": "string", "pattern": "^[^/]+/[^/]+$"},
                "default": [],
                "description": "Workloads (namespace/name) that may fall below restricted, e.g. node agents that need"
                " host paths; chart DaemonSets live inside Helm Releases and need no entry.",
            }
        ),
    ),
]
