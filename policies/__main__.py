"""Assembles the gpu-inference policy pack. Nothing else may build a PolicyPack:
constructing one starts the policy server and never returns."""

# The pack shares the program's domain model (contract, scheduling predicates, catalog,
# versions): `scripts/setup.sh` installs the project into the shared ../.venv.
from pulumi_policy import EnforcementLevel, PolicyPack

from policies.rules import all_policies

PolicyPack(
    name="gpu-inference",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=all_policies(),
    description="Blocks unsafe GPU node pool, workload and cluster configurations before `pulumi up`.",
)
