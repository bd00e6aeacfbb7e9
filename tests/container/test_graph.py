"""tensors: graph inputs and outputs as a check sees them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ane_build.container.graph import TensorSpec, graph_io
from ane_build.errors import AneFormatError, InputError, ModelFileError
from tests.helpers import onnx_model, save_model


def relu(shape: list[int | str], elem: int = TensorProto.FLOAT) -> onnx.ModelProto:
    return onnx_model(
        [helper.make_node("Relu", ["x"], ["y"])], {"x": shape}, {"y": shape}, elem=elem
    )


def test_inputs_and_outputs_in_graph_order_with_numpy_dtypes(tmp_path: Path) -> None:
    nodes = [helper.make_node("Add", ["b", "a"], ["s"]), helper.make_node("Neg", ["s"], ["n"])]
    proto = onnx_model(nodes, {"b": [1, 3], "a": [1, 3]}, {"n": [1, 3], "s": [1, 3]})
    inputs, outputs = graph_io(save_model(tmp_path / "m.onnx", proto))
    f32 = np.dtype(np.float32)
    assert inputs == [TensorSpec("b", (1, 3), f32), TensorSpec("a", (1, 3), f32)]
    assert outputs == [TensorSpec("n", (1, 3), f32), TensorSpec("s", (1, 3), f32)]


def test_initializers_listed_as_inputs_are_not_inputs() -> None:
    proto = onnx_model(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        {"x": [2], "w": [2]},  # IR < 4 style: the weight is a graph input too
        {"y": [2]},
        initializers={"w": np.ones(2, np.float32)},
    )
    inputs, _ = graph_io(proto)
    assert [spec.name for spec in inputs] == ["x"]


def test_a_symbolic_input_dimension_is_an_error_unless_given() -> None:
    proto = relu(["batch", 4])
    with pytest.raises(InputError, match=r"input 'x': dimension 0 is symbolic \('batch'\)"):
        graph_io(proto)
    inputs, outputs = graph_io(proto, dims={"batch": 1})
    assert inputs[0].shape == (1, 4) and outputs[0].shape == (1, 4)
    with pytest.raises(InputError, match="dims: negative sizes"):
        graph_io(proto, dims={"batch": -1})


def test_an_unknown_input_dimension_is_an_error_naming_the_input() -> None:
    proto = relu([2, 4])
    proto.graph.input[0].type.tensor_type.shape.dim[1].Clear()
    with pytest.raises(InputError, match="input 'x': dimension 1 has no size"):
        graph_io(proto)
    proto.graph.input[0].type.tensor_type.ClearField("shape")
    with pytest.raises(InputError, match="input 'x': the graph gives it no shape"):
        graph_io(proto)


def test_open_output_dimensions_are_minus_one() -> None:
    proto = relu([2, 4])
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "n"
    assert graph_io(proto)[1][0].shape == (-1, 4)
    proto.graph.output[0].type.tensor_type.ClearField("shape")
    assert graph_io(proto)[1][0].shape == ()


@pytest.mark.parametrize(
    ("elem", "name"), [(TensorProto.STRING, "STRING"), (TensorProto.BFLOAT16, "BFLOAT16")]
)
def test_unsupported_element_types_are_errors_naming_the_tensor(elem: int, name: str) -> None:
    with pytest.raises(InputError, match=f"input 'x': element type {name} is not supported"):
        graph_io(relu([2], elem))


def test_a_tensor_of_another_kind_is_an_error() -> None:
    proto = relu([2])
    proto.graph.input[0].type.CopyFrom(
        helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
    )
    with pytest.raises(InputError, match="input 'x' is not a tensor"):
        graph_io(proto)


def test_unreadable_models_are_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=f"{tmp_path / 'gone.onnx'}: cannot open"):
        graph_io(tmp_path / "gone.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x0a\xff\xff\xff\xff")
    with pytest.raises(AneFormatError, match=f"{tmp_path / 'junk.onnx'}: not a valid ONNX"):
        graph_io(tmp_path / "junk.onnx")
