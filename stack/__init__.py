"""Local system orchestration: start the broker, bridge, intake and virtual boards as real processes.

Used by `make run`, the integration tests, the HIL suite and the benchmarks, so that each of them
starts the system the same way.
"""
