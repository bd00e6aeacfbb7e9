"""Tests for the .anec reader: the real samples, every header check, and fuzzed headers."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ane_build import _fs
from ane_build.artifacts import ArtifactSpec, resolve_artifacts
from ane_build.errors import AnecFormatError, AneError, ArtifactError, DescriptorChainError
from ane_build.formats.anec import (
    ANEC_HEADER_SIZE,
    ANEC_LEGACY_PAYLOAD_OFFSET,
    AnecHeader,
    SlotConvention,
    read_anec,
)
from ane_build.formats.tiling import layout_for
from tests.helpers import M1_TD_SIZE, make_anec_bytes, make_chain, write

# The README table of ../shared/anec-samples (real anecc output): external data, not derived.
# file: (bytes, payload, td_size, td_count, tsk_size, krn_size, src, dst, tiles)
SAMPLES: dict[str, tuple[int, int, int, int, int, int, int, int, dict[int, int]]] = {
    "concat.ane": (21888, 0x4580, 0x274, 2, 0x574, 0x4000, 2, 1, {0: 2, 4: 65, 5: 1, 6: 64}),
    "conv.ane": (4928, 0x340, 0x274, 1, 0x274, 0xC0, 1, 1, {0: 1, 4: 1, 5: 1}),
    "gemm.ane": (529024, 0x80280, 0x274, 1, 0x274, 0x80000, 1, 1, {0: 33, 4: 2, 5: 2}),
    "mul.ane": (21120, 0x4280, 0x274, 1, 0x274, 0x4000, 2, 1, {0: 2, 4: 1, 5: 1, 6: 1}),
    "mul_macos14.ane": (21120, 0x4280, 0x274, 1, 0x274, 0x4000, 2, 1, {0: 2, 4: 1, 5: 1, 6: 1}),
    "relu.ane": (21120, 0x4280, 0x274, 1, 0x274, 0x4000, 1, 1, {0: 2, 4: 1, 5: 1}),
    "sigmoid.ane": (4864, 0x300, 0x274, 1, 0x274, 0x80, 1, 1, {0: 1, 4: 1, 5: 1}),
    "sum.ane": (21120, 0x4280, 0x274, 1, 0x274, 0x4000, 2, 1, {0: 2, 4: 1, 5: 1, 6: 1}),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_header_matches_readme(anec_samples: Path, name: str) -> None:
    size, payload, td_size, td_count, tsk, krn, src, dst, tiles = SAMPLES[name]
    path = anec_samples / name
    f = read_anec(path)
    assert path.stat().st_size == size
    h = f.header
    assert (h.size, h.td_size, h.td_count, h.tsk_size, h.krn_size) == (
        payload,
        td_size,
        td_count,
        tsk,
        krn,
    )
    assert (h.src_count, h.dst_count) == (src, dst)
    assert f.tiles == {slot: units * 16384 for slot, units in tiles.items()}
    assert f.chain is not None
    assert (f.chain.td_count, f.chain.tsk_size) == (td_count, tsk)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_payload_slices_are_byte_identical(anec_samples: Path, name: str) -> None:
    path = anec_samples / name
    raw = path.read_bytes()
    f = read_anec(path)
    tsk, krn = f.header.tsk_size, f.header.krn_size
    assert f.microcode.path == path and f.microcode.data is None  # a file range, not loaded
    assert f.microcode.read() == raw[0x1000 : 0x1000 + tsk]
    assert f.weights is not None and f.weights.data is None
    w_off = 0x1000 + (tsk + 15) // 16 * 16
    assert f.weights.offset == w_off
    assert f.weights.read() == raw[w_off : w_off + krn]
    assert w_off + krn == len(raw)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_io_slots_follow_the_convention(anec_samples: Path, name: str) -> None:
    _, _, _, _, _, _, src, dst, tiles = SAMPLES[name]
    f = read_anec(anec_samples / name)
    assert sorted(f.io) == sorted(slot for slot in tiles if slot >= 4)
    outputs = [s for slot, s in sorted(f.io.items()) if slot < 4 + dst]
    inputs = [s for slot, s in sorted(f.io.items()) if slot >= 4 + dst]
    assert [s.role for s in outputs] == ["output"] * dst
    assert [s.name for s in outputs] == [f"output{k}" for k in range(dst)]
    assert [s.role for s in inputs] == ["input"] * src
    assert [s.name for s in inputs] == [f"input{k}" for k in range(src)]
    for slot, s in f.io.items():
        # The documented layout reproduces every stride and tile the compiler chose.
        assert layout_for((s.n, s.c, s.h, s.w)) == (s.row_stride, s.plane_stride, f.tiles[slot])


def test_concat_slots_and_relu_strides(anec_samples: Path) -> None:
    concat = read_anec(anec_samples / "concat.ane")
    assert [(s.role, s.c) for _, s in sorted(concat.io.items())] == [
        ("output", 16400),
        ("input", 16),
        ("input", 16384),
    ]
    assert [d.offset for d in concat.chain.descriptors] == [0, 0x300]
    relu = read_anec(anec_samples / "relu.ane", input_names=["x"], output_names=["y"])
    assert relu.io[5].name == "x" and relu.io[4].name == "y"
    assert (relu.io[5].w, relu.io[5].row_stride, relu.io[5].plane_stride) == (77, 192, 192)


def test_legacy_payload_offset(anec_samples: Path, tmp_path: Path) -> None:
    raw = (anec_samples / "relu.ane").read_bytes()
    legacy = write(tmp_path / "relu_0x800.ane", raw[:0x800] + raw[0x1000:])
    f = read_anec(legacy, payload_offset=ANEC_LEGACY_PAYLOAD_OFFSET)
    assert f.microcode.offset == 0x800
    assert f.microcode.read() == raw[0x1000 : 0x1000 + 0x274]
    with pytest.raises(AnecFormatError, match="payload would fit at offset 0x800"):
        read_anec(legacy)


# --- synthetic files: every header check --------------------------------------------------


def _anec(tmp_path: Path, **kwargs: Any) -> Path:
    name = kwargs.pop("name", "m.anec")
    microcode = kwargs.pop("microcode", make_chain())
    weights = kwargs.pop("weights", b"\x01" * 100)
    return write(tmp_path / name, make_anec_bytes(microcode, weights, **kwargs))


def test_synthetic_file_reads(tmp_path: Path) -> None:
    micro = make_chain((M1_TD_SIZE, M1_TD_SIZE))
    path = _anec(tmp_path, microcode=micro, td_count=2, src_count=2, dst_count=1)
    f = read_anec(path)
    assert f.microcode.read() == micro
    assert f.weights is not None and f.weights.read() == b"\x01" * 100
    assert [f.io[s].role for s in (4, 5, 6)] == ["output", "input", "input"]
    assert [f.io[s].name for s in (4, 5, 6)] == ["output0", "input0", "input1"]


def test_no_weights_gives_none(tmp_path: Path) -> None:
    f = read_anec(_anec(tmp_path, weights=b""))
    assert f.weights is None
    assert resolve_artifacts(ArtifactSpec(anec=f.path)).weights is None


def test_unpadded_microcode_without_weights_is_accepted(tmp_path: Path) -> None:
    micro = make_chain()
    # A writer that does not pad a weightless payload: size == tsk_size.
    data = make_anec_bytes(micro, b"", size=len(micro))[: 0x1000 + len(micro)]
    f = read_anec(write(tmp_path / "m.anec", data))
    assert f.header.size == len(micro) and f.weights is None


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"size": 0x10}, r"size=0x10 but the file holds 0x2e4 bytes .*\(trailing bytes after"),
        ({"size": 0x400}, r"size=0x400 but the file holds 0x2e4 bytes .*\(truncated\)"),
        ({"tsk_size": 0}, r"tsk_size=0x0 must be between 1 and 0x10000000"),
        ({"td_size": 0}, r"td_size=0x0 must be a positive multiple of 4"),
        ({"td_size": 0x273}, r"td_size=0x273 must be a positive multiple of 4"),
        ({"td_size": 0x278}, r"td_size=0x278 .* no larger than tsk_size=0x274"),
        ({"td_count": 0}, r"td_count=0 must be between 1 and 65535"),
        ({"td_count": 0x10000}, r"td_count=65536 must be between 1 and 65535"),
        (
            {"krn_size": 99},
            r"size=0x2e4 but tsk_size=0x274 padded to 16 plus krn_size=0x63 is 0x2e3",
        ),
    ],
)
def test_header_field_errors(tmp_path: Path, overrides: dict[str, int], pattern: str) -> None:
    path = _anec(tmp_path, **overrides)
    with pytest.raises(AnecFormatError, match=pattern) as info:
        read_anec(path)
    assert str(path) in str(info.value)


def test_truncated_and_trailing(tmp_path: Path) -> None:
    good = _anec(tmp_path).read_bytes()
    short = write(tmp_path / "short.anec", good[:100])
    with pytest.raises(AnecFormatError, match=r"100 bytes, shorter than the 0x6a8-byte"):
        read_anec(short)
    headonly = write(tmp_path / "head.anec", good[:0x900])
    with pytest.raises(AnecFormatError, match=r"shorter than the payload offset 0x1000"):
        read_anec(headonly)
    cut = write(tmp_path / "cut.anec", good[:-1])
    with pytest.raises(AnecFormatError, match=r"size=0x2e4 .* 0x2e3 bytes .*truncated"):
        read_anec(cut)
    extra = write(tmp_path / "extra.anec", good + b"\0" * 16)
    with pytest.raises(AnecFormatError, match=r"trailing bytes after the payload") as info:
        read_anec(extra)
    assert "extra.anec" in str(info.value)


def test_td_count_disagreeing_with_chain(tmp_path: Path) -> None:
    path = _anec(tmp_path, microcode=make_chain((M1_TD_SIZE, M1_TD_SIZE)), td_count=3)
    with pytest.raises(DescriptorChainError, match=r"td_count is 3 .* chain gives 2") as info:
        read_anec(path)
    assert str(path) in str(info.value)


def test_tsk_size_past_chain_end(tmp_path: Path) -> None:
    path = _anec(tmp_path, microcode=make_chain(trailing=b"\0" * 12))
    with pytest.raises(DescriptorChainError, match=r"tsk_size is 640 .* chain gives 628"):
        read_anec(path)


def test_broken_chain(tmp_path: Path) -> None:
    micro = bytearray(make_chain((M1_TD_SIZE, M1_TD_SIZE)))
    struct.pack_into("<I", micro, 28, 0x10)  # next offset points back into descriptor 0
    with pytest.raises(DescriptorChainError, match="loop"):
        read_anec(_anec(tmp_path, microcode=bytes(micro), td_count=2))


SLOT = (1, 1, 1, 77, 192, 192)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            {"dst_count": 2, "nchw": {4: SLOT, 5: SLOT}},
            r"slot 6 \(input\): header field tiles\[6\]=0",
        ),
        (
            {"src_count": 0, "nchw": {4: SLOT, 5: SLOT}},
            r"slot 5 has tiles\[5\]=1, .* account only for slots 4\.\.4",
        ),
        ({"src_count": 30}, r"need slots 4\.\.34, but there are only 32 slots"),
        ({"tiles": {0: 0, 4: 1, 5: 1}}, r"tiles\[0\]=0 \(0 bytes\) is too small .*size=0x2e4"),
        ({"tiles": {0: 1, 1: 1, 4: 1, 5: 1}}, r"slot 1 is the weights slot"),
        ({"nchw": {4: SLOT, 5: (1, 1, 1, 77, 192, 128)}}, r"slot 5 .*row stride 128 is smaller"),
        ({"nchw": {4: SLOT, 5: (1, 1, 2, 77, 192, 192)}}, r"plane stride 192 is smaller .* 384"),
        ({"nchw": {4: SLOT, 5: (1, 1, 1, 77, 200, 160)}}, r"row stride 160 is not a multiple"),
        ({"nchw": {4: SLOT, 5: (1, 1, 1, 77, 200, 192)}}, r"plane stride 200 is not a multiple"),
        ({"nchw": {4: SLOT, 5: (1, 0, 1, 77, 192, 192)}}, r"nchw\[5\] C=0"),
        (
            {"nchw": {4: SLOT, 5: (1, 100, 1, 77, 192, 192)}},
            r"slot 5 \(input\): buffer N\*C\*plane stride = 1\*100\*192 = 19200 bytes is larger "
            r"than its tile tiles\[5\]=1 \(16384 bytes\)",
        ),
    ],
)
def test_slot_errors(tmp_path: Path, kwargs: dict[str, object], pattern: str) -> None:
    path = _anec(tmp_path, **kwargs)
    with pytest.raises(AnecFormatError, match=pattern) as info:
        read_anec(path)
    assert str(path) in str(info.value)


def test_scratch_slots_and_custom_convention(tmp_path: Path) -> None:
    path = _anec(tmp_path, tiles={0: 1, 2: 3, 4: 1, 5: 1})
    f = read_anec(path)
    assert f.io[2].role == "scratch" and f.io[2].name is None and f.tiles[2] == 3 * 16384
    # A program whose outputs start at slot 2 (data, not code).
    conv = SlotConvention(scratch=(), first_output=2)
    other = _anec(tmp_path, name="other.anec", nchw={2: SLOT, 3: SLOT})
    g = read_anec(other, slots=conv)
    assert [(s, g.io[s].role) for s in sorted(g.io)] == [(2, "output"), (3, "input")]


def test_name_count_mismatch(tmp_path: Path) -> None:
    with pytest.raises(AnecFormatError, match=r"2 input name\(s\) given .* describes 1 input"):
        read_anec(_anec(tmp_path), input_names=["a", "b"])


def test_payload_offset_inside_header(tmp_path: Path) -> None:
    with pytest.raises(AnecFormatError, match=r"payload offset 0x100 lies inside"):
        read_anec(_anec(tmp_path), payload_offset=0x100)


def test_open_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ArtifactError, match=r"nope\.anec: does not exist"):
        read_anec(tmp_path / "nope.anec")
    with pytest.raises(ArtifactError, match=r"is a directory"):
        read_anec(tmp_path)
    loop = tmp_path / "loop.anec"
    loop.symlink_to(loop)
    with pytest.raises(ArtifactError, match=r"loop\.anec: symlink loop"):
        read_anec(loop)
    good = _anec(tmp_path)

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(args[0]))

    # Tests run as root, where chmod cannot make a file unreadable; simulate the kernel's answer.
    monkeypatch.setattr(_fs, "open", denied, raising=False)
    with pytest.raises(ArtifactError, match=r"m\.anec: permission denied"):
        read_anec(good)


def test_header_pack_round_trip() -> None:
    h = AnecHeader(1, 2, 3, 4, 5, 6, 7, tuple(range(32)), tuple((i,) * 6 for i in range(32)))
    packed = h.pack()
    assert len(packed) == ANEC_HEADER_SIZE == 0x6A8
    assert AnecHeader.unpack(packed) == h
    assert struct.unpack_from("<I", packed, 40 + 4 * 5)[0] == 5  # tiles[5] @40
    assert struct.unpack_from("<Q", packed, 168 + 48 * 3 + 8 * 4)[0] == 3  # nchw[3] plane stride
    with pytest.raises(AnecFormatError):
        AnecHeader(1 << 64, 0, 0, 0, 0, 0, 0, (0,) * 32, ((0,) * 6,) * 32).pack()


# --- property tests: garbage in, only AneError out ----------------------------------------

FIELDS = ["size", "td_size", "td_count", "tsk_size", "krn_size", "src_count", "dst_count"]
FIELD_AT = {"size": (0, "Q"), "td_size": (8, "I"), "td_count": (12, "I"), "tsk_size": (16, "Q")}
FIELD_AT |= {"krn_size": (24, "Q"), "src_count": (32, "I"), "dst_count": (36, "I")}
PROPS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPS
@given(data=st.binary(max_size=0x1400))
def test_random_bytes_only_raise_ane_errors(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path / "fuzz.anec", data)
    try:
        f = read_anec(path)
    except AneError:
        return
    assert f.header.size == len(data) - 0x1000


@PROPS
@given(
    field=st.sampled_from([*FIELDS, "tiles", "nchw"]),
    value=st.integers(min_value=0, max_value=(1 << 64) - 1),
    slot=st.integers(min_value=0, max_value=31),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=0x1400)),
)
def test_mutated_headers_only_raise_ane_errors(
    tmp_path: Path, field: str, value: int, slot: int, cut: int | None
) -> None:
    data = bytearray(
        make_anec_bytes(make_chain((M1_TD_SIZE, M1_TD_SIZE)), b"\x02" * 64, td_count=2)
    )
    if field == "tiles":
        struct.pack_into("<I", data, 40 + 4 * slot, value & 0xFFFFFFFF)
    elif field == "nchw":
        struct.pack_into("<Q", data, 168 + 48 * slot + 8 * (value % 6), value)
    else:
        offset, fmt = FIELD_AT[field]
        struct.pack_into("<" + fmt, data, offset, value & ((1 << (8 * struct.calcsize(fmt))) - 1))
    path = write(tmp_path / "mut.anec", bytes(data[:cut] if cut is not None else data))
    try:
        f = read_anec(path)
    except AneError:
        return
    # Whatever was accepted must be self-consistent.
    assert f.chain.td_count == f.header.td_count and f.chain.tsk_size == f.header.tsk_size
    assert f.microcode.read() == bytes(data[0x1000 : 0x1000 + f.header.tsk_size])
