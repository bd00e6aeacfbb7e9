"""Rules 7 and 8: the checks after the scan, the fit check, and the in-place rewrite of the BO."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import InvalidArgumentError, KernelRejection
from ..uapi import ANE_CMD_GRAN, round_up
from .b64 import decode_pieces
from .verdict import Buffer, KernelVerdict, refuse, refused
from .wire import MICROCODE_KEY, TD_COUNT_KEY, TD_SIZE_KEY, WEIGHTS_KEY, BoImage, Scan, scan


@dataclass(frozen=True)
class _Plan:
    """What a successful translation writes: the microcode, then the weights decoded from text."""

    microcode: bytes
    weights: tuple[int, int] | None
    weights_len: int


Progress = Callable[[int, int], None]


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


class _Writer:
    """Writes decoded chunks one after the other into ``target`` from ``at``."""

    def __init__(self, target: memoryview, at: int) -> None:
        self.target = target
        self.at = at

    def __call__(self, chunk: bytes) -> None:
        self.target[self.at : self.at + len(chunk)] = chunk
        self.at += len(chunk)


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


def _translate(
    bo: BoImage, found: Scan, progress: Progress | None = None
) -> tuple[KernelVerdict, _Plan]:
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
    weights_at = found.entries.get(WEIGHTS_KEY)
    expected = (weights_at[1] - weights_at[0]) * 3 // 4 if weights_at else 0
    weights = _Digest(expected, progress)
    if weights_at is not None:
        decode_pieces(bo.pieces(*weights_at), weights_at[0], "ane.weights.b64", weights)
    check_fit(len(microcode), weights.size, bo.size)
    detail = (
        f"accepted: {len(microcode)} bytes of microcode, {weights.size} bytes of weights, "
        f"td_size {td_size}, td_count {td_count}"
    )
    verdict = KernelVerdict(
        0, "", "", detail, None, len(microcode), td_size, td_count, weights.size,
        hashlib.sha256(microcode).hexdigest(), weights.sha256.hexdigest(),
    )  # fmt: skip
    return verdict, _Plan(microcode, weights_at, weights.size)


def _evaluate(bo: BoImage, progress: Progress | None = None) -> tuple[KernelVerdict, _Plan | None]:
    try:
        return _translate(bo, scan(bo), progress)
    except KernelRejection as exc:
        return refused(exc.verdict), None


def _rewrite(bo: BoImage, plan: _Plan) -> None:
    view = bo.view
    weights_out = round_up(len(plan.microcode), ANE_CMD_GRAN)
    if plan.weights is not None and plan.weights_len:
        start, stop = plan.weights
        if weights_out <= start:
            # Decoding yields at most 3 bytes per 4 read, so writes from weights_out on stay
            # behind the text still to be read.
            target, at = view, weights_out
        else:
            target, at = memoryview(bytearray(plan.weights_len)), 0
        decode_pieces(bo.pieces(start, stop), start, "ane.weights.b64", _Writer(target, at))
        if target is not view:
            view[weights_out : weights_out + plan.weights_len] = target
    view[: len(plan.microcode)] = plan.microcode
    view[len(plan.microcode) : weights_out] = bytes(weights_out - len(plan.microcode))


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
    return _evaluate(BoImage.holding(data, bo_size), progress)[0]


def prepare_submit(bo: memoryview) -> KernelVerdict:
    """Do what the kernel does to the slot-0 BO on an ONNX-flag submit.

    On success the BO is rewritten in place: microcode, zeros to the next 16 bytes, weights; the
    rest keeps its old bytes. Weights are decoded straight into place when their text does not
    start before their destination, else through one temporary buffer. On failure the BO is
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
    verdict, plan = _evaluate(image)
    if plan is not None:
        _rewrite(image, plan)
    return verdict
