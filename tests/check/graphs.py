"""Small ONNX graphs for the check tests, built with onnx.helper."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[int | str]],
    outputs: Mapping[str, Sequence[int | str] | None],
    *,
    initializers: Mapping[str, np.ndarray] | None = None,
    elem: int = TensorProto.FLOAT,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        "check_test",
        [helper.make_tensor_value_info(n, elem, list(s)) for n, s in inputs.items()],
        [
            helper.make_tensor_value_info(n, elem, None if s is None else list(s))
            for n, s in outputs.items()
        ],
        initializer=[numpy_helper.from_array(v, n) for n, v in (initializers or {}).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def save(path: Path, proto: onnx.ModelProto) -> Path:
    onnx.save(proto, str(path))
    return path


def unary(op: str, shape: Sequence[int] = (1, 4)) -> onnx.ModelProto:
    return model([helper.make_node(op, ["x"], ["y"])], {"x": shape}, {"y": shape})


def three_outputs(shape: Sequence[int] = (1, 4, 8, 8)) -> onnx.ModelProto:
    """Outputs of three magnitudes: ``sig`` in (0, 1), ``lin`` = 300x + 1, ``tiny`` = 1e-4 x."""
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["sig"]),
        helper.make_node("Mul", ["x", "k300"], ["scaled"]),
        helper.make_node("Add", ["scaled", "one"], ["lin"]),
        helper.make_node("Mul", ["x", "k_tiny"], ["tiny"]),
    ]
    consts = {
        "k300": np.array(300.0, np.float32),
        "one": np.array(1.0, np.float32),
        "k_tiny": np.array(1e-4, np.float32),
    }
    outs = {name: shape for name in ("sig", "lin", "tiny")}
    return model(nodes, {"x": shape}, outs, initializers=consts)
