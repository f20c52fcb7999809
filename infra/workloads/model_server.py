"""What a model server's pod needs beyond scheduling: command line, probes, ports, model cache.

The server presets (`domain/servers.py`) are data; this module renders them into
container and volume dicts for `inference.py`.

Model weights:
- `s3://bucket/prefix/`: an init container (the AWS CLI image pinned in
  `domain.versions`, `aws s3 sync`) copies the prefix into `/models/<name>/`
  before the server starts, with the service's own Pod Identity role (read-only
  on that prefix: `domain.servers.model_read_policy`). The AWS CLI over a
  downloader of ours: it is AWS-maintained, reads Pod Identity credentials,
  and downloads large objects in parallel multipart ranges; the sync is bounded
  by `model.downloadSeconds` (`timeout`), so a stuck download fails and the
  kubelet retries it with back-off instead of hanging.
- `hf://org/name[@revision]`: vLLM downloads it itself at start-up into the same
  cache (HF_HOME), with an optional token from `envSecrets` (HF_TOKEN); the
  download then runs inside the startup probe's window, so `downloadSeconds`
  is added to that budget. (An init container's time never counts against the
  startup probe, which starts with the server container.)

The cache is an emptyDir per pod on the node's ephemeral storage (sized by
`model.cacheGib`, requested as ephemeral-storage so the scheduler and Karpenter
count it). A cache shared by the pods of a node would need a hostPath volume,
which Pod Security `restricted` (enforced on the inference namespace) forbids:
each new pod downloads its weights again, traded for no host access from a
workload namespace. On instances with NVMe instance store, a node class with
`instanceStorePolicy: RAID0` puts the kubelet's ephemeral storage (emptyDirs
included) on the RAID0 array, so the sync writes to local NVMe rather than EBS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from domain import pods, servers, versions

CACHE_VOLUME = "model-cache"
SHM_VOLUME = "dshm"
SHM_GIB = 2  # PyTorch / NCCL shared memory for vLLM and Triton (the runtime default is 64 MiB)
METRICS_PORT_NAME = "metrics"


@dataclass(frozen=True)
class ModelSpec:
    uri: str
    scheme: str  # "s3" or "hf"
    name: str  # served model name
    download_seconds: int
    cache_gib: int
    s3_uri: str = ""  # s3: the prefix to sync
    repo: str = ""  # hf: org/name
    revision: str | None = None
    fetch_image: str = versions.MODEL_SERVER_IMAGES["model-fetch"]

    @property
    def local_dir(self) -> str:
        return f"{servers.MODEL_ROOT}/{self.name}"


@dataclass(frozen=True)
class ServerSpec:
    """Which server a service runs and what the stack set on top of its preset."""

    kind: str  # a key of domain.servers.PRESETS
    model: ModelSpec | None
    args: tuple[str, ...]
    env: Mapping[str, str]
    secret_env: tuple[str, ...]  # variables whose values come from the service's Secret
    health_path: str  # liveness
    ready_path: str  # readiness and startup
    metrics_path: str
    metrics_port: int | None  # None: the server's own port
    scale_query_template: str  # `{namespace}` / `{service}` placeholders

    @property
    def preset(self) -> servers.ServerPreset:
        return servers.PRESETS[self.kind]

    @property
    def downloads_from_s3(self) -> bool:
        return self.model is not None and self.model.scheme == "s3"

    @property
    def startup_download_seconds(self) -> int:
        """Download time that falls inside the startup probe's window (the server downloads itself)."""
        return self.model.download_seconds if self.model is not None and self.model.scheme == "hf" else 0


def reference_server(health_path: str = "/healthz", ready_path: str = "/readyz") -> ServerSpec:
    """Today's reference server with nothing set on top (tests and defaults)."""
    preset = servers.PRESETS["reference"]
    assert preset.scale_query is not None
    return ServerSpec("reference", None, (), {}, (), health_path, ready_path, "/metrics", None, preset.scale_query)


def secret_name(service: str) -> str:
    return f"{service}-env"


