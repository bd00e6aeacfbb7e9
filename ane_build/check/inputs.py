"""The inputs of a numeric check: test data from disk or drawn at random, as the engine reads them.

Reads ONNX backend test folders, .npz/.npy files and single TensorProto files; writes .npz only
through the atomic writer. It must not run models: that is `reference`.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from .._fs import open_regular
from ..container.graph import TensorSpec
from ..errors import InputError
from ..formats.tiling import strip_leading_ones, to_fp16
from ._npz import read_npz, write_npz

log = logging.getLogger(__name__)

# The floating types numpy converts to half with a single rounding.
ENGINE_SOURCE_DTYPES = frozenset(np.dtype(n) for n in ("float16", "float32", "float64"))
_TEST_FILE = re.compile(r"(input|output)_(\d+)\.pb")
# Small non-negative integers: valid as indices into any axis of 8 or more.
_INT_HIGH = 8


def to_engine(array: np.ndarray, name: str = "array") -> np.ndarray:
    """What the engine reads for ``array``: `formats.tiling.to_fp16` of float16/32/64 data.

    Raises:
        InputError: ``array`` is not float16/32/64.
    """
    values = np.asarray(array)
    if values.dtype not in ENGINE_SOURCE_DTYPES:
        raise InputError(
            f"{name}: the engine reads fp16, converted from float16/32/64 data; got {values.dtype}"
        )
    return to_fp16(values)


def random_inputs(specs: Sequence[TensorSpec], seed: int) -> dict[str, np.ndarray]:
    """Seeded random values for ``specs``, in their dtypes and shapes.

    Floats are N(0, 1) rounded to fp16 (so the engine reads them exactly), integers are drawn
    from 0..7, bools are fair coin flips. Each input has its own stream from ``(seed, name)``:
    its values do not change when other inputs come from files instead.

    Raises:
        InputError: ``seed`` is negative or a spec has an open (-1) dimension.
    """
    if seed < 0:
        raise InputError(f"seed: must be a non-negative integer, got {seed}")
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        if any(d < 0 for d in spec.shape):
            raise InputError(f"input {spec.name!r}: shape {spec.shape} is not fixed")
        rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode())])
        if spec.dtype.kind == "f":
            half = rng.standard_normal(spec.shape).astype(np.float16)
            out[spec.name] = half.astype(spec.dtype)
        elif spec.dtype.kind in "iu":
            out[spec.name] = rng.integers(0, _INT_HIGH, size=spec.shape, dtype=spec.dtype)
        else:
            out[spec.name] = rng.random(spec.shape) < 0.5
    return out


def _read_tensor(path: Path) -> tuple[str, np.ndarray]:
    """The name (may be empty) and value of a file holding one serialized TensorProto."""
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
    from onnx import numpy_helper

    with open_regular(path, "tensor file", InputError) as stream:
        data = stream.read()
    tensor = onnx.TensorProto()
    try:
        tensor.ParseFromString(data)
        value = numpy_helper.to_array(tensor, base_dir=str(path.parent))
    except (DecodeError, ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{path}: not a TensorProto file: {exc}") from exc
    return tensor.name, np.asarray(value)


def _data_set(folder: Path) -> Path:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of ONNX test data")
    if any(_TEST_FILE.fullmatch(p.name) for p in folder.iterdir()):
        return folder
    first = folder / "test_data_set_0"
    if first.is_dir():
        return first
    raise InputError(f"{folder}: holds no input_K.pb/output_K.pb files and no test_data_set_0")


def read_test_data(
    folder: Path, *, inputs: Sequence[str] = (), outputs: Sequence[str] = ()
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read an ONNX backend test data set.

    Args:
        folder: A ``test_data_set_N`` folder of ``input_K.pb``/``output_K.pb`` files, or a model
            folder holding ``test_data_set_0``.
        inputs: The graph's input names in order: the name of an unnamed ``input_K.pb``.
        outputs: The graph's output names in order: the name of an unnamed ``output_K.pb``.

    Returns:
        ``(inputs, outputs)`` by tensor name, each in K order.

    Raises:
        InputError: No test data, a damaged file, an unnamed tensor without a graph name at
            its position, or two files with the same name.
    """
    found = _data_set(folder)
    files = sorted(
        (match.group(1), int(match.group(2)), p)
        for p in found.iterdir()
        if (match := _TEST_FILE.fullmatch(p.name))
    )
    result: dict[str, dict[str, np.ndarray]] = {"input": {}, "output": {}}
    positional = {"input": list(inputs), "output": list(outputs)}
    for role, index, path in files:
        name, value = _read_tensor(path)
        if not name:
            if index >= len(positional[role]):
                raise InputError(
                    f"{path}: the tensor has no name and the graph has no {role} {index} to "
                    f"name it after ({len(positional[role])} {role}s known)"
                )
            name = positional[role][index]
        if name in result[role]:
            raise InputError(f"{path}: a second {role} named {name!r}")
        result[role][name] = value
    return result["input"], result["output"]


