"""Fuzzing the readers of untrusted input (issue 6 item 2).

Targets: the protobuf wire scanner, the ``ane.*`` metadata parser/reader/verifier, the ``.anec``
reader, the descriptor walker and the bundle loader (plus artefact resolution on top of it).

Every target call goes through `Probe.run`, which enforces the three properties:

* only our own errors: an `AneError` is an answer, anything else escapes and fails the test;
* no hang: every example runs under a hypothesis deadline (``FUZZ_DEADLINE_MS``, default 500);
* bounded allocations: the traced peak of one call stays under ``64 x input size + 1 MiB``.
  64x covers the worst legitimate case, JSON whose object graph is ~30x its text (``[{},{}..]``),
  with margin; 1 MiB covers fixed costs (scan block, file buffers, the header, pydantic and
  exception objects). A length field claiming 2 GiB in a 100-byte input blows it by 2000x.

Inputs are structured (valid messages, files and chains, then mutated: flipped bytes,
truncations, splices, length prefixes set to huge values, header fields set to edge values) so
examples get past the first check. ``FUZZ_EXAMPLES=N`` sets every target's max_examples to N for
long local runs. Per-target counts (examples, calls, accepted, errors by type, peak memory) are
printed in a "fuzz cases per target" section of the terminal summary and recorded as junitxml
properties. ``fuzz/`` holds atheris entry points for the same properties in longer runs.

The differential test runs chains broken in named ways through the verifier's chain check and
the simulated engine (written apart from each other) and holds both to the oracle of how the
chain was built. The kernel's parser has its own oracle: the kernel vectors.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import importlib.util
import io
import itertools
import json
import os
import random
import struct
import sys
import threading
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ane_build.artifacts.resolve import ArtifactSpec, load_bundle, resolve_artifacts
from ane_build.container.metadata import parse_ane_metadata, read_ane_payloads
from ane_build.container.types import VerifyReport
from ane_build.container.verify import verify_container
from ane_build.driver.device import ANEDevice
from ane_build.driver.uapi import PAGE_SIZE, TD_COUNT_LIMIT, TD_WORD0_EON, round_up
from ane_build.errors import AneDeviceError, AneError, MetadataError, WireFormatError
from ane_build.formats import protowire as pw
from ane_build.formats.anec import (
    ANEC_HEADER_SIZE,
    ANEC_LEGACY_PAYLOAD_OFFSET,
    ANEC_PAYLOAD_OFFSET,
    AnecHeader,
    read_anec,
)
from ane_build.formats.microcode import build_bootstrap, walk_chain
from ane_build.synthetic.chains import M1_TD_SIZE, make_chain, make_weights
from tests.helpers import encode_entry

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
MEM_FACTOR = 64
MEM_SLACK = 1 << 20
DEADLINE = timedelta(milliseconds=int(os.environ.get("FUZZ_DEADLINE_MS", "500")))
_SCALE = os.environ.get("FUZZ_EXAMPLES")


def fuzz_settings(default: int) -> settings:
    """Per-target settings: ``default`` examples in CI, ``FUZZ_EXAMPLES`` for long runs."""
    return settings(
        max_examples=int(_SCALE) if _SCALE else default,
        deadline=DEADLINE,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


@dataclass
class Probe:
    """Runs target calls under the properties and counts what happened, per target function."""

    target: str
    examples: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    max_peak: int = 0
    max_ratio: float = 0.0

    def example(self) -> None:
        """Count one generated example (a test body run)."""
        self.examples += 1

    def run(self, call: Callable[[], T], size: int, what: str = "call") -> T | AneError:
        """Call ``call`` (its input is ``size`` bytes); return its result or its AneError."""
        self.calls[what] += 1
        outer = tracemalloc.is_tracing()  # e.g. PYTHONTRACEMALLOC=1: measure from here
        if not outer:
            tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            result: T | AneError = call()
        except AneError as exc:  # our answer for bad input; anything else propagates
            result = exc
        finally:
            peak = tracemalloc.get_traced_memory()[1] - before
            if not outer:
                tracemalloc.stop()
        budget = MEM_FACTOR * size + MEM_SLACK
        assert peak <= budget, (
            f"{self.target}: {what} allocated a peak of {peak} bytes for a {size}-byte input "
            f"(budget {MEM_FACTOR}x + {MEM_SLACK})"
        )
        self.max_peak = max(self.max_peak, peak)
        if size >= 4096:  # below that, the fixed 1 MiB allowance is what matters
            self.max_ratio = max(self.max_ratio, peak / size)
        if isinstance(result, AneError):
            self.rejected[type(result).__name__] += 1
        else:
            self.accepted[what] += 1
        return result

    def summary(self) -> str:
        """One line: examples, calls and acceptances per function, errors, memory peaks."""
        calls = ", ".join(f"{w} {n} ({self.accepted[w]} ok)" for w, n in self.calls.items())
        errors = ", ".join(f"{name} {n}" for name, n in self.rejected.most_common())
        notes = "".join(f"; {note}: {n}" for note, n in self.notes.items())
        return (
            f"{self.target}: {self.examples} examples; calls: {calls}; rejected: "
            f"{errors or 'none'}; max peak {self.max_peak // 1024} KiB, "
            f"max peak/input (inputs >= 4 KiB) {self.max_ratio:.1f}x{notes}"
        )


class _FuzzReport:
    """A plugin registered on first use: prints each target's counts in the terminal summary."""

    name = "ane-fuzz-report"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.section("fuzz cases per target")
            for line in self.lines:
                terminalreporter.write_line(line)


@pytest.fixture
def probe(request: pytest.FixtureRequest) -> Iterator[Probe]:
    """A `Probe` for the test; its counts go to the terminal summary and junitxml properties."""
    p = Probe(request.node.name)
    yield p
    request.node.user_properties += [("fuzz_examples", p.examples), ("fuzz_calls", p.calls.total())]
    manager = request.config.pluginmanager
    report = manager.get_plugin(_FuzzReport.name)
    if report is None:
        report = _FuzzReport()
        manager.register(report, _FuzzReport.name)
    report.lines.append(p.summary())
    # A test skipped before its first example (no samples in this checkout) asserts nothing.
    if p.examples:
        assert p.calls


# --- generic byte mutations -------------------------------------------------------------------

