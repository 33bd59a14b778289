"""Benchmarks: throughput measurements, run by hand and recorded in docs/benchmarks.md."""
