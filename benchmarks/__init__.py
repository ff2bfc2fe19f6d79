"""Benchmark scripts; each prints plain figure lines and one JSON line (see BENCHMARKS.md)."""
