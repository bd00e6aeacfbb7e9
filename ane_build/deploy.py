"""Deploy one container: verify it, submit it to a device, check its numbers, record it all.

Used by the deploy and smoke tasks. It must not decide what to rebuild and must not print; the
record it writes is the only file it touches (atomically), besides the reference cache the check
may fill.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._fs import write_atomic
from .check.compare import DEFAULT_TOLERANCE, CheckReport, Tolerance
from .container import AneModelMetadata, verify_container
from .driver.backend import Backend
from .driver.device import ANEDevice, open_device
from .errors import AneError
from .run import SubmitMode, SubmitResult, submit_onnx_model
from .synthetic.chains import is_synthetic

if TYPE_CHECKING:
    from .check import ModelCheck

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckSettings:
    """How a deploy checks the program's outputs against its source graph (see `check_model`).

    Attributes:
        source: The source ONNX graph the reference runs (None: the one the container names).
        data: Test inputs (folder, ``.npz``, ``.npy`` or ``.pb``); seeded random values for the
            inputs it lacks.
        seed: Seed of the random inputs.
        tolerance: The pass rule of every output without an override.
        per_output: Overrides by output name.
        cache_dir: Where reference outputs are cached.
    """

    source: Path | None = None
    data: Path | None = None
    seed: int = 0
    tolerance: Tolerance = DEFAULT_TOLERANCE
    per_output: Mapping[str, Tolerance] = field(default_factory=dict)
    cache_dir: Path | None = None

    def run(
        self, device: ANEDevice, program: Path, *, mode: SubmitMode | None = None, repeat: int = 0
    ) -> ModelCheck:
        """`check_model` of ``program`` on ``device`` with these settings.

        Raises:
            AneError: The program or the reference could not be run.
        """
        from .check import check_model

        return check_model(
            device,
            program,
            source=self.source,
            data=self.data,
            seed=self.seed,
            tolerance=self.tolerance,
            per_output=self.per_output,
            cache_dir=self.cache_dir,
            mode=mode,
            repeat=repeat,
        )


@dataclass(frozen=True)
class DeployRecord:
    """The outcome of one deploy, as written to ``build/deploy/<model>.json``.

    ``submit_ms`` is the submit ioctl alone; ``run_ms`` the whole run (loading the program,
    uploads, the submit, reading outputs), which is what a big container costs.
    ``check`` is `CheckReport.to_json` of the check (``null`` when none ran) and ``check_note``
    says why none ran (no I/O map, or not asked for); ``report`` is the check's report itself
    (not written).
    """

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
    run_ms: float = 0.0
    check: dict[str, Any] | None = None
    check_note: str | None = None
    check_ms: float | None = None
    report: CheckReport | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> str:
        """Stable, pretty JSON."""
        data = {k: v for k, v in asdict(self).items() if k != "report"}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @property
    def check_passed(self) -> bool | None:
        """The check's verdict; None when no check ran."""
        return None if self.check is None else bool(self.check.get("passed"))


def deploy_container(
    name: str,
    container: Path,
    *,
    device: ANEDevice | None = None,
    device_spec: str = "auto",
    mode: SubmitMode = "onnx",
    record: Path | None = None,
    backend: Backend | None = None,
    check: CheckSettings | None = None,
) -> DeployRecord:
    """Verify ``container``, submit it once and check it; write the record when asked.

    The check runs when ``check`` is given and the container has an I/O map (``ane.io``): the
    program runs on the same device with the check's inputs, and its outputs are compared with
    the source graph's. A failed check is a result, not an error: the record keeps its metrics.

    Args:
        name: The model's name, for the record.
        container: The ``_ane.onnx`` file.
        device: An open device to use (left open); None opens ``device_spec`` and closes it.
        device_spec: What to open when ``device`` is None, as `open_device` takes it.
        mode: How to submit (see `submit_onnx_model`).
        record: Where to write the JSON record, if anywhere.
        backend: The syscall backend ``device_spec`` is opened through (see `open_device`).
        check: How to check the outputs; None: no check.

    Returns:
        The record (``record.report`` is the check's report, None when no check ran).

    Raises:
        VerificationError: The container fails verification (nothing is submitted).
        AneError: Opening the device, the submit or the check's run failed.
    """
    report = verify_container(container)
    report.raise_for_failure()
    meta = report.metadata
    synthetic = bool(meta and is_synthetic(meta.toolchain))
    dev, owned = _device_for(name, synthetic, device, device_spec, backend)
    checked = _Checked(None, "not asked for", None)
    try:
        result = submit_onnx_model(dev, container, meta, mode=mode)
        if check is not None:
            checked = _check(dev, container, bool(meta and meta.io), check)
    finally:
        if owned:
            dev.close()
    rec = _record(name, container, meta, mode, result, checked)
    if record is not None:
        write_atomic(record, rec.to_json().encode())
    return rec


def _device_for(
    name: str,
    synthetic: bool,
    device: ANEDevice | None,
    device_spec: str,
    backend: Backend | None,
) -> tuple[ANEDevice, bool]:
    """The device to deploy on, and whether this deploy opened it (and must close it)."""
    owned = device is None
    dev = open_device(device_spec, backend=backend) if device is None else device
    if not dev.is_simulated and synthetic:
        # Pseudo-random descriptor bodies are no program for a real engine.
        log.warning("%s: synthetic container (not real ANE code): using the simulator", name)
        if owned:
            dev.close()
        dev, owned = open_device("sim"), True
    return dev, owned


def _record(
    name: str,
    container: Path,
    meta: AneModelMetadata | None,
    mode: SubmitMode,
    result: SubmitResult,
    checked: _Checked,
) -> DeployRecord:
    """What a deploy did, as its record keeps it."""
    return DeployRecord(
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
        run_ms=round((result.load + result.total) * 1e3, 3),
        timestamp=time.time(),
        summary=result.describe(),
        check=checked.report.to_json() if checked.report is not None else None,
        check_note=checked.note,
        check_ms=checked.ms,
        report=checked.report,
    )


@dataclass(frozen=True)
class _Checked:
    """A check's report, or why there is none, and how long it took (ms)."""

    report: CheckReport | None
    note: str | None
    ms: float | None


def _check(device: ANEDevice, container: Path, has_io: bool, settings: CheckSettings) -> _Checked:
    """The check of a submitted container (none without an I/O map, said so).

    Raises:
        AneError: The program or the reference could not be run.
    """
    if not has_io:
        return _Checked(None, "cannot run or check: no ane.io", None)
    start = time.perf_counter()
    try:
        measured = settings.run(device, container)
    except AneError as exc:
        raise type(exc)(f"check: {exc}") from exc
    return _Checked(measured.report, None, round((time.perf_counter() - start) * 1e3, 3))
