"""onnxruntime's IOBinding driven at its pybind level, for the per-step calls of the decode loop.

A decode step binds every past input and every present output anew (four calls per layer). The
public ``onnxruntime.IOBinding`` wrappers rebuild an ``OrtDevice``, validate and record each
value, and wrap outputs in new Python objects: a few microseconds per call, which on small models
is a tenth of the step. This module calls the pybind objects those wrappers hold, with the
arguments they pass, and keeps every numpy array a binding points into alive until the binding
is cleared, as they do. It is the only chat module that touches onnxruntime's private attributes;
it must not know about models, caches or tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._deps import require


@dataclass(frozen=True)
class Buffers:
    """Flat numpy buffers of one element type, with their addresses looked up once.

    A binding points onnxruntime at the start of a buffer, viewed as any C-ordered shape that
    fits, so one buffer serves a tensor whose length changes every step.

    Attributes:
        arrays: The buffers.
        addresses: Their data addresses, in the same order.
        dtype: Their element type.
    """

    arrays: tuple[NDArray[Any], ...]
    addresses: tuple[int, ...]
    dtype: np.dtype[Any]

    @classmethod
    def empty(cls, count: int, size: int, dtype: type[np.generic]) -> Buffers:
        """``count`` uninitialised buffers of ``size`` elements."""
        arrays = tuple(np.empty(size, dtype=dtype) for _ in range(count))
        # Reading .ctypes.data costs microseconds; a step binds every buffer.
        return cls(arrays, tuple(a.ctypes.data for a in arrays), np.dtype(dtype))


class StepBinding:
    """One reusable binding of a session's inputs and outputs, all in CPU memory.

    Args:
        session: An ``onnxruntime.InferenceSession``.
    """

    def __init__(self, session: Any) -> None:
        ort = require("onnxruntime")
        self._session = session._sess
        self._binding = session.io_binding()._iobinding
        self._cpu = ort.OrtDevice.make("cpu", 0)._get_c_device()
        # The run reads and writes these arrays and buffers in place, so they must outlive it.
        self._held: list[NDArray[Any] | Buffers] = []

    def input_array(self, name: str, array: NDArray[Any]) -> None:
        """Bind a C-contiguous numpy array as an input, read in place."""
        self._held.append(array)
        self._binding.bind_input(name, array)

    def inputs_at(self, names: Sequence[str], buffers: Buffers, shape: Sequence[int]) -> None:
        """Bind each name to the start of its buffer, viewed as ``shape``, as an input."""
        self._held.append(buffers)
        bind, cpu, dtype = self._binding.bind_input, self._cpu, buffers.dtype
        for name, address in zip(names, buffers.addresses, strict=True):
            bind(name, cpu, dtype, shape, address)

    def outputs_at(self, names: Sequence[str], buffers: Buffers, shape: Sequence[int]) -> None:
        """Have the run write each named output, of ``shape``, into the start of its buffer."""
        self._held.append(buffers)
        bind, cpu, dtype = self._binding.bind_output, self._cpu, buffers.dtype
        for name, address in zip(names, buffers.addresses, strict=True):
            bind(name, cpu, dtype, shape, address)

    def output_to_cpu(self, name: str) -> None:
        """Let onnxruntime allocate the output, at whatever shape the run gives."""
        self._binding.bind_output(name, self._cpu)

    def run(self) -> None:
        """Run the session on the bound inputs and outputs.

        Raises:
            Exception: Whatever onnxruntime raises (its classes are untyped).
        """
        self._session.run_with_iobinding(self._binding, None)

    def output(self, index: int) -> Any:
        """The ``index``-th bound output of the last run, as an OrtValue (in bind order)."""
        return self._binding.get_outputs()[index]

    def clear(self) -> None:
        """Unbind everything, so no tensor or buffer outlives the step because of the binding."""
        self._binding.clear_binding_inputs()
        self._binding.clear_binding_outputs()
        self._held.clear()
