"""Write a container: the source's fields copied verbatim, new ``ane.*`` entries appended.

Streams, so memory does not grow with model or payload size; the output is replaced atomically
and never left half-written. It must not parse the graph (except through `external`).
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from pydantic import ValidationError

from .._fs import replace_atomically
from .._typing import StrPath
from ..driver.uapi import (
    ANE_TILE_COUNT,
    ONNX_KEY_LIMIT,
    TD_COUNT_LIMIT,
)
from ..errors import (
    ContainerError,
    ModelFileError,
)
from ..formats import protowire as pw
from ..formats.payload import IoSlot, PayloadRef
from .external import check_external_data
from .keys import (
    ANE_KEY_PREFIX,
    CONTAINER_FORMAT,
    KEY_FORMAT,
    KEY_IO,
    KEY_PAD,
    KEY_SOURCE_SHA256,
    KEY_TD_COUNT,
    KEY_TD_SIZE,
    KEY_TILES,
    KEY_TOOLCHAIN,
    PAYLOADS,
    PROTOBUF_LIMIT,
    SMALL_VALUE_LIMIT,
    PayloadKeys,
    base64_length,
)
from .metadata import metadata_from_scan
from .scan import Scan, open_model, scan_container
from .types import AneModelMetadata

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_COPY_CHUNK = 4 << 20
# A multiple of 3, so every chunk but the last encodes to base64 without padding.
_B64_RAW_CHUNK = 3 << 20
# Chunks queued for the writer thread; bounds memory at a few chunks whatever the payload size.
_MAX_IN_FLIGHT = 3


class Hasher(Protocol):
    """What the writer needs of a hashlib object."""

    def update(self, data: bytes, /) -> None:
        """Feed bytes."""

    def hexdigest(self) -> str:
        """The digest so far, in hex."""


# --- writing ---------------------------------------------------------------------------------

ProgressCallback = Callable[[int, int], None]


def _entry_header(key: str, value_length: int) -> bytes:
    """A top-level metadata_props field up to its value (the value follows, maybe streamed)."""
    head = pw.encode_entry_head(key.encode("utf-8"), value_length)
    return pw.encode_len_header(pw.MODEL_METADATA_PROPS, len(head) + value_length) + head


def _entry_size(key: str, value_length: int) -> int:
    return len(_entry_header(key, value_length)) + value_length


def _small(key: str, value: str) -> tuple[str, bytes]:
    return key, value.encode("utf-8")


def _slot_json(values: Mapping[int, Any]) -> str:
    """Compact JSON object keyed by slot number, in slot order."""
    return json.dumps({str(slot): values[slot] for slot in sorted(values)}, separators=(",", ":"))


def _check_slot(slot: object, what: str) -> int:
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < ANE_TILE_COUNT:
        raise ContainerError(
            f"{what}: slot {slot!r} is not a number from 0 to {ANE_TILE_COUNT - 1}"
        )
    return slot


def _embed_values(
    microcode: PayloadRef,
    td_size: int,
    td_count: int,
    toolchain: str | None,
    io_slots: Mapping[int, IoSlot] | None,
    tiles: Mapping[int, int] | None,
) -> list[tuple[str, bytes]]:
    """Validate the arguments of `embed_ane_metadata`; return the small entries to write."""
    if microcode.length <= 0:
        raise ContainerError(f"microcode {microcode.label} is empty; the kernel needs a program")
    for name, value in (("td_size", td_size), ("td_count", td_count)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ContainerError(f"{name} must be an int, got {value!r}")
    if td_size <= 0 or td_size % 4 or td_size > microcode.length:
        raise ContainerError(
            f"td_size {td_size} must be a positive multiple of 4 no larger than the microcode "
            f"({microcode.length} bytes); M1 descriptors are 628 bytes"
        )
    if not 0 < td_count < TD_COUNT_LIMIT:
        raise ContainerError(f"td_count {td_count} must be from 1 to {TD_COUNT_LIMIT - 1}")
    entries = [
        _small(KEY_TD_SIZE, str(td_size)),
        _small(KEY_TD_COUNT, str(td_count)),
        _small(KEY_FORMAT, CONTAINER_FORMAT),
    ]
    if toolchain is not None:
        entries.append(_small(KEY_TOOLCHAIN, toolchain))
    if io_slots:
        dumped: dict[int, Any] = {}
        for slot, spec in io_slots.items():
            try:
                checked = IoSlot.model_validate(spec)
            except ValidationError as exc:
                raise ContainerError(f"io slot {slot}: {exc}") from exc
            dumped[_check_slot(slot, "io")] = checked.model_dump(mode="json")
        entries.append(_small(KEY_IO, _slot_json(dumped)))
    if tiles:
        sizes: dict[int, int] = {}
        for slot, size in tiles.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ContainerError(f"tiles: slot {slot} size {size!r} is not a byte count >= 0")
            sizes[_check_slot(slot, "tiles")] = size
        entries.append(_small(KEY_TILES, _slot_json(sizes)))
    for key, text in entries:
        if len(text) > SMALL_VALUE_LIMIT:
            raise ContainerError(f"{key} is {len(text)} bytes; at most {SMALL_VALUE_LIMIT} fit")
    return entries


@dataclass(frozen=True)
class _Run:
    start: int
    end: int
    keep: bool


def _runs(fields: Iterable[pw.WireField], drop: set[int]) -> list[_Run]:
    """Merge adjacent fields into runs that are all kept or all dropped (fewer, larger copies)."""
    runs: list[_Run] = []
    for top in fields:
        keep = top.offset not in drop
        if runs and runs[-1].keep == keep and runs[-1].end == top.offset:
            runs[-1] = _Run(runs[-1].start, top.end, keep)
        else:
            runs.append(_Run(top.offset, top.end, keep))
    return runs


@dataclass(frozen=True)
class _Plan:
    head: list[_Run]
    tail: list[_Run]
    small: list[tuple[str, bytes]]
    payloads: list[tuple[PayloadKeys, PayloadRef]]
    digest_keys: list[str]
    total: int


def _even_out(small: list[tuple[str, bytes]], total: int) -> list[tuple[str, bytes]]:
    """``small``, plus an ``ane.pad`` entry of odd size when ``total`` is odd.

    The fork kernel parses the whole page-rounded BO: after an odd-length container the zeros
    up to the page end are odd in number, and the last one is a field tag with no varint after
    it (EINVAL), unless the container happens to end on the page. An even length parses in any
    BO. A metadata entry is the padding every reader ignores: the kernel reads only its four
    keys, onnx keeps foreign entries, and as an ``ane.*`` key it is replaced on every rebuild.
    """
    if total % 2 == 0:
        return small
    value = next(b"0" * n for n in (0, 1) if _entry_size(KEY_PAD, n) % 2)
    return [*small, (KEY_PAD, value)]


def _plan(
    scan: Scan,
    small: list[tuple[str, bytes]],
    payloads: list[tuple[PayloadKeys, PayloadRef]],
    output: Path,
) -> _Plan:
    """Decide what goes where and check the result before a byte is written."""
    if not scan.has_graph:
        raise ContainerError(
            f"{scan.label}: has no graph (field 7), so it is not an ONNX model to build from"
        )
    stale = {e.field.offset for e in scan.entries if e.key.startswith(ANE_KEY_PREFIX)}
    long_keys = [
        e.key for e in scan.entries if e.key_size >= ONNX_KEY_LIMIT and e.field.offset not in stale
    ]
    if long_keys:
        raise ContainerError(
            f"{scan.label}: the kernel rejects any metadata key of {ONNX_KEY_LIMIT} bytes or "
            f"more, and this model has {', '.join(repr(k) for k in long_keys)}; remove or "
            "rename those metadata_props entries in the source model"
        )
    if stale:
        log.debug("%s: replacing %d ane.* entries", scan.label, len(stale))
    # Fields after the last metadata-or-lower field stay after the new entries, keeping the
    # serializer's field-number order.
    split = len(scan.fields)
    while split and scan.fields[split - 1].number > pw.MODEL_METADATA_PROPS:
        split -= 1
    head = _runs(scan.fields[:split], stale)
    tail = _runs(scan.fields[split:], stale)
    digest_keys = [p.sha256 for p, _ in payloads] + [KEY_SOURCE_SHA256]
    total = sum(r.end - r.start for r in head + tail if r.keep)
    total += sum(_entry_size(p.b64, base64_length(ref.length)) for p, ref in payloads)
    total += sum(_entry_size(key, 64) for key in digest_keys)
    small = _even_out(small, total + sum(_entry_size(k, len(v)) for k, v in small))
    total += sum(_entry_size(key, len(value)) for key, value in small)
    if total > PROTOBUF_LIMIT:
        raise ContainerError(
            f"{output}: the container would be {total} bytes, over the 2 GiB protobuf limit "
            f"({PROTOBUF_LIMIT} bytes). Move the source's initializers to external data, e.g. "
            "onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, "
            'location="weights.bin"), and rebuild'
        )
    return _Plan(head, tail, small, payloads, digest_keys, total)


class _Lane:
    """One worker thread running jobs in submission order, with a bound on queued jobs."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: deque[Future[None]] = deque()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job``; first wait while too many are queued, so memory stays bounded."""
        while len(self._pending) >= _MAX_IN_FLIGHT:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(job))

    def drain(self) -> None:
        """Wait for every queued job; re-raise the first failure."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Drop the jobs that have not started and stop the worker."""
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], None] | None:
    """Libc's sync_file_range (Linux), raising OSError on failure; None where it is missing."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int

    def call(fd: int, offset: int, length: int, flags: int) -> None:
        if func(fd, offset, length, flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return call


_WRITEBACK_CHUNK = 32 << 20


class _Writer:
    """Hashes on one worker thread and writes on another, while the caller reads and encodes.

    hashlib and file writes release the GIL and base64 encoding does not, so on two cores the
    three overlap. Each lane is a single thread, which keeps hash updates and writes in order.
    """

    def __init__(self, out: BinaryIO, total: int, progress: ProgressCallback | None) -> None:
        self._out = out
        self._total = total
        self._progress = progress
        self._hashing = _Lane("ane-embed-hash")
        self._writing = _Lane("ane-embed-write")
        self.written = 0
        self._flushed = 0

    def put(
        self, data: bytes | bytearray | None, hashes: Sequence[tuple[Hasher, bytes]] = ()
    ) -> None:
        """Queue ``data`` for writing and each ``(hasher, chunk)`` for hashing."""
        if hashes:
            self._hashing.submit(lambda: self._hash(hashes))
        if data:
            self._writing.submit(lambda: self._write(data))
        if self._progress is not None:
            self._progress(self.written, self._total)

    @staticmethod
    def _hash(hashes: Sequence[tuple[Hasher, bytes]]) -> None:
        for hasher, chunk in hashes:
            hasher.update(chunk)

    def _write(self, data: bytes | bytearray) -> None:
        self._out.write(data)
        self.written += len(data)
        if self.written - self._flushed >= _WRITEBACK_CHUNK:
            self._start_writeback()

    def _start_writeback(self) -> None:
        """Start writing back what is written so far, so the final fsync has little left to do.

        Without it every byte waits in the page cache until fsync, and the whole output's disk
        time is added after the CPU work instead of overlapping it.
        """
        sync_file_range = _sync_file_range()
        if sync_file_range is None:
            return
        try:
            self._out.flush()
            sync_file_range(self._out.fileno(), self._flushed, self.written - self._flushed, 2)
        except (OSError, ValueError):
            return
        self._flushed = self.written

    def drain(self) -> None:
        """Wait until everything queued is written and hashed."""
        self._hashing.drain()
        self._writing.drain()

    def close(self) -> None:
        """Drop what has not started and stop the workers."""
        self._hashing.close()
        self._writing.close()


def _copy_runs(
    stream: BinaryIO, runs: Iterable[_Run], writer: _Writer, hasher: Hasher | None, label: str
) -> None:
    for run in runs:
        pos = run.start
        while pos < run.end:
            stream.seek(pos)
            chunk = stream.read(min(_COPY_CHUNK, run.end - pos))
            if not chunk:
                raise ModelFileError(f"{label}: the file shrank while it was being copied")
            pos += len(chunk)
            writer.put(chunk if run.keep else None, [(hasher, chunk)] if hasher else ())


def _binascii_b64encode(raw: bytes) -> bytes:
    return binascii.b2a_base64(raw, newline=False)


@functools.cache
def _b64encoder() -> Callable[[bytes], bytes | bytearray]:
    """The fastest base64 encoder at hand: OpenSSL's ``EVP_EncodeBlock``, else binascii.

    OpenSSL (already loaded by hashlib) encodes about twice as fast, and a ctypes call releases
    the GIL, so encoding overlaps the hashing and writing threads; binascii holds the GIL and
    serializes them. The OpenSSL path is used only after it matched binascii on test vectors.
    """
    import ctypes

    for name in ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.3.dylib"):
        try:
            func = ctypes.CDLL(name).EVP_EncodeBlock
        except (OSError, AttributeError):
            continue
        func.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        func.restype = ctypes.c_int

        def encode(raw: bytes, func: Any = func) -> bytearray:
            # Room for the terminating NUL that EVP_EncodeBlock writes after the text.
            out = bytearray(base64_length(len(raw)) + 1)
            used = func((ctypes.c_char * len(out)).from_buffer(out), raw, len(raw))
            del out[used:]
            return out

        vectors = [b"", b"\x00", b"\xfb\xff", b"abc", bytes(range(256)) * 3 + b"\x01"]
        if all(encode(v) == _binascii_b64encode(v) for v in vectors):
            log.debug("base64 through %s", name)
            return encode
    return _binascii_b64encode


def _raw_chunks(ref: PayloadRef) -> Iterator[bytes]:
    """The payload in chunks whose length is a multiple of 3 (except the last)."""
    carry = b""
    for chunk in ref.iter_chunks(_B64_RAW_CHUNK):
        if carry:
            chunk, carry = carry + chunk, b""
        cut = len(chunk) - len(chunk) % 3
        if cut < len(chunk):
            chunk, carry = chunk[:cut], chunk[cut:]
        if chunk:
            yield chunk
    if carry:
        yield carry


def _digest_of(known: str | None, hasher: Hasher | None) -> Callable[[], str]:
    """The known digest, or the hasher's once it has seen everything."""
    if known is not None:
        return lambda: known
    if hasher is None:
        raise ContainerError("internal: a payload has neither a known digest nor a hasher")
    return hasher.hexdigest


