"""Alertmanager routing as data: receivers from the stack config, routed by severity.

Rendered as kube-prometheus-stack's `alertmanager.config` (the chart writes it
into the Alertmanager's config Secret), not as an AlertmanagerConfig custom
resource: prometheus-operator scopes an AlertmanagerConfig to its own namespace
(it adds a `namespace="<its namespace>"` matcher to every route it contributes,
`alertmanagerConfigMatcherStrategy: OnNamespace`, the default), so one in
`monitoring` would only see alerts labelled `namespace="monitoring"`, and ours
come from pods and nodes in every namespace. The chart's config is global.

Helm merges maps: `global` and `inhibit_rules` stay the chart's (critical
inhibits warning and info of the same namespace and alertname), `route` keeps
its timings, and the lists we set (`route.routes`, `receivers`) replace the
chart's. The chart's `null` receiver still takes Watchdog, InfoInhibitor and
any severity without a route.

Secrets: a webhook URL never appears in the values. Each webhook receiver reads
its URL from a file (`url_file`, Alertmanager >= 0.26) in the Secret that
`alertmanagerSpec.secrets` mounts at `/etc/alertmanager/secrets/<secret>/`
(prometheus-operator's documented mount path). SNS receivers sign with SigV4
using the pod's credentials, which EKS Pod Identity provides to the
Alertmanager service account.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

NULL_RECEIVER = "null"
WEBHOOK_SECRET = "alertmanager-webhooks"  # the Secret of webhook URLs, one key per receiver
SECRETS_MOUNT = "/etc/alertmanager/secrets"  # prometheus-operator mounts alertmanagerSpec.secrets here
SEVERITY_ORDER = ("critical", "warning", "info")


@dataclass(frozen=True)
class Receiver:
    """One receiver as rendered: its topic ARN (or None) and whether it has a webhook."""

    topic_arn: str | None
    webhook: bool
    send_resolved: bool = True


def webhook_url_file(receiver: str) -> str:
    return f"{SECRETS_MOUNT}/{WEBHOOK_SECRET}/{receiver}"


def _receiver(name: str, r: Receiver, region: str) -> dict:
    out: dict = {"name": name}
    if r.topic_arn is not None:
        out["sns_configs"] = [
            {
                "topic_arn": r.topic_arn,
                "sigv4": {"region": region},
                "send_resolved": r.send_resolved,
                "subject": "[{{ .Status | toUpper }}] {{ .CommonLabels.severity }}: {{ .CommonLabels.alertname }}",
            }
        ]
    if r.webhook:
        out["webhook_configs"] = [{"url_file": webhook_url_file(name), "send_resolved": r.send_resolved}]
    return out


def alertmanager_config(receivers: Mapping[str, Receiver], routes: Mapping[str, str], region: str) -> dict:
    """The `alertmanager.config` values: severity routes first, the chart's `null` for the rest."""
    severity_routes = [
        {"receiver": routes[severity], "matchers": [f'severity = "{severity}"']}
        for severity in SEVERITY_ORDER
        if severity in routes
    ]
    return {
        # `route.receiver` stays the chart's `null`: what no route below takes goes nowhere.
        "route": {
            "group_by": ["namespace", "alertname"],
            "routes": [
                # The chart's own: the always-firing heartbeat and the info inhibitor go nowhere.
                {"receiver": NULL_RECEIVER, "matchers": ['alertname = "Watchdog"']},
                {"receiver": NULL_RECEIVER, "matchers": ['alertname = "InfoInhibitor"']},
                *severity_routes,
            ],
        },
        "receivers": [
            {"name": NULL_RECEIVER},
            *(_receiver(name, r, region) for name, r in sorted(receivers.items())),
        ],
    }
