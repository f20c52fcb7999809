"""The SQS batch worker (workloads/batch) against moto.

moto covers everything the worker calls: SQS (receive with attributes,
delete, change visibility, redrive to the dead-letter queue after
maxReceiveCount receives) and S3 (put, get, list). Nothing is stubbed.
"""

from __future__ import annotations

import json
import time

import boto3
import pytest
from moto import mock_aws

from workloads.batch.__main__ import main
from workloads.batch.worker import Worker, WorkerConfig

REGION = "us-west-2"


def double(rows):
    return [[2 * x for x in row] for row in rows]


@pytest.fixture
def aws(monkeypatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        sqs, s3 = boto3.client("sqs", region_name=REGION), boto3.client("s3", region_name=REGION)
        dlq = sqs.create_queue(QueueName="work-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue = sqs.create_queue(
            QueueName="work",
            Attributes={
                "SqsManagedSseEnabled": "true",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
            },
        )["QueueUrl"]
        s3.create_bucket(Bucket="results", CreateBucketConfiguration={"LocationConstraint": REGION})
        yield sqs, s3, queue, dlq


def config(queue: str, **changes) -> WorkerConfig:
    return WorkerConfig(**{"queue_url": queue, "bucket": "results", "wait_time_s": 0, **changes})


def send(sqs, queue: str, body) -> None:
    sqs.send_message(QueueUrl=queue, MessageBody=body if isinstance(body, str) else json.dumps(body))


def depth(sqs, queue: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def result(s3, request_id: str) -> dict:
    return json.loads(s3.get_object(Bucket="results", Key=f"results/{request_id}.json")["Body"].read())


def test_a_message_becomes_a_result_and_is_deleted(aws):
    sqs, s3, queue, _ = aws
    send(sqs, queue, {"id": "req-1", "inputs": [[1.0, 2.0], [3.0, 4.0]]})
    stats = Worker(sqs, s3, double, config(queue)).run()
    assert stats.as_dict() == {"processed": 1, "poison": 0, "failed": 0}
    assert result(s3, "req-1")["outputs"] == double([[1.0, 2.0], [3.0, 4.0]])
    head = s3.head_object(Bucket="results", Key="results/req-1.json")
    assert head["ServerSideEncryption"] == "AES256"
    assert depth(sqs, queue) == 0


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        {"id": "x"},
        {"inputs": [[1.0]]},
        {"id": "a/b", "inputs": [[1.0]]},
        {"id": "bad-shape", "inputs": [[1.0]]},
    ],
)
def test_a_poison_message_ends_in_the_dead_letter_queue(aws, body):
    sqs, s3, queue, dlq = aws

    def strict(rows):
        if len(rows[0]) != 2:
            raise ValueError("each row must have 2 values")
        return double(rows)

    send(sqs, queue, body)
    for _ in range(3):  # maxReceiveCount 2: the third receive finds it moved
        Worker(sqs, s3, strict, config(queue, max_messages=1)).run()
    assert depth(sqs, queue) == 0
    moved = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
    assert len(moved) == 1
    assert s3.list_objects_v2(Bucket="results").get("KeyCount", 0) == 0


def test_a_worker_that_dies_mid_way_loses_nothing(aws):
    sqs, s3, queue, _ = aws
    send(sqs, queue, {"id": "req-2", "inputs": [[5.0]]})

    class Died(BaseException):
        """Stands for the process being killed after the result write, before the delete."""

    class DyingS3:
        def put_object(self, **kwargs):
            s3.put_object(**kwargs)
            raise Died

    with pytest.raises(Died):
        Worker(sqs, DyingS3(), double, config(queue, visibility_timeout_s=1)).run()
    assert depth(sqs, queue) == 1, "the message must still be on the queue"
    time.sleep(1.2)  # the visibility timeout expires
    stats = Worker(sqs, s3, double, config(queue)).run()
    assert stats.processed == 1 and depth(sqs, queue) == 0
    assert result(s3, "req-2")["outputs"] == [[10.0]]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="results")["Contents"]]
    assert keys == ["results/req-2.json"], "a redelivery overwrites the same key"


def test_a_failed_write_leaves_the_message_for_a_retry(aws):
    sqs, _s3, queue, _ = aws
    send(sqs, queue, {"id": "req-3", "inputs": [[1.0]]})

    class BrokenS3:
        def put_object(self, **kwargs):
            raise ConnectionError("S3 unreachable")

    stats = Worker(sqs, BrokenS3(), double, config(queue, visibility_timeout_s=0, max_messages=1)).run()
    assert stats.as_dict() == {"processed": 0, "poison": 0, "failed": 1}
    assert depth(sqs, queue) == 1


def test_max_messages_bounds_a_run_and_an_empty_queue_ends_it(aws):
    sqs, s3, queue, _ = aws
    for i in range(5):
        send(sqs, queue, {"id": f"r{i}", "inputs": [[float(i)]]})
    assert Worker(sqs, s3, double, config(queue, max_messages=3, batch_size=2)).run().processed == 3
    assert depth(sqs, queue) == 2
    assert Worker(sqs, s3, double, config(queue, max_messages=10)).run().processed == 2
    assert Worker(sqs, s3, double, config(queue, max_messages=10)).run().processed == 0


def test_sigterm_finishes_the_message_in_hand_and_takes_no_other(aws):
    sqs, s3, queue, _ = aws
    for i in range(3):
        send(sqs, queue, {"id": f"s{i}", "inputs": [[1.0]]})
    worker = Worker(sqs, s3, lambda rows: (worker.stop(), double(rows))[1], config(queue, batch_size=3))
    stats = worker.run()
    assert stats.processed == 1
    assert depth(sqs, queue) == 2
    visible = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
    assert visible["Attributes"]["ApproximateNumberOfMessages"] == "2", "released at once, not after the timeout"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "QUEUE_URL and RESULTS_BUCKET must be set"),
        ({"QUEUE_URL": "sqs://x", "RESULTS_BUCKET": "b"}, "QUEUE_URL must be an https:// SQS queue URL"),
        ({"QUEUE_URL": "https://q", "RESULTS_BUCKET": "b", "BATCH_SIZE": "11"}, "BATCH_SIZE must be an integer 1..10 (got '11')"),
        ({"QUEUE_URL": "https://q", "RESULTS_BUCKET": "b", "MAX_MESSAGES": "many"}, "MAX_MESSAGES must be an integer"),
    ],
)  # fmt: skip
def test_bad_settings_exit_2(env, message, capsys):
    assert main(env) == 2
    assert message in capsys.readouterr().err


def test_main_runs_with_the_default_model(aws, capsys):
    sqs, s3, queue, _ = aws
    from workloads.model import load_model

    model = load_model()
    row = [0.1] * model.input_size
    send(sqs, queue, {"id": "m1", "inputs": [row]})
    env = {"QUEUE_URL": queue, "RESULTS_BUCKET": "results", "WAIT_TIME_S": "0", "AWS_REGION": REGION}
    assert main(env, clients=(sqs, s3)) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "run": {"processed": 1, "poison": 0, "failed": 0}
    }
    assert result(s3, "m1")["outputs"] == model.predict([row])
