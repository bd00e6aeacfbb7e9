"""Check one compiled program end to end: run it on the device, run its source, compare.

The one entry point deploy, smoke and the CLI share. This module must not choose the device,
print, or decide exit codes; it returns what it measured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._typing import StrPath
from ..container.graph import TensorSpec, graph_io
from ..driver.device import ANEDevice
from ..errors import InputError
from ..run.model import ANEC_SUFFIXES, AneModel
from ..run.program import SubmitMode
from .compare import DEFAULT_TOLERANCE, CheckReport, Tolerance, compare
from .inputs import resolve_inputs
from .reference import Reference, reference_outputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelCheck:
    """What one check measured.

    Attributes:
        report: Per-output comparison (``report.passed`` is the verdict).
        inputs: What was fed, by the source graph's input names (fp16-rounded values).
        outputs: What the engine produced, by the source graph's output names.
        reference: The reference run (or cache hit).
        source: The graph the reference ran.
        engine_seconds: Wall time of the checked engine run (upload, submit, read back).
        repeat_seconds: Wall time of each further run on the same inputs (``repeat``), after
            the checked one, which also served as the warm-up.
    """

    report: CheckReport
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    reference: Reference
    source: Path
    engine_seconds: float
    repeat_seconds: tuple[float, ...] = ()


def _paired(
    model: AneModel, specs: list[TensorSpec], role: str
) -> dict[str, tuple[TensorSpec, tuple[int, ...]]]:
    """Engine name -> (source tensor, engine shape), pairing tensors in order.

    A container's tensors are the graph's already; an ``.anec`` file's slots are paired with the
    source graph's tensors by order and element count (the slot's NCHW is the engine's view).
    """
    ours = model.inputs if role == "input" else model.outputs
    if len(ours) != len(specs):
        raise InputError(
            f"{model.path} has {len(ours)} {role}(s) ({[t.name for t in ours]}) but the source "
            f"graph has {len(specs)} ({[s.name for s in specs]})"
        )
    for info, spec in zip(ours, specs, strict=True):
        if -1 not in spec.shape and int(np.prod(info.shape)) != int(np.prod(spec.shape)):
            raise InputError(
                f"{model.path}: {role} {info.name!r} (slot {info.slot}) is {info.shape} but the "
                f"source graph's {spec.name!r} is {spec.shape}"
            )
    return {info.name: (spec, info.shape) for info, spec in zip(ours, specs, strict=True)}


def _simulated_mode(
    device: ANEDevice, path: Path, mode: SubmitMode | None, is_anec: bool
) -> SubmitMode | None:
    """The mode to check in: the simulator computes outputs only from a submitted graph.

    A direct submission carries no graph, so on the simulator (fork ABI) a container asked to
    run in direct mode is checked in ONNX mode instead; on hardware the mode is kept.
    """
    kernel = device.kernel
    if mode != "direct" or is_anec or kernel is None or kernel.abi != "fork":
        return mode
    log.info("%s: checked in ONNX mode: direct submissions carry no graph for the simulator", path)
    return "onnx"


def check_model(
    device: ANEDevice,
    path: StrPath,
    *,
    source: StrPath | None = None,
    data: Path | None = None,
    files: Mapping[str, Path] | None = None,
    seed: int = 0,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    per_output: Mapping[str, Tolerance] | None = None,
    cache_dir: Path | None = None,
    mode: SubmitMode | None = None,
    repeat: int = 0,
) -> ModelCheck:
    """Run a container or ``.anec`` file on ``device`` and compare it with its source graph.

    Args:
        device: Where the program runs (hardware or the simulator).
        path: An ``_ane.onnx`` container or an ``.anec``/``.ane`` file.
        source: The source ONNX graph. Default: the container's own graph (required for an
            ``.anec`` file, whose slots are paired with the graph's tensors in order).
        data: Test data (a folder, ``.npz``, ``.npy`` or ``.pb``) for some or all inputs.
        files: Per-input files, by the source graph's input names (win over ``data``).
        seed: Seed of the random values for inputs given nowhere.
        tolerance: The pass rule of every output without an override.
        per_output: Tolerance overrides by output name.
        cache_dir: Where reference results are cached; None: no cache.
        mode: How a container is submitted (see `AneModel.load`); None: its default. The
            simulator checks a container in ONNX mode whatever is asked: only a submitted graph
            lets it compute outputs.
        repeat: Further timed runs on the same inputs, for latency figures.

    Returns:
        What was measured; ``result.report.passed`` is the verdict.

    Raises:
        InputError: Inputs or tolerances that do not fit the graph, an ``.anec`` file without a
            source, or a program whose tensors do not pair with the source graph's.
        AneError: The program cannot be loaded or run, or the reference cannot be computed.
    """
    path = Path(path)
    is_anec = path.suffix.lower() in ANEC_SUFFIXES
    if source is None and is_anec:
        raise InputError(f"{path}: an .anec file has no graph to check against: give its source")
    graph = Path(source) if source is not None else path
    mode = _simulated_mode(device, path, mode, is_anec)
    graph_inputs, graph_outputs = graph_io(graph, dims={})
    names = [spec.name for spec in graph_outputs]
    fed = resolve_inputs(graph_inputs, data=data, files=files, seed=seed, outputs=names)
    with AneModel.load(device, path, mode=mode) as model:
        ins = _paired(model, graph_inputs, "input")
        outs = _paired(model, graph_outputs, "output")
        by_engine = {engine: fed[spec.name].reshape(shape) for engine, (spec, shape) in ins.items()}
        produced, seconds, repeats = _timed_runs(model, by_engine, repeat)
    outputs = {
        outs[name][0].name: value.reshape(outs[name][0].shape)
        if -1 not in outs[name][0].shape
        else value
        for name, value in produced.items()
    }
    reference = reference_outputs(graph, fed, cache_dir=cache_dir)
    report = compare(outputs, reference.outputs, tolerance=tolerance, per_output=per_output)
    log.info("%s: %s", path, "pass" if report.passed else "FAIL")
    return ModelCheck(report, fed, outputs, reference, graph, seconds, repeats)


def _timed_runs(
    model: AneModel, feeds: Mapping[str, np.ndarray], repeat: int
) -> tuple[dict[str, np.ndarray], float, tuple[float, ...]]:
    """The first run's outputs and wall time, then the wall times of ``repeat`` more runs."""
    start = time.perf_counter()
    produced = model.run(feeds)
    seconds = time.perf_counter() - start
    repeats = []
    for _ in range(repeat):
        start = time.perf_counter()
        model.run(feeds)
        repeats.append(time.perf_counter() - start)
    return produced, seconds, tuple(repeats)
