"""AWS names built from user-chosen parts (cluster, job) that must fit AWS's limits.

A cluster name may have 38 characters and a batch job name 40, so
`<cluster>-<job>-worker` can pass IAM's 64. Names that fit are kept as they
read; longer ones are cut and made unique again by a short hash of the whole.
"""

from __future__ import annotations

import hashlib

# Limits of the AWS APIs (IAM CreateRole, SQS CreateQueue; the AWS provider's
# S3 bucket_prefix leaves 26 characters for its unique suffix).
IAM_ROLE = 64
SQS_QUEUE = 80
S3_BUCKET_PREFIX = 37


def bounded(base: str, suffix: str, limit: int) -> str:
    """`base + suffix`, or when longer than `limit`, `base` cut to fit plus 8 hex of its hash."""
    if len(base) + len(suffix) <= limit:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-')}-{digest}{suffix}"
