"""Assembles the gpu-inference policy pack. Nothing else may build a PolicyPack:
constructing one starts the policy server and never returns."""

import sys
from pathlib import Path

# The pack lives in the program's repository and shares its contract and
# scheduling predicates; the Pulumi CLI runs it from this directory.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policies.rules import all_policies

PolicyPack(
    name="gpu-inference",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=all_policies(),
    description="Blocks unsafe GPU node pool, workload and cluster configurations before `pulumi up`.",
)
