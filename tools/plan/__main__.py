"""`python -m tools.plan --stack NAME --out DIR [--config FILE] [--policy-config FILE]`

Exit 0: plan written, no mandatory policy violation. Exit 2: invalid config
(key-path errors on stderr, nothing written). Exit 3: plan written, but a
mandatory policy is violated (named on stderr). Exit 1: the program itself failed,
or helm could not render one of its charts (nothing written).

The Helm releases are rendered with helm into rendered/ (tools/plan/render.py).
Without helm the plan is written all the same, with a warning on stderr and a
summary that says the charts were not rendered.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

from domain.settings import ConfigError


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(prog="python -m tools.plan", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", required=True, help="stack name; reads Pulumi.<stack>.yaml unless --config")
    parser.add_argument("--out", required=True, type=Path, help="directory to write the plan to (replaced)")
    parser.add_argument("--config", type=Path, help="a stack config file in Pulumi.<stack>.yaml format")
    parser.add_argument(
        "--policy-config",
        type=Path,
        help="policy pack config (default: policies/config/<environment>.json, as CI passes to pulumi preview)",
    )
    args = parser.parse_args(argv)

    # Imports after argument parsing so `--help` stays fast.
    from tools.plan import policies, render
    from tools.plan.run import ROOT, read_stack_file, run_program
    from tools.plan.writer import PlanWriteError, write_plan

    config_file = args.config or ROOT / f"Pulumi.{args.stack}.yaml"
    try:
        config, secret_keys = read_stack_file(config_file)
        settings, recorded = run_program(config, args.stack, secret_keys)
    except ConfigError as exc:
        print(f"error: invalid stack config in {config_file}:", file=sys.stderr)
        for line in exc.lines:
            print(f"  {line}", file=sys.stderr)
        return 2
    outcome = policies.check(recorded, settings.environment, args.policy_config)
    try:
        rendering = render.render(recorded, settings.cluster.version)
    except render.RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if rendering.missing:
        print(f"warning: Helm charts not rendered: {rendering.missing}", file=sys.stderr)
    try:
        counts = write_plan(args.out, args.stack, config_file, settings, recorded, secret_keys, outcome, rendering)
    except PlanWriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    print(
        f"plan for stack {args.stack}: {counts['resources']} resources, {counts['manifests']} Kubernetes manifests,"
        f" {counts['helm_releases']} Helm releases ({counts['rendered_objects']} rendered objects),"
        f" {len(outcome.violations)} policy violations"
        f" ({len(outcome.mandatory)} mandatory) -> {args.out} ({elapsed:.2f} s)"
    )
    if outcome.mandatory:
        print("error: mandatory policy violations (see policy-report.json):", file=sys.stderr)
        for v in outcome.mandatory:
            print(f"  [{v.policy}] {v.name or '(stack)'}: {v.message}", file=sys.stderr)
        return 3
    return 0


def run() -> None:
    """The command's process entry (also the `gpuinf-plan` console script and `python -m infra.plan`)."""
    # A short-lived process whose imports and run allocate many long-lived objects:
    # the cyclic GC would only spend time (see tools/plan/run.py).
    gc.disable()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every file is written and closed: skip the interpreter's teardown of the Pulumi
    # runtime's threads and modules, which takes about as long as a third of the plan.
    os._exit(code)


if __name__ == "__main__":
    run()
