"""What the command prints: the plan of a dry run, the result of a build, the stack config to set."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tools.image_snapshot.executor import Result
from tools.image_snapshot.options import Options, count_images
from tools.image_snapshot.placeholders import ref, resolve
from tools.image_snapshot.plan import Plan, Step

# Warn when the images fill more of the volume than this: kubelet's image GC
# starts deleting unused images at 85% of the image filesystem by default.
USAGE_WARNING = 0.7


def stack_config(options: Options, snapshot_id: str) -> dict:
    """The pool's `imageCache` block in `gpu-inference:nodePools`."""
    cache: dict[str, Any] = {"snapshotId": snapshot_id, "volumeGib": options.volume_gib}
    if not options.mutable_tags:  # settings reject `latest` in imageCache.images
        cache["images"] = list(options.images)
    return {"gpu-inference:nodePools": {options.pool: {"imageCache": cache}}}


def config_commands(options: Options, snapshot_id: str) -> list[str]:
    base = f"gpu-inference:nodePools.{options.pool}.imageCache"
    return [
        f"pulumi config set --path '{base}.snapshotId' {snapshot_id}",
        f"pulumi config set --path '{base}.volumeGib' {options.volume_gib}",
    ]


def render_plan(plan: Plan) -> str:
    o = plan.options
    lines = [
        f"Plan (dry run, nothing is called): {o.ami_family} {o.arch} image snapshot in {o.region}, build {o.build_id}",
        f"Images ({count_images(o.images)}, content hash {o.content_hash}):",
        *(f"  - {image}" for image in o.images),
        "",
        "Build steps:",
    ]
    for n, step in enumerate(plan.build, start=1):
        lines += _render_step(f"{n:>3}.", step)
    lines += ["", "Cleanup steps (run even when a build step fails):"]
    for n, step in enumerate(plan.cleanup, start=1):
        lines += _render_step(f" c{n}.", step)
    lines += ["", "On success the stack config gets:", *(f"  {c}" for c in config_commands(o, ref("snapshot_id")))]
    return "\n".join(lines)


def _render_step(number: str, step: Step) -> list[str]:
    head = f"{number} {step.service}.{step.operation}" + (" (waiter)" if step.kind == "wait" else "")
    notes = [step.title]
    if step.when == "on-failure":
        notes.append("only if the build failed")
    if step.outputs and step.kind != "shell":
        notes.append("-> " + ", ".join(step.outputs))
    lines = [f"{head}: {'; '.join(notes)}"]
    pad = " " * (len(number) + 1)
    if step.kind == "shell":
        lines.append(f"{pad}instance {step.params['InstanceIds'][0]}, timeout {step.timeout_s}s, script:")
        lines += [f"{pad}  | {line}" for line in step.script.splitlines()]
    else:
        lines += [f"{pad}{line}" for line in json.dumps(step.params, indent=2).splitlines()]
    return lines


def render_result(options: Options, result: Result) -> str:
    snippet = yaml.safe_dump({"config": stack_config(options, result.snapshot_id)}, sort_keys=False)
    lines = [
        f"Snapshot {result.snapshot_id} is ready ({count_images(options.images)}, content hash {options.content_hash},"
        f" built on {result.ami_id}).",
        "",
        "Set it on the stack:",
        *(f"  {c}" for c in config_commands(options, result.snapshot_id)),
        "",
        "or in Pulumi.<stack>.yaml (merge into the existing pool):",
        *(f"  {line}" for line in snippet.splitlines()),
    ]
    if options.ami_family == "bottlerocket":
        lines.append("The pool's amiAlias must be bottlerocket@...: this snapshot holds a Bottlerocket data volume.")
    return "\n".join(lines)


def result_json(plan: Plan, result: Result) -> str:
    options = plan.options
    return json.dumps(
        {
            "snapshotId": result.snapshot_id,
            "amiId": result.ami_id,
            "contentHash": options.content_hash,
            "images": list(options.images),
            "usedBytes": result.used_bytes,
            "tags": resolve(plan.snapshot_tags, result.context.__getitem__),
            "stackConfig": stack_config(options, result.snapshot_id),
        },
        indent=2,
    )


def usage_warning(options: Options, used_bytes: int | None) -> str | None:
    if used_bytes is None:
        return None
    share = used_bytes / (options.volume_gib * 2**30)
    if share <= USAGE_WARNING:
        return None
    return (
        f"warning: the images fill {share:.0%} of the {options.volume_gib} GiB volume; kubelet starts deleting"
        " unused images at 85% of the image filesystem: give nodes a larger volumeGib, or rebuild with --volume-gib"
    )
