"""`monitoring`: Prometheus, Grafana, the DCGM exporter's sampling, and where alerts go."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from domain.settings.base import ConfigModel
from domain.settings.errors import field_error, raise_all
from domain.settings.patterns import DNS_LABEL, PROM_DURATION, QUANTITY

Severity = Literal["critical", "warning", "info"]
# A Pulumi config key of this project (`gpu-inference:<name>`), set with `pulumi config set --secret`.
SECRET_KEY = r"^[a-zA-Z][a-zA-Z0-9_-]{0,63}$"
# kube-prometheus-stack's own catch-all receiver (Watchdog, InfoInhibitor and unrouted alerts).
NULL_RECEIVER = "null"


class ResourceSpec(ConfigModel):
    cpu: Annotated[str, Field(pattern=QUANTITY)]
    memory: Annotated[str, Field(pattern=QUANTITY)]


class PrometheusSettings(ConfigModel):
    retention: Annotated[str, Field(pattern=PROM_DURATION)] = "15d"
    storage_gib: Annotated[int, Field(alias="storageGib", ge=10, le=16_384)] = 50
    scrape_interval: Annotated[str, Field(alias="scrapeInterval", pattern=PROM_DURATION)] = "30s"
    requests: ResourceSpec = ResourceSpec(cpu="500m", memory="2Gi")
    memory_limit: Annotated[str, Field(alias="memoryLimit", pattern=QUANTITY)] = "4Gi"


class ReceiverSettings(ConfigModel):
    """Where one receiver sends: a topic the stack creates (Alertmanager publishes through Pod
    Identity), a webhook whose URL is a Pulumi secret, or both."""

    sns: bool = False
    # The name of a secret in this stack's config holding the webhook URL (never the URL):
    # `pulumi config set --secret <name> https://...`; read as a Pulumi secret by the program.
    webhook_secret: Annotated[str | None, Field(alias="webhookSecret")] = None
    send_resolved: Annotated[bool, Field(alias="sendResolved")] = True

    @field_validator("webhook_secret")
    @classmethod
    def _a_key_not_a_url(cls, value: str | None) -> str | None:
        # Never echo the value: a URL pasted here by mistake may carry a token.
        if value is not None and not re.fullmatch(SECRET_KEY, value):
            raise PydanticCustomError(
                "secret_key",
                f"must be the name of a secret config key (matching {SECRET_KEY}), never the URL itself"
                " (value not shown)",
                {"got": "(not shown)"},  # errors.describe_all: our message already says it all
            )
        return value

    @model_validator(mode="after")
    def _somewhere(self) -> ReceiverSettings:
        if not self.sns and self.webhook_secret is None:
            raise field_error("sns", "or webhookSecret is required: a receiver must send somewhere (got {got})", {})
        return self


class AlertingSettings(ConfigModel):
    """Alertmanager receivers and which severity goes to which (kube-prometheus-stack's config)."""

    receivers: Annotated[
        dict[Annotated[str, Field(pattern=DNS_LABEL, max_length=40)], ReceiverSettings], Field(min_length=1)
    ]
    # Severity -> receiver; a severity left out goes nowhere (the chart's `null` receiver).
    routes: dict[Severity, str] = {"critical": "page", "warning": "ticket"}

    @model_validator(mode="after")
    def _routes_name_receivers(self) -> AlertingSettings:
        problems: list[PydanticCustomError] = []
        if NULL_RECEIVER in self.receivers:
            problems.append(
                field_error(
                    f"receivers.{NULL_RECEIVER}",
                    "is kube-prometheus-stack's catch-all receiver: choose another name (got {got})",
                    NULL_RECEIVER,
                )
            )
        for severity, receiver in sorted(self.routes.items()):
            if receiver not in self.receivers:
                problems.append(
                    field_error(
                        f"routes.{severity}",
                        f"must name a receiver of monitoring.alerting.receivers: one of"
                        f" {', '.join(sorted(self.receivers))} (got {{got}})",
                        receiver,
                    )
                )
        raise_all(problems)
        return self


class MonitoringSettings(ConfigModel):
    prometheus: PrometheusSettings = PrometheusSettings()
    grafana_replicas: Annotated[int, Field(alias="grafanaReplicas", ge=1, le=3)] = 1
    dcgm_interval_ms: Annotated[int, Field(alias="dcgmIntervalMs", ge=100, le=60_000)] = 5000
    # Where alerts go; None: nowhere (the chart's default config, every alert to `null`).
    alerting: AlertingSettings | None = None
