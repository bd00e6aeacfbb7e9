"""Reference outputs of a program: its source ONNX graph run on the CPU on fp16-rounded inputs.

onnxruntime computes them; the ONNX reference evaluator stands in only when onnxruntime cannot
load or run the model, and the result says so. Results are cached by (source, inputs) digests.
This module must not import onnxruntime at module level, nor keep sessions between calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from .._fs import open_regular
from ..container.graph import graph_io, load_graph
from ..errors import (
    AneError,
    AneFormatError,
    ContainerError,
    InputError,
    ModelFileError,
    ReferenceRunError,
)
from ._npz import read_npz, write_npz
from .inputs import conform_input

log = logging.getLogger(__name__)

Runtime = Literal["onnxruntime", "onnx.reference"]
RUNTIMES: tuple[Runtime, ...] = ("onnxruntime", "onnx.reference")
# Part of every inputs digest: bump it when what is fed for the same inputs changes, so older
# cache entries stop matching.
_CACHE_FORMAT = b"ane_build.check.reference/1"
_META = "reference.json"
_CHUNK = 1 << 20
# The cache's folder name: under a project's state folder (``.ane_build/reference``) or under the
# user's cache folder (`user_cache_dir`).
CACHE_FOLDER = "reference"


def user_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The reference cache outside a project: ``$XDG_CACHE_HOME/ane_build/reference``.

    ``XDG_CACHE_HOME`` defaults to ``~/.cache`` and is ignored when relative, as the XDG base
    directory rules say.
    """
    base = environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ane_build" / CACHE_FOLDER


class Session(Protocol):
    """The part of an onnxruntime ``InferenceSession`` a reference run uses."""

    def run(
        self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]
    ) -> Sequence[Any]:
        """Outputs in graph order for ``input_feed`` (all outputs when names are None)."""
        ...


SessionFactory = Callable[[Path], Session]


@dataclass(frozen=True)
class Reference:
    """The reference outputs of one source model for one set of inputs.

    Attributes:
        outputs: Output name -> value, in graph order.
        runtime: What computed them: ``"onnxruntime"``, or ``"onnx.reference"`` when
            onnxruntime could not load or run the model.
        cached: Whether they were read from the cache instead of computed now.
        seconds: Wall time of this call's run, or of the cache read.
        fallback_reason: Why onnxruntime was not used (its error), when it was not.
    """

    outputs: dict[str, np.ndarray]
    runtime: Runtime
    cached: bool
    seconds: float
    fallback_reason: str | None = None


def onnxruntime_session(source: Path) -> Session:
    """A CPU onnxruntime session on ``source``, single-threaded, basic graph optimisations.

    Raises:
        Exception: Whatever onnxruntime raises for a model it cannot load.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    # Basic rewrites keep every operator's arithmetic; the extended fusions may round
    # differently from the graph as written, and the reference is the graph as written.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    return ort.InferenceSession(  # type: ignore[no-any-return]
        os.fspath(source), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _file_digest(path: Path, what: str) -> bytes:
    digest = hashlib.sha256()
    with open_regular(path, what, ModelFileError, buffering=0) as stream:
        try:
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                digest.update(chunk)
        except OSError as exc:
            raise ModelFileError(f"{what} {path}: cannot read: {exc}", exc.errno) from exc
    return digest.digest()


def source_digest(source: Path) -> str:
    """sha256 over the model file and every external data file its graph names, in name order.

    Raises:
        ModelFileError: The model or one of its data files cannot be read.
        AneFormatError: The file is not an ONNX model.
    """
    # Imported here: the container package loads pydantic, which `import ane_build.check` skips.
    from ..container.external import external_data_locations

    digest = hashlib.sha256(_file_digest(source, "model"))
    try:
        locations = external_data_locations(source)
    except ContainerError as exc:
        raise AneFormatError(f"{source}: not an ONNX model: {exc}") from exc
    for location in locations:
        digest.update(len(location).to_bytes(8, "little") + location.encode())
        digest.update(_file_digest(source.parent / location, "external data of " + str(source)))
    return digest.hexdigest()


def inputs_digest(inputs: Mapping[str, np.ndarray]) -> str:
    """sha256 over the inputs' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256(_CACHE_FORMAT)
    for name in sorted(inputs):
        array = np.ascontiguousarray(inputs[name])
        header = json.dumps([name, array.dtype.str, list(array.shape)]).encode()
        digest.update(len(header).to_bytes(8, "little") + header)
        digest.update(array.data)
    return digest.hexdigest()


