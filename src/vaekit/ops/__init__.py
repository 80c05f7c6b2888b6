"""Numerical kernels beneath the models: :mod:`vaekit.ops.linear` (linear layers on oneDNN)."""
