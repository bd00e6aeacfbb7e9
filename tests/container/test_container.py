"""The ane.* container: parse without reading the graph, streaming embed, kernel-exact verify."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from ane_build.check.samples import write_sample_graph
from ane_build.container import metadata as container
from ane_build.container import writer
from ane_build.container.external import external_data_locations
from ane_build.container.keys import kernel_accepts_key
from ane_build.container.metadata import parse_ane_metadata, read_ane_payloads
from ane_build.container.types import AneModelMetadata, VerifyReport
from ane_build.container.verify import verify_container
from ane_build.container.writer import embed_ane_metadata
from ane_build.driver.kernel_onnx import decode_base64
from ane_build.driver.kernel_onnx.b64 import Base64Decoder
from ane_build.driver.uapi import ONNX_KEY_LIMIT as KERNEL_KEY_LIMIT
from ane_build.errors import (
    AneError,
    ArtifactError,
    ContainerError,
    MetadataError,
    MissingAneMetadataError,
    ModelFileError,
    VerificationError,
    WireFormatError,
)
from ane_build.formats import protowire as pw
from ane_build.formats.microcode import walk_chain
from ane_build.formats.payload import IoSlot, PayloadRef
from tests.helpers import encode_entry, even

TD_SIZE = 0x274
NEXT_STRIDE = 0x300
ANEC_PAYLOAD = 0x1000

# --- builders --------------------------------------------------------------------------------


def make_chain(count: int, td_size: int = TD_SIZE) -> bytes:
    """A descriptor chain laid out like anecc's: descriptors every 0x300 bytes."""
    data = bytearray((count - 1) * NEXT_STRIDE + td_size)
    for index in range(count):
        offset = index * NEXT_STRIDE
        last = index == count - 1
        word0 = index | (1 << 16) | ((1 << 25) if last else 0)
        struct.pack_into("<I", data, offset, word0)
        struct.pack_into("<I", data, offset + 4, (td_size // 4 - 1) << 16)
        struct.pack_into("<I", data, offset + 28, 0 if last else offset + NEXT_STRIDE)
    return bytes(data)


MICROCODE = make_chain(2)
WEIGHTS = bytes(range(256)) * 40 + b"\x01"


def make_model(
    props: dict[str, str] | None = None, *, weight: np.ndarray | None = None
) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    value = np.arange(4, dtype=np.float32).reshape(1, 4) if weight is None else weight
    w = numpy_helper.from_array(value, "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["t"]), helper.make_node("Relu", ["t"], ["y"])],
        "relu_add",
        [x],
        [y],
        [w],
    )
    model = helper.make_model(
        graph, producer_name="test", opset_imports=[helper.make_opsetid("", 17)]
    )
    if props:
        helper.set_model_props(model, props)
    return model


def save(model: onnx.ModelProto, path: Path, *, pad: bool = True) -> Path:
    onnx.save_model(even(model) if pad else model, os.fspath(path))
    return path


def pw_value_offset(data: bytes, key: bytes) -> int:
    """Where the value of metadata entry ``key`` starts in ``data``."""
    for top in pw.iter_fields(data):
        if top.number == pw.MODEL_METADATA_PROPS:
            parts = list(pw.iter_fields(data, top.value_offset, top.end))
            if data[parts[0].value_offset : parts[0].end] == key:
                return parts[1].value_offset
    raise AssertionError(f"no entry {key!r}")


def field_slices(data: bytes, number: int) -> list[bytes]:
    return [data[f.offset : f.end] for f in pw.iter_fields(data) if f.number == number]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kernel_props(**extra: str) -> dict[str, str]:
    """The minimal metadata the kernel needs, built by hand (no digests, no format)."""
    props = {
        "ane.microcode.b64": b64(MICROCODE),
        "ane.td_size": str(TD_SIZE),
        "ane.td_count": "2",
    }
    props.update(extra)
    return props


def embed(source: Path, output: Path, **kwargs: Any) -> AneModelMetadata:
    args: dict[str, Any] = {
        "microcode": PayloadRef.from_bytes(MICROCODE),
        "td_size": TD_SIZE,
        "td_count": 2,
        "weights": PayloadRef.from_bytes(WEIGHTS),
    }
    args.update(kwargs)
    return embed_ane_metadata(source, output, **args)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


IO_SLOTS = {
    4: IoSlot(role="output", name="y", n=1, c=4, h=1, w=1, plane_stride=64, row_stride=64),
    5: IoSlot(role="input", name="x", n=1, c=4, h=1, w=1, plane_stride=64, row_stride=64),
}

# --- embed round trips -----------------------------------------------------------------------


def test_round_trip_preserves_graph_and_foreign_metadata(tmp_path: Path) -> None:
    source = save(
        make_model({"author": "me", "ane.td_size": "999", "ane.stale.thing": "x"}),
        tmp_path / "m.onnx",
    )
    output = tmp_path / "m_ane.onnx"
    calls: list[tuple[int, int]] = []
    meta = embed(
        source,
        output,
        tile_descriptors=PayloadRef.from_bytes(b"\x07" * 100),
        toolchain="anecc 1.0",
        io=IO_SLOTS,
        tiles={0: 32768, 4: 16384},
        progress=lambda done, total: calls.append((done, total)),
    )
    src, out = source.read_bytes(), output.read_bytes()
    assert field_slices(out, pw.MODEL_GRAPH) == field_slices(src, pw.MODEL_GRAPH)
    assert len(field_slices(out, pw.MODEL_GRAPH)) == 1

    loaded = onnx.load(os.fspath(output))
    onnx.checker.check_model(loaded, full_check=True)
    # Field order is the serializer's, so re-serializing gives the same bytes.
    assert loaded.SerializeToString() == out
    props = {e.key: e.value for e in loaded.metadata_props}
    assert props["author"] == "me"
    assert "ane.stale.thing" not in props
    assert props["ane.td_size"] == str(TD_SIZE)
    assert props["ane.td_count"] == "2"
    assert props["ane.format"] == "1"
    assert base64.b64decode(props["ane.microcode.b64"]) == MICROCODE
    assert base64.b64decode(props["ane.weights.b64"]) == WEIGHTS
    assert props["ane.source.sha256"] == sha(src)
    assert len(loaded.metadata_props) == len(props)

    assert meta == parse_ane_metadata(output)
    assert meta.path == str(output)
    # The path is reported as given, so what embed returns equals what parse reads back.
    dotted = os.fspath(tmp_path) + "/./dotted.onnx"
    assert embed_ane_metadata(
        source, dotted, microcode=PayloadRef.from_bytes(MICROCODE), td_size=TD_SIZE, td_count=2
    ) == parse_ane_metadata(dotted)
    assert (meta.microcode_len, meta.weights_len, meta.tile_descriptors_len) == (
        len(MICROCODE),
        len(WEIGHTS),
        100,
    )
    assert (meta.td_size, meta.td_count, meta.format) == (TD_SIZE, 2, "1")
    assert meta.toolchain == "anecc 1.0"
    assert meta.io == IO_SLOTS
    assert meta.tiles == {0: 32768, 4: 16384}
    assert meta.microcode_sha256 == sha(MICROCODE)
    assert meta.weights_sha256 == sha(WEIGHTS)
    assert meta.tile_descriptors_sha256 == sha(b"\x07" * 100)
    assert meta.source_sha256 == sha(src)
    assert meta.foreign_keys == ("author",)
    assert set(meta.keys) == set(props)
    assert meta.has_graph and meta.has_weights
    assert meta.file_size == len(out)

    payloads = read_ane_payloads(output)
    assert payloads.microcode == MICROCODE
    assert payloads.weights == WEIGHTS
    assert payloads.tile_descriptors == b"\x07" * 100

    report = verify_container(output)
    assert report.ok, report.summary()
    assert report.metadata == meta
    assert calls and calls[-1] == (len(out), len(out))
    assert all(done <= total == len(out) for done, total in calls)
    assert leftovers(tmp_path) == []


def test_rebuild_in_place_replaces_every_ane_entry(tmp_path: Path) -> None:
    path = save(make_model({"author": "me"}), tmp_path / "m.onnx")
    first = embed(path, path, toolchain="one")
    before = path.read_bytes()
    second = embed(path, path, weights=None, toolchain="two")
    after = path.read_bytes()
    assert field_slices(after, pw.MODEL_GRAPH) == field_slices(before, pw.MODEL_GRAPH)
    assert second.source_sha256 == sha(before) != first.source_sha256
    assert second.toolchain == "two"
    assert not second.has_weights and second.weights_len == 0
    assert sorted(second.keys) == sorted(set(second.keys))
    assert "ane.weights.sha256" not in second.keys
    onnx.checker.check_model(onnx.load(os.fspath(path)), full_check=True)
    assert verify_container(path).ok


def test_fields_after_metadata_stay_after_it(tmp_path: Path) -> None:
    model = make_model({"author": "me"})
    function = helper.make_function(
        "custom",
        "Double",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    model.functions.append(function)
    model.opset_import.append(helper.make_opsetid("custom", 1))
    source = save(model, tmp_path / "m.onnx")
    src = source.read_bytes()
    assert any(f.number > pw.MODEL_METADATA_PROPS for f in pw.iter_fields(src))
    output = tmp_path / "out.onnx"
    embed(source, output)
    out = output.read_bytes()
    numbers = [f.number for f in pw.iter_fields(out)]
    assert numbers == sorted(numbers)
    loaded = onnx.load(os.fspath(output))
    assert loaded.SerializeToString() == out
    assert loaded.functions[0].name == "Double"
    assert field_slices(out, 25) == field_slices(src, 25)
    assert parse_ane_metadata(output).source_sha256 == sha(src)


def test_large_payload_chunking_is_exact(tmp_path: Path) -> None:
    source = save(make_model(), tmp_path / "m.onnx")
    # Not a multiple of 3 and longer than one encoding chunk, from a file at an offset.
    weights = os.urandom((3 << 20) + 7)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"header" + weights + b"trailer")
    ref = PayloadRef.from_file(blob, offset=6, length=len(weights))
    meta = embed(source, tmp_path / "out.onnx", weights=ref)
    assert meta.weights_len == len(weights)
    assert meta.weights_sha256 == sha(weights)
    assert read_ane_payloads(tmp_path / "out.onnx").weights == weights
    assert verify_container(tmp_path / "out.onnx").ok


def test_parse_reads_only_headers_and_small_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)  # a 4 MiB graph
    source = save(make_model(weight=big), tmp_path / "big.onnx")
    output = tmp_path / "out.onnx"
    embed(source, output, weights=PayloadRef.from_bytes(os.urandom(8 << 20)))
    assert output.stat().st_size > 14 << 20
    read = 0

    class CountingFile(io.FileIO):
        def readinto(self, buffer: Any) -> int | None:
            nonlocal read
            count = super().readinto(buffer)
            read += count or 0
            return count

    def counting_open(path: str, mode: str = "r", buffering: int = -1, **_: Any) -> Any:
        assert mode == "rb"
        return io.BufferedReader(CountingFile(path), max(buffering, io.DEFAULT_BUFFER_SIZE))

    monkeypatch.setattr(container, "open", counting_open, raising=False)
    meta = parse_ane_metadata(output)
    assert meta.weights_len == 8 << 20
    assert read < 256 << 10, read


def test_parse_never_looks_inside_the_graph_or_payloads(tmp_path: Path) -> None:
    source = save(make_model(weight=np.ones((1, 4), np.float32)), tmp_path / "m.onnx")
    output = tmp_path / "out.onnx"
    embed(source, output, weights=PayloadRef.from_bytes(os.urandom(30000)))
    data = bytearray(output.read_bytes())
    graph = next(f for f in pw.iter_fields(data) if f.number == pw.MODEL_GRAPH)
    data[graph.value_offset : graph.end] = b"\xff" * graph.length
    weights_at = bytes(data).find(b"ane.weights.b64") + len("ane.weights.b64") + 4
    data[weights_at + 5000 : weights_at + 5004] = b"*!*!"
    meta = parse_ane_metadata(bytes(data))
    assert meta.weights_len == 30000
    report = verify_container(bytes(data))
    failed = {c.name: c.detail for c in report.failures}
    assert "rule base64" in failed["kernel"] and "ane.weights.b64" in failed["kernel"]
    with pytest.raises(MetadataError, match=r"ane\.weights\.b64 is not valid base64"):
        read_ane_payloads(bytes(data))


# --- external data ---------------------------------------------------------------------------


def save_external(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    model = make_model({"author": "me"}, weight=np.full((1, 4), 3.0, np.float32))
    path = folder / "m.onnx"
    onnx.save_model(
        model,
        os.fspath(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.bin",
        size_threshold=0,
    )
    assert (folder / "w.bin").is_file()
    return path


def test_external_data_next_to_the_source_still_resolves(tmp_path: Path) -> None:
    source = save_external(tmp_path)
    assert external_data_locations(source) == ["w.bin"]
    output = source.parent / "m_ane.onnx"
    embed(source, output)
    onnx.checker.check_model(os.fspath(output), full_check=True)
    loaded = onnx.load(os.fspath(output), load_external_data=True)
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), 3.0)
    assert verify_container(output).ok


def test_external_data_in_subgraphs_is_found(tmp_path: Path) -> None:
    def branch(name: str, value: float) -> onnx.GraphProto:
        const = numpy_helper.from_array(np.full((1, 4), value, np.float32), f"{name}_c")
        out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 4])
        node = helper.make_node("Identity", [f"{name}_c"], [f"{name}_y"])
        return helper.make_graph([node], name, [], [out], [const])

    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node(
        "If", ["cond"], ["y"], then_branch=branch("then", 1.0), else_branch=branch("else", 2.0)
    )
    graph = helper.make_graph([node], "g", [cond], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (tmp_path / "src").mkdir()
    path = tmp_path / "src" / "if.onnx"
    onnx.save_model(
        model,
        os.fspath(path),
        save_as_external_data=True,
        all_tensors_to_one_file=False,
        size_threshold=0,
    )
    locations = external_data_locations(path)
    assert len(locations) == 2 and all((path.parent / loc).is_file() for loc in locations)
    (tmp_path / "out").mkdir()
    with pytest.raises(ContainerError, match="does not exist"):
        embed(path, tmp_path / "out" / "if_ane.onnx")


def test_external_data_missing_next_to_the_output_is_refused(tmp_path: Path) -> None:
    source = save_external(tmp_path)
    elsewhere = tmp_path / "out"
    elsewhere.mkdir()
    with pytest.raises(ContainerError, match=r"'w\.bin' does not exist.*next to the source"):
        embed(source, elsewhere / "m_ane.onnx")
    assert list(elsewhere.iterdir()) == []
    assert leftovers(source.parent) == []


def test_external_data_present_next_to_the_output_is_accepted(tmp_path: Path) -> None:
    source = save_external(tmp_path)
    elsewhere = tmp_path / "out"
    elsewhere.mkdir()
    shutil.copyfile(source.parent / "w.bin", elsewhere / "w.bin")
    embed(source, elsewhere / "m_ane.onnx")
    loaded = onnx.load(os.fspath(elsewhere / "m_ane.onnx"), load_external_data=True)
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), 3.0)


