"""Run the real `__main__.py` (or any function) under recording mocks."""

from __future__ import annotations

import asyncio
import gc
import json
import runpy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from domain import settings as stack_settings
from tools.plan.mocks import SECRET, Recorded, RecordingMocks, RecordingMonitor

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "__main__.py"


def read_stack_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """(config, secret keys) of a `Pulumi.<stack>.yaml`.

    `secure:` values can only be decrypted by the Pulumi CLI: they become a
    placeholder that stays marked secret, and their keys are returned.
    """
    import yaml

    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise stack_settings.ConfigError([f"stack config file {path} does not exist"]) from None
    except yaml.YAMLError as exc:
        raise stack_settings.ConfigError([f"{path} is not valid YAML: {exc}"]) from None
    if not isinstance(document, dict) or not isinstance(document.get("config") or {}, dict):
        raise stack_settings.ConfigError([f"{path} must be a mapping with a `config:` mapping"])
    config = dict(document.get("config") or {})
    secret_keys = sorted(k for k, v in config.items() if isinstance(v, dict) and set(v) == {"secure"})
    for key in secret_keys:
        config[key] = SECRET
    return config, secret_keys


def record(
    fn: Callable[[], Any],
    *,
    stack: str,
    region: str,
    config: Mapping[str, Any] | None = None,
    secret_keys: list[str] | None = None,
) -> list[Recorded]:
    """Run `fn` as a Pulumi program under recording mocks; every registered resource, in order."""
    _ensure_event_loop()
    runtime_config.set_all_config(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in (config or {}).items()}, secret_keys or []
    )
    # A fresh root stack per run, so one process can run several programs (tests do).
    pulumi_settings.ROOT.set(None)
    mocks = RecordingMocks(region=region)
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=stack_settings.PROJECT, stack=stack, preview=False, monitor=monitor)
    # The SDKs define thousands of typed classes on first import and a run allocates
    # many small objects that live until it ends: the cyclic GC only costs time here
    # (about 40% of a plan). It is back on when the run returns.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _sync_await(run_pulumi_func(fn))
    finally:
        if was_enabled:
            gc.enable()
    return monitor.recorded


def _ensure_event_loop() -> None:
    """Pulumi's runner uses the thread's current event loop; `asyncio.run` elsewhere in
    the same process (a test, an embedding tool) leaves none behind, or a closed one."""
    try:
        if not asyncio.get_event_loop_policy().get_event_loop().is_closed():
            return
    except RuntimeError:
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())


def run_program(
    config: Mapping[str, Any], stack: str, secret_keys: list[str] | None = None
) -> tuple[stack_settings.Settings, list[Recorded]]:
    """Validate settings (raising ConfigError before anything runs), then run `__main__.py`."""
    settings = stack_settings.Settings.from_raw(stack_settings.raw_from_stack_config(config))
    recorded = record(
        lambda: runpy.run_path(str(PROGRAM), run_name="__main__"),
        stack=stack,
        region=settings.region,
        config=config,
        secret_keys=secret_keys,
    )
    return settings, recorded
