"""Shared by the benchmarks: large ONNX models and containers built in code, a tiny microcode."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

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


MIB = 1 << 20
IO_SHAPE = (1, 64, 1, 1)


def big_container(folder: Path, size: int, *, io: bool = False) -> Path:
    """``folder/model_ane.onnx``: a tiny graph, one descriptor, ``size`` bytes of random weights.

    The weights are written to ``folder/weights.bin`` first (in 64 MiB pieces) and streamed into
    the container by the package's writer. With ``io`` the graph is a Relu on one 1x64x1x1
    fp16 tensor and the container maps it to slots 5 (input) and 4 (output), so it can be run.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from ane_build.container import embed_ane_metadata
    from ane_build.formats.payload import IoSlot, PayloadRef

    if io:
        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "relu",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT16, list(IO_SHAPE))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT16, list(IO_SHAPE))],
        )
        source = folder / "source.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
        layout = {"n": 1, "c": 64, "h": 1, "w": 1, "plane_stride": 64, "row_stride": 64}
        slots = {
            4: IoSlot(role="output", name="y", **layout),
            5: IoSlot(role="input", name="x", **layout),
        }
        extra = {"io": slots, "tiles": {0: 16384, 4: 16384, 5: 16384}}
    else:
        source, extra = big_model(folder / "source.onnx", 4096), {}
    weights = folder / "weights.bin"
    rng = np.random.default_rng(1)
    with open(weights, "wb") as f:
        for start in range(0, size, 64 * MIB):
            f.write(rng.bytes(min(64 * MIB, size - start)))
    output = folder / "model_ane.onnx"
    embed_ane_metadata(
        source,
        output,
        microcode=PayloadRef.from_bytes(microcode()),
        td_size=TD_SIZE,
        td_count=1,
        weights=PayloadRef.from_file(weights),
        toolchain="bench",
        **extra,
    )
    return output


def proc_status(*names: str) -> dict[str, int]:
    """Fields of /proc/self/status in bytes (``VmHWM``: this process's peak RSS, ...).

    Not ``ru_maxrss``: Linux carries that over from the parent through fork and exec.
    """
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in names:
                fields[name] = int(value.split()[0]) * 1024
    return fields


def run_child(script: str, *args: str) -> dict[str, Any]:
    """Run ``script`` with ``args`` in a fresh interpreter; the JSON object it prints."""
    out = subprocess.run(
        [sys.executable, script, *args], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result