def _write_container(
    stream: BinaryIO,
    out: BinaryIO,
    plan: _Plan,
    scan: Scan,
    progress: ProgressCallback | None,
    source_sha256: str | None,
) -> None:
    # Known digests (the build system has hashed every input already) are trusted, not redone.
    source_hash = None if source_sha256 else hashlib.sha256()
    writer = _Writer(out, plan.total, progress)
    try:
        _copy_runs(stream, plan.head, writer, source_hash, scan.label)
        for key, value in plan.small:
            writer.put(_entry_header(key, len(value)) + value)
        digests: list[Callable[[], str]] = []
        for p, ref in plan.payloads:
            hasher = None if ref.sha256 else hashlib.sha256()
            digests.append(_digest_of(ref.sha256, hasher))
            writer.put(_entry_header(p.b64, base64_length(ref.length)))
            encode = _b64encoder()
            for raw in _raw_chunks(ref):
                writer.put(encode(raw), [(hasher, raw)] if hasher else ())
        if source_hash is not None:
            # The tail is hashed now (and copied below) because the source digest precedes it.
            _copy_runs(
                stream,
                [_Run(r.start, r.end, False) for r in plan.tail],
                writer,
                source_hash,
                scan.label,
            )
        writer.drain()
        digests.append(_digest_of(source_sha256, source_hash))
        hexdigests = [digest() for digest in digests]
        for key, digest in zip(plan.digest_keys, hexdigests, strict=True):
            writer.put(_entry_header(key, len(digest)) + digest.encode("ascii"))
        _copy_runs(stream, plan.tail, writer, None, scan.label)
        writer.drain()
    finally:
        writer.close()
    if writer.written != plan.total:
        raise ContainerError(
            f"{scan.label}: wrote {writer.written} bytes but planned {plan.total}; did an input "
            "change while the container was written?"
        )
    if progress is not None:
        progress(plan.total, plan.total)


