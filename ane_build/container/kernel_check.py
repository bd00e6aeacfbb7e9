"""The fork kernel's verdict on a container, as it would see it in a page-rounded slot-0 BO.

Runs `driver.kernel_onnx.check_bo` over the file mapped read-only (nothing is copied, the zero
tail is never materialised) and words the verdict for people, naming the rule. This module must
not write files or touch devices.
"""

from __future__ import annotations

import errno
import io
import mmap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

from ..driver.kernel_onnx import KernelVerdict, check_bo
from ..driver.uapi import PAGE_SIZE, round_up

Progress = Callable[[int, int], None]


@contextmanager
def _contents(stream: BinaryIO, size: int) -> Iterator[memoryview]:
    """The stream's bytes as a read-only view: mapped for a file, in memory otherwise."""
    if isinstance(stream, io.BytesIO):
        with stream.getbuffer() as view:
            yield view.toreadonly()
        return
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        fd = -1
    if fd < 0 or size == 0:
        stream.seek(0)
        yield memoryview(stream.read())
        return
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mapped, memoryview(mapped) as view:
        try:
            yield view
        finally:
            view.release()


def kernel_verdict(stream: BinaryIO, size: int, progress: Progress | None = None) -> KernelVerdict:
    """The kernel's verdict on a BO of ``round_up(size, PAGE_SIZE)`` holding the container.

    Raises:
        OSError: The file cannot be mapped or read.
    """
    with _contents(stream, size) as view:
        return check_bo(view, max(PAGE_SIZE, round_up(size, PAGE_SIZE)), progress=progress)


def describe(verdict: KernelVerdict, size: int) -> str:
    """The verdict in words: what the kernel would do with this container, and by which rule."""
    bo_size = max(PAGE_SIZE, round_up(size, PAGE_SIZE))
    where = f"{bo_size >> 10} KiB BO" if bo_size < 1 << 20 else f"{bo_size / (1 << 20):,.1f} MiB BO"
    if verdict.ok:
        return (
            f"the fork kernel accepts it in a {where}: {verdict.tsk_size} bytes of microcode, "
            f"{verdict.weights_len} bytes of weights, td_size {verdict.td_size}, td_count "
            f"{verdict.td_count}"
        )
    name = errno.errorcode.get(verdict.errno, str(verdict.errno))
    if verdict.rule == "truncated-tag" and verdict.offset == size and size % 2:
        why = (
            f"length {size:,} is odd, so its {where} ends in one stray zero byte (a field tag "
            "with no value); rebuild it with ane_build, which writes even lengths"
        )
    else:
        why = f"{verdict.detail} (rule {verdict.rule})"
    return f"the fork kernel rejects this container with {name}: {why}"
