"""`python -m infra.preflight`: the user-facing name of preflight (`tools/preflight`, console script `gpuinf-preflight`)."""
