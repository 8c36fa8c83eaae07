"""Benchmarks: each figure measured against a baseline in the same run."""
