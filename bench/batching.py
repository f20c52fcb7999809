"""What dynamic micro-batching buys: the same offered load against the server with
batching on (MAX_BATCH_SIZE=32) and off (MAX_BATCH_SIZE=1), one after the other
in one run, each a fresh `python -m workloads.server` process on 127.0.0.1.

    python -m bench.batching [--rps 600] [--duration 5] [--model-hidden 1024] [--batch-overhead-ms 2] [--json]

What is measured, honestly:
- The model is the reference MLP with a wider hidden layer (`--model-hidden`), run by
  ONNX Runtime on whatever provider this machine has (the CPU here). Its own cost
  per call is measured and printed for batch 1 and batch `--max-batch-size`.
- On a GPU most of a small batch's cost is fixed per call (kernel launches,
  host/device copies, synchronisation), which is what batching amortises. A CPU
  has little of that, so `--batch-overhead-ms` adds a sleep to every model call
  (the server's EXTRA_BATCH_LATENCY_MS) to stand in for it. It is a sleep, not
  compute: the numbers show the queueing effect of batching, not GPU speed.
- The load generator runs in this process and shares the machine's cores with
  the server; absolute numbers belong to this machine only, ratios travel better.

No assertion is made on the numbers; the tests never time anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.processes import START_TIMEOUT_S, wait_listening
from workloads.loadgen import LoadReport, LoadSpec, run_load
from workloads.model import DEFAULT_INPUT_SIZE, build_model, load_model

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    label: str
    max_batch_size: int
    report: LoadReport
    mean_batch: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "max_batch_size": self.max_batch_size,
            "mean_batch_rows": None if self.mean_batch is None else round(self.mean_batch, 2),
            **self.report.to_dict(),
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.batching", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rps", type=float, default=600, help="offered load for both servers (default 600)")
    parser.add_argument("--duration", type=float, default=5, help="seconds of load per server (default 5)")
    parser.add_argument("--model-hidden", type=int, default=1024, help="hidden layer width of the MLP (default 1024)")
    parser.add_argument(
        "--batch-overhead-ms",
        type=float,
        default=2.0,
        help="sleep added to every model call, standing in for a GPU's fixed per-call cost (default 2)",
    )
    parser.add_argument("--max-batch-size", type=int, default=32, help="batching server's MAX_BATCH_SIZE (default 32)")
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="batching server's MAX_WAIT_MS (default 2)")
    parser.add_argument("--max-queue", type=int, default=128, help="MAX_QUEUE of both servers (default 128)")
    parser.add_argument("--concurrency", type=int, default=256, help="load generator's outstanding cap (default 256)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of light load before each run (default 0.5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    for name in ("rps", "duration", "model_hidden", "max_batch_size", "max_queue", "concurrency"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0 (got {getattr(args, name)})")
    for name in ("batch_overhead_ms", "max_wait_ms", "warmup"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(args, name)})")
    return args


def model_cost_ms(path: Path, batch: int, calls: int = 50) -> float:
    """Median wall time of one model call of `batch` rows, in this process."""
    model = load_model(str(path))
    rows = [[0.1] * model.input_size for _ in range(batch)]
    for _ in range(5):
        model.predict(rows)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        model.predict(rows)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def start_server(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it; closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "workloads.server"],
        cwd=ROOT,
        env={**os.environ, "HOST": "127.0.0.1", "PORT": "0", **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc, wait_listening(proc, log_path, "server")


async def wait_ready(url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} never became ready")


async def batch_totals(url: str) -> tuple[float, float]:
    """(sum, count) of inference_batch_size so far."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    found = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return found.get("inference_batch_size_sum", 0.0), found.get("inference_batch_size_count", 0.0)


