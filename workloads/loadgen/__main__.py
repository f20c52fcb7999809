"""`python -m workloads.loadgen`: see the package docstring."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from workloads.loadgen.core import LoadSpec, run_load


def parse_args(argv: Sequence[str] | None) -> tuple[LoadSpec, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m workloads.loadgen",
        description="Open-loop load at a given request rate (random arrivals by default) against POST /v1/predict.",
    )
    parser.add_argument(
        "--url", required=True, help="server base URL (/v1/predict is added when it has no path) or full predict URL"
    )
    parser.add_argument("--rps", type=float, required=True, help="requests per second to send (> 0)")
    parser.add_argument("--duration", type=float, required=True, help="seconds to send for (> 0)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="most requests outstanding at once; requests due beyond it are dropped and counted (default 64)",
    )
    parser.add_argument("--rows", type=int, default=1, help="input rows per request (default 1)")
    parser.add_argument("--input-size", type=int, default=16, help="numbers per input row (default 16)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a request counts as timed out")
    parser.add_argument(
        "--host-header",
        help="Host header to send, for a proxy that routes by it (the KEDA HTTP interceptor: SERVICE.NAMESPACE)",
    )
    parser.add_argument(
        "--arrivals",
        default="poisson",
        help="poisson (random, exponential gaps; the default) or uniform (exactly 1/rps apart)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        spec = LoadSpec(
            url=args.url,
            rps=args.rps,
            duration_s=args.duration,
            concurrency=args.concurrency,
            rows=args.rows,
            input_size=args.input_size,
            timeout_s=args.timeout,
            host_header=args.host_header,
            arrivals=args.arrivals,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return spec, args.json


def main(argv: Sequence[str] | None = None) -> int:
    spec, as_json = parse_args(argv)
    report = asyncio.run(run_load(spec))
    print(json.dumps(report.to_dict(), indent=2) if as_json else report.to_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
