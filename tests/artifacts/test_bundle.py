"""Tests for the JSON bundle loader: the seed's format, kernel base64, strict keys, errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ane_build.artifacts import ArtifactSpec, bundle_file, load_bundle, resolve_artifacts
from ane_build.errors import AneError, ArtifactError
from tests.helpers import M1_TD_SIZE, b64, make_chain, seed_bundle, write

TWO = make_chain((M1_TD_SIZE, M1_TD_SIZE))
WEIGHTS = bytes(range(256)) * 4


def test_seed_bundle_with_descriptor_object(tmp_path: Path) -> None:
    tds = TWO[:M1_TD_SIZE] + TWO[0x300:]
    path = seed_bundle(
        tmp_path / "bundle.json",
        TWO,
        WEIGHTS,
        tile_descriptors={"b64": b64(tds), "entry_size": M1_TD_SIZE, "count": 2},
        toolchain="anecc 1.0",
    )
    got = load_bundle(path)
    assert (got.microcode, got.weights, got.tile_descriptors) == (TWO, WEIGHTS, tds)
    assert (got.td_size, got.td_count, got.toolchain) == (M1_TD_SIZE, 2, "anecc 1.0")
    assert got.path == path and got.io is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"td_size": "628", "td_count": "2"}, (628, 2)),
        ({"td_size": 628, "td_count": "0002"}, (628, 2)),
        ({"tile_descriptors": {"b64": b64(TWO), "entry_size": "628", "count": "2"}}, (628, 2)),
        ({"td_size": 628, "tile_descriptors": {"b64": b64(TWO), "count": 2}}, (628, 2)),
        ({}, (None, None)),
    ],
)
def test_td_values_as_integers_or_decimal_strings(
    tmp_path: Path, fields: dict[str, Any], expected: tuple[int | None, int | None]
) -> None:
    got = load_bundle(seed_bundle(tmp_path / "bundle.json", TWO, **fields))
    assert (got.td_size, got.td_count) == expected


def test_base64_is_read_by_the_kernel_rules(tmp_path: Path) -> None:
    data = bytes([0xFB, 0xFF, 0xBF]) * 20  # '+' and '/' in the standard alphabet
    urlsafe = base64.urlsafe_b64encode(data).decode()
    wrapped = "\n".join(urlsafe[i : i + 7] for i in range(0, len(urlsafe), 7))
    unpadded = b64(WEIGHTS[:10]).rstrip("=")
    path = write(
        tmp_path / "bundle.json",
        json.dumps({"microcode_b64": wrapped, "weights_b64": unpadded}).encode(),
    )
    got = load_bundle(path)
    assert got.microcode == data and got.weights == WEIGHTS[:10]


def test_folder_holding_bundle_json(tmp_path: Path) -> None:
    seed_bundle(tmp_path / "out" / "bundle.json", TWO)
    assert load_bundle(tmp_path / "out").microcode == TWO
    assert bundle_file(tmp_path / "out") == tmp_path / "out" / "bundle.json"
    assert bundle_file(tmp_path / "later") == tmp_path / "later" / "bundle.json"
    assert bundle_file(tmp_path / "x.json") == tmp_path / "x.json"


def test_io_table_is_read_with_default_strides(tmp_path: Path) -> None:
    io = {"4": {"role": "output", "name": "y", "c": 3, "w": 5}, "5": {"role": "input", "c": 3}}
    got = load_bundle(seed_bundle(tmp_path / "bundle.json", TWO, io=io))
    assert got.io is not None and sorted(got.io) == [4, 5]
    slot = got.io[4].io_slot()
    assert (slot.name, slot.c, slot.w, slot.row_stride, slot.plane_stride) == ("y", 3, 5, 64, 64)


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"microcode_b64": 123}, r"microcode_b64: must be a string \(got 123\)"),
        ({"weights_b64": [1, 2]}, r"weights_b64: must be a string"),
        ({"tile_descriptors": 5}, r"tile_descriptors: must be an object"),
        ({"tile_descriptors": b64(TWO)}, r"tile_descriptors: must be an object \{\"b64\""),
        ({"tile_descriptors": {"b64": True}}, r"tile_descriptors\.b64: must be a string"),
        ({"tile_descriptors": {"entry_size": 4}}, r"tile_descriptors\.b64: required key"),
        ({"td_size": "62x"}, r"td_size: must be an integer or a string of decimal digits"),
        ({"td_size": "+628"}, r"td_size: must be an integer or a string of decimal digits"),
        ({"td_size": " 628"}, r"td_size: must be an integer or a string of decimal digits"),
        ({"td_count": True}, r"td_count: must be an integer \(got true\)"),
        ({"td_count": 1.5}, r"td_count: must be an integer \(got 1\.5\)"),
        ({"td_count": 2.0}, r"td_count: must be an integer \(got 2\.0\)"),
        ({"td_count": 0}, r"td_count: must be greater than 0"),
        ({"td_count": "0"}, r"td_count: must be greater than 0"),
        ({"toolchain": {}}, r"toolchain: must be a string"),
        ({"microcode_b64": "not base64!"}, r"microcode_b64: not base64 as the kernel reads it"),
        ({"weights_b64": "ab\vc"}, r"weights_b64: not base64 .* byte 0x0b at offset 2"),
        ({"microcode_b64": ""}, r"microcode_b64 decodes to no bytes"),
        ({"microcode_b64": "Q"}, r"microcode_b64 decodes to no bytes"),
        ({"microcode_b64": None}, r"microcode_b64: must be a string"),
        ({"weight": b64(WEIGHTS)}, r"weight: unknown key .*did you mean 'weights_b64'\?"),
        ({"microcode": b64(TWO)}, r"microcode: unknown key .*did you mean 'microcode_b64'\?"),
        ({"io": {"1": {"role": "input", "c": 1}}}, r"io: slot 1: tensor slots are 2 to 31"),
        ({"io": {"4": {"role": "input", "c": 1, "w": 5, "row_stride": 4}}}, r"row stride 4"),
        ({"io": {"4": {"role": "inp", "c": 1}}}, r"io\.4\.role: must be "),
        (
            {"td_size": 628, "tile_descriptors": {"b64": "", "entry_size": 600}},
            r"td_size is 628 but tile_descriptors\.entry_size is 600",
        ),
    ],
)
def test_field_errors_name_file_key_and_value(
    tmp_path: Path, fields: dict[str, Any], pattern: str
) -> None:
    doc: dict[str, Any] = {"microcode_b64": b64(TWO), **fields}
    path = write(tmp_path / "bundle.json", json.dumps(doc).encode())
    with pytest.raises(ArtifactError, match=pattern) as info:
        load_bundle(path)
    assert str(path) in str(info.value)


def test_every_problem_is_listed(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bundle.json", json.dumps({"microcode": b64(TWO), "weights": "x"}).encode()
    )
    with pytest.raises(ArtifactError) as info:
        load_bundle(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 3 and all(line.startswith(f"bundle {path}: ") for line in lines)
    assert "microcode_b64: required key is missing" in lines[0]


def test_not_json_or_not_object_or_no_file(tmp_path: Path) -> None:
    bad = write(tmp_path / "a" / "bundle.json", b"{not json")
    with pytest.raises(ArtifactError, match=r"a/bundle\.json: invalid JSON"):
        load_bundle(bad)
    arr = write(tmp_path / "b" / "bundle.json", b"[1, 2]")
    with pytest.raises(ArtifactError, match=r"top level must be a JSON object \(got \[1, 2\]\)"):
        load_bundle(arr)
    binary = write(tmp_path / "c" / "bundle.json", b"\xff\xfe\x00garbage")
    with pytest.raises(ArtifactError, match=r"invalid JSON"):
        load_bundle(binary)
    with pytest.raises(ArtifactError, match=r"folder has no bundle\.json"):
        load_bundle(tmp_path)
    with pytest.raises(ArtifactError, match=r"nested too deeply|invalid JSON"):
        load_bundle(write(tmp_path / "d.json", b"[" * 100000 + b"]" * 100000))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = ["microcode_b64", "weights_b64", "tile_descriptors", "td_size", "td_count", "toolchain"]
B64ISH = st.one_of(
    st.binary(max_size=64).map(b64),
    st.text(alphabet="ABCD+/-_= \n", max_size=12),
    st.builds(
        lambda d, s, c: {"b64": b64(d), "entry_size": s, "count": c},
        st.binary(max_size=8),
        JSON,
        JSON,
    ),
)
PROPS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPS
@given(doc=st.one_of(JSON, st.dictionaries(st.sampled_from(KEYS), st.one_of(JSON, B64ISH))))
def test_random_json_bundles_only_raise_ane_errors(tmp_path: Path, doc: Any) -> None:
    path = write(tmp_path / "bundle.json", json.dumps(doc).encode())
    try:
        got = load_bundle(path)
    except AneError:
        return
    assert isinstance(got.microcode, bytes) and got.microcode
    assert set(doc) <= set(KEYS)
    for value in (got.td_size, got.td_count):
        assert value is None or (type(value) is int and value > 0)


@PROPS
@given(raw=st.binary(max_size=200))
def test_random_bytes_bundles_only_raise_ane_errors(tmp_path: Path, raw: bytes) -> None:
    path = write(tmp_path / "bundle.json", raw)
    try:
        load_bundle(path)
    except AneError:
        pass
    else:
        assert json.loads(raw)["microcode_b64"]


def test_resolved_bundle_names_its_fields(tmp_path: Path) -> None:
    seed_bundle(tmp_path / "bundle.json", TWO, td_count=3)
    with pytest.raises(AneError) as info:
        resolve_artifacts(ArtifactSpec(bundle=Path("bundle.json")), base_dir=tmp_path)
    text = str(info.value)
    assert "bundle bundle.json, field 'microcode_b64'" in text and "td_count is 3" in text
