"""The queue-driven batch worker: SQS messages in, result objects in S3 out (`python -m workloads.batch`)."""
