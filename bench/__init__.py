"""Benchmarks and load generators; each prints figures, none asserts on timing."""
