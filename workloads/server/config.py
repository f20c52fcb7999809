"""Server settings: environment variables, optionally overridden by command-line flags.

Every setting has an environment variable (what a Kubernetes pod spec sets) and a
flag of the same name (what a person at a shell types). Values are checked once
at start-up; an error names the variable, the value and what is allowed.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_MODEL_NAME = "mlp-default"


class ConfigError(ValueError):
    """A setting is malformed or out of range."""


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    help: str
    parse: Callable[[str, str], Any]


def _int(minimum: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer >= {minimum} (got {raw!r})") from None
        if value < minimum:
            raise ConfigError(f"{name} must be an integer >= {minimum} (got {raw!r})")
        return value

    return parse


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number >= 0 (got {raw!r})") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a number >= 0 (got {raw!r})")
    return value


def _positive_seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number > 0 (got {raw!r})") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a number > 0 (got {raw!r})")
    return value


def _port(name: str, raw: str) -> int:
    value = _int(0)(name, raw)
    if value > 65535:
        raise ConfigError(f"{name} must be a port number 0-65535, 0 picks a free port (got {raw!r})")
    return value


def _text(name: str, raw: str) -> str:
    return raw.strip()


SETTINGS: dict[str, Setting] = {
    "host": Setting("HOST", "0.0.0.0", "address to listen on", _text),
    "port": Setting("PORT", "8080", "port to listen on (0: any free port, printed at start)", _port),
    "model_path": Setting("MODEL_PATH", "", "ONNX model file; empty: build the default MLP", _text),
    "model_name": Setting("MODEL_NAME", "", "name reported in responses; empty: the model file's stem", _text),
    "max_batch_size": Setting("MAX_BATCH_SIZE", "32", "most input rows in one model call (1: no batching)", _int(1)),
    "max_wait_ms": Setting("MAX_WAIT_MS", "5", "longest wait for a batch to fill, after its first request", _seconds),
    "max_queue": Setting("MAX_QUEUE", "128", "requests waiting for a batch before new ones get 429", _int(1)),
    "max_body_bytes": Setting("MAX_BODY_BYTES", "1048576", "largest request body; larger gets 413", _int(1)),
    "header_timeout_s": Setting(
        "HEADER_TIMEOUT_S",
        "10",
        "longest time for a request's headers to arrive (from the connection's accept, or a later "
        "request's first byte); past it the connection is closed (after a 408 where one can be sent)",
        _positive_seconds,
    ),
    "body_timeout_s": Setting(
        "BODY_TIMEOUT_S",
        "30",
        "longest time for a request's whole body to arrive after its headers; past it 408 and close",
        _positive_seconds,
    ),
    "backlog": Setting(
        "BACKLOG",
        "2048",
        "listen backlog: connections the kernel queues before they are accepted (capped by net.core.somaxconn)",
        _int(1),
    ),
    "drain_timeout_s": Setting(
        "DRAIN_TIMEOUT_S", "30", "after SIGTERM, longest wait for accepted requests to finish", _seconds
    ),
    "keepalive_drain_s": Setting(
        "KEEPALIVE_DRAIN_S",
        "2",
        "after the drain, longest wait for keep-alive connections to send one more request "
        "(answered 503 + Connection: close) before idle ones are closed; counted within DRAIN_TIMEOUT_S",
        _seconds,
    ),
    "term_grace_s": Setting(
        "TERM_GRACE_S",
        "0",
        "after SIGTERM, seconds still accepting new requests (readiness already false); "
        "0 when the pod's preStop hook already waits for endpoint removal",
        _seconds,
    ),
    "extra_batch_latency_ms": Setting(
        "EXTRA_BATCH_LATENCY_MS",
        "0",
        "added to every model call to emulate a heavier model (demos, benchmark, tests); 0 in production",
        _seconds,
    ),
}


@dataclass(frozen=True)
class ServerConfig:
    # No defaults here: SETTINGS holds them, so they exist in one place only.
    host: str
    port: int
    model_path: str
    model_name: str
    max_batch_size: int
    max_wait_ms: float
    max_queue: int
    max_body_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    backlog: int
    drain_timeout_s: float
    keepalive_drain_s: float
    term_grace_s: float
    extra_batch_latency_ms: float

    @classmethod
    def defaults(cls, **changes: Any) -> ServerConfig:
        """The built-in defaults (no environment), with `changes` applied."""
        return replace(cls.from_sources({}), **changes)

    @property
    def display_model_name(self) -> str:
        if self.model_name:
            return self.model_name
        return Path(self.model_path).stem if self.model_path else DEFAULT_MODEL_NAME

    @classmethod
    def from_sources(cls, env: Mapping[str, str], overrides: Mapping[str, str | None] | None = None) -> ServerConfig:
        """Parse settings from `env` (environment variables), then `overrides` (flags, by field name)."""
        overrides = overrides or {}
        values: dict[str, Any] = {}
        for field in fields(cls):
            setting = SETTINGS[field.name]
            flag = overrides.get(field.name)
            if flag is not None:
                values[field.name] = setting.parse(f"--{field.name.replace('_', '-')}", flag)
            else:
                values[field.name] = setting.parse(setting.env, env.get(setting.env, setting.default))
        return cls(**values)


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> ServerConfig:
    """The command line of `python -m workloads.server`; exits 2 with a message on a bad setting."""
    parser = argparse.ArgumentParser(
        prog="python -m workloads.server",
        description="Reference inference server with dynamic micro-batching. "
        "Every flag defaults to its environment variable, then to the built-in default.",
    )
    for name, setting in SETTINGS.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            metavar=setting.env,
            help=f"{setting.help} (env {setting.env}, default {setting.default!r})",
        )
    args = parser.parse_args(argv)
    try:
        return ServerConfig.from_sources(env, vars(args))
    except ConfigError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
