"""Benchmarks: short scripts over one harness (`benchmarks.harness`: servers, the machine, one result format).

Each prints one JSON result (`benchmark`, `machine`, `settings`, `rows`,
`summary`) and writes it with --out; --quick runs tiny sizes in seconds, and
tests/benchmarks runs every script that way. `benchmarks.studies` holds
investigations whose findings are written in docs/, kept to re-check them on
other hardware. How to run them: docs/benchmarks.md.
"""
