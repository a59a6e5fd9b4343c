"""Benchmarks that measure minipegx and transformers side by side in one run. Run from the repository
root as modules, e.g. ``python -m benchmarks.bench --quick``."""
