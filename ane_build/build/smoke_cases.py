"""One smoke case: run a model's container or a real ``.anec`` sample, check it, make a JUnit case.

A container with an ``ane.io`` map is checked against its source graph (`check_model`); one
without is submitted only. A sample is run in direct mode and compared with the reference graph
`check.samples` builds for it. Whether numbers are judged depends on where the case ran: a
simulator cannot run ``.anec`` microcode, so there samples are submitted and shape-checked only,
and say so. This module must not choose the device, print or write files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from ..check import ModelCheck
from ..check.compare import OutputReport
from ..check.samples import SAMPLES, write_sample_graph
from ..container import parse_ane_metadata
from ..deploy import CheckSettings, deploy_container
from ..driver.device import ANEDevice
from ..errors import AneError
from ..run import SubmitMode
from ..run.latency import latency
from ..synthetic.chains import is_synthetic
from .junit import Case

MODEL_CLASS = "smoke.model"
SAMPLE_CLASS = "smoke.sample"
SIMULATOR_NOTE = (
    "the simulator cannot run .anec microcode: submitted and shapes checked only, numbers not "
    "judged (they are on hardware)"
)

Checked = Literal["numeric", "shape"]


@dataclass(frozen=True)
class SmokeTarget:
    """A model to smoke: its container, how it is submitted, and its ``[check]`` settings.

    ``check`` None checks with the defaults (source from the container); ``checked`` False (the
    config's ``[check] enabled = false``) submits without checking.
    """

    name: str
    container: Path
    mode: SubmitMode = "onnx"
    check: CheckSettings | None = None
    checked: bool = True


@dataclass(frozen=True)
class CaseSettings:
    """How every case of a run is run.

    Attributes:
        hardware: The device counts as hardware: synthetic containers are not submitted to it,
            samples' numbers are judged, and cases count as run on hardware. Normally
            ``not device.is_simulated``; tests set it on a simulator to reach the hardware path.
        seed: Seed of the random inputs.
        repeat: Extra timed runs per checked case for latency figures (0: none).
        cache_dir: Where reference outputs are cached (None: not cached).
    """

    hardware: bool
    seed: int = 0
    repeat: int = 0
    cache_dir: Path | None = None

    @property
    def ran_on(self) -> str:
        """The ``ran_on`` property of a case that ran."""
        return "hardware" if self.hardware else "simulator"


def _num(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def latency_figures(seconds: Sequence[float]) -> dict[str, str]:
    """``latency_{min,median,p99}_ms`` properties of run times (see `run.latency.latency`)."""
    figures = latency(seconds)
    return {
        "repeat": str(figures["runs"]),
        "latency_min_ms": _num(figures["min_ms"]),
        "latency_median_ms": _num(figures["median_ms"]),
        "latency_p99_ms": _num(figures["p99_ms"]),
    }


def _output_properties(report: OutputReport) -> dict[str, str]:
    prefix = f"output.{report.name}"
    return {
        f"{prefix}.passed": str(report.passed).lower(),
        f"{prefix}.max_abs": _num(report.max_abs),
        f"{prefix}.max_rel": _num(report.max_rel),
        f"{prefix}.cosine": _num(report.cosine),
    }


def _shape_problem(check: ModelCheck) -> OutputReport | None:
    """The first output whose shape or dtype did not match; None when all did."""
    outputs = check.report.outputs
    return next((r for r in outputs if r.problem is not None), None) if outputs else None


def _checked_case(
    classname: str,
    name: str,
    check: ModelCheck,
    *,
    checked: Checked,
    note: str,
    settings: CaseSettings,
    latency: Mapping[str, str],
    seconds: float,
) -> Case:
    """The JUnit case of a check: metrics as properties, the worst output's line on failure.

    ``checked="shape"`` passes when every output has the reference's shape, whatever its values.
    """
    report = check.report
    if checked == "numeric":
        passed, worst = report.passed, report.worst
    else:
        bad = _shape_problem(check)
        passed, worst = bool(report.outputs) and bad is None, bad or report.worst
    outputs = report.outputs
    props = {
        "ran_on": settings.ran_on,
        "checked": checked,
        "passed": str(passed).lower(),
        "max_abs": _num(max((r.max_abs for r in outputs), default=math.nan)),
        "max_rel": _num(max((r.max_rel for r in outputs), default=math.nan)),
        "cosine": _num(min((r.cosine for r in outputs), default=math.nan)),
        "latency_ms": _num(check.engine_seconds * 1e3),
        **latency,
    }
    if note:
        props["note"] = note
    for output in outputs:
        props.update(_output_properties(output))
    message = worst.line() if worst is not None else "the program has no outputs"
    detail = "\n".join(filter(None, [note, report.table()]))
    return Case(
        classname,
        name,
        "passed" if passed else "failed",
        seconds,
        "" if passed else message,
        detail,
        props,
    )


def _run_check(
    device: ANEDevice,
    path: Path,
    check: CheckSettings | None,
    settings: CaseSettings,
    mode: SubmitMode | None = None,
) -> tuple[ModelCheck, dict[str, str]]:
    """Check a program with a model's ``[check]`` settings (None: the defaults)."""
    chosen = replace(check or CheckSettings(seed=settings.seed), cache_dir=settings.cache_dir)
    measured = chosen.run(device, path, mode=mode, repeat=settings.repeat)
    figures = latency_figures(measured.repeat_seconds) if measured.repeat_seconds else {}
    return measured, figures


def _failed(classname: str, name: str, start: float, exc: AneError, ran_on: str) -> Case:
    return Case(
        classname,
        name,
        "failed",
        time.perf_counter() - start,
        str(exc),
        properties={"ran_on": ran_on, "passed": "false"},
    )


def model_case(device: ANEDevice, target: SmokeTarget, settings: CaseSettings) -> Case:
    """Smoke one model: check it with its ``[check]`` settings, or submit it only.

    Only a container with an I/O map whose config does not turn checking off is checked.

    A synthetic container is skipped on hardware: its pseudo-random descriptors are no program
    for a real engine.
    """
    name, container = target.name, target.container
    start = time.perf_counter()
    try:
        meta = parse_ane_metadata(container)
        if settings.hardware and is_synthetic(meta.toolchain):
            return Case(
                MODEL_CLASS,
                name,
                "skipped",
                message="synthetic container (not real ANE code): not submitted to hardware",
            )
        if meta.io and target.checked:
            check, latency = _run_check(device, container, target.check, settings, target.mode)
            return _checked_case(
                MODEL_CLASS,
                name,
                check,
                checked="numeric",
                note="",
                settings=settings,
                latency=latency,
                seconds=time.perf_counter() - start,
            )
        record = deploy_container(name, container, device=device, mode=target.mode)
    except AneError as exc:
        return _failed(MODEL_CLASS, name, start, exc, settings.ran_on)
    note = (
        "no ane.io in the container: submitted only, outputs not checked"
        if target.checked
        else "[check] enabled = false in its config: submitted only, outputs not checked"
    )
    props = {
        "ran_on": settings.ran_on,
        "checked": "submit",
        "passed": "true",
        "latency_ms": _num(record.submit_ms),
        "note": note,
    }
    detail = f"{note}\n{record.summary}"
    return Case(MODEL_CLASS, name, "passed", time.perf_counter() - start, "", detail, props)


def sample_case(device: ANEDevice, anec: Path, graphs: Path, settings: CaseSettings) -> Case:
    """Smoke one real sample: run it in direct mode, compare it with its reference graph.

    Args:
        device: Where it runs.
        anec: The ``.ane`` file.
        graphs: A folder to write the reference graph into.
        settings: How cases are run.
    """
    name = anec.name
    sample = SAMPLES.get(name)
    if sample is None:
        known = ", ".join(sorted(SAMPLES))
        return Case(
            SAMPLE_CLASS, name, "skipped", message=f"no reference graph for {name} (known: {known})"
        )
    start = time.perf_counter()
    checked: Checked = "numeric"
    note = ""
    if not settings.hardware:
        checked, note = "shape", SIMULATOR_NOTE
    elif not sample.numeric:
        checked, note = "shape", sample.note
    try:
        graph = graphs / f"{anec.stem}.onnx"
        write_sample_graph(name, graph)
        check, latency = _run_check(
            device, anec, CheckSettings(source=graph, seed=settings.seed), settings
        )
    except AneError as exc:
        return _failed(SAMPLE_CLASS, name, start, exc, settings.ran_on)
    return _checked_case(
        SAMPLE_CLASS,
        name,
        check,
        checked=checked,
        note=note,
        settings=settings,
        latency=latency,
        seconds=time.perf_counter() - start,
    )
