"""BatchJob: queue-driven work, one Kubernetes Job per batch of SQS messages, scaled to zero by KEDA.

AWS side: an encrypted SQS queue whose poison messages move to an encrypted
dead-letter queue after `maxReceiveCount` receives, and an encrypted results
bucket with every kind of public access blocked and TLS required. Kubernetes
side: a ScaledJob whose aws-sqs-queue trigger starts up to `maxReplicas` Jobs,
one per `messagesPerJob` messages; each Job runs `python -m workloads.batch`,
which writes a result before it deletes a message, so a worker that dies
mid-way loses nothing (the message reappears after the visibility timeout).

Identities (EKS Pod Identity): the worker's service account may receive,
delete and extend messages of its queue and write under its results prefix;
KEDA's operator may read this queue's attributes, nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from domain import contract, naming, pods, priorities
from infra.identity import pod_identity_role
from infra.placement import PoolPlacement

NAMESPACE = "batch"
RESULTS_PREFIX = "results/"
DLQ_RETENTION_SECONDS = 14 * 24 * 3600  # the SQS maximum: time to look at poison messages


@dataclass(frozen=True)
class JobSpec:
    """One queue-driven job: its worker container and how KEDA starts Jobs from the queue."""

    image: str
    gpus: int  # 0 on a CPU pool
    cpu: str
    memory_gib: int
    max_replicas: int  # Jobs at once
    messages_per_job: int
    polling_interval_seconds: int
    visibility_timeout_seconds: int
    max_receive_count: int  # receives before a message moves to the dead-letter queue
    active_deadline_seconds: int
    do_not_disrupt: bool  # Karpenter must not consolidate a node under a running Job
    # domain.priorities: batch preempts warm headroom and yields to live inference; a
    # preempted Job pod fails and its messages come back after the visibility timeout.
    priority_class: str = priorities.BATCH.name


@dataclass(frozen=True)
class BatchJobArgs:
    job: JobSpec
    pool: PoolPlacement
    cluster_name: str
    region: str
    keda_operator_role_name: pulumi.Input[str]
    namespace: str = NAMESPACE


def labels(name: str) -> dict[str, str]:
    return pods.app_labels(name, "batch")


def worker_policy(queue_arn: str, bucket_arn: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ConsumeQueue",
                    "Effect": "Allow",
                    "Action": [
                        "sqs:ReceiveMessage",
                        "sqs:DeleteMessage",
                        "sqs:ChangeMessageVisibility",
                        "sqs:GetQueueAttributes",
                    ],
                    "Resource": queue_arn,
                },
                {
                    "Sid": "WriteResults",
                    "Effect": "Allow",
                    "Action": ["s3:PutObject"],
                    "Resource": f"{bucket_arn}/{RESULTS_PREFIX}*",
                },
            ],
        }
    )


def queue_reader_policy(queue_arn: str) -> str:
    statement = {"Effect": "Allow", "Action": ["sqs:GetQueueAttributes"], "Resource": queue_arn}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def tls_only_policy(bucket_arn: str) -> str:
    statement = {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def job_pod_spec(name: str, spec: JobSpec, pool: PoolPlacement, queue_url: str, bucket: str, region: str) -> dict:
    terms = pool.terms
    env = {
        "QUEUE_URL": queue_url,
        "RESULTS_BUCKET": bucket,
        "RESULTS_PREFIX": RESULTS_PREFIX,
        "MAX_MESSAGES": str(spec.messages_per_job),
        "BATCH_SIZE": str(min(spec.messages_per_job, 10)),
        "VISIBILITY_TIMEOUT_S": str(spec.visibility_timeout_seconds),
        "AWS_REGION": region,
    }
    requests: dict[str, str] = {"cpu": spec.cpu, "memory": f"{spec.memory_gib}Gi"}
    limits: dict[str, str] = {"memory": f"{spec.memory_gib}Gi"}
    if spec.gpus:
        requests[contract.GPU_RESOURCE] = limits[contract.GPU_RESOURCE] = str(spec.gpus)
    return {
        "serviceAccountName": name,
        "priorityClassName": spec.priority_class,
        "restartPolicy": "Never",
        "nodeSelector": terms.node_selector(),
        **({"tolerations": terms.tolerations()} if terms.tolerations() else {}),
        **(pods.packing_affinity(pool) if spec.gpus else {}),
        "securityContext": pods.pod_security(fs_group=True),
        "containers": [
            {
                "name": "worker",
                "image": spec.image,
                "command": ["python", "-m", "workloads.batch"],
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "resources": {"requests": requests, "limits": limits},
                "securityContext": pods.container_security(),
                "volumeMounts": [pods.TMP_MOUNT],
            }
        ],
        "volumes": [pods.TMP_VOLUME],
    }


def scaled_job(
    name: str, spec: JobSpec, pool: PoolPlacement, queue_url: str, bucket: str, region: str, namespace: str
) -> dict:
    annotations = {"karpenter.sh/do-not-disrupt": "true"} if spec.do_not_disrupt else {}
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
        "spec": {
            "jobTargetRef": {
                "parallelism": 1,
                "completions": 1,
                "backoffLimit": 2,
                "activeDeadlineSeconds": spec.active_deadline_seconds,
                "template": {
                    "metadata": {"labels": labels(name), **({"annotations": annotations} if annotations else {})},
                    "spec": job_pod_spec(name, spec, pool, queue_url, bucket, region),
                },
            },
            "pollingInterval": spec.polling_interval_seconds,
            "maxReplicaCount": spec.max_replicas,
            "successfulJobsHistoryLimit": 5,
            "failedJobsHistoryLimit": 5,
            "triggers": [
                {
                    "type": "aws-sqs-queue",
                    "authenticationRef": {"name": name},
                    "metadata": {
                        "queueURL": queue_url,
                        "queueLength": str(spec.messages_per_job),
                        "awsRegion": region,
                    },
                }
            ],
        },
    }


class BatchJob(pulumi.ComponentResource):
    def __init__(self, name: str, args: BatchJobArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gpuinf:batch:BatchJob", name, None, opts)
        spec, ns = args.job, args.namespace
        child = pulumi.ResourceOptions(parent=self)
        base = f"{args.cluster_name}-{name}"
        self.dead_letters = aws.sqs.Queue(
            f"{name}-dlq",
            name=naming.bounded(base, "-dlq", naming.SQS_QUEUE),
            sqs_managed_sse_enabled=True,
            message_retention_seconds=DLQ_RETENTION_SECONDS,
            opts=child,
        )
        self.queue = aws.sqs.Queue(
            f"{name}-queue",
            name=naming.bounded(base, "", naming.SQS_QUEUE),
            sqs_managed_sse_enabled=True,
            visibility_timeout_seconds=spec.visibility_timeout_seconds,
            receive_wait_time_seconds=20,
            redrive_policy=self.dead_letters.arn.apply(
                lambda arn: json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": spec.max_receive_count})
            ),
            opts=child,
        )
        self.bucket = self._results_bucket(name, base, child)
        role, association = pod_identity_role(
            f"{name}-worker",
            role_name=naming.bounded(base, "-worker", naming.IAM_ROLE),
            cluster_name=args.cluster_name,
            namespace=ns,
            service_account=name,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-worker-policy",
            role=role.name,
            policy=pulumi.Output.all(self.queue.arn, self.bucket.arn).apply(lambda v: worker_policy(v[0], v[1])),
            opts=child,
        )
        keda_access = aws.iam.RolePolicy(
            f"{name}-keda-queue-read",
            role=args.keda_operator_role_name,
            policy=self.queue.arn.apply(queue_reader_policy),
            opts=child,
        )
        meta = {"name": name, "namespace": ns, "labels": labels(name)}
        service_account = k8s.core.v1.ServiceAccount(f"{name}-sa", metadata=meta, opts=child)
        self.trigger_auth = k8s.apiextensions.CustomResource(
            f"{name}-trigger-auth",
            api_version="keda.sh/v1alpha1",
            kind="TriggerAuthentication",
            metadata=meta,
            # KEDA reads the queue length as its own operator (Pod Identity on keda-operator).
            spec={"podIdentity": {"provider": "aws", "identityOwner": "keda"}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[keda_access]),
        )
        job = pulumi.Output.all(self.queue.url, self.bucket.bucket).apply(
            lambda v: scaled_job(name, spec, args.pool, v[0], v[1], args.region, ns)
        )
        self.scaled_job = k8s.apiextensions.CustomResource(
            f"{name}-scaledjob",
            api_version="keda.sh/v1alpha1",
            kind="ScaledJob",
            metadata=meta,
            spec=job.apply(lambda j: j["spec"]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[service_account, association, self.trigger_auth]),
        )
        self.register_outputs(
            {"queueUrl": self.queue.url, "deadLetterQueueUrl": self.dead_letters.url, "bucket": self.bucket.bucket}
        )

    def _results_bucket(self, name: str, base: str, opts: pulumi.ResourceOptions) -> aws.s3.Bucket:
        bucket = aws.s3.Bucket(
            f"{name}-results", bucket_prefix=naming.bounded(base, "-results-", naming.S3_BUCKET_PREFIX), opts=opts
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-results-sse",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    ),
                )
            ],
            opts=opts,
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-results-pab",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=opts,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-results-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=opts,
        )
        aws.s3.BucketPolicy(
            f"{name}-results-tls-only", bucket=bucket.id, policy=bucket.arn.apply(tls_only_policy), opts=opts
        )
        return bucket
