"""The safetensors reader and writer, checked against the `safetensors` library both ways."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ane_build.errors import AneError
from ane_build.llm.errors import CheckpointError
from ane_build.llm.safetensors import SafetensorsFile, write_safetensors

safetensors_numpy = pytest.importorskip("safetensors.numpy")

DTYPES = [np.float32, np.float16, np.float64, np.int64, np.int32, np.uint8]


def sample_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "model.embed_tokens.weight": rng.standard_normal((7, 5)).astype(np.float16),
        "model.norm.weight": rng.standard_normal(5).astype(np.float32),
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "scalar": np.array(3.5, dtype=np.float64),
    }


def test_reads_what_the_library_writes(tmp_path: Path) -> None:
    tensors = sample_tensors()
    safetensors_numpy.save_file(tensors, str(tmp_path / "lib.safetensors"))
    with SafetensorsFile(tmp_path / "lib.safetensors") as f:
        assert set(f) == set(tensors)
        for name, expected in tensors.items():
            got = f.tensor(name)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert np.array_equal(got, expected)
        weight = f.tensor("model.embed_tokens.weight")
        # A view of the mapping, not a copy, and read-only.
        assert not weight.flags.owndata and not weight.flags.writeable


def test_the_library_reads_what_we_write(tmp_path: Path) -> None:
    tensors = sample_tensors()
    write_safetensors(tmp_path / "ours.safetensors", tensors, {"format": "np"})
    loaded = safetensors_numpy.load_file(str(tmp_path / "ours.safetensors"))
    assert set(loaded) == set(tensors)
    for name, expected in tensors.items():
        assert loaded[name].dtype == expected.dtype
        assert np.array_equal(loaded[name], expected)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ours.safetensors"), framework="numpy") as f:
        assert f.metadata() == {"format": "np"}


@settings(max_examples=25, deadline=None)
@given(
    arrays=st.lists(
        hnp.arrays(
            st.sampled_from(DTYPES),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
            elements={"allow_nan": False},
        ),
        min_size=1,
        max_size=4,
    )
)
def test_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory, arrays: list[np.ndarray]
) -> None:
    path = tmp_path_factory.mktemp("st") / "x.safetensors"
    tensors = {f"t{i}": a for i, a in enumerate(arrays)}
    write_safetensors(path, tensors)
    with SafetensorsFile(path) as f:
        for name, expected in tensors.items():
            assert np.array_equal(f.tensor(name), expected)
            assert f.tensor(name).dtype == expected.dtype
    (header_length,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert (8 + header_length) % 8 == 0  # the data section starts 8-byte aligned


def bf16_file(path: Path, values: list[float]) -> Path:
    """A file with one BF16 tensor, built byte by byte (bfloat16 = top half of a float32)."""
    raw = b"".join(struct.pack("<f", v)[2:] for v in values)
    header = json.dumps(
        {"w": {"dtype": "BF16", "shape": [len(values)], "data_offsets": [0, len(raw)]}}
    ).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + raw)
    return path


def test_bf16_is_widened_to_float32(tmp_path: Path) -> None:
    values = [1.0, -2.5, 3.140625, 0.0, 65536.0]  # all exact in bfloat16
    with SafetensorsFile(bf16_file(tmp_path / "b.safetensors", values)) as f:
        got = f.tensor("w")
        assert got.dtype == np.float32
        assert got.tolist() == values


def raw_file(path: Path, header: object, data: bytes = b"", length: int | None = None) -> Path:
    text = json.dumps(header).encode()
    size = len(text) if length is None else length
    path.write_bytes(struct.pack("<Q", size) + text + data)
    return path


@pytest.mark.parametrize(
    ("header", "data", "length", "words"),
    [
        (
            {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
            b"\0" * 4,
            None,
            ["'w'", "past the file"],
        ),
        (
            {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
            b"\0" * 8,
            None,
            ["'w'", "12 expected"],
        ),
        ({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, None, ["C64"]),
        ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", None, ["shape"]),
        (
            {"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}},
            b"\0" * 8,
            None,
            ["data_offsets"],
        ),
        ({"w": 3}, b"", None, ["not an object"]),
        ([1, 2], b"", None, ["not a JSON object"]),
        ({}, b"", 1 << 40, ["header length"]),
    ],
)
def test_bad_files_are_refused(
    tmp_path: Path, header: object, data: bytes, length: int | None, words: list[str]
) -> None:
    path = raw_file(tmp_path / "bad.safetensors", header, data, length)
    with pytest.raises(CheckpointError) as info:
        SafetensorsFile(path)
    assert str(path) in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_truncated_and_missing(tmp_path: Path) -> None:
    (tmp_path / "short.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="too short"):
        SafetensorsFile(tmp_path / "short.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="too short"):
        SafetensorsFile(tmp_path / "empty.safetensors")
    with pytest.raises(AneError):
        SafetensorsFile(tmp_path / "absent.safetensors")
    write_safetensors(tmp_path / "ok.safetensors", {"a": np.ones(2, np.float32)})
    with (
        SafetensorsFile(tmp_path / "ok.safetensors") as f,
        pytest.raises(CheckpointError, match="'b'"),
    ):
        f.tensor("b")


def test_an_unwritable_dtype_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="complex"):
        write_safetensors(tmp_path / "x.safetensors", {"z": np.ones(2, np.complex64)})
    assert list(tmp_path.iterdir()) == []


def test_big_endian_input_is_written_little_endian(tmp_path: Path) -> None:
    values = np.arange(4, dtype=">f4")
    write_safetensors(tmp_path / "be.safetensors", {"x": values})
    loaded = safetensors_numpy.load_file(str(tmp_path / "be.safetensors"))
    assert loaded["x"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_close_with_live_views_is_safe(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "v.safetensors", {"a": np.arange(3, dtype=np.float32)})
    f = SafetensorsFile(tmp_path / "v.safetensors")
    view = f.tensor("a")
    f.close()
    f.close()
    assert view.tolist() == [0.0, 1.0, 2.0]
