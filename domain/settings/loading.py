"""From a stack's config (a `Pulumi.<stack>.yaml` block, or the running engine's) to `Settings`.

The only reader of `pulumi.Config`: `load()` is called once, by `__main__.py`,
before any resource is registered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from domain.settings.errors import ConfigError
from domain.settings.patterns import PROJECT
from domain.settings.stack import Settings

# Config keys as they appear in Pulumi.<stack>.yaml -> field in `Settings`.
CONFIG_KEYS: dict[str, str] = {
    f"{PROJECT}:environment": "environment",
    f"{PROJECT}:tags": "tags",
    f"{PROJECT}:network": "network",
    f"{PROJECT}:cluster": "cluster",
    f"{PROJECT}:karpenter": "karpenter",
    f"{PROJECT}:nodePools": "nodePools",
    f"{PROJECT}:monitoring": "monitoring",
    f"{PROJECT}:inference": "inference",
    f"{PROJECT}:batchJobs": "batchJobs",
    f"{PROJECT}:loadGenerator": "loadGenerator",
    f"{PROJECT}:ingress": "ingress",
    "aws:region": "region",
}
# Keys other namespaces may hold without our say (providers read their own).
FOREIGN_NAMESPACES = ("aws", "kubernetes", "pulumi")


def raw_from_stack_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Map `Pulumi.<stack>.yaml`'s `config:` block to `Settings.from_raw` input.

    Unknown keys in our namespace are errors (a misspelt `nodePool` must not be
    silently ignored); keys of provider namespaces are left to the providers.
    """
    raw: dict[str, Any] = {}
    unknown: list[str] = []
    secrets = secret_config_keys(config)
    for key, value in config.items():
        if key in CONFIG_KEYS:
            raw[CONFIG_KEYS[key]] = value
        elif key in secrets:
            continue  # read by the program as a Pulumi secret (infra/mapping.py), never by the settings
        elif key.split(":", 1)[0] not in FOREIGN_NAMESPACES:
            unknown.append(key)
    if unknown:
        allowed = ", ".join(k for k in CONFIG_KEYS)
        raise ConfigError([f"{k} is not a known config key (allowed: {allowed})" for k in sorted(unknown)])
    return raw


def secret_config_keys(config: Mapping[str, Any]) -> set[str]:
    """`gpu-inference:<name>` for every name an inference service's `envSecrets`, an alert
    receiver's `webhookSecret` or the OIDC `clientSecret` of `ingress.auth` refers to."""
    services = config.get(f"{PROJECT}:inference")
    found: set[str] = set()
    for svc in services.values() if isinstance(services, Mapping) else ():
        secrets = svc.get("envSecrets") if isinstance(svc, Mapping) else None
        if isinstance(secrets, Mapping):
            found.update(f"{PROJECT}:{name}" for name in secrets.values() if isinstance(name, str))
    # monitoring.alerting.receivers.<name>.webhookSecret: the webhook URL of a receiver.
    monitoring = config.get(f"{PROJECT}:monitoring")
    alerting = monitoring.get("alerting") if isinstance(monitoring, Mapping) else None
    receivers = alerting.get("receivers") if isinstance(alerting, Mapping) else None
    for receiver in receivers.values() if isinstance(receivers, Mapping) else ():
        name = receiver.get("webhookSecret") if isinstance(receiver, Mapping) else None
        if isinstance(name, str):
            found.add(f"{PROJECT}:{name}")
    # ingress.auth.oidc.clientSecret: the OIDC client secret of the load balancer's listener.
    ingress = config.get(f"{PROJECT}:ingress")
    auth = ingress.get("auth") if isinstance(ingress, Mapping) else None
    oidc = auth.get("oidc") if isinstance(auth, Mapping) else None
    name = oidc.get("clientSecret") if isinstance(oidc, Mapping) else None
    if isinstance(name, str):
        found.add(f"{PROJECT}:{name}")
    return found


def load() -> Settings:
    """Read the running stack's config through pulumi and validate it."""
    from pulumi.runtime import config as runtime_config

    known = dict(runtime_config.get_config_env())
    known.update(runtime_config.CONFIG.get())
    parsed = {key: _maybe_json(value) for key, value in known.items()}
    return Settings.from_raw(raw_from_stack_config(parsed))


def _maybe_json(value: Any) -> Any:
    """Pulumi hands structured config over as JSON text; plain strings stay strings."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    return value
