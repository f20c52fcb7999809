"""BatchJob built alone: queue with DLQ, private encrypted bucket, scoped identities, the ScaledJob."""

from __future__ import annotations

import json

import pytest

from domain import contract
from infra.mapping import batch_job_args
from infra.workloads.batch_job import RESULTS_PREFIX, BatchJob
from tests.unit.helpers import assert_parented, build, named, of_type, settings_of

QUEUE_ARN = "arn:aws:sqs:us-west-2:123456789012:gpuinf-dev-offline-scoring"


@pytest.fixture(scope="module")
def dev():
    return settings_of("dev")


@pytest.fixture(scope="module")
def job(dev):
    args = batch_job_args(dev, "offline-scoring", keda_operator_role_name="gpuinf-dev-keda-operator")
    assert (args.cluster_name, args.region) == ("gpuinf-dev", "us-west-2")
    return build(lambda: BatchJob("offline-scoring", args))


def test_parented(job):
    assert_parented(job, "gpuinf:batch:BatchJob")


def test_queue_is_encrypted_and_moves_poison_messages_to_an_encrypted_dlq(job, dev):
    queue = named(job, "offline-scoring-queue").inputs
    dlq = named(job, "offline-scoring-dlq").inputs
    assert queue["sqsManagedSseEnabled"] is True and dlq["sqsManagedSseEnabled"] is True
    redrive = json.loads(queue["redrivePolicy"])
    assert redrive == {"deadLetterTargetArn": f"{QUEUE_ARN}-dlq", "maxReceiveCount": 3}
    assert queue["visibilityTimeoutSeconds"] == dev.batch_jobs["offline-scoring"].visibility_timeout_seconds


def test_results_bucket_is_encrypted_private_and_tls_only(job):
    sse = named(job, "offline-scoring-results-sse").inputs["rules"][0]
    assert sse["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    pab = named(job, "offline-scoring-results-pab").inputs
    assert all(
        pab[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    policy = json.loads(named(job, "offline-scoring-results-tls-only").inputs["policy"])
    assert policy["Statement"][0]["Effect"] == "Deny"
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_worker_and_keda_permissions_are_scoped_to_this_queue_and_prefix(job):
    worker = json.loads(named(job, "offline-scoring-worker-policy").inputs["policy"])
    resources = {s["Sid"]: s["Resource"] for s in worker["Statement"]}
    assert resources["ConsumeQueue"] == QUEUE_ARN
    assert resources["WriteResults"].endswith(f"/{RESULTS_PREFIX}*")
    keda = named(job, "offline-scoring-keda-queue-read").inputs
    assert keda["role"] == "gpuinf-dev-keda-operator"
    assert json.loads(keda["policy"])["Statement"] == [
        {"Effect": "Allow", "Action": ["sqs:GetQueueAttributes"], "Resource": QUEUE_ARN}
    ]
    association = named(job, "offline-scoring-worker-pod-identity").inputs
    assert (association["namespace"], association["serviceAccount"]) == ("batch", "offline-scoring")


def test_scaled_job_reads_the_queue_and_runs_one_job_per_batch(job, dev):
    spec = dev.batch_jobs["offline-scoring"]
    scaled = named(job, "offline-scoring-scaledjob").inputs["spec"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    assert (
        trigger["metadata"]["queueURL"] == "https://sqs.us-west-2.amazonaws.com/123456789012/gpuinf-dev-offline-scoring"
    )
    assert trigger["metadata"]["queueLength"] == str(spec.messages_per_job)
    assert trigger["authenticationRef"]["name"] == "offline-scoring"
    assert scaled["maxReplicaCount"] == spec.max_replicas
    template = scaled["jobTargetRef"]["template"]
    assert template["metadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "offline-scoring"
    assert pod["tolerations"] == contract.PoolContract("gpu-shared", "shared").tolerations()
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["MAX_MESSAGES"] == str(spec.messages_per_job) and env["RESULTS_PREFIX"] == RESULTS_PREFIX
    auth = named(job, "offline-scoring-trigger-auth").inputs
    assert auth["spec"] == {"podIdentity": {"provider": "aws", "identityOwner": "keda"}}


def test_every_aws_resource_of_the_job(job):
    types = sorted({r.type for r in job if r.type.startswith("aws:")})
    assert types == [
        "aws:eks/podIdentityAssociation:PodIdentityAssociation",
        "aws:iam/role:Role",
        "aws:iam/rolePolicy:RolePolicy",
        "aws:s3/bucket:Bucket",
        "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
        "aws:s3/bucketPolicy:BucketPolicy",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:sqs/queue:Queue",
    ]
    assert len(of_type(job, "aws:sqs/queue:Queue")) == 2
