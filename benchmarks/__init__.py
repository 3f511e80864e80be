"""Benchmark scripts: planner latency against a naive reference, FLOPs and the matmul peak, server load.

They print tables (or one JSON object with --json) and are not timed unit
tests; tests/benchmarks runs each in its --quick mode to keep them working.
"""
