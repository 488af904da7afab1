"""User-facing runnable experiments: ``python -m graphspike_kd.benchmarks.<name> --help``.

Each module is a command-line program on shipped or generated data that prints a table and writes
JSON. Performance benchmarks (speed, memory) live in the repository's top-level ``benchmarks/``
folder instead.
"""
