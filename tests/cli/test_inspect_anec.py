"""``ane-build inspect FILE.anec``: every header field, slots, tiles and the descriptor chain."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from ane_build.cli import main
from tests.helpers import M1_TD_SIZE, make_anec_bytes, make_chain, write

NCHW = {4: (1, 64, 1, 1, 64, 64), 5: (1, 64, 1, 1, 64, 64), 6: (1, 64, 1, 1, 64, 64)}


def anec(tmp_path: Path, chain: bytes | None = None, **fields: int) -> Path:
    microcode = make_chain((M1_TD_SIZE, M1_TD_SIZE)) if chain is None else chain
    given: dict[str, int] = {"td_count": 2, "src_count": 2, "dst_count": 1, **fields}
    data = make_anec_bytes(microcode, b"\x11" * 100, nchw=NCHW, **given)
    return write(tmp_path / "prog.anec", data)


def test_every_header_field_slot_and_descriptor_is_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = anec(tmp_path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    for line in ("td_size   628 (0x274)", "td_count  2 (0x2)", "krn_size  100 (0x64)"):
        assert line in out
    for name in ("size", "tsk_size", "src_count", "dst_count"):
        assert f"\n  {name} " in out
    assert "4 output output0   NCHW 1x64x1x1  row stride 64  plane stride 64" in out
    assert "6 input  input1" in out
    assert "[4] 1 (16384 bytes)" in out
    assert "descriptor chain: 2 descriptor(s)" in out
    assert "offset 0x00000  size 0x274 (628)  task 0" in out
    assert "offset 0x00300  size 0x274 (628)  task 1  network 0  end of network" in out


def test_json_has_the_whole_header_and_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = anec(tmp_path)
    assert main(["inspect", "--json", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    header = summary["header"]
    raw = path.read_bytes()
    assert (header["td_size"], header["td_count"]) == struct.unpack_from("<II", raw, 8)
    assert len(header["tiles"]) == 32 and len(header["nchw"]) == 32
    assert header["nchw"][5] == list(NCHW[5])
    assert [s["slot"] for s in summary["slots"]] == [4, 5, 6]
    assert summary["slots"][1] == {
        "slot": 5,
        "role": "input",
        "name": "input0",
        "n": 1,
        "c": 64,
        "h": 1,
        "w": 1,
        "plane_stride": 64,
        "row_stride": 64,
        "tile_bytes": 16384,
    }
    assert [(d["offset"], d["size"], d["last"]) for d in summary["chain"]] == [
        (0, 0x274, False),
        (0x300, 0x274, True),
    ]
    assert summary["chain_error"] is None


def test_a_broken_chain_is_shown_with_its_header_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = anec(tmp_path, td_count=3)  # the chain holds two
    assert main(["inspect", str(path)]) == 1
    out = capsys.readouterr().out
    assert "td_count  3 (0x3)" in out and "descriptor chain: BROKEN" in out


def test_a_bad_header_is_one_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = anec(tmp_path, td_size=3)
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert "prog.anec" in err and "td_size=0x3" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_legacy_payload_offset_is_named_and_can_be_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_anec_bytes(make_chain(), bytes(0x2000), payload_offset=0x800)
    path = write(tmp_path / "old.ane", data)
    assert main(["inspect", str(path)]) == 1
    assert "payload would fit at offset 0x800" in capsys.readouterr().err
    assert main(["inspect", str(path), "--payload-offset", "0x800"]) == 0
    assert "payload at 0x800" in capsys.readouterr().out


def test_every_sample_is_inspected(anec_samples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for sample in sorted(anec_samples.glob("*.ane")):
        assert main(["inspect", "--json", str(sample)]) == 0, sample
        summary = json.loads(capsys.readouterr().out)
        assert summary["chain"] and summary["chain"][-1]["last"], sample
        assert summary["header"]["td_count"] == len(summary["chain"]), sample
