"""The container apps: the code that runs inside the cluster's pods, in one image.

`server` (the batching inference server), `model` (its ONNX model), `loadgen`
(the load generator), `batch` (the SQS batch worker). Plain packages with their
own pins (`requirements.txt`) and `Dockerfile`: they import neither Pulumi nor
anything of the platform (`domain`, `infra`, `policies`, `tools`), so the image
is built from this folder alone. The import contract in pyproject.toml holds
them to it. The Pulumi components that deploy them live in `infra/workloads/`.
"""
