"""A container as a program: its metadata, microcode and weights loaded into an `AneProgram`.

`program_for` builds the program of an ``_ane.onnx`` container without holding a decoded copy of
its payloads beyond the BO; `submit_onnx_model` runs one once. This module must not parse ONNX
graphs and must not decide which device to use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from .._typing import StrPath
from ..container import AneModelMetadata, parse_ane_metadata
from ..container.metadata import payload_chunks
from ..driver.device import ANEDevice
from ..errors import AneError
from .program import AneProgram, StreamedPayload, SubmitMode, SubmitResult

log = logging.getLogger(__name__)


def program_for(
    device: ANEDevice,
    model: StrPath | bytes,
    metadata: AneModelMetadata | None = None,
    *,
    mode: SubmitMode = "onnx",
) -> AneProgram:
    """The program of a container, its BOs allocated on ``device``.

    Only the microcode is decoded here (the bootstrap buffer needs its first descriptor). In
    ONNX mode the kernel decodes the weights; in direct mode they are decoded in chunks straight
    into the command buffer.

    Raises:
        AneError: Invalid metadata, a descriptor chain that disagrees, or a failed allocation.
    """
    source = model if isinstance(model, bytes) else Path(model)
    label = "<bytes>" if isinstance(source, bytes) else str(source)
    metadata = parse_ane_metadata(source) if metadata is None else metadata
    microcode = b"".join(payload_chunks(source, "microcode"))
    weights = StreamedPayload(metadata.weights_len, lambda: payload_chunks(source, "weights"))
    return AneProgram(
        device,
        microcode=microcode,
        td_size=metadata.td_size,
        td_count=metadata.td_count,
        weights=weights if mode == "direct" else b"",
        tiles=metadata.tiles,
        io=metadata.io,
        container=source if mode == "onnx" else None,
        label=label,
    )


def submit_onnx_model(
    device: ANEDevice,
    model: StrPath | bytes,
    metadata: AneModelMetadata | None = None,
    *,
    mode: SubmitMode = "onnx",
    inputs: Mapping[str, np.ndarray] | None = None,
) -> SubmitResult:
    """Upload an ``_ane.onnx`` container's program and submit it once; free everything after.

    Args:
        device: The device (hardware or simulator).
        model: Path to the container, or its bytes.
        metadata: Parsed metadata, when the caller already has it.
        mode: ``"onnx"`` lets the fork kernel translate the container in slot 0;
            ``"direct"`` lays out microcode and weights here (works on the stock driver too).
        inputs: Input tensors by ``ane.io`` name, tiled into their BOs.

    Raises:
        AneError: Invalid metadata, a descriptor chain that disagrees, or a failed submit.
    """
    start = time.perf_counter()
    try:
        with program_for(device, model, metadata, mode=mode) as program:
            loaded = time.perf_counter() - start
            result = replace(program.run(mode, inputs), load=loaded)
    except AneError:
        log.debug("submit of %s failed", model if isinstance(model, str | Path) else "<bytes>")
        raise
    log.info("%s: %s", program.label, result.describe())
    return result
