"""Cluster layer of gpu-inference: one ComponentResource per module."""
