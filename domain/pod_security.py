"""Pod Security Standards (`baseline`, `restricted`) over plain manifests, as admission applies them.

Read from kubernetes/pod-security-admission tag v0.36.2 (`policy/check_*.go`,
`api/helpers.go`) and kubernetes.io/docs/concepts/security/pod-security-standards.
The checks follow the newest policy version there (what `enforce-version: latest`
means on a 1.35/1.36 cluster): `hostUsers: false` relaxes runAsNonRoot, runAsUser
and the baseline procMount check (1.35+), and probe/lifecycle hosts are checked
(1.34+). On 1.32/1.33 a pod with `hostUsers: false` would be judged more strictly
and probe hosts not at all; none of our pods sets either.

Pure data in, messages out: no Pulumi, so the policy pack, the tests and any
renderer of chart output can share it. Props may be the camelCase inputs of a
Pulumi resource or a manifest read from YAML; both have the same shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"

# check_capabilities_baseline.go: the container runtimes' default set, less NET_RAW.
BASELINE_CAPABILITIES = frozenset(
    {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP"}
    | {"SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
)
# check_sysctls.go (1.32+ list): namespaced sysctls isolated from other pods.
SAFE_SYSCTLS = frozenset(
    {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies"}
    | {"net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ip_local_reserved_ports"}
    | {"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl"}
    | {"net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}
)
# check_seLinuxOptions.go (1.31+); "" is an unset type.
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
# check_restrictedVolumes.go: the only inline volume sources `restricted` admits.
RESTRICTED_VOLUME_SOURCES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim", "projected"}
    | {"secret"}
)
SECURE_PROFILES = ("RuntimeDefault", "Localhost")  # seccomp and AppArmor profile types that keep confinement
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"

Spec = Mapping[str, Any]
Meta = Mapping[str, Any]


# -- reading the spec ---------------------------------------------------------------------------------------------


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _containers(spec: Spec) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(label, container) for init, regular and ephemeral containers: admission checks all three."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            yield f'container "{_map(c).get("name", "?")}"', _map(c)


def _context(container: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(container.get("securityContext"))


def _pod_context(spec: Spec) -> Mapping[str, Any]:
    return _map(spec.get("securityContext"))


def _is(value: Any, wanted: bool) -> bool:
    return value is wanted or (isinstance(value, str) and value.lower() == str(wanted).lower())


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _bad_profile(context: Mapping[str, Any], key: str) -> str | None:
    """The type of a seccomp/AppArmor profile that is set but not confining, repr'd; None if unset or secure."""
    if context.get(key) is None:
        return None
    kind = _map(context.get(key)).get("type")
    return None if kind in SECURE_PROFILES else repr(kind)


def _windows(spec: Spec) -> bool:
    # Checks that Windows cannot honour are skipped for pods that declare spec.os.name=windows (1.25+).
    return _map(spec.get("os")).get("name") == "windows"


def _user_namespace(spec: Spec) -> bool:
    return _is(spec.get("hostUsers"), False)


# -- baseline -----------------------------------------------------------------------------------------------------

Check = Callable[[Meta, Spec], Iterable[str]]


def _host_namespaces(_: Meta, spec: Spec) -> Iterator[str]:
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if _is(spec.get(field), True):
            yield f"pod sets spec.{field}=true"


def _privileged(_: Meta, spec: Spec) -> Iterator[str]:
    for who, c in _containers(spec):
        if _is(_context(c).get("privileged"), True):
            yield f"{who} sets securityContext.privileged=true"


def _capabilities_baseline(_: Meta, spec: Spec) -> Iterator[str]:
    for who, c in _containers(spec):
        extra = sorted(set(_map(_context(c).get("capabilities")).get("add") or []) - BASELINE_CAPABILITIES)
        if extra:
            yield f"{who} adds {extra} in securityContext.capabilities.add, beyond the baseline default set"


def _host_path_volumes(_: Meta, spec: Spec) -> Iterator[str]:
    for v in spec.get("volumes") or []:
        if _map(v).get("hostPath") is not None:
            yield f'volume "{_map(v).get("name")}" uses spec.volumes[].hostPath'


def _host_ports(_: Meta, spec: Spec) -> Iterator[str]:
    for who, c in _containers(spec):
        ports = sorted({p for p in (_int(_map(p).get("hostPort") or 0) for p in c.get("ports") or []) if p})
        if ports:
            yield f"{who} sets ports[].hostPort {ports}"


