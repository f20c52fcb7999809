"""How fast the reference server is, old against new, measured side by side in one run.

    python -m bench.server_speed [--baseline ab505c1] [--repeats 3] [--duration 2] [--nice -10] [--json]

Rows (each a fresh server process on 127.0.0.1, pinned to one core):
- `today`: the server of the `--baseline` commit (default ab505c1, the day issue 16 was
  filed), exported with `git archive REF workloads` into a temp dir and run from there
  under the same environment knobs (checked: a knob its config does not read stops the
  run); `new`: the working tree. Each with batching (MAX_BATCH_SIZE=32,
  MAX_WAIT_MS=5, the defaults) and without (MAX_BATCH_SIZE=1), and each of those with
  and without `--gpu-stand-in-ms` (EXTRA_BATCH_LATENCY_MS: a sleep per model call,
  standing in for a GPU's fixed per-call cost; a sleep, not compute).
- `ceiling`: an aiohttp app that reads the body and answers a constant, on asyncio's
  loop and on uvloop: what the HTTP stack alone allows on one core.
- ONNX Runtime alone, in process, on the server's core: rows/s at batch 32 and calls/s
  at batch 1 (no HTTP, no JSON).

The load: an open-loop client with random (Poisson) arrivals, written here on raw
asyncio protocols over keep-alive connections (`--connections`, opened before the run),
so that the client, on the other core, is far cheaper per request than the server
(the project's aiohttp-based load generator would saturate first). Latency is
measured from each request's *scheduled* time, so a request the client could not send
at once (every connection busy) counts its wait too (no coordinated omission).

Per row it finds the highest throughput whose p99 is <= `--p99-ms` (stepping the
offered rate up, then bisecting between the last rate that met it and the first that
did not; a failed step is measured once more, and passes if that does: one stall of
another process on a shared machine should not end the search; a step passes when every request is answered 2xx, the answered rate is >= 95 %
of the offered one and the p99 meets the bound), and the p50 at `--p50-rates`. Repeats
are interleaved (every row once, then every row again), and the table shows the median
of the repeats with their range. `--nice -10` (as root) gives the server processes the
larger share of their core where other jobs run on the same machine. Per row it also reads
the server's CPU time per answered request at `--cpu-rate` (at most half the row's max) from
/proc: what a request costs the server's core, which the max column cannot show once the
client is the slower side. No assertion is made on the numbers; the tests only run it in a
tiny mode.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

from bench.processes import ROOT, export_ref, missing_knobs, start_process, stop, wait_ready
from bench.speed_report import render
from workloads.model import build_model, load_model

# The `today` rows' commit: the server on the day issue 16 (its speed goal) was filed.
BASELINE = "ab505c1"
# Niceness added to each server process (main() sets it from --nice).
SERVER_NICE = 0
# How long, after the last scheduled request, the client waits for the answers still due.
SETTLE_S = 5.0
HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)

# The HTTP-only ceiling: the same aiohttp server setup (no access log), a constant answer.
CEILING_APP = """
import asyncio, os, socket, sys
from aiohttp import web
if sys.argv[1] == "uvloop":
    import uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
