"""Process SQS messages into S3 results, at least once, losing nothing.

For each message: parse `{"id": ..., "inputs": [[...], ...]}`, run the handler,
write `s3://<bucket>/<prefix><id>.json`, and only then delete the message. A
worker that dies before the delete leaves the message on the queue: it becomes
visible again after the visibility timeout and another worker writes the same
key (the key depends only on the id, so a redelivery overwrites, never
duplicates). A message that cannot be processed (bad JSON, missing fields, a
handler ValueError) is not deleted and is made visible again at once; after the
queue's `maxReceiveCount` receives SQS moves it to the dead-letter queue.

The visibility timeout must exceed the time one message takes (ScaledJob
`visibilityTimeoutSeconds`); a message that outlives it is handed to a second
worker while the first still works on it (harmless here: same key, same result).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Handler = Callable[[list[list[float]]], list[list[float]]]
log = logging.getLogger("workloads.batch")


class PoisonMessage(ValueError):
    """The message can never succeed as it is: leave it for the dead-letter queue."""


@dataclass(frozen=True)
class WorkerConfig:
    queue_url: str
    bucket: str
    prefix: str = "results/"
    batch_size: int = 10  # messages per receive (SQS allows 1..10)
    max_messages: int = 10  # per run, then the Job ends
    wait_time_s: int = 5  # long polling; an empty receive ends the run
    visibility_timeout_s: int = 300
    model_name: str = "default"


@dataclass
class RunStats:
    processed: int = 0
    poison: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"processed": self.processed, "poison": self.poison, "failed": self.failed}


def parse(body: str) -> tuple[str, list[list[float]]]:
    try:
        message = json.loads(body)
    except json.JSONDecodeError as exc:
        raise PoisonMessage(f"body is not JSON: {exc.msg}") from None
    if not isinstance(message, dict):
        raise PoisonMessage("body must be a JSON object")
    request_id, inputs = message.get("id"), message.get("inputs")
    if not isinstance(request_id, str) or not request_id or "/" in request_id or len(request_id) > 200:
        raise PoisonMessage("id must be a non-empty string without '/' of at most 200 characters")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(row, list) for row in inputs):
        raise PoisonMessage("inputs must be a non-empty list of rows")
    return request_id, inputs


class Worker:
    def __init__(self, sqs: Any, s3: Any, handler: Handler, config: WorkerConfig) -> None:
        self.sqs, self.s3, self.handler, self.config = sqs, s3, handler, config
        self.stopping = False

    def stop(self, *_: object) -> None:
        """SIGTERM: finish the message in hand, take no other."""
        self.stopping = True

    def result_key(self, request_id: str) -> str:
        return f"{self.config.prefix}{request_id}.json"

    def run(self) -> RunStats:
        stats = RunStats()
        while not self.stopping and stats.processed + stats.poison + stats.failed < self.config.max_messages:
            wanted = min(
                self.config.batch_size, self.config.max_messages - stats.processed - stats.poison - stats.failed
            )
            answer = self.sqs.receive_message(
                QueueUrl=self.config.queue_url,
                MaxNumberOfMessages=wanted,
                WaitTimeSeconds=self.config.wait_time_s,
                VisibilityTimeout=self.config.visibility_timeout_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            messages = answer.get("Messages") or []
            if not messages:
                break  # queue drained: the Job ends, KEDA starts another when work arrives
            for index, message in enumerate(messages):
                if self.stopping:
                    self._release(messages[index:])
                    break
                self._one(message, stats)
        return stats

    def _one(self, message: dict[str, Any], stats: RunStats) -> None:
        receipt = message["ReceiptHandle"]
        receives = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", 1))
        request_id = None
        try:
            request_id, inputs = parse(message["Body"])
            try:
                outputs = self.handler(inputs)
            except ValueError as exc:
                raise PoisonMessage(str(exc)) from None
            result = {
                "id": request_id,
                "outputs": outputs,
                "model": self.config.model_name,
                "processed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            self.s3.put_object(
                Bucket=self.config.bucket,
                Key=self.result_key(request_id),
                Body=json.dumps(result).encode(),
                ContentType="application/json",
                # The bucket encrypts by default (SSE-S3); asking again fails a write to a bucket that doesn't.
                ServerSideEncryption="AES256",
            )
        except PoisonMessage as exc:
            stats.poison += 1
            self._event("poison", request_id, receives, reason=str(exc))
            self._release([message])
            return
        except Exception as exc:  # S3 or SQS trouble: leave the message for a retry
            stats.failed += 1
            self._event("failed", request_id, receives, reason=type(exc).__name__)
            return
        # Only now: the result is stored, the message may go.
        self.sqs.delete_message(QueueUrl=self.config.queue_url, ReceiptHandle=receipt)
        stats.processed += 1
        self._event("processed", request_id, receives)

    def _release(self, messages: Sequence[dict[str, Any]]) -> None:
        """Make messages visible again now instead of after the visibility timeout."""
        for message in messages:
            self.sqs.change_message_visibility(
                QueueUrl=self.config.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )

    @staticmethod
    def _event(outcome: str, request_id: str | None, receives: int, **extra: str) -> None:
        log.info(json.dumps({"outcome": outcome, "id": request_id, "receiveCount": receives, **extra}))


def install_sigterm(worker: Worker) -> None:
    signal.signal(signal.SIGTERM, worker.stop)