@pytest.mark.parametrize(
    ("link", "problem"),
    [(os.symlink, "is a symbolic link"), (os.link, "has 2 hard links")],
)
def test_linked_external_data_is_refused_like_onnx_does(
    tmp_path: Path, link: Callable[[Path, Path], None], problem: str
) -> None:
    source = save_external(tmp_path)
    elsewhere = tmp_path / "out"
    elsewhere.mkdir()
    link(source.parent / "w.bin", elsewhere / "w.bin")
    with pytest.raises(ContainerError, match=f"'w.bin' {problem}"):
        embed(source, elsewhere / "m_ane.onnx")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["w.bin"]
    # onnx itself refuses to load through the link, which is why embed refuses to write it.
    shutil.copyfile(source, elsewhere / "m.onnx")
    with pytest.raises(Exception, match=problem.split()[-1].rstrip("s")):
        onnx.load(os.fspath(elsewhere / "m.onnx"))


@pytest.mark.parametrize("location", ["../w.bin", "/tmp/w.bin", "sub/../../w.bin"])
def test_external_data_escaping_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    model = make_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    (tmp_path / "src").mkdir()
    source = save(model, tmp_path / "src" / "m.onnx")
    with pytest.raises(ContainerError, match="relative paths inside the model's folder"):
        embed(source, tmp_path / "m_ane.onnx")
    assert not (tmp_path / "m_ane.onnx").exists()


