"""The ANE tensor layout: fp16 NCHW with 64-byte aligned rows and planes, in 16 KiB buffers.

Converts between dense numpy arrays and the strided byte image a tile BO holds. Pure array code:
this module must not open devices or files, and never loops over elements in Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .._typing import BytesLike
from ..driver.uapi import PAGE_SIZE, round_up
from ..errors import AneFormatError, BufferObjectError

ROW_ALIGN = 64
PLANE_ALIGN = 64
ELEMENT_SIZE = 2
# Little-endian on purpose: the engine reads IEEE half floats LE whatever the host order is.
FP16_LE = np.dtype("<f2")
_FP16_QUIET_NAN = np.uint16(0x7E00)
_FP16_SIGN = np.uint16(0x8000)
_FP16_MAGNITUDE = np.uint16(0x7FFF)
_FP16_INF = 0x7C00


def to_fp16(values: npt.ArrayLike) -> npt.NDArray[np.float16]:
    """What the engine reads for ``values``: fp16, rounded to nearest even, NaNs canonical.

    Every NaN becomes the quiet NaN 0x7E00 with its sign kept, as libane's converter does (numpy
    keeps the payload bits); values beyond fp16's range become infinities. Callers choose which
    dtypes they accept; this converts any floating array.

    Returns:
        A new float16 array of the same shape.
    """
    source = np.asarray(values)
    if source.dtype == np.float16:
        half = source.copy()  # nothing to round; only NaNs to canonicalise
    else:
        with np.errstate(over="ignore"):
            half = source.astype(np.float16, copy=True)
    bits = half.view(np.uint16)
    # A NaN's magnitude bits are above infinity's: one integer reduction says whether there is
    # any (most arrays have none, and then no mask is built).
    if half.size and np.maximum.reduce(bits & _FP16_MAGNITUDE, axis=None) > _FP16_INF:
        nan = np.isnan(half)
        sign = np.signbit(source[nan])
        bits[nan] = np.where(sign, _FP16_SIGN | _FP16_QUIET_NAN, _FP16_QUIET_NAN)
    return half


def strip_leading_ones(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` without its leading 1s: shapes equal under this are the same NCHW tensor."""
    dims = tuple(int(d) for d in shape)
    start = 0
    while start < len(dims) and dims[start] == 1:
        start += 1
    return dims[start:]


def _nchw(shape: Sequence[int]) -> tuple[int, int, int, int]:
    dims = tuple(int(d) for d in shape)
    if not 1 <= len(dims) <= 4:
        raise AneFormatError(f"shape {tuple(shape)} has rank {len(dims)}; the ANE layout takes 1-4")
    if any(d < 0 for d in dims):
        raise AneFormatError(f"shape {tuple(shape)} has a negative dimension")
    # Lower ranks are leading-1 NCHW, as ONNX broadcasting would see them.
    n, c, h, w = (1,) * (4 - len(dims)) + dims
    return n, c, h, w


def layout_for(shape: Sequence[int]) -> tuple[int, int, int]:
    """Return the default ANE layout of a tensor.

    Args:
        shape: ``(N, C, H, W)``; shorter shapes are padded with leading 1s.

    Returns:
        ``(row_stride, plane_stride, buffer_size)`` in bytes.

    Raises:
        AneFormatError: The shape has a rank above 4 or a negative dimension.
    """
    n, c, h, w = _nchw(shape)
    row_stride = round_up(w * ELEMENT_SIZE, ROW_ALIGN)
    plane_stride = round_up(row_stride * h, PLANE_ALIGN)
    return row_stride, plane_stride, round_up(n * c * plane_stride, PAGE_SIZE)


def strides(h: int, w: int, row_stride: int | None, plane_stride: int | None) -> tuple[int, int]:
    """Return ``(row_stride, plane_stride)``: the given ones checked, the missing ones defaulted.

    Raises:
        AneFormatError: A stride is odd or too small for the rows or planes it must hold.
    """
    rs = round_up(w * ELEMENT_SIZE, ROW_ALIGN) if row_stride is None else row_stride
    ps = round_up(rs * h, PLANE_ALIGN) if plane_stride is None else plane_stride
    if rs < w * ELEMENT_SIZE or rs % ELEMENT_SIZE:
        raise AneFormatError(
            f"row stride {rs} does not hold W={w} fp16 values ({w * ELEMENT_SIZE} bytes) or is odd"
        )
    if ps < rs * h or ps % ELEMENT_SIZE:
        raise AneFormatError(
            f"plane stride {ps} does not hold H={h} rows of {rs} bytes ({rs * h}) or is odd"
        )
    return rs, ps


