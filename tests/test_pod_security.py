"""The Pod Security Standards checker, and our own plans judged by it.

Unit cases follow the upstream check tests (kubernetes/pod-security-admission
v0.36.2, policy/check_*_test.go): for each check one pod that passes and one that
fails, with the message naming the container and field. The plan tests hold every
pod template we render to the enforce label of its namespace, and every pod in
our workload namespaces to `restricted`, whatever the label says.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from domain import pod_security as pss
from tests.conftest import Plan
from tests.support.rendered import helm_or_skip
from tools.plan import render

# Namespaces our own workloads run in: each must enforce, and meet, `restricted`.
WORKLOAD_NAMESPACES = ("inference", "batch", "gpu-warmup")


def restricted_pod() -> dict[str, Any]:
    """The smallest pod spec that meets `restricted` (and so `baseline`)."""
    return {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {"name": "a", "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
        ],
    }


Edit = Callable[[dict[str, Any]], None]


def pod(*edits: Edit) -> dict[str, Any]:
    spec = restricted_pod()
    for edit in edits:
        edit(spec)
    return spec


def at_pod(**fields: Any) -> Edit:
    return lambda s: s.update(fields)


def pod_context(**fields: Any) -> Edit:
    return lambda s: s["securityContext"].update(fields)


def container(**fields: Any) -> Edit:
    return lambda s: s["containers"][0].update(fields)


def context(**fields: Any) -> Edit:
    return lambda s: s["containers"][0]["securityContext"].update(fields)


def drop_pod_context(key: str) -> Edit:
    return lambda s: s["securityContext"].pop(key)


def drop_context(key: str) -> Edit:
    return lambda s: s["containers"][0]["securityContext"].pop(key)


def volume(**source: Any) -> Edit:
    return lambda s: s.setdefault("volumes", []).append({"name": "v", **source})


def of_check(check: str, found: list[str]) -> list[str]:
    return [v for v in found if v.startswith(f"{check}: ")]


def test_the_restricted_base_pod_meets_every_level() -> None:
    for level in pss.LEVELS:
        assert pss.violations(restricted_pod(), level) == [], level


def test_privileged_checks_nothing_and_unknown_levels_are_refused() -> None:
    assert pss.violations(pod(at_pod(hostPID=True), context(privileged=True)), "privileged") == []
    with pytest.raises(ValueError, match="unknown Pod Security level 'strict'"):
        pss.violations(restricted_pod(), "strict")


# (check, level, a pod that passes it, a pod that fails it, the messages of the failure)
CASES = [
    ("hostNamespaces", "baseline", pod(at_pod(hostNetwork=False, hostPID=False)),
     pod(at_pod(hostNetwork=True, hostIPC=True)),
     ["pod sets spec.hostNetwork=true", "pod sets spec.hostIPC=true"]),
    ("privileged", "baseline", pod(context(privileged=False)), pod(context(privileged=True)),
     ['container "a" sets securityContext.privileged=true']),
    ("capabilities_baseline", "baseline",
     pod(context(capabilities={"add": ["NET_BIND_SERVICE", "CHOWN", "SYS_CHROOT"]})),
     pod(context(capabilities={"add": ["NET_RAW", "CHOWN", "SYS_ADMIN"]})),
     ["container \"a\" adds ['NET_RAW', 'SYS_ADMIN'] in securityContext.capabilities.add, beyond the baseline"
      " default set"]),
    ("hostPathVolumes", "baseline", pod(volume(emptyDir={})), pod(volume(hostPath={"path": "/var/run"})),
     ['volume "v" uses spec.volumes[].hostPath']),
    ("hostPorts", "baseline", pod(container(ports=[{"containerPort": 8080, "hostPort": 0}])),
     pod(container(ports=[{"containerPort": 8080, "hostPort": 8080}, {"containerPort": 9090, "hostPort": 9090}])),
     ['container "a" sets ports[].hostPort [8080, 9090]']),
    ("appArmorProfile", "baseline",
     pod(pod_context(appArmorProfile={"type": "RuntimeDefault"}), context(appArmorProfile={"type": "Localhost"})),
     pod(pod_context(appArmorProfile={"type": "Unconfined"}), context(appArmorProfile={"type": "Unconfined"})),
     ["pod sets spec.securityContext.appArmorProfile.type='Unconfined'",
      "container \"a\" sets securityContext.appArmorProfile.type='Unconfined'"]),
    ("seLinuxOptions", "baseline",
     pod(pod_context(seLinuxOptions={"type": "container_t", "level": "s0:c1,c2"}),
         context(seLinuxOptions={"type": "container_engine_t"})),
     pod(pod_context(seLinuxOptions={"type": "spc_t"}), context(seLinuxOptions={"user": "root", "role": "sysadm_r"})),
     ["pod sets spec.securityContext.seLinuxOptions.type='spc_t'",
      "container \"a\" sets securityContext.seLinuxOptions.user='root'",
      "container \"a\" sets securityContext.seLinuxOptions.role='sysadm_r'"]),
    ("procMount", "baseline", pod(context(procMount="Default")), pod(context(procMount="Unmasked")),
     ["container \"a\" sets securityContext.procMount='Unmasked'"]),
    ("seccompProfile_baseline", "baseline", pod(drop_pod_context("seccompProfile")),
     pod(context(seccompProfile={"type": "Unconfined"})),
     ["container \"a\" sets securityContext.seccompProfile.type='Unconfined'"]),
    ("sysctls", "baseline",
     pod(pod_context(sysctls=[{"name": "kernel.shm_rmid_forced", "value": "0"},
                              {"name": "net.ipv4.tcp_rmem", "value": "4096 87380 16777216"}])),
     pod(pod_context(sysctls=[{"name": "kernel.msgmax", "value": "65536"}])),
     ["pod sets spec.securityContext.sysctls[] 'kernel.msgmax', which is not a safe sysctl"]),
    ("hostProbesAndHostLifecycle", "baseline",
     pod(container(livenessProbe={"httpGet": {"path": "/", "port": 80, "host": ""}})),
     pod(container(readinessProbe={"tcpSocket": {"port": 80, "host": "10.0.0.1"}},
                   lifecycle={"preStop": {"httpGet": {"port": 80, "host": "example.com"}}})),
     ["container \"a\" sets readinessProbe.tcpSocket.host='10.0.0.1'",
      "container \"a\" sets lifecycle.preStop.httpGet.host='example.com'"]),
    ("windowsHostProcess", "baseline", pod(context(windowsOptions={"hostProcess": False})),
     pod(pod_context(windowsOptions={"hostProcess": True})),
     ["pod sets spec.securityContext.windowsOptions.hostProcess=true"]),
    ("restrictedVolumes", "restricted",
     pod(*(volume(**{kind: {}}) for kind in sorted(pss.RESTRICTED_VOLUME_SOURCES)), volume()),
     pod(volume(nfs={"server": "nfs", "path": "/"})),
     ['volume "v" uses spec.volumes[].nfs, which restricted does not allow']),
    ("allowPrivilegeEscalation", "restricted",
     pod(at_pod(os={"name": "windows"}), drop_context("allowPrivilegeEscalation")),
     pod(drop_context("allowPrivilegeEscalation")),
     ['container "a" must set securityContext.allowPrivilegeEscalation=false (got unset)']),
    ("capabilities_restricted", "restricted",
     pod(context(capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})),
     pod(context(capabilities={"drop": ["NET_RAW"], "add": ["CHOWN"]})),
     ['container "a" must set securityContext.capabilities.drop=["ALL"]',
      "container \"a\" adds ['CHOWN'] in securityContext.capabilities.add; restricted allows only NET_BIND_SERVICE"]),
    ("seccompProfile_restricted", "restricted",
     pod(drop_pod_context("seccompProfile"), context(seccompProfile={"type": "Localhost", "localhostProfile": "p"})),
     pod(drop_pod_context("seccompProfile")),
     ["container \"a\" sets no securityContext.seccompProfile.type and neither does the pod"
      " (spec.securityContext.seccompProfile.type must be one of ['RuntimeDefault', 'Localhost'])"]),
    ("procMount_restricted", "restricted", pod(context(procMount="Default")),
     pod(at_pod(hostUsers=False), context(procMount="Unmasked")),
     ["container \"a\" sets securityContext.procMount='Unmasked'"]),
    ("runAsNonRoot", "restricted", pod(drop_pod_context("runAsNonRoot"), context(runAsNonRoot=True)),
     pod(drop_pod_context("runAsNonRoot")),
     ['container "a" must set securityContext.runAsNonRoot=true (or the pod spec.securityContext.runAsNonRoot=true)']),
    ("runAsUser", "restricted", pod(pod_context(runAsUser=1000), context(runAsUser=10001)),
     pod(pod_context(runAsUser=0), context(runAsUser=0)),
     ["pod sets spec.securityContext.runAsUser=0", 'container "a" sets securityContext.runAsUser=0']),
]  # fmt: skip


@pytest.mark.parametrize(("check", "level", "passing", "failing", "messages"), CASES, ids=[c[0] for c in CASES])
def test_each_check_passes_and_fails_as_upstream(
    check: str, level: str, passing: dict, failing: dict, messages: list[str]
) -> None:
    assert pss.violations(passing, level) == []
    assert of_check(check, pss.violations(failing, level)) == [f"{check}: {m}" for m in messages]
    if level == "restricted":  # a restricted-only rule: baseline lets the same pod through
        assert of_check(check, pss.violations(failing, "baseline")) == []


def test_baseline_leaves_restricted_fields_alone() -> None:
    """A root pod without seccomp, escalation guard or dropped capabilities is baseline, not restricted."""
    bare = {"containers": [{"name": "app", "image": "x"}], "volumes": [{"name": "n", "nfs": {"server": "s"}}]}
    assert pss.violations(bare, "baseline") == []
    assert {v.split(":", 1)[0] for v in pss.violations(bare, "restricted")} == {
        "restrictedVolumes", "allowPrivilegeEscalation", "capabilities_restricted", "seccompProfile_restricted",
        "runAsNonRoot",
    }  # fmt: skip


def test_restricted_checks_replace_their_baseline_counterparts() -> None:
    """One message per field at restricted: hostPath is a restricted volume type, not also a baseline hostPath."""
    spec = pod(volume(hostPath={"path": "/"}), context(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}))
    found = pss.violations(spec, "restricted")
    assert found == [
        'restrictedVolumes: volume "v" uses spec.volumes[].hostPath, which restricted does not allow',
        "capabilities_restricted: container \"a\" adds ['SYS_ADMIN'] in securityContext.capabilities.add;"
        " restricted allows only NET_BIND_SERVICE",
    ]


def test_init_and_ephemeral_containers_are_checked_by_name() -> None:
    spec = pod(lambda s: s.update(initContainers=[{"name": "pull-0", "securityContext": {"privileged": True}}]))
    spec["ephemeralContainers"] = [{"name": "debug", "securityContext": {"runAsUser": 0}}]
    found = pss.violations(spec, "restricted")
    assert 'privileged: container "pull-0" sets securityContext.privileged=true' in found
    assert 'runAsUser: container "debug" sets securityContext.runAsUser=0' in found
    assert 'allowPrivilegeEscalation: container "pull-0" must set securityContext.allowPrivilegeEscalation=false' \
        " (got unset)" in found  # fmt: skip


def test_explicit_false_overrides_the_pod_level_and_true_container_level_suffices() -> None:
    spec = pod(context(runAsNonRoot=False))
    assert of_check("runAsNonRoot", pss.violations(spec, "restricted")) == [
        'runAsNonRoot: container "a" sets securityContext.runAsNonRoot=false'
    ]
    assert pss.violations(pod(pod_context(runAsNonRoot=False)), "restricted") == [
        "runAsNonRoot: pod sets spec.securityContext.runAsNonRoot=false"
    ]


def test_a_user_namespace_relaxes_only_the_root_user_checks() -> None:
    """hostUsers: false (1.35+) lets root and an unmasked /proc through baseline, never restricted's procMount."""
    spec = pod(at_pod(hostUsers=False), drop_pod_context("runAsNonRoot"), context(runAsUser=0, procMount="Unmasked"))
    assert pss.violations(spec, "baseline") == []
    assert pss.violations(spec, "restricted") == [
        "procMount_restricted: container \"a\" sets securityContext.procMount='Unmasked'"
    ]