HUGE = [2**31, 2**31 - 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**70]
BYTE_OPS = ["flip", "set", "truncate", "insert", "delete", "duplicate", "splice"]


@st.composite
def byte_mutations(draw: st.DrawFn, seed: bytes, max_ops: int = 3) -> bytes:
    """``seed`` after up to ``max_ops`` random byte-level edits (none is a valid draw)."""
    data = bytearray(seed)
    for op in draw(st.lists(st.sampled_from(BYTE_OPS), max_size=max_ops)):
        n = len(data)
        at = draw(st.integers(0, n))
        if op == "flip" and n:
            data[at % n] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and n:
            data[at % n] = draw(
                st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]) | st.integers(0, 255)
            )
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 32))]
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif op == "splice" and n:
            src = draw(st.integers(0, n - 1))
            data[at:at] = seed[src : src + draw(st.integers(1, 64))]
    return bytes(data)


def set_varint(data: bytes, pos: int, value: int) -> bytes:
    """Replace the varint at ``pos`` by ``value`` (any size: the message shifts)."""
    _, end = pw.decode_varint(data, pos, len(data))
    return data[:pos] + pw.encode_varint(value) + data[end:]


def len_prefixes(data: bytes) -> list[int]:
    """Offsets of every length prefix in ``data``: top level and inside metadata entries."""
    found = []
    for f in pw.iter_fields(data):
        if f.wire_type == pw.WIRE_LEN:
            _, after_tag = pw.decode_varint(data, f.offset, len(data))
            found.append(after_tag)
            if f.number == pw.MODEL_METADATA_PROPS:
                try:
                    subs = list(pw.iter_fields(data, f.value_offset, f.end))
                except WireFormatError:
                    continue  # not a well-formed entry: only its outer prefix counts
                found += [
                    pw.decode_varint(data, s.offset, s.end)[1]
                    for s in subs
                    if s.wire_type == pw.WIRE_LEN
                ]
    return found


@st.composite
def protobuf_mutations(draw: st.DrawFn, seed: bytes) -> bytes:
    """A length prefix of ``seed`` set to a huge or off-by-one value, then byte edits."""
    data = seed
    prefixes = len_prefixes(seed)
    lie = draw(st.booleans())
    if prefixes and lie:
        pos = draw(st.sampled_from(prefixes))
        old = pw.decode_varint(data, pos, len(data))[0]
        data = set_varint(data, pos, draw(st.sampled_from([*HUGE, old + 1, old + 100, 0])))
    return draw(byte_mutations(data))


# --- 1. wire scanner --------------------------------------------------------------------------


def encode_field(number: int, wire: int, value: int | bytes) -> bytes:
    tag = pw.encode_varint(number << 3 | wire)
    if wire == pw.WIRE_VARINT:
        assert isinstance(value, int)
        return tag + pw.encode_varint(value)
    if wire in (pw.WIRE_FIXED64, pw.WIRE_FIXED32):
        assert isinstance(value, int)
        return tag + value.to_bytes(8 if wire == pw.WIRE_FIXED64 else 4, "little")
    assert isinstance(value, bytes)
    return tag + pw.encode_varint(len(value)) + value


FIELD_NUMBERS = st.sampled_from([1, 2, 7, 8, 14, 15, 16, 2047, 2**29 - 1]) | st.integers(1, 40)
WIRE_FIELDS = st.one_of(
    st.tuples(FIELD_NUMBERS, st.just(pw.WIRE_VARINT), st.integers(0, 2**64 - 1)),
    st.tuples(FIELD_NUMBERS, st.just(pw.WIRE_FIXED64), st.integers(0, 2**64 - 1)),
    st.tuples(FIELD_NUMBERS, st.just(pw.WIRE_FIXED32), st.integers(0, 2**32 - 1)),
    st.tuples(FIELD_NUMBERS, st.just(pw.WIRE_LEN), st.binary(max_size=48)),
)
MESSAGES = st.lists(WIRE_FIELDS, max_size=10)


def metadata_blob(entries: list[tuple[str, str]], head: bytes = b"") -> bytes:
    """A model of ``head`` fields, the graph and these metadata entries, of even length.

    Even, as our writer makes containers: the fork kernel parses the whole page-rounded BO, and
    after an odd container the last zero is a tag with no value.
    """
    blob = head + encode_field(7, pw.WIRE_LEN, GRAPH)
    for key, value in entries:
        blob += encode_field(14, pw.WIRE_LEN, encode_entry(key.encode(), value.encode()))
    return blob + (encode_field(15, pw.WIRE_VARINT, 300) if len(blob) % 2 else b"")


def scan_everything(data: bytes, block: int) -> list[pw.WireField]:
    """Scan ``data`` in memory and through streams; all three must agree."""
    try:
        memory: list[pw.WireField] | str = list(pw.iter_fields(data))
    except WireFormatError:
        memory = "error"
    try:
        stream: list[pw.WireField] | str = list(pw.iter_file_fields(io.BytesIO(data)))
    except WireFormatError:
        stream = "error"
    try:
        blocks: list[pw.WireField] | str = list(
            pw.iter_stream_fields(io.BytesIO(data), 0, len(data), block=block)
        )
    except WireFormatError:
        blocks = "error"
    assert memory == stream == blocks
    if memory == "error":
        raise WireFormatError("rejected")
    assert isinstance(memory, list)
    return memory


