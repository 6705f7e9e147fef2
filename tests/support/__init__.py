"""Test support shared by several suites and the benchmarks: simulated devices (simdevice.py)."""
