"""Value types of compiler output shared by every layer above: `PayloadRef` and `IoSlot`.

`PayloadRef` names bytes without loading them (a file range or in-memory bytes) so multi-GB
weights stream from disk; `IoSlot` is one tile slot's tensor (role, name, fp16 NCHW layout).
This module reads files only when asked (``read``/``iter_chunks``) and never writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ArtifactError

CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class PayloadRef:
    """Bytes held in memory or a byte range of a file, read on demand.

    Attributes:
        length: Number of bytes.
        data: The bytes, for in-memory payloads.
        path: The file, for file-backed payloads.
        offset: Start of the range within ``path``.
        sha256: The payload's digest when the caller already knows it (the build system has
            hashed every input file); writers then trust it instead of hashing again.
    """

    length: int
    data: bytes | None = None
    path: Path | None = None
    offset: int = 0
    sha256: str | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> PayloadRef:
        """Wrap in-memory bytes."""
        return cls(length=len(data), data=bytes(data))

    @classmethod
    def from_file(cls, path: Path, offset: int = 0, length: int | None = None) -> PayloadRef:
        """Reference ``length`` bytes of ``path`` from ``offset`` (to the end when None).

        Raises:
            ArtifactError: The file cannot be read or the range runs past its end.
        """
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot read: {exc.strerror}") from exc
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise ArtifactError(
                f"{path}: range {offset}+{length} runs past the end of the file ({size} bytes)"
            )
        return cls(length=length, path=Path(path), offset=offset)

    @property
    def label(self) -> str:
        """Where the bytes come from, for messages."""
        if self.path is None:
            return "<memory>"
        return str(self.path) if self.offset == 0 else f"{self.path}@0x{self.offset:x}"

    def iter_chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the payload in chunks of at most ``chunk_size`` bytes.

        Raises:
            ArtifactError: The file cannot be read or became shorter.
        """
        if self.data is not None:
            for pos in range(0, self.length, chunk_size):
                yield self.data[pos : pos + chunk_size]
            return
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                remaining = self.length
                while remaining:
                    chunk = f.read(min(chunk_size, remaining))
                    if not chunk:
                        raise ArtifactError(
                            f"{self.path}: file shrank while reading ({remaining} bytes missing)"
                        )
                    remaining -= len(chunk)
                    yield chunk
        except OSError as exc:
            raise ArtifactError(f"{self.path}: cannot read: {exc.strerror}") from exc

    def read(self) -> bytes:
        """Return the whole payload."""
        if self.data is not None:
            return self.data
        return b"".join(self.iter_chunks())


class IoSlot(BaseModel):
    """One tile slot's tensor as stored in ``ane.io``: role, name and fp16 NCHW layout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["input", "output", "scratch"]
    name: str | None = None
    n: int = Field(ge=0)
    c: int = Field(ge=0)
    h: int = Field(ge=0)
    w: int = Field(ge=0)
    plane_stride: int = Field(ge=0)
    row_stride: int = Field(ge=0)
