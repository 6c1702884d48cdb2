"""Benchmarks: ``python -m bench.extract`` (speed, precision) and ``bench/memory_bench.py``."""
