"""The load loop and its report (the command line is in __main__.py)."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

PREDICT_PATH = "/v1/predict"
# A run is bounded in count as well as in time.
MAX_REQUESTS = 1_000_000
ARRIVALS = ("poisson", "uniform")


@dataclass(frozen=True)
class LoadSpec:
    url: str
    rps: float
    duration_s: float
    concurrency: int = 64
    rows: int = 1
    input_size: int = 16
    timeout_s: float = 10.0
    seed: int = 0
    # Sent as the Host header: a proxy such as the KEDA HTTP interceptor routes by it.
    host_header: str | None = None
    # "poisson": exponential gaps of mean 1/rps (random, like independent clients);
    # "uniform": exactly 1/rps apart (phase-locks with a batching server, see __init__.py).
    arrivals: str = "poisson"

    def __post_init__(self) -> None:
        problems = []
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(f"--url must be an http:// or https:// URL (got {self.url!r})")
        for name, value in (("--rps", self.rps), ("--duration", self.duration_s), ("--timeout", self.timeout_s)):
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name} must be a number > 0 (got {value})")
        for name, value in (
            ("--concurrency", self.concurrency),
            ("--rows", self.rows),
            ("--input-size", self.input_size),
        ):
            if value < 1:
                problems.append(f"{name} must be an integer >= 1 (got {value})")
        if self.arrivals not in ARRIVALS:
            problems.append(f"--arrivals must be one of {', '.join(ARRIVALS)} (got {self.arrivals!r})")
        if self.host_header is not None and not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]+)?", self.host_header):
            problems.append(f"--host-header must be a host name such as llm.inference (got {self.host_header!r})")
        if not problems and self.total > MAX_REQUESTS:
            problems.append(f"--rps x --duration must be at most {MAX_REQUESTS} requests (got {self.total})")
        if not problems and self.total < 1:
            problems.append(f"--rps x --duration must make at least one request (got {self.rps} x {self.duration_s})")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def total(self) -> int:
        return int(self.rps * self.duration_s)

    def schedule(self) -> list[float]:
        """When each of the `total` requests is due, in seconds after the start (seeded: repeatable)."""
        if self.arrivals == "uniform":
            return [i / self.rps for i in range(self.total)]
        rng = random.Random(f"arrivals-{self.seed}")
        due, at = [], 0.0
        for _ in range(self.total):
            due.append(at)
            at += rng.expovariate(self.rps)
        return due

    @property
    def endpoint(self) -> str:
        """The predict URL: `--url` as given, or with /v1/predict added when it has no path."""
        parts = urlsplit(self.url)
        if parts.path in ("", "/"):
            return urlunsplit(parts._replace(path=PREDICT_PATH))
        return self.url


@dataclass
class LoadReport:
    target_rps: float
    duration_s: float
    planned: int
    sent: int = 0
    dropped: int = 0
    ok: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    connection_errors: Counter[str] = field(default_factory=Counter)
    send_window_s: float = 0.0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list, repr=False)

    @property
    def achieved_rps(self) -> float:
        """Requests actually sent per second of the sending window."""
        return self.sent / self.send_window_s if self.send_window_s > 0 else 0.0

    @property
    def ok_throughput_rps(self) -> float:
        """OK answers per second, from the first send to the last answer."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2")) + sum(
            self.connection_errors.values()
        )

    def percentile_ms(self, q: float) -> float | None:
        """Nearest-rank percentile of the OK latencies, in ms (None without OK answers)."""
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1] * 1000

    def to_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "target_rps": self.target_rps,
            "duration_s": self.duration_s,
            "planned": self.planned,
            "sent": self.sent,
            "dropped_at_concurrency_cap": self.dropped,
            "ok": self.ok,
            "achieved_rps": rounded(self.achieved_rps),
            "ok_throughput_rps": rounded(self.ok_throughput_rps),
            "latency_ms": {
                "p50": rounded(self.percentile_ms(50)),
                "p99": rounded(self.percentile_ms(99)),
                "max": rounded(max(self.latencies_s) * 1000 if self.latencies_s else None),
            },
            "errors": {
                "total": self.errors,
                "by_status": dict(sorted((s, n) for s, n in self.statuses.items() if not s.startswith("2"))),
                "connection": dict(sorted(self.connection_errors.items())),
            },
        }

    def to_text(self) -> str:
        p50, p99 = self.percentile_ms(50), self.percentile_ms(99)
        latency = "no OK answers" if p50 is None else f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (OK answers)"
        bad = {s: n for s, n in sorted(self.statuses.items()) if not s.startswith("2")}
        error_parts = [f"HTTP {s}: {n}" for s, n in bad.items()]
        error_parts += [f"{kind}: {n}" for kind, n in sorted(self.connection_errors.items())]
        return "\n".join(
            [
                f"target    {self.target_rps:g} rps for {self.duration_s:g} s = {self.planned} requests",
                f"sent      {self.sent} ({self.achieved_rps:.1f} rps achieved), "
                f"dropped {self.dropped} at the concurrency cap",
                f"ok        {self.ok} ({self.ok_throughput_rps:.1f} rps throughput)",
                f"latency   {latency}",
                f"errors    {', '.join(error_parts) if error_parts else 'none'}",
            ]
        )


def _payload(rng: random.Random, rows: int, input_size: int) -> bytes:
    inputs = [[round(rng.uniform(-1.0, 1.0), 4) for _ in range(input_size)] for _ in range(rows)]
    return json.dumps({"inputs": inputs}).encode()


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    report: LoadReport,
    clock: list[float],
) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            status = resp.status
    except TimeoutError:
        report.connection_errors["timeout"] += 1
    except aiohttp.ClientError as exc:
        report.connection_errors[type(exc).__name__] += 1
    else:
        report.statuses[str(status)] += 1
        if 200 <= status < 300:
            report.ok += 1
            report.latencies_s.append(time.perf_counter() - started)
    clock[0] = max(clock[0], time.perf_counter())


async def run_load(spec: LoadSpec) -> LoadReport:
    """Send `spec.total` requests at `spec.rps`, at most `spec.concurrency` outstanding; wait for all."""
    report = LoadReport(spec.rps, spec.duration_s, spec.total)
    rng = random.Random(spec.seed)
    # A handful of distinct bodies: building JSON per request would cost the client more than the server.
    bodies = [_payload(rng, spec.rows, spec.input_size) for _ in range(16)]
    endpoint = spec.endpoint
    headers = {"Content-Type": "application/json"}
    if spec.host_header:
        headers["Host"] = spec.host_header
    connector = aiohttp.TCPConnector(limit=spec.concurrency)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    outstanding: set[asyncio.Task[None]] = set()
    last_answer = [0.0]
    due = spec.schedule()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        for i in range(spec.total):
            delay = start + due[i] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(outstanding) >= spec.concurrency:
                report.dropped += 1
                continue
            task = asyncio.create_task(_one(session, endpoint, bodies[i % len(bodies)], headers, report, last_answer))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
            report.sent += 1
        # The window in which request i was due: i / rps, so `total` requests span total / rps.
        report.send_window_s = max(time.perf_counter() - start, spec.total / spec.rps)
        if outstanding:
            await asyncio.gather(*outstanding)
        report.elapsed_s = max(last_answer[0], start) - start
    return report
