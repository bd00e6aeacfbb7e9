"""The syscall seam under `ANEDevice`: open, ioctl, mmap and close on a device node.

`OsBackend` talks to the real kernel; the simulator implements the same protocol. Nothing here
interprets ANE semantics, and nothing is opened on import.
"""

from __future__ import annotations

import ctypes
import fcntl
import glob
import mmap
import os
import re
from typing import Protocol

ACCEL_GLOB = "/dev/accel/accel*"
RENDER_GLOB = "/dev/dri/renderD*"


class Backend(Protocol):
    """What `ANEDevice` needs from the operating system. Failures raise `OSError` with errno."""

    def nodes(self) -> list[str]:
        """Candidate device nodes in discovery order (accel nodes, then render nodes)."""
        ...

    def open(self, path: str) -> int:
        """Open ``path`` read/write and close-on-exec; return the fd."""
        ...

    def ioctl(self, fd: int, request: int, arg: ctypes.Structure) -> None:
        """Issue ``request`` on ``fd``; the kernel reads and writes ``arg`` in place."""
        ...

    def mmap(self, fd: int, size: int, offset: int) -> mmap.mmap:
        """Map ``size`` bytes of ``fd`` at ``offset``, shared and read/write."""
        ...

    def close(self, fd: int) -> None:
        """Close ``fd``."""
        ...


def _node_number(path: str) -> tuple[str, int]:
    match = re.search(r"(\d+)$", path)
    return (path.rstrip("0123456789"), int(match.group(1)) if match else -1)


class OsBackend:
    """The real kernel, through ``os.open``, ``fcntl.ioctl`` and ``mmap.mmap``."""

    def nodes(self) -> list[str]:
        """Accel nodes first, then render nodes, each in numeric order."""
        found: list[str] = []
        for pattern in (ACCEL_GLOB, RENDER_GLOB):
            found.extend(sorted(glob.glob(pattern), key=_node_number))
        return found

    def open(self, path: str) -> int:
        """Open the node read/write, close-on-exec."""
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def ioctl(self, fd: int, request: int, arg: ctypes.Structure) -> None:
        """Pass the struct's own memory so the kernel's writes land in it."""
        fcntl.ioctl(fd, request, arg, True)

    def mmap(self, fd: int, size: int, offset: int) -> mmap.mmap:
        """Shared read/write mapping of a BO at its fake offset."""
        return mmap.mmap(
            fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=offset
        )

    def close(self, fd: int) -> None:
        """Close the fd."""
        os.close(fd)