def test_output_elsewhere_without_external_data_is_fine(tmp_path: Path) -> None:
    source = save(make_model(), tmp_path / "m.onnx")
    (tmp_path / "out").mkdir()
    embed(source, tmp_path / "out" / "m.onnx")
    assert verify_container(tmp_path / "out" / "m.onnx").ok


# --- refusals before writing -----------------------------------------------------------------


def test_key_limit_is_the_kernels(tmp_path: Path) -> None:
    assert KERNEL_KEY_LIMIT == 64
    assert kernel_accepts_key("k" * 63)
    assert not kernel_accepts_key("k" * 64)
    # Bytes, not characters: 32 two-byte characters make a 64-byte key.
    assert not kernel_accepts_key("é" * 32)
    assert kernel_accepts_key("é" * 31)

    ok_source = save(make_model({"k" * 63: "v"}), tmp_path / "ok.onnx")
    embed(ok_source, tmp_path / "ok_ane.onnx")
    assert verify_container(tmp_path / "ok_ane.onnx").ok

    bad_source = save(make_model({"k" * 64: "v"}), tmp_path / "bad.onnx")
    with pytest.raises(ContainerError, match=r"64 bytes or more.*remove or rename"):
        embed(bad_source, tmp_path / "bad_ane.onnx")
    assert not (tmp_path / "bad_ane.onnx").exists()
    assert leftovers(tmp_path) == []


