"""`AneModel`: a compiled program you call with numpy arrays by the graph's own tensor names.

Loads an ``_ane.onnx`` container (its ``ane.io`` slots paired with the graph's inputs and
outputs, in order) or a bare ``.anec``/``.ane`` file (its slots keep their names), allocates
once, checks every input before anything is submitted, and converts what the engine reads and
writes: fp16, NaNs canonical. This module must not run the source graph (that is `check`) and
must not decide which device to use.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .._resource import Closing
from .._typing import StrPath
from ..container import parse_ane_metadata
from ..container.graph import TensorSpec, graph_io
from ..driver.device import ANEDevice
from ..errors import AneError, InputError
from ..formats.anec import read_anec
from ..formats.payload import IoSlot
from ..formats.tiling import strip_leading_ones, to_fp16
from .program import AneProgram, StreamedPayload, SubmitMode, SubmitResult
from .submit import program_for

ACCEPTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
ANEC_SUFFIXES = (".anec", ".ane")


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a loaded program.

    Attributes:
        name: The graph's tensor name (an ``.anec`` file's slot name, e.g. ``input0``).
        shape: The graph's shape (the slot's NCHW for an ``.anec`` file).
        dtype: What `AneModel.run` returns for an output and what the engine reads for an
            input: float16. Inputs may also be given as float32.
        slot: The tile slot it lives in.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    slot: int


def _pair(
    slots: Mapping[int, IoSlot], specs: Sequence[TensorSpec], role: str, where: str
) -> list[TensorInfo]:
    """The graph's tensors of ``role`` on the program's slots of that role, in order."""
    ordered = sorted((s, v) for s, v in slots.items() if v.role == role)
    if len(ordered) != len(specs):
        raise AneError(
            f"{where}: ane.io has {len(ordered)} {role}(s) ({[v.name for _, v in ordered]}) but "
            f"the graph has {len(specs)} ({[s.name for s in specs]}); it cannot run"
        )
    infos = []
    for (slot, io), spec in zip(ordered, specs, strict=True):
        if io.n * io.c * io.h * io.w != int(np.prod(spec.shape)) and -1 not in spec.shape:
            raise AneError(
                f"{where}: {role} {spec.name!r} is {spec.shape} in the graph but slot {slot} "
                f"holds {io.n}x{io.c}x{io.h}x{io.w}; it cannot run"
            )
        shape = spec.shape if -1 not in spec.shape else (io.n, io.c, io.h, io.w)
        infos.append(TensorInfo(spec.name, shape, np.dtype(np.float16), slot))
    return infos


def _nchw(io: IoSlot) -> tuple[int, int, int, int]:
    return io.n, io.c, io.h, io.w


def _slot_infos(slots: Mapping[int, IoSlot], role: str) -> list[TensorInfo]:
    return [
        TensorInfo(io.name or f"slot{slot}", (io.n, io.c, io.h, io.w), np.dtype(np.float16), slot)
        for slot, io in sorted(slots.items())
        if io.role == role
    ]


class AneModel(Closing):
    """A loaded program: ``run({name: array}) -> {name: array}``, allocated once.

    Use `AneModel.load`. Close it (or use ``with``) to free its buffers.

    Attributes:
        inputs: The inputs, in slot order.
        outputs: The outputs, in slot order.
        path: Where it was loaded from.
        mode: How it is submitted (``"onnx"``: the kernel translates the container on the first
            run; ``"direct"``: the image is laid out here).
        last: What the last run did (timings, the device), or None before the first.
        load_seconds: Wall time `load` took: metadata, graph, microcode, buffer allocation
            (the payload upload and, in ONNX mode, the kernel's translation belong to the
            first run's `SubmitResult.total`).
    """

    def __init__(
        self,
        program: AneProgram,
        inputs: Sequence[TensorInfo],
        outputs: Sequence[TensorInfo],
        *,
        path: Path,
        mode: SubmitMode,
    ) -> None:
        self._program = program
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.path = path
        self.mode: SubmitMode = mode
        self.last: SubmitResult | None = None
        self.load_seconds = 0.0
        # Settled once: the engine's name and NCHW of every input, the engine's name of every
        # output, so a run only checks, converts and moves data.
        engine = {slot: io.name or f"slot{slot}" for slot, io in program.io.items()}
        self._names = frozenset(info.name for info in self.inputs)
        self._feeds = [
            (info, engine[info.slot], _nchw(program.io[info.slot])) for info in self.inputs
        ]
        self._returns = [(info.name, engine[info.slot], info.shape) for info in self.outputs]

    @classmethod
    def load(
        cls,
        device: ANEDevice,
        path: StrPath,
        *,
        mode: Literal["onnx", "direct"] | None = None,
    ) -> AneModel:
        """Load a container or an ``.anec``/``.ane`` file onto ``device``.

        Args:
            device: Where the program's buffers go.
            path: An ``_ane.onnx`` container or an ``.anec``/``.ane`` file.
            mode: ``"onnx"`` (the default for a container; needs the fork kernel) or
                ``"direct"`` (the only way for an ``.anec`` file; works on every kernel).

        Raises:
            AneError: The file cannot be read, has no ``ane.io`` ("cannot run or check"), its
                slots do not match its graph, or the buffers cannot be allocated.
        """
        start = time.perf_counter()
        model = cls._load(device, Path(path), mode)
        model.load_seconds = time.perf_counter() - start
        return model

    @classmethod
    def _load(cls, device: ANEDevice, path: Path, mode: SubmitMode | None) -> AneModel:
        if path.suffix.lower() in ANEC_SUFFIXES:
            if mode == "onnx":
                raise InputError(f"{path}: an .anec file has no container to submit in ONNX mode")
            return cls._load_anec(device, path)
        metadata = parse_ane_metadata(path)
        if not metadata.io:
            raise AneError(f"{path}: cannot run or check: no ane.io (which slot is which tensor)")
        graph_inputs, graph_outputs = graph_io(path, dims={})
        inputs = _pair(metadata.io, graph_inputs, "input", str(path))
        outputs = _pair(metadata.io, graph_outputs, "output", str(path))
        chosen: SubmitMode = mode or "onnx"
        program = program_for(device, path, metadata, mode=chosen)
        return cls(program, inputs, outputs, path=path, mode=chosen)

    @classmethod
    def _load_anec(cls, device: ANEDevice, path: Path) -> AneModel:
        anec = read_anec(path)
        weights = anec.weights
        program = AneProgram(
            device,
            microcode=anec.microcode.read(),
            td_size=anec.td_size,
            td_count=anec.td_count,
            weights=StreamedPayload(weights.length, weights.iter_chunks) if weights else b"",
            tiles=anec.tiles,
            io=anec.io,
            label=str(path),
        )
        inputs, outputs = _slot_infos(anec.io, "input"), _slot_infos(anec.io, "output")
        return cls(program, inputs, outputs, path=path, mode="direct")

    def _name_error(self, given: Mapping[str, npt.ArrayLike]) -> InputError:
        names = [info.name for info in self.inputs]
        unknown = sorted(set(given) - self._names)
        missing = [name for name in names if name not in given]
        parts = [f"unknown: {unknown}"] if unknown else []
        parts += [f"missing: {missing}"] if missing else []
        return InputError(f"{self.path}: inputs are {names}; {'; '.join(parts)}")

    def _engine_inputs(self, given: Mapping[str, npt.ArrayLike]) -> dict[str, np.ndarray]:
        """Every input checked and converted, keyed by slot name; nothing is written yet."""
        if given.keys() != self._names:
            raise self._name_error(given)
        out = {}
        for info, engine, dims in self._feeds:
            value = np.asarray(given[info.name])
            if value.dtype not in ACCEPTED_DTYPES:
                raise InputError(
                    f"{self.path}: input {info.name!r}: expected float16 or float32 data, got "
                    f"{value.dtype}"
                )
            shape = value.shape
            if shape != info.shape and strip_leading_ones(shape) != strip_leading_ones(info.shape):
                raise InputError(
                    f"{self.path}: input {info.name!r}: expected shape {info.shape} (leading 1s "
                    f"may be added or left out), got {shape}"
                )
            out[engine] = to_fp16(value).reshape(dims)
        return out

    def run(self, inputs: Mapping[str, npt.ArrayLike]) -> dict[str, np.ndarray]:
        """Run once on ``inputs`` (by the graph's names); return the outputs by name.

        Inputs are checked before anything is submitted: every input present, nothing unknown,
        float16 or float32 data (converted to fp16, NaNs canonical, as libane does), the graph's
        shape or the same with leading 1s added or left out. Outputs are float16, in the graph's
        shape.

        Raises:
            InputError: An input is unknown, missing, of another dtype or shape (names it, what
                was expected and what was given).
            AneDeviceError: The kernel failed the submit.
        """
        result = self._program.run_prepared(self.mode, self._engine_inputs(inputs))
        self.last = result
        outputs = result.outputs
        return {name: outputs[engine].reshape(shape) for name, engine, shape in self._returns}

    def close(self) -> None:
        """Free the program's buffers. Idempotent."""
        self._program.close()

    def __repr__(self) -> str:
        ins = ", ".join(f"{i.name}{list(i.shape)}" for i in self.inputs)
        outs = ", ".join(f"{o.name}{list(o.shape)}" for o in self.outputs)
        return f"<AneModel {self.path.name} ({self.mode}) {ins} -> {outs}>"
