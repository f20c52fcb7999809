"""How fast does the autoscaler's signal see a load step, and its end? Ours vs the old setup.

    python -m bench.scale_signal [--stack dev] [--service llm] [--load-seconds 150] [--idle-seconds 180]

One reference server, one load step, two real Prometheus servers scraping it side by side:

- ours: the rendered ScaledObject's query (requests in flight) scraped at the
  ServiceMonitor's interval and polled at the ScaledObject's `pollingInterval`,
  against its `threshold`;
- old:  `sum(rate(inference_requests_total[2m]))`, scraped and polled every 30 s
  (the setup this project replaces), against the rate one replica can serve.

After the run, each trigger is replayed against Prometheus' history: for every
polling phase (1 s apart) the first poll at which the query crosses its
threshold gives a detection delay. Mean and worst over phases are printed, for
the step up (scale-out) and the step down (scale-in), with their ratios. Both
setups then wait the same HPA sync period (15 s) on top, which is left out.

The server adds a fixed delay per model call (EXTRA_BATCH_LATENCY_MS) standing
in for a model that takes that long on a GPU, so a replica's capacity is known:
MAX_BATCH_SIZE / delay. The load step offers twice that. Needs Debian's
prometheus package (scripts/install-prometheus.sh). Takes about
load + idle seconds plus a minute.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.prometheus import PrometheusServer, Target, prometheus_binary
from tests.workloads.helpers import ServerProcess
from tools.plan.run import ROOT, read_stack_file, run_program
from tools.plan.writer import is_manifest, manifest
from workloads.server.metric_names import REQUESTS_TOTAL

OLD_INTERVAL_S = 30
OLD_QUERY = f"sum(rate({REQUESTS_TOTAL}[2m]))"
DELAY_MS = 200


@dataclass(frozen=True)
class Trigger:
    name: str
    query: str
    threshold: float
    scrape_s: float
    poll_s: float


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_signal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--service", default="llm")
    parser.add_argument("--load-seconds", type=float, default=150.0)
    parser.add_argument("--idle-seconds", type=float, default=180.0)
    return parser.parse_args(argv)


def rendered(stack: str, service: str) -> tuple[dict, dict, dict[str, str]]:
    config, _ = read_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    _, resources = run_program(config, stack)
    objects = {(m["kind"], m["metadata"]["name"]): m for m in (manifest(r) for r in resources if is_manifest(r))}
    scaled, monitor = objects[("ScaledObject", service)], objects[("ServiceMonitor", service)]
    container = objects[("Deployment", service)]["spec"]["template"]["spec"]["containers"][0]
    return scaled, monitor, {e["name"]: e["value"] for e in container["env"]}


def value(prom: PrometheusServer, query: str, at: float) -> float:
    result = prom.query(query, at=at)
    return sum(s.value for s in result) if isinstance(result, list) else float(result)


def detection_delays(prom: PrometheusServer, trigger: Trigger, since: float, until: float, above: bool) -> list[float]:
    """Per polling phase: seconds from `since` to the first poll whose value is above (below) the threshold."""
    delays = []
    for phase in range(int(trigger.poll_s)):
        t = since + phase
        while t <= until:
            v = value(prom, trigger.query, t)
            if (v > trigger.threshold) if above else (v < trigger.threshold):
                delays.append(t - since)
                break
            t += trigger.poll_s
        else:
            delays.append(float("inf"))
    return delays


def summary(delays: list[float]) -> tuple[float, float]:
    return statistics.fmean(delays), max(delays)


def fmt(seconds: float) -> str:
    return "never" if seconds == float("inf") else f"{seconds:6.1f} s"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if prometheus_binary() is None:
        print("prometheus is not installed: run scripts/install-prometheus.sh", file=sys.stderr)
        return 2
    scaled, monitor, env = rendered(args.stack, args.service)
    trig = next(t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus")
    interval = monitor["spec"]["endpoints"][0]["interval"]
    capacity_rps = int(env["MAX_BATCH_SIZE"]) / (DELAY_MS / 1000)
    ours = Trigger(
        "ours: in flight",
        trig["metadata"]["query"],
        float(trig["metadata"]["threshold"]),
        float(interval.rstrip("s")),
        float(scaled["spec"]["pollingInterval"]),
    )
    old = Trigger("old: rate[2m]", OLD_QUERY, capacity_rps, OLD_INTERVAL_S, OLD_INTERVAL_S)
    env.update({"PORT": "0", "EXTRA_BATCH_LATENCY_MS": str(DELAY_MS)})
    rps = 2 * capacity_rps

    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "server.log", env=env)
        try:
            url = server.wait_listening()
            address = url.split("//", 1)[1].rstrip("/")
            labels = {"namespace": scaled["metadata"]["namespace"], "service": args.service, "pod": f"{args.service}-0"}
            with (
                PrometheusServer([Target(address, labels)], scrape_interval=interval) as fast,
                PrometheusServer([Target(address, labels)], scrape_interval=f"{OLD_INTERVAL_S}s") as slow,
            ):
                time.sleep(2 * OLD_INTERVAL_S)  # a baseline in both
                step_up = time.time()
                load = subprocess.run(
                    [sys.executable, "-m", "workloads.loadgen", "--url", url, "--rps", f"{rps:g}",
                     "--duration", f"{args.load_seconds:g}", "--concurrency", "512"],
                    cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, check=False,
                )  # fmt: skip
                step_down = time.time()
                time.sleep(args.idle_seconds)
                end = time.time()
                results = {}
                for trigger, prom in ((ours, fast), (old, slow)):
                    up = summary(detection_delays(prom, trigger, step_up, step_down, above=True))
                    down = summary(detection_delays(prom, trigger, step_down, end, above=False))
                    results[trigger.name] = (up, down)
        finally:
            server.stop()

    print("Scale-signal benchmark: one load step, two real Prometheus servers side by side")
    print(
        f"server    MAX_BATCH_SIZE={env['MAX_BATCH_SIZE']}, +{DELAY_MS} ms per model call: ~{capacity_rps:g} rps per replica"
    )
    print(
        f"load      {rps:g} rps for {args.load_seconds:g} s, then {args.idle_seconds:g} s idle; loadgen exit {load.returncode}"
    )
    for t in (ours, old):
        print(f"{t.name:17} {t.query}  > {t.threshold:g}  (scrape {t.scrape_s:g} s, poll {t.poll_s:g} s)")
    print()
    print(f"{'':17} {'scale-out mean':>15} {'worst':>10} {'scale-in mean':>15} {'worst':>10}")
    for name, ((up_mean, up_max), (down_mean, down_max)) in results.items():
        print(f"{name:17} {fmt(up_mean):>15} {fmt(up_max):>10} {fmt(down_mean):>15} {fmt(down_max):>10}")
    (o_up, _), (o_down, _) = results[ours.name]
    (l_up, _), (l_down, _) = results[old.name]
    print()
    print(
        f"ratio old/ours: scale-out x{l_up / max(o_up, 0.1):.1f}, scale-in x{l_down / max(o_down, 0.1):.1f} (mean detection delay)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
