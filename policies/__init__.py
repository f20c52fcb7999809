"""CrossGuard policy pack of gpu-inference.

The rules live in importable modules under `policies/rules/`; only
`policies/__main__.py` builds the `PolicyPack` (constructing one starts the
policy server, so nothing else may). The offline plan imports the same rules.
"""