def test_a_stale_long_ane_key_is_dropped_not_refused(tmp_path: Path) -> None:
    key = "ane." + "x" * 70
    source = save(make_model({key: "old", "author": "me"}), tmp_path / "m.onnx")
    meta = embed(source, tmp_path / "out.onnx")
    assert key not in meta.keys and "author" in meta.keys
    assert verify_container(tmp_path / "out.onnx").ok


def test_files_over_two_gib_parse_and_are_refused_as_sources(tmp_path: Path) -> None:
    path = tmp_path / "huge.onnx"
    entries = b"".join(
        pw.encode_len_header(pw.MODEL_METADATA_PROPS, len(body)) + body
        for body in (encode_entry(k.encode(), v.encode()) for k, v in kernel_props().items())
    )
    graph_len = 2**31 + 12345 + (len(entries) + 1) % 2  # an even file, as our writer makes
    with open(path, "wb") as f:
        f.write(b"\x08\x09")  # ir_version 9
        f.write(pw.encode_len_header(pw.MODEL_GRAPH, graph_len))
        f.seek(graph_len, os.SEEK_CUR)  # a sparse hole: the graph is never read
        f.write(entries)
    assert path.stat().st_size > 2**31
    meta = parse_ane_metadata(path)
    assert meta.has_graph and meta.file_size == path.stat().st_size
    assert (meta.microcode_len, meta.td_size, meta.td_count) == (len(MICROCODE), TD_SIZE, 2)
    report = verify_container(path, strict=False)
    # The kernel parses it (it never looks at the size); protobuf does not.
    assert [c.name for c in report.failures] == ["protobuf size"], report.summary()
    with pytest.raises(ContainerError, match="2 GiB"):
        embed(path, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_bytes_like_inputs(tmp_path: Path) -> None:
    data = even(make_model(kernel_props())).SerializeToString()
    for blob in (data, bytearray(data), memoryview(data)):
        assert parse_ane_metadata(blob).microcode_len == len(MICROCODE)
        assert read_ane_payloads(blob).microcode == MICROCODE
        assert verify_container(blob, strict=False).ok


def test_verify_flags_a_long_foreign_key(tmp_path: Path) -> None:
    path = save(make_model(kernel_props(**{"x" * 64: "v"})), tmp_path / "m.onnx")
    report = verify_container(path, strict=False)
    assert [c.name for c in report.failures] == ["kernel"]
    assert "the key b'" + "x" * 24 + "'... of 64 bytes" in report.failures[0].detail
    assert "rule key-too-long" in report.failures[0].detail


def test_over_two_gib_is_refused_before_reading_anything(tmp_path: Path) -> None:
    source = save(make_model(), tmp_path / "m.onnx")
    sparse = tmp_path / "huge.bin"
    with open(sparse, "wb") as f:
        f.truncate(1_700_000_000)  # base64 of this is 2.27 GB
    with pytest.raises(ContainerError, match=r"2 GiB.*save_as_external_data=True"):
        embed(source, tmp_path / "out.onnx", weights=PayloadRef.from_file(sparse))
    assert not (tmp_path / "out.onnx").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"td_size": 0}, "td_size 0"),
        ({"td_size": 630}, "multiple of 4"),
        ({"td_size": -4}, "td_size -4"),
        ({"td_size": len(MICROCODE) + 4}, "no larger than the microcode"),
        ({"td_size": True}, "must be an int"),
        ({"td_count": 0}, "td_count 0"),
        ({"td_count": 0x10000}, "td_count 65536"),
        ({"microcode": PayloadRef.from_bytes(b"")}, "empty"),
        ({"io": {32: IO_SLOTS[4]}}, "slot 32"),
        ({"tiles": {0: -1}}, "byte count"),
        ({"tiles": {-1: 16384}}, "slot -1"),
        ({"io": {"4": IO_SLOTS[4], 5: IO_SLOTS[5]}}, "slot '4'"),
        ({"io": {4: {"role": "sideways"}}}, "io slot 4"),
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    source = save(make_model(), tmp_path / "m.onnx")
    with pytest.raises(ContainerError, match=message):
        embed(source, tmp_path / "out.onnx", **kwargs)
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_write_leaves_nothing(tmp_path: Path, exc: type[BaseException]) -> None:
    source = save(make_model(), tmp_path / "m.onnx")
    output = tmp_path / "out.onnx"
    output.write_bytes(b"previous")

    def interrupt(done: int, total: int) -> None:
        if done:
            raise exc("stop")

    with pytest.raises(exc):
        embed(
            source, output, weights=PayloadRef.from_bytes(os.urandom(8 << 20)), progress=interrupt
        )
    assert output.read_bytes() == b"previous"
    assert leftovers(tmp_path) == []


