"""The kernel boundary: the ABI mirror, the syscall seam, `ANEDevice`, and the simulated kernel.

Everything above talks to the engine through this package; it imports nothing above it.
"""
