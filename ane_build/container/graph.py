"""The model inside a container, and its graph's inputs and outputs.

`model_without_metadata` gives every top-level field but the metadata entries: what onnx and
onnxruntime need to load the graph of a container without reading its payloads (which can be
most of a multi-GB file). `graph_io` reads the graph's declared inputs and outputs. Neither runs
the model or opens external data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import AneFormatError, InputError
from ..formats import protowire as pw
from .scan import ModelSource, open_model, scan_container

if TYPE_CHECKING:
    import onnx


def model_without_metadata(model: ModelSource) -> bytes:
    """The serialized ModelProto of ``model`` with its ``metadata_props`` left out.

    Raises:
        ModelFileError: The file cannot be opened or read.
        WireFormatError: The protobuf is truncated or malformed.
    """
    with open_model(model) as (stream, label):
        scan = scan_container(stream, label)
        kept = [f for f in scan.fields if f.number != pw.MODEL_METADATA_PROPS]
        return b"".join(pw.read_range(stream, f.offset, f.end - f.offset) for f in kept)


# Element types a check can feed and compare. Strings, complex numbers and the narrow formats
# (bfloat16, float8, int4) have no faithful fp16 image on the engine.
SUPPORTED_DTYPES = frozenset(
    np.dtype(name)
    for name in (
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
    )
)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    Attributes:
        name: The tensor's name in the graph.
        shape: Its dimensions. Input shapes are always fixed; an output dimension the graph
            leaves open (symbolic and not resolved, or unknown) is ``-1``.
        dtype: The numpy dtype of its ONNX element type.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]


def load_graph(model: Path | onnx.ModelProto) -> onnx.ModelProto:
    """The model itself, parsed from ``model`` when it is a path.

    Metadata entries are not read (a container's payloads can be most of the file), nor is
    external data.

    Raises:
        ModelFileError: The file cannot be opened or read.
        AneFormatError: The file is not an ONNX model.
    """
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    if isinstance(model, onnx.ModelProto):
        return model
    try:
        parsed: onnx.ModelProto = onnx.ModelProto.FromString(model_without_metadata(model))
    except DecodeError as exc:
        raise AneFormatError(f"{model}: not an ONNX model: {exc}") from exc
    return parsed


def _dtype(name: str, elem_type: int, role: str) -> np.dtype[Any]:
    import onnx

    try:
        type_name = onnx.TensorProto.DataType.Name(elem_type)
    except ValueError as exc:
        raise InputError(f"{role} {name!r}: element type {elem_type} is not an ONNX type") from exc
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{role} {name!r}: element type {type_name} is not supported") from exc
    if dtype not in SUPPORTED_DTYPES:
        raise InputError(
            f"{role} {name!r}: element type {type_name} is not supported; a check takes "
            "float16/32/64, signed and unsigned integers and bool"
        )
    return dtype


def _shape(name: str, shape: Any, role: str, dims: Mapping[str, int]) -> tuple[int, ...]:
    """The fixed shape of a tensor; open dimensions raise for inputs and are -1 for outputs."""
    out: list[int] = []
    for axis, dim in enumerate(shape.dim):
        kind = dim.WhichOneof("value")
        if kind == "dim_value":
            out.append(int(dim.dim_value))
        elif kind == "dim_param" and dim.dim_param in dims:
            out.append(int(dims[dim.dim_param]))
        elif role == "output":
            out.append(-1)
        elif kind == "dim_param":
            raise InputError(
                f"input {name!r}: dimension {axis} is symbolic ({dim.dim_param!r}); give it a "
                f"value, e.g. dims={{{dim.dim_param!r}: 1}}"
            )
        else:
            raise InputError(f"input {name!r}: dimension {axis} has no size in the graph")
    return tuple(out)


def _spec(value: Any, role: str, dims: Mapping[str, int]) -> TensorSpec:
    if value.type.WhichOneof("value") != "tensor_type":
        raise InputError(f"{role} {value.name!r} is not a tensor; a check compares tensors")
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        if role == "input":
            raise InputError(f"input {value.name!r}: the graph gives it no shape (not even rank)")
        shape: tuple[int, ...] = ()
    else:
        shape = _shape(value.name, tensor.shape, role, dims)
    return TensorSpec(value.name, shape, _dtype(value.name, tensor.elem_type, role))


def graph_io(
    model: Path | onnx.ModelProto, *, dims: Mapping[str, int] | None = None
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs (initializers excluded) and outputs, in graph order.

    Args:
        model: An ONNX file or a parsed model.
        dims: Values for symbolic dimensions, by name (e.g. ``{"batch": 1}``).

    Returns:
        ``(inputs, outputs)``. An output without a shape in the graph gets ``()``.

    Raises:
        InputError: An input dimension is symbolic and not in ``dims``, or has no size; a
            tensor's element type is not one a check supports; a value in ``dims`` is negative.
        ModelFileError: The file cannot be read.
        AneFormatError: The file is not an ONNX model.
    """
    resolved = dict(dims or {})
    bad = {key: value for key, value in resolved.items() if int(value) < 0}
    if bad:
        raise InputError(f"dims: negative sizes are not dimensions: {bad}")
    graph = load_graph(model).graph
    # Models from before IR 4 list their initializers among the inputs too.
    initialized = {tensor.name for tensor in graph.initializer}
    initialized.update(tensor.values.name for tensor in graph.sparse_initializer)
    inputs = [_spec(v, "input", resolved) for v in graph.input if v.name not in initialized]
    outputs = [_spec(v, "output", resolved) for v in graph.output]
    return inputs, outputs
