#!/usr/bin/env python3
"""The example project's compiler: SYNTHETIC. It writes an .anec file that is NOT real ANE code.

    example_compiler.py SOURCE.onnx OUT_DIR [--fail MESSAGE]

It stands in for a real ANE compiler (anecc) so the example project runs the whole pipeline:
source ONNX -> compiler -> container -> deploy -> check. From the source graph it takes what a
real compiler would have to get right for a program to be run and checked: one tensor slot per
graph output and input, in order, with the graph's shapes (NCHW, leading 1s added) and the
engine's strides. The descriptor chain and the weights are deterministic noise derived from the
source's bytes: structurally valid, meaningless to an engine. (The simulator computes a
program's outputs from the container's graph, so the numbers still match the source.)

It uses the standard library only, and none of ane_build on purpose: like a real compiler it is
independent of the tools that check its output, and it starts in a few milliseconds.
``--fail`` makes it print MESSAGE and exit 1, for trying out what a broken compiler does.
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import sys
from pathlib import Path

MARK = "SYNTHETIC example compiler output: NOT real ANE code"
PAGE = 16 * 1024  # tile unit
HEADER = struct.Struct("<QIIQQII32I192Q")  # size, td_size, td_count, tsk_size, krn_size,
#   src_count, dst_count, tiles[32] (16 KiB units), nchw[32][6] (N, C, H, W, plane, row)
PAYLOAD_OFFSET = 0x1000
TD_SIZE = 0x274
TD_ALIGN = 0x100
EON = 1 << 25  # end-of-network bit of a descriptor's word 0
FIRST_OUTPUT_SLOT = 4  # slot 0 command buffer, 1 weights, 2-3 scratch; outputs, then inputs
WEIGHTS = 4096
FLOAT_TYPES = {1: "float", 10: "float16"}


class CompileError(Exception):
    """Why the source cannot be compiled."""


# --- reading the graph (protobuf wire format) -------------------------------------------------


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise CompileError("truncated protobuf varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of a message; LEN values as bytes, others as integers."""
    out: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            out.append((number, value))
        elif wire == 2:
            size, at = _varint(data, at)
            out.append((number, data[at : at + size]))
            at += size
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise CompileError(f"unsupported protobuf wire type {wire}")
    return out


def _one(data: bytes, number: int) -> bytes:
    for field, value in _fields(data):
        if field == number and isinstance(value, bytes):
            return value
    return b""


def _tensor(info: bytes) -> tuple[str, int, list[int]]:
    """(name, element type, dims) of a ValueInfoProto."""
    name = _one(info, 1).decode()
    tensor = _one(_one(info, 2), 1)
    elem = next((v for f, v in _fields(tensor) if f == 1 and isinstance(v, int)), 0)
    dims = []
    for field, dim in _fields(_one(tensor, 2)):
        if field != 1 or not isinstance(dim, bytes):
            continue
        value = next((v for f, v in _fields(dim) if f == 1 and isinstance(v, int)), None)
        if value is None or value <= 0:
            raise CompileError(f"tensor {name!r}: every dimension must be a fixed number")
        dims.append(value)
    return name, elem, dims


def read_graph(source: Path) -> tuple[list[tuple[str, list[int]]], list[tuple[str, list[int]]]]:
    """The graph's (inputs, outputs) as (name, NCHW dims); initializers are not inputs."""
    graph = _one(source.read_bytes(), 7)
    fields = _fields(graph)
    constants = {_one(v, 8).decode() for f, v in fields if f == 5 and isinstance(v, bytes)}
    sides: dict[int, list[tuple[str, list[int]]]] = {11: [], 12: []}
    for number, value in fields:
        if number not in sides or not isinstance(value, bytes):
            continue
        name, elem, dims = _tensor(value)
        if name in constants:
            continue
        if elem not in FLOAT_TYPES:
            raise CompileError(f"tensor {name!r}: element type {elem} is not float16 or float")
        if not 1 <= len(dims) <= 4:
            raise CompileError(f"tensor {name!r}: rank {len(dims)}; the engine takes 1 to 4")
        sides[number].append((name, [1] * (4 - len(dims)) + dims))
    if not sides[11] or not sides[12]:
        raise CompileError("the graph needs at least one input and one output")
    return sides[11], sides[12]


