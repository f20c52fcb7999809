"""`python -m infra.plan`: the user-facing name of the offline plan (`tools/plan`, console script `gpuinf-plan`)."""