def command_and_args(server: ServerSpec, port: int) -> dict:
    """`command` / `args` of the server container (none for the reference server without extra args)."""
    model = server.model
    if server.kind == "vllm":
        assert model is not None
        source = model.local_dir if model.scheme == "s3" else model.repo
        args = [source, "--served-model-name", model.name, "--host", "0.0.0.0", "--port", str(port)]
        if model.revision:
            args += ["--revision", model.revision]
        return {"command": ["vllm", "serve"], "args": [*args, *server.args]}
    if server.kind == "triton":
        assert model is not None
        assert server.metrics_port is not None
        args = [
            f"--model-repository={model.local_dir}",
            f"--http-port={port}",
            "--grpc-port=8001",
            f"--metrics-port={server.metrics_port}",
        ]
        return {"command": ["tritonserver"], "args": [*args, *server.args]}
    if server.kind == "reference" and server.args:
        return {"command": ["python", "-m", "workloads.server"], "args": list(server.args)}
    return {"args": list(server.args)} if server.args else {}


def server_env(server: ServerSpec, service: str) -> list[dict]:
    """Environment of the server container beyond the reference server's own settings."""
    plain: dict[str, str] = {}
    model = server.model
    if model is not None:
        plain["MODEL_NAME"] = model.name
        if model.scheme == "s3":
            plain["MODEL_DIR"] = model.local_dir
            if server.kind == "reference":  # it loads one ONNX file (workloads/server/config.py MODEL_PATH)
                plain["MODEL_PATH"] = f"{model.local_dir}/model.onnx"
    if server.kind in ("vllm", "triton", "custom") and model is not None:
        # Caches on the writable model volume (the root filesystem is read-only).
        cache = f"{servers.MODEL_ROOT}/.cache"
        plain.update({"HF_HOME": f"{cache}/huggingface", "XDG_CACHE_HOME": cache, "VLLM_CACHE_ROOT": f"{cache}/vllm"})
        if model.scheme == "s3":
            plain["HF_HUB_OFFLINE"] = "1"  # weights are local: never reach out to the Hub
    plain.update(server.env)
    env = [{"name": k, "value": v} for k, v in plain.items()]
    env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name(service), "key": k}}} for k in server.secret_env
    ]
    return env


def ports(server: ServerSpec, port: int) -> list[dict]:
    found = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    if server.metrics_port is not None:
        found.append({"name": METRICS_PORT_NAME, "containerPort": server.metrics_port, "protocol": "TCP"})
    return found


def metrics_port_name(server: ServerSpec) -> str:
    return METRICS_PORT_NAME if server.metrics_port is not None else "http"


def fetch_container(server: ServerSpec) -> dict | None:
    """The init container that syncs an s3:// model prefix into the pod's cache (None otherwise)."""
    model = server.model
    if model is None or model.scheme != "s3":
        return None
    return {
        "name": "model-fetch",
        "image": model.fetch_image,
        "command": ["timeout", f"{model.download_seconds}s", "aws", "s3", "sync"],
        "args": [model.s3_uri, f"{model.local_dir}/", "--only-show-errors", "--no-progress"],
        # The CLI writes its own cache and config under HOME (the root filesystem is read-only).
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
        "securityContext": pods.container_security(),
        "volumeMounts": [{"name": CACHE_VOLUME, "mountPath": servers.MODEL_ROOT}, pods.TMP_MOUNT],
    }


def volumes(server: ServerSpec) -> list[dict]:
    found: list[dict] = []
    if server.model is not None:
        found.append({"name": CACHE_VOLUME, "emptyDir": {"sizeLimit": f"{server.model.cache_gib}Gi"}})
    if server.kind in ("vllm", "triton"):
        found.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": f"{SHM_GIB}Gi"}})
    return found


def volume_mounts(server: ServerSpec) -> list[dict]:
    found: list[dict] = []
    if server.model is not None:
        found.append({"name": CACHE_VOLUME, "mountPath": servers.MODEL_ROOT})
    if server.kind in ("vllm", "triton"):
        found.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    return found


def ephemeral_storage(server: ServerSpec) -> dict[str, str]:
    """The cache counted against the node's ephemeral storage (the scheduler and Karpenter see it)."""
    return {"ephemeral-storage": f"{server.model.cache_gib}Gi"} if server.model is not None else {}