def test_apparmor_annotations_are_read_from_the_pod_metadata() -> None:
    ok = {"annotations": {"container.apparmor.security.beta.kubernetes.io/a": "localhost/custom"}}
    bad = {"annotations": {"container.apparmor.security.beta.kubernetes.io/a": "unconfined"}}
    assert pss.violations(restricted_pod(), "baseline", ok) == []
    assert pss.violations(restricted_pod(), "baseline", bad) == [
        "appArmorProfile: pod annotation metadata.annotations['container.apparmor.security.beta.kubernetes.io/a']"
        "='unconfined' overrides the AppArmor profile"
    ]


# -- workload objects and namespaces ------------------------------------------------------------------------------

WORKLOADS = {
    "Pod": ("v1", lambda t: t),
    "Deployment": ("apps/v1", lambda t: {"spec": {"template": t}}),
    "StatefulSet": ("apps/v1", lambda t: {"spec": {"template": t}}),
    "DaemonSet": ("apps/v1", lambda t: {"spec": {"template": t}}),
    "ReplicaSet": ("apps/v1", lambda t: {"spec": {"template": t}}),
    "Job": ("batch/v1", lambda t: {"spec": {"template": t}}),
    "CronJob": ("batch/v1", lambda t: {"spec": {"jobTemplate": {"spec": {"template": t}}}}),
    "ScaledJob": ("keda.sh/v1alpha1", lambda t: {"spec": {"jobTargetRef": {"template": t}}}),
}


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_pod_templates_come_out_of_every_workload_kind(kind: str) -> None:
    api_version, wrap = WORKLOADS[kind]
    template = {"metadata": {"labels": {"app": "x"}}, "spec": pod(context(privileged=True))}
    obj = {"apiVersion": api_version, "kind": kind, **wrap(copy.deepcopy(template))}
    obj["metadata"] = {**obj.get("metadata", {}), "name": "w", "namespace": "ns"}
    [found] = pss.pod_templates([obj, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}}])
    assert (found.kind, found.namespace, found.name) == (kind, "ns", "w")
    assert found.spec == template["spec"]
    assert pss.template_violations([obj], {"ns": "baseline"}) == [
        f'{kind} ns/w (enforce baseline): privileged: container "a" sets securityContext.privileged=true'
    ]