def test_payload_file_shrinking_mid_write_leaves_nothing(tmp_path: Path) -> None:
    source = save(make_model(), tmp_path / "m.onnx")
    blob = tmp_path / "w.bin"
    blob.write_bytes(os.urandom(8 << 20))
    ref = PayloadRef.from_file(blob)
    with open(blob, "r+b") as f:
        f.truncate(1 << 20)
    with pytest.raises(ArtifactError, match="shrank"):
        embed(source, tmp_path / "out.onnx", weights=ref)
    assert not (tmp_path / "out.onnx").exists()
    assert leftovers(tmp_path) == []


def test_output_keeps_the_permissions_of_the_file_it_replaces(tmp_path: Path) -> None:
    source = save(make_model(), tmp_path / "m.onnx")
    output = tmp_path / "out.onnx"
    embed(source, output)
    assert output.stat().st_mode & 0o777 == 0o666 & ~_umask()
    output.chmod(0o640)
    embed(source, output)
    assert output.stat().st_mode & 0o777 == 0o640


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_unreadable_source(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"missing\.onnx"):
        embed(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x0a\xff\xff\xff\xff\x0f")
    with pytest.raises(WireFormatError, match=r"garbage\.onnx"):
        embed(garbage, tmp_path / "out.onnx")


# --- parse errors ----------------------------------------------------------------------------


def test_missing_keys_say_how_to_add_them(tmp_path: Path) -> None:
    path = save(make_model({"ane.td_size": "628"}), tmp_path / "plain.onnx")
    with pytest.raises(MissingAneMetadataError) as info:
        parse_ane_metadata(path)
    text = str(info.value)
    assert "plain.onnx" in text
    assert "ane.microcode.b64" in text and "ane.td_count" in text
    assert "ane.td_size," not in text
    assert "--anec FILE" in text and "--artifact-root DIR" in text


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ane.td_size", "abc", "not digits"),
        ("ane.td_size", "0", "must not be zero"),
        ("ane.td_size", "-4", "not digits"),
        ("ane.td_size", " 628", "not digits"),
        ("ane.td_size", "1" * 32, "32 bytes"),
        ("ane.td_count", "4294967296", "above 4294967295"),
        ("ane.td_count", "", "not digits"),
        ("ane.io", "{not json", "invalid JSON"),
        ("ane.io", "[]", "JSON object"),
        ("ane.io", '{"4": {"role": "sideways"}}', "slot 4"),
        ("ane.io", '{"40": {}}', "slot keys"),
        ("ane.tiles", '{"0": -1}', "byte count"),
        ("ane.tiles", '{"0": true}', "byte count"),
        ("ane.tiles", '{"0": 1, "0": 2}', "duplicate key"),
        ("ane.microcode.sha256", "ABC", "sha256"),
    ],
)
def test_bad_values_name_file_key_and_value(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    path = save(make_model(kernel_props(**{key: value})), tmp_path / "bad.onnx")
    with pytest.raises(MetadataError, match=message) as info:
        parse_ane_metadata(path)
    assert not isinstance(info.value, MissingAneMetadataError)
    assert "bad.onnx" in str(info.value)
    assert key in str(info.value)
    if value.strip():
        assert repr(value[:20])[1:-1][:10] in str(info.value)
    report = verify_container(path, strict=False)
    assert not report.ok
    assert any(key in c.name or key in c.detail for c in report.failures), report.summary()


def test_truncated_file_names_file_and_offset(tmp_path: Path) -> None:
    path = save(make_model(kernel_props()), tmp_path / "m.onnx")
    data = path.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[:-3])
    last = list(pw.iter_fields(data))[-1]
    with pytest.raises(WireFormatError, match=rf"cut\.onnx.*at byte {last.offset}"):
        parse_ane_metadata(cut)
    report = verify_container(cut)
    assert [c.name for c in report.checks] == ["kernel", "wire format"]
    assert not report.ok


