"""Benchmarks and the reference loop; run as modules from the repository root: python -m bench.<name>."""
