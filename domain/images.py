"""Container image references: one parser for settings, policies, the image cache and its builder.

`ImageRef.parse("registry:5000/team/name:1.2@sha256:...")` splits a reference the
way the distribution spec's grammar does (a first path component with a dot, a
colon or `localhost` is a registry; the tag follows the last `/`; a digest
follows `@`). `pinned` is what every caller means by "pinned": a digest, or a
tag other than `latest`. `normalized` is the fully qualified name under which
the kubelet looks the image up in containerd (`nginx:1.27` ->
`docker.io/library/nginx:1.27`; a digest wins over a tag, as the CRI resolves
it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Lower-case path components joined by `/`, an optional port on the first; a tag of up
# to 128 word characters, dots and dashes; a sha256 digest.
PATTERN = re.compile(
    r"^(?P<name>[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._/-][a-z0-9]+)*)*)"
    r"(:(?P<tag>[\w][\w.-]{0,127}))?(@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
MAX_LENGTH = 255  # the distribution spec's limit on a reference
DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io")
EXAMPLE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/llm:1.4.2 or repo/name@sha256:<64 hex>"


class InvalidImageRef(ValueError):
    pass


@dataclass(frozen=True)
class ImageRef:
    name: str  # registry/path as written, without tag or digest
    tag: str | None
    digest: str | None  # "sha256:<hex>"

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        match = PATTERN.match(ref) if len(ref) <= MAX_LENGTH else None
        if match is None:
            raise InvalidImageRef(f"{ref!r} is not an image reference such as {EXAMPLE}")
        return cls(match["name"], match["tag"], match["digest"])

    @classmethod
    def is_valid(cls, ref: str) -> bool:
        try:
            cls.parse(ref)
        except InvalidImageRef:
            return False
        return True

    @property
    def pinned(self) -> bool:
        """A digest, or a tag other than the mutable `latest`."""
        return self.digest is not None or self.tag not in (None, "latest")

    @property
    def normalized(self) -> str:
        first, sep, rest = self.name.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, rest
        else:
            registry, path = DOCKER_HUB, self.name
        if registry in DOCKER_HUB_ALIASES:
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        suffix = f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}"
        return f"{registry}/{path}{suffix}"