def test_model_without_graph_parses_but_fails_verification(tmp_path: Path) -> None:
    model = onnx.ModelProto()
    model.ir_version = 9
    helper.set_model_props(model, kernel_props())
    data = model.SerializeToString()
    with pytest.raises(ContainerError, match="no graph"):
        embed(save(model, tmp_path / "empty.onnx"), tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
    meta = parse_ane_metadata(data)
    assert not meta.has_graph
    assert meta.microcode_len == len(MICROCODE)
    report = verify_container(data, strict=False)
    assert [c.name for c in report.failures] == ["graph"]


def test_duplicate_ane_keys(tmp_path: Path) -> None:
    model = make_model(kernel_props())
    entry = model.metadata_props.add()
    entry.key, entry.value = "ane.td_count", "1"
    data = model.SerializeToString()
    with pytest.raises(MetadataError, match="appears more than once"):
        parse_ane_metadata(data)
    report = verify_container(data, strict=False)
    assert "unique keys" in {c.name for c in report.failures}


def test_unreadable_model_path(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"nothing\.onnx"):
        parse_ane_metadata(tmp_path / "nothing.onnx")
    with pytest.raises(ModelFileError):
        read_ane_payloads(tmp_path / "nothing.onnx")
    report = verify_container(tmp_path / "nothing.onnx")
    assert [(c.name, c.ok) for c in report.checks] == [("readable", False)]


# --- base64 as the kernel reads it -----------------------------------------------------------


def test_url_safe_and_whitespace_are_accepted(tmp_path: Path) -> None:
    weights = bytes(range(256)) * 20  # has bytes that encode to '+' and '/'
    text = base64.urlsafe_b64encode(weights).decode()
    assert "-" in text and "_" in text
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + "\r\n"
    microcode = " " + "\t".join(b64(MICROCODE)[i : i + 10] for i in range(0, 1000, 10))
    microcode += b64(MICROCODE)[1000:]
    props = kernel_props(**{"ane.weights.b64": wrapped, "ane.microcode.b64": microcode})
    path = save(make_model(props), tmp_path / "m.onnx")
    payloads = read_ane_payloads(path)
    assert payloads.microcode == MICROCODE
    assert payloads.weights == weights
    meta = parse_ane_metadata(path)
    assert (meta.microcode_len, meta.weights_len) == (len(MICROCODE), len(weights))
    assert verify_container(path, strict=False).ok


def test_unpadded_base64_is_accepted() -> None:
    for size in range(1, 8):
        data = os.urandom(size)
        text = base64.urlsafe_b64encode(data).rstrip(b"=")
        assert decode_base64(text) == data


@pytest.mark.parametrize(
    ("text", "decoded"),
    [
        # The kernel's base64 (DESIGN section 3, rule 5), as the container readers apply it.
        ("QUJDQ", b"ABC"),  # leftover bits are dropped
        ("QQ=", b"A"),
        ("QQ==QUJD", b"A"),  # the first '=' ends decoding
        ("=QUJD", b""),
        ("Q", b""),
    ],
)
def test_readers_decode_as_the_kernel(tmp_path: Path, text: str, decoded: bytes) -> None:
    props = kernel_props(**{"ane.weights.b64": text})
    path = save(make_model(props), tmp_path / "m.onnx")
    assert read_ane_payloads(path).weights == decoded
    assert parse_ane_metadata(path).weights_len == len(decoded)


@pytest.mark.parametrize(
    ("text", "offset"),
    [("QUJD*", 4), ("QUJD\x00", 4), ("QUJDé", 4), ("QU\vJD", 2), ("QU\fJD", 2)],
)
def test_invalid_base64_is_rejected_naming_key_and_offset(
    tmp_path: Path, text: str, offset: int
) -> None:
    props = kernel_props(**{"ane.weights.b64": text})
    path = save(make_model(props), tmp_path / "m.onnx")
    with pytest.raises(MetadataError, match=r"ane\.weights\.b64 is not valid base64") as info:
        read_ane_payloads(path)
    start = pw_value_offset(path.read_bytes(), b"ane.weights.b64")
    assert f"offset {start + offset}" in str(info.value)


def test_invalid_base64_is_caught_by_verify_and_read(tmp_path: Path) -> None:
    props = kernel_props(**{"ane.weights.b64": "AAAA*AAA"})
    path = save(make_model(props), tmp_path / "m.onnx")
    report = verify_container(path, strict=False)
    assert [c.name for c in report.failures] == ["kernel"]
    assert "rejects this container with EINVAL" in report.failures[0].detail
    assert "ane.weights.b64" in report.failures[0].detail
    with pytest.raises(MetadataError, match=r"ane\.weights\.b64"):
        read_ane_payloads(path)
    with pytest.raises(VerificationError, match=r"ane\.weights\.b64") as info:
        report.raise_for_failure()
    assert getattr(info.value, "report", None) is report


alphabet_noise = st.lists(st.sampled_from([" ", "\n", "\t", "\r\n"]), max_size=3)


@given(
    data=st.binary(max_size=600),
    url_safe=st.booleans(),
    strip_padding=st.booleans(),
    noise=st.lists(st.tuples(st.integers(0, 10_000), alphabet_noise), max_size=6),
)
@settings(max_examples=300, deadline=None)
def test_kernel_base64_decodes_every_variant(
    data: bytes, url_safe: bool, strip_padding: bool, noise: list[tuple[int, list[str]]]
) -> None:
    text = (base64.urlsafe_b64encode if url_safe else base64.b64encode)(data).decode()
    if strip_padding:
        text = text.rstrip("=")
    for position, spaces in noise:
        at = position % (len(text) + 1)
        text = text[:at] + "".join(spaces) + text[at:]
    assert decode_base64(text.encode()) == data


def reference_kernel_base64(text: bytes) -> bytes | None:
    """The kernel's loop, written from DESIGN section 3 rule 5 bit by bit (the oracle)."""
    values = {c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")}
    values.update({c: 52 + i for i, c in enumerate(b"0123456789")})
    values.update({ord("+"): 62, ord("-"): 62, ord("/"): 63, ord("_"): 63})
    out, acc, bits = bytearray(), 0, 0
    for c in text:
        if c == ord("="):
            break
        if c in b"\n\r\t ":
            continue
        if c not in values:
            return None
        acc, bits = (acc << 6) | values[c], bits + 6
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return bytes(out)


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_kernel_base64_agrees_with_an_independent_reference(text: bytes) -> None:
    try:
        ours: bytes | None = decode_base64(text)
    except AneError:
        ours = None
    assert ours == reference_kernel_base64(text)


@given(size=st.integers(0, 6000), wrap=st.sampled_from([0, 64, 76]), pad=st.booleans())
@settings(max_examples=100, deadline=None)
def test_parse_computes_decoded_lengths(size: int, wrap: int, pad: bool) -> None:
    text = base64.b64encode(os.urandom(size)).decode()
    if not pad:
        text = text.rstrip("=")
    if wrap:
        text = "\n".join(text[i : i + wrap] for i in range(0, len(text), wrap)) + "\n"
    props = kernel_props(**{"ane.weights.b64": text})
    meta = parse_ane_metadata(even(make_model(props)).SerializeToString())
    assert meta.weights_len == size
    assert meta.microcode_len == len(MICROCODE)


# --- verify ----------------------------------------------------------------------------------


def test_strict_wants_what_embed_writes(tmp_path: Path) -> None:
    path = save(make_model(kernel_props()), tmp_path / "m.onnx")
    assert verify_container(path, strict=False).ok
    strict = verify_container(path)
    assert {c.name for c in strict.failures} == {
        "ane.microcode.sha256",
        "ane.format",
        "ane.source.sha256",
    }


def test_digest_mismatch_is_reported(tmp_path: Path) -> None:
    props = kernel_props(**{"ane.microcode.sha256": sha(b"other"), "ane.weights.b64": b64(WEIGHTS)})
    props["ane.weights.sha256"] = sha(WEIGHTS)
    path = save(make_model(props), tmp_path / "m.onnx")
    report = verify_container(path, strict=False)
    assert [c.name for c in report.failures] == ["ane.microcode.sha256"]
    assert sha(MICROCODE) in report.failures[0].detail
    lines = report.summary().splitlines()
    warned = len(report.warnings)
    assert warned == 1 and report.warnings[0].name == "graph vs program"  # this model has no ane.io
    assert lines[0].endswith(f"FAILED (1 of {len(report.checks)} checks), {warned} warning(s)")
    assert len(lines) == len(report.checks) + 1
    assert sum(line.startswith("FAIL ") for line in lines) == 1
    assert sum(line.startswith("WARN ") for line in lines) == warned
    assert all(line.startswith(("PASS ", "FAIL ", "WARN ")) for line in lines[1:])


@pytest.mark.parametrize(
    ("props", "failed", "detail"),
    [
        ({"ane.td_count": "1"}, "descriptor chain", "chain has 2 descriptors"),
        ({"ane.td_size": "630"}, "descriptor chain", "size 630"),
        ({"ane.td_size": "100000"}, "descriptor chain", "past the end"),
        ({"ane.microcode.b64": ""}, "kernel", "ane.microcode.b64 at offset"),
        ({"ane.format": "2"}, "ane.format", "format '1'"),
        ({"ane.io": "{"}, "ane.io", "invalid JSON"),
        ({"ane.tiles": "[1]"}, "ane.tiles", "JSON object"),
        ({"ane.weights.sha256": sha(b"")}, "ane.weights.sha256", "no ane.weights.b64"),
    ],
)
def test_verify_reports_content_problems(
    tmp_path: Path, props: dict[str, str], failed: str, detail: str
) -> None:
    path = save(make_model(kernel_props(**props)), tmp_path / "m.onnx")
    report = verify_container(path, strict=False)
    assert [c.name for c in report.failures] == [failed], report.summary()
    assert detail in report.failures[0].detail


def test_verify_reports_garbage_instead_of_raising() -> None:
    report = verify_container(b"\x0a\x05abc")
    assert not report.ok
    failures = {check.name: check.detail for check in report.failures}
    assert "byte 0" in failures["wire format"]
    assert "rejects this container with EINVAL" in failures["kernel"]
    empty = verify_container(b"")
    assert not empty.ok
    assert isinstance(empty, VerifyReport)


# --- real compiler output --------------------------------------------------------------------


def read_anec(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    size, td_size, td_count, tsk_size, krn_size = struct.unpack_from("<QIIQQ", data, 0)
    src_count, dst_count = struct.unpack_from("<II", data, 32)
    tiles = struct.unpack_from("<32I", data, 40)
    nchw = [struct.unpack_from("<6Q", data, 168 + 48 * slot) for slot in range(32)]
    assert len(data) == ANEC_PAYLOAD + size
    weights_at = ANEC_PAYLOAD + -(-tsk_size // 16) * 16
    return {
        "microcode": data[ANEC_PAYLOAD : ANEC_PAYLOAD + tsk_size],
        "weights": data[weights_at : weights_at + krn_size],
        "td_size": td_size,
        "td_count": td_count,
        "tiles": {slot: units * 16384 for slot, units in enumerate(tiles) if units},
        "io": {
            slot: IoSlot(
                role="output" if slot < 4 + dst_count else "input",
                n=n,
                c=c,
                h=h,
                w=w,
                plane_stride=plane,
                row_stride=row,
            )
            for slot, (n, c, h, w, plane, row) in enumerate(nchw)
            if 4 <= slot < 4 + dst_count + src_count
        },
    }


def test_real_samples_round_trip(anec_samples: Path, tmp_path: Path) -> None:
    samples = sorted(anec_samples.glob("*.ane"))
    assert samples
    for sample in samples:
        source = tmp_path / f"{sample.stem}.onnx"
        write_sample_graph(sample.name, source)  # a graph of the program's own inputs/outputs
        anec = read_anec(sample)
        output = tmp_path / f"{sample.stem}_ane.onnx"
        meta = embed_ane_metadata(
            source,
            output,
            microcode=PayloadRef.from_file(sample, ANEC_PAYLOAD, len(anec["microcode"])),
            weights=PayloadRef.from_bytes(anec["weights"]),
            td_size=anec["td_size"],
            td_count=anec["td_count"],
            io=anec["io"],
            tiles=anec["tiles"],
            toolchain=f"anecc ({sample.name})",
        )
        assert meta == parse_ane_metadata(output)
        assert (meta.td_size, meta.td_count) == (anec["td_size"], anec["td_count"])
        assert meta.microcode_len == len(anec["microcode"])
        assert meta.weights_len == len(anec["weights"])
        assert meta.tiles == anec["tiles"] and meta.io == anec["io"]
        payloads = read_ane_payloads(output)
        assert payloads.microcode == anec["microcode"]
        assert payloads.weights == anec["weights"]
        report = verify_container(output)
        assert report.ok, report.summary()
        chain = walk_chain(payloads.microcode, meta.td_size)
        assert chain.td_count == anec["td_count"]
        assert f"{chain.td_count} descriptor(s)" in report.summary()


# --- robustness ------------------------------------------------------------------------------


def _container_bytes() -> bytes:
    props = kernel_props(
        **{
            "ane.weights.b64": b64(WEIGHTS[:300]),
            # The graph's y [1, 4] and x [1, 4], in anecc's slots.
            "ane.io": '{"4":{"role":"output","n":1,"c":1,"h":1,"w":4,"plane_stride":64,'
            '"row_stride":64},"5":{"role":"input","n":1,"c":1,"h":1,"w":4,"plane_stride":64,'
            '"row_stride":64}}',
            "ane.tiles": '{"0":16384}',
            "author": "me",
        }
    )
    return bytes(even(make_model(props)).SerializeToString())


CONTAINER = _container_bytes()


def _only_ane_errors(call: Callable[[], object]) -> None:
    try:
        call()
    except AneError:
        pass
    except Exception as exc:  # a non-AneError escaping is the failure under test
        pytest.fail(f"{type(exc).__name__} escaped: {exc}")


@given(st.binary(max_size=512))
@settings(max_examples=300, deadline=None)
def test_random_bytes_raise_only_ane_errors(data: bytes) -> None:
    _only_ane_errors(lambda: parse_ane_metadata(data))
    _only_ane_errors(lambda: read_ane_payloads(data))
    assert isinstance(verify_container(data), VerifyReport)


FIELD_BOUNDARIES = {0} | {field.end for field in pw.iter_fields(CONTAINER)}


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_truncated_and_mutated_containers_raise_only_ane_errors(data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(CONTAINER)))
    truncated = CONTAINER[:cut]
    _only_ane_errors(lambda: parse_ane_metadata(truncated))
    # A cut between two top-level fields leaves a shorter valid message (e.g. without the last,
    # optional digest entry); a cut inside a field never parses.
    if cut not in FIELD_BOUNDARIES:
        with pytest.raises(AneError):
            parse_ane_metadata(truncated)
    mutated = bytearray(CONTAINER)
    for _ in range(data.draw(st.integers(1, 4))):
        mutated[data.draw(st.integers(0, len(CONTAINER) - 1))] = data.draw(st.integers(0, 255))
    _only_ane_errors(lambda: parse_ane_metadata(bytes(mutated)))
    _only_ane_errors(lambda: read_ane_payloads(bytes(mutated)))
    report = verify_container(bytes(mutated), strict=False)
    if report.ok:
        # What verify passes, every reader accepts, and the lengths it states are the real ones.
        meta = parse_ane_metadata(bytes(mutated))
        payloads = read_ane_payloads(bytes(mutated))
        assert meta.microcode_len == len(payloads.microcode)
        assert meta.weights_len == len(payloads.weights)
    else:
        # Every failure says what is wrong, and the summary shows it.
        assert all(check.detail for check in report.failures)
        assert all(f"FAIL {check.name}" in report.summary() for check in report.failures)


def test_the_unmutated_container_is_valid() -> None:
    meta = parse_ane_metadata(CONTAINER)
    assert meta.weights_len == 300 and meta.tiles == {0: 16384}
    assert verify_container(CONTAINER, strict=False).ok


def test_writes_through_a_temp_file_beside_the_output(tmp_path: Path) -> None:
    source = save(make_model(), tmp_path / "m.onnx")
    seen: list[str] = []

    def spy(done: int, total: int) -> None:
        seen.extend(leftovers(tmp_path))

    embed(source, tmp_path / "out.onnx", progress=spy)
    assert seen and all(name.startswith(".out.onnx.") for name in seen)
    assert leftovers(tmp_path) == []


@given(
    data=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 500), max_size=8),
    wrap=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_decoding_in_pieces_matches_decoding_whole(
    data: bytes, cuts: list[int], wrap: bool
) -> None:
    text = base64.b64encode(data)
    if wrap:
        text = b"\n".join(text[i : i + 7] for i in range(0, len(text), 7))
    bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    decoder = Base64Decoder(0, "ane.weights.b64")
    pieces = [decoder.feed(text[a:b]) for a, b in itertools.pairwise(bounds)]
    assert b"".join(pieces) + decoder.finish() == data
    # Data after the padding is ignored (the first '=' ends decoding), however it is cut.
    if text.endswith(b"="):
        more = text + b"QUJD"
        decoder = Base64Decoder(0, "ane.weights.b64")
        pieces = [decoder.feed(more[a:b]) for a, b in itertools.pairwise([*bounds, len(more)])]
        assert b"".join(pieces) + decoder.finish() == data


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_the_chosen_base64_encoder_matches_binascii(data: bytes) -> None:
    assert bytes(writer._b64encoder()(data)) == base64.b64encode(data)


def test_embed_falls_back_to_binascii_without_openssl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctypes

    def no_library(name: str, *args: Any, **kwargs: Any) -> Any:
        raise OSError(f"{name}: not here")

    writer._b64encoder.cache_clear()
    monkeypatch.setattr(ctypes, "CDLL", no_library)
    try:
        assert writer._b64encoder() is writer._binascii_b64encode
        source = save(make_model(), tmp_path / "m.onnx")
        embed(source, tmp_path / "out.onnx")
        assert read_ane_payloads(tmp_path / "out.onnx").weights == WEIGHTS
        assert verify_container(tmp_path / "out.onnx").ok
    finally:
        writer._b64encoder.cache_clear()
