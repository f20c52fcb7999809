"""Preflight output: rich tables for people, JSON for tools."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tools.preflight.checks import InstanceFacts, Report, vcpus_text

# Wide enough for CI logs to keep an AMI parameter on one line; a terminal uses its own width.
PIPE_WIDTH = 200


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _families(types: list[InstanceFacts]) -> dict[str, list[InstanceFacts]]:
    by_family: dict[str, list[InstanceFacts]] = defaultdict(list)
    for t in sorted(types, key=lambda t: (t.family, t.gpus, t.vcpus, t.name)):
        by_family[t.family].append(t)
    return dict(sorted(by_family.items()))


def text(report: Report, out: IO[str]) -> None:
    console = Console(file=out, width=None if out.isatty() else PIPE_WIDTH, highlight=False)
    console.print(f"[bold]Preflight[/] for region {report.region}, zones {', '.join(report.zones)}")

    offered = _table("Offerings per pool and zone", "pool", "zone", "families offered", "missing")
    for pool, coverage in report.coverage.items():
        families = report.pools[pool].instance_families
        for zone, types in coverage.items():
            counts = {f: sum(1 for t in types if t.split(".")[0] == f) for f in families}
            present = ", ".join(f"{f} ({n} type{'s' if n > 1 else ''})" for f, n in counts.items() if n)
            present = present or "[red]none[/]"
            missing = ", ".join(f for f, n in counts.items() if not n) or "-"
            offered.add_row(pool, zone, present, missing)
    console.print()
    console.print(offered)

    gpu_types = [t for t in report.instance_types.values() if t.gpus]
    if gpu_types:
        facts = _table("GPU instance types offered", "family", "GPU", "memory per GPU", "size: GPUs / vCPUs")
        for family, types in _families(gpu_types).items():
            first = types[0]
            sizes = ", ".join(f"{t.name.split('.', 1)[1]}: {t.gpus} / {t.vcpus}" for t in types)
            facts.add_row(family, first.gpu_model, f"{first.gpu_memory_mib / 1024:.1f} GiB", sizes)
        console.print()
        console.print(facts)

    if report.quotas:
        quotas = _table(
            "vCPU quotas vs the pool limits", "quota", "name", "capacity", "found", "needed", "status", "pools"
        )
        for code, check in sorted(report.quotas.items()):
            q = check.quota
            found = vcpus_text(q.value) + (" (AWS default)" if q.source == "default" else "")
            status = {True: "[green]ok[/]", False: "[red]BLOCKER[/]", None: "[yellow]unknown[/]"}[check.ok]
            pools = "\n".join(f"{p}: {n.vcpus} ({n.explain()})" for p, n in sorted(check.needs.items()))
            quotas.add_row(code, escape(q.name), check.capacity_type, found, str(check.needed), status, pools)
        console.print()
        console.print(quotas)

    images = _table("EKS-optimized AMIs (SSM public parameters)", "pools", "parameter", "image")
    for parameter, (image, pools) in report.amis.items():
        images.add_row(", ".join(pools), parameter, image or "[red]missing[/]")
    console.print()
    console.print(images)

    # Findings unwrapped, one per line, so they can be grepped.
    console.print()
    for finding in report.blockers + report.warnings:
        style = "red" if finding.severity == "blocker" else "yellow"
        console.print(
            f"[{style}]{finding.severity}[/]: {escape(finding.subject)}: {escape(finding.message)}", soft_wrap=True
        )
    if not report.blockers:
        console.print(
            "[green]nothing blocks[/]" + (f" ({len(report.warnings)} warnings)" if report.warnings else ""),
            soft_wrap=True,
        )


def as_dict(report: Report) -> dict[str, Any]:
    def finding(f: Any) -> dict[str, Any]:
        return {"subject": f.subject, "message": f.message, **f.data}

    return {
        "ok": not report.blockers,
        "region": report.region,
        "zones": list(report.zones),
        "pools": {
            name: {
                "gpu": pool.gpu,
                "instanceFamilies": list(pool.instance_families),
                "capacityTypes": list(pool.capacity_types),
                "maxGpus": pool.max_gpus,
                "maxCpu": pool.max_cpu,
                "offerings": report.coverage.get(name, {}),
            }
            for name, pool in report.pools.items()
        },
        "instanceTypes": {
            name: {
                "family": t.family,
                "vcpus": t.vcpus,
                "gpus": t.gpus,
                "gpuManufacturer": t.gpu_manufacturer,
                "gpuName": t.gpu_name,
                "gpuMemoryMiB": t.gpu_memory_mib,
            }
            for name, t in sorted(report.instance_types.items())
        },
        "quotas": {
            code: {
                "name": check.quota.name,
                "capacityType": check.capacity_type,
                "found": check.quota.value,
                "source": check.quota.source,
                "needed": check.needed,
                "ok": check.ok,
                "pools": {
                    p: {
                        "vcpus": n.vcpus,
                        "instanceType": n.instance_type,
                        "instances": n.instances,
                        "uncapped": n.uncapped,
                    }
                    for p, n in sorted(check.needs.items())
                },
            }
            for code, check in sorted(report.quotas.items())
        },
        "amis": {
            parameter: {"imageId": image, "pools": list(pools)} for parameter, (image, pools) in report.amis.items()
        },
        "blockers": [finding(f) for f in report.blockers],
        "warnings": [finding(f) for f in report.warnings],
    }


def as_json(report: Report) -> str:
    return json.dumps(as_dict(report), indent=2)