def load_arrays(path: Path, *, names: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Named arrays from an .npz, an .npy, a TensorProto .pb file or a test data folder.

    Args:
        path: The file or folder. A folder gives its ``input_K.pb`` tensors.
        names: The graph's input names in order; an .npy file (one array) or an unnamed tensor
            gets the name at its position, else the file's stem.

    Raises:
        InputError: The path cannot be read, is of another kind, or holds no arrays.
    """
    if path.is_dir():
        arrays = read_test_data(path, inputs=names)[0]
    elif path.suffix == ".npz":
        arrays = read_npz(path)[0]
    elif path.suffix == ".npy":
        with open_regular(path, "array file", InputError) as stream:
            try:
                value = np.lib.format.read_array(stream, allow_pickle=False)
            except (ValueError, EOFError, OSError) as exc:
                raise InputError(f"{path}: not a readable .npy file: {exc}") from exc
        arrays = {names[0] if names else path.stem: value}
    elif path.suffix == ".pb":
        name, value = _read_tensor(path)
        arrays = {name or (names[0] if names else path.stem): value}
    else:
        raise InputError(f"{path}: expected an .npz, .npy or .pb file or a test data folder")
    if not arrays:
        raise InputError(f"{path}: holds no arrays")
    return arrays


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to an .npz file (atomically) that `load_arrays` reads back.

    Raises:
        InputError: An array holds Python objects.
        FileAccessError: The file cannot be written.
    """
    write_npz(path, arrays)


def conform_input(spec: TensorSpec, value: np.ndarray, origin: str) -> np.ndarray:
    """``value`` as input ``spec``: checked, reshaped and cast, floats as the engine reads them.

    Shapes may differ by leading 1s only (the same NCHW tensor). Floating inputs take
    float16/32/64 data and come back rounded through `to_engine`, so the reference and the
    engine read the very same numbers; integer inputs take integers that fit the dtype.

    Raises:
        InputError: The dtype kind or the shape does not fit; names ``origin``, the input,
            what was expected and what was given.
    """
    array = np.asarray(value)
    where = f"{origin}: input {spec.name!r}"
    if array.shape != spec.shape:
        if strip_leading_ones(array.shape) != strip_leading_ones(spec.shape):
            raise InputError(
                f"{where}: expected shape {spec.shape}, got {array.shape} (shapes may differ "
                "only by leading 1s)"
            )
        array = array.reshape(spec.shape)
    kind, given = spec.dtype.kind, array.dtype
    if kind == "f" and given in ENGINE_SOURCE_DTYPES:
        return to_engine(array, where).astype(spec.dtype)
    if kind in "iu" and given.kind in "iu":
        info = np.iinfo(spec.dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InputError(
                f"{where}: expected {spec.dtype} values, got {given} values from {array.min()} "
                f"to {array.max()}"
            )
        return array.astype(spec.dtype)
    if kind == "b" and given.kind == "b":
        return array.copy()
    raise InputError(f"{where}: expected {spec.dtype} data, got {given}")


def _single(arrays: Mapping[str, np.ndarray], name: str, path: Path) -> np.ndarray:
    if name in arrays:
        return arrays[name]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise InputError(
        f"{path}: holds {len(arrays)} arrays ({', '.join(sorted(arrays))}) and none named {name!r}"
    )


def resolve_inputs(
    specs: Sequence[TensorSpec],
    *,
    data: Path | None = None,
    files: Mapping[str, Path] | None = None,
    seed: int = 0,
    outputs: Collection[str] = (),
) -> dict[str, np.ndarray]:
    """Every input of a check: from ``data``, then ``files`` (which win), random for the rest.

    Args:
        specs: The graph's inputs (`graph_io`).
        data: A test data folder or an .npz/.npy/.pb file with values for some or all inputs.
        files: Per-input files (``--input NAME=FILE``); an .npz gives the array named like the
            input, or its only array.
        seed: The seed of `random_inputs` for inputs given nowhere.
        outputs: The graph's output names: arrays of ``data`` under these names are skipped, so
            a file that records a whole run (inputs and outputs, as ``--save`` writes it)
            replays its inputs.

    Returns:
        One array per spec, in spec order, conformed by `conform_input`.

    Raises:
        InputError: A name that is not an input, a wrong shape or dtype, or unreadable data.
    """
    by_name = {spec.name: spec for spec in specs}
    given: dict[str, tuple[np.ndarray, str]] = {}
    if data is not None:
        for name, value in load_arrays(data, names=list(by_name)).items():
            if name not in by_name and name in outputs:
                log.info("%s: skipping %r, an output", data, name)
                continue
            given[name] = (value, str(data))
    for name, path in (files or {}).items():
        given[name] = (_single(load_arrays(path, names=[name]), name, path), str(path))
    for name, (_, origin) in given.items():
        if name not in by_name:
            raise InputError(
                f"{origin}: {name!r} is not an input of the graph; its inputs are "
                f"{', '.join(map(repr, by_name)) or 'none'}"
            )
    drawn = random_inputs([spec for spec in specs if spec.name not in given], seed)
    if drawn:
        log.info("random inputs (seed %d): %s", seed, ", ".join(drawn))
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name in drawn:
            out[spec.name] = drawn[spec.name]
        else:
            value, origin = given[spec.name]
            out[spec.name] = conform_input(spec, value, origin)
    return out