def test_pulumi_type_tokens_spell_the_core_group_as_core() -> None:
    assert pss.api_group("core/v1") == pss.api_group("v1") == ""
    assert pss.pod_template("core/v1", "Pod", {"spec": restricted_pod()}) is not None
    assert pss.pod_template("example.com/v1", "Deployment", {"spec": {"template": {}}}) is None


@pytest.mark.parametrize(
    ("labels", "level"),
    [({}, None), ({pss.ENFORCE_LABEL: "baseline"}, "baseline"), ({pss.ENFORCE_LABEL: "Restricted!"}, "restricted")],
    ids=["unlabelled", "baseline", "unparseable-is-restricted"],
)
def test_enforce_level_of_a_namespace(labels: dict[str, str], level: str | None) -> None:
    assert pss.enforce_level({"kind": "Namespace", "metadata": {"name": "n", "labels": labels}}) == level


def test_a_namespace_without_a_label_enforces_the_default() -> None:
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d", "namespace": "n"},
          "spec": {"template": {"spec": pod(at_pod(hostNetwork=True))}}}  # fmt: skip
    assert pss.template_violations([ds], {"n": None}) == []
    assert pss.template_violations([ds], {"n": None}, default_level="baseline") == [
        "DaemonSet n/d (enforce baseline): hostNamespaces: pod sets spec.hostNetwork=true"
    ]