def _app_armor(meta: Meta, spec: Spec) -> Iterator[str]:
    yield from _bad_profiles(spec, "appArmorProfile")
    # The beta annotations still count: empty, runtime/default and localhost/* keep confinement.
    for key, value in sorted(_map(meta.get("annotations")).items()):
        ok = not value or value == "runtime/default" or str(value).startswith("localhost/")
        if key.startswith(APPARMOR_ANNOTATION) and not ok:
            yield f"pod annotation metadata.annotations[{key!r}]={value!r} overrides the AppArmor profile"


def _se_linux(_: Meta, spec: Spec) -> Iterator[str]:
    setters = [("pod", "spec.securityContext", _pod_context(spec))]
    setters += [(who, "securityContext", _context(c)) for who, c in _containers(spec)]
    for who, where, context in setters:
        options = _map(context.get("seLinuxOptions"))
        if options.get("type", "") not in SELINUX_TYPES:
            yield f"{who} sets {where}.seLinuxOptions.type={options.get('type')!r}"
        for field in ("user", "role"):
            if options.get(field):
                yield f"{who} sets {where}.seLinuxOptions.{field}={options.get(field)!r}"


def _proc_mount_restricted(_: Meta, spec: Spec) -> Iterator[str]:
    for who, c in _containers(spec):
        value = _context(c).get("procMount")
        if value is not None and value != "Default":
            yield f"{who} sets securityContext.procMount={value!r}"


def _proc_mount_baseline(meta: Meta, spec: Spec) -> Iterable[str]:
    # Baseline lets a pod in its own user namespace unmask /proc (1.35+); restricted never does.
    return () if _user_namespace(spec) else _proc_mount_restricted(meta, spec)


def _bad_profiles(spec: Spec, key: str) -> Iterator[str]:
    bad = _bad_profile(_pod_context(spec), key)
    if bad:
        yield f"pod sets spec.securityContext.{key}.type={bad}"
    for who, c in _containers(spec):
        bad = _bad_profile(_context(c), key)
        if bad:
            yield f"{who} sets securityContext.{key}.type={bad}"


def _seccomp_baseline(_: Meta, spec: Spec) -> Iterator[str]:
    yield from _bad_profiles(spec, "seccompProfile")


def _sysctls(_: Meta, spec: Spec) -> Iterator[str]:
    for s in _pod_context(spec).get("sysctls") or []:
        if _map(s).get("name") not in SAFE_SYSCTLS:
            yield f"pod sets spec.securityContext.sysctls[] {_map(s).get('name')!r}, which is not a safe sysctl"


def _host_probes(_: Meta, spec: Spec) -> Iterator[str]:
    for who, c in _containers(spec):
        handlers = [(f"{p}.", _map(c.get(p))) for p in ("livenessProbe", "readinessProbe", "startupProbe")]
        handlers += [(f"lifecycle.{h}.", _map(_map(c.get("lifecycle")).get(h))) for h in ("postStart", "preStop")]
        for where, handler in handlers:
            for kind in ("httpGet", "tcpSocket"):
                host = _map(handler.get(kind)).get("host")
                if host:
                    yield f"{who} sets {where}{kind}.host={host!r}"


def _windows_host_process(_: Meta, spec: Spec) -> Iterator[str]:
    if _is(_map(_pod_context(spec).get("windowsOptions")).get("hostProcess"), True):
        yield "pod sets spec.securityContext.windowsOptions.hostProcess=true"
    for who, c in _containers(spec):
        if _is(_map(_context(c).get("windowsOptions")).get("hostProcess"), True):
            yield f"{who} sets securityContext.windowsOptions.hostProcess=true"


# -- restricted ---------------------------------------------------------------------------------------------------


def _volume_types(_: Meta, spec: Spec) -> Iterator[str]:
    for v in spec.get("volumes") or []:
        sources = sorted(k for k, value in _map(v).items() if k != "name" and value is not None)
        # A volume with no source at all is defaulted to emptyDir by the API server.
        bad = [s for s in sources if s not in RESTRICTED_VOLUME_SOURCES]
        if bad:
            yield f'volume "{_map(v).get("name")}" uses spec.volumes[].{bad[0]}, which restricted does not allow'


def _privilege_escalation(_: Meta, spec: Spec) -> Iterator[str]:
    if _windows(spec):
        return
    for who, c in _containers(spec):
        value = _context(c).get("allowPrivilegeEscalation")
        if not _is(value, False):
            got = "unset" if value is None else repr(value)
            yield f"{who} must set securityContext.allowPrivilegeEscalation=false (got {got})"


