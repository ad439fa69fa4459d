"""Benchmarks run by `make bench` (not part of the timed test suite)."""
