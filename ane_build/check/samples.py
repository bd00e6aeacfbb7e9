"""Reference graphs for the public ``.anec`` samples, built in code from their names and shapes.

The samples (``ANE_SAMPLES_DIR``, e.g. ``../shared/anec-samples``: relu, sigmoid, mul, sum,
concat, conv, gemm) are real compiler output whose operation is known from the file name and the
tensor shapes in the header. Where that fixes the computation (relu, sigmoid, mul, sum, concat),
the graph is a numeric reference; conv and gemm carry weights we cannot read back, so their
graphs give the right inputs and outputs for submitting and shape checks only, and say so. This
module builds graphs; it must not run them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    import onnx

SAMPLES_ENV = "ANE_SAMPLES_DIR"
_OPSET = 17


@dataclass(frozen=True)
class SampleGraph:
    """How to build a sample's graph, and whether its numbers can be checked."""

    build: Callable[[], onnx.ModelProto]
    numeric: bool
    note: str = ""


def _graph(
    nodes: list[onnx.NodeProto],
    inputs: Mapping[str, tuple[int, ...]],
    outputs: Mapping[str, tuple[int, ...]],
    initializers: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "anec_sample",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT16, list(s)) for n, s in inputs.items()],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT16, list(s))
            for n, s in outputs.items()
        ],
        [numpy_helper.from_array(v, n) for n, v in (initializers or {}).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])


def _unary(op: str, shape: tuple[int, ...]) -> Callable[[], onnx.ModelProto]:
    def build() -> onnx.ModelProto:
        from onnx import helper

        return _graph([helper.make_node(op, ["x"], ["y"])], {"x": shape}, {"y": shape})

    return build


def _binary(op: str, shape: tuple[int, ...]) -> Callable[[], onnx.ModelProto]:
    def build() -> onnx.ModelProto:
        from onnx import helper

        node = helper.make_node(op, ["a", "b"], ["y"])
        return _graph([node], {"a": shape, "b": shape}, {"y": shape})

    return build


def _concat() -> onnx.ModelProto:
    from onnx import helper

    node = helper.make_node("Concat", ["a", "b"], ["y"], axis=1)
    inputs = {"a": (1, 16, 1, 1), "b": (1, 16384, 1, 1)}
    return _graph([node], inputs, {"y": (1, 16400, 1, 1)})


def _weighted(op: str, channels: int) -> Callable[[], onnx.ModelProto]:
    """A layer of the sample's shape; its weights are placeholders (the real ones are unknown)."""

    def build() -> onnx.ModelProto:
        from onnx import helper

        w = np.zeros((channels, channels, 1, 1), np.float16)
        node = helper.make_node(op, ["x", "w"], ["y"])
        shape = (1, channels, 1, 1)
        return _graph([node], {"x": shape}, {"y": shape}, {"w": w})

    return build


SAMPLES: dict[str, SampleGraph] = {
    "relu.ane": SampleGraph(_unary("Relu", (1, 1, 1, 77)), True),
    "sigmoid.ane": SampleGraph(_unary("Sigmoid", (1, 1, 1, 77)), True),
    "mul.ane": SampleGraph(_binary("Mul", (1, 64, 1, 1)), True),
    "mul_macos14.ane": SampleGraph(_binary("Mul", (1, 64, 1, 1)), True),
    "sum.ane": SampleGraph(_binary("Add", (1, 64, 1, 1)), True),
    "concat.ane": SampleGraph(_concat, True),
    "conv.ane": SampleGraph(
        _weighted("Conv", 3), False, "1x1 convolution with unknown weights: shape only"
    ),
    "gemm.ane": SampleGraph(
        _weighted("Conv", 512), False, "512x512 product with unknown weights: shape only"
    ),
}


def samples_dir(default: Path | None = None) -> Path | None:
    """The samples folder: ``ANE_SAMPLES_DIR``, else ``default``; None when neither holds any."""
    env = os.environ.get(SAMPLES_ENV)
    folder = Path(env) if env else default
    if folder is None or not folder.is_dir() or not any(folder.glob("*.ane")):
        return None
    return folder


def write_sample_graph(name: str, path: Path) -> SampleGraph:
    """Write the graph of sample ``name`` (a file name such as ``relu.ane``) to ``path``.

    Raises:
        InputError: No graph is known for ``name``.
    """
    import onnx

    sample = SAMPLES.get(name)
    if sample is None:
        raise InputError(f"no reference graph for {name!r}; known: {', '.join(sorted(SAMPLES))}")
    onnx.save(sample.build(), os.fspath(path))
    return sample
