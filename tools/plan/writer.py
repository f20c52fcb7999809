"""Write a recorded run as plan files: resources.json, manifests/, helm-releases.yaml,
rendered/ (every Helm release as helm renders it), summary.md."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from domain import cost, versions
from domain.settings import Settings
from tools.plan.mocks import Recorded
from tools.plan.policies import PolicyOutcome
from tools.plan.render import HELM_RELEASE, RenderError, Rendering, object_files

K8S_PROVIDER = "pulumi:providers:kubernetes"


class PlanWriteError(Exception):
    pass


def is_manifest(res: Recorded) -> bool:
    return res.custom and res.type.startswith("kubernetes:") and res.type != HELM_RELEASE


def manifest(res: Recorded) -> dict[str, Any]:
    """The Kubernetes object a resource creates: apiVersion, kind, metadata first."""
    obj = {k: v for k, v in res.inputs.items() if not k.startswith("__")}
    head = {k: obj.pop(k) for k in ("apiVersion", "kind", "metadata") if k in obj}
    return {**head, **obj}


def manifest_filename(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    parts = [obj["kind"].lower(), meta.get("namespace", ""), meta["name"]]
    return "_".join(p for p in parts if p) + ".yaml"


def helm_release(res: Recorded) -> dict[str, Any]:
    inputs = res.inputs
    return {
        "name": inputs.get("name", res.name),
        "namespace": inputs.get("namespace", "default"),
        "chart": inputs["chart"],
        "repo": (inputs.get("repositoryOpts") or {}).get("repo", ""),
        "version": inputs.get("version", ""),
        "values": inputs.get("values", {}),
    }


def write_plan(
    out: Path,
    stack: str,
    config_file: Path,
    settings: Settings,
    recorded: list[Recorded],
    secret_keys: list[str],
    policies: PolicyOutcome,
    rendering: Rendering | None = None,
) -> dict[str, int]:
    manifests = [manifest(r) for r in recorded if is_manifest(r)]
    releases = sorted((helm_release(r) for r in recorded if r.type == HELM_RELEASE), key=lambda r: r["name"])
    names = [manifest_filename(m) for m in manifests]
    dupes = [n for n, c in Counter(names).items() if c > 1]
    if dupes:
        raise PlanWriteError(f"two Kubernetes objects would share a name: {', '.join(dupes)}")
    try:
        rendered = object_files(rendering) if rendering is not None else {}
    except RenderError as exc:
        raise PlanWriteError(str(exc)) from None

    estimate = cost.estimate(cost.CostInputs.from_settings(settings))
    _check_replaceable(out)
    staging = Path(tempfile.mkdtemp(prefix=".plan-", dir=out.parent if out.parent.exists() else None))
    try:
        (staging / "manifests").mkdir()
        document = {
            "stack": stack,
            "configFile": str(config_file),
            "metadata": {"secretConfigKeys": secret_keys, "cost": estimate.as_json()},
            # Sorted by URN: registration order depends on which outputs resolve first.
            "resources": [r.as_json() for r in sorted(recorded, key=lambda r: r.urn)],
        }
        (staging / "resources.json").write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
        for name, obj in zip(names, manifests, strict=True):
            (staging / "manifests" / name).write_text(yaml.safe_dump(obj, sort_keys=False))
        (staging / "helm-releases.yaml").write_text(yaml.safe_dump(releases, sort_keys=False))
        (staging / "policy-report.json").write_text(policies.as_json())
        for path, text in rendered.items():
            (staging / "rendered" / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / "rendered" / path).write_text(text)
        text = (
            summary(stack, settings, recorded, manifests, releases, secret_keys)
            + "\n".join(["", *rendered_lines(rendering)])
            + "\n".join(["", *cost_lines(estimate)])
            + "\n".join(["", *policies.summary_lines()])
        )
        (staging / "summary.md").write_text(text)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return {
        "resources": len(recorded),
        "manifests": len(manifests),
        "helm_releases": len(releases),
        "rendered_objects": len(rendered),
    }


def rendered_lines(rendering: Rendering | None) -> list[str]:
    """The summary's section on rendered charts: objects and kinds per release, or why there are none."""
    lines = ["## Rendered charts", ""]
    if rendering is None or rendering.missing:
        why = rendering.missing if rendering else "rendering was not requested"
        return [*lines, f"Charts were **not rendered**: {why}. `rendered/` is absent from this plan.", ""]
    lines += [
        f"`helm template` ({rendering.helm_version}) of the vendored charts under `charts/`, as installed on a"
        " fresh cluster: `--api-versions` holds the CRDs of the releases each one depends on. One file per"
        " object under `rendered/<release>/`.",
        "",
        "| release | chart | objects | kinds |",
        "|---|---|---|---|",
    ]
    for name, rendered in rendering.releases.items():
        kinds = Counter(obj["kind"] for obj in rendered.objects)
        listed = ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in sorted(kinds.items()))
        release = rendered.release
        lines.append(f"| {name} | {release.chart} {release.version} | {len(rendered.objects)} | {listed} |")
    return [*lines, ""]


