"""One chunk program, loaded once: as an ANE program (`AneChunk`) or on onnxruntime (`OrtChunk`).

Both keep their inputs between runs and take writes into part of an input (new KV rows, newly
allowed mask columns) in place, so a step copies only what changed; `run` returns the outputs by
the graph's names and shapes. `AneChunk` holds an `AneProgram` of the chunk's container on a
device; `OrtChunk` runs the chunk graph itself, for chunks without a container (and for the
embedding, which always runs on the CPU). This module must not know the order of chunks or what
a token is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .._resource import Closing
from ..container import parse_ane_metadata
from ..driver.device import ANEDevice
from ..formats.tiling import to_fp16
from ..run import AneProgram, SubmitMode, program_for
from ..synthetic.chains import is_synthetic
from .errors import LlmError, ManifestError
from .plan import ChunkPlan, TensorPlan

log = logging.getLogger(__name__)

ON_SIMULATOR = "the ANE simulator"
SIMULATOR_NOTE = "simulator outputs are computed by onnxruntime in fp16, not hardware results"
ON_CPU = "the CPU (onnxruntime)"


def nchw(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """A shape of rank 1-4 as the engine's four dimensions (leading 1s added)."""
    return TensorPlan(name="", shape=tuple(shape)).nchw()


class ChunkRunner(Protocol):
    """What the decoder needs of a loaded chunk program."""

    plan: ChunkPlan
    where: str

    def write(self, name: str, values: npt.NDArray[Any], *, row: int = 0, column: int = 0) -> int:
        """Write a block into input ``name`` at (row, column) of every plane; return its bytes."""

    def run(self) -> dict[str, npt.NDArray[np.float16]]:
        """Run on the current inputs; the outputs by name, in the graph's shapes."""

    def close(self) -> None:
        """Release what the program holds."""


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exception classes
        raise LlmError(f"{path}: onnxruntime cannot load the chunk graph: {exc}") from exc


class OrtChunk(Closing):
    """A chunk graph run by onnxruntime on the CPU, its inputs kept in numpy arrays.

    Args:
        directory: The split folder.
        plan: The chunk.
        threads: onnxruntime intra-op threads; None lets it decide.
    """

    def __init__(self, directory: Path, plan: ChunkPlan, threads: int | None = None) -> None:
        self.plan = plan
        self.where = ON_CPU
        self._session = _session(Path(directory) / plan.graph, threads)
        self._arrays = {t.name: np.zeros(nchw(t.shape), dtype=np.float16) for t in plan.inputs}
        self._feeds = {t.name: self._arrays[t.name].reshape(t.shape) for t in plan.inputs}
        self._names = [t.name for t in plan.outputs]

    def write(self, name: str, values: npt.NDArray[Any], *, row: int = 0, column: int = 0) -> int:
        """Write a block into input ``name`` in place (see `AneProgram.write_region`).

        Raises:
            LlmError: No such input, or the block does not fit there.
        """
        target = self._arrays.get(name)
        if target is None:
            raise LlmError(f"{self.plan.name}: no input {name!r}")
        block = to_fp16(values)
        n, c, h, w = nchw(block.shape)
        if (n, c) != target.shape[:2] or row + h > target.shape[2] or column + w > target.shape[3]:
            raise LlmError(
                f"{self.plan.name}: input {name!r} {target.shape} cannot take a {n}x{c}x{h}x{w} "
                f"block at row {row}, column {column}"
            )
        target[:, :, row : row + h, column : column + w] = block.reshape(n, c, h, w)
        return block.size * 2

    def run(self) -> dict[str, npt.NDArray[np.float16]]:
        """Run the graph on the kept inputs.

        Raises:
            LlmError: onnxruntime failed.
        """
        try:
            results = self._session.run(self._names, self._feeds)
        except Exception as exc:  # onnxruntime raises its own untyped exception classes
            raise LlmError(f"{self.plan.name}: onnxruntime failed: {exc}") from exc
        return dict(zip(self._names, results, strict=True))

    def close(self) -> None:
        """Drop the session. Idempotent."""
        self._session = None


