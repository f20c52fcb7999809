"""Benchmarks that run on a developer machine (not part of the test suite)."""
