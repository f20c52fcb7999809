"""`python -m infra.preflight --stack NAME [--config FILE] [--region R] [--json]`

Exit 0: nothing blocks (warnings may be printed). Exit 1: a blocker (each named
with pool, zone or quota, found vs needed), or the checks could not run
(credentials, region, API access; one line, no traceback). Exit 2: invalid
stack config (key-path errors, as the plan prints them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infra.settings import ConfigError


def main(argv: list[str] | None = None, session=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.preflight", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", required=True, help="stack name; reads Pulumi.<stack>.yaml unless --config")
    parser.add_argument("--config", type=Path, help="a stack config file in Pulumi.<stack>.yaml format")
    parser.add_argument("--region", help="AWS region to check (default: the stack's aws:region)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    from infra.plan.run import ROOT, read_stack_file
    from infra.preflight import aws, checks, report
    from infra.settings import Settings, raw_from_stack_config

    config_file = args.config or ROOT / f"Pulumi.{args.stack}.yaml"
    try:
        settings = Settings.from_raw(raw_from_stack_config(read_stack_file(config_file)[0]))
    except ConfigError as exc:
        print(f"error: invalid stack config in {config_file}:", file=sys.stderr)
        for line in exc.lines:
            print(f"  {line}", file=sys.stderr)
        return 2
    region = args.region or settings.region
    if session is None:
        import boto3

        session = boto3.Session()
    try:
        facts = aws.gather(session, settings, region)
    except aws.PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = checks.evaluate(settings, facts)
    print(report.as_json(result) if args.json else report.text(result))
    for finding in result.blockers:
        print(finding.line(), file=sys.stderr)
    return 1 if result.blockers else 0


if __name__ == "__main__":
    sys.exit(main())