BODY = b'{"outputs": [[0.1, 0.2, 0.3, 0.4]], "model": "constant", "batch_size": 1}'
async def predict(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
async def ready(request):
    return web.Response(text="ready")
async def main():
    app = web.Application()
    app.router.add_post("/v1/predict", predict)
    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    await web.SockSite(runner, sock).start()
    print("listening on http://127.0.0.1:%d" % sock.getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    kind: str  # "server" or "ceiling"
    source: str = "new"  # server: "today" or "new"; ceiling: the loop ("asyncio" or "uvloop")
    max_batch: int = 32
    stand_in_ms: float = 0.0


def variants(stand_in_ms: float) -> list[Variant]:
    rows = []
    for extra in (0.0, stand_in_ms):
        suffix = f" +{extra:g}ms" if extra else ""
        tag = f"-gpu{extra:g}" if extra else ""
        for source in ("today", "new"):
            rows.append(Variant(f"{source}-batched{tag}", f"{source} batching{suffix}", "server", source, 32, extra))
            rows.append(Variant(f"{source}-b1{tag}", f"{source} batch 1{suffix}", "server", source, 1, extra))
    rows.append(Variant("ceiling-asyncio", "aiohttp constant (asyncio)", "ceiling", "asyncio"))
    rows.append(Variant("ceiling-uvloop", "aiohttp constant (uvloop)", "ceiling", "uvloop"))
    return rows


@dataclass
class Step:
    rate: float
    sent: int
    ok: int
    errors: int
    throughput: float
    p50_ms: float | None
    p99_ms: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class Result:
    variant: Variant
    max_rps: float | None
    p50_at: dict[float, float | None]
    steps: list[Step] = field(default_factory=list)
    # Server CPU time per answered request at a fixed rate every row sustains: what a request
    # costs the server's core, which max_rps cannot show once the client is the slower side.
    cpu_us: float | None = None


# -- the load client -----------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due: float | None = None  # the scheduled time of the request it carries

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, due: float, request: bytes) -> None:
        assert self.transport is not None
        self.due = due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(HEADER_END)
        if end < 0:
            return
        found = CONTENT_LENGTH.search(self.buffer, 0, end + 2)
        length = int(found.group(1)) if found else 0
        if len(self.buffer) < end + 4 + length:
            return
        status = int(self.buffer[9:12])
        del self.buffer[: end + 4 + length]
        due, self.due = self.due, None
        if due is not None:
            self.client.answered(self, due, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(self)


class _Client:
    def __init__(self, host: str, port: int, requests: list[bytes], connections: int) -> None:
        self.host, self.port, self.requests, self.connections = host, port, requests, connections
        self.idle: list[_Connection] = []
        self.backlog: collections.deque[float] = collections.deque()
        self.latencies: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.lost_requests = 0
        self.outstanding = 0
        self.last_answer = 0.0
        self.sent = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.connections):
            _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
            self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle = []

    def dispatch(self, due: float) -> None:
        self.outstanding += 1
        if self.idle:
            self._send(self.idle.pop(), due)
        else:
            self.backlog.append(due)

    def _send(self, conn: _Connection, due: float) -> None:
        self.sent += 1
        conn.send(due, self.requests[self.sent % len(self.requests)])

    def answered(self, conn: _Connection, due: float, status: int) -> None:
        now = time.perf_counter()
        self.outstanding -= 1
        self.last_answer = now
        self.statuses[status] += 1
        if 200 <= status < 300:
            self.latencies.append(now - due)
        if self.backlog:
            self._send(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)

    def lost(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.due is not None:
            conn.due = None
            self.outstanding -= 1
            self.lost_requests += 1


def _request_bytes(rng: random.Random, input_size: int) -> bytes:
    body = json.dumps({"inputs": [[round(rng.uniform(-1.0, 1.0), 4) for _ in range(input_size)]]}).encode()
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _offer(url: str, rate: float, duration: float, connections: int, seed: int) -> Step:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    rng = random.Random(seed)
    client = _Client(host, int(port), [_request_bytes(rng, 16) for _ in range(16)], connections)
    await client.open()
    due, at = [], rng.expovariate(rate)
    while at < duration:
        due.append(at)
        at += rng.expovariate(rate)
    start = time.perf_counter()
    i = 0
    while i < len(due):
        now = time.perf_counter() - start
        while i < len(due) and due[i] <= now:
            client.dispatch(start + due[i])
            i += 1
        if i < len(due):
            wait = due[i] - (time.perf_counter() - start)
            # The loop's timers have millisecond resolution: sleep to just before the next
            # arrival, then spin (sleep(0) still polls the sockets), so arrivals stay random.
            await asyncio.sleep(wait - 0.0015 if wait > 0.002 else 0)
    settle = time.perf_counter() + SETTLE_S + 1.0
    while client.outstanding > 0 and time.perf_counter() < settle:
        await asyncio.sleep(0.001)
    client.close()
    ok = len(client.latencies)
    errors = len(due) - ok
    elapsed = max(client.last_answer - start, duration)
    ordered = sorted(client.latencies)

    def pct(q: float) -> float | None:
        return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1] * 1000 if ordered else None

    return Step(rate, len(due), ok, errors, ok / elapsed, pct(50), pct(99), False)


def offer(url: str, rate: float, duration: float, connections: int, seed: int, p99_ms: float) -> Step:
    step = uvloop.run(_offer(url, rate, duration, connections, seed))
    step.passed = bool(
        step.sent
        and step.errors == 0
        and step.throughput >= 0.95 * step.sent / duration
        and step.p99_ms is not None
        and step.p99_ms <= p99_ms
    )
    return step


def measurer(url: str, args: argparse.Namespace) -> Callable[[float], Step]:
    """One measured step per call (fresh seeds): a warm-up first, not counted; a failed step is
    measured once more with `args.retry`, since a shared machine's hiccup is not the server's."""
    offer(url, 50, args.warmup, args.connections, 1, args.p99_ms)
    seed = iter(range(100, 10_000))

    def measure(rate: float) -> Step:
        step = offer(url, rate, args.duration, args.connections, next(seed), args.p99_ms)
        if not step.passed and args.retry:
            again = offer(url, rate, args.duration, args.connections, next(seed), args.p99_ms)
            step = again if again.passed else step
        return step

    return measure


def find_max(
    measure: Callable[[float], Step], start: float, growth: float, max_steps: int
) -> tuple[float | None, list[Step]]:
    """Highest passing throughput: step the rate up by `growth` until a step fails, then
    bisect (geometrically) twice between the last pass and the first failure."""
    steps: list[Step] = []
    rate, passed, failed = start, None, None
    while len(steps) < max_steps:
        step = measure(rate)
        steps.append(step)
        if step.passed:
            passed = rate
            if failed is None:
                rate *= growth
                continue
        else:
            failed = rate
            if passed is None:
                rate /= growth  # even the first rate failed: go down
                if rate < 1:
                    break
                continue
        if passed is not None and failed is not None:
            if failed / passed < 1.08:
                break
            rate = math.sqrt(passed * failed)
    best = [s.throughput for s in steps if s.passed]
    return (max(best) if best else None), steps


# -- the servers -------------------------------------------------------------------------


def launch(
    v: Variant, model_path: Path, today_dir: Path, core: int, workdir: Path
) -> tuple[subprocess.Popen[bytes], str]:
    log_path = workdir / f"{v.key}.log"
    if v.kind == "ceiling":
        return start_process([sys.executable, "-c", CEILING_APP, v.source], workdir, {}, core, log_path, SERVER_NICE)
    cwd = today_dir if v.source == "today" else ROOT
    env = {
        "HOST": "127.0.0.1",
        "PORT": "0",
        "PYTHONPATH": str(cwd),  # `workloads` from that tree, whatever is installed
        "MODEL_PATH": str(model_path),
        "MAX_BATCH_SIZE": str(v.max_batch),
        "MAX_WAIT_MS": "5" if v.max_batch > 1 else "0",
        "EXTRA_BATCH_LATENCY_MS": f"{v.stand_in_ms:g}",
    }
    return start_process([sys.executable, "-m", "workloads.server"], cwd, env, core, log_path, SERVER_NICE)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_request(
    pid: int, url: str, rate: float, args: argparse.Namespace, seed: int = 7
) -> tuple[float | None, Step]:
    """Server CPU microseconds per answered request while the client offers `rate` (a rate below
    the server's max, so neither queueing nor the client's limit enters the cost)."""
    before = process_cpu_seconds(pid)
    step = offer(url, rate, args.cpu_seconds, args.connections, seed, args.p99_ms)
    spent = process_cpu_seconds(pid) - before
    return (spent / step.ok * 1e6 if step.ok and step.errors == 0 else None), step


def bench_variant(
    v: Variant, args: argparse.Namespace, ctx: dict[str, Any], start_rate: float, growth: float
) -> Result:
    proc, url = launch(v, ctx["model"], ctx["today"], ctx["server_core"], ctx["workdir"])
    try:
        wait_ready(url)
        measure = measurer(url, args)
        best, steps = find_max(measure, start_rate, growth, args.max_steps)
        p50_at = {}
        if v.kind == "server":
            for rate in args.p50_rates:
                step = measure(rate)
                steps.append(step)
                p50_at[rate] = step.p50_ms if step.passed else None
        cpu_us = None
        if best and args.cpu_rate > 0:
            cpu_us, step = cpu_per_request(proc.pid, url, min(args.cpu_rate, best / 2), args)
            steps.append(step)
    finally:
        stop(proc)
    return Result(v, best, p50_at, steps, cpu_us)


def ort_alone(model_path: Path, core: int, seconds: float) -> dict[str, float]:
    """ONNX Runtime alone on the server's core: rows/s at batch 32, calls/s at batch 1."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        model = load_model(str(model_path))
        out = {}
        for batch in (32, 1):
            rows = np.random.default_rng(0).uniform(-1, 1, (batch, model.input_size)).astype(np.float32)
            for _ in range(20):
                model.predict_array(rows)
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                model.predict_array(rows)
                calls += 1
            out[f"batch{batch}_calls_per_s"] = calls / (time.perf_counter() - started)
        out["batch32_rows_per_s"] = out["batch32_calls_per_s"] * 32
        return out
    finally:
        os.sched_setaffinity(0, before)


# -- the run and its table -----------------------------------------------------------------


def load_parser(prog: str, doc: str | None, p50_rates: str) -> argparse.ArgumentParser:
    """The options of the load and the search, shared by this benchmark and bench/peers.py."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every row (default 3)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of load per step (default 2)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of light load before each row (default 0.5)")
    parser.add_argument("--p99-ms", type=float, default=50.0, help="latency bound for the max throughput (default 50)")
    parser.add_argument(
        "--p50-rates", default=p50_rates, help=f"rates at which the p50 is reported (default {p50_rates})"
    )
    parser.add_argument(
        "--start-rate", type=float, default=400.0, help="first offered rate of the search (default 400)"
    )
    parser.add_argument("--max-steps", type=int, default=10, help="most search steps per row and repeat (default 10)")
    parser.add_argument("--connections", type=int, default=128, help="client keep-alive connections (default 128)")
    parser.add_argument("--no-retry", dest="retry", action="store_false", help="do not measure a failed step once more")
    return parser


