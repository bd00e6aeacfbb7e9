"""The smoke run: submit every model on a real device and write a JUnit report.

Refuses the simulator unless ``ANE_BUILD_ALLOW_SIM=1``. This module must not import doit.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .._fs import write_atomic
from ..errors import AneError
from .actions import say
from .context import BuildContext, context
from .layout import SMOKE_XML

ALLOW_SIM_ENV = "ANE_BUILD_ALLOW_SIM"


@dataclass
class SmokeCase:
    """One model's smoke result."""

    name: str
    seconds: float
    error: str | None
    detail: str
    skipped: str | None = None


def smoke_action() -> bool:
    """Doit action: submit every model on a real device; JUnit XML and a summary."""
    from ..deploy import deploy_container
    from ..driver.device import ANEDevice, open_device

    ctx = context()
    allow_sim = os.environ.get(ALLOW_SIM_ENV) == "1"
    cases: list[SmokeCase] = []
    try:
        device = ANEDevice.open()
    except AneError as exc:
        if not allow_sim:
            say(
                f"smoke: no ANE device: {exc}\nsmoke: refusing to use the simulator on a smoke "
                f"run; set {ALLOW_SIM_ENV}=1 to allow it (e.g. to test the pipeline in CI)"
            )
            _write_junit(ctx, [SmokeCase("device", 0.0, str(exc), "")], simulated=False)
            return False
        say(f"smoke: no ANE device; {ALLOW_SIM_ENV}=1, so using the simulator")
        device = open_device("sim")
    with device:
        for name, node in ctx.models.items():
            start = time.perf_counter()
            try:
                rec = deploy_container(
                    name,
                    Path(node.output),
                    device=device,
                    mode="direct" if node.submit_mode == "direct" else "onnx",
                )
                took = time.perf_counter() - start
                reason = None
                if rec.simulated and not device.is_simulated:
                    reason = "synthetic container (not real ANE code): not submitted to hardware"
                cases.append(SmokeCase(name, took, None, rec.summary, reason))
            except AneError as exc:
                cases.append(SmokeCase(name, time.perf_counter() - start, str(exc), ""))
        simulated = device.is_simulated
        where = "the simulator" if simulated else device.path
    _write_junit(ctx, cases, simulated=simulated)
    failed = [c for c in cases if c.error]
    skipped = [c for c in cases if c.skipped]
    for case in cases:
        status = "FAIL" if case.error else "skipped" if case.skipped else "ok"
        why = case.error or case.skipped or ""
        say(f"smoke: {case.name}: {status} ({case.seconds * 1e3:.1f} ms) {why}".rstrip())
    passed = len(cases) - len(failed) - len(skipped)
    tally = f"{passed} passed, {len(failed)} failed"
    if skipped:
        tally += f", {len(skipped)} skipped"
    say(f"smoke: {tally} on {where}")
    return not failed


def _write_junit(ctx: BuildContext, cases: list[SmokeCase], *, simulated: bool) -> None:
    import xml.etree.ElementTree as ET

    suite = ET.Element(
        "testsuite",
        name="ane_build.smoke",
        tests=str(len(cases)),
        failures=str(sum(1 for c in cases if c.error)),
        skipped=str(sum(1 for c in cases if c.skipped)),
        time=f"{sum(c.seconds for c in cases):.3f}",
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="simulated", value=str(simulated).lower())
    for case in cases:
        el = ET.SubElement(suite, "testcase", classname="smoke", name=case.name)
        el.set("time", f"{case.seconds:.3f}")
        if case.error:
            ET.SubElement(el, "failure", message=case.error[:200]).text = case.error
        elif case.skipped:
            ET.SubElement(el, "skipped", message=case.skipped)
        elif case.detail:
            ET.SubElement(el, "system-out").text = case.detail
    data = ET.tostring(suite, encoding="utf-8", xml_declaration=True)
    write_atomic(ctx.root / SMOKE_XML, data + b"\n")
