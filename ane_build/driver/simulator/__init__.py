"""A simulated ``ane`` kernel driver behind the syscall seam, errno for errno (DESIGN section 6)."""

from .kernel import SimulatedKernel, SubmitRecord

__all__ = ["SimulatedKernel", "SubmitRecord"]
