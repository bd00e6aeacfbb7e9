"""The smoke run: check every model (and the real samples of ``ANE_SAMPLES_DIR``) on a device.

Writes ``build/smoke.xml`` (JUnit) and ``build/smoke.json`` (the same cases as data). Refuses the
simulator unless ``ANE_BUILD_ALLOW_SIM=1``; on hardware, a run in which no case ran on hardware
fails. ``--shard K/N`` runs the cases whose name hashes to shard K of N. This module must not
import doit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._fs import write_atomic
from ..check.samples import SAMPLES_ENV, samples_dir
from ..driver.device import ANEDevice, open_device
from ..errors import AneError, ConfigError, InvalidArgumentError
from ..run import SubmitMode
from .actions import say
from .context import BuildContext, context
from .deploying import check_settings
from .junit import SHARD_PROPERTY, SIMULATED_PROPERTY, Case, count_line, junit_suite, to_bytes
from .layout import REFERENCE_DIR, SMOKE_XML, STATE_DIR
from .smoke_cases import (
    MODEL_CLASS,
    SAMPLE_CLASS,
    CaseSettings,
    SmokeTarget,
    model_case,
    sample_case,
)

ALLOW_SIM_ENV = "ANE_BUILD_ALLOW_SIM"
SMOKE_JSON = os.fspath(Path(SMOKE_XML).with_suffix(".json"))
# Reference outputs of unchanged graphs and inputs are reused across smoke runs.
RUN_CLASS = "smoke.run"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based): the cases whose name hashes to it."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` (``""`` means ``1/1``: every case).

        Raises:
            InvalidArgumentError: Not two integers with 1 <= K <= N.
        """
        if not text:
            return cls()
        index, sep, count = text.partition("/")
        try:
            k, n = int(index), int(count)
        except ValueError:
            k = n = 0
        if not sep or not 1 <= k <= n:
            raise InvalidArgumentError(
                f"--shard {text!r}: expected K/N with 1 <= K <= N (e.g. 2/3: the second of three)"
            )
        return cls(k, n)

    @property
    def label(self) -> str:
        """``"K/N"``."""
        return f"{self.index}/{self.count}"

    def holds(self, key: str) -> bool:
        """Whether the case named ``key`` belongs to this shard.

        A hash of the name alone, not its position: adding or removing a case never moves
        another one to a different shard.
        """
        digest = hashlib.sha256(key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count + 1 == self.index


@dataclass
class SmokeRun:
    """The cases of one smoke run and where they ran."""

    device: str
    simulated: bool
    hardware: bool
    shard: Shard
    cases: list[Case] = field(default_factory=list)

    @property
    def ran_on_hardware(self) -> int:
        """Cases that were submitted to hardware (passed or failed)."""
        return sum(
            1
            for c in self.cases
            if c.status != "skipped" and c.properties.get("ran_on") == "hardware"
        )

    @property
    def passed(self) -> bool:
        """No case failed."""
        return all(case.status != "failed" for case in self.cases)

    def properties(self) -> dict[str, str]:
        """Suite-level JUnit properties."""
        return {
            SIMULATED_PROPERTY: str(self.simulated).lower(),
            "device": self.device,
            SHARD_PROPERTY: self.shard.label,
            "ran_on_hardware": str(self.ran_on_hardware),
        }

    def to_json(self) -> str:
        """The run as JSON: the suite properties, the verdict and every case."""
        data = {
            **self.properties(),
            "passed": self.passed,
            "cases": [
                {
                    "classname": c.classname,
                    "name": c.name,
                    "status": c.status,
                    "seconds": round(c.seconds, 6),
                    "message": c.message,
                    "properties": {k: _json_value(v) for k, v in c.properties.items()},
                }
                for c in sorted(self.cases, key=lambda c: (c.classname, c.name))
            ],
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _json_value(text: str) -> bool | float | str:
    """A property as JSON data: booleans and finite numbers as such, the rest as text."""
    if text in ("true", "false"):
        return text == "true"
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def sample_files(folder: Path | None) -> list[Path]:
    """The ``.ane`` files of a samples folder, by name; none without a folder."""
    return sorted(folder.glob("*.ane")) if folder is not None else []


def configured_samples() -> Path | None:
    """The samples folder ``ANE_SAMPLES_DIR`` names; None when it is unset.

    Raises:
        ConfigError: It is set but is not a folder holding ``.ane`` files (a CI runner that lost
            its samples must not pass quietly with fewer cases).
    """
    value = os.environ.get(SAMPLES_ENV)
    if not value:
        return None
    folder = samples_dir()
    if folder is None:
        raise ConfigError(f"{SAMPLES_ENV}={value}: not a folder holding .ane sample files")
    return folder


def run_smoke(
    device: ANEDevice,
    targets: Sequence[SmokeTarget],
    *,
    samples: Sequence[Path] = (),
    shard: Shard = Shard(),
    settings: CaseSettings | None = None,
) -> SmokeRun:
    """Smoke the targets and samples of ``shard`` on ``device``.

    Args:
        device: Where every case runs.
        targets: The project's models.
        samples: Real ``.ane`` files to run against their reference graphs.
        shard: Which cases to run.
        settings: How cases run; default: hardware unless ``device`` is the simulator.

    Returns:
        The run; on hardware, a run in which no case ran on hardware gets a failed case saying
        so (a green run must have proved something).
    """
    settings = settings or CaseSettings(hardware=not device.is_simulated)
    where = "simulator" if device.is_simulated else device.path
    run = SmokeRun(where, device.is_simulated, settings.hardware, shard)
    for target in sorted(targets, key=lambda t: t.name):
        if shard.holds(f"{MODEL_CLASS}:{target.name}"):
            run.cases.append(model_case(device, target, settings))
    chosen = [path for path in samples if shard.holds(f"{SAMPLE_CLASS}:{path.name}")]
    if chosen:
        with tempfile.TemporaryDirectory(prefix="ane-smoke-") as graphs:
            for path in chosen:
                run.cases.append(sample_case(device, path, Path(graphs), settings))
    if settings.hardware and not run.ran_on_hardware:
        run.cases.append(_nothing_ran(run))
    return run


def _nothing_ran(run: SmokeRun) -> Case:
    skipped = [f"{c.name} ({c.message})" for c in run.cases if c.status == "skipped"]
    message = (
        f"no case ran on hardware ({run.device}, shard {run.shard.label}): "
        + (f"{len(skipped)} skipped" if skipped else "the shard holds no case")
        + f". Give real compiler output or set {SAMPLES_ENV} to the real .ane samples"
    )
    detail = "\n".join([message, *skipped])
    return Case(RUN_CLASS, f"ran on hardware ({run.shard.label})", "failed", 0.0, message, detail)


def _open_device() -> ANEDevice | str:
    """The hardware device, the simulator when allowed, or why there is neither."""
    try:
        return ANEDevice.open()
    except AneError as exc:
        if os.environ.get(ALLOW_SIM_ENV) != "1":
            return (
                f"no ANE device: {exc}\nsmoke: refusing to use the simulator on a smoke run; "
                f"set {ALLOW_SIM_ENV}=1 to allow it (e.g. to test the pipeline in CI)"
            )
    say(f"smoke: no ANE device; {ALLOW_SIM_ENV}=1, so using the simulator")
    return open_device("sim")


def _report(run: SmokeRun) -> None:
    for case in run.cases:
        status = {"passed": "ok", "failed": "FAIL", "skipped": "skipped"}[case.status]
        props = case.properties
        figures = ""
        if "latency_median_ms" in props:
            spread = "/".join(
                f"{float(props[f'latency_{k}_ms']):.3f}" for k in ("min", "median", "p99")
            )
            figures = f" latency min/median/p99 {spread} ms over {props['repeat']} runs"
        why = case.message or props.get("note", "")
        say(f"smoke: {case.name}: {status} ({case.seconds * 1e3:.1f} ms){figures} {why}".rstrip())
    where = "the simulator" if run.simulated else run.device
    counts = count_line(case.status for case in run.cases)
    say(f"smoke: {counts} on {where}, shard {run.shard.label}; {run.ran_on_hardware} on hardware")


def _write(root: Path, run: SmokeRun) -> None:
    write_atomic(root / SMOKE_XML, to_bytes(junit_suite(run.cases, run.properties())))
    write_atomic(root / SMOKE_JSON, run.to_json().encode())


def _target(ctx: BuildContext, name: str) -> SmokeTarget:
    """A model of the project as a smoke target, with its config's ``[check]`` settings."""
    node = ctx.models[name]
    mode: SubmitMode = "direct" if node.submit_mode == "direct" else "onnx"
    check = check_settings(ctx, name)
    return SmokeTarget(name, Path(node.output), mode, check, checked=check is not None)


def smoke_action(shard: str = "", repeat: int = 0) -> bool:
    """Doit action: smoke every model (and the samples) of a shard; JUnit, JSON and a summary."""
    ctx = context()
    try:
        chosen = Shard.parse(shard)
        if repeat < 0:
            raise InvalidArgumentError(f"--repeat {repeat}: must be 0 or more")
        samples = sample_files(configured_samples())
    except AneError as exc:
        say(f"smoke: error: {exc}")
        return False
    opened = _open_device()
    if isinstance(opened, str):
        say(f"smoke: {opened}")
        failed = Case(
            RUN_CLASS, f"device ({chosen.label})", "failed", 0.0, opened.splitlines()[0], opened
        )
        run = SmokeRun("none", False, True, chosen, [failed])
        _write(ctx.root, run)
        return False
    targets = [_target(ctx, name) for name in ctx.models]
    start = time.perf_counter()
    with opened as device:
        settings = CaseSettings(
            hardware=not device.is_simulated,
            repeat=repeat,
            cache_dir=ctx.root / STATE_DIR / REFERENCE_DIR,
        )
        run = run_smoke(device, targets, samples=samples, shard=chosen, settings=settings)
    _write(ctx.root, run)
    _report(run)
    say(f"smoke: took {time.perf_counter() - start:.2f} s")
    return run.passed