def bench_one(label: str, max_batch: int, model_path: Path, args: argparse.Namespace, workdir: Path) -> Run:
    env = {
        "MODEL_PATH": str(model_path),
        "MAX_BATCH_SIZE": str(max_batch),
        "MAX_WAIT_MS": str(args.max_wait_ms if max_batch > 1 else 0),
        "MAX_QUEUE": str(args.max_queue),
        "EXTRA_BATCH_LATENCY_MS": str(args.batch_overhead_ms),
    }
    proc, url = start_server(env, workdir / f"server-{max_batch}.log")
    try:
        asyncio.run(wait_ready(url))
        # Warm-up (first calls, connection pool): not counted.
        if args.warmup:
            asyncio.run(
                run_load(LoadSpec(url=url, rps=max(min(50.0, args.rps), 2 / args.warmup), duration_s=args.warmup))
            )
        before = asyncio.run(batch_totals(url))
        spec = LoadSpec(url=url, rps=args.rps, duration_s=args.duration, concurrency=args.concurrency)
        report = asyncio.run(run_load(spec))
        after = asyncio.run(batch_totals(url))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    calls = after[1] - before[1]
    return Run(label, max_batch, report, (after[0] - before[0]) / calls if calls else None)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def render(runs: list[Run], header: list[str]) -> str:
    batched, single = runs
    rows = [
        ("ok throughput", [f"{r.report.ok_throughput_rps:.1f} rps" for r in runs]),
        ("sent", [f"{r.report.sent} of {r.report.planned}" for r in runs]),
        ("p50 latency", [_ms(r.report.percentile_ms(50)) for r in runs]),
        ("p99 latency", [_ms(r.report.percentile_ms(99)) for r in runs]),
        ("mean batch", ["-" if r.mean_batch is None else f"{r.mean_batch:.1f} rows" for r in runs]),
        ("errors", [_errors(r.report) for r in runs]),
    ]
    width = max(len(r.label) for r in runs) + 4
    lines = [*header, "", " " * 16 + "".join(f"{r.label:>{width}}" for r in runs)]
    lines += [f"{name:<16}" + "".join(f"{v:>{width}}" for v in values) for name, values in rows]
    lines.append("")
    throughput = _ratio(batched.report.ok_throughput_rps, single.report.ok_throughput_rps)
    p99 = _ratio(single.report.percentile_ms(99), batched.report.percentile_ms(99))
    lines.append(f"ratio: throughput batching/none = {throughput}; p99 latency none/batching = {p99}")
    if batched.report.ok == batched.report.planned:
        lines.append(
            "note: the batching server answered every request, so its throughput is the offered load and the "
            "throughput ratio is a lower bound; raise --rps to find its limit"
        )
    return "\n".join(lines)


def _errors(report: LoadReport) -> str:
    parts = [f"{s}:{n}" for s, n in sorted(report.statuses.items()) if not s.startswith("2")]
    parts += [f"{k}:{n}" for k, n in sorted(report.connection_errors.items())]
    if report.dropped:
        parts.append(f"dropped:{report.dropped}")
    return " ".join(parts) or "none"


def _ratio(a: float | None, b: float | None) -> str:
    return f"x{a / b:.2f}" if a and b else "n/a"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        workdir = Path(tmp)
        model_path = build_model(workdir / f"mlp-h{args.model_hidden}.onnx", hidden_size=args.model_hidden)
        provider = load_model(str(model_path)).provider
        cost_1, cost_n = model_cost_ms(model_path, 1), model_cost_ms(model_path, args.max_batch_size)
        runs = [
            bench_one(f"batching (max {args.max_batch_size})", args.max_batch_size, model_path, args, workdir),
            bench_one("no batching (max 1)", 1, model_path, args, workdir),
        ]
    header = [
        "Dynamic batching benchmark: the same open-loop load against two servers, one after the other",
        f"model     MLP {DEFAULT_INPUT_SIZE} -> {args.model_hidden} -> 4, ONNX Runtime on {provider}; "
        f"measured model call: batch 1 = {cost_1:.3f} ms, batch {args.max_batch_size} = {cost_n:.3f} ms",
        f"emulated  +{args.batch_overhead_ms:g} ms sleep per model call (stand-in for a GPU's fixed per-call cost: "
        "launch, copies, sync) - a sleep, not compute",
        f"load      {args.rps:g} rps for {args.duration:g} s per server, 1 row per request, at most "
        f"{args.concurrency} outstanding; MAX_QUEUE={args.max_queue}, batching MAX_WAIT_MS={args.max_wait_ms:g}",
        f"machine   {os.cpu_count()} CPUs shared by the load generator and the server: absolute numbers are "
        "this machine's, the ratios are the point",
    ]
    if args.json:
        print(json.dumps({"header": header, "runs": [r.to_dict() for r in runs]}, indent=2))
    else:
        print(render(runs, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
