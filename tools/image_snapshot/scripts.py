"""The builder's shell scripts, rendered from the `.sh` files in templates/.

Each template is a complete POSIX sh script (shellcheck runs over it in the
tests) that reads its inputs as `${NAME}` environment variables, listed on its
`# Inputs:` line. SSM Run Command (`AWS-RunShellScript`) passes no environment,
so `render()` inlines every input as shell-quoted words and keeps the script
from its `set -eu` line on (the header above it documents the template).
Which template runs is decided here, in Python; the templates hold no
conditionals of their own beyond what the shell needs at run time.

An input known only while the build runs (`AtRunTime`: the data volume's ID,
the ECR password) goes in as a `{{name}}` placeholder; the executor fills it in,
shell-quoted, when it sends the command.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from domain import image_cache
from tools.image_snapshot.options import Options
from tools.image_snapshot.placeholders import ECR_SECRET, ref

TEMPLATES = resources.files(__package__) / "templates"
BODY_START = "set -eu\n"  # the first line a rendered script keeps
# The finish scripts print `<marker>used_bytes=N`; the executor reads the value back.
OUTPUT_MARKER = "image-snapshot-output:"
ECR_HOST = re.compile(r"^[0-9]{12}\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/")


@dataclass(frozen=True)
class AtRunTime:
    """An input the executor fills in when it sends the script (an ID, a password)."""

    name: str


Value = str | Sequence[str] | AtRunTime


class _Inputs(string.Template):
    # Only `${NAME}` in capitals is an input: `$vol`, `${vol%%-*}`, `$(...)` and `"$log"`
    # belong to the script's own shell and are left alone.
    flags = re.NOFLAG
    pattern = r"\$(?:(?P<escaped>(?!))|(?P<named>(?!))|\{(?P<braced>[A-Z][A-Z0-9_]*)\}|(?P<invalid>(?!)))"


@cache
def template_names() -> tuple[str, ...]:
    return tuple(sorted(t.name for t in TEMPLATES.iterdir() if t.name.endswith(".sh")))


def template_body(name: str) -> str:
    """The part of template `name` that is sent: from its `set -eu` line on."""
    text = (TEMPLATES / name).read_text()
    start = text.find("\n" + BODY_START)
    if start < 0:
        raise ValueError(f"template {name} has no `{BODY_START.strip()}` line to start the script at")
    return text[start + 1 :]


def template_inputs(name: str) -> tuple[str, ...]:
    """The `${NAME}` inputs template `name` uses, in order of first use."""
    return tuple(dict.fromkeys(_Inputs(template_body(name)).get_identifiers()))


def render(name: str, **inputs: Value) -> str:
    """Template `name` with every input inlined as shell-quoted words (no trailing newline)."""
    wanted = set(template_inputs(name))
    if wanted != set(inputs):
        missing, extra = sorted(wanted - set(inputs)), sorted(set(inputs) - wanted)
        raise ValueError(f"template {name} takes {sorted(wanted)}: missing {missing}, unknown {extra}")
    text = _Inputs(template_body(name)).substitute({key: _words(value) for key, value in inputs.items()})
    return text.removesuffix("\n")


def _words(value: Value) -> str:
    if isinstance(value, AtRunTime):
        return ref(value.name)
    if isinstance(value, str):
        return shlex.quote(value)
    return " ".join(shlex.quote(item) for item in value)


def ecr_region(image: str) -> str | None:
    """Region of a private ECR registry, None for any other registry (pulled anonymously).

    `image` is a normalized reference (`ImageRef.normalized`), so its registry is the
    host before the first `/`."""
    match = ECR_HOST.match(image)
    return match["region"] if match else None


# -- the builder's scripts


def prepare_script(options: Options) -> str:
    """AL2023: blank data volume -> XFS labelled for the node's mount, seeded with the AMI's store,
    mounted for containerd. Bottlerocket: wait for a host shell, keep kubelet away."""
    if options.ami_family == "al2023":
        return render(
            "al2023-prepare.sh",
            DATA_VOLUME_ID=AtRunTime("data_volume_id"),
            DATA_DEVICE=image_cache.DATA_DEVICE,
            FILESYSTEM_TYPE=image_cache.FILESYSTEM_TYPE,
            FILESYSTEM_LABEL=image_cache.FILESYSTEM_LABEL,
            CONTAINERD_ROOT=image_cache.CONTAINERD_ROOT,
        )
    return render("bottlerocket-prepare.sh", CRI_NAMESPACE=image_cache.CRI_NAMESPACE)


def pull_script(options: Options, image: str) -> str:
    """Pull one image for the builder's platform into containerd's `k8s.io` namespace, unpacked for overlayfs."""
    region = ecr_region(image)
    inputs: dict[str, Value] = {
        "CRI_NAMESPACE": image_cache.CRI_NAMESPACE,
        "PLATFORM": options.platform,
        "CRI_MANAGED_LABEL": image_cache.CRI_MANAGED_LABEL,
        "IMAGE": image,
    }
    if region is None:
        return render(f"{options.ami_family}-pull.sh", **inputs)
    if options.ami_family == "al2023":
        # The instance logs in itself: the password never leaves it.
        return render("al2023-pull-ecr.sh", ECR_REGION=region, **inputs)
    # Bottlerocket's SSM shell has no AWS CLI: the password comes from this machine.
    return render("bottlerocket-pull-ecr.sh", ECR_PASSWORD=AtRunTime(ECR_SECRET + region), **inputs)


def finish_script(options: Options) -> str:
    """Check every image is in the store, report the space used, flush the volume."""
    if options.ami_family == "al2023":
        return render(
            "al2023-finish.sh",
            CRI_NAMESPACE=image_cache.CRI_NAMESPACE,
            IMAGES=[*options.images, image_cache.AL2023_SANDBOX_IMAGE],
            OUTPUT_MARKER=OUTPUT_MARKER,
            CONTAINERD_ROOT=image_cache.CONTAINERD_ROOT,
        )
    return render(
        "bottlerocket-finish.sh",
        CRI_NAMESPACE=image_cache.CRI_NAMESPACE,
        IMAGES=options.images,
        OUTPUT_MARKER=OUTPUT_MARKER,
    )
