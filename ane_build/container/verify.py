"""Verify a container against every rule of the fork kernel and our own metadata rules.

Payloads are decoded in chunks, so memory stays flat; problems are failed checks, not exceptions.
This module must not write files or touch devices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from ..driver.uapi import (
    ANE_CMD_GRAN,
    ONNX_KEY_LIMIT,
)
from ..errors import (
    DescriptorChainError,
    MetadataError,
    ModelFileError,
    WireFormatError,
)
from ..formats.microcode import walk_chain
from .keys import (
    CONTAINER_FORMAT,
    KEY_FORMAT,
    KEY_IO,
    KEY_SOURCE_SHA256,
    KEY_TD_COUNT,
    KEY_TD_SIZE,
    KEY_TILES,
    MICROCODE,
    PAYLOADS,
    PROTOBUF_LIMIT,
    REQUIRED_KEYS,
    WEIGHTS,
    PayloadKeys,
)
from .metadata import iter_decoded, metadata_from_scan, missing_message
from .scan import (
    Entry,
    ModelSource,
    Scan,
    bad_value,
    label_of,
    open_model,
    read_text,
    scan_container,
)
from .types import VerifyReport
from .values import parse_decimal, parse_digest, parse_io, parse_tiles

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Decoded:
    length: int
    sha256: str
    data: bytes | None


def _decode_for_check(stream: BinaryIO, label: str, entry: Entry, keep: bool) -> _Decoded:
    digest = hashlib.sha256()
    kept: list[bytes] = []
    length = 0
    for chunk in iter_decoded(stream, label, entry):
        digest.update(chunk)
        length += len(chunk)
        if keep:
            kept.append(chunk)
    return _Decoded(length, digest.hexdigest(), b"".join(kept) if keep else None)


def _attempt(
    report: VerifyReport, name: str, run: Callable[[], _T], describe: Callable[[_T], str]
) -> _T | None:
    """Run one check that raises `MetadataError` on failure; record the outcome."""
    try:
        value = run()
    except MetadataError as exc:
        report.add(name, False, str(exc))
        return None
    report.add(name, True, describe(value))
    return value


def _verify_payloads(
    report: VerifyReport, stream: BinaryIO, scan: Scan, ane: dict[str, Entry], strict: bool
) -> dict[str, _Decoded]:
    decoded: dict[str, _Decoded] = {}
    for p in PAYLOADS:
        if p.b64 not in ane:
            if p.sha256 in ane:
                report.add(f"{p.sha256}", False, f"stated, but there is no {p.b64}")
            continue

        def run(p: PayloadKeys = p) -> _Decoded:
            result = _decode_for_check(stream, scan.label, ane[p.b64], keep=p is not WEIGHTS)
            if p is MICROCODE and result.length == 0:
                raise MetadataError(
                    f"{scan.label}: {p.b64} decodes to 0 bytes; the kernel rejects it"
                )
            return result

        prefix = "kernel: " if p.kernel else ""
        result = _attempt(report, f"{prefix}{p.b64} base64", run, lambda d: f"{d.length} bytes")
        if result is None:
            continue
        decoded[p.name] = result
        if p.sha256 not in ane:
            if strict:
                report.add(p.sha256, False, "missing (strict verification wants every digest)")
            continue
        try:
            stated = parse_digest(
                read_text(stream, scan.label, ane[p.sha256]), p.sha256, scan.label
            )
        except MetadataError as exc:
            report.add(p.sha256, False, str(exc))
            continue
        ok = stated == result.sha256
        detail = "matches" if ok else f"states {stated} but the payload hashes to {result.sha256}"
        report.add(p.sha256, ok, detail)
    return decoded


def _verify_chain(
    report: VerifyReport, microcode: bytes, td_size: int, td_count: int | None, label: str
) -> None:
    try:
        chain = walk_chain(microcode, td_size, source=label)
    except DescriptorChainError as exc:
        report.add("descriptor chain", False, f"{exc} (walked with {KEY_TD_SIZE} = {td_size})")
        return
    problems = []
    if td_count is not None and chain.td_count != td_count:
        problems.append(
            f"ane.td_count is {td_count} but the chain has {chain.td_count} descriptors"
        )
    if chain.tsk_size > len(microcode):
        problems.append(f"tsk_size {chain.tsk_size} exceeds the microcode ({len(microcode)} bytes)")
    data_end = len(microcode.rstrip(b"\0"))
    if data_end > chain.tsk_size:
        # As the converter refuses: code after the end-of-network descriptor never runs, so the
        # chain (hence td_size) does not describe this microcode.
        problems.append(
            f"with {KEY_TD_SIZE} = {td_size} the chain ends at byte 0x{chain.tsk_size:x}, but the "
            f"microcode has non-zero data up to 0x{data_end:x}"
        )
    detail = "; ".join(problems) or (
        f"{chain.td_count} descriptor(s), td_size {chain.td_size}, tsk_size {chain.tsk_size} "
        f"<= microcode {len(microcode)} bytes"
    )
    report.add("descriptor chain", not problems, detail)


def _verify_stream(report: VerifyReport, stream: BinaryIO, label: str, strict: bool) -> None:
    try:
        scan = scan_container(stream, label)
    except WireFormatError as exc:
        report.add("wire format", False, str(exc))
        return
    report.add(
        "wire format",
        True,
        f"{len(scan.fields)} top-level fields, {len(scan.entries)} metadata entries, "
        f"{scan.size} bytes",
    )
    report.add(
        "graph",
        scan.has_graph,
        "present" if scan.has_graph else "no graph (field 7): not a loadable ONNX model",
    )
    report.add(
        "protobuf size",
        scan.size <= PROTOBUF_LIMIT,
        f"{scan.size} bytes" + ("" if scan.size <= PROTOBUF_LIMIT else " (limit 2 GiB - 1)"),
    )
    long_keys = [
        f"{e.key!r} ({e.key_size} bytes)" for e in scan.entries if e.key_size >= ONNX_KEY_LIMIT
    ]
    report.add(
        "kernel: key length",
        not long_keys,
        f"keys of {ONNX_KEY_LIMIT} bytes or more: {', '.join(long_keys)}"
        if long_keys
        else f"all {len(scan.entries)} keys < {ONNX_KEY_LIMIT} bytes",
    )
    dups = scan.duplicate_keys()
    report.add("unique keys", not dups, f"repeated: {', '.join(dups)}" if dups else "")
    ane = scan.ane_entries()
    missing = [key for key in REQUIRED_KEYS if key not in ane]
    report.add(
        "kernel: required keys",
        not missing,
        missing_message(label, missing) if missing else ", ".join(REQUIRED_KEYS),
    )

    numbers: dict[str, int | None] = {}
    for key in (KEY_TD_SIZE, KEY_TD_COUNT):
        if key in ane:

            def read_number(key: str = key) -> int:
                return parse_decimal(read_text(stream, label, ane[key]), key, label)

            numbers[key] = _attempt(report, f"kernel: {key}", read_number, str)
    decoded = _verify_payloads(report, stream, scan, ane, strict)

    microcode = decoded.get(MICROCODE.name)
    if microcode is not None:
        weights = decoded[WEIGHTS.name].length if WEIGHTS.name in decoded else 0
        need = -(-microcode.length // ANE_CMD_GRAN) * ANE_CMD_GRAN + weights
        report.add(
            "kernel: payload fits slot-0 BO",
            need <= scan.size,
            f"microcode padded to {ANE_CMD_GRAN} + weights = {need} bytes, container "
            f"{scan.size} bytes",
        )
        td_size = numbers.get(KEY_TD_SIZE)
        if microcode.data is not None and td_size is not None:
            _verify_chain(report, microcode.data, td_size, numbers.get(KEY_TD_COUNT), label)

    if KEY_IO in ane:
        _attempt(
            report,
            KEY_IO,
            lambda: parse_io(read_text(stream, label, ane[KEY_IO]), label),
            lambda slots: f"{len(slots)} slot(s)",
        )
    if KEY_TILES in ane:
        _attempt(
            report,
            KEY_TILES,
            lambda: parse_tiles(read_text(stream, label, ane[KEY_TILES]), label),
            lambda tiles: f"{len(tiles)} slot(s)",
        )
    if KEY_FORMAT in ane:

        def read_format() -> str:
            fmt = read_text(stream, label, ane[KEY_FORMAT])
            if fmt != CONTAINER_FORMAT:
                raise bad_value(
                    label, KEY_FORMAT, fmt, f"this version reads format {CONTAINER_FORMAT!r}"
                )
            return fmt

        _attempt(report, KEY_FORMAT, read_format, str)
    elif strict:
        report.add(KEY_FORMAT, False, "missing (strict verification wants the container format)")
    if KEY_SOURCE_SHA256 in ane:
        _attempt(
            report,
            KEY_SOURCE_SHA256,
            lambda: parse_digest(
                read_text(stream, label, ane[KEY_SOURCE_SHA256]), KEY_SOURCE_SHA256, label
            ),
            lambda value: value,
        )
    elif strict:
        report.add(KEY_SOURCE_SHA256, False, "missing (strict verification wants the source)")

    if not missing:
        try:
            report.metadata = metadata_from_scan(scan, stream)
        except MetadataError as exc:
            # Only reached for a rule no check above covers, so the report never reads as OK.
            if report.ok:
                report.add("metadata", False, str(exc))


def verify_container(model: ModelSource, *, strict: bool = True) -> VerifyReport:
    """Check a container against every rule of the fork kernel and our own metadata rules.

    Kernel rules: every key < 64 bytes; microcode, ``td_size`` and ``td_count`` present, the
    numbers decimal, < 32 characters and non-zero; payloads valid base64 in the kernel's alphabet;
    microcode non-empty; microcode and weights fit the slot-0 BO. Ours: a graph is present, the
    file is under the protobuf limit, keys are unique, digests match the decoded payloads, the
    descriptor chain agrees with ``td_size``/``td_count`` and fits the microcode, ``ane.io`` and
    ``ane.tiles`` are valid. Payloads are decoded in chunks, so memory stays flat.

    Args:
        model: Path of an ONNX file, its bytes, or a seekable binary stream of it.
        strict: Also require what `embed_ane_metadata` always writes: ``ane.format``, a digest for
            every payload and ``ane.source.sha256``.

    Returns:
        The report; problems with the content (even an unreadable file) are failed checks, not
        exceptions. Use `VerifyReport.raise_for_failure` to turn failures into an exception.
    """
    report = VerifyReport(path=label_of(model))
    try:
        with open_model(model) as (stream, label):
            _verify_stream(report, stream, label, strict)
    except (ModelFileError, WireFormatError) as exc:
        # WireFormatError here means the file changed under us while a value was read.
        report.add("readable", False, str(exc))
    return report
