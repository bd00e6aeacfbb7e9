"""Verify a container: the fork kernel's verdict on it, then our own rules, then portability.

The kernel check runs the kernel's own parser model (`driver.kernel_onnx`) over the container as
the kernel would see it, in a page-rounded BO, so it fails exactly when the kernel would, naming
the rule. Our rules (a loadable graph, unique keys, digests, the descriptor chain, ``ane.io``,
``ane.tiles``, format) and portability (what other readers need) follow. Payloads are decoded in
chunks, once; problems are failed checks, not exceptions. No writes, no devices.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import numpy as np

from ..driver.kernel_onnx import KernelVerdict
from ..errors import (
    AneError,
    DescriptorChainError,
    MetadataError,
    ModelFileError,
    WireFormatError,
)
from ..formats.microcode import walk_chain
from ..formats.protowire import file_size
from . import portable
from .graph import graph_io, model_without_metadata
from .kernel_check import Progress, describe, kernel_verdict
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
from .metadata import iter_decoded, metadata_from_scan
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


def _structure(report: VerifyReport, stream: BinaryIO, label: str) -> Scan | None:
    try:
        scan = scan_container(stream, label)
    except WireFormatError as exc:
        report.add("wire format", False, str(exc))
        return None
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
    small = scan.size <= PROTOBUF_LIMIT
    report.add("protobuf size", small, f"{scan.size} bytes" + ("" if small else " (limit 2 GiB)"))
    dups = scan.duplicate_keys()
    report.add("unique keys", not dups, f"repeated: {', '.join(dups)}" if dups else "")
    return scan


def _decode(stream: BinaryIO, label: str, entry: Entry, keep: bool) -> _Decoded:
    digest = hashlib.sha256()
    kept: list[bytes] = []
    length = 0
    for chunk in iter_decoded(stream, label, entry):
        digest.update(chunk)
        length += len(chunk)
        if keep:
            kept.append(chunk)
    return _Decoded(length, digest.hexdigest(), b"".join(kept) if keep else None)


def _payload(
    stream: BinaryIO, label: str, entry: Entry, keys: PayloadKeys, verdict: KernelVerdict
) -> _Decoded:
    """A payload's length and digest: from the kernel's verdict when it decoded it, else ours."""
    if verdict.ok and keys is WEIGHTS and verdict.weights_sha256 is not None:
        return _Decoded(verdict.weights_len, verdict.weights_sha256, None)
    return _decode(stream, label, entry, keep=keys is not WEIGHTS)


def _digests(
    report: VerifyReport, stream: BinaryIO, scan: Scan, verdict: KernelVerdict, strict: bool
) -> dict[str, _Decoded]:
    ane = scan.ane_entries()
    decoded: dict[str, _Decoded] = {}
    for keys in PAYLOADS:
        if keys.b64 not in ane:
            if keys.sha256 in ane:
                report.add(keys.sha256, False, f"stated, but there is no {keys.b64}")
            continue
        try:
            result = _payload(stream, scan.label, ane[keys.b64], keys, verdict)
        except MetadataError as exc:
            if not keys.kernel:  # the kernel check has said it for the kernel's payloads
                report.add(f"{keys.b64} base64", False, str(exc))
            continue
        decoded[keys.name] = result
        if keys.sha256 in ane:

            def matches(keys: PayloadKeys = keys, result: _Decoded = result) -> str:
                return _digest_matches(stream, scan, ane, keys, result)

            _attempt(report, keys.sha256, matches, str)
        elif strict:
            report.add(keys.sha256, False, "missing (strict verification wants every digest)")
    return decoded


def _digest_matches(
    stream: BinaryIO, scan: Scan, ane: dict[str, Entry], keys: PayloadKeys, result: _Decoded
) -> str:
    stated = parse_digest(read_text(stream, scan.label, ane[keys.sha256]), keys.sha256, scan.label)
    if stated != result.sha256:
        raise MetadataError(f"states {stated} but the payload hashes to {result.sha256}")
    return "matches"


def _chain(report: VerifyReport, microcode: bytes, td_size: int, td_count: int) -> None:
    try:
        chain = walk_chain(microcode, td_size)
    except DescriptorChainError as exc:
        report.add("descriptor chain", False, f"{exc} (walked with {KEY_TD_SIZE} = {td_size})")
        return
    problems = []
    if chain.td_count != td_count:
        problems.append(
            f"ane.td_count is {td_count} but the chain has {chain.td_count} descriptors"
        )
    sizes = sorted({d.size for d in chain.descriptors})
    if len(sizes) > 1:
        # The chain states every size but the first; anecc's chains use one size throughout, and
        # a td_size off from it makes the engine fetch a different first descriptor.
        problems.append(
            f"{KEY_TD_SIZE} = {td_size}, but the chain gives its other descriptors "
            f"{', '.join(str(n) for n in sizes if n != td_size)} bytes"
        )
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


def _sizes(stream: BinaryIO, scan: Scan, verdict: KernelVerdict) -> tuple[int, int] | None:
    """td_size and td_count: the kernel's when it accepted, else read here when they parse."""
    if verdict.ok:
        return verdict.td_size, verdict.td_count
    ane = scan.ane_entries()
    try:
        return (
            parse_decimal(read_text(stream, scan.label, ane[KEY_TD_SIZE]), KEY_TD_SIZE, ""),
            parse_decimal(read_text(stream, scan.label, ane[KEY_TD_COUNT]), KEY_TD_COUNT, ""),
        )
    except (KeyError, MetadataError):
        return None  # the kernel check reports it


