"""Protobuf wire scanning: agreement with onnx's serializer, offsets, and robustness to garbage."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from ane_build.errors import AneError, WireFormatError
from ane_build.formats import protowire as pw


def _model_bytes() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(1, 4), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["t"]), helper.make_node("Relu", ["t"], ["y"])],
        "g",
        [x],
        [y],
        [w],
    )
    model = helper.make_model(graph, producer_name="test")
    helper.set_model_props(model, {"author": "someone", "ane.td_size": "628"})
    return bytes(model.SerializeToString())


@given(st.integers(min_value=0, max_value=2**64 - 1))
@settings(max_examples=300, deadline=None)
def test_varint_round_trip(value: int) -> None:
    encoded = pw.encode_varint(value)
    assert pw.decode_varint(encoded, 0, len(encoded)) == (value, len(encoded))
    assert len(encoded) <= pw.MAX_VARINT_BYTES


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02")],
)
def test_varint_known_encodings(value: int, encoded: bytes) -> None:
    assert pw.encode_varint(value) == encoded


def test_negative_varint_is_refused() -> None:
    with pytest.raises(ValueError):
        pw.encode_varint(-1)


def test_truncated_and_overlong_varints() -> None:
    with pytest.raises(WireFormatError, match="truncated varint at byte 2"):
        pw.decode_varint(b"\x00\x00\x80\x80", 2, 4)
    with pytest.raises(WireFormatError, match="longer than 10 bytes"):
        pw.decode_varint(b"\xff" * 11, 0, 11)


def test_fields_match_the_onnx_serializer() -> None:
    data = _model_bytes()
    model = onnx.ModelProto.FromString(data)
    numbers = [f.number for f in pw.iter_fields(data)]
    assert numbers == sorted(numbers)
    assert set(numbers) == {desc.number for desc, _ in model.ListFields()}
    graph = next(f for f in pw.iter_fields(data) if f.number == pw.MODEL_GRAPH)
    assert data[graph.value_offset : graph.end] == model.graph.SerializeToString()
    ir = next(f for f in pw.iter_fields(data) if f.number == pw.MODEL_IR_VERSION)
    assert ir.varint == model.ir_version


def test_file_scanner_agrees_with_the_buffer_scanner() -> None:
    data = _model_bytes()
    assert list(pw.iter_file_fields(io.BytesIO(data))) == list(pw.iter_fields(data))
    assert list(pw.iter_file_fields(io.BytesIO(data), len(data))) == list(pw.iter_fields(data))


def test_nested_entries_are_scanned_with_stream_offsets() -> None:
    data = _model_bytes()
    stream = io.BytesIO(data)
    entries = [f for f in pw.iter_fields(data) if f.number == pw.MODEL_METADATA_PROPS]
    found = {}
    for entry in entries:
        parts = {f.number: f for f in pw.iter_stream_fields(stream, entry.value_offset, entry.end)}
        key = pw.read_range(stream, parts[1].value_offset, parts[1].length)
        value = pw.read_range(stream, parts[2].value_offset, parts[2].length)
        found[key] = value
    assert found == {b"author": b"someone", b"ane.td_size": b"628"}


def test_entry_head_and_value_are_what_onnx_reads() -> None:
    body = pw.encode_entry_head(b"k" * 200, 300) + b"v" * 300
    entry = onnx.StringStringEntryProto.FromString(body)
    assert (entry.key, entry.value) == ("k" * 200, "v" * 300)
    field = pw.encode_len_header(pw.MODEL_METADATA_PROPS, len(body)) + body
    model = onnx.ModelProto.FromString(field)
    assert model.metadata_props[0].key == "k" * 200


def test_file_errors_name_the_file_offset() -> None:
    data = _model_bytes()
    # A tag whose varint never ends, after every valid field.
    broken = data + b"\x80"
    with pytest.raises(WireFormatError, match=f"truncated field tag at byte {len(data)}"):
        list(pw.iter_file_fields(io.BytesIO(broken)))
    # A length prefix that runs past the end of the file.
    broken = data + pw.encode_len_header(pw.MODEL_METADATA_PROPS, 1000) + b"xx"
    with pytest.raises(WireFormatError, match=f"at byte {len(data)} declares 1000 bytes"):
        list(pw.iter_file_fields(io.BytesIO(broken)))
    # A length varint cut by the end of the file.
    broken = data + bytes([pw.MODEL_METADATA_PROPS << 3 | pw.WIRE_LEN, 0x80])
    with pytest.raises(WireFormatError, match=f"field 14 length at byte {len(data) + 1}"):
        list(pw.iter_file_fields(io.BytesIO(broken)))


def test_unsupported_wire_types_and_field_zero() -> None:
    with pytest.raises(WireFormatError, match="unsupported wire type 3"):
        list(pw.iter_fields(bytes([1 << 3 | 3])))
    with pytest.raises(WireFormatError, match="invalid field number 0"):
        list(pw.iter_fields(b"\x00\x00"))


def test_read_range_short_read() -> None:
    with pytest.raises(WireFormatError, match="expected 10 bytes at byte 2"):
        pw.read_range(io.BytesIO(b"abcd"), 2, 10)


def test_fixed_width_fields() -> None:
    data = bytes([1 << 3 | pw.WIRE_FIXED64]) + b"\x01" * 8 + bytes([2 << 3 | pw.WIRE_FIXED32])
    data += b"\x02" * 4
    fields = list(pw.iter_fields(data))
    assert [(f.number, f.length, f.value_offset) for f in fields] == [(1, 8, 1), (2, 4, 10)]
    with pytest.raises(WireFormatError):
        list(pw.iter_fields(data[:-1]))


@given(st.binary(max_size=256))
@settings(max_examples=300, deadline=None)
def test_random_bytes_only_raise_wire_format_errors(data: bytes) -> None:
    try:
        memory = list(pw.iter_fields(data))
    except WireFormatError:
        memory = None
    try:
        streamed = list(pw.iter_file_fields(io.BytesIO(data)))
    except WireFormatError:
        streamed = None
    # Both scanners accept and reject the same inputs, with the same fields.
    assert memory == streamed
    if memory is not None:
        assert sum(f.end - f.offset for f in memory) == len(data)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_truncations_of_a_real_model(data: st.DataObject) -> None:
    blob = _model_bytes()
    cut = data.draw(st.integers(min_value=0, max_value=len(blob)))
    boundaries = {0} | {f.end for f in pw.iter_fields(blob)}
    try:
        fields = list(pw.iter_file_fields(io.BytesIO(blob[:cut])))
    except AneError:
        assert cut not in boundaries
    else:
        assert cut in boundaries
        assert all(f.end <= cut for f in fields)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_block_size_does_not_change_what_the_stream_scanner_sees(data: st.DataObject) -> None:
    blob = _model_bytes()
    block = data.draw(st.integers(min_value=1, max_value=len(blob) + 10))
    cut = data.draw(st.integers(min_value=0, max_value=len(blob)))
    try:
        expected: list[pw.WireField] | str = list(pw.iter_fields(blob, 0, cut))
    except WireFormatError:
        expected = "error"
    try:
        got: list[pw.WireField] | str = list(
            pw.iter_stream_fields(io.BytesIO(blob), 0, cut, block=block)
        )
    except WireFormatError:
        got = "error"
    assert got == expected