def _capabilities_restricted(_: Meta, spec: Spec) -> Iterator[str]:
    if _windows(spec):
        return
    for who, c in _containers(spec):
        capabilities = _map(_context(c).get("capabilities"))
        if "ALL" not in (capabilities.get("drop") or []):
            yield f'{who} must set securityContext.capabilities.drop=["ALL"]'
        extra = sorted(set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"})
        if extra:
            yield f"{who} adds {extra} in securityContext.capabilities.add; restricted allows only NET_BIND_SERVICE"


def _seccomp_restricted(meta: Meta, spec: Spec) -> Iterable[str]:
    if _windows(spec):
        return []
    explicit = list(_seccomp_baseline(meta, spec))
    if explicit:
        return explicit
    # A secure pod-level profile covers every container that sets none of its own.
    if _map(_pod_context(spec).get("seccompProfile")).get("type") in SECURE_PROFILES:
        return []
    return [
        f"{who} sets no securityContext.seccompProfile.type and neither does the pod"
        f" (spec.securityContext.seccompProfile.type must be one of {list(SECURE_PROFILES)})"
        for who, c in _containers(spec)
        if _context(c).get("seccompProfile") is None
    ]


def _run_as_non_root(_: Meta, spec: Spec) -> list[str]:
    if _user_namespace(spec):  # root inside a user namespace maps to an unprivileged host user (1.35+)
        return []
    pod = _pod_context(spec).get("runAsNonRoot")
    explicit = ["pod sets spec.securityContext.runAsNonRoot=false"] if _is(pod, False) else []
    explicit += [
        f"{who} sets securityContext.runAsNonRoot=false"
        for who, c in _containers(spec)
        if _is(_context(c).get("runAsNonRoot"), False)
    ]
    if explicit or _is(pod, True):  # as upstream: an explicit false is the message, not the unset ones too
        return explicit
    return [
        f"{who} must set securityContext.runAsNonRoot=true (or the pod spec.securityContext.runAsNonRoot=true)"
        for who, c in _containers(spec)
        if not _is(_context(c).get("runAsNonRoot"), True)
    ]


def _run_as_user(_: Meta, spec: Spec) -> Iterator[str]:
    if _user_namespace(spec):
        return
    if _int(_pod_context(spec).get("runAsUser")) == 0:
        yield "pod sets spec.securityContext.runAsUser=0"
    for who, c in _containers(spec):
        if _int(_context(c).get("runAsUser")) == 0:
            yield f"{who} sets securityContext.runAsUser=0"


@dataclass(frozen=True)
class _Check:
    id: str
    level: str
    run: Check
    overrides: tuple[str, ...] = ()  # baseline checks this stricter check replaces at `restricted`


CHECKS = (
    _Check("hostNamespaces", BASELINE, _host_namespaces),
    _Check("privileged", BASELINE, _privileged),
    _Check("capabilities_baseline", BASELINE, _capabilities_baseline),
    _Check("hostPathVolumes", BASELINE, _host_path_volumes),
    _Check("hostPorts", BASELINE, _host_ports),
    _Check("appArmorProfile", BASELINE, _app_armor),
    _Check("seLinuxOptions", BASELINE, _se_linux),
    _Check("procMount", BASELINE, _proc_mount_baseline),
    _Check("seccompProfile_baseline", BASELINE, _seccomp_baseline),
    _Check("sysctls", BASELINE, _sysctls),
    _Check("hostProbesAndHostLifecycle", BASELINE, _host_probes),
    _Check("windowsHostProcess", BASELINE, _windows_host_process),
    _Check("restrictedVolumes", RESTRICTED, _volume_types, ("hostPathVolumes",)),
    _Check("allowPrivilegeEscalation", RESTRICTED, _privilege_escalation),
    _Check("capabilities_restricted", RESTRICTED, _capabilities_restricted, ("capabilities_baseline",)),
    _Check("seccompProfile_restricted", RESTRICTED, _seccomp_restricted, ("seccompProfile_baseline",)),
    _Check("procMount_restricted", RESTRICTED, _proc_mount_restricted, ("procMount",)),
    _Check("runAsNonRoot", RESTRICTED, _run_as_non_root),
    _Check("runAsUser", RESTRICTED, _run_as_user),
)


def checks_for(level: str) -> list[_Check]:
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r} (expected one of {list(LEVELS)})")
    wanted = {PRIVILEGED: (), BASELINE: (BASELINE,), RESTRICTED: (BASELINE, RESTRICTED)}[level]
    chosen = [c for c in CHECKS if c.level in wanted]
    overridden = {o for c in chosen for o in c.overrides}
    return [c for c in chosen if c.id not in overridden]


