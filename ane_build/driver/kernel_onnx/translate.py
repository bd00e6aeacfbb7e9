"""Rules 7 and 8: the checks after the scan, the fit check, and the in-place rewrite of the BO."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import InvalidArgumentError, KernelRejection
from ..uapi import ANE_CMD_GRAN, round_up
from .b64 import decode_pieces, decoded_length
from .verdict import Buffer, KernelVerdict, refuse, refused
from .wire import MICROCODE_KEY, TD_COUNT_KEY, TD_SIZE_KEY, WEIGHTS_KEY, BoImage, Scan, scan


@dataclass(frozen=True)
class _Head:
    """What the scan settled before the weights: the microcode, the sizes, the weights' text."""

    microcode: bytes
    td_size: int
    td_count: int
    weights: tuple[int, int] | None


Progress = Callable[[int, int], None]
WEIGHTS_NAME = WEIGHTS_KEY.decode()


class _Digest:
    """Counts and hashes decoded chunks without keeping them; reports progress if asked."""

    def __init__(self, expected: int = 0, progress: Progress | None = None) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._expected = expected
        self._progress = progress

    def __call__(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.size += len(chunk)
        if self._progress is not None:
            self._progress(self.size, max(self.size, self._expected))


class _Writer(_Digest):
    """Writes decoded chunks one after the other into ``target`` from ``at``, hashing them."""

    def __init__(self, target: memoryview, at: int) -> None:
        super().__init__()
        self.target = target
        self.at = at

    def __call__(self, chunk: bytes) -> None:
        self.target[self.at : self.at + len(chunk)] = chunk
        self.at += len(chunk)
        super().__call__(chunk)


def _check_sizes(found: Scan) -> tuple[int, int]:
    td_size = found.numbers.get(TD_SIZE_KEY, 0)
    td_count = found.numbers.get(TD_COUNT_KEY, 0)
    if not td_size or not td_count:
        zero = TD_SIZE_KEY if not td_size else TD_COUNT_KEY
        at = found.entries.get(zero, (None, None))[0]
        detail = f"{TD_SIZE_KEY.decode()} is {td_size} and {TD_COUNT_KEY.decode()} is {td_count}"
        detail += " (absent counts as 0)"
        raise refuse("td-zero", detail, at)
    return td_size, td_count


def check_fit(tsk_size: int, weights_len: int, bo_size: int) -> None:
    """The submit stage: microcode, padding and weights must fit in the BO.

    Raises:
        KernelRejection: They do not (rule ``payload-exceeds-bo``).
    """
    # Cannot fail for a BO that holds its own container: the payload texts are disjoint parts
    # of it, decode to at most 3/4 of their length, and their entries' framing (44 bytes or
    # more) outweighs the padding (15 bytes at most). The kernel checks anyway, and so do we.
    need = round_up(tsk_size, ANE_CMD_GRAN) + weights_len
    if need > bo_size:
        detail = (
            f"microcode ({tsk_size} bytes, padded to {ANE_CMD_GRAN}) and weights ({weights_len}"
            f" bytes) need {need} bytes, more than the BO's {bo_size}"
        )
        raise refuse("payload-exceeds-bo", detail, None, stage="submit")


def _head(bo: BoImage, found: Scan) -> _Head:
    """The post-scan checks up to the weights, and the decoded microcode (rule 7, U2)."""
    microcode_at = found.entries.get(MICROCODE_KEY)
    if microcode_at is None:
        detail = "no metadata entry has both the key ane.microcode.b64 and a value"
        raise refuse("no-microcode", detail, None)
    td_size, td_count = _check_sizes(found)
    parts: list[bytes] = []
    decode_pieces(bo.pieces(*microcode_at), microcode_at[0], "ane.microcode.b64", parts.append)
    microcode = b"".join(parts)
    if not microcode:
        detail = f"ane.microcode.b64 at offset {microcode_at[0]} decodes to 0 bytes"
        raise refuse("empty-microcode", detail, microcode_at[0])
    return _Head(microcode, td_size, td_count, found.entries.get(WEIGHTS_KEY))


def _accepted(head: _Head, weights: _Digest) -> KernelVerdict:
    detail = (
        f"accepted: {len(head.microcode)} bytes of microcode, {weights.size} bytes of weights, "
        f"td_size {head.td_size}, td_count {head.td_count}"
    )
    return KernelVerdict(
        0, "", "", detail, None, len(head.microcode), head.td_size, head.td_count, weights.size,
        hashlib.sha256(head.microcode).hexdigest(), weights.sha256.hexdigest(),
    )  # fmt: skip


def _check(bo: BoImage, progress: Progress | None) -> KernelVerdict:
    """Both stages, the weights decoded only to count and hash them."""
    head = _head(bo, scan(bo))
    expected = (head.weights[1] - head.weights[0]) * 3 // 4 if head.weights else 0
    weights = _Digest(expected, progress)
    if head.weights is not None:
        start, stop = head.weights
        decode_pieces(bo.pieces(start, stop), start, WEIGHTS_NAME, weights)
    check_fit(len(head.microcode), weights.size, bo.size)
    return _accepted(head, weights)


def _rewrite(bo: BoImage, head: _Head, weights_len: int) -> KernelVerdict:
    """Microcode, zeros to 16 bytes, weights: the weights decoded once, straight into place."""
    view = bo.view
    microcode = head.microcode
    weights_out = round_up(len(microcode), ANE_CMD_GRAN)
    # Decoding yields at most 3 bytes per 4 read, so writes from weights_out on stay behind the
    # text still to be read when the text does not start before them; else a staging buffer.
    direct = head.weights is None or weights_out <= head.weights[0]
    target = view if direct else memoryview(bytearray(weights_len))
    writer = _Writer(target, weights_out if direct else 0)
    if head.weights is not None and weights_len:
        start, stop = head.weights
        decode_pieces(bo.pieces(start, stop), start, WEIGHTS_NAME, writer)
        if not direct:
            view[weights_out : weights_out + weights_len] = target
    view[: len(microcode)] = microcode
    view[len(microcode) : weights_out] = bytes(weights_out - len(microcode))
    return _accepted(head, writer)


def check_bo(
    data: Buffer, bo_size: int | None = None, *, progress: Progress | None = None
) -> KernelVerdict:
    """The kernel's verdict on a BO holding ``data`` then zeros, without changing anything.

    The zero tail is never materialised, and payloads are decoded in chunks only to count and
    hash them, so time is linear in the payload text and memory flat.

    Args:
        data: The bytes at the start of the BO (a container, or anything else).
        bo_size: The BO size, at least ``len(data)`` (default: ``len(data)`` rounded up to
            ``PAGE_SIZE``, what BO_INIT allocates).
        progress: Called with (weights bytes decoded, bytes expected) as the weights decode.

    Returns:
        The verdict of both stages (parser, then fit check).

    Raises:
        InvalidArgumentError: ``bo_size`` is smaller than ``data``.
    """
    try:
        return _check(BoImage.holding(data, bo_size), progress)
    except KernelRejection as exc:
        return refused(exc.verdict)


def prepare_submit(bo: memoryview) -> KernelVerdict:
    """Do what the kernel does to the slot-0 BO on an ONNX-flag submit.

    On success the BO is rewritten in place: microcode, zeros to the next 16 bytes, weights; the
    rest keeps its old bytes. The weights text is first checked and measured without decoding
    (one ``bytes.translate`` pass), then decoded once, straight into place when their text does
    not start before their destination, else through one temporary buffer. On failure the BO is
    unchanged. The BO must not change while this runs.

    Args:
        bo: The whole writable BO (e.g. an mmap of a memfd).

    Returns:
        The verdict; on success its sizes are what the kernel writes back into the submit.

    Raises:
        InvalidArgumentError: ``bo`` is read-only.
    """
    view = bo.cast("B")
    if view.readonly:
        raise InvalidArgumentError("prepare_submit rewrites the BO in place; it needs it writable")
    image = BoImage(view, len(view))
    try:
        head = _head(image, scan(image))
        weights_len = 0
        if head.weights is not None:
            start, stop = head.weights
            weights_len = decoded_length(image.pieces(start, stop), start, WEIGHTS_NAME)
        check_fit(len(head.microcode), weights_len, image.size)
    except KernelRejection as exc:
        return refused(exc.verdict)
    return _rewrite(image, head, weights_len)
