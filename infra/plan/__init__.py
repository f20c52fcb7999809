"""Offline plan: run the real program under recording mocks and write what it would create.

`python -m infra.plan --stack NAME --out DIR [--config FILE]`
"""
