"""`monitoring`: Prometheus, Grafana and the DCGM exporter's sampling."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from domain.settings.base import ConfigModel
from domain.settings.patterns import PROM_DURATION, QUANTITY


class ResourceSpec(ConfigModel):
    cpu: Annotated[str, Field(pattern=QUANTITY)]
    memory: Annotated[str, Field(pattern=QUANTITY)]


class PrometheusSettings(ConfigModel):
    retention: Annotated[str, Field(pattern=PROM_DURATION)] = "15d"
    storage_gib: Annotated[int, Field(alias="storageGib", ge=10, le=16_384)] = 50
    scrape_interval: Annotated[str, Field(alias="scrapeInterval", pattern=PROM_DURATION)] = "30s"
    requests: ResourceSpec = ResourceSpec(cpu="500m", memory="2Gi")
    memory_limit: Annotated[str, Field(alias="memoryLimit", pattern=QUANTITY)] = "4Gi"


class MonitoringSettings(ConfigModel):
    prometheus: PrometheusSettings = PrometheusSettings()
    grafana_replicas: Annotated[int, Field(alias="grafanaReplicas", ge=1, le=3)] = 1
    dcgm_interval_ms: Annotated[int, Field(alias="dcgmIntervalMs", ge=100, le=60_000)] = 5000
