"""Shared by the benchmarks: a large ONNX model built in code, and a one-descriptor microcode."""

from __future__ import annotations

import os
import struct
from pathlib import Path

TD_SIZE = 0x274


def microcode() -> bytes:
    """One descriptor with the end-of-network flag (structurally valid, not real ANE code)."""
    data = bytearray(TD_SIZE)
    struct.pack_into("<I", data, 0, 1 << 25 | 1 << 16)
    return bytes(data)


def big_model(path: Path, size: int, *, random: bool = False) -> Path:
    """An Add model whose float32 initializer holds ``size`` bytes, saved inside the protobuf."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = size // 4
    if random:
        weight = np.random.default_rng(0).integers(0, 2**31, n, dtype=np.int32).view(np.float32)
    else:
        weight = np.full(n, 0.5, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph)
    helper.set_model_props(model, {"author": "bench"})
    onnx.save_model(model, os.fspath(path))
    return path
