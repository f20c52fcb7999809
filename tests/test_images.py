"""`domain.images.ImageRef`: the one image-reference parser (settings, policies, image cache, snapshot tool)."""

from __future__ import annotations

import pytest

from domain.images import ImageRef, InvalidImageRef

DIGEST = "sha256:" + "ab" * 32
ECR_IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/gpu-inference/server:0.1.0"


@pytest.mark.parametrize(
    ("ref", "name", "tag", "digest"),
    [
        ("nginx", "nginx", None, None),
        ("nginx:1.27", "nginx", "1.27", None),
        ("localhost:5000/team/app", "localhost:5000/team/app", None, None),
        ("localhost:5000/team/app:2", "localhost:5000/team/app", "2", None),
        (f"quay.io/org/app:1@{DIGEST}", "quay.io/org/app", "1", DIGEST),
        (f"quay.io/org/app@{DIGEST}", "quay.io/org/app", None, DIGEST),
        (ECR_IMAGE, ECR_IMAGE.rsplit(":", 1)[0], "0.1.0", None),
    ],
)
def test_parse_splits_name_tag_and_digest(ref, name, tag, digest):
    assert ImageRef.parse(ref) == ImageRef(name, tag, digest)


@pytest.mark.parametrize(
    ("ref", "pinned"),
    [
        ("app", False),
        ("app:latest", False),
        ("registry.example:5000/app", False),  # a port is not a tag
        ("app:1.2", True),
        (f"app@{DIGEST}", True),
        (f"app:latest@{DIGEST}", True),  # the digest decides
    ],
)
def test_pinned_means_a_digest_or_a_tag_other_than_latest(ref, pinned):
    assert ImageRef.parse(ref).pinned is pinned


@pytest.mark.parametrize("ref", ["", "UPPER/case:1", "app:", "app@sha256:short", "-app:1", "a" * 250 + ":1.0.0.0.0"])
def test_invalid_references_are_refused_with_an_example(ref):
    with pytest.raises(InvalidImageRef, match="is not an image reference such as"):
        ImageRef.parse(ref)
    assert not ImageRef.is_valid(ref)


@pytest.mark.parametrize(
    ("ref", "normalized"),
    [
        ("nginx:1.27", "docker.io/library/nginx:1.27"),
        ("library/nginx:1.27", "docker.io/library/nginx:1.27"),
        ("org/app:2", "docker.io/org/app:2"),
        ("index.docker.io/org/app:2", "docker.io/org/app:2"),
        ("localhost/app:1", "localhost/app:1"),
        ("localhost:5000/app:1", "localhost:5000/app:1"),
        ("registry.example.com:5000/team/app", "registry.example.com:5000/team/app:latest"),
        (ECR_IMAGE, ECR_IMAGE),
        (f"quay.io/org/app:1@{DIGEST}", f"quay.io/org/app@{DIGEST}"),
        (f"quay.io/org/app@{DIGEST}", f"quay.io/org/app@{DIGEST}"),
    ],
)
def test_normalize_image_ref(ref: str, normalized: str) -> None:
    assert ImageRef.parse(ref).normalized == normalized