def violations(pod_spec: Mapping[str, Any], level: str, metadata: Mapping[str, Any] | None = None) -> list[str]:
    """What keeps a pod spec from `level`, one message per field and container, each prefixed `<check id>: `.

    `metadata` is the pod (template) metadata; only its AppArmor annotations are read.
    """
    meta = _map(metadata)
    return [f"{c.id}: {message}" for c in checks_for(level) for message in c.run(meta, _map(pod_spec))]


# -- workloads and namespaces -------------------------------------------------------------------------------------

# (API group, kind) -> path to the pod template (the object that holds `metadata` and `spec`).
POD_TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): (),
    ("apps", "Deployment"): ("spec", "template"),
    ("apps", "StatefulSet"): ("spec", "template"),
    ("apps", "DaemonSet"): ("spec", "template"),
    ("apps", "ReplicaSet"): ("spec", "template"),
    ("", "ReplicationController"): ("spec", "template"),
    ("batch", "Job"): ("spec", "template"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
    # KEDA creates a Job per scale step from this template.
    ("keda.sh", "ScaledJob"): ("spec", "jobTargetRef", "template"),
}


@dataclass(frozen=True)
class PodTemplate:
    kind: str
    namespace: str | None  # None: the object names none (a chart's release namespace applies)
    name: str
    metadata: Mapping[str, Any]
    spec: Mapping[str, Any]

    @property
    def address(self) -> str:
        return f"{self.kind} {self.namespace or '(release namespace)'}/{self.name}"


def api_group(api_version: str) -> str:
    """`apps/v1` -> `apps`; `v1` and Pulumi's `core/v1` -> `` (the core group)."""
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    return "" if group == "core" else group


def pod_template(api_version: str, kind: str, obj: Mapping[str, Any]) -> PodTemplate | None:
    """The pod template of a workload object (a Pod is its own template); None for other kinds."""
    path = POD_TEMPLATES.get((api_group(api_version), kind))
    if path is None:
        return None
    template: Any = obj
    for key in path:
        template = _map(template).get(key)
    meta, template = _map(obj.get("metadata")), _map(template)
    name = str(meta.get("name", ""))
    return PodTemplate(kind, meta.get("namespace"), name, _map(template.get("metadata")), _map(template.get("spec")))


def pod_templates(objects: Iterable[Mapping[str, Any]]) -> list[PodTemplate]:
    """The pod templates of every workload among `objects` (manifests with apiVersion and kind)."""
    found = (pod_template(str(o.get("apiVersion", "")), str(o.get("kind", "")), o) for o in objects)
    return [t for t in found if t is not None]


def enforce_level(namespace: Mapping[str, Any]) -> str | None:
    """The level a Namespace manifest enforces; None when it sets no label (the cluster default applies).

    Admission reads an unparseable level as `restricted` (api/helpers.go PolicyToEvaluate).
    """
    labels = _map(_map(namespace.get("metadata")).get("labels"))
    if ENFORCE_LABEL not in labels:
        return None
    value = labels[ENFORCE_LABEL]
    return value if value in LEVELS else RESTRICTED


def namespace_levels(objects: Iterable[Mapping[str, Any]]) -> dict[str, str | None]:
    """Enforce level by name of every Namespace among `objects`."""
    return {
        str(_map(o.get("metadata")).get("name")): enforce_level(o)
        for o in objects
        if o.get("kind") == "Namespace" and api_group(str(o.get("apiVersion", "v1"))) == ""
    }


def template_violations(
    objects: Iterable[Mapping[str, Any]],
    levels: Mapping[str, str | None],
    namespace: str | None = None,
    default_level: str = PRIVILEGED,
) -> list[str]:
    """Every pod template among `objects` judged at the enforce level of its namespace.

    For chart output, pass the release's `namespace` for objects that name none.
    A namespace missing from `levels`, or without a label, gets `default_level`:
    EKS runs admission with `privileged` as the default, so nothing is enforced there.
    """
    found = []
    for t in pod_templates(objects):
        ns = t.namespace or namespace
        level = levels.get(ns or "default") or default_level
        found += [f"{t.kind} {ns}/{t.name} (enforce {level}): {v}" for v in violations(t.spec, level, t.metadata)]
    return found
