"""KEDA HTTP add-on: the wake-up path of InferenceServices that scale to zero.

At zero replicas no pod reports requests in flight, so the Prometheus trigger
cannot start the first replica. The add-on's interceptor proxy receives the
requests of such a service, holds them while its first replica starts, and
reports how many wait to KEDA through the add-on's external scaler. The
service's own ScaledObject carries that as a second trigger (`external-push`)
next to in-flight; the add-on is told not to create a ScaledObject of its own
(an annotation on each HTTPScaledObject), so one ScaledObject keeps both
triggers and the configured HPA behaviour.

Everything runs on the system nodes, interceptors included: on a Karpenter
pool they would keep a node up at all times, and an idle stack is meant to hold
no pool node. Services that scale to zero carry little traffic by nature; a busy
one keeps `minReplicas >= 1` and is called directly, not through the interceptor.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from domain import contract, versions
from infra import keda
from infra.helm import pinned_release

# The chart names its Services `<chart name>-<component>`, whatever the release is called.
CHART_NAME = versions.KEDA_HTTP_ADD_ON.chart
NAMESPACE = keda.NAMESPACE
PROXY_PORT = 8080
NON_ROOT_USER = 65532
SCALER_PORT = 9090
# Where clients of a scale-to-zero service send requests, with `Host: <service>.<namespace>`.
INTERCEPTOR_PROXY = f"{CHART_NAME}-interceptor-proxy.{NAMESPACE}.svc.cluster.local:{PROXY_PORT}"
# What KEDA's external-push trigger dials (the address the add-on's operator would use itself).
EXTERNAL_SCALER = f"{CHART_NAME}-external-scaler.{NAMESPACE}:{SCALER_PORT}"
SKIP_SCALED_OBJECT_ANNOTATION = "httpscaledobject.keda.sh/skip-scaledobject-creation"
# The labels the chart gives interceptor pods (templates/interceptor/deployment.yaml):
# services that wake through the interceptor let these pods in.
INTERCEPTOR_POD_LABELS = {"app.kubernetes.io/component": "interceptor", "app.kubernetes.io/name": "http-add-on"}


PROXY_SERVICE = f"{CHART_NAME}-interceptor-proxy"
# The interceptor's admin port (chart value interceptor.admin.port): /readyz turns 503 when it drains.
ADMIN_PORT = 9090
# The chart's defaults (values.yaml: shutdownDelay 5s, drainTimeout 30s).
SHUTDOWN_DELAY_SECONDS = 5
DRAIN_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class KedaHttpAddOnArgs:
    depends_on: list[pulumi.Resource]  # KEDA itself: the add-on's ScaledObjects need its CRDs
    # On SIGTERM an interceptor keeps accepting for the shutdown delay (until nobody routes to it:
    # longer behind a load balancer), then lets held and in-flight requests finish within the drain
    # timeout: at least the longest wake-up it may be holding a request through.
    shutdown_delay_seconds: int = SHUTDOWN_DELAY_SECONDS
    drain_timeout_seconds: int = DRAIN_TIMEOUT_SECONDS

    @property
    def grace_period_seconds(self) -> int:
        return self.shutdown_delay_seconds + self.drain_timeout_seconds + 10


def helm_values(args: KedaHttpAddOnArgs | None = None) -> dict:
    drain = args or KedaHttpAddOnArgs(depends_on=[])
    system = {
        "nodeSelector": {contract.OS_LABEL: "linux", **contract.SYSTEM_LABELS},
        "tolerations": contract.system_tolerations(),
    }
    # The chart defaults to `Always` pulls of its appVersion; pin the tag and pull once.
    pull = {"pullPolicy": "IfNotPresent"}
    # Smaller than the chart's 250m each: they share two small system nodes with the
    # other add-ons, and only wake-ups and low-traffic services pass through.
    small = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    return {
        "images": {"tag": versions.KEDA_HTTP_ADD_ON_VERSION},
        # The chart sets no pod-level non-root or seccomp settings; the namespace enforces
        # Pod Security `restricted`. 65532 is the non-root user of the add-on's ko-built images.
        "podSecurityContext": {
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_USER,
            "runAsGroup": NON_ROOT_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "operator": {**pull, **system, "resources": small},
        "scaler": {**pull, **system, "replicas": 2, "resources": small},
        "interceptor": {
            **pull,
            **system,
            # Two at least, so a node drain never cuts the wake-up path; the chart's own
            # ScaledObject adds more under load, bounded to what the system nodes hold.
            "replicas": {"min": 2, "max": 6},
            # Request bodies of inference calls pass through: more memory than the chart's 64Mi limit.
            "resources": small,
            # interceptor/main.go (v0.15.0): readiness 503, wait the shutdown delay, close the
            # listener, drain; the kubelet's grace period must cover both.
            "shutdownDelay": f"{drain.shutdown_delay_seconds}s",
            "drainTimeout": f"{drain.drain_timeout_seconds}s",
            "terminationGracePeriodSeconds": drain.grace_period_seconds,
        },
    }


class KedaHttpAddOn(pulumi.ComponentResource):
    def __init__(self, name: str, args: KedaHttpAddOnArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:keda:HttpAddOn", name, None, opts)
        self.release = pinned_release(
            f"{name}-release",
            versions.KEDA_HTTP_ADD_ON,
            name=CHART_NAME,
            namespace=NAMESPACE,
            values=helm_values(args),
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.register_outputs({"interceptorProxy": INTERCEPTOR_PROXY})