def _read_cache(entry: Path) -> Reference | None:
    """The cached reference in ``entry``; None when there is none or it is damaged."""
    if not entry.exists():
        return None
    start = time.perf_counter()
    try:
        arrays, members = read_npz(entry)
    except AneError as exc:
        log.warning("ignoring the damaged reference cache entry %s: %s", entry, exc)
        return None
    meta = members.get(_META)
    if not (
        isinstance(meta, dict)
        and meta.get("runtime") in RUNTIMES
        and meta.get("outputs") == list(arrays)
    ):
        log.warning("ignoring the reference cache entry %s: its description does not fit", entry)
        return None
    reason = meta.get("fallback_reason")
    return Reference(
        arrays,
        meta["runtime"],
        cached=True,
        seconds=time.perf_counter() - start,
        fallback_reason=reason if isinstance(reason, str) else None,
    )


def _write_cache(entry: Path, result: Reference) -> None:
    meta = {
        "runtime": result.runtime,
        "outputs": list(result.outputs),
        "fallback_reason": result.fallback_reason,
    }
    try:
        write_npz(entry, result.outputs, members={_META: meta})
    except AneError as exc:
        # A cache that cannot be written costs a re-run next time, never the result.
        log.warning("cannot cache the reference outputs: %s", exc)


def _feeds(
    source: Path, inputs: Mapping[str, np.ndarray], dims: Mapping[str, int] | None
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The engine-rounded feeds in the graph's dtypes, and the graph's output names."""
    specs, outputs = graph_io(load_graph(source), dims=dims)
    names = {spec.name for spec in specs}
    unknown = sorted(set(inputs) - names)
    missing = [spec.name for spec in specs if spec.name not in inputs]
    if unknown or missing:
        raise InputError(
            f"{source}: inputs do not match the graph: missing {missing or 'none'}, "
            f"not inputs of the graph {unknown or 'none'}"
        )
    feeds = {spec.name: conform_input(spec, inputs[spec.name], str(source)) for spec in specs}
    return feeds, [spec.name for spec in outputs]


def _evaluate(source: Path, feeds: Mapping[str, np.ndarray], reason: str) -> list[Any]:
    """Outputs from the ONNX reference evaluator, for a model that passes the full checker."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    try:
        # The evaluator runs some invalid graphs without complaint; check first, so a model
        # onnxruntime rejected as invalid is an error instead of numbers.
        onnx.checker.check_model(os.fspath(source), full_check=True)
        return list(ReferenceEvaluator(onnx.load(os.fspath(source))).run(None, dict(feeds)))
    # The checker and the evaluator's operators raise any exception type on a model they
    # cannot handle.
    except Exception as exc:
        raise ReferenceRunError(
            f"{source}: onnxruntime cannot run it ({reason}) and neither can onnx.reference: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _run(
    source: Path, feeds: Mapping[str, np.ndarray], session_factory: SessionFactory
) -> tuple[list[Any], Runtime, str | None]:
    try:
        return list(session_factory(source).run(None, feeds)), "onnxruntime", None
    # onnxruntime's errors derive from Exception only, one type per status code.
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
    log.warning("%s: onnxruntime cannot run it, using onnx.reference: %s", source, reason)
    return _evaluate(source, feeds, reason), "onnx.reference", reason


def reference_outputs(
    source: Path,
    inputs: Mapping[str, np.ndarray],
    *,
    cache_dir: Path | None = None,
    dims: Mapping[str, int] | None = None,
    session_factory: SessionFactory = onnxruntime_session,
) -> Reference:
    """Run the source graph on the inputs as the engine reads them (`conform_input`).

    Args:
        source: The source ONNX model (the graph the program was compiled from).
        inputs: One array per graph input, e.g. from `resolve_inputs`.
        cache_dir: Where results are kept by (source digest, inputs digest); None: no cache.
        dims: Values for symbolic input dimensions (see `graph_io`).
        session_factory: Makes the onnxruntime session (a seam for tests).

    Returns:
        The outputs, what computed them, and whether they came from the cache.

    Raises:
        InputError: The inputs do not match the graph's inputs.
        ReferenceRunError: Neither onnxruntime nor onnx.reference can run the model.
        ModelFileError: The model or its external data cannot be read.
        AneFormatError: The file is not an ONNX model.
    """
    entry = None
    if cache_dir is not None:
        entry = cache_dir / f"{source_digest(source)}-{inputs_digest(inputs)}.npz"
        cached = _read_cache(entry)
        if cached is not None:
            return cached
    start = time.perf_counter()
    feeds, names = _feeds(source, inputs, dims)
    values, runtime, reason = _run(source, feeds, session_factory)
    outputs = {name: np.asarray(value) for name, value in zip(names, values, strict=True)}
    result = Reference(outputs, runtime, False, time.perf_counter() - start, reason)
    if entry is not None:
        _write_cache(entry, result)
    return result