def embed_ane_metadata(
    source: StrPath,
    output: StrPath,
    *,
    microcode: PayloadRef,
    td_size: int,
    td_count: int,
    weights: PayloadRef | None = None,
    tile_descriptors: PayloadRef | None = None,
    toolchain: str | None = None,
    io: Mapping[int, IoSlot] | None = None,
    tiles: Mapping[int, int] | None = None,
    progress: ProgressCallback | None = None,
    source_sha256: str | None = None,
) -> AneModelMetadata:
    """Write ``output``: ``source`` with its ``ane.*`` metadata replaced by the given payloads.

    Streams: the source's top-level fields are copied verbatim in chunks (the graph is never
    parsed), stale ``ane.*`` entries are dropped, foreign entries kept, and the new entries are
    base64-encoded in chunks, so memory does not grow with model or payload size. The output is
    written to a temp file beside it, fsynced and renamed into place; nothing is left behind on
    failure. ``output`` may equal ``source``.

    Args:
        source: The ONNX model (may already be a container).
        output: Where the container goes.
        microcode: The task descriptor chain (``ane.microcode.b64``), non-empty.
        td_size: Size of the first descriptor: a positive multiple of 4.
        td_count: Number of descriptors, 1 to 65535.
        weights: Kernel weights (``ane.weights.b64``), if any.
        tile_descriptors: Separate descriptor payload (``ane.tile_descriptors.b64``), if any.
        toolchain: Free text naming the compiler.
        io: Per-slot tensors (``ane.io``).
        tiles: BO size in bytes per slot (``ane.tiles``).
        progress: Called with (bytes written, total bytes) as the output grows.
        source_sha256: The source file's digest when already known (as for payloads with a
            `PayloadRef.sha256`); it is trusted instead of hashing the source again.

    Returns:
        The metadata of the written container, read back from it.

    Raises:
        ContainerError: Invalid arguments, or a container the kernel or ONNX would reject (a key
            of 64 bytes or more, over 2 GiB, external data that would not resolve). Checked
            before anything is written.
        ModelFileError: A file cannot be read or written.
        WireFormatError: The source is not a valid ONNX protobuf.
        ArtifactError: A payload file cannot be read.
    """
    source_path, output_path = Path(source), Path(output)
    small = _embed_values(microcode, td_size, td_count, toolchain, io, tiles)
    payloads = [
        (keys, ref)
        for keys, ref in zip(PAYLOADS, (microcode, weights, tile_descriptors), strict=True)
        if ref is not None
    ]
    with open_model(source_path) as (stream, label):
        scan = scan_container(stream, label)
        plan = _plan(scan, small, payloads, output_path)
        check_external_data(source_path, output_path)

        def write(out: BinaryIO, tmp: str) -> AneModelMetadata:
            _write_container(stream, out, plan, scan, progress, source_sha256)
            out.flush()
            with open(tmp, "rb") as written:
                # Read back what was written, under the name it is about to get.
                return metadata_from_scan(scan_container(written, os.fspath(output)), written)

        metadata = replace_atomically(output_path, write, error=ModelFileError)
    log.info(
        "%s: wrote %d bytes (microcode %d, weights %d bytes) from %s",
        output_path,
        plan.total,
        metadata.microcode_len,
        metadata.weights_len,
        source_path,
    )
    return metadata