# --- writing the program ----------------------------------------------------------------------


def _round(value: int, to: int) -> int:
    return -(-value // to) * to


def _noise(seed: bytes, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "little")).digest()
        counter += 1
    return bytes(out[:size])


def _chain(count: int, seed: bytes) -> bytes:
    """``count`` descriptors of TD_SIZE bytes, each after the first aligned to TD_ALIGN."""
    offsets = [0]
    for _ in range(count - 1):
        offsets.append(_round(offsets[-1] + TD_SIZE, TD_ALIGN))
    code = bytearray(offsets[-1] + TD_SIZE)
    for index, offset in enumerate(offsets):
        code[offset : offset + TD_SIZE] = _noise(seed + bytes([index]), TD_SIZE)
        last = index == count - 1
        word0 = index | (EON if last else 0)
        word1 = 0 if last else (TD_SIZE // 4 - 1) << 16
        struct.pack_into("<II", code, offset, word0, word1)
        struct.pack_into("<I", code, offset + 28, 0 if last else offsets[index + 1])
    return bytes(code)


def _slot(dims: list[int]) -> tuple[int, tuple[int, ...]]:
    """(tile units, (N, C, H, W, plane stride, row stride)) of a tensor in the default layout."""
    n, c, h, w = dims
    row = _round(w * 2, 64)
    plane = _round(row * h, 64)
    return _round(n * c * plane, PAGE) // PAGE, (n, c, h, w, plane, row)


def compile_model(source: Path, out: Path) -> Path:
    """Write ``out/<source stem>.anec`` for ``source``; return its path."""
    inputs, outputs = read_graph(source)
    seed = hashlib.sha256(source.read_bytes()).digest()
    nodes = sum(1 for f, _ in _fields(_one(source.read_bytes(), 7)) if f == 1)
    count = max(1, min(nodes, 4))  # one descriptor per node, a few at most
    code = _chain(count, seed)
    weights = _noise(seed + b"weights", WEIGHTS)
    payload = code + bytes(_round(len(code), 16) - len(code)) + weights
    tiles = [0] * 32
    nchw = [(0, 0, 0, 0, 0, 0)] * 32
    tiles[0] = _round(len(payload) + 1, PAGE) // PAGE
    tensors = [dims for _, dims in outputs] + [dims for _, dims in inputs]
    if FIRST_OUTPUT_SLOT + len(tensors) > 32:
        raise CompileError(f"{len(tensors)} tensors do not fit the 28 tensor slots")
    for slot, dims in enumerate(tensors, start=FIRST_OUTPUT_SLOT):
        tiles[slot], nchw[slot] = _slot(dims)
    header = HEADER.pack(
        len(payload),
        TD_SIZE,
        count,
        len(code),
        len(weights),
        len(inputs),
        len(outputs),
        *tiles,
        *(value for row in nchw for value in row),
    )
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{source.stem}.anec"
    target.write_bytes(header + bytes(PAYLOAD_OFFSET - len(header)) + payload)
    (out / "SYNTHETIC.txt").write_text(f"{MARK}\nsource: {source.name}\n")
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit 0 on success, 1 when the source cannot be compiled."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="source ONNX model")
    parser.add_argument("out", type=Path, help="folder to write the .anec into")
    parser.add_argument("--fail", metavar="MESSAGE", help="print MESSAGE and exit 1 (testing)")
    args = parser.parse_args(argv)
    if args.fail is not None:
        print(f"example compiler: {args.fail}", file=sys.stderr)
        return 1
    try:
        target = compile_model(args.source, args.out)
    except (CompileError, OSError) as exc:
        print(f"example compiler: {args.source}: {exc}", file=sys.stderr)
        return 1
    print(f"example compiler: wrote {target} ({MARK})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
