"""The table `python -m bench.server_speed` prints: medians of the interleaved repeats with their
range, and the ratios the speed goals are stated in (new over today, batching over batch size 1,
the HTTP ceiling, server CPU per request)."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.server_speed import Result


def median_and_range(values: list[float | None], empty: str = "-", sep: str = "") -> tuple[float | None, str]:
    """The median of the repeats that gave a value, and their range as " (lo-hi)" (`sep`: "," for
    thousands separators); `empty` when there is a single value or none."""
    real = [v for v in values if v is not None]
    if not real:
        return None, empty
    spread = f" ({min(real):{sep}.0f}-{max(real):{sep}.0f})" if len(real) > 1 else ""
    return statistics.median(real), spread


def render(
    results: dict[str, list[Result]], ort: dict[str, float], header: list[str], p50_rates: list[float], gpu_tag: str
) -> str:
    lines = [*header, ""]
    cols = ["max rps @p99<=bound (range)"] + [f"p50 @{r:g} rps" for r in p50_rates] + ["server CPU/request"]
    lines.append(f"{'row':<30}" + "".join(f"{c:>30}" for c in cols))
    medians: dict[str, float | None] = {}
    p50s: dict[str, dict[float, float | None]] = {}
    cpu: dict[str, float | None] = {}
    for key, runs in results.items():
        best, spread = median_and_range([r.max_rps for r in runs])
        medians[key] = best
        p50s[key] = {rate: median_and_range([r.p50_at.get(rate) for r in runs])[0] for rate in p50_rates}
        cells = ["-" if best is None else f"{best:.0f}{spread}"]
        cells += ["-" if p50s[key][r] is None else f"{p50s[key][r]:.2f} ms" for r in p50_rates]
        cpu[key] = median_and_range([r.cpu_us for r in runs])[0]
        cells.append("-" if cpu[key] is None else f"{cpu[key]:.0f} us")
        lines.append(f"{runs[0].variant.label:<30}" + "".join(f"{c:>30}" for c in cells))
    lines.append(
        f"{'ONNX Runtime alone':<30}{ort['batch32_rows_per_s']:>26.0f} rows/s at batch 32, "
        f"{ort['batch1_calls_per_s']:.0f} calls/s at batch 1"
    )
    lines.append("")

    def ratio(a: str, b: str) -> str:
        x, y = medians.get(a), medians.get(b)
        return f"x{x / y:.2f}" if x and y else "n/a"

    lines.append("ratios (medians):")
    for suffix, what in (("", ""), (gpu_tag, " with the GPU stand-in")):
        lines.append(
            f"  new/today{what}: batching {ratio('new-batched' + suffix, 'today-batched' + suffix)}, "
            f"batch 1 {ratio('new-b1' + suffix, 'today-b1' + suffix)}; "
            f"batching/batch 1: today {ratio('today-batched' + suffix, 'today-b1' + suffix)}, "
            f"new {ratio('new-batched' + suffix, 'new-b1' + suffix)}"
        )
    for suffix, what in (("", ""), (gpu_tag, " with the GPU stand-in")):
        x, y = cpu.get("today-batched" + suffix), cpu.get("new-batched" + suffix)
        b, c = cpu.get("today-b1" + suffix), cpu.get("new-b1" + suffix)
        lines.append(
            f"  server CPU per request today/new{what} (requests per core, new over today): batching "
            + (f"x{x / y:.2f}" if x and y else "n/a")
            + ", batch 1 "
            + (f"x{b / c:.2f}" if b and c else "n/a")
        )
    for ceiling in ("ceiling-asyncio", "ceiling-uvloop"):
        lines.append(
            f"  of the {ceiling} ceiling: today {ratio('today-batched', ceiling)}, new {ratio('new-batched', ceiling)}"
            f" (batch 1: today {ratio('today-b1', ceiling)}, new {ratio('new-b1', ceiling)})"
        )
    for rate in p50_rates:
        parts = []
        for suffix in ("", gpu_tag):
            for source in ("today", "new"):
                a, b = (
                    p50s.get(f"{source}-batched{suffix}", {}).get(rate),
                    p50s.get(f"{source}-b1{suffix}", {}).get(rate),
                )
                if a is not None and b is not None:
                    parts.append(f"{source}{suffix} {a - b:+.2f} ms")
        if parts:
            lines.append(f"  p50 at {rate:g} rps, batching minus batch 1 (MAX_WAIT_MS=5): " + ", ".join(parts))
    return "\n".join(lines)
