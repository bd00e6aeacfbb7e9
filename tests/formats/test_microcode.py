import struct
from pathlib import Path

import pytest

from ane_build.driver.uapi import ANE_FIFO_NID, TD_COUNT_LIMIT
from ane_build.errors import DescriptorChainError
from ane_build.formats.microcode import build_bootstrap, check_chain, infer_td_size, walk_chain
from ane_build.synthetic.chains import make_chain

# From ../shared/anec-samples/README.md: file -> (td_size, td_count, tsk_size).
SAMPLE_TABLE = {
    "concat.ane": (0x274, 2, 0x574),
    "conv.ane": (0x274, 1, 0x274),
    "gemm.ane": (0x274, 1, 0x274),
    "mul.ane": (0x274, 1, 0x274),
    "mul_macos14.ane": (0x274, 1, 0x274),
    "relu.ane": (0x274, 1, 0x274),
    "sigmoid.ane": (0x274, 1, 0x274),
    "sum.ane": (0x274, 1, 0x274),
}


def _sample_microcode(path: Path) -> tuple[bytes, int, int, int]:
    data = path.read_bytes()
    td_size, td_count, tsk_size = struct.unpack_from("<IIQ", data, 8)
    return data[0x1000 : 0x1000 + tsk_size], td_size, td_count, tsk_size


def test_chain_agrees_with_every_sample_header(anec_samples: Path) -> None:
    files = sorted(anec_samples.glob("*.ane"))
    assert {f.name for f in files} >= set(SAMPLE_TABLE)
    for path in files:
        microcode, td_size, td_count, tsk_size = _sample_microcode(path)
        for stated in (td_size, None):
            chain = walk_chain(microcode, stated, source=path.name)
            assert (chain.td_size, chain.td_count, chain.tsk_size) == (td_size, td_count, tsk_size)
        if path.name in SAMPLE_TABLE:
            assert (td_size, td_count, tsk_size) == SAMPLE_TABLE[path.name]
        check_chain(chain, td_size=td_size, td_count=td_count, tsk_size=tsk_size)
        btsp = build_bootstrap(microcode, td_size)
        assert len(btsp) == td_size
        word0 = struct.unpack_from("<I", btsp)[0]
        assert (word0 >> 16) & 0xFF == ANE_FIFO_NID
        assert word0 & ~0xFF0000 == struct.unpack_from("<I", microcode)[0] & ~0xFF0000
        assert btsp[4:] == microcode[4:td_size]


def test_concat_second_descriptor(anec_samples: Path) -> None:
    microcode, *_ = _sample_microcode(anec_samples / "concat.ane")
    chain = walk_chain(microcode, 0x274)
    assert [(d.offset, d.size, d.last) for d in chain.descriptors] == [
        (0, 0x274, False),
        (0x300, 0x274, True),
    ]


@pytest.mark.parametrize("count", [1, 2, 5])
def test_synthetic_chains_walk(count: int) -> None:
    microcode = make_chain(count, seed=count)
    chain = walk_chain(microcode)
    assert chain.td_count == count
    assert chain.td_size == 0x274
    assert chain.tsk_size == len(microcode)
    assert [d.task_id for d in chain.descriptors] == list(range(count))


def test_trailing_padding_is_allowed() -> None:
    microcode = make_chain(2) + bytes(64)
    assert walk_chain(microcode, 0x274).tsk_size == len(microcode) - 64


def _set_word(data: bytes, offset: int, index: int, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<I", out, offset + 4 * index, value)
    return bytes(out)


def test_loop_is_reported_with_byte_offset() -> None:
    microcode = _set_word(make_chain(3), 0x300, 7, 0x100)
    with pytest.raises(DescriptorChainError, match=r"descriptor 1 at byte 0x300.*loop"):
        walk_chain(microcode, 0x274)


def test_pointer_past_end() -> None:
    microcode = _set_word(make_chain(2), 0, 7, 0x10000)
    with pytest.raises(DescriptorChainError, match=r"0x10000, past the end"):
        walk_chain(microcode, 0x274)


def test_missing_end_flag_is_caught() -> None:
    microcode = _set_word(make_chain(1), 0, 0, 0)
    with pytest.raises(DescriptorChainError, match=r"no end-of-network flag.*loop"):
        walk_chain(microcode + bytes(0x100), 0x274)


def test_descriptor_overruns_buffer() -> None:
    with pytest.raises(DescriptorChainError, match=r"ends at 0x274, past the end.*0x200"):
        walk_chain(make_chain(1)[:0x200], 0x274)


@pytest.mark.parametrize("td_size", [0, 3, 30, 0x275])
def test_bad_td_size(td_size: int) -> None:
    with pytest.raises(DescriptorChainError, match=f"size {td_size}"):
        walk_chain(make_chain(1), td_size)


def test_next_size_field_sets_descriptor_size() -> None:
    # Second descriptor declared one word larger than it fits.
    microcode = _set_word(make_chain(2), 0, 1, (0x274 // 4) << 16)
    with pytest.raises(DescriptorChainError, match=r"descriptor 1 at byte 0x300 with size 0x278"):
        walk_chain(microcode, 0x274)


def test_count_limit() -> None:
    # A long forward chain of minimal descriptors without an end flag must stop at the limit.
    size = 32
    count = TD_COUNT_LIMIT + 5
    data = bytearray(size * count)
    for i in range(count):
        struct.pack_into("<II", data, i * size, i & 0xFFFF, (size // 4 - 1) << 16)
        struct.pack_into("<I", data, i * size + 28, (i + 1) * size)
    with pytest.raises(DescriptorChainError, match="more than 65535 descriptors"):
        walk_chain(bytes(data), size)


def test_check_chain_disagreement_names_both_values() -> None:
    chain = walk_chain(make_chain(2))
    with pytest.raises(DescriptorChainError, match=r"td_count is 3 \(0x3\) but .* gives 2"):
        check_chain(chain, td_count=3, source="model.tsk")
    check_chain(chain, td_size=0x274, td_count=2, tsk_size=0x574)


def test_infer_td_size() -> None:
    assert infer_td_size(make_chain(1)) == 0x274
    assert infer_td_size(make_chain(3, td_size=0x100, align=0x100)) == 0x100
    with pytest.raises(DescriptorChainError, match="shorter than one descriptor"):
        infer_td_size(b"\0" * 8)


def test_bootstrap_rejects_short_microcode() -> None:
    with pytest.raises(DescriptorChainError):
        build_bootstrap(b"\0" * 16, 0x274)