def _check_replaceable(out: Path) -> None:
    """Replace only an earlier plan or an empty directory, never arbitrary files."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "resources.json").exists())):
        raise PlanWriteError(f"{out} exists and is not an earlier plan; choose another --out")


def summary(
    stack: str,
    settings: Settings,
    recorded: list[Recorded],
    manifests: list[dict[str, Any]],
    releases: list[dict[str, Any]],
    secret_keys: list[str],
) -> str:
    lines = [f"# Offline plan: stack `{stack}`", ""]
    cluster = settings.cluster
    endpoint = (
        f"public ({', '.join(cluster.api_cidrs)}) and private" if cluster.endpoint_public_access else "private only"
    )
    lines += [
        f"Region `{settings.region}`, environment `{settings.environment}`, cluster `{cluster.name}`"
        f" (Kubernetes {cluster.version}), {settings.network.az_count} AZs, NAT `{settings.network.nat_gateways}`,"
        f" API endpoint {endpoint}.",
        "",
    ]
    if secret_keys:
        lines += [
            "Secret config values (`secure:`) can only be decrypted by the Pulumi CLI; this plan used a"
            f" placeholder for: {', '.join(f'`{k}`' for k in secret_keys)}.",
            "",
        ]
    pools = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "NodePool"}
    lines += [
        "## Node pools",
        "",
        "| pool | gpu | families | capacity types | limits (rendered) | time-slicing replicas | consolidation |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, pool in sorted(settings.node_pools.items()):
        rendered = pools.get(name, {}).get("spec", {})
        limits = ", ".join(f"{k}={v}" for k, v in rendered.get("limits", {}).items())
        if pool.gpu == "shared":
            limits += f" ({pool.max_gpus} physical GPUs x {pool.time_slicing_replicas})"
        disruption = rendered.get("disruption", {})
        lines.append(
            f"| {name} | {pool.gpu} | {', '.join(pool.instance_families)} | {', '.join(pool.capacity_types)}"
            f" | {limits} | {pool.time_slicing_replicas or '-'} | {disruption.get('consolidationPolicy')}"
            f" after {disruption.get('consolidateAfter')} |"
        )
    lines += workload_lines(settings, manifests)
    lines += ["", "## Resources by type", "", "| type | count |", "|---|---|"]
    for typ, count in sorted(Counter(r.type for r in recorded).items()):
        lines.append(f"| `{typ}` | {count} |")
    lines += [
        "",
        f"Total: {len(recorded)} resources, {len(manifests)} Kubernetes manifests, {len(releases)} Helm releases.",
        "",
    ]
    lines += ["## Helm releases", "", "| release | namespace | chart | version |", "|---|---|---|---|"]
    for rel in releases:
        chart = rel["chart"] if not rel["repo"] else f"{rel['repo']} {rel['chart']}"
        lines.append(f"| {rel['name']} | {rel['namespace']} | `{chart}` | {rel['version']} |")
    lines += ["", "## Pinned versions (domain/versions.py)", "", "| component | version |", "|---|---|"]
    for name, version in versions.pinned_versions().items():
        lines.append(f"| {name} | `{version}` |")
    return "\n".join(lines) + "\n"


def cost_lines(estimate: cost.CostEstimate) -> list[str]:
    """The summary's cost section: idle line items, then each pool at its limits."""
    lines = [
        "## Cost per hour (USD, on-demand list prices)",
        "",
        f"Idle: **${estimate.idle_per_hour:,.2f}/h** (GPU and CPU pools at zero)."
        f" Warm GPU headroom: **${estimate.headroom_per_hour:,.2f}/h**."
        f" Worst case: **${estimate.worst_per_hour:,.2f}/h** (every pool at its limits).",
        "",
        "| idle item | per hour |",
        "|---|---|",
        *(f"| {item} | ${usd:,.4f} |" for item, usd in estimate.idle.items()),
        "",
        "| pool | worst case per hour | priciest fill | limit reached first | warm headroom per hour |",
        "|---|---|---|---|---|",
    ]
    for name, pool in sorted(estimate.pools.items()):
        lines.append(
            f"| {name} | ${pool.worst_per_hour:,.2f} | {pool.worst_count:g} x {pool.worst_type}"
            f" | {pool.binding_limit} | ${pool.headroom_per_hour:,.2f} |"
        )
    lines += ["", f"Prices as of {estimate.as_of} ({cost.PRICES_FILE.name}); " + "; ".join(estimate.notes) + ".", ""]
    return lines


