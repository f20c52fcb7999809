"""What one build is asked for: `Options`, built and checked by cli.py, read by the plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from domain import image_cache, versions

MAX_IMAGES = 30  # one snapshot tag per image; EC2 allows 50 tags per resource
MAX_EXTRA_TAGS = 10
DEFAULT_INSTANCE_TYPES = {"x86_64": "m6i.xlarge", "arm64": "m7g.xlarge"}
DEFAULT_VOLUME_GIB = 200  # the same default as imageCache.volumeGib


@dataclass(frozen=True)
class Options:
    region: str
    images: tuple[str, ...]  # normalized (fully qualified) references, in pull order
    instance_profile: str
    subnet_id: str | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPES["x86_64"]
    ami_family: Literal["al2023", "bottlerocket"] = "al2023"
    kubernetes_version: str = versions.DEFAULT_KUBERNETES_VERSION
    ami_release: str = versions.EKS_AMI_RELEASE
    arch: Literal["x86_64", "arm64"] = "x86_64"
    volume_gib: int = DEFAULT_VOLUME_GIB
    pool: str = "gpu"
    extra_tags: tuple[tuple[str, str], ...] = ()
    mutable_tags: bool = False  # some image uses `latest` or no tag (allowed by --allow-mutable-tags)
    build_id: str = "manual"

    @property
    def content_hash(self) -> str:
        return image_cache.content_hash(self.images, ami_family=self.ami_family, arch=self.arch)

    @property
    def platform(self) -> str:
        return image_cache.PLATFORMS[self.arch]


def count_images(images: tuple[str, ...] | list[str]) -> str:
    """`1 image`, `3 images`: for descriptions and messages."""
    return f"{len(images)} image" + ("" if len(images) == 1 else "s")
