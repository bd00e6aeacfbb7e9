"""The simulated engine's view of a submit: does the descriptor chain run, or would it hang?

The real engine fetches the bootstrap descriptor, then follows each descriptor's next pointer
until one carries the end-of-network bit; a chain that points backwards, runs past the command
buffer, has a malformed size, never ends, or disagrees with ``td_count`` keeps it busy until the
kernel gives up (ETIMEDOUT). This model is written from the hardware facts in `uapi` on purpose,
apart from the userspace chain reader in ``formats.microcode``, so the two can check each other.
It cannot run microcode and must not pretend to.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..._typing import BytesLike
from ..uapi import (
    ANE_FIFO_NID,
    TD_COUNT_LIMIT,
    TD_MIN_SIZE,
    TD_NEXT_OFFSET_WORD,
    TD_NEXT_SIZE_MASK,
    TD_NEXT_SIZE_SHIFT,
    TD_NID_MASK,
    TD_NID_SHIFT,
    TD_WORD0_EON,
)

_WORD = struct.Struct("<I")


class EngineHangError(Exception):
    """The engine would never go idle; the kernel answers ETIMEDOUT. Carries the reason."""


def _fetch(code: memoryview, td_size: int) -> Iterator[tuple[int, int, int]]:
    """Yield (offset, size, word 0) of each descriptor the engine fetches, in order."""
    offset, size = 0, td_size
    for _ in range(TD_COUNT_LIMIT):
        if size < TD_MIN_SIZE or size % 4:
            raise EngineHangError(
                f"descriptor at 0x{offset:x} has a malformed size of {size} bytes"
            )
        if offset + size > len(code):
            raise EngineHangError(
                f"descriptor at 0x{offset:x} ({size} bytes) runs past tsk_size 0x{len(code):x}"
            )
        word0 = _WORD.unpack_from(code, offset)[0]
        yield offset, size, word0
        if word0 & TD_WORD0_EON:
            return
        nxt = _WORD.unpack_from(code, offset + 4 * TD_NEXT_OFFSET_WORD)[0]
        if nxt < offset + size or nxt % 4:
            raise EngineHangError(
                f"descriptor at 0x{offset:x} points to 0x{nxt:x}: the chain loops"
            )
        word1 = _WORD.unpack_from(code, offset + 4)[0]
        offset, size = nxt, ((word1 >> TD_NEXT_SIZE_SHIFT & TD_NEXT_SIZE_MASK) + 1) * 4
    raise EngineHangError(f"no end-of-network bit within {TD_COUNT_LIMIT} descriptors")


def run_chain(code: BytesLike, td_size: int, td_count: int, bootstrap: BytesLike) -> int:
    """Decide whether the engine finishes the program; return the number of tasks it ran.

    Args:
        code: The command buffer's first ``tsk_size`` bytes (the microcode).
        td_size: The first descriptor's size as submitted.
        td_count: The descriptor count as submitted.
        bootstrap: The bootstrap BO's contents.

    Raises:
        EngineHangError: The engine would never go idle (the reason says why).
    """
    view = memoryview(code).cast("B")
    fetched = list(_fetch(view, td_size))
    if len(fetched) != td_count:
        raise EngineHangError(
            f"td_count is {td_count} but the chain holds {len(fetched)} descriptors"
        )
    end = fetched[-1][0] + fetched[-1][1]
    if any(view[end:]):
        # The engine never fetches past the last descriptor, so zero padding there is harmless;
        # anything else means td_size cut the first descriptor short.
        raise EngineHangError(
            f"non-zero bytes after the chain's end at 0x{end:x}: td_size {td_size} is not the "
            "first descriptor's size"
        )
    # The hardware cannot tell us the first descriptor's true size; model anecc's uniform
    # chains, where every descriptor has the size the first one declares for its successor.
    if len({size for _, size, _ in fetched}) > 1:
        raise EngineHangError(f"td_size {td_size} differs from the chain's descriptor size")
    head = bytearray(view[:td_size])
    _WORD.pack_into(head, 0, (fetched[0][2] & ~TD_NID_MASK) | (ANE_FIFO_NID << TD_NID_SHIFT))
    boot = memoryview(bootstrap).cast("B")
    if len(boot) < td_size or boot[:td_size] != head:
        raise EngineHangError(
            "the bootstrap buffer does not hold the first descriptor with the FIFO id"
        )
    return len(fetched)
