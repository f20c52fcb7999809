"""Preflight: can the target account provide what a stack asks for? (`python -m tools.preflight`)"""
