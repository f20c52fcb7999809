"""`python -m workloads.batch`: one Job's worth of SQS messages, configured by environment variables.

QUEUE_URL, RESULTS_BUCKET (required); RESULTS_PREFIX (results/), BATCH_SIZE
(1..10, 10), MAX_MESSAGES (10), WAIT_TIME_S (0..20, 5), VISIBILITY_TIMEOUT_S
(300), AWS_REGION, MODEL_PATH (the server's default model when unset).
Exit 0 after the run (a summary line on stdout), 2 on bad settings.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping

from workloads.batch.worker import Worker, WorkerConfig, install_sigterm


class SettingsError(ValueError):
    pass


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise SettingsError(f"{name} must be an integer {low}..{high} (got {raw!r})")
    return value


def config_from_env(env: Mapping[str, str]) -> WorkerConfig:
    missing = [name for name in ("QUEUE_URL", "RESULTS_BUCKET") if not env.get(name)]
    if missing:
        raise SettingsError(f"{' and '.join(missing)} must be set")
    queue_url = env["QUEUE_URL"]
    if not queue_url.startswith("https://"):
        raise SettingsError(f"QUEUE_URL must be an https:// SQS queue URL (got {queue_url!r})")
    return WorkerConfig(
        queue_url=queue_url,
        bucket=env["RESULTS_BUCKET"],
        prefix=env.get("RESULTS_PREFIX", "results/"),
        batch_size=_int(env, "BATCH_SIZE", 10, 1, 10),
        max_messages=_int(env, "MAX_MESSAGES", 10, 1, 100_000),
        wait_time_s=_int(env, "WAIT_TIME_S", 5, 0, 20),
        visibility_timeout_s=_int(env, "VISIBILITY_TIMEOUT_S", 300, 0, 43_200),
        model_name=env.get("MODEL_NAME", "default"),
    )


def main(env: Mapping[str, str] | None = None, clients: tuple | None = None, handler=None) -> int:
    env = os.environ if env is None else env
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        config = config_from_env(env)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if clients is None:
        import boto3

        region = env.get("AWS_REGION")
        clients = (boto3.client("sqs", region_name=region), boto3.client("s3", region_name=region))
    if handler is None:
        from workloads.model import load_model

        handler = load_model(env.get("MODEL_PATH") or None).predict
    worker = Worker(clients[0], clients[1], handler, config)
    install_sigterm(worker)
    stats = worker.run()
    print(json.dumps({"run": stats.as_dict()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