# -- our plans ----------------------------------------------------------------------------------------------------


def test_every_namespace_we_create_sets_an_enforce_level(plan: Plan) -> None:
    levels = pss.namespace_levels(plan.manifests)
    assert set(WORKLOAD_NAMESPACES) - {"gpu-warmup"} <= set(levels), levels
    unlabelled = sorted(ns for ns, level in levels.items() if level is None)
    assert unlabelled == [], f"Namespaces without {pss.ENFORCE_LABEL} (the cluster default applies): {unlabelled}"


def test_our_workload_namespaces_enforce_restricted(plan: Plan) -> None:
    levels = pss.namespace_levels(plan.manifests)
    weaker = {ns: levels[ns] for ns in WORKLOAD_NAMESPACES if ns in levels and levels[ns] != pss.RESTRICTED}
    assert weaker == {}, f"workload namespaces must enforce restricted: {weaker}"


def test_every_pod_we_render_meets_its_namespace_enforce_level(plan: Plan) -> None:
    manifests = plan.manifests
    assert pss.template_violations(manifests, pss.namespace_levels(manifests)) == []


def test_every_pod_in_our_workload_namespaces_meets_restricted(plan: Plan) -> None:
    """Whatever the labels say: these pods are ours, and nothing in them needs privileges."""
    templates = [t for t in pss.pod_templates(plan.manifests) if t.namespace in WORKLOAD_NAMESPACES]
    assert {"inference", "batch", "gpu-warmup"} <= {t.namespace for t in templates}
    found = [f"{t.address}: {v}" for t in templates for v in pss.violations(t.spec, pss.RESTRICTED, t.metadata)]
    assert found == []


def chart_pod_violations(plan: Plan, rendering: render.Rendering) -> list[str]:
    """Chart pods judged at the enforce level of the namespace they land in (the release's, unless they name one)."""
    levels = pss.namespace_levels(plan.manifests)
    found = []
    for rendered in rendering.releases.values():
        found += pss.template_violations(rendered.objects, levels, namespace=rendered.release.namespace)
    return found


def test_chart_pods_meet_their_namespace_enforce_level(plan: Plan) -> None:
    rendering = render.render(plan.resources, plan.settings.cluster.version, helm_or_skip())
    assert any(pss.pod_templates(r.objects) for r in rendering.releases.values())
    assert chart_pod_violations(plan, rendering) == []