@fuzz_settings(600)
@given(
    message=MESSAGES,
    mutate=st.booleans(),
    block=st.sampled_from([1, 7, 20, 21, 64, pw.SCAN_BLOCK]),
    data=st.data(),
)
def test_wire_scanner(
    probe: Probe,
    message: list[tuple[int, int, int | bytes]],
    mutate: bool,
    block: int,
    data: st.DataObject,
) -> None:
    probe.example()
    blob = b"".join(encode_field(*f) for f in message)
    fuzzed = data.draw(protobuf_mutations(blob)) if mutate else blob
    result = probe.run(lambda: scan_everything(fuzzed, block), len(fuzzed), "scan 3 ways")
    if fuzzed == blob:
        # The unmutated message round-trips: numbers, wire types, lengths and values.
        assert not isinstance(result, AneError), result
        assert [(f.number, f.wire_type) for f in result] == [(n, w) for n, w, _ in message]
        for got, (_, wire, value) in zip(result, message, strict=True):
            if wire == pw.WIRE_VARINT:
                assert got.varint == value
            elif wire == pw.WIRE_LEN:
                assert isinstance(value, bytes)
                assert fuzzed[got.value_offset : got.end] == value
    if not isinstance(result, AneError):
        # Accepted: the fields tile the message exactly, in order, inside it.
        assert sum(f.end - f.offset for f in result) == len(fuzzed)
        assert all(a.end == b.offset for a, b in itertools.pairwise(result))
    # Any window of the message scans to fields inside that window, or is rejected.
    lo = data.draw(st.integers(0, len(fuzzed)))
    hi = data.draw(st.integers(lo, len(fuzzed)))
    window = probe.run(
        lambda: list(pw.iter_fields(fuzzed, lo, hi)), len(fuzzed), "iter_fields window"
    )
    if not isinstance(window, AneError):
        assert all(lo <= f.offset and f.end <= hi for f in window)
    else:
        assert isinstance(window, WireFormatError)


# --- 2. metadata parser, payload reader and verifier -----------------------------------------


@cache
def chain_bytes(count: int, td_size: int = M1_TD_SIZE) -> bytes:
    return make_chain(count, td_size)


GRAPH = b"\x0a\x00" + encode_field(2, pw.WIRE_LEN, b"graph") + encode_field(11, pw.WIRE_LEN, b"x")
PROBE = 1024  # container._B64_PROBE: parse reads this much at each end of long values
# What the kernel's base64 skips, and what it refuses ("\v", "\f").
KERNEL_WS = [" ", "\n", "\r\n", "\t", "    "]
WS = [*KERNEL_WS, "\v", "\f"]


@st.composite
def base64_text(draw: st.DrawFn, raw: bytes) -> str:
    """Base64 of ``raw`` in a variant the kernel accepts or nearly accepts."""
    text = (base64.urlsafe_b64encode if draw(st.booleans()) else base64.b64encode)(raw).decode()
    if draw(st.booleans()):
        text = text.rstrip("=")
    wrap = draw(st.sampled_from([0, 0, 64, 76]))
    if wrap:
        text = "\n".join(text[i : i + wrap] for i in range(0, len(text), wrap))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["space", "space", "bad", "pad", "drop"]))
        if kind == "space":
            text = text[:at] + draw(st.sampled_from(WS)) + text[at:]
        elif kind == "bad":
            text = text[:at] + draw(st.sampled_from(["*", "!", "\x00", "é", "=="])) + text[at:]
        elif kind == "pad":
            text += "=" * draw(st.integers(1, 3))
        else:
            text = text[:at] + text[at + 1 :]
    return text


DECIMALS = st.sampled_from(
    ["0", "00", "+628", " 628", "628\n", "6_28", "0x274", "-1", "", "4294967296", "٦٢٨", "1e3"]
) | st.integers(0, 2**33).map(str)
JSON_LEAVES = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8)
JSON_ANY = st.recursive(
    JSON_LEAVES | st.floats(allow_nan=False),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids, max_size=4)
    ),
    max_leaves=10,
)
IO_SLOT = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["input", "output", "scratch"]),
        "n": st.integers(0, 4),
        "c": st.integers(0, 4),
        "h": st.integers(0, 4),
        "w": st.integers(0, 64),
        "plane_stride": st.integers(0, 4096),
        "row_stride": st.integers(0, 256),
    },
    optional={"name": st.text(max_size=6) | st.none()},
)
SLOT_NAMES = st.sampled_from(["0", "2", "4", "31", "32", "-1", "04", "x", "1" * 40])


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def clean_base64(draw: st.DrawFn, raw: bytes) -> str:
    """Base64 of ``raw`` as the kernel accepts it: either alphabet, padded or not, wrapped."""
    text = (base64.urlsafe_b64encode if draw(st.booleans()) else base64.b64encode)(raw).decode()
    text = text.rstrip("=") if draw(st.booleans()) else text
    wrap = draw(st.sampled_from([0, 0, 64, 76]))
    return "\n".join(text[i : i + wrap] for i in range(0, len(text), wrap)) if wrap else text


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


CORRUPTIONS = [
    "base64",
    "decimal",
    "digest",
    "io",
    "tiles",
    "format",
    "long key",
    "drop key",
    "repeat key",
    "no graph",
    "whitespace",
]
VALID_IO = st.dictionaries(st.sampled_from(["2", "4", "5", "31"]), IO_SLOT, max_size=3)


