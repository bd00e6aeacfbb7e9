"""Outputs for a simulated submit: the container's graph evaluated on the CPU, in the ANE layout.

The simulator cannot run microcode; this stands in for it so the data path (tile, upload, submit,
read back, untile) is exercised end to end. It reads the inputs from their BOs as the engine
would (fp16, strided) and writes the outputs the same way. It is never a hardware result and must
not be reported as one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

_FP16 = np.dtype("<f2")


@dataclass(frozen=True)
class Slot:
    """One tensor slot of ``ane.io`` as the simulated engine reads it."""

    role: str
    name: str | None
    dims: tuple[int, int, int, int]
    row_stride: int
    plane_stride: int


class EvaluationError(Exception):
    """The graph could not be evaluated (a limit of the simulator, never a kernel error)."""


def parse_io(text: bytes) -> dict[int, Slot]:
    """The slots of an ``ane.io`` value.

    Raises:
        EvaluationError: The value is not the JSON object of slots the container format defines.
    """
    try:
        raw = json.loads(text)
        return {
            int(slot): Slot(
                spec["role"],
                spec.get("name"),
                (int(spec["n"]), int(spec["c"]), int(spec["h"]), int(spec["w"])),
                int(spec["row_stride"]),
                int(spec["plane_stride"]),
            )
            for slot, spec in raw.items()
        }
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise EvaluationError(f"ane.io is not a slot map: {exc}") from exc


def _strided(buf: memoryview, slot: Slot) -> npt.NDArray[np.float16]:
    n, c, h, w = slot.dims
    count = ((n * c - 1) * slot.plane_stride + (h - 1) * slot.row_stride) // 2 + w
    flat = np.frombuffer(buf, dtype=_FP16, count=count)
    return np.lib.stride_tricks.as_strided(
        flat,
        shape=(n, c, h, w),
        strides=(c * slot.plane_stride, slot.plane_stride, slot.row_stride, 2),
    )


def read_tensor(buf: memoryview, slot: Slot) -> npt.NDArray[np.float16]:
    """A copy of the tensor the engine would read from ``buf``."""
    return _strided(buf, slot).copy()


def write_tensor(buf: memoryview, slot: Slot, value: npt.NDArray[Any]) -> None:
    """Write ``value`` as fp16 into ``buf`` with the slot's strides; zero every other byte."""
    np.frombuffer(buf, dtype=np.uint8)[:] = 0
    view = _strided(buf, slot)
    view[...] = np.asarray(value, dtype=np.float32).reshape(slot.dims)


def evaluate(
    container: bytes, slots: Mapping[int, Slot], buffers: Mapping[int, memoryview]
) -> tuple[str, ...]:
    """Compute the graph's outputs from the input BOs and write them to the output BOs.

    Graph inputs and outputs pair with the slots of their role in slot order, by name when the
    slot names a graph tensor.

    Returns:
        The names of the outputs written.

    Raises:
        EvaluationError: The graph cannot be loaded or evaluated on these inputs.
    """
    import onnx
    from onnx.reference import ReferenceEvaluator

    try:
        model = onnx.load_from_string(container)
        inputs = {i.name: i for i in model.graph.input}
        outputs = [o.name for o in model.graph.output]
        ins = sorted((s, v) for s, v in slots.items() if v.role == "input")
        feeds: dict[str, Any] = {}
        for index, (slot, spec) in enumerate(ins):
            name = spec.name if spec.name in inputs and spec.name else list(inputs)[index]
            elem = inputs[name].type.tensor_type
            shape = [d.dim_value for d in elem.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(elem.elem_type)
            feeds[name] = read_tensor(buffers[slot], spec).reshape(shape).astype(dtype)
        results = dict(zip(outputs, ReferenceEvaluator(model).run(None, feeds), strict=True))
    # onnx and numpy raise anything at all on a graph they cannot run; none of it is the kernel's.
    except Exception as exc:
        raise EvaluationError(f"{type(exc).__name__}: {exc}") from exc
    written: list[str] = []
    outs = sorted((s, v) for s, v in slots.items() if v.role == "output")
    for index, (slot, spec) in enumerate(outs):
        name = spec.name if spec.name and spec.name in results else outputs[index]
        write_tensor(buffers[slot], spec, results[name])
        written.append(name)
    return tuple(written)