def check_load_args(parser: argparse.ArgumentParser, args: argparse.Namespace, positive: tuple[str, ...]) -> None:
    """`--p50-rates` as numbers, and every option named in `positive` > 0 (or the parser errors)."""
    try:
        args.p50_rates = [float(r) for r in args.p50_rates.split(",") if r]
    except ValueError:
        parser.error(f"--p50-rates must be comma-separated numbers (got {args.p50_rates!r})")
    for name in positive:
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0 (got {getattr(args, name)})")


LOAD_OPTIONS = ("repeats", "duration", "p99_ms", "start_rate", "max_steps", "connections")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = load_parser("python -m bench.server_speed", __doc__, "300,600")
    parser.add_argument("--gpu-stand-in-ms", type=float, default=2.0, help="EXTRA_BATCH_LATENCY_MS rows (default 2)")
    parser.add_argument(
        "--cpu-rate",
        type=float,
        default=2000.0,
        help="offered rate of the server-CPU-per-request step (at most half the row's max; 0: none; default 2000)",
    )
    parser.add_argument("--cpu-seconds", type=float, default=4.0, help="seconds of that step (default 4)")
    parser.add_argument("--variants", help="comma-separated row keys to run (default: all)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness added to every server process, e.g. -10 so that other jobs on a shared machine "
        "take less of the server's core (below 0 needs root; default 0)",
    )
    parser.add_argument(
        "--baseline", default=BASELINE, help=f"commit whose server the `today` rows run (default {BASELINE})"
    )
    args = parser.parse_args(argv)
    check_load_args(parser, args, LOAD_OPTIONS)
    known = {v.key for v in variants(args.gpu_stand_in_ms)}
    args.variants = args.variants.split(",") if args.variants else None
    unknown = sorted(set(args.variants or ()) - known)
    if unknown:
        parser.error(f"--variants: unknown {unknown}; known: {sorted(known)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    global SERVER_NICE
    SERVER_NICE = args.nice
    cores = sorted(os.sched_getaffinity(0))
    server_core, client_core = cores[0], cores[-1]
    os.sched_setaffinity(0, {client_core})
    chosen = [v for v in variants(args.gpu_stand_in_ms) if args.variants is None or v.key in args.variants]
    results: dict[str, list[Result]] = {v.key: [] for v in chosen}
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        workdir = Path(tmp)
        try:
            today = export_ref(workdir / "today", args.baseline)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        knobs = ["HOST", "PORT", "MODEL_PATH", "MAX_BATCH_SIZE", "MAX_WAIT_MS"]
        knobs += ["EXTRA_BATCH_LATENCY_MS"] if any(v.stand_in_ms for v in chosen if v.source == "today") else []
        if missing := missing_knobs(today, knobs):
            print(f"--baseline {args.baseline}: its server does not read {', '.join(missing)}", file=sys.stderr)
            return 2
        ctx = {
            "model": build_model(workdir / "mlp.onnx"),
            "today": today,
            "server_core": server_core,
            "workdir": workdir,
        }
        ort = ort_alone(ctx["model"], server_core, min(1.0, args.duration))
        for repeat in range(args.repeats):
            for v in chosen:
                done = [r.max_rps for r in results[v.key] if r.max_rps]
                # Later repeats search near the first one's answer, in finer steps.
                start, growth = (0.85 * statistics.median(done), 1.1) if done else (args.start_rate, 1.5)
                results[v.key].append(bench_variant(v, args, ctx, start, growth))
                print(f"repeat {repeat + 1}/{args.repeats} {v.label}: {results[v.key][-1].max_rps}", file=sys.stderr)
    header = [
        "Server speed: one server core, Poisson open-loop client on another, every row in this one run",
        f"cores     server on CPU {server_core}, client on CPU {client_core}"
        + (" (the same CPU: this machine has one)" if server_core == client_core else ""),
        f"model     reference MLP (ONNX Runtime CPU); rows +{args.gpu_stand_in_ms:g}ms: EXTRA_BATCH_LATENCY_MS sleep "
        "per model call, a stand-in for a GPU's per-call cost (a sleep, not compute)",
        f"load      1 row per request, {args.connections} keep-alive connections, {args.duration:g} s per step, "
        f"{args.repeats} interleaved repeats (median, range); max rps: p99 <= {args.p99_ms:g} ms, no errors"
        + (f"; servers at nice {args.nice:+d}" if args.nice else ""),
        f"today     the server of {args.baseline} (git archive {args.baseline}); new: the working tree; batching = MAX_BATCH_SIZE=32 "
        "MAX_WAIT_MS=5",
    ]
    if args.json:
        rows = {k: [{"max_rps": r.max_rps, "p50_at": r.p50_at, "cpu_us": r.cpu_us, "steps": [s.to_dict() for s in r.steps]} for r in runs]
                for k, runs in results.items()}  # fmt: skip
        print(json.dumps({"header": header, "ort": ort, "rows": rows}, indent=2))
    else:
        print(render(results, ort, header, args.p50_rates, f"-gpu{args.gpu_stand_in_ms:g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
