"""What runs on the cluster, and the code it runs.

Pulumi components (one per module): `inference.InferenceService`,
`batch_job.BatchJob`, `load_generator.LoadGenerator`, `namespaces.WorkloadNamespaces`.
Application code (plain packages, shipped in the image of `server/Dockerfile`):
`server` (the batching inference server), `model` (the ONNX model), `loadgen`,
`batch` (the SQS worker). Dashboards and alert rules as data: `observability`.

Keep this file free of imports: the image imports `workloads.model` without Pulumi.
Every pod template takes its tolerations and node selector from
`infra.contract.PoolContract`, never from hand-written labels.
"""