def _fill(
    dst: npt.NDArray[np.uint8], data: npt.NDArray[np.float16], rs: int, ps: int, planes: int
) -> None:
    """Write ``data`` (planes x H x W) into ``dst`` and zero every other byte of ``dst``."""
    h, w = data.shape[1], data.shape[2]
    used = planes * ps
    if used:
        grid = dst[:used].view(FP16_LE).reshape(planes, ps // ELEMENT_SIZE)
        rows = grid[:, : h * rs // ELEMENT_SIZE].reshape(planes, h, rs // ELEMENT_SIZE)
        rows[:, :, :w] = data
        rows[:, :, w:] = 0
        grid[:, h * rs // ELEMENT_SIZE :] = 0
    dst[used:] = 0


def tile(
    array: npt.ArrayLike,
    *,
    row_stride: int | None = None,
    plane_stride: int | None = None,
    out: memoryview | None = None,
) -> bytes | None:
    """Lay a tensor out as the ANE reads it: fp16 NCHW, strided, padding zeroed.

    Args:
        array: The tensor, rank 1-4 (leading 1s are implied); converted to fp16.
        row_stride: Bytes per row; defaults to ``round_up(W*2, 64)``.
        plane_stride: Bytes per (n, c) plane; defaults to ``round_up(row_stride*H, 64)``.
        out: A writable view (typically a BO mapping) to write into; every byte of it is written
            (tensor, row/plane padding and the tail are zeroed) so stale data cannot leak in.

    Returns:
        The buffer image (``round_up(N*C*plane_stride, 16 KiB)`` bytes) when ``out`` is None,
        else None.

    Raises:
        AneFormatError: The shape or the strides cannot describe the tensor.
        BufferObjectError: ``out`` is read-only, not contiguous, or too small.
    """
    values = np.asarray(array)
    n, c, h, w = _nchw(values.shape)
    rs, ps = strides(h, w, row_stride, plane_stride)
    planes = n * c
    try:
        data = values.astype(FP16_LE, copy=False).reshape(planes, h, w)
    except (TypeError, ValueError) as exc:
        raise AneFormatError(f"cannot convert a {values.dtype} array to fp16: {exc}") from exc
    if out is None:
        image = np.empty(round_up(planes * ps, PAGE_SIZE), dtype=np.uint8)
        _fill(image, data, rs, ps, planes)
        return image.tobytes()
    if out.readonly:
        raise BufferObjectError("tile(): the output view is read-only")
    if not out.c_contiguous:
        raise BufferObjectError("tile(): the output view is not contiguous")
    if out.nbytes < planes * ps:
        raise BufferObjectError(
            f"tile(): the output view has {out.nbytes} bytes; the tensor needs {planes * ps}"
        )
    # Release our view before returning so the caller can unmap the BO right away.
    with out.cast("B") as view:
        dst = np.frombuffer(view, dtype=np.uint8)
        _fill(dst, data, rs, ps, planes)
        del dst
    return None


def tensor_extent(n: int, c: int, h: int, w: int, row_stride: int, plane_stride: int) -> int:
    """Bytes a buffer needs to hold an ``(n, c, h, w)`` tensor with these strides.

    The last plane may stop right after its last element: padding after it is not required.

    Raises:
        AneFormatError: Negative dimensions, or strides that cannot hold the rows.
    """
    n, c, h, w = _nchw((n, c, h, w))
    rs, ps = strides(h, w, row_stride, plane_stride)
    if n * c == 0 or h == 0 or w == 0:
        return 0
    return (n * c - 1) * ps + (h - 1) * rs + w * ELEMENT_SIZE


def tensor_view(
    buf: npt.NDArray[np.uint8], n: int, c: int, h: int, w: int, row_stride: int, plane_stride: int
) -> npt.NDArray[np.float16]:
    """The ``(n, c, h, w)`` fp16 tensor inside an ANE buffer image, as a strided view of ``buf``.

    Writing through it changes ``buf``; padding is not part of it. It keeps ``buf`` alive.

    Raises:
        AneFormatError: Negative dimensions, strides that cannot hold the rows, or a buffer too
            short for the tensor (`tensor_extent`).
    """
    needed = tensor_extent(n, c, h, w, row_stride, plane_stride)
    if not needed:
        return np.zeros((n, c, h, w), dtype=FP16_LE)
    if len(buf) < needed:
        raise AneFormatError(
            f"buffer of {len(buf)} bytes is too short for a {n}x{c}x{h}x{w} tensor with "
            f"row stride {row_stride} and plane stride {plane_stride} ({needed} bytes needed)"
        )
    return np.lib.stride_tricks.as_strided(
        buf[:needed].view(FP16_LE),
        shape=(n, c, h, w),
        strides=(c * plane_stride, plane_stride, row_stride, ELEMENT_SIZE),
        writeable=buf.flags.writeable,
    )


def untile(
    buf: BytesLike, n: int, c: int, h: int, w: int, row_stride: int, plane_stride: int
) -> npt.NDArray[np.float16]:
    """Read a dense fp16 ``(n, c, h, w)`` array out of an ANE buffer image.

    The result is a copy: it does not keep ``buf`` (often a BO mapping) alive.

    Raises:
        AneFormatError: Negative dimensions, strides that cannot hold the rows, or a buffer too
            short for the tensor.
    """
    # Release our view before returning so the caller can unmap the BO right away.
    with memoryview(buf) as outer, outer.cast("B") as view:
        raw = np.frombuffer(view, dtype=np.uint8)
        strided = tensor_view(raw, n, c, h, w, row_stride, plane_stride)
        result = strided.astype(np.float16, copy=True)
        del raw, strided
    return result