@st.composite
def containers(draw: st.DrawFn) -> bytes:
    """An ANE container (raw wire format): valid, then up to three corruptions."""
    count = draw(st.integers(1, 4))
    microcode = chain_bytes(count)
    weights = draw(st.binary(max_size=2048))
    entries = {
        "ane.microcode.b64": draw(clean_base64(microcode)),
        "ane.td_size": str(M1_TD_SIZE),
        "ane.td_count": str(count),
    }
    extras = {
        "ane.weights.b64": draw(clean_base64(weights)),
        "ane.weights.sha256": sha256_hex(weights),
        "ane.microcode.sha256": sha256_hex(microcode),
        "ane.source.sha256": sha256_hex(b"source"),
        "ane.format": "1",
        "ane.tile_descriptors.b64": base64.b64encode(microcode).decode(),
        "ane.toolchain": draw(st.text(max_size=20)),
        "ane.io": json.dumps(draw(VALID_IO)),
        "ane.tiles": json.dumps(
            draw(st.dictionaries(st.sampled_from(["0", "4"]), st.integers(0, 2**20)))
        ),
        "foreign": draw(st.text(max_size=8)),
    }
    for key in draw(st.lists(st.sampled_from(sorted(extras)), unique=True)):
        entries[key] = extras[key]
    graph = True
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        corruption = draw(st.sampled_from(CORRUPTIONS))
        key = draw(st.sampled_from(sorted(entries)))
        if corruption == "base64":
            raw = microcode if draw(st.booleans()) else weights
            entries[draw(st.sampled_from(["ane.microcode.b64", "ane.weights.b64"]))] = draw(
                base64_text(raw)
            )
        elif corruption == "decimal":
            entries[draw(st.sampled_from(["ane.td_size", "ane.td_count"]))] = draw(DECIMALS)
        elif corruption == "digest":
            entries[draw(st.sampled_from(DIGEST_KEYS))] = draw(DIGESTS)
        elif corruption == "io":
            entries["ane.io"] = draw(
                st.dictionaries(SLOT_NAMES, IO_SLOT | JSON_ANY, max_size=3).map(json.dumps)
                | JSON_ANY.map(json.dumps)
                | st.sampled_from(['{"4": {"role": "input"}, "4": {}}', "{", deep_json(5000)])
            )
        elif corruption == "tiles":
            entries["ane.tiles"] = draw(
                st.dictionaries(SLOT_NAMES, st.integers(-1, 2**40) | JSON_ANY).map(json.dumps)
                | st.sampled_from([deep_json(100_000), '{"0": 1, "0": 2}', "[]"])
            )
        elif corruption == "format":
            entries["ane.format"] = draw(st.sampled_from(["2", "", "1\n"]))
        elif corruption == "long key":
            entries[draw(st.sampled_from(LONG_KEYS))] = "value"
        elif corruption == "drop key":
            del entries[key]
        elif corruption == "repeat key":
            entries[key + "\0dup"] = entries[key]
        elif corruption == "no graph":
            graph = False
        else:  # whitespace inside a payload's text, where parse does not look
            name = draw(st.sampled_from(["ane.microcode.b64", "ane.weights.b64"]))
            text = entries.get(name, "")
            at = draw(st.sampled_from([len(text) // 2, len(text) // 3]) | st.integers(0, len(text)))
            entries[name] = text[:at] + draw(st.sampled_from(WS)) + text[at:]
    items = list(entries.items())
    items = draw(st.permutations(items)) if draw(st.booleans()) else items
    out = encode_field(1, pw.WIRE_VARINT, 8)
    if graph:
        out += encode_field(7, pw.WIRE_LEN, GRAPH)
    for key, value in items:
        key = key.split("\0")[0]  # "repeat key" entries carry the key of another entry
        out += encode_field(14, pw.WIRE_LEN, encode_entry(key.encode(), value.encode()))
    return out


DIGEST_KEYS = [
    "ane.microcode.sha256",
    "ane.weights.sha256",
    "ane.source.sha256",
    "ane.tile_descriptors.sha256",
]
DIGESTS = st.sampled_from(["0" * 64, "A" * 64, "0" * 63, "zz"]) | st.text(max_size=70)
LONG_KEYS = ["x" * 63, "y" * 64, "é" * 32, "ane." + "z" * 60]


CONTAINERS = st.one_of(
    containers(), containers().flatmap(protobuf_mutations), st.binary(max_size=256)
)


def check_metadata_target(probe: Probe, model: bytes | Path, size: int, strict: bool) -> None:
    meta = probe.run(lambda: parse_ane_metadata(model), size, "parse_ane_metadata")
    payloads = probe.run(lambda: read_ane_payloads(model), size, "read_ane_payloads")
    # The verifier reports content problems; it raises nothing at all.
    report = probe.run(lambda: verify_container(model, strict=strict), size, "verify_container")
    assert isinstance(report, VerifyReport), f"verify_container raised {report!r}"
    assert report.ok == (bool(report.checks) and not report.failures)
    if not report.ok:
        assert "FAIL " in report.summary()
    if report.ok:
        # What the verifier passes, the reader and parser accept, with matching values.
        assert not isinstance(meta, AneError), meta
        assert not isinstance(payloads, AneError), payloads
        assert meta.microcode_len >= len(payloads.microcode) > 0  # exact: see below
        assert walk_chain(payloads.microcode, meta.td_size).td_count == meta.td_count
    if isinstance(meta, MetadataError) and "base64" in str(meta):
        # parse only looks at base64 text; what it calls invalid must not decode.
        assert isinstance(payloads, AneError), f"parse says {meta} but the payloads decode"
    if not isinstance(meta, AneError) and not isinstance(payloads, AneError):
        # Lengths parsed from the text length agree with the decoded payloads, except for long
        # values with whitespace only in their middle: parse reads the ends of long values only.
        values = entry_values(model if isinstance(model, bytes) else model.read_bytes())
        for key, got, payload in (
            (b"ane.microcode.b64", meta.microcode_len, payloads.microcode),
            (b"ane.weights.b64", meta.weights_len, payloads.weights),
        ):
            text = values.get(key, b"")
            middle = text[PROBE:-PROBE] if len(text) > 2 * PROBE else b""
            if middle.translate(None, b" \t\n\r\v\f") == middle:
                assert got == len(payload), (key, got, len(payload))
            else:
                assert got >= len(payload)


def entry_values(blob: bytes) -> dict[bytes, bytes]:
    """The metadata entries of a well-formed container, last one wins (as the readers do)."""
    values = {}
    for top in pw.iter_fields(blob):
        if top.number == pw.MODEL_METADATA_PROPS:
            parts = {
                f.number: blob[f.value_offset : f.end]
                for f in pw.iter_fields(blob, top.value_offset, top.end)
            }
            values[parts.get(1, b"")] = parts.get(2, b"")
    return values


@fuzz_settings(500)
@given(blob=CONTAINERS, strict=st.booleans())
def test_metadata_on_bytes(probe: Probe, blob: bytes, strict: bool) -> None:
    probe.example()
    check_metadata_target(probe, blob, len(blob), strict)


@fuzz_settings(200)
@given(blob=CONTAINERS, strict=st.booleans())
def test_metadata_on_files(probe: Probe, tmp_path: Path, blob: bytes, strict: bool) -> None:
    probe.example()
    path = tmp_path / "model_ane.onnx"
    path.write_bytes(blob)
    check_metadata_target(probe, path, len(blob), strict)


@fuzz_settings(100)
@given(
    size=st.integers(2 * PROBE, 4 * PROBE),
    where=st.floats(0.3, 0.7),
    space=st.sampled_from(KERNEL_WS),
    pad=st.booleans(),
    data=st.data(),
)
def test_parse_agrees_with_decoding_on_long_values(
    probe: Probe, size: int, where: float, space: str, pad: bool, data: st.DataObject
) -> None:
    # Long base64 with whitespace only in its middle, where parse does not look: parse may
    # over-count the length, but must not call valid base64 invalid.
    probe.example()
    weights = bytes(size)
    text = base64.b64encode(weights).decode()
    text = text if pad else text.rstrip("=")
    at = int(len(text) * where)
    text = text[:at] + space * data.draw(st.integers(1, 5)) + text[at:]
    microcode = chain_bytes(1)
    blob = metadata_blob(
        [
            ("ane.microcode.b64", base64.b64encode(microcode).decode()),
            ("ane.td_size", str(M1_TD_SIZE)),
            ("ane.td_count", "1"),
            ("ane.weights.b64", text),
        ]
    )
    meta = probe.run(lambda: parse_ane_metadata(blob), len(blob), "parse_ane_metadata")
    assert not isinstance(meta, AneError), meta
    assert meta.weights_len >= size and meta.microcode_len == len(microcode)
    report = probe.run(lambda: verify_container(blob, strict=False), len(blob), "verify")
    assert isinstance(report, VerifyReport) and report.ok, report


@pytest.mark.parametrize("key", ["ane.io", "ane.tiles"])
def test_deeply_nested_json_values_are_metadata_errors(probe: Probe, key: str) -> None:
    # Found by test_metadata_on_bytes: json.loads raised RecursionError out of parse and verify.
    probe.example()
    blob = metadata_blob(
        [
            ("ane.microcode.b64", base64.b64encode(chain_bytes(1)).decode()),
            ("ane.td_size", str(M1_TD_SIZE)),
            ("ane.td_count", "1"),
            (key, deep_json(100_000)),
        ]
    )
    meta = probe.run(lambda: parse_ane_metadata(blob), len(blob), "parse_ane_metadata")
    assert isinstance(meta, MetadataError) and "nested too deeply" in str(meta)
    assert key in str(meta)
    report = probe.run(lambda: verify_container(blob, strict=False), len(blob), "verify")
    assert isinstance(report, VerifyReport)
    assert [c.name for c in report.failures] == [key]


def test_a_fifo_as_the_model_path_does_not_hang(tmp_path: Path) -> None:
    # Found while fuzzing paths: open() of a FIFO blocks until a writer appears.
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    outcome: list[object] = []

    def read() -> None:
        outcome.append(verify_container(fifo))
        for call in (parse_ane_metadata, read_ane_payloads):
            try:
                call(fifo)
            except AneError as exc:
                outcome.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # unblock the reader before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO path blocked")
    report, *errors = outcome
    assert isinstance(report, VerifyReport) and not report.ok
    assert "not a regular file" in report.summary()
    assert len(errors) == 2 and all("not a regular file" in str(e) for e in errors)


@pytest.mark.parametrize("claim", [2**31, 2**64 - 1])
def test_length_prefixes_claiming_gigabytes_allocate_nothing(
    probe: Probe, tmp_path: Path, claim: int
) -> None:
    # A container of a few hundred bytes whose every length prefix, in turn, claims `claim`.
    entry = encode_entry(b"ane.microcode.b64", base64.b64encode(chain_bytes(1)))
    blob = encode_field(7, pw.WIRE_LEN, GRAPH) + encode_field(14, pw.WIRE_LEN, entry)
    prefixes = len_prefixes(blob)
    assert len(prefixes) == 4  # graph, entry, key, value
    for pos in prefixes:
        probe.example()
        liar = set_varint(blob, pos, claim)
        path = tmp_path / "liar.onnx"
        path.write_bytes(liar)
        for model in (liar, path):
            for what, call in (
                ("parse_ane_metadata", parse_ane_metadata),
                ("read_ane_payloads", read_ane_payloads),
                ("verify_container", verify_container),
            ):
                result = probe.run(lambda: call(model), len(liar), what)  # noqa: B023
                assert isinstance(result, WireFormatError | VerifyReport), result
                if isinstance(result, VerifyReport):
                    # Both readers refuse: the kernel (the length runs past the BO) and ours.
                    assert [c.name for c in result.failures] == ["kernel", "wire format"]
                    assert "rule length-past-end" in result.failures[0].detail


# --- 3. .anec reader ------------------------------------------------------------------------


@st.composite
def chain_mutations(draw: st.DrawFn, chain: bytes, td_size: int) -> bytes:
    """``chain`` with chain words (0: end-of-network, 1: next size, 7: next offset) edited."""
    data = bytearray(chain)
    descriptors = walk_chain(chain, td_size).descriptors
    for _ in range(draw(st.integers(0, 3))):
        d = draw(st.sampled_from(descriptors))
        at = d.offset + 4 * draw(st.sampled_from([0, 1, 7]))
        old = struct.unpack_from("<I", data, at)[0]
        choices = [old ^ TD_WORD0_EON, old ^ 1 << draw(st.integers(0, 31)), 0, 0xFFFFFFFF]
        choices += [old + 4, old - 4, d.offset, d.offset + d.size, len(data), 0x1FF << 16]
        new = draw(st.sampled_from(choices) | st.integers(0, 2**32 - 1))
        struct.pack_into("<I", data, at, new & 0xFFFFFFFF)
    return bytes(data)


U32_FIELDS = {"td_size", "td_count", "src_count", "dst_count"}
SCALARS = ["size", "td_size", "td_count", "tsk_size", "krn_size", "src_count", "dst_count"]


@st.composite
def header_mutations(draw: st.DrawFn, header: AnecHeader, file_size: int) -> AnecHeader:
    """``header`` with up to three fields set to edge or related values."""
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from([*SCALARS, "tiles", "nchw"]))
        slot = draw(st.integers(0, 31))
        if kind == "tiles":
            old, width = header.tiles[slot], 32
        elif kind == "nchw":
            col = draw(st.integers(0, 5))
            old, width = header.nchw[slot][col], 64
        else:
            old, width = getattr(header, kind), 32 if kind in U32_FIELDS else 64
        related = [0, 1, old + 1, old - 1, old * 2, old // 2, file_size, file_size - 0x1000]
        related += [header.size, header.tsk_size, 2**31, 2**32 - 1, 2**64 - 1, 0x6A8, 33]
        value = draw(st.sampled_from(related) | st.integers(0, 2**width - 1)) % 2**width
        if kind == "tiles":
            header = dataclasses.replace(
                header, tiles=(*header.tiles[:slot], value, *header.tiles[slot + 1 :])
            )
        elif kind == "nchw":
            row = list(header.nchw[slot])
            row[col] = value
            nchw = (*header.nchw[:slot], tuple(row), *header.nchw[slot + 1 :])
            header = dataclasses.replace(header, nchw=nchw)  # type: ignore[arg-type]
        else:
            header = dataclasses.replace(header, **{kind: value})
    return header


@st.composite
def anec_files(draw: st.DrawFn) -> tuple[bytes, int]:
    """A valid-looking .anec image (often mutated) and the payload offset to read it at."""
    count = draw(st.integers(1, 3))
    td_size = draw(st.sampled_from([32, 64, 0x100, M1_TD_SIZE]))
    chain = chain_bytes(count, td_size)
    weights = make_weights(draw(st.sampled_from([0, 0, 1, 64, 1000])))
    pad = draw(st.booleans()) or bool(weights)
    payload = chain + bytes(round_up(len(chain), 16) - len(chain) if pad else 0) + weights
    dst, src = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    tiles, nchw = [0] * 32, [(0, 0, 0, 0, 0, 0)] * 32
    tiles[0] = round_up(len(payload) + 1, PAGE_SIZE) // PAGE_SIZE
    for slot in range(4, 4 + dst + src):
        c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 80))
        row = round_up(w * 2, 64)
        plane = round_up(row * h, 64)
        nchw[slot] = (1, c, h, w, plane, row)
        tiles[slot] = round_up(c * plane, PAGE_SIZE) // PAGE_SIZE
    header = AnecHeader(
        size=len(payload),
        td_size=td_size,
        td_count=count,
        tsk_size=len(chain),
        krn_size=len(weights),
        src_count=src,
        dst_count=dst,
        tiles=tuple(tiles),
        nchw=tuple(nchw),
    )
    offset = draw(st.sampled_from([ANEC_PAYLOAD_OFFSET, ANEC_LEGACY_PAYLOAD_OFFSET]))
    if draw(st.booleans()):
        header = draw(header_mutations(header, offset + len(payload)))
    if draw(st.booleans()):
        payload = draw(chain_mutations(chain, td_size)) + payload[len(chain) :]
    image = header.pack() + bytes(offset - ANEC_HEADER_SIZE) + payload
    if draw(st.integers(0, 3)) == 0:
        image = image[: draw(st.integers(0, len(image)))]
    read_at = draw(st.sampled_from([offset, offset, ANEC_PAYLOAD_OFFSET, 0x6A8, 0x1800]))
    return image, read_at


def check_anec_target(probe: Probe, path: Path, image: bytes, offset: int) -> None:
    got = probe.run(lambda: read_anec(path, payload_offset=offset), len(image), "read_anec")
    if isinstance(got, AneError):
        return
    h = got.header
    assert h.size == len(image) - offset
    assert (got.chain.td_size, got.chain.td_count) == (h.td_size, h.td_count)
    assert got.chain.tsk_size == h.tsk_size == got.microcode.length
    assert got.microcode.read() == image[offset : offset + h.tsk_size]
    assert (got.weights is None) == (h.krn_size == 0)
    if got.weights is not None:
        assert got.weights.offset + got.weights.length <= len(image)
    roles = Counter(slot.role for slot in got.io.values())
    assert (roles["input"], roles["output"]) == (h.src_count, h.dst_count)
    assert all(0 <= s < 32 for s in got.io) and all(v % PAGE_SIZE == 0 for v in got.tiles.values())
    assert got.td_count == h.td_count


@fuzz_settings(500)
@given(case=anec_files())
def test_anec_reader(probe: Probe, tmp_path: Path, case: tuple[bytes, int]) -> None:
    probe.example()
    image, offset = case
    path = tmp_path / "model.anec"
    path.write_bytes(image)
    check_anec_target(probe, path, image, offset)


@cache
def _sample_bytes(path: Path) -> bytes:
    return path.read_bytes()


@fuzz_settings(150)
@given(data=st.data())
def test_anec_reader_on_mutated_samples(
    anec_samples: Path, probe: Probe, tmp_path: Path, data: st.DataObject
) -> None:
    sample = _sample_bytes(data.draw(st.sampled_from(sorted(anec_samples.glob("*.ane")))))
    header = AnecHeader.unpack(sample)
    mutated = data.draw(header_mutations(header, len(sample)))
    image = mutated.pack() + sample[ANEC_HEADER_SIZE:]
    if data.draw(st.booleans()):
        tsk = min(header.tsk_size, len(sample) - ANEC_PAYLOAD_OFFSET)
        microcode = sample[ANEC_PAYLOAD_OFFSET : ANEC_PAYLOAD_OFFSET + tsk]
        try:
            fuzzed = data.draw(chain_mutations(microcode, header.td_size))
        except AneError:
            fuzzed = data.draw(byte_mutations(microcode))[: len(microcode)].ljust(tsk, b"\0")
        image = image[:ANEC_PAYLOAD_OFFSET] + fuzzed + image[ANEC_PAYLOAD_OFFSET + tsk :]
    if data.draw(st.integers(0, 3)) == 0:
        image = image[: data.draw(st.integers(0, len(image)))]
    path = tmp_path / "sample.ane"
    path.write_bytes(image)
    probe.example()
    check_anec_target(probe, path, image, ANEC_PAYLOAD_OFFSET)
    if image == sample:
        assert probe.accepted, "an unmutated real sample must be read"


# --- 4. descriptor walker -------------------------------------------------------------------


@st.composite
def microcode_inputs(draw: st.DrawFn) -> tuple[bytes, int | None, int | None]:
    """Microcode, the td_size to walk it with, and its true count when it is unmutated."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=600)), draw(st.none() | st.integers(-8, 700)), None
    count = draw(st.integers(1, 5))
    td_size = draw(st.sampled_from([32, 36, 64, 0x100, M1_TD_SIZE]))
    align = draw(st.sampled_from([4, 16, 0x100]))
    chain = make_chain(count, td_size, align=align, seed=draw(st.integers(0, 3)))
    fuzzed = draw(chain_mutations(chain, td_size))
    if draw(st.booleans()):
        fuzzed = draw(byte_mutations(fuzzed, max_ops=2))
    if draw(st.booleans()):
        fuzzed += draw(st.sampled_from([b"", bytes(16), b"\xff" * 4]))
    stated = draw(
        st.sampled_from([None, td_size, td_size])
        | st.sampled_from([0, 4, 28, 32, td_size - 4, td_size + 4, -4, 2**32, 2**64])
    )
    intact = fuzzed.startswith(chain) and stated in (None, td_size)
    return fuzzed, stated, count if intact else None


@fuzz_settings(800)
@given(case=microcode_inputs())
def test_descriptor_walker(probe: Probe, case: tuple[bytes, int | None, int | None]) -> None:
    probe.example()
    microcode, td_size, count = case
    chain = probe.run(
        lambda: walk_chain(microcode, td_size, source="fuzz"), len(microcode), "walk_chain"
    )
    if count is not None:
        assert not isinstance(chain, AneError), chain
        assert chain.td_count == count
    if isinstance(chain, AneError):
        return
    ds = chain.descriptors
    assert 0 < len(ds) < TD_COUNT_LIMIT and ds[0].offset == 0
    assert td_size is None or chain.td_size == td_size
    assert all(d.size >= 32 and d.size % 4 == 0 for d in ds)
    assert all(a.offset + a.size <= b.offset for a, b in itertools.pairwise(ds))
    assert [d.last for d in ds] == [False] * (len(ds) - 1) + [True]
    assert chain.tsk_size <= len(microcode)
    # The chain needs nothing past its end, and its bootstrap is the first descriptor.
    assert walk_chain(microcode[: chain.tsk_size], chain.td_size) == chain
    btsp = build_bootstrap(microcode, chain.td_size)
    assert len(btsp) == chain.td_size and btsp[4:] == microcode[4 : chain.td_size]


def test_descriptor_walker_stops_at_the_count_limit(probe: Probe) -> None:
    probe.example()
    # 65536 minimal descriptors, none with the end-of-network flag: refused, quickly.
    words = bytearray(32 * TD_COUNT_LIMIT)
    for k in range(TD_COUNT_LIMIT):
        struct.pack_into("<II", words, 32 * k, k & 0xFFFF, 7 << 16)
        struct.pack_into("<I", words, 32 * k + 28, 32 * (k + 1))
    got = probe.run(lambda: walk_chain(bytes(words), 32), len(words), "walk_chain")
    assert isinstance(got, AneError) and "descriptors without an end-of-network" in str(got)


# --- 5. bundle loader (and artefact resolution on top) ---------------------------------------

BUNDLE_KEYS = [
    "microcode_b64",
    "weights_b64",
    "tile_descriptors",
    "td_size",
    "td_count",
    "toolchain",
    "io",
]
BUNDLE_B64 = st.binary(max_size=64).flatmap(base64_text) | st.text(
    alphabet="AQ+/-_= \n\u2003\x1c", max_size=12
)


@st.composite
def bundle_docs(draw: st.DrawFn) -> Any:
    """A bundle document: valid, with wrong types or odd values, or any JSON at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(JSON_ANY | st.dictionaries(st.sampled_from(BUNDLE_KEYS), JSON_ANY | BUNDLE_B64))
    count = draw(st.integers(1, 3))
    chain = chain_bytes(count)
    good = draw(st.integers(0, 3)) > 0  # mostly plausible values; else odd ones
    text = draw(clean_base64(chain))
    doc: dict[str, Any] = {"microcode_b64": text if good else draw(base64_text(chain))}
    optional: dict[str, Any] = {
        "weights_b64": draw(
            st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
            if good
            else st.binary(max_size=64).flatmap(base64_text)
        ),
        "td_size": M1_TD_SIZE
        if good
        else draw(st.sampled_from([M1_TD_SIZE + 4, 36, 0, -1, 2**70, True])),
        "td_count": draw(st.sampled_from([count, str(count)]))
        if good
        else draw(st.sampled_from([count + 1, 0, 1.0, "+1", " 1", "1\n"])),
        "tile_descriptors": draw(
            st.fixed_dictionaries(
                {"b64": st.just(base64.b64encode(chain).decode())},
                optional={"entry_size": st.just(M1_TD_SIZE), "count": st.just(count)},
            )
            if good
            else st.sampled_from(
                ["", base64.b64encode(chain).decode(), {"b64": None}, {"b64": "QQ==", "count": 3}]
            )
            | st.fixed_dictionaries(
                {"b64": base64_text(chain)},
                optional={
                    "entry_size": st.sampled_from([M1_TD_SIZE, 8, 0, None]),
                    "count": st.sampled_from([count, 2, 0, None]),
                },
            )
        ),
        "toolchain": draw(st.text(max_size=8) if good else JSON_ANY),
        "unknown": draw(JSON_ANY),
    }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        doc[key] = optional[key]
    if draw(st.integers(0, 3)) == 0:
        for key in draw(st.lists(st.sampled_from(sorted(doc)), max_size=2, unique=True)):
            doc[key] = draw(JSON_ANY | st.just(json.loads(deep_json(50))))
    return doc


@st.composite
def bundle_texts(draw: st.DrawFn) -> bytes:
    doc = draw(bundle_docs())
    text = json.dumps(
        doc, indent=draw(st.sampled_from([None, 1])), ensure_ascii=draw(st.booleans())
    )
    raw = text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-16"])))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(byte_mutations(raw))
    if kind == 1:
        return deep_json(draw(st.sampled_from([900, 5000, 100_000]))).encode()
    if kind == 2:
        return b'{"microcode_b64": "AAAA", "microcode_b64": ' + raw + b"}"
    return raw


@fuzz_settings(500)
@given(raw=bundle_texts())
def test_bundle_loader(probe: Probe, tmp_path: Path, raw: bytes) -> None:
    probe.example()
    path = tmp_path / "bundle.json"
    path.write_bytes(raw)
    bundle = probe.run(lambda: load_bundle(path), len(raw), "load_bundle")
    spec = ArtifactSpec(bundle=Path("bundle.json"))
    resolved = probe.run(
        lambda: resolve_artifacts(spec, base_dir=tmp_path, allow_outside=False),
        len(raw),
        "resolve_artifacts",
    )
    if isinstance(bundle, AneError):
        assert isinstance(resolved, AneError)
        return
    assert isinstance(bundle.microcode, bytes) and bundle.microcode
    for value in (bundle.td_size, bundle.td_count):
        assert value is None or (type(value) is int and value > 0)
    assert bundle.toolchain is None or isinstance(bundle.toolchain, str)
    if not isinstance(resolved, AneError):
        assert resolved.microcode.read() == bundle.microcode
        chain = walk_chain(bundle.microcode, resolved.td_size)
        assert chain.td_count == resolved.td_count


# --- 6. differential: the verifier's chain check and the simulated engine, against the builder --

# How a chain case is broken, and whether the engine still finishes it: the oracle is how the
# chain was built, not either implementation (the kernel's parser has its own oracle, the 922
# kernel vectors in tests/driver/test_kernel_vectors.py).
CHAIN_EDITS = {
    "none": True,
    "zeros-after": True,  # zero padding after the chain is never fetched
    "count+1": False,
    "count-1": False,
    "td_size-4": False,
    "td_size+4": False,
    "loop": False,  # a next pointer back into the chain
    "no-eon": False,  # the last descriptor lacks the end-of-network bit
    "garbage-after": False,  # data the chain does not describe
    "mixed-sizes": False,  # a descriptor of another size than td_size
}


@st.composite
def chain_cases(draw: st.DrawFn) -> tuple[str, bytes, int, int]:
    """(edit, microcode, td_size, td_count) for a chain broken by one named edit."""
    edit = draw(st.sampled_from(sorted(CHAIN_EDITS)))
    count = draw(st.integers(2 if edit in ("loop", "mixed-sizes", "count-1") else 1, 4))
    sizes = [M1_TD_SIZE] * count
    if edit == "mixed-sizes":
        sizes[-1] = M1_TD_SIZE + 0x40
    code = bytearray(make_chain(count, sizes=sizes, seed=draw(st.integers(0, 9))))
    td_size, td_count = M1_TD_SIZE, count
    last = len(code) - sizes[-1]
    if edit == "zeros-after":
        code += bytes(draw(st.sampled_from([4, 16, 0x100])))
    elif edit == "garbage-after":
        code += b"\x01" + bytes(draw(st.sampled_from([3, 15])))
    elif edit in ("count+1", "count-1"):
        td_count += 1 if edit == "count+1" else -1
    elif edit in ("td_size-4", "td_size+4"):
        td_size += 4 if edit == "td_size+4" else -4
    elif edit == "loop":
        struct.pack_into("<I", code, 28, 0)  # descriptor 0 points back at itself
    elif edit == "no-eon":
        word0 = struct.unpack_from("<I", code, last)[0]
        struct.pack_into("<I", code, last, word0 & ~TD_WORD0_EON)
    return edit, bytes(code), td_size, td_count


def _chain_container(microcode: bytes, td_size: int, td_count: int) -> bytes:
    entries = [
        ("ane.microcode.b64", base64.b64encode(microcode).decode()),
        ("ane.td_size", str(td_size)),
        ("ane.td_count", str(td_count)),
    ]
    return metadata_blob(entries, head=encode_field(1, pw.WIRE_VARINT, 8))


def _engine_runs(blob: bytes, microcode: bytes, td_size: int) -> bool:
    """Submit ``blob`` with the ONNX flag through the device, with no userspace chain check."""
    from ane_build.driver import uapi

    with (
        ANEDevice.simulated() as device,
        device.allocate(len(blob) + 3) as cmd,
        device.allocate(td_size) as btsp,
    ):
        cmd.write(blob)
        head = bytearray(microcode[:td_size].ljust(td_size, b"\0"))
        word0 = struct.unpack_from("<I", head)[0] & ~(0xFF << 16)
        struct.pack_into("<I", head, 0, word0 | uapi.ANE_FIFO_NID << 16)
        btsp.write(head)
        device.submit(
            tsk_size=1,
            td_count=1,
            td_size=4,
            handles={0: cmd},
            btsp=btsp,
            flags=uapi.ANE_SUBMIT_FLAG_ONNX,
        )
    return True


@fuzz_settings(400)
@given(case=chain_cases())
def test_verifier_and_simulated_engine_agree_with_how_the_chain_was_built(
    probe: Probe, case: tuple[str, bytes, int, int]
) -> None:
    probe.example()
    edit, microcode, td_size, td_count = case
    runs = CHAIN_EDITS[edit]
    blob = _chain_container(microcode, td_size, td_count)
    report = probe.run(lambda: verify_container(blob, strict=False), len(blob), "verify")
    assert isinstance(report, VerifyReport)
    chain = {c.name: c.ok for c in report.checks}.get("descriptor chain", False)
    assert {c.name: c.ok for c in report.checks}["kernel"], report.summary()
    # Not through the probe: its allocation budget is for parsers, not for a whole device.
    result: bool | AneError
    try:
        result = _engine_runs(blob, microcode, td_size)
    except AneError as exc:
        result = exc
    engine = not isinstance(result, AneError)
    if not engine:
        assert isinstance(result, AneDeviceError) and result.errno == errno.ETIMEDOUT, result
    probe.notes[f"{edit}: verify {chain}, engine {engine}"] += 1
    assert engine == runs, (edit, result)
    assert chain == runs, (edit, report.summary())


# --- 7. the atheris entry points cannot rot -----------------------------------------------------

FUZZ_DIR = REPO / "fuzz"
ENTRY_POINTS = ["protowire", "metadata", "anec", "chain", "bundle"]


def load_entry_point(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", FUZZ_DIR / f"fuzz_{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_atheris_entry_point_runs_without_atheris(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "atheris", None)  # as if not installed: import fails
    monkeypatch.syspath_prepend(str(FUZZ_DIR))
    module = load_entry_point(name)
    source = (FUZZ_DIR / f"fuzz_{name}.py").read_text()
    assert "common.run(TestOneInput, seeds())" in source
    rng = random.Random(f"entry-{name}")
    seeds = list(module.seeds())
    assert seeds, "each entry point ships seed inputs"
    runs = int(_SCALE) if _SCALE else 300
    for k in range(runs):
        if k < len(seeds):
            data = seeds[k]
        elif k % 2:
            seed = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                if seed:
                    seed[rng.randrange(len(seed))] = rng.randrange(256)
            data = bytes(seed[: rng.randint(0, len(seed))] if rng.random() < 0.2 else seed)
        else:
            data = rng.randbytes(rng.randint(0, 300))
        module.TestOneInput(data)  # raises on a property violation
    with pytest.raises(SystemExit, match="pip install atheris"):
        module.main()
