"""Synthetic compiler output for tests, benchmarks and the example project: NOT real ANE code."""

# The example project's generator input, at the project root.
SYNTHETIC_FILE = "synthetic.toml"
