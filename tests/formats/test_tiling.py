"""Tests for the fp16 NCHW tile layout."""

from __future__ import annotations

import mmap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ane_build.driver.uapi import PAGE_SIZE
from ane_build.errors import AneFormatError, BufferObjectError
from ane_build.formats.tiling import (
    layout_for,
    strip_leading_ones,
    tensor_extent,
    tensor_view,
    tile,
    to_fp16,
    untile,
)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        # From the real samples: relu/sigmoid (W=77), concat's output (C=16400), gemm (C=512).
        ((1, 1, 1, 77), (192, 192, 16384)),
        ((1, 16400, 1, 1), (64, 64, 65 * 16384)),
        ((1, 512, 1, 1), (64, 64, 2 * 16384)),
        ((1, 3, 1, 1), (64, 64, 16384)),
        # Rows round to 64, then planes round to 64 again.
        ((2, 3, 5, 77), (192, 960, 16384)),
        ((1, 1, 3, 1), (64, 192, 16384)),
        ((1, 1, 1, 32), (64, 64, 16384)),
        ((1, 1, 1, 33), (128, 128, 16384)),
        ((77,), (192, 192, 16384)),
        ((0, 1, 1, 1), (64, 64, 0)),
    ],
)
def test_layout_for(shape: tuple[int, ...], expected: tuple[int, int, int]) -> None:
    assert layout_for(shape) == expected


def test_layout_rejects_bad_shapes() -> None:
    with pytest.raises(AneFormatError, match="rank 5"):
        layout_for((1, 1, 1, 1, 1))
    with pytest.raises(AneFormatError, match="negative"):
        layout_for((1, -1, 1, 1))


def _rand(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float16)