def _values(report: VerifyReport, stream: BinaryIO, scan: Scan, strict: bool) -> None:
    label, ane = scan.label, scan.ane_entries()

    def text(key: str) -> str:
        return read_text(stream, label, ane[key])

    def read_format() -> str:
        fmt = text(KEY_FORMAT)
        if fmt != CONTAINER_FORMAT:
            raise bad_value(
                label, KEY_FORMAT, fmt, f"this version reads format {CONTAINER_FORMAT!r}"
            )
        return fmt

    def read_io() -> str:
        return f"{len(parse_io(text(KEY_IO), label))} slot(s)"

    def read_tiles() -> str:
        return f"{len(parse_tiles(text(KEY_TILES), label))} slot(s)"

    def read_source() -> str:
        return parse_digest(text(KEY_SOURCE_SHA256), KEY_SOURCE_SHA256, label)

    optional = ((KEY_IO, read_io), (KEY_TILES, read_tiles))
    wanted = ((KEY_FORMAT, read_format), (KEY_SOURCE_SHA256, read_source))
    for key, run in (*optional, *wanted):
        if key in ane:
            _attempt(report, key, run, str)
        elif strict and (key, run) in wanted:
            report.add(key, False, "missing (strict verification wants it; our writer adds it)")


def _program_matches_graph(report: VerifyReport, stream: BinaryIO, scan: Scan) -> None:
    """The graph's inputs and outputs against ``ane.io``: counts, then element counts."""
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    ane = scan.ane_entries()
    try:
        slots = (
            parse_io(read_text(stream, scan.label, ane[KEY_IO]), scan.label)
            if KEY_IO in ane
            else {}
        )
        if not slots:
            report.add("graph vs program", False, "cannot run or check: no ane.io", warning=True)
            return
        graph = onnx.ModelProto.FromString(model_without_metadata(stream))
        specs = dict(zip(("input", "output"), graph_io(graph, dims={}), strict=True))
    except (AneError, DecodeError, ValueError) as exc:
        report.add("graph vs program", False, f"cannot compare: {exc}", warning=True)
        return
    problems = []
    for role, graph_side in specs.items():
        ours = sorted((s, v) for s, v in slots.items() if v.role == role)
        shown = ", ".join(f"slot {s} {v.n}x{v.c}x{v.h}x{v.w}" for s, v in ours) or "none"
        theirs = ", ".join(f"{g.name} {list(g.shape)}" for g in graph_side) or "none"
        counts = [v.n * v.c * v.h * v.w for _, v in ours]
        sizes = [int(np.prod(g.shape)) if -1 not in g.shape else None for g in graph_side]
        if len(ours) != len(graph_side) or any(
            size is not None and size != count for size, count in zip(sizes, counts, strict=False)
        ):
            problems.append(f"{role}s: the graph has {theirs}; ane.io has {shown}")
    detail = "; ".join(problems) or (
        f"{len(specs['input'])} input(s) and {len(specs['output'])} output(s) match ane.io"
    )
    report.add("graph vs program", not problems, detail)


def _verify(
    report: VerifyReport,
    stream: BinaryIO,
    label: str,
    options: tuple[bool, bool, Progress | None],
) -> None:
    strict, portable_errors, progress = options
    # First, and whatever our own reader makes of the bytes: the kernel's parser is more
    # lenient than protobuf (zero pairs, unknown wire types it skips), and its verdict is a fact.
    size = file_size(stream)
    verdict = kernel_verdict(stream, size, progress)
    report.add("kernel", verdict.ok, describe(verdict, size))
    scan = _structure(report, stream, label)
    if scan is None:
        return
    decoded = _digests(report, stream, scan, verdict, strict)
    microcode = decoded.get(MICROCODE.name)
    sizes = _sizes(stream, scan, verdict)
    if microcode is not None and microcode.data and sizes is not None:
        _chain(report, microcode.data, *sizes)
    _values(report, stream, scan, strict)
    if scan.has_graph:
        _program_matches_graph(report, stream, scan)
    for name, detail in portable.problems(stream, label, scan.ane_entries(), scan.keys()):
        report.add(name, False, detail, warning=not portable_errors)
    if all(key in scan.ane_entries() for key in REQUIRED_KEYS):
        try:
            report.metadata = metadata_from_scan(scan, stream)
        except MetadataError as exc:
            if report.ok:  # a rule no check above covers: never let the report read as OK
                report.add("metadata", False, str(exc))


def verify_container(
    model: ModelSource,
    *,
    strict: bool = True,
    portable: bool = False,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check a container against the fork kernel, our own rules and portability.

    The kernel check gives the kernel's exact verdict on the container in a page-rounded BO
    (DESIGN section 3). Ours: a graph is present, the file is under the protobuf limit, keys are
    unique, digests match the decoded payloads, the descriptor chain agrees with ``td_size``
    and ``td_count`` and ends the microcode, ``ane.io`` and ``ane.tiles`` are valid.
    Portability: what the kernel accepts but other readers refuse (see `portable`).

    Args:
        model: Path of an ONNX file, its bytes, or a seekable binary stream of it.
        strict: Also require what our writer always writes: ``ane.format``, a digest for every
            payload and ``ane.source.sha256``.
        portable: Make portability problems failures; they are warnings otherwise.
        progress: Called with (bytes done, bytes total) while the weights are decoded.

    Returns:
        The report; problems with the content (even an unreadable file) are failed checks, not
        exceptions. Use `VerifyReport.raise_for_failure` to turn failures into an exception.
    """
    report = VerifyReport(path=label_of(model))
    try:
        with open_model(model) as (stream, label):
            _verify(report, stream, label, (strict, portable, progress))
    except (ModelFileError, WireFormatError) as exc:
        # WireFormatError here means the file changed under us while a value was read.
        report.add("readable", False, str(exc))
    except OSError as exc:
        report.add("readable", False, f"{report.path}: cannot map it: {exc}")
    return report
