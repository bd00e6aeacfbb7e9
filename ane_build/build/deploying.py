"""The deploy action of a model: submit its container and check its numbers against the source.

The check runs whenever the container has an I/O map and ``[check] enabled`` holds; a failed
check fails the deploy, naming the model and the worst output. The deploy record
(``build/deploy/<model>.json``) keeps the check's metrics either way. This module must not import
doit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import AneError
from .context import BuildContext, context
from .layout import DEPLOY_DIR, REFERENCE_DIR, STATE_DIR, build_version
from .outcome import Step, StepFailed
from .reasons import deploy_reasons

__all__ = ["check_settings", "deploy_action", "deploy_record_path"]


def deploy_record_path(root: Path, name: str) -> Path:
    """Where the deploy of ``name`` is recorded."""
    return root / DEPLOY_DIR / f"{name}.json"


def check_settings(ctx: BuildContext, name: str) -> Any:
    """The `CheckSettings` of a model's ``[check]`` table, or None when it is disabled."""
    from ..check.compare import Tolerance
    from ..deploy import CheckSettings

    spec = ctx.project.models[name]
    check = spec.config.check
    if not check.enabled:
        return None
    base = Tolerance(check.atol, check.rtol)
    per_output = {
        output: Tolerance(
            base.atol if tol.atol is None else tol.atol,
            base.rtol if tol.rtol is None else tol.rtol,
        )
        for output, tol in check.outputs.items()
    }
    return CheckSettings(
        source=spec.source,
        data=spec.check_data,
        seed=check.seed,
        tolerance=base,
        per_output=per_output,
        cache_dir=ctx.root / STATE_DIR / REFERENCE_DIR,
    )


def deploy_action(name: str) -> dict[str, Any] | StepFailed:
    """Doit action: verify, submit and check one container; write its records."""
    from ..deploy import deploy_container
    from ..driver.device import open_device

    ctx = context()
    node = ctx.models[name]
    step = Step(ctx, "deploy", name)
    step.because(deploy_reasons(ctx, name) or ["container changed"])
    container = ctx.file_state(node.output)
    inputs = {p: s.to_json() for p in node.deploy_inputs if (s := ctx.file_state(p))}
    try:
        with open_device(node.device) as device:
            if device.is_simulated and node.device == "auto":
                step.say("no ANE hardware found; using the simulator")
            record = deploy_container(
                name,
                Path(node.output),
                device=device,
                mode="direct" if node.submit_mode == "direct" else "onnx",
                record=deploy_record_path(ctx.root, name),
                check=check_settings(ctx, name),
            )
    except AneError as exc:
        return step.fail(exc)
    step.say(record.summary)
    report = record.report
    if report is not None:
        for line in report.table().splitlines():
            step.say(f"  {line}")
    if report is not None and not report.passed:
        worst = report.worst
        return step.fail(f"check failed: {worst.line() if worst else 'no outputs to compare'}")
    if record.check_note and record.check_note != "not asked for":
        step.say(f"check: {record.check_note}")
    ctx.records.put(
        name,
        "deploy",
        {
            "version": build_version(),
            "settings": node.deploy_settings,
            "container_sha256": container.sha256 if container else None,
            "inputs": inputs,
            "finished": time.time(),
        },
    )
    step.done()
    return {"settings": node.deploy_digest, "version": build_version()}
