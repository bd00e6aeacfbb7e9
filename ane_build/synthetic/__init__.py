"""Synthetic compiler output for tests, benchmarks and the example project: NOT real ANE code."""
