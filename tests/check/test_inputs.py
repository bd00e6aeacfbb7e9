"""inputs: test data folders, .npz/.npy files, random values, the fp16 image the engine reads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from onnx import numpy_helper

from ane_build.check.inputs import (
    conform_input,
    load_arrays,
    random_inputs,
    read_test_data,
    resolve_inputs,
    save_arrays,
    to_engine,
)
from ane_build.container.graph import TensorSpec
from ane_build.errors import InputError


def spec(name: str, shape: tuple[int, ...], dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, shape, np.dtype(dtype))


def write_pb(path: Path, value: np.ndarray, name: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(numpy_helper.from_array(value, name).SerializeToString())
    return path


def bits(values: np.ndarray) -> list[int]:
    return [int(b) for b in np.asarray(values, np.float16).reshape(-1).view(np.uint16)]


# --- ONNX test data folders ---------------------------------------------------------------------


def test_a_test_data_set_is_read_by_tensor_name(tmp_path: Path) -> None:
    folder = tmp_path / "test_data_set_0"
    b, a, out = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.int64), np.zeros(1)
    write_pb(folder / "input_0.pb", b, "b")
    write_pb(folder / "input_1.pb", a, "a")
    write_pb(folder / "output_0.pb", out, "y")
    inputs, outputs = read_test_data(folder)
    assert list(inputs) == ["b", "a"] and list(outputs) == ["y"]
    np.testing.assert_array_equal(inputs["b"], b)
    assert inputs["a"].dtype == np.int64
    np.testing.assert_array_equal(outputs["y"], out)


def test_unnamed_tensors_take_the_graph_name_at_their_position(tmp_path: Path) -> None:
    folder = tmp_path / "test_data_set_3"
    names = [f"in{k}" for k in range(11)]
    for k in range(11):  # input_10 sorts after input_9, not after input_1
        write_pb(folder / f"input_{k}.pb", np.full(2, k, np.float32))
    write_pb(folder / "output_0.pb", np.ones(1, np.float32))
    inputs, outputs = read_test_data(folder, inputs=names, outputs=["out"])
    assert list(inputs) == names
    assert [int(v[0]) for v in inputs.values()] == list(range(11))
    assert list(outputs) == ["out"]


def test_an_unnamed_tensor_without_a_graph_name_is_an_error(tmp_path: Path) -> None:
    path = write_pb(tmp_path / "input_1.pb", np.ones(2, np.float32))
    with pytest.raises(InputError, match=f"{path}: the tensor has no name .* no input 1"):
        read_test_data(tmp_path, inputs=["only"])


def test_a_model_folder_gives_its_first_test_data_set(tmp_path: Path) -> None:
    write_pb(tmp_path / "test_data_set_0" / "input_0.pb", np.ones(3, np.float32), "x")
    write_pb(tmp_path / "test_data_set_1" / "input_0.pb", np.zeros(3, np.float32), "x")
    (tmp_path / "model.onnx").write_bytes(b"")
    np.testing.assert_array_equal(read_test_data(tmp_path)[0]["x"], np.ones(3))


def test_a_folder_without_test_data_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(InputError, match=f"{tmp_path}: holds no input_K.pb"):
        read_test_data(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        read_test_data(tmp_path / "notes.txt")


def test_a_damaged_or_duplicate_tensor_file_is_an_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad" / "input_0.pb"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xff\xff")
    with pytest.raises(InputError, match=f"{bad}: not a TensorProto file"):
        read_test_data(bad.parent)
    write_pb(tmp_path / "dup" / "input_0.pb", np.ones(1, np.float32), "x")
    second = write_pb(tmp_path / "dup" / "input_1.pb", np.ones(1, np.float32), "x")
    with pytest.raises(InputError, match=f"{second}: a second input named 'x'"):
        read_test_data(tmp_path / "dup")


# --- .npz / .npy / .pb files ----------------------------------------------------------------------


def test_npz_round_trips_any_names_and_dtypes(tmp_path: Path) -> None:
    arrays = {
        "file": np.arange(4, dtype=np.float16).reshape(2, 2),
        "allow_pickle": np.array([True, False]),
        "a/b:c": np.array(7, np.int64),
        "x.npy": np.zeros((0, 3), np.float32),
    }
    path = tmp_path / "sub" / "data.npz"
    save_arrays(path, arrays)
    back = load_arrays(path)
    assert list(back) == list(arrays)
    for name, value in arrays.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape
        np.testing.assert_array_equal(back[name], value)
    assert os.listdir(path.parent) == ["data.npz"]  # no temp file left beside it
    with np.load(path) as plain:  # what numpy reads too
        np.testing.assert_array_equal(plain["file"], arrays["file"])


def test_objects_are_not_saved(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'o' holds Python objects"):
        save_arrays(tmp_path / "o.npz", {"o": np.array([{}], dtype=object)})
    assert not (tmp_path / "o.npz").exists()


def test_npy_and_pb_files_hold_one_array(tmp_path: Path) -> None:
    value = np.linspace(0, 1, 5, dtype=np.float32)
    np.save(tmp_path / "v.npy", value)
    assert list(load_arrays(tmp_path / "v.npy")) == ["v"]
    named = load_arrays(tmp_path / "v.npy", names=["x"])
    np.testing.assert_array_equal(named["x"], value)
    write_pb(tmp_path / "t.pb", value, "tensor_name")
    assert list(load_arrays(tmp_path / "t.pb", names=["x"])) == ["tensor_name"]
    write_pb(tmp_path / "u.pb", value)
    assert list(load_arrays(tmp_path / "u.pb", names=["x"])) == ["x"]


def test_unreadable_array_files_are_errors_naming_them(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"PK not really")
    with pytest.raises(InputError, match=f"{tmp_path / 'bad.npz'}: not a readable .npz"):
        load_arrays(tmp_path / "bad.npz")
    np.save(tmp_path / "obj.npy", np.array([{}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=f"{tmp_path / 'obj.npy'}: not a readable .npy"):
        load_arrays(tmp_path / "obj.npy")
    with pytest.raises(InputError, match=f"array file {tmp_path / 'gone.npy'}: does not"):
        load_arrays(tmp_path / "gone.npy")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(InputError, match=r"x.csv: expected an .npz, .npy or .pb file"):
        load_arrays(tmp_path / "x.csv")
    save_arrays(tmp_path / "empty.npz", {})
    with pytest.raises(InputError, match=r"empty\.npz: holds no arrays"):
        load_arrays(tmp_path / "empty.npz")


# --- random inputs ------------------------------------------------------------------------------


SPECS = [
    spec("x", (2, 3, 4)),
    spec("h", (5,), "float16"),
    spec("ids", (3, 7), "int64"),
    spec("u", (4,), "uint8"),
    spec("mask", (2, 2), "bool"),
]


def test_random_inputs_are_deterministic_per_seed_and_differ_across_seeds() -> None:
    first, again, other = random_inputs(SPECS, 1), random_inputs(SPECS, 1), random_inputs(SPECS, 2)
    for s in SPECS:
        assert first[s.name].dtype == s.dtype and first[s.name].shape == s.shape
        np.testing.assert_array_equal(first[s.name], again[s.name])
    for name in ("x", "h", "ids"):
        assert not np.array_equal(first[name], other[name]), name


def test_random_values_have_the_promised_ranges() -> None:
    big = [spec("x", (4000,)), spec("i", (4000,), "int32"), spec("b", (4000,), "bool")]
    values = random_inputs(big, 5)
    x = values["x"]
    assert np.array_equal(x.astype(np.float16).astype(np.float32), x)  # fp16-representable
    assert abs(float(x.mean())) < 0.1 and 0.9 < float(x.std()) < 1.1
    assert set(np.unique(values["i"]).tolist()) == set(range(8))
    assert 0.4 < float(values["b"].mean()) < 0.6


def test_an_inputs_random_values_do_not_depend_on_the_other_inputs() -> None:
    alone = random_inputs([SPECS[2]], 9)
    together = random_inputs(SPECS, 9)
    np.testing.assert_array_equal(alone["ids"], together["ids"])


def test_a_negative_seed_is_an_error() -> None:
    with pytest.raises(InputError, match="seed: must be a non-negative integer, got -1"):
        random_inputs(SPECS, -1)


# --- resolve_inputs -----------------------------------------------------------------------------


GRAPH = [spec("a", (1, 3, 2, 2)), spec("b", (4,), "int32"), spec("c", (2,))]


def test_data_then_files_then_random(tmp_path: Path) -> None:
    a = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    save_arrays(tmp_path / "data.npz", {"a": a, "b": np.array([1, 2, 3, 4], np.int64)})
    np.save(tmp_path / "b.npy", np.array([9, 9, 9, 9], np.int16))
    out = resolve_inputs(GRAPH, data=tmp_path / "data.npz", files={"b": tmp_path / "b.npy"}, seed=4)
    assert list(out) == ["a", "b", "c"]
    np.testing.assert_array_equal(out["a"], a)
    assert out["b"].dtype == np.int32 and out["b"].tolist() == [9, 9, 9, 9]  # the file wins
    np.testing.assert_array_equal(out["c"], random_inputs([GRAPH[2]], 4)["c"])


def test_outputs_in_a_saved_run_are_skipped_and_other_names_still_refused(tmp_path: Path) -> None:
    a = np.ones((1, 3, 2, 2), np.float32)
    save_arrays(tmp_path / "run.npz", {"a": a, "y": np.zeros(3), "z": np.zeros(3)})
    with pytest.raises(InputError, match="'y' is not an input"):
        resolve_inputs(GRAPH, data=tmp_path / "run.npz", outputs=["z"])
    out = resolve_inputs(GRAPH, data=tmp_path / "run.npz", outputs=["y", "z"])
    np.testing.assert_array_equal(out["a"], a)


def test_a_test_data_folder_feeds_inputs_by_position(tmp_path: Path) -> None:
    write_pb(tmp_path / "input_0.pb", np.ones((1, 3, 2, 2), np.float32))
    write_pb(tmp_path / "input_1.pb", np.arange(4, dtype=np.int32))
    out = resolve_inputs(GRAPH, data=tmp_path)
    assert out["b"].tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(out["a"], np.ones((1, 3, 2, 2)))


def test_an_npz_per_input_gives_the_array_named_like_it_or_its_only_one(tmp_path: Path) -> None:
    save_arrays(tmp_path / "many.npz", {"x": np.zeros(2), "c": np.full(2, 3.0)})
    save_arrays(tmp_path / "single.npz", {"whatever": np.full(2, 5.0)})
    out = resolve_inputs(GRAPH, files={"c": tmp_path / "many.npz"})
    assert out["c"].tolist() == [3.0, 3.0]
    out = resolve_inputs(GRAPH, files={"c": tmp_path / "single.npz"})
    assert out["c"].tolist() == [5.0, 5.0]
    save_arrays(tmp_path / "two.npz", {"x": np.zeros(2), "y": np.zeros(2)})
    message = r"two\.npz: holds 2 arrays \(x, y\) and none named 'c'"
    with pytest.raises(InputError, match=message):
        resolve_inputs(GRAPH, files={"c": tmp_path / "two.npz"})


def test_nchw_equivalent_shapes_are_accepted_and_reshaped(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.ones((3, 2, 2), np.float32))
    np.save(tmp_path / "c.npy", np.ones((1, 1, 2), np.float32))
    out = resolve_inputs(GRAPH, files={"a": tmp_path / "a.npy", "c": tmp_path / "c.npy"})
    assert out["a"].shape == (1, 3, 2, 2) and out["c"].shape == (2,)


def test_a_wrong_shape_names_the_input_the_expected_and_the_given(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.ones((1, 2, 3, 2), np.float32))
    with pytest.raises(
        InputError,
        match=r"a.npy: input 'a': expected shape \(1, 3, 2, 2\), got \(1, 2, 3, 2\)",
    ):
        resolve_inputs(GRAPH, files={"a": tmp_path / "a.npy"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("a", np.ones((1, 3, 2, 2), np.int32), "input 'a': expected float32 data, got int32"),
        ("b", np.ones(4, np.float32), "input 'b': expected int32 data, got float32"),
        ("c", np.ones(2, bool), "input 'c': expected float32 data, got bool"),
        ("c", np.ones(2, np.complex64), "input 'c': expected float32 data, got complex64"),
        ("b", np.array([0, 1, 2, 2**40]), "input 'b': expected int32 values, got int64 values"),
    ],
)
def test_a_wrong_dtype_names_the_input_the_expected_and_the_given(
    tmp_path: Path, name: str, value: np.ndarray, message: str
) -> None:
    np.save(tmp_path / f"{name}.npy", value)
    with pytest.raises(InputError, match=f"{name}.npy: {message}"):
        resolve_inputs(GRAPH, files={name: tmp_path / f"{name}.npy"})


def test_an_unknown_name_is_an_error_naming_it_and_the_real_inputs(tmp_path: Path) -> None:
    save_arrays(tmp_path / "d.npz", {"a": np.ones((1, 3, 2, 2)), "zz": np.ones(1)})
    with pytest.raises(InputError, match=r"d.npz: 'zz' is not an input .* 'a', 'b', 'c'"):
        resolve_inputs(GRAPH, data=tmp_path / "d.npz")
    np.save(tmp_path / "q.npy", np.ones(1))
    with pytest.raises(InputError, match=r"q.npy: 'q' is not an input"):
        resolve_inputs(GRAPH, files={"q": tmp_path / "q.npy"})


def test_a_missing_input_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"gone\.npy: does not exist"):
        resolve_inputs(GRAPH, files={"a": tmp_path / "gone.npy"})


def test_resolved_floats_are_what_the_engine_reads(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.array([1 + 2**-12, np.nan]))  # float64 data
    c = resolve_inputs(GRAPH, files={"c": tmp_path / "c.npy"})["c"]
    assert c.dtype == np.float32 and c[0] == 1.0
    assert bits(c) == [0x3C00, 0x7E00]


def test_conform_input_keeps_integers_exact() -> None:
    big = np.array([2**31 - 1, -(2**31)], np.int64)
    assert conform_input(spec("i", (2,), "int32"), big, "t").tolist() == big.tolist()


# --- to_engine ----------------------------------------------------------------------------------


def test_to_engine_rounds_to_nearest_even() -> None:
    one_ulp = 2.0**-10
    values = np.array(
        [
            1 + one_ulp / 2,  # tie: to 1.0 (even)
            1 + 3 * one_ulp / 2,  # tie: up to 1 + 2 ulp (even)
            1 + one_ulp / 2 + 2.0**-20,  # above the tie: up
            65519.0,  # below the overflow tie: the largest half
            65520.0,  # the overflow tie rounds to infinity, as IEEE says
            2.0**-24,  # the smallest subnormal stays
            -(2.0**-26),  # under half of it: to -0
        ]
    )
    expected = [0x3C00, 0x3C02, 0x3C01, 0x7BFF, 0x7C00, 0x0001, 0x8000]
    assert bits(to_engine(values.astype(np.float32))) == expected
    assert bits(to_engine(values)) == expected  # float64 too, rounded once


def test_to_engine_canonicalises_nan_payloads_keeping_the_sign() -> None:
    f32 = np.array([0x7FC00001, 0x7F800001, 0xFFC12345, 0x7FFFFFFF, 0x3F800000], np.uint32)
    assert bits(to_engine(f32.view(np.float32))) == [0x7E00, 0x7E00, 0xFE00, 0x7E00, 0x3C00]
    f16 = np.array([0x7D55, 0xFC01, 0x7E00, 0x7C00], np.uint16).view(np.float16)
    assert bits(to_engine(f16)) == [0x7E00, 0xFE00, 0x7E00, 0x7C00]
    assert bits(to_engine(np.float32(np.nan).reshape(()))) == [0x7E00]


def test_to_engine_returns_a_new_fp16_array_of_the_same_shape() -> None:
    source = np.array([[np.nan, 1.0]], np.float16)
    out = to_engine(source)
    assert out.shape == (1, 2) and out.dtype == np.float16
    out[0, 1] = 5
    assert source[0, 1] == 1.0


@pytest.mark.parametrize("dtype", ["int32", "bool", "complex64", "longdouble"])
def test_to_engine_takes_floats_only(dtype: str) -> None:
    name = np.dtype(dtype).name
    with pytest.raises(InputError, match=f"logits: the engine reads fp16.*got {name}"):
        to_engine(np.zeros(2, dtype), "logits")


def test_float_specs_take_any_float_width() -> None:
    half = conform_input(spec("h", (2,), "float16"), np.array([1.0, 1 + 2**-12]), "t")
    assert half.dtype == np.float16 and bits(half) == [0x3C00, 0x3C00]
    double = conform_input(spec("d", (2,), "float64"), np.array([0.1, 3.0], np.float16), "t")
    assert double.dtype == np.float64 and double.tolist() == [float(np.float16(0.1)), 3.0]
