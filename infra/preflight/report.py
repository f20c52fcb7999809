"""Preflight output: an aligned text table for people, JSON for tools."""

from __future__ import annotations

import json
from dataclasses import asdict

from infra.preflight.checks import Report


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*map(str, r)) for r in rows)]


def text(report: Report) -> str:
    lines = [f"Preflight for region {report.region}, zones {', '.join(report.zones)}", "", "Offered instance types"]
    rows = []
    for pool, coverage in report.coverage.items():
        for zone, types in coverage.items():
            rows.append([pool, zone, str(len(types)), ", ".join(types) or "(none)"])
    lines += _table(["pool", "zone", "types", "offered"], rows)
    gpu = [t for t in report.instance_types.values() if t.gpus]
    if gpu:
        lines += ["", "GPU instance types"]
        lines += _table(
            ["type", "vCPUs", "GPUs", "GPU", "GPU memory GiB"],
            [
                [t.name, str(t.vcpus), str(t.gpus), t.gpu_model, f"{t.gpu_memory_gib:g}"]
                for t in sorted(gpu, key=lambda t: t.name)
            ],
        )
    if report.quotas:
        lines += ["", "vCPU quotas vs what the pool limits can reach"]
        lines += _table(
            ["quota", "name", "found", "needed", "pools"],
            [
                [code, q["name"], "?" if q["found"] is None else f"{q['found']:g}", str(q["needed"]),
                 ", ".join(f"{p} {v}" for p, v in q["pools"].items())]
                for code, q in report.quotas.items()
            ],
        )  # fmt: skip
    lines += ["", "AMIs"]
    lines += _table(["SSM parameter", "image"], [[p, image or "(missing)"] for p, image in report.amis.items()])
    lines += [""]
    lines += [f.line() for f in report.blockers + report.warnings] or ["nothing blocks"]
    return "\n".join(lines)


def as_json(report: Report) -> str:
    return json.dumps(
        {
            "region": report.region,
            "zones": list(report.zones),
            "coverage": report.coverage,
            "instanceTypes": {k: asdict(v) for k, v in sorted(report.instance_types.items())},
            "quotas": report.quotas,
            "amis": report.amis,
            "blockers": [asdict(f) for f in report.blockers],
            "warnings": [asdict(f) for f in report.warnings],
            "ok": not report.blockers,
        },
        indent=2,
    )
