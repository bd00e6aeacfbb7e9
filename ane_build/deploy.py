"""Deploy one container: verify it, submit it to a device, and record what happened.

Used by the deploy and smoke tasks. It must not decide what to rebuild and must not print; the
record it writes is the only file it touches (atomically).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ._fs import write_atomic
from .container import verify_container
from .driver.backend import Backend
from .driver.device import ANEDevice, open_device
from .run import SubmitMode, submit_onnx_model
from .synthetic.chains import is_synthetic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployRecord:
    """The outcome of one deploy, as written to ``build/deploy/<model>.json``."""

    model: str
    container: str
    microcode_sha256: str | None
    device: str
    simulated: bool
    mode: str
    tsk_size: int
    td_size: int
    td_count: int
    submit_ms: float
    timestamp: float
    summary: str

    def to_json(self) -> str:
        """Stable, pretty JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def deploy_container(
    name: str,
    container: Path,
    *,
    device: ANEDevice | None = None,
    device_spec: str = "auto",
    mode: SubmitMode = "onnx",
    record: Path | None = None,
    backend: Backend | None = None,
) -> DeployRecord:
    """Verify ``container`` and submit it once; write the record when ``record`` is given.

    Args:
        name: The model's name, for the record.
        container: The ``_ane.onnx`` file.
        device: An open device to use (left open); None opens ``device_spec`` and closes it.
        device_spec: What to open when ``device`` is None, as `open_device` takes it.
        mode: How to submit (see `submit_onnx_model`).
        record: Where to write the JSON record, if anywhere.
        backend: The syscall backend ``device_spec`` is opened through (see `open_device`).

    Raises:
        VerificationError: The container fails verification (nothing is submitted).
        AneError: Opening the device or the submit failed.
    """
    report = verify_container(container)
    report.raise_for_failure()
    owned = device is None
    dev = open_device(device_spec, backend=backend) if device is None else device
    if not dev.is_simulated and report.metadata and is_synthetic(report.metadata.toolchain):
        # Pseudo-random descriptor bodies are no program for a real engine.
        log.warning("%s: synthetic container (not real ANE code): using the simulator", name)
        if owned:
            dev.close()
        dev, owned = open_device("sim"), True
    try:
        result = submit_onnx_model(dev, container, report.metadata, mode=mode)
    finally:
        if owned:
            dev.close()
    meta = report.metadata
    rec = DeployRecord(
        model=name,
        container=str(container),
        microcode_sha256=meta.microcode_sha256 if meta else None,
        device=result.device,
        simulated=result.simulated,
        mode=mode,
        tsk_size=result.tsk_size,
        td_size=result.td_size,
        td_count=result.td_count,
        submit_ms=round(result.elapsed * 1e3, 3),
        timestamp=time.time(),
        summary=result.describe(),
    )
    if record is not None:
        write_atomic(record, rec.to_json().encode())
    return rec
