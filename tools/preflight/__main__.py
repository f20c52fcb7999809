"""`python -m tools.preflight --stack NAME [--config FILE] [--region R] [--json]`

Checks, before `pulumi up`, that the AWS account behind the standard credential
chain can provide what the stack asks for: its pools' instance families in its
zones, the GPU vCPU quotas their limits can reach, and the AMIs their nodes boot.

Exit 0: nothing blocks (warnings may be printed). Exit 1: a blocker (each named
on stderr with pool, zone or quota, found vs needed), or the checks could not
run (credentials, region, permissions, throttling: one `error:` line, no
traceback). Exit 2: invalid stack config (key-path errors, as the plan prints them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from domain.settings import ConfigError

OK, BLOCKED, INVALID_CONFIG = 0, 1, 2
DESCRIPTION = "Check that the target AWS account can provide what a stack's config asks for."


def main(argv: list[str] | None = None, session: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.preflight", description=DESCRIPTION)
    parser.add_argument("--stack", required=True, help="stack name; reads Pulumi.<stack>.yaml unless --config")
    parser.add_argument("--config", type=Path, help="a stack config file in Pulumi.<stack>.yaml format")
    parser.add_argument("--region", help="AWS region to check (default: the stack's aws:region)")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    args = parser.parse_args(argv)

    # Imports after argument parsing so `--help` stays fast.
    from domain.settings import Settings, raw_from_stack_config
    from tools.plan.run import ROOT, read_stack_file
    from tools.preflight import aws, checks, report

    config_file = args.config or ROOT / f"Pulumi.{args.stack}.yaml"
    try:
        config, _secret_keys = read_stack_file(config_file)
        settings = Settings.from_raw(raw_from_stack_config(config))
    except ConfigError as exc:
        print(f"error: invalid stack config in {config_file}:", file=sys.stderr)
        for line in exc.lines:
            print(f"  {line}", file=sys.stderr)
        return INVALID_CONFIG
    region = args.region or settings.region
    try:
        facts = aws.gather(session or aws.default_session(), settings, region)
    except aws.PreflightError as exc:
        print(f"error: preflight for stack {args.stack} in {region} could not run: {exc}", file=sys.stderr)
        return BLOCKED
    result = checks.evaluate(settings, facts)
    if args.json:
        print(report.as_json(result))
    else:
        report.text(result, sys.stdout)
    if result.blockers:
        print(f"preflight for stack {args.stack} in {region}: {len(result.blockers)} blocker(s)", file=sys.stderr)
        for finding in result.blockers:
            print(f"  {finding.line()}", file=sys.stderr)
        return BLOCKED
    return OK


if __name__ == "__main__":
    sys.exit(main())
