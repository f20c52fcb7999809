"""Monitoring: kube-prometheus-stack (Prometheus, Grafana, kube-state-metrics, node
exporter), the NVIDIA DCGM exporter on GPU nodes, our dashboards and alert rules.

Prometheus selects ServiceMonitors, PodMonitors and PrometheusRules in every
namespace, not only those labelled for this Helm release, so a workload's own
ServiceMonitor is picked up. Grafana's admin password is generated
(`random.RandomPassword`, a Pulumi secret) and handed over in a Kubernetes
Secret, never in Helm values or stack config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from domain import contract, naming, pods, versions
from infra.helm import pinned_release
from infra.identity import pod_identity_role
from infra.observability import alerting, alerts, dashboards, gpu_health

NAMESPACE = contract.MONITORING_NAMESPACE
RELEASE = "kube-prometheus-stack"
# Short, fixed object names: the Prometheus URL below depends on them.
FULLNAME = "kps"
PROMETHEUS_URL = f"http://{FULLNAME}-prometheus.{NAMESPACE}.svc.cluster.local:9090"
GRAFANA_SECRET = "grafana-admin"
# The chart's Alertmanager service account (`<fullname>-alertmanager`): Pod Identity gives it SNS.
ALERTMANAGER_SERVICE_ACCOUNT = f"{FULLNAME}-alertmanager"
# kube-prometheus-stack components that scrape what EKS does not expose. Switched off,
# the chart also drops their default rules (each rule file is gated on its component).
EKS_HIDDEN_COMPONENTS = ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy")
# Node labels kube_node_labels carries: the dashboards' and the GPU health alerts' (GpuNodeSilent).
KUBE_STATE_METRICS_NODE_LABELS = (
    *dashboards.KUBE_STATE_METRICS_NODE_LABELS,
    *gpu_health.KUBE_STATE_METRICS_NODE_LABELS,
)


@dataclass(frozen=True)
class PrometheusSpec:
    retention: str  # a Prometheus duration, e.g. "15d"
    storage_gib: int
    scrape_interval: str  # also the rule evaluation interval
    cpu_request: str
    memory_request: str
    memory_limit: str


@dataclass(frozen=True)
class ReceiverSpec:
    sns: bool  # publish to a topic this component creates
    webhook_url: pulumi.Input[str] | None = None  # a Pulumi secret; never in Helm values
    send_resolved: bool = True


@dataclass(frozen=True)
class AlertingSpec:
    receivers: Mapping[str, ReceiverSpec]
    routes: Mapping[str, str]  # severity -> receiver
    cluster_name: str  # for the Pod Identity association and topic names
    region: str  # SNS SigV4 region


@dataclass(frozen=True)
class MonitoringArgs:
    prometheus: PrometheusSpec
    grafana_replicas: int
    dcgm_interval_ms: int  # how often the DCGM exporter collects GPU counters
    storage_class: pulumi.Input[str]
    depends_on: list[pulumi.Resource]
    alerting: AlertingSpec | None = None  # None: the chart's default config (every alert to `null`)


def _on_system_nodes() -> dict:
    return {
        "nodeSelector": {contract.OS_LABEL: "linux", **contract.SYSTEM_LABELS},
        "tolerations": contract.system_tolerations(),
    }


def alertmanager_values(args: MonitoringArgs, topic_arns: Mapping[str, str]) -> dict:
    """`alertmanager` values: on the system nodes; with alerting, our routes and the webhook Secret."""
    spec: dict = {**_on_system_nodes()}
    a = args.alerting
    if a is None:
        return {"alertmanagerSpec": spec}
    receivers = {
        name: alerting.Receiver(topic_arns.get(name), r.webhook_url is not None, r.send_resolved)
        for name, r in a.receivers.items()
    }
    if any(r.webhook for r in receivers.values()):
        spec["secrets"] = [alerting.WEBHOOK_SECRET]
    return {"alertmanagerSpec": spec, "config": alerting.alertmanager_config(receivers, a.routes, a.region)}


def stack_values(args: MonitoringArgs, storage_class: str, topic_arns: Mapping[str, str] | None = None) -> dict:
    """kube-prometheus-stack's values; `storage_class` is `args.storage_class` resolved, `topic_arns`
    the alert topics' ARNs by receiver."""
    prom = args.prometheus
    label, label_value = dashboards.DASHBOARD_LABEL
    return {
        "fullnameOverride": FULLNAME,
        "prometheusOperator": {
            **_on_system_nodes(),
            # The pre-install/post-install hook Jobs that create and patch the admission
            # webhook's certificate run before anything else of the release: on a fresh
            # cluster only the tainted system nodes exist, so they must go there too.
            "admissionWebhooks": {"patch": {**_on_system_nodes()}},
        },
        # EKS runs the control plane itself and exposes none of these to the cluster:
        # their targets would stay down and their `*Down` alerts fire forever. kube-proxy
        # (the EKS add-on) serves metrics on 127.0.0.1:10249 only, so it is unreachable too.
        **{component: {"enabled": False} for component in EKS_HIDDEN_COMPONENTS},
        "prometheus": {
            "prometheusSpec": {
                **_on_system_nodes(),
                "retention": prom.retention,
                "scrapeInterval": prom.scrape_interval,
                "evaluationInterval": prom.scrape_interval,
                "resources": {
                    "requests": {"cpu": prom.cpu_request, "memory": prom.memory_request},
                    "limits": {"memory": prom.memory_limit},
                },
                # Select monitors and rules from every namespace, whatever their labels.
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "probeSelectorNilUsesHelmValues": False,
                "storageSpec": {
                    "volumeClaimTemplate": {
                        "spec": {
                            "storageClassName": storage_class,
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": f"{prom.storage_gib}Gi"}},
                        }
                    }
                },
            }
        },
        "alertmanager": alertmanager_values(args, topic_arns or {}),
        "grafana": {
            **_on_system_nodes(),
            "replicas": args.grafana_replicas,
            # The chart's `helm test` Pod: never run by the Release, and it would sit on no node.
            "testFramework": {"enabled": False},
            "admin": {"existingSecret": GRAFANA_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"},
            "sidecar": {
                "dashboards": {
                    "enabled": True,
                    "label": label,
                    "labelValue": label_value,
                    "searchNamespace": "ALL",
                }
            },
        },
        "kube-state-metrics": {
            **_on_system_nodes(),
            "metricLabelsAllowlist": [f"nodes=[{','.join(KUBE_STATE_METRICS_NODE_LABELS)}]"],
        },
        # Node exporter runs everywhere, GPU nodes included.
        "prometheus-node-exporter": {"tolerations": [{"operator": "Exists"}]},
    }


def dcgm_scrape_seconds(interval_ms: int) -> int:
    """Scrape the exporter as often as it collects, and never faster than once a second."""
    return max(interval_ms // 1000, 1)


def dcgm_values(interval_ms: int) -> dict:
    repository, tag = versions.IMAGES["dcgm-exporter"].rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag},
        "affinity": contract.gpu_node_affinity(),
        "tolerations": contract.gpu_daemon_tolerations(),
        # The chart's default counters plus the double-bit ECC and thermal-violation counters the
        # GPU health alerts read (gpu_health.COUNTERS), written into the chart's own counters
        # ConfigMap (`customMetrics`) and collected every dcgmIntervalMs. One `--flag=value`
        # string each: the chart renders every argument unquoted (`- {{ . }}`), so a bare
        # "5000" would become the integer 5000 and the API server would reject the DaemonSet.
        "arguments": [
            "--collectors=/etc/dcgm-exporter/default-counters.csv",
            f"--collect-interval={interval_ms}",
        ],
        "customMetrics": gpu_health.counters_csv(),
        # honorLabels: a GPU series keeps the namespace/pod of the workload using the GPU,
        # not those of the exporter pod that reports it.
        # prometheus-operator drops a ServiceMonitor whose scrapeTimeout exceeds its
        # interval (the chart's default timeout is 10s): the timeout follows the interval.
        "serviceMonitor": {
            "interval": f"{dcgm_scrape_seconds(interval_ms)}s",
            "scrapeTimeout": f"{dcgm_scrape_seconds(interval_ms)}s",
            "honorLabels": True,
        },
        # Label GPU series with the pod that uses the GPU (namespace, pod, container).
        "kubernetes": {"enablePodLabels": True},
        # The chart's requests and memory limit, and room above its 200m CPU limit: on an
        # 8-GPU node a throttled exporter answers scrapes late and GPU series go missing.
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
    }


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:monitoring:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # node-exporter (host network, PID namespace and filesystem) and dcgm-exporter (the
        # kubelet's pod-resources socket) need host access: the namespace admits privileged
        # pods, and audits and warns about anything below `restricted`.
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-ns", metadata={"name": NAMESPACE, "labels": pods.pod_security_labels("privileged")}, opts=child
        )
        ns_child = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        self.grafana_password = random.RandomPassword(f"{name}-grafana-password", length=32, special=False, opts=child)
        self.grafana_secret = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata={"name": GRAFANA_SECRET, "namespace": NAMESPACE},
            type="Opaque",
            string_data={"admin-user": "admin", "admin-password": pulumi.Output.secret(self.grafana_password.result)},
            opts=ns_child,
        )
        alert_deps = self._alerting(name, args, child, ns_child)
        topic_arns = {key: topic.arn for key, topic in self.alert_topics.items()}
        self.release = pinned_release(
            f"{name}-release",
            versions.KUBE_PROMETHEUS_STACK,
            name=RELEASE,
            namespace=NAMESPACE,
            values=pulumi.Output.all(args.storage_class, topic_arns).apply(lambda v: stack_values(args, v[0], v[1])),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.grafana_secret, *alert_deps, *args.depends_on]),
        )
        after_crds = pulumi.ResourceOptions(parent=self, depends_on=[self.release])
        self.dcgm = pinned_release(
            f"{name}-dcgm-exporter",
            versions.DCGM_EXPORTER,
            name="dcgm-exporter",
            namespace=NAMESPACE,
            values=dcgm_values(args.dcgm_interval_ms),
            opts=after_crds,
        )
        label, label_value = dashboards.DASHBOARD_LABEL
        self.dashboards = k8s.core.v1.ConfigMap(
            f"{name}-dashboards",
            metadata={"name": "gpu-inference-dashboards", "namespace": NAMESPACE, "labels": {label: label_value}},
            data=dashboards.config_map_data(),
            opts=ns_child,
        )
        self.rules = k8s.apiextensions.CustomResource(
            f"{name}-rules",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata={"name": "gpu-inference", "namespace": NAMESPACE},
            spec={"groups": alerts.rule_groups()},
            opts=after_crds,
        )
        self.prometheus_url = PROMETHEUS_URL
        self.alert_topic_arns = {key: topic.arn for key, topic in self.alert_topics.items()}
        self.register_outputs(
            {
                "prometheusUrl": PROMETHEUS_URL,
                "grafanaAdminPassword": pulumi.Output.secret(self.grafana_password.result),
                "alertTopicArns": self.alert_topic_arns,
            }
        )

    def _alerting(
        self, name: str, args: MonitoringArgs, child: pulumi.ResourceOptions, ns_child: pulumi.ResourceOptions
    ) -> list[pulumi.Resource]:
        """SNS topics (with Alertmanager's Pod Identity role to publish) and the webhook Secret.

        Returns what the release must wait for: the Secret it mounts and the association
        that gives its pods credentials.
        """
        self.alert_topics: dict[str, aws.sns.Topic] = {}
        a = args.alerting
        if a is None:
            return []
        deps: list[pulumi.Resource] = []
        for key, receiver in sorted(a.receivers.items()):
            if receiver.sns:
                self.alert_topics[key] = aws.sns.Topic(
                    f"{name}-alerts-{key}",
                    name=naming.bounded(f"{a.cluster_name}-alerts", f"-{key}", 256),
                    kms_master_key_id="alias/aws/sns",
                    opts=child,
                )
        if self.alert_topics:
            role, association = pod_identity_role(
                f"{name}-alertmanager",
                role_name=naming.bounded(a.cluster_name, "-alertmanager", 64),
                cluster_name=a.cluster_name,
                namespace=NAMESPACE,
                service_account=ALERTMANAGER_SERVICE_ACCOUNT,
                opts=child,
            )
            aws.iam.RolePolicy(
                f"{name}-alertmanager-sns",
                role=role.id,
                policy=pulumi.Output.all(*[t.arn for t in self.alert_topics.values()]).apply(sns_publish_policy),
                opts=child,
            )
            deps.append(association)
        webhooks = {key: r.webhook_url for key, r in sorted(a.receivers.items()) if r.webhook_url is not None}
        if webhooks:
            deps.append(
                k8s.core.v1.Secret(
                    f"{name}-alert-webhooks",
                    metadata={"name": alerting.WEBHOOK_SECRET, "namespace": NAMESPACE},
                    type="Opaque",
                    string_data={key: pulumi.Output.secret(url) for key, url in webhooks.items()},
                    opts=ns_child,
                )
            )
        return deps


def sns_publish_policy(topic_arns: list[str]) -> str:
    statement = {"Effect": "Allow", "Action": "sns:Publish", "Resource": sorted(topic_arns)}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def dashboard_names() -> list[str]:
    return sorted(json.loads(v)["title"] for v in dashboards.config_map_data().values())