def test_byte_positions_and_zero_padding() -> None:
    a = _rand((2, 3, 5, 77))
    rs, ps, size = layout_for(a.shape)
    image = tile(a)
    assert image is not None and len(image) == size == PAGE_SIZE
    raw = np.frombuffer(image, dtype="<f2")
    mask = np.zeros(size // 2, dtype=bool)
    for n in range(2):
        for c in range(3):
            for h in range(5):
                start = (n * 3 * ps + c * ps + h * rs) // 2
                assert np.array_equal(raw[start : start + 77], a[n, c, h])
                mask[start : start + 77] = True
    assert not raw[~mask].view(np.uint16).any()  # every padding byte is zero


def test_little_endian_half_floats() -> None:
    image = tile(np.array([1.0, -2.0], dtype=np.float32))
    assert image is not None
    assert image[:4] == bytes([0x00, 0x3C, 0x00, 0xC0])


def test_tile_into_dirty_mapping_zeroes_all_padding() -> None:
    a = _rand((1, 2, 3, 40))
    rs, ps, size = layout_for(a.shape)
    with mmap.mmap(-1, 2 * PAGE_SIZE) as m:
        m.write(b"\xff" * len(m))
        view = memoryview(m)
        assert tile(a, out=view) is None
        expected = tile(a)
        assert expected is not None
        assert m[:size] == expected
        assert m[size:] == bytes(len(m) - size)  # the tail past the tensor is zeroed too
        np.testing.assert_array_equal(untile(view, 1, 2, 3, 40, rs, ps), a)
        view.release()  # no numpy view of ours may keep the mapping exported


@pytest.mark.parametrize("shape", [(1, 1, 1, 77), (2, 3, 5, 77), (1, 16, 1, 1), (3, 1, 7, 200)])
def test_round_trip_default_strides(shape: tuple[int, int, int, int]) -> None:
    a = _rand(shape, seed=len(shape))
    rs, ps, _ = layout_for(shape)
    image = tile(a)
    assert image is not None
    out = untile(image, *shape, rs, ps)
    assert out.dtype == np.float16 and out.shape == shape
    np.testing.assert_array_equal(out, a)


def test_explicit_strides_from_a_sample_and_wider() -> None:
    a = _rand((1, 1, 1, 77))
    image = tile(a, row_stride=192, plane_stride=192)
    assert image is not None and image == tile(a)
    wide = tile(a, row_stride=256, plane_stride=512)
    assert wide is not None
    assert wide[154:512] == bytes(512 - 154)
    np.testing.assert_array_equal(untile(wide, 1, 1, 1, 77, 256, 512), a)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 4),
    h=st.integers(1, 6),
    w=st.integers(1, 90),
    extra_row=st.integers(0, 3),
    extra_plane=st.integers(0, 3),
)
def test_round_trip_property(
    n: int, c: int, h: int, w: int, extra_row: int, extra_plane: int
) -> None:
    a = _rand((n, c, h, w), seed=n * 1000 + w)
    rs = -(-2 * w // 64) * 64 + 64 * extra_row
    ps = rs * h + 64 * extra_plane
    image = tile(a, row_stride=rs, plane_stride=ps)
    assert image is not None and len(image) % PAGE_SIZE == 0
    np.testing.assert_array_equal(untile(image, n, c, h, w, rs, ps), a)
    assert sum(image) == sum(a.astype("<f2").tobytes())  # padding contributes nothing


def test_float32_and_lower_rank_inputs() -> None:
    a = np.linspace(-3, 3, 77, dtype=np.float32)
    image = tile(a)
    assert image is not None
    np.testing.assert_array_equal(
        untile(image, 1, 1, 1, 77, 192, 192)[0, 0, 0], a.astype(np.float16)
    )


def test_untile_returns_a_copy() -> None:
    a = _rand((1, 1, 2, 8))
    buf = bytearray(tile(a) or b"")
    out = untile(buf, 1, 1, 2, 8, 64, 128)
    buf[:] = bytes(len(buf))
    np.testing.assert_array_equal(out, a)


def test_untile_accepts_buffer_without_trailing_padding() -> None:
    a = _rand((1, 2, 1, 8))
    image = tile(a)
    assert image is not None
    needed = 64 + 16  # second plane ends right after its 8 values
    np.testing.assert_array_equal(untile(image[:needed], 1, 2, 1, 8, 64, 64), a)
    with pytest.raises(AneFormatError, match=r"79 bytes is too short .* \(80 bytes needed\)"):
        untile(image[: needed - 1], 1, 2, 1, 8, 64, 64)


def test_bad_strides() -> None:
    a = _rand((1, 1, 2, 77))
    with pytest.raises(AneFormatError, match="row stride 128 does not hold W=77"):
        tile(a, row_stride=128)
    with pytest.raises(AneFormatError, match="plane stride 192 does not hold H=2 rows"):
        tile(a, row_stride=192, plane_stride=192)
    with pytest.raises(AneFormatError, match="odd"):
        tile(a, row_stride=193)
    with pytest.raises(AneFormatError, match="row stride 100"):
        untile(b"\0" * 1024, 1, 1, 1, 77, 100, 192)


def test_bad_output_views() -> None:
    a = _rand((1, 1, 1, 77))
    with pytest.raises(BufferObjectError, match="read-only"):
        tile(a, out=memoryview(bytes(16384)))
    with pytest.raises(BufferObjectError, match="has 100 bytes; the tensor needs 192"):
        tile(a, out=memoryview(bytearray(100)))
    with pytest.raises(BufferObjectError, match="not contiguous"):
        tile(a, out=memoryview(bytearray(1024))[::2])


def test_non_numeric_input() -> None:
    with pytest.raises(AneFormatError, match="cannot convert"):
        tile(np.array(["a", "b"]))


def test_strip_leading_ones() -> None:
    assert strip_leading_ones((1, 1, 1, 77)) == (77,)
    assert strip_leading_ones((1, 77, 1)) == (77, 1)
    assert strip_leading_ones((1, 1)) == ()
    assert strip_leading_ones(()) == ()


def test_writing_through_a_tensor_view_lays_out_what_tile_does() -> None:
    values = np.random.default_rng(3).standard_normal((1, 3, 5, 40)).astype(np.float16)
    row, plane, size = layout_for(values.shape)
    image = np.zeros(size, np.uint8)
    tensor_view(image, 1, 3, 5, 40, row, plane)[...] = values
    assert image.tobytes() == tile(values)
    assert np.array_equal(untile(image.tobytes(), 1, 3, 5, 40, row, plane), values)


def test_a_tensor_view_needs_room_for_its_last_element() -> None:
    needed = tensor_extent(1, 2, 3, 4, 64, 256)
    assert needed == 256 + 2 * 64 + 8
    tensor_view(np.zeros(needed, np.uint8), 1, 2, 3, 4, 64, 256)
    with pytest.raises(AneFormatError, match="too short"):
        tensor_view(np.zeros(needed - 1, np.uint8), 1, 2, 3, 4, 64, 256)


def test_to_fp16_canonicalises_nans_in_fp16_input_too() -> None:
    bits = np.array([0x7C01, 0xFE01, 0x3C00, 0x7C00], np.uint16)  # NaN, -NaN, 1.0, +inf
    half = to_fp16(bits.view(np.float16))
    assert half.view(np.uint16).tolist() == [0x7E00, 0xFE00, 0x3C00, 0x7C00]