def _wake_up(triggers: list[dict[str, Any]]) -> str:
    """How a service at zero replicas gets its first one: the triggers after in-flight."""
    if not triggers:
        return "- (keeps a replica)"
    trigger = triggers[0]
    if trigger.get("type") == "external-push":
        return f"KEDA HTTP add-on (`{trigger['metadata'].get('scalerAddress')}`)"
    return f"`{trigger.get('metadata', {}).get('query')}`"


def workload_lines(settings: Settings, manifests: list[dict[str, Any]]) -> list[str]:
    """Inference services (scale signal and bounds), batch jobs and warm headroom, as rendered."""
    lines: list[str] = []
    scaled = {m["metadata"]["name"]: m["spec"] for m in manifests if m["kind"] == "ScaledObject"}
    if settings.inference:
        lines += [
            "",
            "## Inference services",
            "",
            "| service | pool | GPUs | replicas | scale signal (KEDA trigger) | target per replica | polling"
            " | wakes from zero by |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, svc in sorted(settings.inference.items()):
            spec = scaled.get(name, {})
            triggers = spec.get("triggers") or [{}]
            trigger = triggers[0].get("metadata", {})
            lines.append(
                f"| {name} | {svc.pool} | {svc.gpus} | {spec.get('minReplicaCount')}..{spec.get('maxReplicaCount')}"
                f" | `{trigger.get('query')}` | {trigger.get('threshold')} | {spec.get('pollingInterval')} s"
                f" | {_wake_up(triggers[1:])} |"
            )
    if settings.batch_jobs:
        lines += [
            "",
            "## Batch jobs",
            "",
            "| job | pool | GPUs | max jobs | messages per job |",
            "|---|---|---|---|---|",
        ]
        for name, job in sorted(settings.batch_jobs.items()):
            lines.append(f"| {name} | {job.pool} | {job.gpus} | {job.max_replicas} | {job.messages_per_job} |")
    warm = {k: p for k, p in sorted(settings.node_pools.items()) if p.warm_gpus}
    if warm:
        lines += ["", "## Warm GPU headroom", "", "| pool | warm (pool units) | physical GPUs |", "|---|---|---|"]
        for name, pool in warm.items():
            unit = "slices" if pool.gpu == "shared" else "GPUs"
            lines.append(f"| {name} | {pool.warm_gpus} {unit} | {pool.warm_physical_gpus} |")
    return lines
