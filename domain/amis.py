"""Where an EKS-optimized AMI is published: the SSM public parameter Karpenter resolves an alias with.

`al2023@v20260512` on a GPU instance resolves to the NVIDIA variant of that
release, on a CPU instance to the standard one; `bottlerocket@1.50.0` to the
`aws-k8s-<version>[-nvidia]` variant. Preflight checks these parameters exist;
the image-snapshot script resolves its builder AMI with them.
"""

from __future__ import annotations

ARCHES = {"amd64": "x86_64", "arm64": "arm64"}  # kubernetes.io/arch -> AMI naming


def ssm_parameter(alias: str, kubernetes_version: str, arch: str, *, gpu: bool) -> str:
    """SSM parameter holding the image id for `alias` (`family@release`, release may be `latest`)."""
    family, _, release = alias.partition("@")
    arch = ARCHES.get(arch, arch)
    if family == "al2023":
        variant = "nvidia" if gpu else "standard"
        name = (
            "recommended"
            if release == "latest"
            else f"amazon-eks-node-al2023-{arch}-{variant}-{kubernetes_version}-{release}"
        )
        return f"/aws/service/eks/optimized-ami/{kubernetes_version}/amazon-linux-2023/{arch}/{variant}/{name}/image_id"
    if family == "bottlerocket":
        flavour = f"aws-k8s-{kubernetes_version}" + ("-nvidia" if gpu else "")
        return f"/aws/service/bottlerocket/{flavour}/{arch}/{release.lstrip('v')}/image_id"
    raise ValueError(f"unknown AMI family in alias {alias!r} (al2023 or bottlerocket)")