class AneChunk(Closing):
    """A chunk's container loaded as an ANE program, its inputs living in the program's BOs.

    Every input starts zeroed (a cache must never hold stale NaNs, which a zero attention weight
    would still turn into a NaN).

    Args:
        device: Where the program's buffers go.
        directory: The split folder.
        plan: The chunk (it must have a container).
        mode: How to submit: ``"onnx"`` (the fork kernel translates the container once; the
            only mode the simulator computes outputs for) or ``"direct"``.

    Raises:
        ManifestError: The container's tensors are not the chunk's.
        LlmError: A synthetic container (not real ANE code) on hardware.
        AneError: The container is unreadable or its buffers cannot be allocated.
    """

    def __init__(
        self, device: ANEDevice, directory: Path, plan: ChunkPlan, mode: SubmitMode
    ) -> None:
        if plan.container is None:
            raise LlmError(f"{plan.name}: runs on the CPU only; it has no container")
        path = Path(directory) / plan.container
        metadata = parse_ane_metadata(path)
        if not device.is_simulated and is_synthetic(metadata.toolchain):
            raise LlmError(
                f"{path}: a synthetic container (not real ANE code) cannot run on the hardware "
                f"at {device.path}; use the simulator (--device sim)"
            )
        _check_slots(
            path,
            plan,
            {s: (io.role, io.name, (io.n, io.c, io.h, io.w)) for s, io in metadata.io.items()},
        )
        self.plan, self.mode = plan, mode
        self.where = ON_SIMULATOR if device.is_simulated else f"the ANE at {device.path}"
        self.program: AneProgram = program_for(device, path, metadata, mode=mode)
        try:
            for tensor in plan.inputs:
                self.program.write_region(tensor.name, np.zeros(nchw(tensor.shape), np.float16))
        except BaseException:
            self.program.close()
            raise

    def write(self, name: str, values: npt.NDArray[Any], *, row: int = 0, column: int = 0) -> int:
        """Write a block into input ``name`` in the program's BO (`AneProgram.write_region`)."""
        return self.program.write_region(name, values, row=row, column=column)

    def run(self) -> dict[str, npt.NDArray[np.float16]]:
        """Submit the program on the inputs its BOs hold; read the outputs back."""
        outputs = self.program.run(self.mode).outputs
        return {t.name: outputs[t.name].reshape(t.shape) for t in self.plan.outputs}

    def close(self) -> None:
        """Free the program's BOs. Idempotent."""
        self.program.close()


def _check_slots(
    path: Path, plan: ChunkPlan, found: Mapping[int, tuple[str, str | None, tuple[int, ...]]]
) -> None:
    """The container's ``ane.io`` must hold the chunk's tensors, by name, role and shape."""
    wanted: dict[str, tuple[str, TensorPlan]] = {t.name: ("input", t) for t in plan.inputs}
    wanted.update({t.name: ("output", t) for t in plan.outputs})
    have = {name: (role, dims) for role, name, dims in found.values() if name}
    for name, (role, tensor) in wanted.items():
        got = have.get(name)
        if got != (role, nchw(tensor.shape)):
            raise ManifestError(
                f"{path}: ane.io has {name!r} as {got or 'nothing'}; the manifest's "
                f"{plan.name} needs an {role} of {nchw(tensor.shape)}: the container was not "
                "built from this split's graph"
            )


class Embedding(Closing):
    """The embedding chunk: token ids to float16 hidden states, on the CPU.

    Args:
        directory: The split folder.
        plan: The ``embed`` chunk.
        threads: onnxruntime intra-op threads; None lets it decide.
    """

    def __init__(self, directory: Path, plan: ChunkPlan, threads: int | None = None) -> None:
        self.plan = plan
        self.where = ON_CPU
        self._session = _session(Path(directory) / plan.graph, threads)

    def __call__(self, token_ids: Sequence[int]) -> npt.NDArray[np.float16]:
        """The hidden states ``[len(token_ids), hidden]``.

        Raises:
            LlmError: A token id outside the vocabulary, or onnxruntime failed.
        """
        ids = np.asarray(token_ids, dtype=np.int64).reshape(1, -1)
        try:
            (hidden,) = self._session.run(None, {"input_ids": ids})
        except Exception as exc:  # onnxruntime raises its own untyped exception classes
            raise LlmError(f"embed: onnxruntime failed on ids {ids.tolist()}: {exc}") from exc
        result: npt.NDArray[np.float16] = hidden[0]
        return result

    def close(self) -> None:
        """Drop the session. Idempotent."""
        self._session = None
