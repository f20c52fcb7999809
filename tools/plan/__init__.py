"""Offline plan: run the real program under recording mocks and write what it would create.

`python -m tools.plan --stack NAME --out DIR [--config FILE]`
"""
