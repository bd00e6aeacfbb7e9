"""The safetensors file format: tensors read memory-mapped, and a small streaming writer.

A file is an 8-byte little-endian header length, a JSON header (per tensor: ``dtype``, ``shape``,
``data_offsets`` relative to the data section; optional ``__metadata__``), then the data. Reading
maps the file and hands out read-only numpy views, so a 2 GB checkpoint is never copied into
memory as a whole (bfloat16, which numpy lacks, is widened to float32 one tensor at a time).
This module must not know about models: names and arrays only.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from .._fs import open_regular, replace_atomically
from .._resource import Closing
from .errors import CheckpointError

# A header is JSON for a few thousand tensors at most; a bigger one is not a safetensors file.
HEADER_LIMIT = 100 << 20
_LENGTH = struct.Struct("<Q")
# Little-endian numpy types of the safetensors dtype names (BF16 is handled apart).
DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_BF16 = "BF16"
_NAMES = {dtype: name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a file's header.

    Attributes:
        name: The tensor's name.
        dtype: The safetensors dtype name (``F16``, ``BF16``, ...).
        shape: Its shape.
        begin: Byte offset of its data in the file.
        end: Byte offset just past its data.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return 2 if self.dtype == _BF16 else DTYPES[self.dtype].itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of data."""
        return self.end - self.begin


def _entry(name: str, raw: Any, data_start: int, size: int, path: Path) -> TensorEntry:
    where = f"{path}: tensor {name!r}"
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where}: header entry is not an object")
    dtype, shape, offsets = raw.get("dtype"), raw.get("shape"), raw.get("data_offsets")
    if dtype != _BF16 and dtype not in DTYPES:
        raise CheckpointError(f"{where}: unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CheckpointError(f"{where}: shape {shape!r} is not a list of sizes")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise CheckpointError(f"{where}: data_offsets {offsets!r} is not [begin, end]")
    entry = TensorEntry(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])
    if entry.end > size:
        raise CheckpointError(f"{where}: data ends at byte {entry.end}, past the file ({size})")
    expected = int(np.prod(entry.shape, dtype=np.int64)) * entry.itemsize
    if entry.nbytes != expected:
        raise CheckpointError(
            f"{where}: {entry.nbytes} data bytes for shape {list(shape)} of {dtype} "
            f"({expected} expected)"
        )
    return entry


def read_header(head: bytes, size: int, path: Path) -> tuple[dict[str, TensorEntry], int]:
    """Parse a file's header from its first bytes.

    Args:
        head: At least the length field and the JSON header.
        size: The file's size.
        path: For messages.

    Returns:
        The tensors by name, and where the data section starts.

    Raises:
        CheckpointError: The header is truncated, not JSON, or describes impossible data.
    """
    if len(head) < _LENGTH.size:
        raise CheckpointError(f"{path}: {size} bytes: too short for a safetensors file")
    (length,) = _LENGTH.unpack_from(head)
    if length > HEADER_LIMIT or _LENGTH.size + length > size:
        raise CheckpointError(
            f"{path}: header length {length} does not fit the file ({size} bytes)"
        )
    try:
        header = json.loads(head[_LENGTH.size : _LENGTH.size + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: the header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the header is not a JSON object")
    start = _LENGTH.size + length
    entries = {
        name: _entry(name, raw, start, size, path)
        for name, raw in header.items()
        if name != "__metadata__"
    }
    return entries, start


class SafetensorsFile(Closing):
    """One ``.safetensors`` file, memory-mapped; tensors are read-only views of the mapping.

    Args:
        path: The file.

    Raises:
        CheckpointError: The file cannot be opened or its header is invalid.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with open_regular(self.path, "safetensors file", CheckpointError) as f:
            size = _file_size(f)
            # An empty file cannot be mapped; the header check below reports it.
            self._map = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) if size else None
        head = bytes(self._map[: min(size, _LENGTH.size + HEADER_LIMIT)]) if self._map else b""
        try:
            self.entries, self.data_start = read_header(head, size, self.path)
        except CheckpointError:
            self.close()
            raise

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def tensor(self, name: str) -> npt.NDArray[Any]:
        """The tensor ``name``: a read-only view of the mapping (BF16 widened to a float32 copy).

        Raises:
            CheckpointError: No tensor of that name.
        """
        entry = self.entries.get(name)
        if entry is None:
            raise CheckpointError(f"{self.path}: no tensor {name!r}")
        if self._map is None or not entry.nbytes:
            empty = np.float32 if entry.dtype == _BF16 else DTYPES[entry.dtype]
            return np.zeros(entry.shape, dtype=empty)
        count = entry.nbytes // entry.itemsize
        if entry.dtype == _BF16:
            raw = np.frombuffer(self._map, dtype="<u2", count=count, offset=entry.begin)
            # bfloat16 is the top half of a float32: shift it back into place.
            return (raw.astype("<u4") << 16).view("<f4").reshape(entry.shape)
        dtype = DTYPES[entry.dtype]
        return np.frombuffer(self._map, dtype=dtype, count=count, offset=entry.begin).reshape(
            entry.shape
        )

    def close(self) -> None:
        """Unmap the file. Idempotent; views still alive keep the mapping until they go."""
        mapping, self._map = getattr(self, "_map", None), None
        if mapping is not None:
            # A tensor view may still point into the mapping; it is unmapped with the last one.
            with contextlib.suppress(BufferError):
                mapping.close()


def _file_size(f: BinaryIO) -> int:
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    return size


def _encode(array: npt.NDArray[Any], name: str) -> tuple[str, npt.NDArray[Any]]:
    le = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    dtype_name = _NAMES.get(np.dtype(le))
    if dtype_name is None:
        raise CheckpointError(f"tensor {name!r}: dtype {array.dtype} cannot be written")
    return dtype_name, np.asarray(array, dtype=le, order="C")


def write_safetensors(
    path: Path, tensors: Mapping[str, npt.ArrayLike], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (in the mapping's order) to ``path`` atomically.

    Raises:
        CheckpointError: A tensor of a dtype the format has no name for here.
        FileAccessError: The file cannot be written (nothing is left behind).
    """
    arrays = {name: _encode(np.asarray(value), name) for name, value in tensors.items()}
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, (dtype, array) in arrays.items():
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # The data section starts 8-byte aligned; the format pads the header with spaces.
    text += b" " * (-(len(text) + _LENGTH.size) % 8)

    def write(out: BinaryIO, _tmp: str) -> None:
        out.write(_LENGTH.pack(len(text)) + text)
        for _, array in arrays.values():
            out.write(array.reshape(-1).view(np.uint8).data)

    replace_atomically(Path(path), write)
