"""Outputs for a simulated submit: the container's graph run on the CPU, in the engine's numbers.

The simulator cannot run microcode; this stands in for it so the data path (tile, upload, submit,
read back, untile, compare) is exercised end to end. It reads the inputs from their BOs as the
engine would (fp16, strided), runs the graph with onnxruntime, rounds the outputs to fp16, applies
the injected output faults, and writes them in the ANE layout. It is never a hardware result and
must not be reported as one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import KernelRejection
from ..kernel_onnx.wire import BoImage, all_fields, scan
from .faults import Outputs, apply_value_faults, wrong_strides

log = logging.getLogger(__name__)

_FP16 = np.dtype("<f2")
_METADATA = 14  # ModelProto.metadata_props: payloads, not needed to run the graph


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


def graph_and_io(bo: memoryview) -> tuple[bytes, bytes] | None:
    """What evaluation needs of a container BO, taken before the kernel rewrites it.

    Returns:
        The model without its metadata entries (the graph and everything else onnxruntime
        reads), and the ``ane.io`` value; None when there is no ``ane.io`` or the BO does not scan
        (the kernel's verdict then says why).
    """
    image = BoImage(bo, len(bo))
    try:
        found = scan(image)
        io_at = found.entries.get(b"ane.io")
        if io_at is None:
            return None
        kept = [f for f in all_fields(image, 0, len(bo), "the BO") if f.number != _METADATA]
    except KernelRejection:
        return None
    model = b"".join(image.read(f.at, f.stop) for f in kept)
    return model, image.read(*io_at)


def _strided(
    buf: memoryview, dims: tuple[int, int, int, int], strides: tuple[int, int, int]
) -> npt.NDArray[np.float16]:
    """A strided fp16 view of ``buf``; ``strides`` are (element, row, plane) in bytes."""
    n, c, h, w = dims
    element, row, plane = strides
    end = (n * c - 1) * plane + (h - 1) * row + (w - 1) * element + 2
    if min(dims) <= 0 or end > len(buf):
        raise EvaluationError(f"a {n}x{c}x{h}x{w} tensor does not fit its {len(buf)}-byte BO")
    return np.ndarray((n, c, h, w), _FP16, buf, strides=(c * plane, plane, row, element))


def read_tensor(buf: memoryview, slot: Slot) -> npt.NDArray[np.float16]:
    """The tensor the engine would read from ``buf``, contiguous.

    A view of ``buf`` when the layout is already dense (no copy for big tensors such as a KV
    cache), else a copy; valid while ``buf`` is.
    """
    return np.ascontiguousarray(_strided(buf, slot.dims, (2, slot.row_stride, slot.plane_stride)))


def write_tensor(
    buf: memoryview, dims: tuple[int, int, int, int], strides: tuple[int, int, int], value: Any
) -> None:
    """Write ``value`` as fp16 into ``buf`` with ``strides``; zero every other byte."""
    np.frombuffer(buf, dtype=np.uint8)[:] = 0
    _strided(buf, dims, strides)[...] = np.asarray(value, dtype=np.float16).reshape(dims)


class Graph:
    """A container's graph and ``ane.io`` as the kernel saw them at translation.

    Parsed and loaded into onnxruntime once, on the first evaluation, then reused by every
    resubmit of the translated program (a program runs many times; making a session is the
    slowest part of a run).
    """

    def __init__(self, model: bytes, io: bytes) -> None:
        self.model = model
        self.io = io
        self._slots: dict[int, Slot] | None = None
        self._session: Any = None
        self._plan: _Plan | None = None

    @property
    def slots(self) -> dict[int, Slot]:
        """The parsed ``ane.io``.

        Raises:
            EvaluationError: It is not the slot map the container format defines.
        """
        if self._slots is None:
            self._slots = parse_io(self.io)
        return self._slots

    def session(self) -> Any:
        """The onnxruntime session, made on first use.

        Raises:
            Exception: Whatever onnxruntime raises for a graph it cannot load.
        """
        if self._session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            self._session = ort.InferenceSession(
                self.model, options, providers=["CPUExecutionProvider"]
            )
        return self._session

    def plan(self) -> _Plan:
        """Which slot feeds which graph input and takes which output, settled on first use.

        Raises:
            EvaluationError: ``ane.io`` and the graph do not pair up.
            Exception: Whatever onnxruntime raises for a graph it cannot load.
        """
        if self._plan is None:
            self._plan = _pair(self.session(), self.slots)
        return self._plan


@dataclass(frozen=True)
class _Plan:
    """Per input: slot, graph name, dtype, shape; the graph's output names; per output slot."""

    feeds: tuple[tuple[int, Slot, str, type[Any], tuple[int, ...]], ...]
    names: tuple[str, ...]
    outputs: tuple[tuple[int, Slot, str], ...]


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


def _pick(slot: Slot, names: Sequence[str], index: int) -> str:
    """The graph tensor a slot stands for: the one it names, else the one in its position."""
    if slot.name and slot.name in names:
        return slot.name
    return names[min(index, len(names) - 1)]


def _pair(session: Any, slots: Mapping[int, Slot]) -> _Plan:
    graph_inputs = {i.name: i for i in session.get_inputs()}
    ins = sorted((s, v) for s, v in slots.items() if v.role == "input")
    if len(ins) != len(graph_inputs):
        raise EvaluationError(f"ane.io has {len(ins)} inputs, the graph {len(graph_inputs)}")
    feeds = []
    for index, (slot, spec) in enumerate(ins):
        name = _pick(spec, list(graph_inputs), index)
        info = graph_inputs[name]
        dtype = _ORT_TYPES.get(info.type)
        if dtype is None:
            raise EvaluationError(f"graph input {name!r} is {info.type}, not a float tensor")
        shape = tuple(d if isinstance(d, int) else -1 for d in info.shape)
        feeds.append((slot, spec, name, dtype, shape))
    names = tuple(o.name for o in session.get_outputs())
    outs = sorted((s, v) for s, v in slots.items() if v.role == "output")
    outputs = tuple(
        (slot, spec, _pick(spec, names, index)) for index, (slot, spec) in enumerate(outs)
    )
    return _Plan(tuple(feeds), names, outputs)


def evaluate(
    graph: Graph,
    buffers: Mapping[int, memoryview],
    faults: Sequence[str] = (),
) -> tuple[str, ...]:
    """Run the graph on the input BOs and write its outputs (fp16, faults applied) to theirs.

    Graph inputs and outputs pair with the slots of their role in slot order, by name when the
    slot names a graph tensor.

    Returns:
        The names of the outputs written.

    Raises:
        EvaluationError: The graph cannot be run on these inputs.
    """
    try:
        plan = graph.plan()
        feeds = {
            name: read_tensor(buffers[slot], spec).reshape(shape).astype(dtype, copy=False)
            for slot, spec, name, dtype, shape in plan.feeds
        }
        results = dict(zip(plan.names, graph.session().run(plan.names, feeds), strict=True))
    except EvaluationError:
        raise
    # onnxruntime raises its own exception types for graphs it cannot run; none is the kernel's.
    except Exception as exc:
        raise EvaluationError(f"{type(exc).__name__}: {exc}") from exc
    values: Outputs = {
        slot: np.asarray(results[name]).astype(np.float16, copy=False).reshape(spec.dims)
        for slot, spec, name in plan.outputs
    }
    values = apply_value_faults(faults, values)
    for slot, spec, _ in plan.outputs:
        strides = (2, spec.row_stride, spec.plane_stride)
        if "stride" in faults:
            strides = wrong_strides(spec.dims, spec.row_stride, spec.plane_stride)
        _write_clipped(buffers[slot], spec, strides, values[slot])
    return tuple(name for _, _, name in plan.outputs)


def _write_clipped(
    buf: memoryview, spec: Slot, strides: tuple[int, int, int], value: npt.NDArray[np.float16]
) -> None:
    try:
        write_tensor(buf, spec.dims, strides, value)
    except EvaluationError:
        # A stride fault may not fit the BO; keep what fits, as a runaway engine would.
        flat = value.reshape(-1)
        room = (len(buf) - 2) // strides[0] + 1
        write_tensor(buf, (1, 1, 1, min(flat.size, room)), strides, flat[:room])
